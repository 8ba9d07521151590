// edgesdk's C++ runtime: what an Android or iOS app links to sample, personalize and classify with an edgesdk
// bundle on ExecuTorch, without Python.
//
// Made for language bridges (JNI, Objective-C++): plain C++ types in and out (strings, vectors, ints, floats),
// every call returns a Result (a Status code and a one-line message) and never throws, long calls report progress
// through a callback and can be cancelled from another thread. Objects are not thread-safe: use one per thread.
//
//   std::unique_ptr<edgesdk::Generator> generator;
//   edgesdk::Result opened = edgesdk::Generator::open("tiny-sd.edge", {}, &generator);
//   if (!opened.ok()) { log(opened.message); return; }
//   std::vector<edgesdk::Image> images;
//   edgesdk::GenerateRequest request;
//   request.prompts = {"a large red star on a blue background"};
//   edgesdk::Result done = generator->generate(request, &images);
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "edgesdk/status.hpp"

namespace edgesdk {

const char* version() noexcept;

struct Result {
  Status status = Status::kOk;
  std::string message;  // one line, says what to do; empty when ok
  bool ok() const noexcept { return status == Status::kOk; }
};

// 8-bit pixels, row-major, interleaved: channels 1 (gray), 3 (RGB) or 4 (RGBA). An app fills it from its platform's
// decoder (Android Bitmap, UIImage/CGImage) and shows the results the same way.
struct Image {
  int width = 0;
  int height = 0;
  int channels = 0;
  std::vector<uint8_t> pixels;  // height * width * channels
};

struct Options {
  int threads = 0;               // ExecuTorch/XNNPACK threads; 0: the runtime's default. One count per process.
  bool verify_checksums = true;  // SHA-256 of every bundle file at open (seconds for large bundles)
  bool binary_kernel = true;     // BNN bundles: the binary-kernel program where offered; false: the float program
};

// Progress of a long call. on_step(done, total, loss) runs on the calling thread after every sampler or optimizer
// step (loss is NaN for sampling); returning false cancels. `cancel` may be set from any other thread.
// A cancelled call returns Status::kCancelled; a cancelled personalization has checkpointed and can resume.
struct Progress {
  std::function<bool(int64_t done, int64_t total, double loss)> on_step;
  const std::atomic<bool>* cancel = nullptr;
};

struct GenerateRequest {
  std::vector<std::string> prompts;  // one image per prompt
  int steps = 25;                    // diffusion bundles; ignored by one-step generators
  uint64_t seed = 0;                 // image i uses noise seeded seed + i (numpy's default_rng, as the Python runtime)
  double guidance_scale = -1.0;      // < 0: the bundle's default
  std::string sampler = "ddim";      // ddim | dpmpp-2m
  std::string embedding_path;        // a learned-token .safetensors (either runtime's), or empty
};

// Text to image: a diffusion bundle (tiny-sd: DDIM or DPM-Solver++ with classifier-free guidance) or a one-step
// generator (family onestep), chosen by the bundle.
class Generator {
 public:
  static Result open(const std::string& bundle_dir, const Options& options, std::unique_ptr<Generator>* out);
  ~Generator();
  Result generate(const GenerateRequest& request, std::vector<Image>* images, const Progress& progress = {});
  // The decoder's raw output, float32 (B, 3, H, W) in [-1, 1], for checks against the Python runtime.
  Result generate_raw(const GenerateRequest& request, std::vector<float>* values, std::vector<int64_t>* shape,
                      const Progress& progress = {});
  bool one_step() const noexcept;
  int image_size() const noexcept;

  struct Impl;

 private:
  explicit Generator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

struct PersonalizeOptions {
  std::string images_dir;      // the concept's PNG files (read in place, never copied)
  std::string token;           // the new word, "<mything>"
  std::string init_word;       // a vocabulary word to start from
  std::string output;          // learned token (.safetensors); the checkpoint goes next to it
  int64_t steps = 3000;        // optimizer steps in total (a resumed run counts its done steps); the lr decays over them
  int num_vectors = 1;
  // The estimator; the defaults are runtime/personalize.py default_config()'s (benchmarks/personalization.py)
  int directions = 2;          // n: one-sided n + 1 forwards per draw, two-sided 2n
  double mu = -1.0;            // < 0: the default, 1e-1
  double lr = 2e-2;            // the peak with cosine_lr
  bool two_sided = false;      // antithetic θ ± μu pairs
  int draws = 1;               // samples per step, sharing the directions
  bool cosine_lr = true;       // decay the lr to 0 over `steps`
  bool word_directions = true; // perturb along the model's word embeddings (word-level vocabularies)
  uint64_t seed = 0;
  bool subspace_gradient = true;
  bool partial_uniform_timesteps = true;
  int64_t checkpoint_every = 50;
  bool resume = false;
  bool overwrite = false;
  int query_batch = 0;         // 0: the n + 1 queries in one forward; 1: one at a time (lowest memory)
  double time_budget_s = -1.0; // stop (checkpointed) after this many seconds; < 0: none
  std::vector<std::string> captions;  // caption templates with {} (or the token); empty: the bundle's language
};

struct PersonalizeSummary {
  std::string token;
  int num_vectors = 0;
  int width = 0;
  std::vector<float> vectors;  // num_vectors * width
  int64_t steps = 0;           // updates done in total
  double final_loss = 0.0;
  std::string checkpoint;
  std::vector<std::string> images;
  std::vector<std::string> notes;
};

// Learn a new word from a few images with forward passes of the bundle's model only (zeroth-order Textual
// Inversion). Filled `summary` also on kCancelled (the run checkpointed; resume = true continues it).
Result personalize(const std::string& bundle_dir, const PersonalizeOptions& options, const Options& runtime,
                   PersonalizeSummary* summary, const Progress& progress = {});

struct Classification {
  std::vector<std::pair<std::string, double>> top;  // (class, probability), best first
  std::vector<std::string> notes;                   // conversions applied to the input
};

// A classifier bundle (family bnn). Images of another size or channel count are converted (noted).
class Classifier {
 public:
  static Result open(const std::string& bundle_dir, const Options& options, std::unique_ptr<Classifier>* out);
  ~Classifier();
  Result classify(const std::vector<Image>& images, int top_k, std::vector<Classification>* out);
  std::vector<std::string> classes() const;
  // Which kernel path the classifier runs: "float", or "binary <isa> (...)" (XNOR-popcount binary layers).
  std::string kernel() const;

  struct Impl;

 private:
  explicit Classifier(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

struct BundleSummary {
  std::string family;
  std::vector<std::string> components;
  std::string recipe;  // quantization recipe, "fp32" when none
};

// Open and verify a bundle (manifest, paths, every checksum) without loading any model.
Result verify_bundle(const std::string& bundle_dir, BundleSummary* summary);

// PNG files to and from Image (for command-line tools and tests; apps use their platform's codecs).
Result read_png(const std::string& path, Image* image);
Result write_png(const std::string& path, const Image& image);

}  // namespace edgesdk
