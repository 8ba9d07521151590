#include "bundle.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <system_error>

#include "errors.hpp"
#include "files.hpp"
#include "limits.hpp"
#include "schema.hpp"
#include "sha256.hpp"
#include "text.hpp"

namespace edgesdk {
namespace fs = std::filesystem;

namespace {

const char kFormat[] = "edgesdk-bundle";
constexpr int64_t kKnownFormatVersion = 1;

[[noreturn]] void corrupt(const std::string& message) { fail(Status::kBundleCorrupt, message); }

// A manifest value in a message, as Python's repr would show it ('text', None, 2, ...).
std::string shown(const json::Value* value) {
  if (value == nullptr || value->is_null()) return "None";
  if (value->is_string()) return py_repr(value->as_string());
  if (value->is_bool()) return value->as_bool() ? "True" : "False";
  return json::dump(*value);
}

constexpr int64_t kMaxManifestBytes = int64_t(16) << 20;  // as runtime/schema.py's MAX_MANIFEST_BYTES

// manifest.json's bytes: a regular file (never a link, FIFO or device, which could lead outside or block), of a
// bounded size, opened without following a link and without blocking.
std::vector<uint8_t> read_manifest_bytes(const fs::path& path) {
  const std::string shown_path = py_repr(path.string());
  struct stat info {};
  if (::lstat(path.c_str(), &info) != 0) {
    fail(Status::kBundleNotFound, py_repr(path.parent_path().string()) + " has no manifest.json, so it is not a "
                                  "bundle; pass the NAME.edge folder that `edgesdk export` wrote");
  }
  if (S_ISLNK(info.st_mode)) corrupt(shown_path + " is a symbolic link; a bundle's manifest must be a regular file");
  if (!S_ISREG(info.st_mode)) corrupt(shown_path + " is not a regular file; the bundle is refused");
  if (int64_t(info.st_size) > kMaxManifestBytes) {
    corrupt(shown_path + " is " + std::to_string(info.st_size) + " bytes, more than the " +
            std::to_string(kMaxManifestBytes) + " a bundle may use; the bundle is refused");
  }
  int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) fail(Status::kIoError, "cannot read " + shown_path + ": " + std::strerror(errno));
  std::vector<uint8_t> bytes(static_cast<size_t>(kMaxManifestBytes) + 1);
  size_t have = 0;
  while (have < bytes.size()) {
    ssize_t got = ::read(fd, bytes.data() + have, bytes.size() - have);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      int error = errno;
      ::close(fd);
      fail(Status::kIoError, "cannot read " + shown_path + ": " + std::strerror(error));
    }
    if (got == 0) break;
    have += static_cast<size_t>(got);
  }
  ::close(fd);
  if (int64_t(have) > kMaxManifestBytes) corrupt(shown_path + " is more than " + std::to_string(kMaxManifestBytes) +
                                                 " bytes; the bundle is refused");
  bytes.resize(have);
  return bytes;
}

json::Value read_manifest(const fs::path& root) {
  fs::path path = root / "manifest.json";
  std::vector<uint8_t> bytes = read_manifest_bytes(path);
  json::Value manifest;
  const std::string what = "manifest.json";
  try {
    manifest = json::parse(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()), what);
  } catch (const Failure& e) {
    std::string reason = e.what();
    if (reason.rfind(what + ": ", 0) == 0) reason = reason.substr(what.size() + 2);
    corrupt(py_repr(path.string()) + " is not JSON (" + reason + "); re-export the bundle");
  }
  if (!manifest.is_object()) corrupt(py_repr(path.string()) + " must hold a JSON object; re-export the bundle");
  return manifest;
}

// A component's binary_kernel programs ({"file": path, "op": name, ...} per backend), each checked for the two keys a
// runtime reads (the schema says only that the whole is an object), as runtime/bundle.py's binary_kernels.
std::vector<std::pair<std::string, const json::Value*>> binary_kernel_entries(const std::string& name,
                                                                              const json::Value& entry) {
  std::vector<std::pair<std::string, const json::Value*>> kernels;
  const json::Value* all = entry.is_object() ? entry.find("binary_kernel") : nullptr;
  if (all == nullptr) return kernels;
  if (!all->is_object())
    corrupt("manifest field components." + name + ".binary_kernel is not an object; the bundle is refused");
  for (const auto& [backend, kernel] : all->as_object()) {
    const json::Value* file = kernel.is_object() ? kernel.find("file") : nullptr;
    const json::Value* op = kernel.is_object() ? kernel.find("op") : nullptr;
    if (file == nullptr || !file->is_string() || op == nullptr || !op->is_string())
      corrupt("manifest field components." + name + ".binary_kernel." + backend + ": " + shown(&kernel) +
              " is not an object with a string 'file' and 'op'; the bundle is refused");
    kernels.emplace_back(backend, &kernel);
  }
  return kernels;
}

