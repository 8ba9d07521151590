// Ports of runtime/pipeline.py, samplers.py, onestep.py, personalize.py and classify.py. Each function keeps the
// Python original's order of operations and precision (float64 schedules and losses, float32 at the network), so
// the two runtimes agree to the last bits wherever the network outputs agree.
#include "pipelines.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <numeric>
#include <sstream>

#include "errors.hpp"
#include "numpy_random.hpp"
#include "safetensors.hpp"
#include "text.hpp"

namespace edgesdk {

namespace fs = std::filesystem;

namespace {

// numpy's pairwise summation (what np.sum / np.mean use along a contiguous axis): 8 running sums for blocks of up
// to 128 values, halves above that. Using it makes a loss the same double in both runtimes.
double pairwise_sum(const double* a, int64_t n) {
  if (n < 8) {
    double sum = 0.0;  // numpy starts from -0.0; the sign of zero cannot change a loss
    for (int64_t i = 0; i < n; ++i) sum += a[i];
    return sum;
  }
  if (n <= 128) {
    double r[8];
    for (int j = 0; j < 8; ++j) r[j] = a[j];
    int64_t i = 8;
    for (; i < n - (n % 8); i += 8)
      for (int j = 0; j < 8; ++j) r[j] += a[i + j];
    double sum = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) sum += a[i];
    return sum;
  }
  int64_t half = n / 2;
  half -= half % 8;
  return pairwise_sum(a, half) + pairwise_sum(a + half, n - half);
}

int model_int(const json::Value& model, const char* key, int fallback) {
  const json::Value* value = model.find(key);
  return value == nullptr ? fallback : int(value->as_int());
}

void check_prompts(const std::vector<std::string>& prompts) {
  if (prompts.empty()) fail(Status::kInvalidArgument, "no prompts given; pass at least one prompt");
}

Tensor repeat_rows(const Tensor& one, int rows) {
  Tensor out;
  out.shape = one.shape;
  out.shape[0] = rows;
  out.data.reserve(one.data.size() * rows);
  for (int r = 0; r < rows; ++r) out.data.insert(out.data.end(), one.data.begin(), one.data.end());
  return out;
}

}  // namespace

std::vector<float> initial_noise(uint64_t seed, int count, int64_t per_row) {
  std::vector<float> noise(size_t(count) * per_row);
  std::vector<double> row(per_row);
  for (int i = 0; i < count; ++i) {
    NumpyGenerator rng(seed + uint64_t(i));
    rng.standard_normal(row.data(), row.size());
    for (int64_t j = 0; j < per_row; ++j) noise[size_t(i) * per_row + j] = float(row[j]);
  }
  return noise;
}

std::vector<int64_t> sampler_timesteps(int steps, int train_timesteps) {
  if (steps < 1 || steps > train_timesteps)
    fail(Status::kInvalidArgument,
         "steps must be between 1 and " + std::to_string(train_timesteps) + ", got " + std::to_string(steps));
  // np.arange(T, 0, -T/steps): length ceil((0 - T) / step), values T + i * step; then np.round (half to even) - 1
  const double step = -double(train_timesteps) / steps;
  const auto length = int64_t(std::ceil((0.0 - train_timesteps) / step));
  std::vector<int64_t> out;
  for (int64_t i = 0; i < length && int64_t(out.size()) < steps; ++i)
    out.push_back(int64_t(std::nearbyint(train_timesteps + double(i) * step)) - 1);
  return out;
}

std::vector<Pixels> to_images(const Tensor& decoded) {
  if (decoded.shape.size() != 4 || decoded.shape[1] != 3)
    fail(Status::kInternal, "decoder output is not (B, 3, H, W)");
  const int64_t count = decoded.shape[0], height = decoded.shape[2], width = decoded.shape[3];
  std::vector<Pixels> images;
  for (int64_t b = 0; b < count; ++b) {
    Pixels image{int(width), int(height), 3, std::vector<uint8_t>(size_t(height * width * 3))};
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t y = 0; y < height; ++y)
        for (int64_t x = 0; x < width; ++x) {
          const float value = decoded.data[size_t(((b * 3 + c) * height + y) * width + x)];
          float scaled = std::nearbyint((value + 1.0f) * 127.5f);  // float32, round half to even, as numpy
          scaled = std::min(255.0f, std::max(0.0f, scaled));
          image.data[size_t((y * width + x) * 3 + c)] = uint8_t(scaled);
        }
    images.push_back(std::move(image));
  }
  return images;
}

// ------------------------------------------------------------------------------------------ component pipeline

