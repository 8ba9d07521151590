// Packing, path selection and the portable paths (scalar, NEON) of the binary convolution; binary_conv.hpp says
// what is computed and why it is exact. The x86 paths live in binary_conv_avx2.cpp and binary_conv_avx512.cpp,
// compiled with their own instruction-set flags.
#include "binary_conv.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "binary_conv_paths.hpp"

#if defined(__aarch64__)
#include <arm_neon.h>
#endif

namespace edgesdk::binary {

namespace {

// s(x) = clamp(x * 2^100, -1, 1) is exactly +-1 from here on (see binary_conv.hpp).
const float kSignThreshold = std::ldexp(1.0f, -100);

// Bounds that keep every index and count of one call well inside 32-bit and size_t arithmetic.
constexpr int kMaxChannels = 1 << 16;
constexpr int kMaxKernel = 32;
constexpr int kMaxStride = 64;
constexpr int kMaxSpatial = 1 << 15;

#if defined(__x86_64__) || defined(__i386__)
constexpr bool kX86 = true;
#else
constexpr bool kX86 = false;
#endif

bool cpu_has_avx2() {
#if defined(__x86_64__) || defined(__i386__)
  return __builtin_cpu_supports("avx2");
#else
  return false;
#endif
}

bool cpu_has_avx512_popcount() {
#if defined(__x86_64__) || defined(__i386__)
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq");
#else
  return false;
#endif
}

void check_sizes(const ConvGeometry& geometry, int batch, int height, int width) {
  const std::string problem = validate(geometry);
  if (!problem.empty()) throw std::invalid_argument("binary convolution: " + problem);
  if (batch < 1 || batch > kMaxSpatial)
    throw std::invalid_argument("binary convolution: batch must be in [1, " + std::to_string(kMaxSpatial) + "]");
  int out_h = 0, out_w = 0;
  output_size(geometry, height, width, &out_h, &out_w);
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::scalar: return "scalar";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
    case Isa::neon: return "neon";
  }
  return "unknown";
}

bool isa_available(Isa isa) {
  switch (isa) {
    case Isa::scalar: return true;
    case Isa::avx2: return kX86 && cpu_has_avx2();
    case Isa::avx512: return kX86 && cpu_has_avx512_popcount();
    case Isa::neon:
#if defined(__aarch64__)
      return true;  // Advanced SIMD is mandatory on AArch64
#else
      return false;
#endif
  }
  return false;
}

Isa best_isa() {
  if (isa_available(Isa::avx512)) return Isa::avx512;
  if (isa_available(Isa::avx2)) return Isa::avx2;
  if (isa_available(Isa::neon)) return Isa::neon;
  return Isa::scalar;
}

Isa selected_isa() {
  const char* forced = std::getenv("EDGESDK_BINARY_ISA");
  if (forced == nullptr || forced[0] == '\0' || std::strcmp(forced, "auto") == 0) return best_isa();
  for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512, Isa::neon}) {
    if (std::strcmp(forced, isa_name(isa)) != 0) continue;
    if (!isa_available(isa))
      throw std::invalid_argument(std::string("EDGESDK_BINARY_ISA=") + forced +
                                  ": this build or CPU cannot run that path (best here: " + isa_name(best_isa()) + ")");
    return isa;
  }
  throw std::invalid_argument(std::string("EDGESDK_BINARY_ISA=") + forced +
                              ": unknown path (scalar, avx2, avx512, neon or auto)");
}

const char* binary_isa_name() { return isa_name(selected_isa()); }