std::vector<const json::Value*> binary_kernels(const std::string& name, const json::Value& entry) {
  std::vector<const json::Value*> kernels;
  for (const auto& [backend, kernel] : binary_kernel_entries(name, entry)) kernels.push_back(kernel);
  return kernels;
}

// Refuse absolute paths, "..", backslashes and symlinks that point out: a bundle must not read files elsewhere.
void check_inside(const fs::path& root, const json::Value& rel) {
  bool escapes = !rel.is_string();
  if (!escapes) {
    const std::string& text = rel.as_string();
    escapes = text.empty() || text[0] == '/' || text.find('\\') != std::string::npos;
    for (size_t start = 0; !escapes && start <= text.size();) {
      size_t end = text.find('/', start);
      if (end == std::string::npos) end = text.size();
      escapes = text.compare(start, end - start, "..") == 0 && end - start == 2;
      start = end + 1;
    }
    if (!escapes) {
      std::error_code error;
      fs::path resolved = fs::weakly_canonical(root / text, error);
      auto mismatch = std::mismatch(root.begin(), root.end(), resolved.begin(), resolved.end());
      escapes = error || mismatch.first != root.end();
    }
  }
  if (escapes) {
    corrupt("bundle path " + shown(&rel) + " leaves the bundle (paths must be relative, without '..'); "
            "the bundle is refused");
  }
}

void check_structure(const fs::path& root, const json::Value& manifest) {
  const json::Value* format = manifest.find("format");
  if (format == nullptr || !format->is_string() || format->as_string() != kFormat) {
    fail(Status::kBundleUnsupported, "manifest format is " + shown(format) + ", expected '" + kFormat +
                                         "'; this folder was not written by `edgesdk export`");
  }
  const json::Value* version = manifest.find("format_version");
  if (version == nullptr || !version->is_integer() || version->as_int() != kKnownFormatVersion) {
    fail(Status::kBundleUnsupported,
         "bundle format_version " + shown(version) + " is not supported: this runtime reads version " +
             std::to_string(kKnownFormatVersion) + "; upgrade edgesdk or re-export the bundle with this version");
  }
  // types, required keys and bounds of everything else, before any path or file is looked at
  schema::validate_manifest(manifest);
  const json::Value& listed = manifest.at("files");
  for (const auto& [rel, digest] : listed.as_object()) check_inside(root, json::Value::string(rel));

  std::vector<const json::Value*> referenced;
  std::set<std::string> asset_files;
  if (const json::Value* assets = manifest.find("assets")) {
    if (!assets->is_object()) corrupt("manifest 'assets' is not an object; re-export the bundle");
    for (const auto& [name, rel] : assets->as_object()) {
      referenced.push_back(&rel);
      if (rel.is_string()) asset_files.insert(rel.as_string());
    }
  }
  for (const auto& [name, entry] : manifest.at("components").as_object()) {
    const json::Value* files = entry.find("files");
    if (!entry.is_object() || (files != nullptr && !files->is_object())) {
      corrupt("manifest component " + py_repr(name) + " is malformed; re-export the bundle");
    }
    if (files != nullptr) {
      for (const auto& [backend, rel] : files->as_object()) referenced.push_back(&rel);
    }
    for (const json::Value* kernel : binary_kernels(name, entry)) referenced.push_back(kernel->find("file"));
  }
  for (const json::Value* rel : referenced) {
    check_inside(root, *rel);
    if (!listed.contains(rel->as_string())) {
      corrupt("bundle file " + shown(rel) + " is not listed in the manifest's 'files' checksums; "
              "re-export the bundle");
    }
  }
  for (const auto& [rel, digest] : listed.as_object()) {
    struct stat info {};  // follows a link, which check_inside kept inside the bundle
    if (::stat((root / rel).c_str(), &info) != 0) {
      corrupt("bundle file " + py_repr(rel) + " is missing from " + py_repr(root.string()) +
              "; copy the whole bundle folder or re-export it");
    }
    if (!S_ISREG(info.st_mode)) {  // a FIFO or device would block or never end when hashed
      corrupt("bundle file " + py_repr(rel) + " is not a regular file (a folder, FIFO or device); "
              "the bundle is refused");
    }
    if (asset_files.count(rel) != 0 && int64_t(info.st_size) > limits::kMaxAssetFileBytes) {
      corrupt("bundle asset " + py_repr(rel) + " is " + std::to_string(int64_t(info.st_size) >> 20) +
              " MiB, above the limit of " + std::to_string(limits::kMaxAssetFileBytes >> 20) +
              " MiB for an asset; the bundle is refused");
    }
  }
  schema::check_consistency(manifest);
}

