// edgesdk-run: the C++ runtime from the command line (sample, personalize, classify, verify), a thin layer over
// the app-facing API in include/edgesdk/edgesdk.hpp. Errors print one line, "error: <message> [<status>]", and
// exit with edgesdk::exit_code(status): 2 for user errors, 1 for backend or internal ones.
#include <algorithm>
#include <chrono>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include "edgesdk/edgesdk.hpp"
#include "errors.hpp"
#include "image.hpp"
#include "json.hpp"
#include "limits.hpp"
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
    "  classify BUNDLE IMAGE.png [IMAGE.png ...] [--top-k 3] [--float-kernel (not the binary-kernel program)]\n"
    "  verify BUNDLE\n"
    "common: [--threads N] [--backend executorch] [--json] [--no-verify] [--verbose (ExecuTorch's info log too)]\n"
    "Unknown options, malformed numbers and values above the limits (runtime/cpp/src/limits.hpp) are refused.\n";

// ExecuTorch logs to stderr at info level (CPU detection, thread pools) and at error level for every refusal of a
// corrupt program, before our own one-line error that carries its reason. A command-line tool prints that one line
// only: ExecuTorch's log shows with --verbose. (Fatal lines still show: ExecuTorch aborts right after them, and the
// line is all a user would have to report.) Registered as ExecuTorch's platform log hook before any session opens.
bool g_verbose = false;

void emit_backend_log(et_timestamp_t, et_pal_log_level_t level, const char* filename, const char*, size_t line,
                      const char* message, size_t length) {
  if (!g_verbose && level != kFatal) return;
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

namespace fs = std::filesystem;

const std::vector<std::string> kFlags = {"--json",      "--no-verify",  "--no-sg",     "--no-puts",
                                         "--resume",    "--overwrite",  "--verbose",   "--two-sided",
                                         "--one-sided", "--cosine-lr",  "--constant-lr", "--word-directions",
                                         "--all-directions", "--help", "--float-kernel"};

// The options each command takes; anything else (a typo such as --step) is refused, never ignored.
const std::set<std::string> kCommon = {"--threads", "--backend", "--json", "--no-verify", "--verbose"};
const std::map<std::string, std::set<std::string>> kCommandOptions = {
    {"sample", {"--prompt", "--output", "--steps", "--seed", "--guidance", "--sampler", "--embedding", "--raw"}},
    {"personalize", {"--images", "--token", "--init-word", "--output", "--steps", "--vectors", "--directions", "--mu",
                     "--lr", "--two-sided", "--one-sided", "--draws", "--cosine-lr", "--constant-lr",
                     "--word-directions", "--all-directions", "--caption", "--seed", "--no-sg", "--no-puts",
                     "--checkpoint-every", "--query-batch", "--time-budget", "--resume", "--overwrite"}},
    {"classify", {"--top-k", "--float-kernel"}},
    {"verify", {}},
};
// Options that may be given more than once (each adds one); every other one must appear at most once.
const std::set<std::string> kRepeatable = {"--prompt", "--caption"};

bool is_option(const std::string& arg) {
  return arg.size() > 1 && arg[0] == '-' && !(std::isdigit(static_cast<unsigned char>(arg[1])) || arg[1] == '.');
}

// The closest known option (a shared prefix of at least 4 characters), for "did you mean".
std::string closest(const std::string& name, const std::set<std::string>& known) {
  std::string best;
  size_t best_shared = 3;
  for (const std::string& candidate : known) {
    size_t shared = 0;
    while (shared < name.size() && shared < candidate.size() && name[shared] == candidate[shared]) ++shared;
    if (shared > best_shared) best_shared = shared, best = candidate;
  }
  return best;
}

bool parse(int argc, char** argv, Args* args, std::string* error) {
  std::vector<std::string> seen;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) == 0 && arg.find('=') != std::string::npos) {  // --steps=2: split, as the Python CLI does
      const size_t equals = arg.find('=');
      const std::string name = arg.substr(0, equals);
      if (std::find(kFlags.begin(), kFlags.end(), name) != kFlags.end()) {  // --json=1: a flag takes no value
        *error = name + " is a flag and takes no value; give " + name + " alone";
        return false;
      }
      args->values[name].push_back(arg.substr(equals + 1));
      seen.push_back(name);
      continue;
    }
    if (is_option(arg)) {
      if (arg == "-p") arg = "--prompt";
      if (arg == "-o") arg = "--output";
      if (arg == "-k") arg = "--top-k";
      bool is_flag = false;
      for (const std::string& f : kFlags) is_flag = is_flag || f == arg;
      seen.push_back(arg);
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
  const auto command = kCommandOptions.find(args->command);
  if (command == kCommandOptions.end()) return true;  // main() names the unknown command
  std::set<std::string> known = kCommon;
  known.insert(command->second.begin(), command->second.end());
  for (const std::string& name : seen) {
    if (known.count(name) == 0) {
      const std::string hint = closest(name, known);
      *error = "unknown option " + name + " for " + args->command + (hint.empty() ? "" : " (did you mean " + hint + "?)");
      return false;
    }
    if (kRepeatable.count(name) == 0 && args->values.count(name) != 0 && args->values.at(name).size() > 1) {
      *error = name + " given " + std::to_string(args->values.at(name).size()) + " times; give it once";
      return false;
    }
  }
  if (args->command != "classify" && !args->positional.empty()) {
    *error = "unexpected argument '" + args->positional.front() + "' for " + args->command;
    return false;
  }
  return true;
}