ComponentPipeline::ComponentPipeline(const std::string& bundle_dir, const SessionOptions& options,
                                     bool verify_checksums)
    : bundle_(Bundle::open(bundle_dir, verify_checksums)), options_(options) {
  const json::Value& model = bundle_.model();
  if (!model.contains("latent_channels")) {
    const bool classifier = bundle_.task() == "classify";
    fail(Status::kBundleUnsupported,
         "bundle " + py_repr(fs::path(bundle_.root()).filename().string()) + " is a " + py_repr(bundle_.task()) +
             " bundle, not a text-to-image model" + (classifier ? " (classify images with edgesdk-run classify)" : ""));
  }
  latent_channels_ = model_int(model, "latent_channels", 0);
  latent_size_ = model_int(model, "latent_size", 0);
  image_size_ = model_int(model, "image_size", 32);
  tokenizer_ = std::make_unique<Tokenizer>(Tokenizer::from_bundle(bundle_));
  // mapped, not loaded: a prompt reads a few rows of a table that is 152 MB for SD-1.5 (runtime/pipeline.py too)
  const std::string table_path = bundle_.asset_path("token_embedding");
  std::vector<int64_t> shape;
  token_map_ = MappedFloat32Npy::open(table_path);
  if (token_map_ != nullptr) {
    shape = token_map_->shape();
    token_table_ = token_map_->data();
  } else {
    NpyArray table = read_npy(table_path);
    shape = table.shape;
    token_storage_ = table.to_float32();
    token_table_ = token_storage_.data();
  }
  if (shape.size() != 2) fail(Status::kBundleCorrupt, "token_embedding asset is not a 2-D table; re-export");
  vocab_ = shape[0];
  width_ = shape[1];
}

Tensor ComponentPipeline::run(const std::string& component, const std::vector<Tensor>& inputs) {
  auto found = sessions_.find(component);
  if (found == sessions_.end()) found = sessions_.emplace(component, Session::open(bundle_, component, options_)).first;
  return found->second->run(inputs).at(0);
}

Tensor ComponentPipeline::embed_prompts(const std::vector<std::string>& prompts, const LearnedTokens& learned) const {
  Tensor out;
  out.shape = {int64_t(prompts.size()), tokenizer_->max_tokens(), width_};
  for (const std::string& prompt : prompts) {
    std::vector<float> rows = tokenizer_->embed(prompt, token_table_, vocab_, width_, learned);
    out.data.insert(out.data.end(), rows.begin(), rows.end());
  }
  return out;
}

// ------------------------------------------------------------------------------------------ text to image

TextToImage::TextToImage(const std::string& bundle_dir, const SessionOptions& options, bool verify_checksums)
    : ComponentPipeline(bundle_dir, options, verify_checksums) {
  const std::string task = bundle_.task();
  if (task == "one-step-text-to-image")
    fail(Status::kBundleUnsupported, "bundle " + py_repr(fs::path(bundle_.root()).filename().string()) +
                                         " is a one-step generator (family onestep): sample it as one-step");
  if (task != "text-to-image")
    fail(Status::kBundleUnsupported, "bundle " + py_repr(fs::path(bundle_.root()).filename().string()) + " is a " +
                                         py_repr(task) + " bundle, not text-to-image" +
                                         (task == "classify" ? " (classify images with edgesdk-run classify)" : ""));
  const json::Value* guidance = bundle_.model().find("guidance_scale");
  default_guidance_ = guidance == nullptr ? 1.0 : guidance->as_double();
  alphas_cumprod_ = bundle_.asset_array("alphas_cumprod").to_float64();
}