std::string validate(const ConvGeometry& g) {
  auto in_range = [](int value, int low, int high) { return value >= low && value <= high; };
  if (!in_range(g.in_channels, 1, kMaxChannels))
    return "in_channels must be in [1, " + std::to_string(kMaxChannels) + "], got " + std::to_string(g.in_channels);
  if (!in_range(g.out_channels, 1, kMaxChannels))
    return "out_channels must be in [1, " + std::to_string(kMaxChannels) + "], got " + std::to_string(g.out_channels);
  if (!in_range(g.kernel_h, 1, kMaxKernel) || !in_range(g.kernel_w, 1, kMaxKernel))
    return "kernel_shape must be in [1, " + std::to_string(kMaxKernel) + "]";
  if (!in_range(g.stride_h, 1, kMaxStride) || !in_range(g.stride_w, 1, kMaxStride))
    return "strides must be in [1, " + std::to_string(kMaxStride) + "]";
  if (!in_range(g.pad_top, 0, g.kernel_h - 1) || !in_range(g.pad_bottom, 0, g.kernel_h - 1) ||
      !in_range(g.pad_left, 0, g.kernel_w - 1) || !in_range(g.pad_right, 0, g.kernel_w - 1))
    return "pads must be in [0, kernel size - 1]";
  // the output is an integer sum of kernel_h * kernel_w * in_channels terms of +-1: exact in fp32 below 2^24
  if (int64_t(g.kernel_h) * g.kernel_w * g.in_channels >= (int64_t(1) << 24))
    return "kernel_h * kernel_w * in_channels must stay below 2^24 for an exact float32 result";
  return "";
}

void output_size(const ConvGeometry& g, int height, int width, int* out_height, int* out_width) {
  if (height < 1 || width < 1 || height > kMaxSpatial || width > kMaxSpatial)
    throw std::invalid_argument("binary convolution: height and width must be in [1, " + std::to_string(kMaxSpatial) +
                                "], got " + std::to_string(height) + "x" + std::to_string(width));
  const int padded_h = height + g.pad_top + g.pad_bottom;
  const int padded_w = width + g.pad_left + g.pad_right;
  if (padded_h < g.kernel_h || padded_w < g.kernel_w)
    throw std::invalid_argument("binary convolution: input " + std::to_string(height) + "x" + std::to_string(width) +
                                " is smaller than the kernel after padding");
  *out_height = (padded_h - g.kernel_h) / g.stride_h + 1;
  *out_width = (padded_w - g.kernel_w) / g.stride_w + 1;
}

// ---- weights ----

PackedWeights::PackedWeights(const ConvGeometry& geometry) : geometry_(geometry) {
  const std::string problem = validate(geometry);
  if (!problem.empty()) throw std::invalid_argument("binary convolution: " + problem);
  words_ = (geometry.in_channels + 63) / 64;
  blocks_ = (geometry.out_channels + kOutputBlock - 1) / kOutputBlock;
  words_total_ = size_t(blocks_) * geometry.kernel_h * geometry.kernel_w * words_ * kOutputBlock;
}

size_t PackedWeights::layout_bytes(const ConvGeometry& geometry) { return PackedWeights(geometry).bytes(); }

PackedWeights PackedWeights::view(const ConvGeometry& geometry, const void* data, size_t bytes) {
  PackedWeights packed(geometry);
  if (bytes != packed.bytes())
    throw std::invalid_argument("binary convolution: packed weights have " + std::to_string(bytes) +
                                " bytes, the layout of this layer takes " + std::to_string(packed.bytes()));
  if (data == nullptr) throw std::invalid_argument("binary convolution: packed weights have no data");
  constexpr bool kLittleEndian = __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__;
  if (kLittleEndian && reinterpret_cast<uintptr_t>(data) % alignof(uint64_t) == 0) {
    packed.owned_ = false;
    packed.external_ = static_cast<const uint64_t*>(data);
  } else {
    packed.bits_.resize(packed.words_total_);
    std::memcpy(packed.bits_.data(), data, bytes);
    if (!kLittleEndian)
      for (uint64_t& word : packed.bits_) word = __builtin_bswap64(word);
  }
  packed.check_padding();
  packed.derive_rows();
  return packed;
}

void PackedWeights::check_padding() {
  padding_clear_ = true;
  const int used = geometry_.in_channels % 64;  // bits of the last word of a tap; 0: all 64
  if (used == 0) return;
  const uint64_t past = ~uint64_t(0) << used;
  const uint64_t* bits = data();
  // word [block][ky][kx][word][lane]: a tap's words run words_ * kOutputBlock long, its last word the last 8 of them
  for (size_t tap = 0; tap < words_total_; tap += size_t(words_) * kOutputBlock)
    for (int lane = 0; lane < kOutputBlock; ++lane)
      if (bits[tap + size_t(words_ - 1) * kOutputBlock + lane] & past) padding_clear_ = false;
}