// A bundle says what it does: a task in the manifest or its model section, or a family whose task is known (see
// Bundle::task). A family never heard of, with no task, would otherwise be guessed at from the model section and run
// as whatever the guess says (runtime/bundle.py's _check_task).
void check_task(const json::Value& manifest) {
  const json::Value* model = manifest.find("model");
  for (const json::Value* task : {manifest.find("task"), model != nullptr ? model->find("task") : nullptr}) {
    if (task != nullptr && task->is_string() && !task->as_string().empty()) return;
  }
  static const std::set<std::string> kKnownFamilies = {"bnn", "custom", "onestep", "stable-diffusion", "synthetic",
                                                       "tiny-sd", "viws"};
  const json::Value* family = manifest.find("family");
  if (family == nullptr || (family->is_string() && kKnownFamilies.count(family->as_string()) != 0)) return;
  corrupt("manifest field family: " + shown(family) + " is not a family this runtime knows (" +
          join(std::vector<std::string>(kKnownFamilies.begin(), kKnownFamilies.end())) +
          ") and the manifest names no task (\"task\") that says what the bundle does; the bundle is refused");
}

void verify_checksums(const fs::path& root, const json::Value& manifest) {
  for (const auto& [rel, expected] : manifest.at("files").as_object()) {
    std::string want = expected.is_string() ? expected.as_string() : json::dump(expected);
    std::transform(want.begin(), want.end(), want.begin(), [](unsigned char c) { return std::tolower(c); });
    if (sha256_file_hex((root / rel).string()) != want) {
      corrupt("bundle file " + py_repr(rel) + ": checksum mismatch: the file was changed or corrupted; "
              "re-export the bundle");
    }
  }
}

std::vector<TensorSpec> parse_specs(const json::Value* entries, const std::string& component) {
  std::vector<TensorSpec> specs;
  if (entries == nullptr) return specs;
  auto malformed = [&](const json::Value& entry) {
    corrupt("manifest component " + py_repr(component) + " has a malformed input/output entry " +
            json::dump(entry) + "; re-export the bundle");
  };
  if (!entries->is_array()) malformed(*entries);
  for (const json::Value& entry : entries->as_array()) {
    const json::Value* name = entry.find("name");
    if (name == nullptr) malformed(entry);
    TensorSpec spec;
    spec.name = name->is_string() ? name->as_string() : json::dump(*name);
    const json::Value* dtype = entry.find("dtype");
    spec.dtype = dtype == nullptr ? "float32" : dtype->is_string() ? dtype->as_string() : json::dump(*dtype);
    if (const json::Value* shape = entry.find("shape")) {
      if (!shape->is_array()) malformed(entry);
      for (const json::Value& dim : shape->as_array()) {
        if (dim.is_string()) {
          spec.shape.push_back(-1);
          spec.dim_names.push_back(dim.as_string());
        } else if (dim.is_number() && dim.is_integer() && dim.as_int() >= 0) {
          spec.shape.push_back(dim.as_int());
          spec.dim_names.emplace_back();
        } else {
          malformed(entry);
        }
      }
    }
    specs.push_back(std::move(spec));
  }
  return specs;
}

ComponentInfo parse_component(const std::string& name, const json::Value& entry) {
  ComponentInfo info;
  info.name = name;
  info.inputs = parse_specs(entry.find("inputs"), name);
  info.outputs = parse_specs(entry.find("outputs"), name);
  if (const json::Value* files = entry.find("files")) {
    for (const auto& [backend, rel] : files->as_object()) info.files[backend] = rel.as_string();
  }
  for (const auto& [backend, kernel] : binary_kernel_entries(name, entry))
    info.binary_kernel[backend] = {kernel->find("file")->as_string(), kernel->find("op")->as_string()};
  for (auto [key, target] : {std::pair{"static_shapes", &info.static_shapes}, {"dynamic_dims", &info.dynamic_dims}}) {
    if (const json::Value* value = entry.find(key)) {
      if (!value->is_object()) corrupt("manifest component " + py_repr(name) + " has a malformed " + key +
                                       "; re-export the bundle");
      *target = *value;
    }
  }
  return info;
}