Tensor TextToImage::generate(const SampleRequest& request, const StepCallback& on_step) {
  check_prompts(request.prompts);
  if (request.steps <= 0)
    fail(Status::kInvalidArgument, "steps must be a positive integer, got " + std::to_string(request.steps));
  if (request.sampler != "ddim" && request.sampler != "dpmpp-2m")
    fail(Status::kInvalidArgument, "unknown sampler " + py_repr(request.sampler) + "; choose one of: ddim, dpmpp-2m");
  const std::vector<int64_t> ts = sampler_timesteps(request.steps, int(alphas_cumprod_.size()));
  const double guidance = request.guidance_scale < 0 ? default_guidance_ : request.guidance_scale;
  const auto count = int(request.prompts.size());
  Tensor cond = embed_prompts(request.prompts, request.learned);  // a typo fails before any network runs
  const bool use_cfg = guidance != 1.0;  // at scale 1 the unconditional branch cancels out
  Tensor text;
  if (use_cfg) {
    // the unconditional prompt encoded once, in the same call, then repeated for every conditional row
    Tensor both;
    both.shape = {count + 1, tokenizer_->max_tokens(), width_};
    for (int64_t id : tokenizer_->unconditional_ids())
      both.data.insert(both.data.end(), token_table_ + id * width_, token_table_ + (id + 1) * width_);
    both.data.insert(both.data.end(), cond.data.begin(), cond.data.end());
    Tensor encoded = run("text_encoder", {both});
    const int64_t encoded_row = encoded.data.size() / (count + 1);
    text.shape = encoded.shape;
    text.shape[0] = 2 * count;
    for (int i = 0; i < count; ++i)
      text.data.insert(text.data.end(), encoded.data.begin(), encoded.data.begin() + encoded_row);
    text.data.insert(text.data.end(), encoded.data.begin() + encoded_row, encoded.data.end());
  } else {
    text = run("text_encoder", {cond});
  }
  const int64_t numel = latent_numel();
  const std::vector<int64_t> latent_shape = {count, latent_channels_, latent_size_, latent_size_};
  const auto guidance32 = float(guidance);  // numpy: a float32 array times a Python float stays float32

  auto denoise = [&](const std::vector<double>& x, int64_t t) {
    Tensor latent;
    latent.shape = latent_shape;
    latent.data.assign(x.begin(), x.end());  // float64 -> float32, as x.astype(np.float32)
    if (use_cfg) {
      latent.shape[0] = 2 * count;
      latent.data.insert(latent.data.end(), latent.data.begin(), latent.data.end());
    }
    Tensor timestep{{latent.shape[0]}, std::vector<float>(size_t(latent.shape[0]), float(t))};
    Tensor eps = run("unet", {latent, timestep, text});
    std::vector<double> out(size_t(count * numel));
    for (int64_t i = 0; i < count * numel; ++i) {
      float value = eps.data[i];
      if (use_cfg) {
        const float uncond = eps.data[i], conditional = eps.data[count * numel + i];
        value = uncond + guidance32 * (conditional - uncond);
      }
      out[i] = double(value);
    }
    return out;
  };
  auto report = [&](int64_t done) {
    if (on_step && !on_step(done, int64_t(ts.size()), std::numeric_limits<double>::quiet_NaN()))
      fail(Status::kCancelled, "sampling cancelled");
  };

  std::vector<float> noise = initial_noise(request.seed, count, numel);
  std::vector<double> x(noise.begin(), noise.end());
  const std::vector<double>& abar_of = alphas_cumprod_;
  if (request.sampler == "ddim") {  // eta = 0: deterministic
    for (size_t i = 0; i < ts.size(); ++i) {
      const double abar = abar_of[ts[i]];
      const double abar_next = i + 1 < ts.size() ? abar_of[ts[i + 1]] : 1.0;  // final step: to clean data
      const std::vector<double> eps = denoise(x, ts[i]);
      const double root = std::sqrt(1.0 - abar), scale = std::sqrt(abar);
      // eta = 0: sigma = 0, so sqrt(max(1 - abar_next - sigma^2, 0)) is sqrt(1 - abar_next)
      const double keep = std::sqrt(abar_next), noise_scale = std::sqrt(std::max(1.0 - abar_next - 0.0, 0.0));
      for (size_t j = 0; j < x.size(); ++j) {
        const double x0 = (x[j] - root * eps[j]) / scale;
        x[j] = keep * x0 + noise_scale * eps[j];
      }
      report(int64_t(i) + 1);
    }
  } else {  // DPM-Solver++(2M)
    std::vector<double> x0_prev;
    double h_prev = 0.0;
    for (size_t i = 0; i < ts.size(); ++i) {
      const double alpha = std::sqrt(abar_of[ts[i]]), sigma = std::sqrt(1.0 - abar_of[ts[i]]);
      const std::vector<double> eps = denoise(x, ts[i]);
      std::vector<double> x0(x.size());
      for (size_t j = 0; j < x.size(); ++j) x0[j] = (x[j] - sigma * eps[j]) / alpha;
      if (i + 1 == ts.size()) {
        x = x0;  // sigma_next = 0: the first-order update is exactly x0
        report(int64_t(i) + 1);
        break;
      }
      const double alpha_next = std::sqrt(abar_of[ts[i + 1]]), sigma_next = std::sqrt(1.0 - abar_of[ts[i + 1]]);
      const double h = std::log(alpha_next / sigma_next) - std::log(alpha / sigma);
      std::vector<double> d = x0;
      if (!x0_prev.empty()) {
        const double r = h_prev / h;
        const double a = 1.0 + 1.0 / (2.0 * r), b = 1.0 / (2.0 * r);
        for (size_t j = 0; j < x.size(); ++j) d[j] = a * x0[j] - b * x0_prev[j];
      }
      const double ratio = sigma_next / sigma, factor = alpha_next * std::expm1(-h);
      for (size_t j = 0; j < x.size(); ++j) x[j] = ratio * x[j] - factor * d[j];
      x0_prev = std::move(x0);
      h_prev = h;
      report(int64_t(i) + 1);
    }
  }
  Tensor latents;
  latents.shape = latent_shape;
  latents.data.assign(x.begin(), x.end());
  return run("vae_decoder", {latents});
}

Tensor TextToImage::encode_images(const std::vector<Pixels>& images) {
  Tensor pixels;
  pixels.shape = {int64_t(images.size()), 3, image_size_, image_size_};
  const int64_t plane = int64_t(image_size_) * image_size_;
  pixels.data.resize(size_t(images.size() * 3 * plane));
  for (size_t b = 0; b < images.size(); ++b) {
    const Pixels& image = images[b];
    if (image.channels != 3 || image.width != image_size_ || image.height != image_size_)
      fail(Status::kImageInvalid, "expected RGB images of " + std::to_string(image_size_) + "x" +
                                      std::to_string(image_size_) + ", got " + std::to_string(image.width) + "x" +
                                      std::to_string(image.height) + "x" + std::to_string(image.channels));
    for (int64_t p = 0; p < plane; ++p)
      for (int c = 0; c < 3; ++c)
        pixels.data[size_t((b * 3 + c) * plane + p)] = float(image.data[size_t(p * 3 + c)]) / 127.5f - 1.0f;
  }
  return run("vae_encoder", {pixels});
}

