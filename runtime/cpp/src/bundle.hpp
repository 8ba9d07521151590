// Open and verify a bundle folder (NAME.edge/, docs/bundle-format.md), as runtime/bundle.py does: everything is
// checked once, at open, so later code can trust the manifest. A bundle that opens is complete, untampered
// (every file matches its SHA-256) and self-contained (no path leaves the folder).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "json.hpp"
#include "npy.hpp"

namespace edgesdk {

// One input or output of a component.
struct TensorSpec {
  std::string name, dtype;
  std::vector<int64_t> shape;           // -1 where the manifest has a string (a dynamic dim such as "batch")
  std::vector<std::string> dim_names;   // the string of each dynamic dim, "" for fixed dims
};

// A program that computes a component's binary layers in binary (manifest binary_kernel.<backend>).
struct BinaryKernelInfo {
  std::string file;  // relative to the bundle, checked like every file
  std::string op;    // the operator it needs, e.g. "edgesdk::binary_conv2d.out"
};

// One exported network (text_encoder, unet, ...) and its files per target backend.
struct ComponentInfo {
  std::string name;
  std::vector<TensorSpec> inputs, outputs;
  std::map<std::string, std::string> files;  // backend -> path relative to the bundle
  std::map<std::string, BinaryKernelInfo> binary_kernel;  // backend -> binary-kernel program
  json::Value static_shapes = json::Value::object();  // e.g. {"executorch": {"batch": 2, "methods": {...}}}
  json::Value dynamic_dims = json::Value::object();    // e.g. {"batch": {"min": 1, "max": 8}}
};

class Bundle {
 public:
  // Reads and verifies `dir`. verify_checksums=false skips hashing (startup benchmarks only).
  // Throws Failure: kBundleNotFound (no folder, no manifest.json), kBundleUnsupported (another format or an
  // unknown format_version), kBundleCorrupt (malformed manifest, a path leaving the bundle, a file not listed in
  // "files", a missing file, a checksum mismatch).
  static Bundle open(const std::string& dir, bool verify_checksums = true);

  const std::string& root() const { return root_; }  // absolute, symlinks resolved
  const json::Value& manifest() const { return manifest_; }
  std::string family() const;                          // manifest["family"], "" when absent
  // What opens the bundle, as runtime/bundle.py's Bundle.task: the manifest's "task", else the model section's,
  // else its family's (bundles written before the field), else "text-to-image" for a latent model, else "run".
  // The family is a label; the task decides which pipeline may open a bundle.
  std::string task() const;
  const json::Value& model() const { return model_; }  // manifest["model"], or an empty object

  // Throws Failure(kBundleUnsupported) naming the components it has: a bundle without the component is a
  // bundle of another kind (a classifier opened as text-to-image).
  const ComponentInfo& component(const std::string& name) const;
  bool has_component(const std::string& name) const { return components_.count(name) != 0; }
  const std::map<std::string, ComponentInfo>& components() const { return components_; }

  // Absolute path of a file the manifest names (already checked to stay inside the bundle).
  std::string path_of(const std::string& relpath) const { return root_ + "/" + relpath; }

  bool has_asset(const std::string& name) const;
  std::string asset_path(const std::string& name) const;  // throws Failure(kBundleUnsupported) when absent
  NpyArray asset_array(const std::string& name) const;     // an .npy asset (never unpickled)
  json::Value asset_json(const std::string& name) const;   // a JSON asset

 private:
  Bundle() = default;
  std::string root_;
  json::Value manifest_;
  json::Value model_;
  std::map<std::string, ComponentInfo> components_;
};

}  // namespace edgesdk