// A whole-number option in [low, high]: "2.5", "1e12", "12abc" and out-of-range values are refused, never truncated.
template <typename T>
bool integer(const Args& args, const std::string& name, T* out, std::string* error, long long low, long long high) {
  if (!args.has(name)) return true;
  const std::string text = args.text(name);
  char* end = nullptr;
  errno = 0;
  const long long value = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno == ERANGE) {
    *error = name + " takes a whole number, got '" + text + "'";
    return false;
  }
  if (value < low || value > high) {
    *error = name + " " + text + " is " + (value < low ? "below the minimum of " + std::to_string(low)
                                                       : "above the limit of " + std::to_string(high));
    return false;
  }
  *out = T(value);
  return true;
}

// A real-valued option: finite, and above `low` (strictly when `open`) and at most `high`.
bool real(const Args& args, const std::string& name, double* out, std::string* error, double low, bool open,
          double high) {
  if (!args.has(name)) return true;
  const std::string text = args.text(name);
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || !std::isfinite(value)) {
    *error = name + " takes a finite number, got '" + text + "'";
    return false;
  }
  if (value < low || (open && value == low) || value > high) {
    char bounds[96];
    std::snprintf(bounds, sizeof bounds, "%s %g and at most %g", open ? "above" : "at least", low, high);
    *error = name + " must be " + bounds + ", got " + text;
    return false;
  }
  *out = value;
  return true;
}

long long max_threads() {
  const unsigned cpus = std::thread::hardware_concurrency();
  return (long long)(cpus == 0 ? 1 : cpus) * edgesdk::limits::kMaxThreadsPerCpu;
}

// Where `path` would land, for comparing outputs with inputs: symlinks and .. resolved as far as the path exists.
fs::path resolved(const std::string& path) {
  std::error_code error;
  fs::path full = fs::weakly_canonical(fs::absolute(path, error), error);
  return error ? fs::path(path).lexically_normal() : full;
}

bool inside(const fs::path& path, const fs::path& folder) {
  auto p = path.begin(), f = folder.begin();
  for (; f != folder.end(); ++f, ++p)
    if (p == path.end() || *p != *f) return false;
  return true;
}

// A user file to read, judged before it is opened (a FIFO blocks open(), a device never ends): empty when it is a
// regular file or does not exist (the reader then says so), else the one-line reason.
std::string unreadable_input(const std::string& option, const std::string& path) {
  struct stat info {};
  if (path.empty() || ::stat(path.c_str(), &info) != 0 || S_ISREG(info.st_mode)) return "";
  const char* kind = S_ISFIFO(info.st_mode) ? "a FIFO" : S_ISDIR(info.st_mode) ? "a folder"
                     : (S_ISCHR(info.st_mode) || S_ISBLK(info.st_mode)) ? "a device" : "not a regular file";
  return option + " '" + path + "' is " + kind + ", not a regular file";
}

