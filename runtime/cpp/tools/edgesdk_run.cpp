// edgesdk-run: the C++ runtime from the command line (sample, personalize, classify, verify), a thin layer over
// the app-facing API in include/edgesdk/edgesdk.hpp. Errors print one line, "error: <message> [<status>]", and
// exit with edgesdk::exit_code(status): 2 for user errors, 1 for backend or internal ones.
#include <chrono>
#include <cctype>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "edgesdk/edgesdk.hpp"
#include "errors.hpp"
#include "image.hpp"
#include "json.hpp"
#include "npy.hpp"
#include <executorch/runtime/platform/platform.h>

#include "pipelines.hpp"

namespace {

using edgesdk::Result;
using edgesdk::Status;
using Clock = std::chrono::steady_clock;

const char* const kUsage =
    "usage: edgesdk-run COMMAND BUNDLE [options]\n"
    "  sample BUNDLE -p PROMPT [-p PROMPT ...] [-o out.png] [--steps 25] [--seed 0] [--guidance G]\n"
    "         [--sampler ddim|dpmpp-2m] [--embedding token.safetensors] [--raw out.npy]\n"
    "  personalize BUNDLE --images DIR --token \"<name>\" --init-word WORD -o token.safetensors [--steps 3000]\n"
    "         [--vectors 1] [--directions N] [--mu M] [--lr LR] [--two-sided|--one-sided] [--draws D]\n"
    "         [--cosine-lr|--constant-lr] [--word-directions|--all-directions] [--caption \"a photo of a {}\" ...]\n"
    "         [--seed 0] [--no-sg] [--no-puts]\n"
    "         [--checkpoint-every 50] [--query-batch 0] [--time-budget S] [--resume] [--overwrite]\n"
    "  classify BUNDLE IMAGE.png [IMAGE.png ...] [--top-k 3]\n"
    "  verify BUNDLE\n"
    "common: [--threads N] [--json] [--no-verify] [--verbose (ExecuTorch's info log too)]\n";

// ExecuTorch logs at info level (CPU detection, thread pools) to stderr; a command-line tool shows its errors only,
// unless --verbose. Registered as ExecuTorch's platform log hook before any session opens.
bool g_verbose = false;

void emit_backend_log(et_timestamp_t, et_pal_log_level_t level, const char* filename, const char*, size_t line,
                      const char* message, size_t length) {
  if (!g_verbose && level != kError && level != kFatal) return;
  std::fprintf(stderr, "executorch %c %s:%zu] %.*s\n", static_cast<char>(level), filename, line,
               static_cast<int>(length), message);
}

int report(const Result& result) {
  std::fprintf(stderr, "error: %s [%s]\n", result.message.c_str(), edgesdk::status_name(result.status));
  return edgesdk::exit_code(result.status);
}

int usage_error(const std::string& message) {
  return report({Status::kInvalidArgument, message + " (edgesdk-run --help shows the commands)"});
}

// Peak resident memory of this process in MB (Linux VmHWM), -1 where /proc is not available.
double peak_rss_mb() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::strtod(line.c_str() + 6, nullptr) / 1024.0;
  return -1.0;
}

struct Args {
  std::string command, bundle;
  std::vector<std::string> positional;
  std::map<std::string, std::vector<std::string>> values;
  std::map<std::string, bool> flags;

  bool flag(const std::string& name) const { return flags.count(name) != 0; }
  bool has(const std::string& name) const { return values.count(name) != 0; }
  std::string text(const std::string& name, const std::string& fallback = "") const {
    auto found = values.find(name);
    return found == values.end() ? fallback : found->second.back();
  }
};

const std::vector<std::string> kFlags = {"--json",      "--no-verify",  "--no-sg",     "--no-puts",
                                         "--resume",    "--overwrite",  "--verbose",   "--two-sided",
                                         "--one-sided", "--cosine-lr",  "--constant-lr", "--word-directions",
                                         "--all-directions"};