void PackedWeights::derive_rows() {
  const ConvGeometry& g = geometry_;
  rows_.clear();
  if (words_ != 1 || g.kernel_w < 2 || g.kernel_w * g.in_channels > 64) return;
  const uint64_t channels = g.in_channels == 64 ? ~uint64_t(0) : (uint64_t(1) << g.in_channels) - 1;
  const uint64_t* bits = data();
  rows_.assign(size_t(blocks_) * g.kernel_h * kOutputBlock, 0);
  for (int block = 0; block < blocks_; ++block)
    for (int ky = 0; ky < g.kernel_h; ++ky)
      for (int lane = 0; lane < kOutputBlock; ++lane) {
        uint64_t row = 0;
        for (int kx = 0; kx < g.kernel_w; ++kx) {
          // bits past in_channels may hold anything (see the class comment): masked, since the next tap starts there
          const uint64_t tap = bits[((size_t(block) * g.kernel_h + ky) * g.kernel_w + kx) * kOutputBlock + lane];
          row |= (tap & channels) << (kx * g.in_channels);
        }
        rows_[(size_t(block) * g.kernel_h + ky) * kOutputBlock + lane] = row;
      }
}

void PackedWeights::set_negative(int out_channel, int ky, int kx, int in_channel) {
  const int block = out_channel / kOutputBlock, lane = out_channel % kOutputBlock;
  const size_t index =
      (((size_t(block) * geometry_.kernel_h + ky) * geometry_.kernel_w + kx) * words_ + in_channel / 64) * kOutputBlock +
      lane;
  bits_[index] |= uint64_t(1) << (in_channel % 64);
}

PackedWeights PackedWeights::from_float(const ConvGeometry& g, const float* weights_oihw) {
  PackedWeights packed(g);
  packed.bits_.assign(packed.words_total_, 0);
  size_t index = 0;
  for (int oc = 0; oc < g.out_channels; ++oc)
    for (int ic = 0; ic < g.in_channels; ++ic)
      for (int ky = 0; ky < g.kernel_h; ++ky)
        for (int kx = 0; kx < g.kernel_w; ++kx)
          if (weights_oihw[index++] < 0.0f) packed.set_negative(oc, ky, kx, ic);
  packed.derive_rows();
  return packed;
}

// ---- the portable paths ----