// ------------------------------------------------------------------------------------------ one step

OneStepTextToImage::OneStepTextToImage(const std::string& bundle_dir, const SessionOptions& options,
                                       bool verify_checksums)
    : ComponentPipeline(bundle_dir, options, verify_checksums) {
  if (bundle_.task() != "one-step-text-to-image")
    fail(Status::kBundleUnsupported, "bundle " + py_repr(fs::path(bundle_.root()).filename().string()) + " is a " +
                                         py_repr(bundle_.task()) + " bundle, not a one-step generator "
                                         "(task one-step-text-to-image)");
}

Tensor OneStepTextToImage::generate(const std::vector<std::string>& prompts, uint64_t seed,
                                    const LearnedTokens& learned) {
  check_prompts(prompts);
  Tensor text = run("text_encoder", {embed_prompts(prompts, learned)});
  const auto count = int64_t(prompts.size());
  Tensor noise{{count, latent_channels_, latent_size_, latent_size_}, initial_noise(seed, int(count), latent_numel())};
  Tensor latents = run("generator", {noise, text});
  return run("vae_decoder", {latents});
}

// ------------------------------------------------------------------------------------------ personalization

namespace {

// runtime/personalize.py TEMPLATES (tiny-sd's shape phrases) and PHOTO_TEMPLATES (CLIP bundles): change together
const std::vector<std::string> kTemplates = {"a {}", "a {} in the center", "a large {}", "a small {}", "the {}"};
const std::vector<std::string> kPhotoTemplates = {
    "a photo of a {}",     "a photo of the {}",        "a close-up photo of a {}", "a cropped photo of the {}",
    "a good photo of a {}", "a bright photo of the {}", "a rendering of a {}",      "a photo of one {}"};

// Every "{}" of the pattern replaced by the token (Python's str.replace).
std::string format_template(const std::string& pattern, const std::string& token) {
  std::string out;
  size_t from = 0;
  for (size_t at = pattern.find("{}"); at != std::string::npos; at = pattern.find("{}", from)) {
    out += pattern.substr(from, at - from) + token;
    from = at + 2;
  }
  return out + pattern.substr(from);
}

// User captions as templates (personalize._as_templates): "{}" stays the slot; the token written out (any case)
// becomes it. `token` is lower-cased.
std::vector<std::string> as_templates(const std::vector<std::string>& captions, const std::string& token) {
  std::vector<std::string> templates;
  for (const std::string& caption : captions) {
    if (caption.find("{}") != std::string::npos) {
      templates.push_back(caption);
      continue;
    }
    std::string lowered = caption;
    for (char& c : lowered) c = char(std::tolower(static_cast<unsigned char>(c)));
    std::string out;
    size_t from = 0;
    for (size_t at = lowered.find(token); at != std::string::npos; at = lowered.find(token, from)) {
      out += caption.substr(from, at - from) + "{}";
      from = at + token.size();
    }
    templates.push_back(out + caption.substr(from));
  }
  return templates;
}

// Every decodable PNG in `folder`, sorted by name, converted to RGB and centre-cropped to `size`.
std::vector<Pixels> load_concept_images(const std::string& folder, int size, std::vector<std::string>* used,
                                        std::vector<std::string>* notes) {
  std::error_code error;
  if (!fs::is_directory(folder, error))
    fail(Status::kInvalidArgument, "--images " + py_repr(folder) + " is not a folder of images");
  std::vector<fs::path> paths;
  for (const auto& entry : fs::directory_iterator(folder, error))
    if (entry.is_regular_file() && entry.path().filename().string().rfind('.', 0) != 0) paths.push_back(entry.path());
  std::sort(paths.begin(), paths.end());
  std::vector<Pixels> images;
  for (const fs::path& path : paths) {
    try {
      images.push_back(center_crop(to_channels(read_png(path.string()), 3), size));
      used->push_back(path.string());
    } catch (const Failure& e) {
      if (e.status() != Status::kImageInvalid) throw;
      notes->push_back("skipping " + path.filename().string() + ": not an image this runtime can decode (PNG)");
    }
  }
  if (images.empty())
    fail(Status::kInvalidArgument, "no usable images in " + py_repr(folder) + " (the C++ runtime reads PNG files)");
  return images;
}

// L(θ) = mean((ε̂(z_t, t, TextEnc(caption; θ)) − ε)²) on the exported components (runtime/personalize.py
// TokenLoss), the n+1 queries of a step in one forward per component or query_batch rows at a time.
class TokenLoss : public ZOProblem {
 public:
  // `templates`: captions with "{}" where the token goes; empty: the bundle's language (kPhotoTemplates for CLIP
  // bundles, kTemplates for tiny-sd), as personalize.default_templates.
  TokenLoss(TextToImage& pipe, const std::vector<Pixels>& images, const std::string& token, int num_vectors,
            int query_batch, const std::vector<std::string>& templates)
      : pipe_(pipe), num_vectors_(num_vectors), query_batch_(query_batch) {
    const bool bracketed = token.size() >= 3 && token.front() == '<' && token.back() == '>';
    if (!bracketed || token.find(' ') != std::string::npos)
      fail(Status::kInvalidArgument, "token " + py_repr(token) + " must look like <word> (angle brackets, no spaces)");
    token_ = pipe.tokenizer().lower(token);
    // a word-level vocabulary would read <star> and star alike; CLIP bundles tell them apart by the brackets
    if (!pipe.tokenizer().is_clip() && pipe.tokenizer().index_of(token_.substr(1, token_.size() - 2)) >= 0)
      fail(Status::kInvalidArgument, "token " + py_repr(token) + " names a word the model already knows; pick a new word");
    if (num_vectors < 1) fail(Status::kInvalidArgument, "num_vectors must be at least 1, got " + std::to_string(num_vectors));
    if (query_batch < 0)
      fail(Status::kInvalidArgument, "--query-batch must be at least 1 (or 0: all n+1 queries at once), got " +
                                         std::to_string(query_batch));
    width_ = pipe.width();
    const std::vector<std::string>& patterns =
        !templates.empty() ? templates : pipe.tokenizer().is_clip() ? kPhotoTemplates : kTemplates;
    for (const std::string& pattern : patterns) captions_.push_back(format_template(pattern, token_));
    const std::vector<float> probe(size_t(num_vectors * width_), 0.0f);
    for (const std::string& text : captions_) {
      const std::vector<std::string> words = pipe.tokenizer().words(text);
      if (std::find(words.begin(), words.end(), token_) == words.end())
        fail(Status::kInvalidArgument, "caption " + py_repr(text) + " does not contain the placeholder " + token_ +
                                           " (write {} or the token where it goes)");
      try {
        pipe.tokenizer().embed(text, pipe.token_table(), pipe.vocab(), width_, {{token_, probe}});
      } catch (const Failure& e) {
        if (e.status() != Status::kInvalidArgument) throw;
        fail(Status::kInvalidArgument, "caption " + py_repr(text) + ": " + e.what());
      }
    }
    // every image and its mirror image encoded once, one per call; then the encoder's session is closed
    count_ = int(images.size());
    latent_numel_ = pipe.latent_numel();
    latents_.resize(size_t(2 * count_ * latent_numel_));
    for (int flip = 0; flip < 2; ++flip)
      for (int i = 0; i < count_; ++i) {
        Pixels image = images[i];
        if (flip) {
          for (int y = 0; y < image.height; ++y)
            for (int x = 0; x < image.width / 2; ++x)
              for (int c = 0; c < 3; ++c)
                std::swap(image.data[size_t((y * image.width + x) * 3 + c)],
                          image.data[size_t((y * image.width + image.width - 1 - x) * 3 + c)]);
        }
        Tensor latent = pipe.encode_images({image});
        std::copy(latent.data.begin(), latent.data.end(), latents_.begin() + (flip * count_ + i) * latent_numel_);
      }
    pipe.close("vae_encoder");
  }