bool parse(int argc, char** argv, Args* args, std::string* error) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.size() > 1 && arg[0] == '-' && !(arg.size() > 1 && (std::isdigit(arg[1]) || arg[1] == '.'))) {
      if (arg == "-p") arg = "--prompt";
      if (arg == "-o") arg = "--output";
      bool is_flag = false;
      for (const std::string& f : kFlags) is_flag = is_flag || f == arg;
      if (is_flag) {
        args->flags[arg] = true;
        continue;
      }
      if (i + 1 >= argc) {
        *error = arg + " needs a value";
        return false;
      }
      args->values[arg].push_back(argv[++i]);
    } else if (args->command.empty()) {
      args->command = arg;
    } else if (args->bundle.empty()) {
      args->bundle = arg;
    } else {
      args->positional.push_back(arg);
    }
  }
  return true;
}

// A number option: false (and an error) when it does not parse completely.
template <typename T>
bool number(const Args& args, const std::string& name, T* out, std::string* error) {
  if (!args.has(name)) return true;
  const std::string text = args.text(name);
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || !std::isfinite(value)) {
    *error = name + " takes a number, got '" + text + "'";
    return false;
  }
  *out = T(value);
  return true;
}

std::string json_string(const std::string& text) { return edgesdk::json::dump(edgesdk::json::Value::string(text)); }

std::string json_numbers(const std::vector<double>& values) {
  std::string out = "[";
  for (size_t i = 0; i < values.size(); ++i) {
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "%.6g", values[i]);
    out += (i ? "," : "") + std::string(buffer);
  }
  return out + "]";
}

int sample(const Args& args, const edgesdk::Options& options) {
  edgesdk::GenerateRequest request;
  request.prompts = args.values.count("--prompt") ? args.values.at("--prompt") : std::vector<std::string>{};
  std::string error;
  if (!number(args, "--steps", &request.steps, &error) || !number(args, "--seed", &request.seed, &error) ||
      !number(args, "--guidance", &request.guidance_scale, &error))
    return usage_error(error);
  request.sampler = args.text("--sampler", "ddim");
  request.embedding_path = args.text("--embedding");
  const std::string output = args.text("--output"), raw = args.text("--raw");
  if (output.empty() && raw.empty()) return usage_error("sample needs -o OUT.png (or --raw OUT.npy)");
  const auto start = Clock::now();
  std::unique_ptr<edgesdk::Generator> generator;
  Result result = edgesdk::Generator::open(args.bundle, options, &generator);
  if (!result.ok()) return report(result);
  const double open_s = std::chrono::duration<double>(Clock::now() - start).count();
  std::vector<double> step_seconds;
  auto last = Clock::now();
  edgesdk::Progress progress;
  progress.on_step = [&](int64_t, int64_t, double) {
    const auto now = Clock::now();
    step_seconds.push_back(std::chrono::duration<double>(now - last).count());
    last = now;
    return true;
  };
  const auto generate_start = Clock::now();
  std::vector<float> values;
  std::vector<int64_t> shape;
  result = generator->generate_raw(request, &values, &shape, progress);
  if (!result.ok()) return report(result);
  const double generate_s = std::chrono::duration<double>(Clock::now() - generate_start).count();
  try {
    if (!raw.empty()) {
      edgesdk::NpyArray array{"<f4", shape, std::vector<uint8_t>(values.size() * sizeof(float))};
      std::memcpy(array.bytes.data(), values.data(), array.bytes.size());
      edgesdk::write_npy(raw, array);
    }
    if (!output.empty()) {
      edgesdk::Tensor decoded{shape, values};
      edgesdk::write_png(output, edgesdk::grid(edgesdk::to_images(decoded)));
    }
  } catch (const edgesdk::Failure& e) {
    return report({e.status(), e.what()});
  }
  if (args.flag("--json")) {
    std::printf("{\"output\": %s, \"raw\": %s, \"images\": %lld, \"open_s\": %.6f, \"generate_s\": %.6f, "
                "\"step_s\": %s, \"peak_rss_mb\": %.1f}\n",
                json_string(output).c_str(), json_string(raw).c_str(), (long long)(shape.empty() ? 0 : shape[0]),
                open_s, generate_s, json_numbers(step_seconds).c_str(), peak_rss_mb());
  } else {
    std::printf("wrote %s (%lld image(s), %.2f s)\n", (output.empty() ? raw : output).c_str(),
                (long long)(shape.empty() ? 0 : shape[0]), generate_s);
  }
  return 0;
}

