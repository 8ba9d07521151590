// A bit-packed binary 2-D convolution: y = conv2d(s(x), B) with s(x) the sign of the activations and B the +-1
// weights, computed with XNOR/popcount on 64 channels per machine word. No dependency beyond C++17: the ONNX
// Runtime custom op (ort_binary_conv.cpp) and the C++ runtime wrap it.
//
// The function it reproduces is the exported inference form of a binary layer (quant/binary.py,
// FoldedBinaryConv2d): s(x) = clamp(x * 2^100, -1, 1) and B = +1 where W >= 0, -1 where W < 0, zero padding.
//
// Exactness. Each activation channel is one of three values: -1 (x <= -2^-100), +1 (x >= 2^-100) or 0 (everything
// else: exact zeros, |x| < 2^-100 and NaN). That is s(x) wherever s(x) is an integer, i.e. for every fp32 x except
// 0 < |x| < 2^-100, where the float graph's s(x) is a fraction of magnitude below 1 and this kernel counts 0.
// Activations are packed into two bit planes along channels: `negative` (s(x) = -1) and `nonzero` (s(x) != 0),
// plus the count of nonzero channels per pixel. A weight word holds (W < 0). For one tap the dot product over
// channels is then
//     sum_c s(x_c) * B_c = nonzero_count - 2 * popcount((negative XOR weight_negative) AND nonzero),
// since a nonzero channel contributes +1 where the signs agree and -1 where they differ. Padding pixels are words of
// zeros in both planes with a count of 0, so they contribute exactly 0 as the float graph's zero padding of s(x)
// does: no border special case is needed. (The AVX2 path still skips the taps that fall in the padding, and where
// every activation of an image is +-1 it leaves out the AND with `nonzero`, which then changes nothing.) The sum is an integer with |y| <= kh * kw * C, exact in fp32 below 2^24.
//
// Instruction paths, chosen at run time: AVX-512 VPOPCNTDQ, AVX2 (nibble-table popcount with pshufb), ARM NEON
// (vcnt; compiled on aarch64 only) and a portable scalar loop. EDGESDK_BINARY_ISA=scalar|avx2|avx512|neon forces
// one (an unavailable one is an error), =auto or unset picks the best this CPU runs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace edgesdk::binary {

enum class Isa { scalar, avx2, avx512, neon };

// "scalar", "avx2", "avx512" or "neon"
const char* isa_name(Isa isa);
// whether this build has the path and this CPU can run it
bool isa_available(Isa isa);
// the best path this CPU runs
Isa best_isa();
// the path a convolution runs now: EDGESDK_BINARY_ISA when set (throws std::invalid_argument when it names an
// unknown or unavailable path), else best_isa()
Isa selected_isa();
// isa_name(selected_isa())
const char* binary_isa_name();

// Shapes and attributes of one layer. Padding is in ONNX order: top, left, bottom, right.
struct ConvGeometry {
  int in_channels = 0;
  int out_channels = 0;
  int kernel_h = 3;
  int kernel_w = 3;
  int stride_h = 1;
  int stride_w = 1;
  int pad_top = 1;
  int pad_left = 1;
  int pad_bottom = 1;
  int pad_right = 1;
};

// Empty when the geometry is usable, else a one-line reason (positive channels, kernel and strides, pads >= 0 and
// smaller than the kernel, and bounds that keep every count in 32 bits).
std::string validate(const ConvGeometry& geometry);

// Output height and width for an input of height x width; throws std::invalid_argument when the input is smaller
// than the kernel after padding or so large that an offset would overflow.
void output_size(const ConvGeometry& geometry, int height, int width, int* out_height, int* out_width);

// Output channels per weight block: one block is one 512-bit vector of 64-bit words, one per output channel.
constexpr int kOutputBlock = 8;

// The weights of one layer: word [block][ky][kx][word][lane] holds bit c of (W < 0) for output channel
// block * 8 + lane and input channel word * 64 + c. One vector load gives the words of eight output channels for one
// tap. This is also the exported format (edgesdk.runtime.binary_ops.pack_binary_weights: the words little-endian,
// as uint8 (blocks, kh, kw, words, 8, 8)), so a kernel can run on the exported bytes in place (view()). Bits past
// in_channels and lanes past out_channels never reach a result, whatever they hold: the activations' `nonzero`
// plane is 0 past in_channels, and only lanes below out_channels are stored (the unmasked count of the AVX2 path
// runs only where padding_clear() says no such bit is set).
class PackedWeights {
 public:
  // From float weights in PyTorch's OIHW layout (sign(0) counts as +1, like FoldedBinaryConv2d's bits); owns them.
  static PackedWeights from_float(const ConvGeometry& geometry, const float* weights_oihw);
  // A view of `bytes` bytes at `data` already in this layout (little-endian words): no copy, so `data` must outlive
  // the view and every copy of it. Throws std::invalid_argument when the geometry is invalid or `bytes` is not
  // layout_bytes(geometry). Where `data` is not 8-byte aligned (or the CPU is big-endian) the words are copied
  // instead, and owned_bytes() says how many bytes that copy takes.
  static PackedWeights view(const ConvGeometry& geometry, const void* data, size_t bytes);
  // Bytes of the layout for a geometry (blocks * kh * kw * words * 8 lanes * 8 bytes); throws like view().
  static size_t layout_bytes(const ConvGeometry& geometry);