  int dim() const override { return int(num_vectors_ * width_); }
  int num_timesteps() const override { return int(pipe_.alphas_cumprod().size()); }

  // word_directions: the spread of the vocabulary's words (runtime/personalize.py TokenLoss.direction_basis); a
  // CLIP vocabulary spans the whole space, so it gets none. One vector's width: a multi-vector token has none.
  std::vector<double> direction_basis() const override {
    const Tokenizer& tok = pipe_.tokenizer();
    if (tok.is_clip() || num_vectors_ != 1) return {};
    std::vector<float> rows;
    int count = 0;
    for (int64_t id = 0; id < int64_t(tok.tokens().size()); ++id) {
      if (id == tok.pad() || id == tok.bos() || id == tok.eos() || id >= pipe_.vocab()) continue;
      rows.insert(rows.end(), pipe_.token_table() + id * width_, pipe_.token_table() + (id + 1) * width_);
      ++count;
    }
    return word_direction_basis(rows, count, int(width_));
  }

  std::vector<double> initial_vector(const std::string& init_word) const {
    const int64_t index = pipe_.tokenizer().index_of(pipe_.tokenizer().lookup_key(init_word));
    if (index >= pipe_.vocab())
      fail(Status::kBundleCorrupt, "token_embedding has " + std::to_string(pipe_.vocab()) + " rows, but the "
                                   "vocabulary uses id " + std::to_string(index) + "; re-export the bundle");
    if (index < 0)
      fail(Status::kInvalidArgument, "--init-word " + py_repr(init_word) + " is not in the model's vocabulary; "
                                     "`edgesdk inspect BUNDLE` lists it");
    std::vector<double> theta;
    for (int v = 0; v < num_vectors_; ++v)
      for (int64_t j = 0; j < width_; ++j) theta.push_back(double(pipe_.token_table()[size_t(index * width_ + j)]));
    return theta;
  }