int personalize(const Args& args, const edgesdk::Options& options) {
  edgesdk::PersonalizeOptions request;
  request.images_dir = args.text("--images");
  request.token = args.text("--token");
  request.init_word = args.text("--init-word");
  request.output = args.text("--output");
  if (request.images_dir.empty() || request.token.empty() || request.init_word.empty() || request.output.empty())
    return usage_error("personalize needs --images DIR --token \"<name>\" --init-word WORD -o OUT.safetensors");
  std::string error;
  if (!number(args, "--steps", &request.steps, &error) || !number(args, "--vectors", &request.num_vectors, &error) ||
      !number(args, "--directions", &request.directions, &error) || !number(args, "--mu", &request.mu, &error) ||
      !number(args, "--lr", &request.lr, &error) || !number(args, "--seed", &request.seed, &error) ||
      !number(args, "--draws", &request.draws, &error) ||
      !number(args, "--checkpoint-every", &request.checkpoint_every, &error) ||
      !number(args, "--query-batch", &request.query_batch, &error) ||
      !number(args, "--time-budget", &request.time_budget_s, &error))
    return usage_error(error);
  if (args.flag("--two-sided") && args.flag("--one-sided")) return usage_error("give --two-sided or --one-sided");
  if (args.flag("--cosine-lr") && args.flag("--constant-lr")) return usage_error("give --cosine-lr or --constant-lr");
  if (args.flag("--two-sided") || args.flag("--one-sided")) request.two_sided = args.flag("--two-sided");
  if (args.flag("--cosine-lr") || args.flag("--constant-lr")) request.cosine_lr = args.flag("--cosine-lr");
  if (args.flag("--word-directions") && args.flag("--all-directions"))
    return usage_error("give --word-directions or --all-directions");
  if (args.flag("--word-directions") || args.flag("--all-directions"))
    request.word_directions = args.flag("--word-directions");
  if (args.has("--caption")) request.captions = args.values.at("--caption");
  request.subspace_gradient = !args.flag("--no-sg");
  request.partial_uniform_timesteps = !args.flag("--no-puts");
  request.resume = args.flag("--resume");
  request.overwrite = args.flag("--overwrite");
  std::vector<double> step_seconds;
  auto last = Clock::now();
  edgesdk::Progress progress;
  const bool quiet = args.flag("--json");
  progress.on_step = [&](int64_t done, int64_t total, double loss) {
    const auto now = Clock::now();
    step_seconds.push_back(std::chrono::duration<double>(now - last).count());
    last = now;
    if (!quiet && (done % 10 == 0 || done == total))
      std::fprintf(stderr, "step %lld/%lld  loss %.4f\n", (long long)done, (long long)total, loss);
    return true;
  };
  edgesdk::PersonalizeSummary summary;
  const auto start = Clock::now();
  Result result = edgesdk::personalize(args.bundle, request, options, &summary, progress);
  if (!result.ok()) return report(result);
  const double total_s = std::chrono::duration<double>(Clock::now() - start).count();
  for (const std::string& note : summary.notes) std::fprintf(stderr, "note: %s\n", note.c_str());
  if (quiet) {
    std::printf("{\"output\": %s, \"token\": %s, \"steps\": %lld, \"final_loss\": %.17g, \"total_s\": %.6f, "
                "\"step_s\": %s, \"peak_rss_mb\": %.1f, \"checkpoint\": %s}\n",
                json_string(request.output).c_str(), json_string(summary.token).c_str(), (long long)summary.steps,
                summary.final_loss, total_s, json_numbers(step_seconds).c_str(), peak_rss_mb(),
                json_string(summary.checkpoint).c_str());
  } else {
    std::printf("wrote %s: %s (%d x %d) from %zu images, %lld steps; final loss %.4f; checkpoint %s\n",
                request.output.c_str(), summary.token.c_str(), summary.num_vectors, summary.width,
                summary.images.size(), (long long)summary.steps, summary.final_loss, summary.checkpoint.c_str());
  }
  return 0;
}

