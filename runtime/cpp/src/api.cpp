// The app-facing API (include/edgesdk/edgesdk.hpp): every entry point catches what the library throws and
// returns it as a Result, so nothing crosses into JNI or Objective-C++ as an exception.
#include "edgesdk/edgesdk.hpp"

#include <cmath>
#include <limits>
#include <new>

#include "errors.hpp"
#include "pipelines.hpp"

namespace edgesdk {

const char* version() noexcept { return "0.1.0"; }

namespace {

template <typename Body>
Result guarded(Body&& body) noexcept {
  try {
    body();
    return {};
  } catch (const Failure& e) {
    return {e.status(), e.what()};
  } catch (const std::bad_alloc&) {
    return {Status::kInternal, "out of memory"};
  } catch (const std::exception& e) {
    return {Status::kInternal, std::string("internal error: ") + e.what()};
  } catch (...) {
    return {Status::kInternal, "internal error"};
  }
}

SessionOptions session_options(const Options& options) {
  SessionOptions session;
  session.threads = options.threads;
  session.binary_kernel = options.binary_kernel;
  return session;
}

// A step callback that honours both the app's callback and its cancel flag.
StepCallback step_callback(const Progress& progress) {
  if (!progress.on_step && progress.cancel == nullptr) return nullptr;
  return [progress](int64_t done, int64_t total, double loss) {
    if (progress.cancel != nullptr && progress.cancel->load()) return false;
    return progress.on_step ? progress.on_step(done, total, loss) : true;
  };
}

Pixels to_pixels(const Image& image) {
  if (image.channels != 1 && image.channels != 3 && image.channels != 4)
    fail(Status::kImageInvalid, "an image has 1, 3 or 4 channels, got " + std::to_string(image.channels));
  if (image.width <= 0 || image.height <= 0 ||
      image.pixels.size() != size_t(image.width) * size_t(image.height) * size_t(image.channels))
    fail(Status::kImageInvalid, "image pixels do not match its width x height x channels");
  return Pixels{image.width, image.height, image.channels, image.pixels};
}

Image to_image(Pixels pixels) { return Image{pixels.width, pixels.height, pixels.channels, std::move(pixels.data)}; }

}  // namespace

// ------------------------------------------------------------------------------------------ Generator

struct Generator::Impl {
  std::unique_ptr<TextToImage> diffusion;
  std::unique_ptr<OneStepTextToImage> one_step;