  void draw(NumpyGenerator& rng, int t_low, int t_high) override {
    // the order of runtime/personalize.py TokenLoss.draw: image, flip, template, noise, t
    image_ = int(rng.integers(count_));
    flip_ = rng.random() < 0.5;
    caption_ = captions_[size_t(rng.integers(int64_t(captions_.size())))];
    std::vector<double> normal(static_cast<size_t>(latent_numel_));
    rng.standard_normal(normal.data(), normal.size());
    noise_.assign(normal.begin(), normal.end());
    timestep_ = int(rng.integers(t_low, t_high));
  }

  std::vector<double> losses(const std::vector<float>& thetas, int rows) override {
    const int chunk = query_batch_ > 0 ? query_batch_ : rows;
    std::vector<double> out;
    for (int start = 0; start < rows; start += chunk) {
      const int count = std::min(chunk, rows - start);
      std::vector<float> part(thetas.begin() + int64_t(start) * dim(), thetas.begin() + int64_t(start + count) * dim());
      std::vector<double> values = chunk_losses(part, count);
      out.insert(out.end(), values.begin(), values.end());
    }
    return out;
  }

 private:
  // (max_tokens, width) embeddings of the caption with zeros at the placeholder, and the placeholder's rows
  const std::pair<std::vector<float>, std::vector<int64_t>>& slots(const std::string& caption) {
    auto found = slots_.find(caption);
    if (found != slots_.end()) return found->second;
    const std::vector<float> marker(size_t(num_vectors_ * width_), std::numeric_limits<float>::quiet_NaN());
    std::vector<float> spliced =
        pipe_.tokenizer().embed(caption, pipe_.token_table(), pipe_.vocab(), width_, {{token_, marker}});
    std::vector<int64_t> rows;
    for (int64_t r = 0; r < int64_t(spliced.size()) / width_; ++r)
      if (std::isnan(spliced[size_t(r * width_)])) rows.push_back(r);
    for (float& v : spliced)
      if (std::isnan(v)) v = 0.0f;
    return slots_.emplace(caption, std::make_pair(std::move(spliced), std::move(rows))).first->second;
  }

  std::vector<double> chunk_losses(const std::vector<float>& thetas, int rows) {
    const auto& [base, slot_rows] = slots(caption_);
    const int64_t length = int64_t(base.size()) / width_;
    Tensor embeddings{{rows, length, width_}, {}};
    for (int r = 0; r < rows; ++r) {
      std::vector<float> row = base;
      for (size_t s = 0; s < slot_rows.size(); ++s)
        std::copy_n(thetas.begin() + (int64_t(r) * num_vectors_ + int64_t(s)) * width_, width_,
                    row.begin() + slot_rows[s] * width_);
      embeddings.data.insert(embeddings.data.end(), row.begin(), row.end());
    }
    Tensor text = pipe_.run("text_encoder", {embeddings});
    // np.sqrt(np.float64) * float32 array: computed in float64, rounded once to float32
    const double alpha_bar = pipe_.alphas_cumprod()[size_t(timestep_)];
    const double signal = std::sqrt(alpha_bar), noise_scale = std::sqrt(1.0 - alpha_bar);
    const float* z0 = latents_.data() + (int64_t(flip_) * count_ + image_) * latent_numel_;
    Tensor noisy{{1, pipe_.latent_channels(), pipe_.latent_size(), pipe_.latent_size()}, {}};
    noisy.data.resize(size_t(latent_numel_));
    for (int64_t j = 0; j < latent_numel_; ++j)
      noisy.data[j] = float(signal * double(z0[j]) + noise_scale * double(noise_[j]));
    Tensor timestep{{rows}, std::vector<float>(size_t(rows), float(timestep_))};
    Tensor predicted = pipe_.run("unet", {repeat_rows(noisy, rows), timestep, text});
    std::vector<double> losses(static_cast<size_t>(rows)), squared(static_cast<size_t>(latent_numel_));
    for (int r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < latent_numel_; ++j) {
        const double error = double(predicted.data[size_t(r * latent_numel_ + j)]) - double(noise_[j]);
        squared[j] = error * error;
      }
      losses[r] = pairwise_sum(squared.data(), latent_numel_) / double(latent_numel_);
    }
    return losses;
  }

  TextToImage& pipe_;
  std::string token_;
  int num_vectors_, query_batch_;
  int64_t width_ = 0;
  std::vector<std::string> captions_;
  int count_ = 0;
  int64_t latent_numel_ = 0;
  std::vector<float> latents_;  // (2, count, C, h, w): originals, then mirror images
  std::map<std::string, std::pair<std::vector<float>, std::vector<int64_t>>> slots_;
  // the last draw
  int image_ = 0;
  bool flip_ = false;
  std::string caption_;
  std::vector<float> noise_;
  int timestep_ = 0;
};

std::string json_quote(const std::string& text) { return json::dump(json::Value::string(text)); }

}  // namespace

std::string checkpoint_path_for(const std::string& output) { return output + ".ckpt.safetensors"; }

// runtime/personalize.py default_mu: 1e-1 on every recipe (fp32 too: it learns far more per step there)
double default_mu(const Bundle&) { return 1e-1; }

