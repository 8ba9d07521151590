// The AVX-512 path: one zmm register holds one 64-bit weight word for each of eight output channels, and
// VPOPCNTQ counts all eight at once; packing compares 16 pixels of one channel at a time into mask registers.
// Compiled with -mavx512f -mavx512vpopcntdq and called only when the CPU has both (binary_conv.cpp checks);
// includes nothing but plain data and intrinsics (see binary_conv_paths.hpp).
#include <immintrin.h>

#include "binary_conv_paths.hpp"

namespace edgesdk::binary::detail {

namespace {  // internal linkage: these copies, compiled for AVX-512, are never picked by the linker for other code

// Output channel blocks [first_block, first_block + kBlocks) at every output pixel: the two broadcast activation
// words of each tap are shared by kBlocks independent accumulators. Results go through a small tile, [pixel][channel],
// and out row by row: written straight to y, 8 * kBlocks output planes would be written at once, and planes a
// multiple of 4 KiB apart fall into the same L1 cache sets.
template <int kBlocks>
void convolve_blocks(const MismatchArgs& a, int first_block) {
  constexpr int kTilePixels = 64;
  const int taps = a.kernel_h * a.kernel_w;
  const int run = a.kernel_w * a.words;  // a kernel row's pixels are adjacent in the padded planes
  const long block_stride = static_cast<long>(taps) * a.words * 8;
  const uint64_t* block_weights = a.weights + first_block * block_stride;
  const int first_channel = first_block * 8;
  const int channels = a.out_channels - first_channel < kBlocks * 8 ? a.out_channels - first_channel : kBlocks * 8;
  alignas(64) float tile[kTilePixels][kBlocks * 8];
  for (int oy = 0; oy < a.out_h; ++oy)
    for (int ox0 = 0; ox0 < a.out_w; ox0 += kTilePixels) {
      const int pixels = a.out_w - ox0 < kTilePixels ? a.out_w - ox0 : kTilePixels;
      for (int j = 0; j < pixels; ++j) {
        const int ox = ox0 + j;
        __m512i total[kBlocks];
        for (int b = 0; b < kBlocks; ++b) total[b] = _mm512_setzero_si512();
        for (int ky = 0; ky < a.kernel_h; ++ky) {
          const long pixel_row = (static_cast<long>(oy) * a.stride_h + ky) * a.padded_w + static_cast<long>(ox) * a.stride_w;
          const uint64_t* negative = a.negative + pixel_row * a.words;
          const uint64_t* nonzero = a.nonzero + pixel_row * a.words;
          const uint64_t* w = block_weights + static_cast<long>(ky * a.kernel_w) * a.words * 8;
          for (int i = 0; i < run; ++i) {
            const __m512i sign = _mm512_set1_epi64(static_cast<long long>(negative[i]));
            const __m512i mask = _mm512_set1_epi64(static_cast<long long>(nonzero[i]));
            for (int b = 0; b < kBlocks; ++b) {
              const __m512i weights = _mm512_loadu_si512(w + b * block_stride + i * 8);
              // (sign ^ weights) & mask in one instruction: 0x28 is that function's truth table over (0xf0, 0xcc, 0xaa)
              const __m512i differ = _mm512_ternarylogic_epi64(sign, weights, mask, 0x28);
              total[b] = _mm512_add_epi64(total[b], _mm512_popcnt_epi64(differ));
            }
          }
        }
        const __m256i count = _mm256_set1_epi32(a.count_sum[static_cast<long>(oy) * a.out_w + ox]);
        for (int b = 0; b < kBlocks; ++b) {
          const __m256i mismatches = _mm512_maskz_cvtepi64_epi32(0xff, total[b]);
          const __m256i y = _mm256_sub_epi32(count, _mm256_add_epi32(mismatches, mismatches));
          _mm256_store_ps(&tile[j][b * 8], _mm256_cvtepi32_ps(y));
        }
      }
      store_tile(a, &tile[0][0], kBlocks * 8, first_channel, channels, oy, ox0, pixels);
    }
}

}  // namespace

void convolve_avx512(const MismatchArgs& a) {
  int block = 0;
  for (; block + 4 <= a.blocks; block += 4) convolve_blocks<4>(a, block);
  for (; block < a.blocks; ++block) convolve_blocks<1>(a, block);
}

void pack_avx512(const PackArgs& a) {
  const long plane = static_cast<long>(a.height) * a.width;
  const __m512 low = _mm512_set1_ps(-a.threshold), high = _mm512_set1_ps(a.threshold);
  alignas(64) uint64_t negative[16], nonzero[16], counts[16];
  for (int word = 0; word < a.words; ++word) {
    const int first = word * 64;
    const int last = a.channels < first + 64 ? a.channels : first + 64;
    for (int iy = 0; iy < a.height; ++iy)
      for (int ix = 0; ix < a.width; ix += 16) {
        const int n = a.width - ix < 16 ? a.width - ix : 16;
        const __mmask16 valid = static_cast<__mmask16>((1u << n) - 1);
        __m512i neg_low = _mm512_setzero_si512(), neg_high = neg_low, nz_low = neg_low, nz_high = neg_low;
        const float* source = a.image + static_cast<long>(iy) * a.width + ix;
        for (int c = first; c < last; ++c) {
          const __m512 v = _mm512_maskz_loadu_ps(valid, source + c * plane);
          const __mmask16 is_negative = _mm512_cmp_ps_mask(v, low, _CMP_LE_OQ);  // NaN: false
          const __mmask16 is_nonzero = is_negative | _mm512_cmp_ps_mask(v, high, _CMP_GE_OQ);
          const __m512i bit = _mm512_set1_epi64(static_cast<long long>(uint64_t(1) << (c - first)));
          neg_low = _mm512_mask_or_epi64(neg_low, static_cast<__mmask8>(is_negative), neg_low, bit);
          neg_high = _mm512_mask_or_epi64(neg_high, static_cast<__mmask8>(is_negative >> 8), neg_high, bit);
          nz_low = _mm512_mask_or_epi64(nz_low, static_cast<__mmask8>(is_nonzero), nz_low, bit);
          nz_high = _mm512_mask_or_epi64(nz_high, static_cast<__mmask8>(is_nonzero >> 8), nz_high, bit);
        }
        _mm512_store_si512(negative, neg_low);
        _mm512_store_si512(negative + 8, neg_high);
        _mm512_store_si512(nonzero, nz_low);
        _mm512_store_si512(nonzero + 8, nz_high);
        _mm512_store_si512(counts, _mm512_popcnt_epi64(nz_low));
        _mm512_store_si512(counts + 8, _mm512_popcnt_epi64(nz_high));
        const long padded = static_cast<long>(iy + a.pad_top) * a.padded_w + ix + a.pad_left;
        for (int j = 0; j < n; ++j) {
          a.negative[(padded + j) * a.words + word] = negative[j];
          a.nonzero[(padded + j) * a.words + word] = nonzero[j];
          a.count[padded + j] = (word == 0 ? 0 : a.count[padded + j]) + static_cast<int32_t>(counts[j]);
        }
      }
  }
}

}  // namespace edgesdk::binary::detail