int classify(const Args& args, const edgesdk::Options& options) {
  if (args.positional.empty()) return usage_error("classify needs at least one image file");
  int top_k = 3;
  std::string error;
  if (!number(args, "--top-k", &top_k, &error)) return usage_error(error);
  std::vector<edgesdk::Image> images(args.positional.size());
  for (size_t i = 0; i < images.size(); ++i) {
    Result read = edgesdk::read_png(args.positional[i], &images[i]);
    if (!read.ok()) return report(read);
  }
  std::unique_ptr<edgesdk::Classifier> classifier;
  Result result = edgesdk::Classifier::open(args.bundle, options, &classifier);
  if (!result.ok()) return report(result);
  std::vector<edgesdk::Classification> predictions;
  result = classifier->classify(images, top_k, &predictions);
  if (!result.ok()) return report(result);
  std::string out = "[";
  for (size_t i = 0; i < predictions.size(); ++i) {
    if (args.flag("--json")) {
      out += std::string(i ? ", " : "") + "{\"source\": " + json_string(args.positional[i]) + ", \"top\": [";
      for (size_t j = 0; j < predictions[i].top.size(); ++j) {
        char probability[32];
        std::snprintf(probability, sizeof probability, "%.17g", predictions[i].top[j].second);
        out += std::string(j ? ", " : "") + "[" + json_string(predictions[i].top[j].first) + ", " + probability + "]";
      }
      out += "]}";
    } else {
      std::printf("%s:", args.positional[i].c_str());
      for (const auto& [name, probability] : predictions[i].top) std::printf("  %s %.3f", name.c_str(), probability);
      std::printf("\n");
      for (const std::string& note : predictions[i].notes) std::fprintf(stderr, "note: %s\n", note.c_str());
    }
  }
  if (args.flag("--json")) std::printf("%s]\n", out.c_str());
  return 0;
}

int verify(const Args& args) {
  edgesdk::BundleSummary summary;
  Result result = edgesdk::verify_bundle(args.bundle, &summary);
  if (!result.ok()) return report(result);
  std::string components;
  if (args.flag("--json")) {
    for (const std::string& name : summary.components)
      components += (components.empty() ? "" : ", ") + json_string(name);
    std::printf("{\"ok\": true, \"family\": %s, \"recipe\": %s, \"components\": [%s]}\n",
                json_string(summary.family).c_str(), json_string(summary.recipe).c_str(), components.c_str());
    return 0;
  }
  for (const std::string& name : summary.components) components += (components.empty() ? "" : ", ") + name;
  std::printf("ok: %s bundle (%s), recipe %s, every checksum matches\n", summary.family.c_str(), components.c_str(),
              summary.recipe.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  std::string error;
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (!parse(argc, argv, &args, &error)) return usage_error(error);
  g_verbose = args.flag("--verbose");
  executorch::runtime::register_pal(executorch::runtime::PalImpl::create(emit_backend_log, __FILE__));
  if (args.bundle.empty()) return usage_error("give the bundle folder after the command");
  edgesdk::Options options;
  if (!number(args, "--threads", &options.threads, &error)) return usage_error(error);
  options.verify_checksums = !args.flag("--no-verify");
  if (args.command == "sample") return sample(args, options);
  if (args.command == "personalize") return personalize(args, options);
  if (args.command == "classify") return classify(args, options);
  if (args.command == "verify") return verify(args);
  return usage_error("unknown command '" + args.command + "'");
}