PersonalizeResult personalize(const std::string& bundle_dir, const PersonalizeRequest& request,
                              const SessionOptions& options, const StepCallback& on_step) {
  const std::string checkpoint = checkpoint_path_for(request.output);
  std::error_code error;
  if (request.steps < 1)
    fail(Status::kInvalidArgument, "--steps must be at least 1, got " + std::to_string(request.steps));
  if (fs::exists(request.output, error) && !(request.overwrite || request.resume))
    fail(Status::kInvalidArgument, py_repr(request.output) + " exists; pass --overwrite to replace it or --resume to "
                                   "continue its run");
  if (request.resume && !fs::exists(checkpoint, error))
    fail(Status::kInvalidArgument, "nothing to resume: no checkpoint at " + py_repr(checkpoint));
  if (fs::exists(checkpoint, error) && !(request.resume || request.overwrite))
    fail(Status::kInvalidArgument, "an earlier run left a checkpoint at " + py_repr(checkpoint) +
                                       "; pass --resume to continue it or --overwrite to start over");
  SessionOptions lean = options;
  lean.lean_memory = true;  // a long job beside the user's other apps: memory counts more than a little speed
  TextToImage pipe(bundle_dir, lean);
  PersonalizeResult result;
  const fs::path parent = fs::path(request.output).parent_path();
  if (!parent.empty()) fs::create_directories(parent, error);
  std::vector<Pixels> images = load_concept_images(request.images_dir, pipe.image_size(), &result.images,
                                                   &result.notes);
  TokenLoss problem(pipe, images, request.token, request.num_vectors, request.query_batch,
                    as_templates(request.captions, pipe.tokenizer().lower(request.token)));
  const std::vector<double> theta0 = problem.initial_vector(request.init_word);
  ZOConfig config = request.config;
  if (config.mu < 0) config.mu = default_mu(pipe.bundle());
  config.steps = request.steps;
  const int cap = std::max(2, problem.dim() / 6);  // personalize.fit_config: SG keeps its 16.5 % share
  if (config.sg && config.sg_tau > cap) {
    result.notes.push_back("Subspace Gradient tau " + std::to_string(config.sg_tau) + " -> " + std::to_string(cap) +
                           " for a " + std::to_string(problem.dim()) + "-wide token (removes at most " +
                           std::to_string(cap - 1) + " of " + std::to_string(problem.dim()) +
                           " directions, the spec's 16.5 % share)");
    config.sg_tau = cap;
  }
  config.validate();
  std::unique_ptr<ZOTrainer> trainer = request.resume ? ZOTrainer::resume(checkpoint, problem, config)
                                                      : std::make_unique<ZOTrainer>(problem, config, theta0);
  bool cancelled = false;
  std::vector<StepLog> logs = trainer->run(request.steps, checkpoint, [&](const StepLog& log) {
    if (on_step && !on_step(log.step, request.steps, log.loss)) {
      cancelled = true;
      return false;
    }
    return true;
  }, request.time_budget_s);
  result.token = pipe.tokenizer().lower(request.token);
  result.vectors = trainer->token();
  result.num_vectors = request.num_vectors;
  result.steps = trainer->step_count();
  result.final_loss = logs.empty() ? std::numeric_limits<double>::quiet_NaN() : logs.back().loss;
  result.checkpoint = checkpoint;
  result.cancelled = cancelled;
  const json::Value* quantization = pipe.bundle().manifest().find("quantization");
  const json::Value* recipe = quantization == nullptr ? nullptr : quantization->find("recipe");
  SafeTensorsFile file;
  file.tensors[result.token] = f32_tensor(result.vectors, {request.num_vectors, pipe.width()});
  file.metadata = {{"init_word", json_quote(request.init_word)},
                   {"steps", std::to_string(result.steps)},
                   {"backend", json_quote("executorch")},
                   {"runtime", json_quote("cpp")},
                   {"family", json_quote(pipe.bundle().family())},
                   {"recipe", json_quote(recipe == nullptr ? "fp32" : recipe->as_string())},
                   {"images", std::to_string(result.images.size())},
                   {"config", config.to_json()}};
  write_safetensors(request.output, file);
  return result;
}

LearnedTokens load_learned_tokens(const std::string& path) {
  std::error_code error;
  if (!fs::is_regular_file(path, error))
    fail(Status::kEmbeddingInvalid, "embedding file " + py_repr(path) + " does not exist");
  SafeTensorsFile file = read_safetensors(path);
  if (file.tensors.empty()) fail(Status::kEmbeddingInvalid, py_repr(path) + " holds no learned token");
  LearnedTokens tokens;
  for (const auto& [name, tensor] : file.tensors) {
    if (tensor.dtype != "F32" && tensor.dtype != "F64")
      fail(Status::kEmbeddingInvalid, py_repr(path) + ": token " + py_repr(name) + " is " + tensor.dtype +
                                          ", expected float32 vectors");
    // (k, width) vectors, or one vector (width,), as runtime/tokenizer.py takes them; the width is checked where the
    // bundle is known. A third axis would be flattened into rows nobody exported.
    if (tensor.shape.size() != 1 && tensor.shape.size() != 2) {
      std::vector<std::string> dims;
      for (int64_t d : tensor.shape) dims.push_back(std::to_string(d));
      fail(Status::kEmbeddingInvalid, py_repr(path) + ": learned vectors for " + py_repr(name) + " have shape (" +
                                          join(dims) + "); expected (k, width)");
    }
    if (tensor.dtype == "F32") {
      tokens[name] = f32_values(tensor);
    } else {
      const std::vector<double> values = f64_values(tensor);
      tokens[name].assign(values.begin(), values.end());
    }
  }
  return tokens;
}