  const ConvGeometry& geometry() const { return geometry_; }
  int words() const { return words_; }          // 64-bit words per tap and output channel
  int blocks() const { return blocks_; }        // blocks of 8 output channels
  const uint64_t* data() const { return owned_ ? bits_.data() : external_; }
  size_t bytes() const { return words_total_ * sizeof(uint64_t); }  // the layout's size
  // Bytes this object holds itself: the layout's size when it owns its words, 0 for an in-place view.
  size_t owned_bytes() const { return owned_ ? bytes() : 0; }

  // Row packing, for layers whose kernel row fits one word (kernel_w > 1 and kernel_w * in_channels <= 64, e.g. 16
  // channels at 3x3): the layout above spends a 64-bit word on each tap, so a 16-channel tap counts 48 bits that
  // are always 0. Row-packed, one word holds a whole kernel row, tap kx's channels at bits kx * in_channels up:
  // word [block][ky][lane], the layout of a kernel_h x 1 convolution over kernel_w * in_channels channels whose
  // "pixels" are rows of kernel_w adjacent input pixels. binary_conv2d packs the activations alike and counts 1/kernel_w
  // of the words. Derived from the weights when the object is made (a view too) and owned: row_bytes() of them.
  bool row_packed() const { return !rows_.empty(); }
  const uint64_t* row_data() const { return rows_.data(); }
  size_t row_bytes() const { return rows_.size() * sizeof(uint64_t); }
  // Whether no bit past in_channels is set in any word (true for from_float and for every exported layout; a view
  // of bytes that set them still computes the same results, only without the kernels' unmasked fast path).
  bool padding_clear() const { return padding_clear_; }

 private:
  explicit PackedWeights(const ConvGeometry& geometry);
  void set_negative(int out_channel, int ky, int kx, int in_channel);
  void derive_rows();
  void check_padding();
  std::vector<uint64_t> rows_;
  ConvGeometry geometry_;
  int words_ = 0;
  int blocks_ = 0;
  size_t words_total_ = 0;
  bool owned_ = true;
  bool padding_clear_ = true;
  const uint64_t* external_ = nullptr;
  std::vector<uint64_t> bits_;
};

// What the float layers right after a binary convolution compute, applied to each output as it is stored, so that a
// network's conv -> ReLU -> batch norm (as a per-channel scale and shift) -> residual add is one pass over memory
// and, in a graph runtime, one node instead of five. For output channel c at output index i:
//     v = y;  v = max(v, 0) if relu;  v = v * scale[c];  v = v + shift[c];  v = v + r
// each step present only where asked (a null pointer skips it) and rounded to fp32 on its own, in this order: the
// kernels are compiled with -ffp-contract=off, so no product and sum are fused into one multiply-add, and the result
// equals the separate float operations bit for bit. The residual r is y-shaped by default; a ResNet's option-A
// shortcut (every other pixel of the block's input, new channels zero) is read in place instead of being made:
// r = residual[n][c - residual_offset][oy * residual_stride][ox * residual_stride] for the residual_channels output
// channels from residual_offset, and 0 (still added: -0 + 0 = +0, as the float graph's zero padding gives) elsewhere.
struct Epilogue {
  bool relu = false;
  const float* scale = nullptr;     // [out_channels]
  const float* shift = nullptr;     // [out_channels]
  const float* residual = nullptr;  // (N, residual_channels, H' * residual_stride, W' * residual_stride), contiguous
  int residual_channels = 0;        // 0: out_channels
  int residual_offset = 0;
  int residual_stride = 1;
  bool empty() const { return !relu && scale == nullptr && shift == nullptr && residual == nullptr; }
};

// y (N, out_channels, H', W') = conv2d(s(x), B) for x (N, in_channels, height, width), both float32 NCHW and
// contiguous, then `epilogue`. Throws std::invalid_argument on bad sizes.
void binary_conv2d(const PackedWeights& weights, const float* x, int batch, int height, int width, float* y,
                   const Epilogue& epilogue = Epilogue());
// The same on a given path (throws std::invalid_argument if this CPU cannot run it).
void binary_conv2d(const PackedWeights& weights, const float* x, int batch, int height, int width, float* y,
                   Isa isa, const Epilogue& epilogue = Epilogue());

}  // namespace edgesdk::binary
