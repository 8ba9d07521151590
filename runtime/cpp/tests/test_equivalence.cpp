// The C++ runtime against the Python runtime on the same ExecuTorch bundles and seeds (references written by
// tests/equivalence_fixtures.py): the same images within float tolerance, the same learned token after 50
// zeroth-order steps within 1e-4, the same classifications; and on a Stable Diffusion bundle imported from a
// diffusers folder (CLIP BPE tokenizer) the same images and learned token, from the API and from edgesdk-run.
// Everything goes through the app-facing API.
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <filesystem>
#include <string>
#include <vector>

#include "check.hpp"
#include "edgesdk/edgesdk.hpp"
#include "errors.hpp"
#include "json.hpp"
#include "npy.hpp"
#include "safetensors.hpp"

namespace {

namespace fs = std::filesystem;

std::string dir() { return check::fixture("equivalence"); }
std::string tiny_sd() { return check::fixture("bundles/tiny-sd/tiny-sd.edge"); }

edgesdk::json::Value requests() {
  std::ifstream file(dir() + "/requests.json");
  std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  return edgesdk::json::parse(text, "requests.json");
}

std::vector<std::string> strings(const edgesdk::json::Value& array) {
  std::vector<std::string> out;
  for (const auto& item : array.as_array()) out.push_back(item.as_string());
  return out;
}

double max_abs_difference(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  double worst = 0.0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, double(std::fabs(a[i] - b[i])));
  return worst;
}

void check_images(const std::string& bundle, const edgesdk::GenerateRequest& request, const std::string& reference) {
  std::unique_ptr<edgesdk::Generator> generator;
  edgesdk::Result opened = edgesdk::Generator::open(bundle, {}, &generator);
  CHECK(opened.ok());
  if (!opened.ok()) return;
  std::vector<float> values;
  std::vector<int64_t> shape;
  edgesdk::Result done = generator->generate_raw(request, &values, &shape);
  CHECK(done.ok());
  const edgesdk::NpyArray expected = edgesdk::read_npy(dir() + "/" + reference);
  CHECK(shape == expected.shape);
  const double difference = max_abs_difference(values, expected.to_float32());
  std::fprintf(stderr, "  %s: max |C++ - Python| = %.3g over %zu values\n", reference.c_str(), difference,
               values.size());
  CHECK(difference <= 1e-4);  // [-1, 1] images: far below one 8-bit level (7.8e-3)
}

}  // namespace

TEST_CASE("ddim and dpm-solver images equal the python runtime's") {
  const edgesdk::json::Value sample = requests().at("sample");
  edgesdk::GenerateRequest request;
  request.prompts = strings(sample.at("prompts"));
  request.steps = int(sample.at("steps").as_int());
  request.seed = uint64_t(sample.at("seed").as_int());
  check_images(tiny_sd(), request, "sample_ddim.npy");
  request.sampler = "dpmpp-2m";
  check_images(tiny_sd(), request, "sample_dpmpp.npy");
  // and the check can fail: another seed gives other images
  request.seed += 1;
  std::unique_ptr<edgesdk::Generator> generator;
  CHECK(edgesdk::Generator::open(tiny_sd(), {}, &generator).ok());
  std::vector<float> values;
  std::vector<int64_t> shape;
  CHECK(generator->generate_raw(request, &values, &shape).ok());
  CHECK(max_abs_difference(values, edgesdk::read_npy(dir() + "/sample_dpmpp.npy").to_float32()) > 1e-2);
}

TEST_CASE("one-step images equal the python runtime's") {
  const edgesdk::json::Value one = requests().at("onestep");
  edgesdk::GenerateRequest request;
  request.prompts = strings(one.at("prompts"));
  request.seed = uint64_t(one.at("seed").as_int());
  check_images(dir() + "/onestep.edge", request, "onestep.npy");
}

// A fresh, empty folder for one test's outputs (per process, so parallel ctest runs do not meet).
static std::string scratch_dir(const std::string& prefix) {
  const std::string work = fs::temp_directory_path() / (prefix + std::to_string(::getpid()));
  fs::remove_all(work);
  fs::create_directories(work);
  return work;
}