namespace detail {

void convolve_scalar(const MismatchArgs& a) {
  const int taps = a.kernel_h * a.kernel_w;
  const int run = a.kernel_w * a.words;  // a kernel row's pixels are adjacent in the padded planes
  for (int block = 0; block < a.blocks; ++block) {
    const uint64_t* block_weights = a.weights + size_t(block) * taps * a.words * kOutputBlock;
    for (int oy = 0; oy < a.out_h; ++oy)
      for (int ox = 0; ox < a.out_w; ++ox) {
        int32_t count[kOutputBlock] = {};
        for (int ky = 0; ky < a.kernel_h; ++ky) {
          const size_t pixel_row = (size_t(oy) * a.stride_h + ky) * a.padded_w + size_t(ox) * a.stride_w;
          const uint64_t* negative = a.negative + pixel_row * a.words;
          const uint64_t* nonzero = a.nonzero + pixel_row * a.words;
          const uint64_t* w = block_weights + size_t(ky * a.kernel_w) * a.words * kOutputBlock;
          for (int i = 0; i < run; ++i)
            for (int lane = 0; lane < kOutputBlock; ++lane)
              count[lane] += __builtin_popcountll((negative[i] ^ w[i * kOutputBlock + lane]) & nonzero[i]);
        }
        store_block(a, block, long(oy) * a.out_w + ox, count);
      }
  }
}

void pack_scalar(const PackArgs& a) {
  const size_t plane = size_t(a.height) * a.width;
  for (int word = 0; word < a.words; ++word) {
    const int first = word * 64, last = std::min(a.channels, first + 64);
    for (int iy = 0; iy < a.height; ++iy)
      for (int ix = 0; ix < a.width; ++ix) {
        uint64_t negative = 0, nonzero = 0;
        const float* pixel = a.image + size_t(iy) * a.width + ix;
        for (int c = first; c < last; ++c) {
          const float v = pixel[c * plane];
          const uint64_t is_negative = v <= -a.threshold;  // NaN compares false: counted as 0
          const uint64_t is_positive = v >= a.threshold;
          negative |= is_negative << (c - first);
          nonzero |= (is_negative | is_positive) << (c - first);
        }
        const size_t padded = size_t(iy + a.pad_top) * a.padded_w + ix + a.pad_left;
        a.negative[padded * a.words + word] = negative;
        a.nonzero[padded * a.words + word] = nonzero;
        a.count[padded] = (word == 0 ? 0 : a.count[padded]) + __builtin_popcountll(nonzero);
      }
  }
}

#if defined(__aarch64__)
void convolve_neon(const MismatchArgs& a) {
  const int taps = a.kernel_h * a.kernel_w;
  for (int block = 0; block < a.blocks; ++block) {
    const uint64_t* block_weights = a.weights + size_t(block) * taps * a.words * kOutputBlock;
    for (int oy = 0; oy < a.out_h; ++oy)
      for (int ox = 0; ox < a.out_w; ++ox) {
        // byte counts (at most 8 per step) are summed in 8 bits for up to 31 steps, then widened
        uint64x2_t total[4] = {vdupq_n_u64(0), vdupq_n_u64(0), vdupq_n_u64(0), vdupq_n_u64(0)};
        uint8x16_t bytes[4] = {vdupq_n_u8(0), vdupq_n_u8(0), vdupq_n_u8(0), vdupq_n_u8(0)};
        int pending = 0;
        auto flush = [&]() {
          for (int q = 0; q < 4; ++q) {
            total[q] = vaddq_u64(total[q], vpaddlq_u32(vpaddlq_u16(vpaddlq_u8(bytes[q]))));
            bytes[q] = vdupq_n_u8(0);
          }
          pending = 0;
        };
        for (int ky = 0; ky < a.kernel_h; ++ky)
          for (int kx = 0; kx < a.kernel_w; ++kx) {
            const size_t pixel = (size_t(oy) * a.stride_h + ky) * a.padded_w + size_t(ox) * a.stride_w + kx;
            const uint64_t* w = block_weights + size_t(ky * a.kernel_w + kx) * a.words * kOutputBlock;
            for (int word = 0; word < a.words; ++word) {
              const uint64x2_t negative = vdupq_n_u64(a.negative[pixel * a.words + word]);
              const uint64x2_t nonzero = vdupq_n_u64(a.nonzero[pixel * a.words + word]);
              for (int q = 0; q < 4; ++q) {
                const uint64x2_t weights = vld1q_u64(w + word * kOutputBlock + 2 * q);
                const uint64x2_t differ = vandq_u64(veorq_u64(negative, weights), nonzero);
                bytes[q] = vaddq_u8(bytes[q], vcntq_u8(vreinterpretq_u8_u64(differ)));
              }
              if (++pending == 31) flush();
            }
          }
        flush();
        int32_t mismatches[kOutputBlock];
        for (int q = 0; q < 4; ++q) {
          mismatches[2 * q] = int32_t(vgetq_lane_u64(total[q], 0));
          mismatches[2 * q + 1] = int32_t(vgetq_lane_u64(total[q], 1));
        }
        store_block(a, block, long(oy) * a.out_w + ox, mismatches);
      }
  }
}
#else
void convolve_neon(const MismatchArgs&) { throw std::invalid_argument("the NEON path is built on aarch64 only"); }
#endif

#if !defined(EDGESDK_HAVE_X86_PATHS)
void convolve_avx2(const MismatchArgs&) { throw std::invalid_argument("the AVX2 path is built on x86-64 only"); }
void convolve_avx512(const MismatchArgs&) { throw std::invalid_argument("the AVX-512 path is built on x86-64 only"); }
void pack_avx2(const PackArgs&) { throw std::invalid_argument("the AVX2 path is built on x86-64 only"); }
void pack_avx512(const PackArgs&) { throw std::invalid_argument("the AVX-512 path is built on x86-64 only"); }
#endif

}  // namespace detail

