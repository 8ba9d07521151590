// The runtime's tasks over a bundle, ported from the Python runtime line by line: text-to-image with DDIM or
// DPM-Solver++(2M) and classifier-free guidance (runtime/pipeline.py, runtime/samplers.py), one-step generation
// (runtime/onestep.py), forward-only personalization (runtime/personalize.py over zo.hpp) and image
// classification (runtime/classify.py). Same arithmetic, same order, same numpy random streams: one bundle and
// seed give the same images and the same learned token in both runtimes.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bundle.hpp"
#include "image.hpp"
#include "session.hpp"
#include "tokenizer.hpp"
#include "zo.hpp"

namespace edgesdk {

// Placeholder name ("<me>") -> its k x width vectors, row-major.
using LearnedTokens = std::map<std::string, std::vector<float>>;

// Called after each sampler step or optimizer step: (done, total, loss or NaN). Return false to cancel.
using StepCallback = std::function<bool(int64_t done, int64_t total, double loss)>;

// float32 (count, shape...) standard normal noise; row i from numpy's default_rng(seed + i), as the Python
// runtime's initial_noise.
std::vector<float> initial_noise(uint64_t seed, int count, int64_t per_row);

// Descending timesteps with "trailing" spacing (samplers.timesteps).
std::vector<int64_t> sampler_timesteps(int steps, int train_timesteps);

// Decoder output (B, 3, H, W) in [-1, 1] -> B RGB images (to_uint8).
std::vector<Pixels> to_images(const Tensor& decoded);

// Sessions opened on first use, shared by the text-to-image pipelines and the personalizer.
class ComponentPipeline {
 public:
  ComponentPipeline(const std::string& bundle_dir, const SessionOptions& options, bool verify_checksums = true);
  const Bundle& bundle() const { return bundle_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  // (vocab, width) float32 rows, row-major: memory-mapped from the bundle (only the rows a prompt reads become
  // resident), or loaded when the asset is not float32.
  const float* token_table() const { return token_table_; }
  int64_t vocab() const { return vocab_; }
  int64_t width() const { return width_; }
  int latent_channels() const { return latent_channels_; }
  int latent_size() const { return latent_size_; }
  int image_size() const { return image_size_; }
  int64_t latent_numel() const { return int64_t(latent_channels_) * latent_size_ * latent_size_; }
  // The first output of `component` on `inputs` (manifest order).
  Tensor run(const std::string& component, const std::vector<Tensor>& inputs);
  void close(const std::string& component) { sessions_.erase(component); }
  // (prompts, max_tokens, width) input embeddings; every prompt is checked before any network runs.
  Tensor embed_prompts(const std::vector<std::string>& prompts, const LearnedTokens& learned) const;

 protected:
  Bundle bundle_;
  SessionOptions options_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<MappedFloat32Npy> token_map_;
  std::vector<float> token_storage_;  // when the table is not mappable
  const float* token_table_ = nullptr;
  int64_t vocab_ = 0, width_ = 0;
  int latent_channels_ = 0, latent_size_ = 0, image_size_ = 0;
  std::map<std::string, std::unique_ptr<Session>> sessions_;
};

struct SampleRequest {
  std::vector<std::string> prompts;
  int steps = 25;
  uint64_t seed = 0;
  double guidance_scale = -1.0;  // < 0: the bundle's default
  std::string sampler = "ddim";  // ddim | dpmpp-2m
  LearnedTokens learned;
};

// A diffusion bundle (tiny-sd): prompts -> text encoder -> `steps` UNet evaluations (CFG) -> VAE decoder.
class TextToImage : public ComponentPipeline {
 public:
  TextToImage(const std::string& bundle_dir, const SessionOptions& options = {}, bool verify_checksums = true);
  // The decoder's float32 output (B, 3, H, W) in [-1, 1]; `to_images` makes pixels of it.
  Tensor generate(const SampleRequest& request, const StepCallback& on_step = nullptr);
  // uint8 (H, W, 3) images at the bundle's size -> scaled latents (B, C, h, w).
  Tensor encode_images(const std::vector<Pixels>& images);
  const std::vector<double>& alphas_cumprod() const { return alphas_cumprod_; }
  double default_guidance() const { return default_guidance_; }

 private:
  std::vector<double> alphas_cumprod_;
  double default_guidance_ = 1.0;
};

// A one-step generator bundle (family onestep): text encoder -> generator -> VAE decoder, one evaluation.
class OneStepTextToImage : public ComponentPipeline {
 public:
  OneStepTextToImage(const std::string& bundle_dir, const SessionOptions& options = {},
                     bool verify_checksums = true);
  Tensor generate(const std::vector<std::string>& prompts, uint64_t seed, const LearnedTokens& learned = {});
};

struct PersonalizeRequest {
  std::string images_dir;  // PNG files of the concept (read in place; other files are skipped with a warning)
  std::string token;       // "<mything>"
  std::string init_word;
  std::string output;      // learned token, .safetensors; its checkpoint is written next to it
  int64_t steps = 3000;
  int num_vectors = 1;
  ZOConfig config;         // mu < 0: the default (1e-1, personalize.py default_mu)
  bool resume = false;
  bool overwrite = false;
  int query_batch = 0;     // 0: all n+1 queries in one forward
  double time_budget_s = -1.0;
  std::vector<std::string> captions;  // caption templates ({} or the token where it goes); empty: the bundle's own
};

struct PersonalizeResult {
  std::string token;
  std::vector<float> vectors;  // num_vectors x width
  int num_vectors = 1;
  int64_t steps = 0;           // updates done in total
  double final_loss = 0.0;
  std::vector<std::string> images;
  std::string checkpoint;
  std::vector<std::string> notes;  // warnings and config adjustments, one line each
  bool cancelled = false;
};

// Where a C++ run's resumable state lives: next to the output.
std::string checkpoint_path_for(const std::string& output);

// μ by the bundle's quantization recipe: 1e-3 for fp32, 1e-1 otherwise (runtime/personalize.py default_mu).
double default_mu(const Bundle& bundle);

// Learn request.token from the images with forward passes of the bundle's exported model only. Writes the
// learned token (.safetensors, {token: (num_vectors, width) F32}, as the Python runtime) and its checkpoint.
PersonalizeResult personalize(const std::string& bundle_dir, const PersonalizeRequest& request,
                              const SessionOptions& options = {}, const StepCallback& on_step = nullptr);

// {token: (k, width)} from a learned-token file (either runtime's). Throws Failure(kEmbeddingInvalid).
LearnedTokens load_learned_tokens(const std::string& path);

struct Prediction {
  std::vector<std::pair<std::string, double>> top;  // (class, probability), best first
  std::vector<std::string> notes;                   // conversions applied to the input
};

// A classifier bundle (model task "classify", family bnn).
class ImageClassifier {
 public:
  ImageClassifier(const std::string& bundle_dir, const SessionOptions& options = {}, bool verify_checksums = true);
  // Logits (N, classes) for images already at the network's size and channel count.
  Tensor logits(const std::vector<Pixels>& images);
  // Converts channels and centre-crops to the network's size where needed (noted), then top-k softmax.
  std::vector<Prediction> classify(const std::vector<Pixels>& images, int top_k = 3);
  const std::vector<std::string>& classes() const { return classes_; }
  const std::string& kernel() const { return session_->kernel(); }

 private:
  Bundle bundle_;
  std::unique_ptr<Session> session_;
  std::vector<std::string> classes_;
  int image_size_ = 0, channels_ = 0;
  std::vector<float> mean_, std_;
};

}  // namespace edgesdk