std::string folder_name(const std::string& root) { return fs::path(root).filename().string(); }

std::vector<std::string> sorted_keys(const json::Value* object) {
  std::vector<std::string> keys;
  if (object != nullptr && object->is_object()) {
    for (const auto& [key, value] : object->as_object()) keys.push_back(key);
  }
  std::sort(keys.begin(), keys.end());
  return keys;
}

}  // namespace

Bundle Bundle::open(const std::string& dir, bool verify) {
  std::error_code error;
  if (!fs::is_directory(dir, error)) {
    std::string problem = fs::exists(dir, error) ? "is not a directory" : "does not exist";
    fail(Status::kBundleNotFound, "bundle directory " + py_repr(dir) + " " + problem +
                                      "; pass the NAME.edge folder that `edgesdk export` wrote");
  }
  fs::path root = fs::canonical(dir, error);
  if (error) fail(Status::kIoError, "cannot open bundle directory " + py_repr(dir) + ": " + error.message());
  json::Value manifest = read_manifest(root);
  check_structure(root, manifest);
  check_task(manifest);
  // assets before checksums, as runtime/bundle.py: their headers and sizes are judged in milliseconds (trusting
  // nothing they read), while hashing a hostile multi-GB file takes seconds
  schema::check_assets(root.string(), manifest);
  if (verify) verify_checksums(root, manifest);

  Bundle bundle;
  bundle.root_ = root.string();
  bundle.manifest_ = manifest;
  const json::Value* model = manifest.find("model");
  bundle.model_ = model != nullptr && model->is_object() ? *model : json::Value::object();
  for (const auto& [name, entry] : manifest.at("components").as_object()) {
    bundle.components_[name] = parse_component(name, entry);
  }
  return bundle;
}

std::string Bundle::family() const {
  const json::Value* family = manifest_.find("family");
  if (family == nullptr) return "";
  return family->is_string() ? family->as_string() : json::dump(*family);
}

std::string Bundle::task() const {
  static const std::map<std::string, std::string> kLegacyTasks = {
      {"tiny-sd", "text-to-image"}, {"stable-diffusion", "text-to-image"}, {"onestep", "one-step-text-to-image"},
      {"bnn", "classify"}, {"viws", "restore"}};
  for (const json::Value* task : {manifest_.find("task"), model_.find("task")}) {
    if (task != nullptr && task->is_string() && !task->as_string().empty()) return task->as_string();
  }
  if (auto legacy = kLegacyTasks.find(family()); legacy != kLegacyTasks.end()) return legacy->second;
  return model_.contains("latent_channels") ? "text-to-image" : "run";
}

const ComponentInfo& Bundle::component(const std::string& name) const {
  auto found = components_.find(name);
  if (found == components_.end()) {
    std::vector<std::string> names;
    for (const auto& [have, info] : components_) names.push_back(have);
    fail(Status::kBundleUnsupported, "bundle " + py_repr(folder_name(root_)) + " has no component " +
                                         py_repr(name) + "; it has: " + join(names));
  }
  return found->second;
}

bool Bundle::has_asset(const std::string& name) const {
  const json::Value* assets = manifest_.find("assets");
  return assets != nullptr && assets->contains(name);
}

std::string Bundle::asset_path(const std::string& name) const {
  const json::Value* assets = manifest_.find("assets");
  if (!has_asset(name)) {
    std::vector<std::string> names = sorted_keys(assets);
    fail(Status::kBundleUnsupported, "bundle " + py_repr(folder_name(root_)) + " has no asset " + py_repr(name) +
                                         "; it has: " + (names.empty() ? "none" : join(names)));
  }
  return path_of(assets->at(name).as_string());
}

NpyArray Bundle::asset_array(const std::string& name) const { return read_npy(asset_path(name)); }

json::Value Bundle::asset_json(const std::string& name) const {
  std::string path = asset_path(name);
  std::vector<uint8_t> bytes = read_file_bytes(path);
  return json::parse(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()),
                     folder_name(root_) + "/" + manifest_.at("assets").at(name).as_string());
}

}  // namespace edgesdk