TEST_CASE("50 zeroth-order steps learn the python runtime's token") {
  const edgesdk::json::Value zo = requests().at("personalize");
  const std::string work = scratch_dir("edgesdk-equivalence-");
  edgesdk::PersonalizeOptions options;
  options.images_dir = dir() + "/concept";
  options.token = zo.at("token").as_string();
  options.init_word = zo.at("init_word").as_string();
  options.steps = zo.at("steps").as_int();
  options.seed = uint64_t(zo.at("seed").as_int());
  options.checkpoint_every = zo.at("checkpoint_every").as_int();
  options.output = work + "/token.safetensors";
  edgesdk::PersonalizeSummary summary;
  edgesdk::Result done = edgesdk::personalize(tiny_sd(), options, {}, &summary);
  CHECK(done.ok());
  if (!done.ok()) std::fprintf(stderr, "  %s\n", done.message.c_str());
  CHECK_EQ(summary.steps, options.steps);
  const auto expected = edgesdk::read_safetensors(dir() + "/token.safetensors").tensors.at(options.token);
  const auto got = edgesdk::read_safetensors(options.output).tensors.at(options.token);
  CHECK(got.shape == expected.shape);
  const std::vector<float> a = edgesdk::f32_values(got), b = edgesdk::f32_values(expected);
  const double difference = max_abs_difference(a, b);
  std::fprintf(stderr, "  token after %lld steps: max |C++ - Python| = %.3g (width %zu)\n",
               (long long)summary.steps, difference, a.size());
  CHECK(difference <= 1e-4);
  CHECK(summary.final_loss > 0.0 && std::isfinite(summary.final_loss));
  // the token moved: the comparison is not between two copies of the initial word
  CHECK(max_abs_difference(a, edgesdk::read_npy(dir() + "/token_start.npy").to_float32()) > 1e-2);

  // resume: 25 steps, cancelled, then resumed to 50 gives the same token
  fs::remove(options.output);
  fs::remove(options.output + ".ckpt.safetensors");
  edgesdk::Progress stop_at_25;
  stop_at_25.on_step = [](int64_t step, int64_t, double) { return step < 25; };
  edgesdk::Result cancelled = edgesdk::personalize(tiny_sd(), options, {}, &summary, stop_at_25);
  CHECK(cancelled.status == edgesdk::Status::kCancelled);
  CHECK_EQ(summary.steps, 25);
  options.resume = true;
  CHECK(edgesdk::personalize(tiny_sd(), options, {}, &summary).ok());
  CHECK_EQ(summary.steps, 50);
  const std::vector<float> resumed = edgesdk::f32_values(edgesdk::read_safetensors(options.output).tensors.at(options.token));
  CHECK(max_abs_difference(resumed, a) == 0.0);
  fs::remove_all(work);
}

TEST_CASE("an imported Stable Diffusion bundle (CLIP BPE tokenizer) gives the python runtime's images and token") {
  const std::string sd = dir() + "/sd.edge";
  const edgesdk::json::Value sample = requests().at("sd_sample");
  edgesdk::GenerateRequest request;
  request.prompts = strings(sample.at("prompts"));
  request.steps = int(sample.at("steps").as_int());
  request.seed = uint64_t(sample.at("seed").as_int());
  check_images(sd, request, "sd_ddim.npy");

  const edgesdk::json::Value zo = requests().at("sd_personalize");
  const std::string work = scratch_dir("edgesdk-sd-");
  edgesdk::PersonalizeOptions options;
  options.images_dir = dir() + "/concept";
  options.token = zo.at("token").as_string();
  options.init_word = zo.at("init_word").as_string();  // "Star": looked up lower-cased, as one CLIP token
  options.captions = strings(zo.at("captions"));        // --caption: "{}" or the token, any case
  options.steps = zo.at("steps").as_int();
  options.seed = uint64_t(zo.at("seed").as_int());
  options.checkpoint_every = zo.at("checkpoint_every").as_int();
  options.output = work + "/token.safetensors";
  edgesdk::PersonalizeSummary summary;
  edgesdk::Result done = edgesdk::personalize(sd, options, {}, &summary);
  CHECK(done.ok());
  if (!done.ok()) std::fprintf(stderr, "  %s\n", done.message.c_str());
  CHECK_EQ(summary.steps, options.steps);
  const auto expected = edgesdk::read_safetensors(dir() + "/sd_token.safetensors").tensors.at(options.token);
  const auto got = edgesdk::read_safetensors(options.output).tensors.at(options.token);
  CHECK(got.shape == expected.shape);
  const std::vector<float> a = edgesdk::f32_values(got);
  const double difference = max_abs_difference(a, edgesdk::f32_values(expected));
  std::fprintf(stderr, "  sd token after %lld steps: max |C++ - Python| = %.3g (width %zu)\n",
               (long long)summary.steps, difference, a.size());
  CHECK(difference <= 1e-4);
  CHECK(max_abs_difference(a, edgesdk::read_npy(dir() + "/sd_token_start.npy").to_float32()) > 1e-3);
  // the learned token in a prompt: spliced where the placeholder is, the rest BPE
  std::unique_ptr<edgesdk::Generator> generator;
  CHECK(edgesdk::Generator::open(sd, {}, &generator).ok());
  std::vector<edgesdk::Image> images;
  request.prompts = {"a photo of <pinkstar> on a blue background"};
  request.steps = 2;
  request.embedding_path = options.output;
  CHECK(generator->generate(request, &images).ok());
  CHECK_EQ(images.size(), size_t(1));
  // user errors keep their status codes: empty and too long (counted in BPE tokens)
  request.embedding_path.clear();
  request.prompts = {"  \t "};
  CHECK(generator->generate(request, &images).status == edgesdk::Status::kInvalidArgument);
  std::string long_prompt;
  for (int i = 0; i < 76; ++i) long_prompt += "red ";
  request.prompts = {long_prompt};
  edgesdk::Result too_long = generator->generate(request, &images);
  CHECK(too_long.status == edgesdk::Status::kInvalidArgument);
  CHECK(too_long.message.find("76 tokens") != std::string::npos);
  fs::remove_all(work);
}

