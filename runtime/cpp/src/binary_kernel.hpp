// The ExecuTorch kernel edgesdk::binary_conv2d.out: the bit-packed binary convolution of kernels/binary_conv.hpp
// serving the binary layers of a BNN bundle's binary-kernel program (classifier.binary.pte, written by
// export/pipeline.py's binary_program). The op's contract is quant/binary_op.py's:
//
//   edgesdk::binary_conv2d.out(Tensor x, Tensor packed_weights, int in_channels, int out_channels,
//                              int[] kernel_shape, int[] stride, int[] padding, *, Tensor(a!) out) -> Tensor(a!)
//
// x float32 (N, C, H, W) contiguous; packed_weights uint8 (ceil(O / 8), kh, kw, ceil(C / 64), 8, 8): the kernel's
// own layout of W < 0 (binary_conv.hpp, PackedWeights), read in place; padding (top/bottom, left/right).
// out = conv2d(s(x), B), exact (docs/binary-kernel.md).
// Single-threaded: each call runs on the thread that executes the method.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <tuple>

#include "binary_conv.hpp"

namespace edgesdk::binary_kernel {

constexpr const char* kOpName = "edgesdk::binary_conv2d.out";

// Registers the kernel with ExecuTorch's operator registry (once per process; later calls do nothing).
void register_kernel_once();

// The weights of one session's binary layers: views of the program's constants, which are in the kernel's layout
// already, so nothing is copied. Keyed by the address of the constant buffer, which stays put while the session
// (its program) is alive. Only a constant that is not 8-byte aligned is copied; such a copy is checked again against
// a digest kept beside it on every call, so a reused address never runs stale weights.
class WeightCache {
 public:
  const binary::PackedWeights& get(const binary::ConvGeometry& geometry, const uint8_t* packed, size_t bytes);
  size_t bytes() const;    // what copies take beside the program's constants: 0 when every layer runs in place
  size_t row_bytes() const;  // row-packed words derived for small-channel layers (PackedWeights::row_packed)
  size_t layers() const { return entries_.size(); }

 private:
  struct Entry {
    uint64_t digest;
    binary::PackedWeights weights;
  };
  using Key = std::tuple<const uint8_t*, size_t, int, int, int, int, int, int, int, int, int, int>;
  std::map<Key, Entry> entries_;
};

// While alive, kernel calls on this thread use `cache` (nullptr: repack on every call) and record their errors.
class Scope {
 public:
  explicit Scope(WeightCache* cache);
  ~Scope();
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;
  // The first failure of a kernel call in this scope, "" when none.
  const std::string& error() const;

 private:
  WeightCache* previous_cache_;
  std::string* previous_error_;
  std::string error_;
};

}  // namespace edgesdk::binary_kernel