// ------------------------------------------------------------------------------------------ classification

ImageClassifier::ImageClassifier(const std::string& bundle_dir, const SessionOptions& options, bool verify_checksums)
    : bundle_(Bundle::open(bundle_dir, verify_checksums)) {
  const json::Value& model = bundle_.model();
  const json::Value* task = model.find("task");
  if (task == nullptr || !task->is_string() || task->as_string() != "classify" || bundle_.task() != "classify")
    fail(Status::kBundleUnsupported, "bundle " + py_repr(fs::path(bundle_.root()).filename().string()) + " is a " +
                                         py_repr(bundle_.task()) + " bundle, not an image classifier (task classify)");
  for (const json::Value& name : model.at("classes").as_array()) classes_.push_back(name.as_string());
  image_size_ = int(model.at("image_size").as_int());
  channels_ = int(model.at("channels").as_int());
  for (const json::Value& v : model.at("mean").as_array()) mean_.push_back(float(v.as_double()));
  for (const json::Value& v : model.at("std").as_array()) std_.push_back(float(v.as_double()));
  if (int(mean_.size()) != channels_ || int(std_.size()) != channels_)
    fail(Status::kBundleCorrupt, "classifier mean/std do not have one value per channel; re-export the bundle");
  session_ = Session::open(bundle_, "classifier", options);
}

Tensor ImageClassifier::logits(const std::vector<Pixels>& images) {
  const int64_t plane = int64_t(image_size_) * image_size_;
  Tensor input{{int64_t(images.size()), channels_, image_size_, image_size_}, {}};
  input.data.resize(size_t(images.size() * channels_ * plane));
  for (size_t b = 0; b < images.size(); ++b) {
    const Pixels& image = images[b];
    if (image.width != image_size_ || image.height != image_size_ || image.channels != channels_)
      fail(Status::kImageInvalid, "expected " + std::to_string(image_size_) + "x" + std::to_string(image_size_) +
                                      "x" + std::to_string(channels_) + " images; use classify() to convert them");
    for (int64_t p = 0; p < plane; ++p)
      for (int c = 0; c < channels_; ++c) {
        const float x = float(image.data[size_t(p * channels_ + c)]) / 255.0f;
        input.data[size_t((b * channels_ + c) * plane + p)] = (x - mean_[c]) / std_[c];
      }
  }
  return session_->run({input}).at(0);
}

std::vector<Prediction> ImageClassifier::classify(const std::vector<Pixels>& images, int top_k) {
  if (top_k < 1) fail(Status::kInvalidArgument, "top-k must be at least 1, got " + std::to_string(top_k));
  if (images.empty()) fail(Status::kInvalidArgument, "no images to classify");
  std::vector<Pixels> fitted;
  std::vector<Prediction> predictions(images.size());
  for (size_t i = 0; i < images.size(); ++i) {
    Pixels image = images[i];
    if (image.channels != channels_) {
      predictions[i].notes.push_back("converted " + std::to_string(image.channels) + " channel(s) to " +
                                     std::to_string(channels_));
      image = to_channels(image, channels_);
    }
    if (image.width != image_size_ || image.height != image_size_) {
      const std::string cropped = image.width != image.height ? " and center-cropped" : "";
      predictions[i].notes.push_back("resized " + std::to_string(image.width) + "x" + std::to_string(image.height) +
                                     " -> " + std::to_string(image_size_) + "x" + std::to_string(image_size_) +
                                     cropped);
      image = center_crop(image, image_size_);
    }
    fitted.push_back(std::move(image));
  }
  const Tensor scores = logits(fitted);
  const auto classes = int64_t(classes_.size());
  const int k = std::min<int64_t>(top_k, classes);
  for (size_t i = 0; i < images.size(); ++i) {
    std::vector<double> row(scores.data.begin() + int64_t(i) * classes, scores.data.begin() + int64_t(i + 1) * classes);
    const double top = *std::max_element(row.begin(), row.end());
    for (double& v : row) v = std::exp(v - top);
    const double total = pairwise_sum(row.data(), classes);
    for (double& v : row) v /= total;
    std::vector<int64_t> order(static_cast<size_t>(classes));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return row[a] > row[b]; });
    for (int j = 0; j < k; ++j) predictions[i].top.emplace_back(classes_[size_t(order[j])], row[size_t(order[j])]);
  }
  return predictions;
}

}  // namespace edgesdk
