// The C++ tokenizer against the Python one: words, ids, embeddings and error messages for the prompts in
// tests/cpp_fixtures.py (PROMPTS), recorded in tokenizer/cases.json.
#include <map>
#include <string>
#include <vector>

#include "bundle.hpp"
#include "check.hpp"
#include "tokenizer_checks.hpp"
#include "errors.hpp"
#include "files.hpp"
#include "json.hpp"
#include "npy.hpp"
#include "tokenizer.hpp"

using edgesdk::Status;
using edgesdk::Tokenizer;
namespace json = edgesdk::json;

namespace {

using tokenizer_checks::error_of;
using tokenizer_checks::integers;
using tokenizer_checks::strings;

const std::string kTinySd = "bundles/tiny-sd/tiny-sd.edge";

json::Value cases() {
  std::vector<uint8_t> text = edgesdk::read_file_bytes(check::fixture("tokenizer/cases.json"));
  return json::parse(std::string(text.begin(), text.end()), "cases.json");
}

struct Fixture {
  edgesdk::Bundle bundle = edgesdk::Bundle::open(check::fixture(kTinySd));
  Tokenizer tokenizer = Tokenizer::from_bundle(bundle);
  edgesdk::NpyArray table_array = bundle.asset_array("token_embedding");
  std::vector<float> table = table_array.to_float32();
  json::Value recorded = cases();
  std::map<std::string, std::vector<float>> learned() const {
    std::map<std::string, std::vector<float>> out;
    for (const auto& [name, rows] : recorded.at("learned").as_object()) {
      std::vector<float>& flat = out[name];
      for (const json::Value& row : rows.as_array()) {
        for (const json::Value& v : row.as_array()) flat.push_back(static_cast<float>(v.as_double()));
      }
    }
    return out;
  }
};

}  // namespace

TEST_CASE("the vocabulary's settings") {
  Fixture f;
  CHECK_EQ(f.tokenizer.max_tokens(), 16);
  CHECK_EQ(f.tokenizer.max_words(), 14);
  CHECK(f.tokenizer.lowercase());
  CHECK_EQ(f.tokenizer.index_of("red"), 8);
  CHECK_EQ(f.tokenizer.index_of("dragon"), -1);
  CHECK_EQ(f.tokenizer.pad(), 0);
  CHECK_EQ(f.tokenizer.bos(), 1);
  CHECK_EQ(f.tokenizer.eos(), 2);
  CHECK(f.tokenizer.unconditional_ids() == integers(f.recorded.at("unconditional")));
}

TEST_CASE("words, ids and errors match the Python tokenizer on every prompt") {
  Fixture f;
  int checked = 0;
  for (const json::Value& c : f.recorded.at("cases").as_array()) {
    const std::string& prompt = c.at("prompt").as_string();
    if (f.tokenizer.words(prompt) != strings(c.at("words"))) check::report(__FILE__, __LINE__, "words: " + prompt);
    std::vector<int64_t> ids;
    std::string error = error_of([&] { ids = f.tokenizer.ids(prompt); });
    if (c.at("ids_error").is_null()) {
      if (!error.empty() || ids != integers(c.at("ids"))) check::report(__FILE__, __LINE__, "ids: " + prompt + error);
    } else if (error != c.at("ids_error").as_string()) {
      check::report(__FILE__, __LINE__, "ids error: " + prompt + ": " + error);
    }
    ++checked;
  }
  CHECK(checked >= 10);
}

