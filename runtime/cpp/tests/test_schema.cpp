// The C++ reader against the one mutation corpus that tests/test_bundle_schema.py runs through the Python reader:
// every manifest must get the same verdict (accepted, or refused with one "manifest field ..." line), and every
// bundle with a broken asset file must be refused as corrupt. EDGESDK_SCHEMA_CORPUS names the folder the ctest
// fixture step writes (python tests/test_bundle_schema.py --write DIR).
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "bundle.hpp"
#include "check.hpp"
#include "errors.hpp"
#include "json.hpp"
#include "schema.hpp"

namespace {

std::string corpus_file(const std::string& name) {
  const char* folder = std::getenv("EDGESDK_SCHEMA_CORPUS");
  if (folder == nullptr || *folder == '\0') {
    std::fprintf(stderr, "EDGESDK_SCHEMA_CORPUS is not set: run the ctest fixture step schema_corpus\n");
    std::exit(1);
  }
  std::ifstream file(std::string(folder) + "/" + name);
  if (!file) {
    std::fprintf(stderr, "cannot read %s/%s\n", folder, name.c_str());
    std::exit(1);
  }
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

// "" when the reader accepts the manifest text, else its message
std::string verdict(const std::string& text) {
  try {
    edgesdk::json::Value manifest = edgesdk::json::parse(text, "manifest.json");
    edgesdk::schema::validate_manifest(manifest);
    edgesdk::schema::check_consistency(manifest);
  } catch (const edgesdk::Failure& e) {
    if (e.status() != edgesdk::Status::kBundleCorrupt) return std::string("WRONG STATUS: ") + e.what();
    return std::string(e.what()).empty() ? "(empty message)" : e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("the schema parses and uses only the supported keywords") {
  const edgesdk::json::Value& schema = edgesdk::schema::bundle_schema();
  CHECK(schema.at("properties").at("format_version").at("type").as_string() == "integer");
}

TEST_CASE("every corpus manifest gets the Python reader's verdict") {
  edgesdk::json::Value cases = edgesdk::json::parse(corpus_file("manifests.json"), "manifests.json");
  CHECK(cases.size() > 50);
  for (const edgesdk::json::Value& item : cases.as_array()) {
    const std::string name = item.at("name").as_string();
    const bool accepted = item.at("accepted").as_bool();
    const std::string message = verdict(item.at("manifest").as_string());
    if (accepted && !message.empty()) check::report(__FILE__, __LINE__, name + ": refused: " + message);
    if (!accepted && message.empty()) check::report(__FILE__, __LINE__, name + ": accepted");
    if (!accepted && !message.empty() &&
        (message.rfind("manifest field ", 0) != 0 || message.find('\n') != std::string::npos)) {
      check::report(__FILE__, __LINE__, name + ": not one 'manifest field' line: " + message);
    }
  }
}

TEST_CASE("the message names the field and the bound") {
  std::string message = verdict(
      R"({"format": "edgesdk-bundle", "format_version": 1, "files": {},
          "components": {"unet": {"inputs": [{"name": "latent", "dtype": "float32", "shape": ["batch", -3]}],
                                  "outputs": [{"name": "noise", "dtype": "float32", "shape": [1]}],
                                  "files": {"onnx": "onnx/unet.onnx"}, "dynamic_dims": {"batch": {"min": 1, "max": 8}}}}})");
  CHECK_EQ(message, std::string("manifest field components.unet.inputs[0].shape[1]: expected an integer 1..1048576 or "
                                "a string matching ^[A-Za-z0-9_][A-Za-z0-9_.+-]*$, got -3; the bundle is refused"));
}

TEST_CASE("every bundle with a broken asset file is refused as corrupt") {
  edgesdk::json::Value bundles = edgesdk::json::parse(corpus_file("bundles.json"), "bundles.json");
  CHECK(bundles.size() >= 5);
  for (const edgesdk::json::Value& root : bundles.as_array()) {
    bool refused = false;
    try {
      edgesdk::Bundle::open(root.as_string());
    } catch (const edgesdk::Failure& e) {
      refused = true;
      if (e.status() != edgesdk::Status::kBundleCorrupt) {
        check::report(__FILE__, __LINE__, root.as_string() + ": another status: " + e.what());
      }
    }
    if (!refused) check::report(__FILE__, __LINE__, root.as_string() + ": opened");
  }
}

TEST_MAIN()