  Tensor generate(const GenerateRequest& request, const Progress& progress) {
    LearnedTokens learned;
    if (!request.embedding_path.empty()) learned = load_learned_tokens(request.embedding_path);
    const int64_t width = one_step ? one_step->width() : diffusion->width();
    for (const auto& [name, values] : learned)
      for (float value : values)
        if (!std::isfinite(value))
          fail(Status::kEmbeddingInvalid, "token " + name + " in " + request.embedding_path +
                                              " holds NaN or infinite values; a learned token must be finite");
    for (const auto& [name, values] : learned)
      if (values.empty() || int64_t(values.size()) % width != 0)
        fail(Status::kEmbeddingInvalid, "token " + name + " in " + request.embedding_path + " has " +
                                            std::to_string(values.size()) + " values, not rows of this model's " +
                                            std::to_string(width) + "-wide embeddings (learned on another model?)");
    if (progress.cancel != nullptr && progress.cancel->load()) fail(Status::kCancelled, "cancelled");
    if (one_step) {
      Tensor out = one_step->generate(request.prompts, request.seed, learned);
      StepCallback callback = step_callback(progress);
      if (callback && !callback(1, 1, std::numeric_limits<double>::quiet_NaN()))
        fail(Status::kCancelled, "cancelled");
      return out;
    }
    SampleRequest sample{request.prompts, request.steps, request.seed, request.guidance_scale, request.sampler,
                         learned};
    return diffusion->generate(sample, step_callback(progress));
  }
};

Generator::Generator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Generator::~Generator() = default;

Result Generator::open(const std::string& bundle_dir, const Options& options, std::unique_ptr<Generator>* out) {
  return guarded([&] {
    auto impl = std::make_unique<Impl>();
    const Bundle probe = Bundle::open(bundle_dir, options.verify_checksums);
    if (probe.task() == "one-step-text-to-image")
      impl->one_step = std::make_unique<OneStepTextToImage>(bundle_dir, session_options(options), false);
    else
      impl->diffusion = std::make_unique<TextToImage>(bundle_dir, session_options(options), false);
    out->reset(new Generator(std::move(impl)));
  });
}

Result Generator::generate(const GenerateRequest& request, std::vector<Image>* images, const Progress& progress) {
  return guarded([&] {
    images->clear();
    for (Pixels& pixels : to_images(impl_->generate(request, progress))) images->push_back(to_image(std::move(pixels)));
  });
}

Result Generator::generate_raw(const GenerateRequest& request, std::vector<float>* values, std::vector<int64_t>* shape,
                               const Progress& progress) {
  return guarded([&] {
    Tensor out = impl_->generate(request, progress);
    *values = std::move(out.data);
    *shape = std::move(out.shape);
  });
}

bool Generator::one_step() const noexcept { return impl_->one_step != nullptr; }

int Generator::image_size() const noexcept {
  return impl_->one_step ? impl_->one_step->image_size() : impl_->diffusion->image_size();
}

// ------------------------------------------------------------------------------------------ personalize

Result personalize(const std::string& bundle_dir, const PersonalizeOptions& options, const Options& runtime,
                   PersonalizeSummary* summary, const Progress& progress) {
  return guarded([&] {
    PersonalizeRequest request;
    request.images_dir = options.images_dir;
    request.token = options.token;
    request.init_word = options.init_word;
    request.output = options.output;
    request.steps = options.steps;
    request.num_vectors = options.num_vectors;
    request.config.n = options.directions;
    request.config.mu = options.mu;
    request.config.lr = options.lr;
    request.config.two_sided = options.two_sided;
    request.config.draws = options.draws;
    request.config.cosine_lr = options.cosine_lr;
    request.config.word_directions = options.word_directions;
    request.captions = options.captions;
    request.config.seed = int64_t(options.seed);
    request.config.sg = options.subspace_gradient;
    request.config.puts = options.partial_uniform_timesteps;
    request.config.checkpoint_every = options.checkpoint_every;
    request.resume = options.resume;
    request.overwrite = options.overwrite;
    request.query_batch = options.query_batch;
    request.time_budget_s = options.time_budget_s;
    PersonalizeResult result = edgesdk::personalize(bundle_dir, request, session_options(runtime),
                                                    step_callback(progress));
    summary->token = result.token;
    summary->num_vectors = result.num_vectors;
    summary->width = result.num_vectors > 0 ? int(result.vectors.size()) / result.num_vectors : 0;
    summary->vectors = result.vectors;
    summary->steps = result.steps;
    summary->final_loss = result.final_loss;
    summary->checkpoint = result.checkpoint;
    summary->images = result.images;
    summary->notes = result.notes;
    if (result.cancelled)
      fail(Status::kCancelled, "personalization cancelled at step " + std::to_string(result.steps) +
                                   "; the checkpoint was written: resume continues it");
  });
}

// ------------------------------------------------------------------------------------------ Classifier

struct Classifier::Impl {
  std::unique_ptr<ImageClassifier> classifier;
};

Classifier::Classifier(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Classifier::~Classifier() = default;

Result Classifier::open(const std::string& bundle_dir, const Options& options, std::unique_ptr<Classifier>* out) {
  return guarded([&] {
    auto impl = std::make_unique<Impl>();
    impl->classifier = std::make_unique<ImageClassifier>(bundle_dir, session_options(options), options.verify_checksums);
    out->reset(new Classifier(std::move(impl)));
  });
}

Result Classifier::classify(const std::vector<Image>& images, int top_k, std::vector<Classification>* out) {
  return guarded([&] {
    std::vector<Pixels> pixels;
    for (const Image& image : images) pixels.push_back(to_pixels(image));
    out->clear();
    for (Prediction& p : impl_->classifier->classify(pixels, top_k)) out->push_back({std::move(p.top), std::move(p.notes)});
  });
}

std::vector<std::string> Classifier::classes() const { return impl_->classifier->classes(); }
std::string Classifier::kernel() const { return impl_->classifier->kernel(); }

// ------------------------------------------------------------------------------------------ files

Result verify_bundle(const std::string& bundle_dir, BundleSummary* summary) {
  return guarded([&] {
    const Bundle bundle = Bundle::open(bundle_dir, true);
    summary->family = bundle.family();
    summary->components.clear();
    for (const auto& [name, info] : bundle.components()) summary->components.push_back(name);
    const json::Value* quantization = bundle.manifest().find("quantization");
    const json::Value* recipe = quantization == nullptr ? nullptr : quantization->find("recipe");
    summary->recipe = recipe == nullptr ? "fp32" : recipe->as_string();
  });
}

Result read_png(const std::string& path, Image* image) {
  return guarded([&] { *image = to_image(edgesdk::read_png(path)); });
}

Result write_png(const std::string& path, const Image& image) {
  return guarded([&] { edgesdk::write_png(path, to_pixels(image)); });
}

}  // namespace edgesdk
