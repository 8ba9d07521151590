// One loaded component of a bundle on ExecuTorch's C++ runtime, mirroring the Python runtime's
// open_session(bundle, component, "executorch"): ExecuTorchSession inside StaticBatchSession.
//
// ExecuTorch types stay in session.cpp, so an app including this header needs none of ExecuTorch's headers.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bundle.hpp"

namespace edgesdk {

struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> data;  // row-major, product(shape) values
  int64_t rows() const { return shape.empty() ? 1 : shape[0]; }  // the batch (first) dimension
};

struct SessionOptions {
  // Lowest resident memory over speed: the program file is memory-mapped (its pages stay reclaimable) and no
  // method loads before its first run. For long jobs that share the phone with everything else.
  bool lean_memory = false;
  // >0: the size of ExecuTorch's thread pool (XNNPACK's threads). The pool is process-wide: it can change only
  // while no session is open, so open every session of a process with the same count. 0: ExecuTorch's default
  // (one thread per performance core).
  int threads = 0;
  // false: the float program even where the bundle offers a binary-kernel one (binary_kernel.executorch)
  bool binary_kernel = true;
};

class Session {
 public:
  // Loads the component's "executorch" file (a .pte, or a .1bit container unpacked in memory), or its
  // binary-kernel program (binary_kernel.executorch.file) where the bundle has one. Throws Failure:
  // kBundleUnsupported (no executorch file for the component, a non-float32 input or output), kBundleCorrupt
  // (the program lacks a method the manifest names), kBackendError (ExecuTorch cannot load it),
  // kInvalidArgument (a thread count other open sessions prevent).
  static std::unique_ptr<Session> open(const Bundle& bundle, const std::string& component,
                                       const SessionOptions& options = {});
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  const std::vector<std::string>& input_names() const;
  const std::vector<std::string>& output_names() const;

  // Inputs in the manifest's order, any batch: a batch with its own method (or the static batch) runs as is,
  // others in chunks of the static batch, the last padded by repeating its last row and the padding dropped.
  // Throws Failure(kInvalidArgument) naming the input for a wrong count, shape or batch disagreement,
  // Failure(kBackendError) when ExecuTorch fails.
  std::vector<Tensor> run(const std::vector<Tensor>& inputs);

  // Batches a method takes as they are (the manifest's static_shapes.executorch.methods keys).
  std::vector<int64_t> exact_batches() const;
  // Which kernel path runs: "float", or "binary <isa> (...)" for a BNN bundle's binary-kernel program.
  const std::string& kernel() const;
  // Bytes of the binary layers' weights repacked for the kernel so far (0 for the float program).
  size_t repacked_weight_bytes() const;
  // Bytes of row-packed words derived for the binary layers whose kernel row fits one word (binary_conv.hpp).
  size_t row_packed_weight_bytes() const;
  // Methods loaded so far ("forward" at open unless lean_memory; others on first use).
  std::vector<std::string> loaded_methods() const;

  struct Impl;

 private:
  explicit Session(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace edgesdk
