// The inner loop every instruction path implements, on plain data only: the ISA-specific translation units include
// nothing but this and their intrinsics headers, so no inline library function is compiled there with wider
// instructions and then picked by the linker for code that runs on any CPU.
#pragma once

#include <cstdint>

namespace edgesdk::binary::detail {

struct MismatchArgs {
  const uint64_t* negative;  // padded activation planes: [padded_h][padded_w][words]
  const uint64_t* nonzero;
  int padded_w;
  int words;
  const uint64_t* weights;   // PackedWeights layout: [blocks][kernel_h][kernel_w][words][8]
  int blocks;
  int kernel_h, kernel_w, stride_h, stride_w;
  int out_h, out_w;
  int out_channels;
  const int32_t* count_sum;  // [out_h * out_w]: nonzero channels under the kernel window of each output pixel
  float* y;                  // out: [out_channels][out_h * out_w] =
                             //      count_sum - 2 * popcount((neg ^ wneg) & nonzero) summed over taps and words,
                             //      then the epilogue below (binary_conv.hpp, Epilogue)
  bool epilogue;             // any of the four steps below
  bool relu;
  const float* scale;        // [out_channels] or null
  const float* shift;        // [out_channels] or null
  const float* residual;     // this image's residual, [residual_channels][out_h * stride][out_w * stride], or null
  int residual_channels;     // the residual's channels, added to output channels residual_offset and up
  int residual_offset;
  int residual_stride;       // every stride-th pixel of the residual's rows and columns
  // Where each output pixel's window meets the image, in this kernel's taps (kernel_w is 1 when row-packed: one
  // "column", the whole row word): rows [row_first[oy], row_last[oy]) and columns [column_first[ox],
  // column_last[ox]); the other taps lie in the zero padding, which adds 0, so a path may skip them.
  const int32_t* row_first;
  const int32_t* row_last;
  const int32_t* column_first;
  const int32_t* column_last;
  // Per output column, 1 where the AND with the nonzero plane changes nothing within those rows and columns: every
  // activation of this image is +-1, the weights have no bit set past in_channels, and (row-packed) the row word's
  // pixels are all image pixels. A path may then leave the mask out.
  const uint8_t* unmasked;
};

// y of one image
void convolve_scalar(const MismatchArgs& args);
void convolve_avx2(const MismatchArgs& args);
void convolve_avx512(const MismatchArgs& args);
void convolve_neon(const MismatchArgs& args);

// One image (channels, height, width) into the padded bit planes and the per-pixel nonzero count; the padding
// border is left as it is (zeros).
struct PackArgs {
  const float* image;
  int channels, height, width;
  int pad_top, pad_left, padded_w, words;
  float threshold;           // |x| >= threshold counts as its sign, anything else (NaN too) as 0
  uint64_t* negative;
  uint64_t* nonzero;
  int32_t* count;            // [padded_h][padded_w]
};

void pack_scalar(const PackArgs& args);
void pack_avx2(const PackArgs& args);
void pack_avx512(const PackArgs& args);

// The epilogue of one output value (binary_conv.hpp, Epilogue): each step rounded on its own, in the float graph's
// order (the kernels are compiled with -ffp-contract=off, so no step is fused into a multiply-add).
// static: each translation unit keeps its own copy, compiled with its own instruction set.
// `pixel` is the output pixel's index in its plane (oy * out_w + ox).
static inline float finish(const MismatchArgs& a, int channel, long pixel, float value) {
  if (a.relu && value < 0.0f) value = 0.0f;
  if (a.scale != nullptr) value = value * a.scale[channel];
  if (a.shift != nullptr) value = value + a.shift[channel];
  if (a.residual != nullptr) {
    const long plane = static_cast<long>(a.out_h) * a.out_w;
    const int source = channel - a.residual_offset;
    float residual = 0.0f;  // a zero-padded channel: still added, as the float graph adds its 0 (-0 + 0 = +0)
    if (a.residual_stride == 1 && a.residual_offset == 0 && a.residual_channels == a.out_channels) {
      residual = a.residual[channel * plane + pixel];
    } else if (source >= 0 && source < a.residual_channels) {
      const long s = a.residual_stride, row = pixel / a.out_w, column = pixel % a.out_w;
      residual = a.residual[(source * a.out_h * s + row * s) * a.out_w * s + column * s];
    }
    value = value + residual;
  }
  return value;
}

// The results of 8 output channels (one block) at one output pixel: y[oc][pixel] = count_sum - 2 * mismatches.
static inline void store_block(const MismatchArgs& a, int block, long pixel, const int32_t* mismatches) {
  const long plane = static_cast<long>(a.out_h) * a.out_w;
  const int first = block * 8;
  const int lanes = a.out_channels - first < 8 ? a.out_channels - first : 8;
  for (int lane = 0; lane < lanes; ++lane) {
    const long index = (first + lane) * plane + pixel;
    const float value = static_cast<float>(a.count_sum[pixel] - 2 * mismatches[lane]);
    a.y[index] = a.epilogue ? finish(a, first + lane, pixel, value) : value;
  }
}

// A tile of results, tile[pixel * tile_stride + c] for `pixels` output pixels from (oy, ox0) and `channels` output
// channels from first_channel, written to y channel by channel (each output plane's row is contiguous), with the
// epilogue (the AVX-512 path; AVX2 transposes its tile in registers and applies the epilogue eight pixels at a time).
static inline void store_tile(const MismatchArgs& a, const float* tile, int tile_stride, int first_channel,
                              int channels, int oy, int ox0, int pixels) {
  const long plane = static_cast<long>(a.out_h) * a.out_w;
  const long pixel = static_cast<long>(oy) * a.out_w + ox0;
  for (int c = 0; c < channels; ++c) {
    float* out = a.y + (first_channel + c) * plane + pixel;
    if (!a.epilogue) {
      for (int j = 0; j < pixels; ++j) out[j] = tile[j * tile_stride + c];
    } else {
      for (int j = 0; j < pixels; ++j) out[j] = finish(a, first_channel + c, pixel + j, tile[j * tile_stride + c]);
    }
  }
}

}  // namespace edgesdk::binary::detail