// ---- the convolution ----

void binary_conv2d(const PackedWeights& weights, const float* x, int batch, int height, int width, float* y,
                   const Epilogue& epilogue) {
  binary_conv2d(weights, x, batch, height, width, y, selected_isa(), epilogue);
}

void binary_conv2d(const PackedWeights& weights, const float* x, int batch, int height, int width, float* y,
                   Isa isa, const Epilogue& epilogue) {
  const ConvGeometry& g = weights.geometry();
  check_sizes(g, batch, height, width);
  if (!isa_available(isa))
    throw std::invalid_argument(std::string("binary convolution: this build or CPU cannot run the ") + isa_name(isa) +
                                " path");
  int out_h = 0, out_w = 0;
  output_size(g, height, width, &out_h, &out_w);
  const int words = weights.words();
  const int padded_h = height + g.pad_top + g.pad_bottom;
  const int padded_w = width + g.pad_left + g.pad_right;
  const size_t plane = size_t(height) * width;
  const size_t padded_pixels = size_t(padded_h) * padded_w;
  const size_t out_pixels = size_t(out_h) * out_w;
  const int residual_channels = epilogue.residual_channels > 0 ? epilogue.residual_channels : g.out_channels;
  if (epilogue.residual != nullptr &&
      (epilogue.residual_stride < 1 || epilogue.residual_stride > kMaxStride || epilogue.residual_offset < 0 ||
       residual_channels > g.out_channels - epilogue.residual_offset))
    throw std::invalid_argument("binary convolution: the residual's channels must lie within the output's, from "
                                "residual_offset, and its stride must be in [1, " + std::to_string(kMaxStride) + "]");

  // padding pixels stay all-zero words with a count of 0 in every image (see binary_conv.hpp)
  std::vector<uint64_t> planes(padded_pixels * words * 2, 0);
  uint64_t* negative = planes.data();
  uint64_t* nonzero = negative + padded_pixels * words;
  std::vector<int32_t> counts(padded_pixels + out_pixels + 2 * size_t(out_h) + 2 * size_t(out_w), 0);
  int32_t* count = counts.data();
  int32_t* count_sum = count + padded_pixels;
  int32_t* row_first = count_sum + out_pixels;
  int32_t* row_last = row_first + out_h;
  int32_t* column_first = row_last + out_h;
  int32_t* column_last = column_first + out_w;
  std::vector<uint8_t> unmasked(out_w, 0);
  // row packing (PackedWeights::row_packed): the same sums as a kernel_h x 1 convolution over rows of pixels
  const bool row_packed = weights.row_packed();
  std::vector<uint64_t> rows_planes(row_packed ? 2 * padded_pixels : 0, 0);
  uint64_t* rows_negative = rows_planes.data();
  uint64_t* rows_nonzero = rows_negative + (row_packed ? padded_pixels : 0);
  // each output pixel's window within the image (MismatchArgs): rows, and columns, or the one row word
  std::vector<uint8_t> image_columns(out_w, 0);  // whether the whole kernel row lies in the image
  for (int oy = 0; oy < out_h; ++oy) {
    const int top = oy * g.stride_h - g.pad_top;  // the image row of kernel row 0
    row_first[oy] = std::max(0, -top);
    row_last[oy] = std::max(row_first[oy], std::min(g.kernel_h, height - top));
  }
  for (int ox = 0; ox < out_w; ++ox) {
    const int left = ox * g.stride_w - g.pad_left;
    const int first = std::max(0, -left), last = std::max(first, std::min(g.kernel_w, width - left));
    image_columns[ox] = first == 0 && last == g.kernel_w;
    column_first[ox] = row_packed ? 0 : first;
    column_last[ox] = row_packed ? 1 : last;
  }
  detail::PackArgs pack{nullptr,  g.in_channels, height,         width,    g.pad_top, g.pad_left,
                        padded_w, words,         kSignThreshold, negative, nonzero,   count};
  detail::MismatchArgs args{negative,          nonzero,          padded_w,   words,      weights.data(),
                            weights.blocks(),  g.kernel_h,       g.kernel_w, g.stride_h, g.stride_w,
                            out_h,             out_w,            g.out_channels, count_sum, nullptr,
                            !epilogue.empty(), epilogue.relu,    epilogue.scale, epilogue.shift, nullptr,
                            residual_channels, epilogue.residual_offset, epilogue.residual_stride,
                            row_first,         row_last,         column_first, column_last, unmasked.data()};
  if (row_packed) {
    args.negative = rows_negative;
    args.nonzero = rows_nonzero;
    args.weights = weights.row_data();
    args.kernel_w = 1;
  }
  for (int n = 0; n < batch; ++n) {
    pack.image = x + size_t(n) * g.in_channels * plane;
    switch (isa) {
      case Isa::avx2: detail::pack_avx2(pack); break;
      case Isa::avx512: detail::pack_avx512(pack); break;
      default: detail::pack_scalar(pack); break;  // NEON packs with the portable loop
    }
    // every activation +-1 (each image pixel's count is in_channels): the nonzero mask then changes nothing where the
    // weights have no bit past the channels (row words always: they are built from the channels' bits) and the
    // counted words hold image pixels only
    bool dense = row_packed || weights.padding_clear();
    for (int iy = 0; iy < height && dense; ++iy) {
      const int32_t* image_row = count + size_t(iy + g.pad_top) * padded_w + g.pad_left;
      for (int ix = 0; ix < width; ++ix) dense &= image_row[ix] == g.in_channels;
    }
    for (int ox = 0; ox < out_w; ++ox) unmasked[ox] = dense && (!row_packed || image_columns[ox]);
    for (int oy = 0; oy < out_h; ++oy)
      for (int ox = 0; ox < out_w; ++ox) {
        int32_t sum = 0;
        for (int ky = 0; ky < g.kernel_h; ++ky)
          for (int kx = 0; kx < g.kernel_w; ++kx)
            sum += count[(size_t(oy) * g.stride_h + ky) * padded_w + size_t(ox) * g.stride_w + kx];
        count_sum[size_t(oy) * out_w + ox] = sum;
      }
    if (row_packed) {
      // the word at (row, x) holds the channels of pixels x .. x + kernel_w - 1, tap kx at bits kx * in_channels
      // (PackedWeights::row_packed): bits past in_channels are 0 in both planes, so the taps do not overlap
      for (int py = 0; py < padded_h; ++py)
        for (int px = 0; px + g.kernel_w <= padded_w; ++px) {
          const size_t at = size_t(py) * padded_w + px;
          uint64_t row_negative = 0, row_nonzero = 0;
          for (int kx = 0; kx < g.kernel_w; ++kx) {
            row_negative |= negative[at + kx] << (kx * g.in_channels);
            row_nonzero |= nonzero[at + kx] << (kx * g.in_channels);
          }
          rows_negative[at] = row_negative;
          rows_nonzero[at] = row_nonzero;
        }
    }
    args.y = y + size_t(n) * g.out_channels * out_pixels;
    args.residual = epilogue.residual == nullptr
                        ? nullptr
                        : epilogue.residual + size_t(n) * residual_channels * out_pixels * epilogue.residual_stride *
                                                  epilogue.residual_stride;
    switch (isa) {
      case Isa::scalar: detail::convolve_scalar(args); break;
      case Isa::avx2: detail::convolve_avx2(args); break;
      case Isa::avx512: detail::convolve_avx512(args); break;
      case Isa::neon: detail::convolve_neon(args); break;
    }
  }
}

}  // namespace edgesdk::binary