static std::string shell_quote(const std::string& text) {
  std::string out = "'";
  for (char c : text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

TEST_CASE("edgesdk-run samples the imported Stable Diffusion bundle") {
  const char* run = std::getenv("EDGESDK_RUN");
  CHECK(run != nullptr && *run != '\0');
  if (run == nullptr || *run == '\0') return;
  const edgesdk::json::Value sample = requests().at("sd_sample");
  const std::string work = scratch_dir("edgesdk-run-sd-");
  std::string command = shell_quote(run) + " sample " + shell_quote(dir() + "/sd.edge");
  for (const std::string& prompt : strings(sample.at("prompts"))) command += " -p " + shell_quote(prompt);
  command += " --steps " + std::to_string(sample.at("steps").as_int()) + " --seed " +
             std::to_string(sample.at("seed").as_int()) + " --raw " + shell_quote(work + "/raw.npy") + " -o " +
             shell_quote(work + "/grid.png") + " > " + shell_quote(work + "/log.txt") + " 2>&1";
  const int status = std::system(command.c_str());
  CHECK_EQ(status, 0);
  if (status != 0) {
    std::ifstream log(work + "/log.txt");
    std::fprintf(stderr, "  %s\n", std::string(std::istreambuf_iterator<char>(log), {}).c_str());
    return;
  }
  const double difference = max_abs_difference(edgesdk::read_npy(work + "/raw.npy").to_float32(),
                                               edgesdk::read_npy(dir() + "/sd_ddim.npy").to_float32());
  std::fprintf(stderr, "  edgesdk-run sample: max |C++ - Python| = %.3g\n", difference);
  CHECK(difference <= 1e-4);
  edgesdk::Image grid;
  CHECK(edgesdk::read_png(work + "/grid.png", &grid).ok());
  CHECK(grid.width > 0 && grid.height > 0);
  fs::remove_all(work);
}

static std::string read_text(const std::string& path) {
  std::ifstream file(path);
  return std::string(std::istreambuf_iterator<char>(file), {});
}

TEST_CASE("edgesdk-run shows ExecuTorch's info log only with --verbose; verify --json") {
  const char* run = std::getenv("EDGESDK_RUN");
  CHECK(run != nullptr && *run != '\0');
  if (run == nullptr || *run == '\0') return;
  const std::string work = scratch_dir("edgesdk-run-log-");
  const std::string sample = shell_quote(run) + " sample " + shell_quote(dir() + "/sd.edge") +
                             " -p 'a photo' --steps 1 -o " + shell_quote(work + "/one.png");
  CHECK_EQ(std::system((sample + " > " + shell_quote(work + "/quiet.txt") + " 2>&1").c_str()), 0);
  CHECK_EQ(std::system((sample + " --verbose > " + shell_quote(work + "/verbose.txt") + " 2>&1").c_str()), 0);
  const std::string quiet = read_text(work + "/quiet.txt"), verbose = read_text(work + "/verbose.txt");
  CHECK(quiet.rfind("wrote ", 0) == 0);                          // the result line is all there is
  CHECK(quiet.find("executorch I") == std::string::npos);
  CHECK(verbose.find("executorch I") != std::string::npos);     // the hook sees the messages it drops
  const std::string verify = shell_quote(run) + " verify " + shell_quote(dir() + "/sd.edge") + " --json > " +
                             shell_quote(work + "/verify.json") + " 2>&1";
  CHECK_EQ(std::system(verify.c_str()), 0);
  const edgesdk::json::Value report = edgesdk::json::parse(read_text(work + "/verify.json"), "verify.json");
  CHECK(report.at("ok").as_bool());
  CHECK(report.at("components").as_array().size() == 4);
  fs::remove_all(work);
}

TEST_CASE("binary-network classifications equal the python runtime's") {
  const edgesdk::json::Value expected = [] {
    std::ifstream file(dir() + "/classify.json");
    std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    return edgesdk::json::parse(text, "classify.json");
  }();
  std::vector<edgesdk::Image> images;
  for (const auto& entry : expected.as_array()) {
    edgesdk::Image image;
    CHECK(edgesdk::read_png(entry.at("source").as_string(), &image).ok());
    images.push_back(image);
  }
  std::unique_ptr<edgesdk::Classifier> classifier;
  CHECK(edgesdk::Classifier::open(check::fixture("bundles/bnn/bnn.edge"), {}, &classifier).ok());
  std::vector<edgesdk::Classification> got;
  CHECK(classifier->classify(images, 3, &got).ok());
  CHECK_EQ(got.size(), expected.size());
  for (size_t i = 0; i < got.size() && i < expected.size(); ++i) {
    const auto& top = expected.as_array()[i].at("top").as_array();
    CHECK_EQ(got[i].top.size(), top.size());
    for (size_t j = 0; j < top.size() && j < got[i].top.size(); ++j) {
      CHECK_EQ(got[i].top[j].first, top[j].as_array()[0].as_string());
      CHECK_NEAR(got[i].top[j].second, top[j].as_array()[1].as_double(), 1e-6);
    }
  }
}

TEST_CASE("bad input gives status codes, never a crash") {
  std::unique_ptr<edgesdk::Generator> generator;
  edgesdk::Result missing = edgesdk::Generator::open(dir() + "/no-such.edge", {}, &generator);
  CHECK(missing.status == edgesdk::Status::kBundleNotFound);
  CHECK(!missing.message.empty());
  // a corrupted copy: one flipped byte in a program file
  const std::string work = fs::temp_directory_path() / ("edgesdk-bad-" + std::to_string(::getpid()));
  fs::remove_all(work);
  fs::copy(tiny_sd(), work, fs::copy_options::recursive);
  bool flipped = false;
  for (const auto& entry : fs::recursive_directory_iterator(work)) {
    if (entry.path().extension() != ".pte") continue;
    flipped = true;
    std::fstream file(entry.path(), std::ios::in | std::ios::out | std::ios::binary);
    file.seekg(1000);
    char byte = 0;
    file.read(&byte, 1);
    byte = char(byte ^ 0x5a);
    file.seekp(1000);
    file.write(&byte, 1);
    break;
  }
  CHECK(flipped);
  edgesdk::Result corrupt = edgesdk::Generator::open(work, {}, &generator);
  std::fprintf(stderr, "  corrupted copy: [%s] %s\n", edgesdk::status_name(corrupt.status), corrupt.message.c_str());
  CHECK(corrupt.status == edgesdk::Status::kBundleCorrupt);
  CHECK(corrupt.message.find("checksum") != std::string::npos);
  fs::remove_all(work);
  // a bundle of another kind
  CHECK(edgesdk::Generator::open(check::fixture("bundles/bnn/bnn.edge"), {}, &generator).status == edgesdk::Status::kBundleUnsupported);
  std::unique_ptr<edgesdk::Classifier> classifier;
  CHECK(edgesdk::Classifier::open(tiny_sd(), {}, &classifier).status ==
        edgesdk::Status::kBundleUnsupported);
  // a wrong embedding file: not safetensors, and a token of the wrong width
  CHECK(edgesdk::Generator::open(tiny_sd(), {}, &generator).ok());
  std::vector<edgesdk::Image> images;
  edgesdk::GenerateRequest request;
  request.prompts = {"a <pinkstar> on a blue background"};
  request.steps = 2;
  request.embedding_path = dir() + "/requests.json";
  CHECK(generator->generate(request, &images).status == edgesdk::Status::kEmbeddingInvalid);
  const std::string wide = fs::temp_directory_path() / ("edgesdk-wide-" + std::to_string(::getpid()) + ".safetensors");
  edgesdk::SafeTensorsFile file;
  file.tensors["<pinkstar>"] = edgesdk::f32_tensor(std::vector<float>(7, 0.5f), {1, 7});
  edgesdk::write_safetensors(wide, file);
  request.embedding_path = wide;
  edgesdk::Result width = generator->generate(request, &images);
  CHECK(width.status == edgesdk::Status::kEmbeddingInvalid);
  CHECK(width.message.find("128-wide") != std::string::npos);
  fs::remove(wide);
  request.embedding_path = dir() + "/no-such.safetensors";
  CHECK(generator->generate(request, &images).status == edgesdk::Status::kEmbeddingInvalid);
  // an unknown word and cancellation
  request.embedding_path.clear();
  request.prompts = {"a purple zebra"};
  CHECK(generator->generate(request, &images).status == edgesdk::Status::kInvalidArgument);
  request.prompts = {"a red star"};
  std::atomic<bool> cancel{true};
  edgesdk::Progress progress;
  progress.cancel = &cancel;
  CHECK(generator->generate(request, &images, progress).status == edgesdk::Status::kCancelled);
}

TEST_MAIN()