// An output path that is safe to write: not an input (a file of the bundle such as its manifest.json, the learned
// token, a file in the images folder), not a folder, FIFO or socket; a device only where `device_ok` (written in
// place by files.cpp). Empty when fine, else the one-line reason.
std::string unsafe_output(const std::string& option, const std::string& output, const std::string& bundle,
                          const std::vector<std::string>& input_files, const std::vector<std::string>& input_folders,
                          bool device_ok) {
  // a name the file system cannot hold would fail only at the write, after all the work (a whole training run)
  if (output.size() >= PATH_MAX)
    return option + " is a path of " + std::to_string(output.size()) + " characters, above the limit of " +
           std::to_string(PATH_MAX - 1);
  for (const fs::path& part : fs::path(output)) {
    const std::string name = part.string();
    if (name.size() > NAME_MAX)
      return option + " '" + output + "' has a name of " + std::to_string(name.size()) +
             " characters, above the file system's limit of " + std::to_string(NAME_MAX);
  }
  const fs::path target = resolved(output);
  for (const std::string& folder : input_folders)
    if (!folder.empty() && inside(target, resolved(folder)))
      return option + " '" + output + "' lies inside the input folder '" + folder + "'; write to another path";
  if (inside(target, resolved(bundle)))
    return option + " '" + output + "' lies inside the bundle '" + bundle + "'; write to another path";
  for (const std::string& input : input_files) {
    std::error_code error;
    if (!input.empty() && (target == resolved(input) || fs::equivalent(output, input, error)))
      return option + " '" + output + "' is the input '" + input + "'; write to another path";
  }
  struct stat info {};
  if (::stat(output.c_str(), &info) != 0) return "";
  if (S_ISDIR(info.st_mode)) return option + " '" + output + "' is a folder; give a file name";
  if (S_ISFIFO(info.st_mode) || S_ISSOCK(info.st_mode))
    return option + " '" + output + "' is a FIFO or socket; give a regular file name";
  if ((S_ISCHR(info.st_mode) || S_ISBLK(info.st_mode)) && !device_ok)
    return option + " '" + output + "' is a device; this output needs a regular file (a checkpoint goes beside it)";
  return "";
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
  namespace limits = edgesdk::limits;
  request.prompts = args.values.count("--prompt") ? args.values.at("--prompt") : std::vector<std::string>{};
  if (request.prompts.empty()) return usage_error("sample needs at least one -p PROMPT");
  if (int64_t(request.prompts.size()) > limits::kMaxImages)
    return usage_error(std::to_string(request.prompts.size()) + " prompts is above the limit of " +
                       std::to_string(limits::kMaxImages) + " images a command");
  for (const std::string& prompt : request.prompts)
    if (int64_t(prompt.size()) > limits::kMaxPromptChars)
      return usage_error("a prompt of " + std::to_string(prompt.size()) + " characters is above the limit of " +
                         std::to_string(limits::kMaxPromptChars));
  std::string error;
  double guidance = -1.0;
  if (!integer(args, "--steps", &request.steps, &error, 1, limits::kMaxDenoiseSteps) ||
      !integer(args, "--seed", &request.seed, &error, 0, (1LL << 53)) ||
      !real(args, "--guidance", &guidance, &error, -1e6, false, 1e6))
    return usage_error(error);
  if (args.has("--guidance")) request.guidance_scale = guidance;
  if (args.has("--guidance") && guidance < 0)
    return usage_error("--guidance must be at least 0, got " + args.text("--guidance"));
  request.sampler = args.text("--sampler", "ddim");
  if (request.sampler != "ddim" && request.sampler != "dpmpp-2m")
    return usage_error("--sampler must be ddim or dpmpp-2m, got '" + request.sampler + "'");
  request.embedding_path = args.text("--embedding");
  if (const std::string problem = unreadable_input("--embedding", request.embedding_path); !problem.empty())
    return usage_error(problem);
  const std::string output = args.text("--output"), raw = args.text("--raw");
  if (output.empty() && raw.empty()) return usage_error("sample needs -o OUT.png (or --raw OUT.npy)");
  for (const auto& [option, path] : {std::pair{"--output", output}, std::pair{"--raw", raw}}) {
    if (path.empty()) continue;
    const std::string problem = unsafe_output(option, path, args.bundle, {request.embedding_path}, {}, true);
    if (!problem.empty()) return usage_error(problem);
  }
  if (!output.empty() && !raw.empty() && resolved(output) == resolved(raw))
    return usage_error("-o and --raw name the same file; give two paths");
  const auto start = Clock::now();
  std::unique_ptr<edgesdk::Generator> generator;
  Result result = edgesdk::Generator::open(args.bundle, options, &generator);
  if (!result.ok()) return report(result);
  if (generator->one_step()) {
    std::string given;
    for (const char* option : {"--steps", "--guidance", "--sampler"})
      if (args.has(option)) given += std::string(given.empty() ? "" : ", ") + option;
    if (!given.empty())
      return usage_error(given + ": a one-step bundle (family onestep) samples in one generator evaluation, with "
                         "no steps, sampler or guidance; drop them");
  }
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
  namespace limits = edgesdk::limits;
  std::string error;
  if (!integer(args, "--steps", &request.steps, &error, 1, limits::kMaxSteps) ||
      !integer(args, "--vectors", &request.num_vectors, &error, 1, limits::kMaxVectors) ||
      !integer(args, "--directions", &request.directions, &error, 1, limits::kMaxDirections) ||
      !real(args, "--mu", &request.mu, &error, 0.0, true, 1e6) ||
      !real(args, "--lr", &request.lr, &error, 0.0, true, 1e6) ||
      !integer(args, "--seed", &request.seed, &error, 0, (1LL << 53)) ||
      !integer(args, "--draws", &request.draws, &error, 1, limits::kMaxDraws) ||
      !integer(args, "--checkpoint-every", &request.checkpoint_every, &error, 1, limits::kMaxSteps) ||
      !integer(args, "--query-batch", &request.query_batch, &error, 1, 2 * limits::kMaxDirections + 1) ||
      !real(args, "--time-budget", &request.time_budget_s, &error, 0.0, true, limits::kMaxTimeBudgetS))
    return usage_error(error);
  for (const auto& [option, path] : {std::pair{"--output", request.output},
                                     std::pair{"checkpoint", request.output + ".ckpt.safetensors"}}) {
    const std::string problem = unsafe_output(option, path, args.bundle, {}, {request.images_dir}, false);
    if (!problem.empty()) return usage_error(problem);
  }
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
  if (!integer(args, "--top-k", &top_k, &error, 1, 100000)) return usage_error(error);
  if (int64_t(args.positional.size()) > edgesdk::limits::kMaxImages)
    return usage_error(std::to_string(args.positional.size()) + " images is above the limit of " +
                       std::to_string(edgesdk::limits::kMaxImages) + " a command");
  std::vector<edgesdk::Image> images(args.positional.size());
  for (size_t i = 0; i < images.size(); ++i) {
    Result read = edgesdk::read_png(args.positional[i], &images[i]);
    if (!read.ok()) return report(read);
  }
  std::unique_ptr<edgesdk::Classifier> classifier;
  edgesdk::Options classify_options = options;
  classify_options.binary_kernel = !args.flag("--float-kernel");
  Result result = edgesdk::Classifier::open(args.bundle, classify_options, &classifier);
  if (!result.ok()) return report(result);
  std::vector<edgesdk::Classification> predictions;
  result = classifier->classify(images, top_k, &predictions);
  if (!result.ok()) return report(result);
  std::fprintf(stderr, "note: kernel: %s\n", classifier->kernel().c_str());
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
  if (args.flag("--help")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (kCommandOptions.count(args.command) == 0) return usage_error("unknown command '" + args.command + "'");
  g_verbose = args.flag("--verbose");
  executorch::runtime::register_pal(executorch::runtime::PalImpl::create(emit_backend_log, __FILE__));
  if (args.bundle.empty()) return usage_error("give the bundle folder after the command");
  edgesdk::Options options;
  if (!integer(args, "--threads", &options.threads, &error, 1, max_threads())) return usage_error(error);
  if (args.has("--backend") && args.text("--backend") != "executorch")
    return usage_error("--backend '" + args.text("--backend") + "': edgesdk-run runs ExecuTorch programs only "
                       "(--backend executorch); ONNX bundles run with the Python CLI");
  options.verify_checksums = !args.flag("--no-verify");
  if (args.command == "sample") return sample(args, options);
  if (args.command == "personalize") return personalize(args, options);
  if (args.command == "classify") return classify(args, options);
  if (args.command == "verify") return verify(args);
  return usage_error("unknown command '" + args.command + "'");
}