TEST_CASE("embeddings (learned placeholders spliced in) match the Python tokenizer bit for bit") {
  Fixture f;
  edgesdk::NpyArray expected = edgesdk::read_npy(check::fixture("tokenizer/embeddings.npy"));
  std::vector<float> all = expected.to_float32();
  int64_t width = f.table_array.shape[1], vocab = f.table_array.shape[0];
  int64_t per_prompt = f.tokenizer.max_tokens() * width;
  auto learned = f.learned();
  int compared = 0;
  for (const json::Value& c : f.recorded.at("cases").as_array()) {
    const std::string& prompt = c.at("prompt").as_string();
    std::vector<float> vectors;
    std::string error = error_of([&] { vectors = f.tokenizer.embed(prompt, f.table.data(), vocab, width, learned); });
    if (c.at("embed_index").is_null()) {
      if (error != c.at("embed_error").as_string()) check::report(__FILE__, __LINE__, "embed error: " + prompt + ": " + error);
      continue;
    }
    int64_t index = c.at("embed_index").as_int();
    std::vector<float> want(all.begin() + index * per_prompt, all.begin() + (index + 1) * per_prompt);
    if (!error.empty() || vectors != want) check::report(__FILE__, __LINE__, "embedding: " + prompt + error);
    ++compared;
  }
  CHECK(compared >= 8);
}

TEST_CASE("bad learned vectors: wrong width, bad name, too many rows") {
  Fixture f;
  const json::Value& errors = f.recorded.at("learned_errors");
  int64_t width = f.table_array.shape[1], vocab = f.table_array.shape[0];
  const std::string prompt = "a <me> on the left";
  std::string wrong_width = error_of([&] {
    f.tokenizer.embed(prompt, f.table.data(), vocab, width, {{"<me>", std::vector<float>(2 * (width + 1))}});
  });
  // Python names the (2, 129) array; the C++ API takes flat values, so it names their count
  CHECK_EQ(wrong_width, "learned vectors for '<me>' have shape (258,); expected (k, 128)");
  CHECK_EQ(wrong_width.substr(0, 37), errors.at("wrong_width").as_string().substr(0, 37));
  std::string bad_name = error_of([&] {
    f.tokenizer.embed(prompt, f.table.data(), vocab, width, {{"me", std::vector<float>(width)}});
  });
  CHECK_EQ(bad_name, errors.at("bad_name").as_string());
  std::string too_long = error_of([&] {
    f.tokenizer.embed(prompt, f.table.data(), vocab, width, {{"<me>", std::vector<float>(13 * width)}});
  });
  CHECK_EQ(too_long, errors.at("too_long").as_string());
  CHECK_THROWS_STATUS(f.tokenizer.embed("a red circle", f.table.data(), 5, width), Status::kBundleCorrupt);
}

TEST_CASE("a case-sensitive vocabulary keeps capitals") {
  Fixture f;
  json::Value vocabulary = f.bundle.asset_json("vocabulary");
  vocabulary.set("lowercase", json::Value::boolean(false));
  Tokenizer strict(vocabulary);
  const json::Value& recorded = f.recorded.at("case_sensitive");
  CHECK(!strict.lowercase());
  CHECK(strict.words(recorded.at("prompt").as_string()) == strings(recorded.at("words")));
  CHECK_EQ(error_of([&] { strict.ids(recorded.at("prompt").as_string()); }), recorded.at("error").as_string());
}

TEST_CASE("malformed vocabularies are kBundleCorrupt with Python's messages") {
  Fixture f;
  for (const auto& [name, entry] : f.recorded.at("malformed").as_object()) {
    std::string error = error_of([&] { Tokenizer t(entry.at("vocabulary")); }, Status::kBundleCorrupt);
    if (error != entry.at("error").as_string()) check::report(__FILE__, __LINE__, name + ": " + error);
  }
  CHECK_THROWS_STATUS(Tokenizer(json::Value::array()), Status::kBundleCorrupt);
}

TEST_CASE("a bundle with a malformed CLIP asset is kBundleCorrupt (test_clip_tokenizer checks the good ones)") {
  edgesdk::Bundle clip = edgesdk::Bundle::open(check::fixture("bundles/bad/clip.edge"));
  std::string error = error_of([&] { Tokenizer::from_bundle(clip); }, Status::kBundleCorrupt);
  CHECK_EQ(error, "clip_tokenizer asset is malformed (missing or bad 'kind'); re-export the bundle");
}

TEST_MAIN()
