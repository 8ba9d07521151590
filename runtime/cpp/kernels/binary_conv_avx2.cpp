// The AVX2 path. AVX2 has no vector popcount: each byte's bits are counted with two 16-entry table lookups
// (pshufb on the low and high nibble), byte counts are summed in 8 bits for up to 31 steps (at most 8 per step,
// so 248 < 256) and then widened with a sum of absolute differences against zero (vpsadbw), which adds the eight
// bytes of each 64-bit lane. Eight output channels are two ymm registers of four 64-bit words. Compiled with
// -mavx2 and called only when the CPU has it; includes nothing but plain data and intrinsics.
#include <immintrin.h>

#include "binary_conv_paths.hpp"

namespace edgesdk::binary::detail {

namespace {

inline __m256i byte_popcount(__m256i v, __m256i table, __m256i low_nibbles) {
  const __m256i low = _mm256_shuffle_epi8(table, _mm256_and_si256(v, low_nibbles));
  const __m256i high = _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(v, 4), low_nibbles));
  return _mm256_add_epi8(low, high);
}

// The [pixel][channel] tile to the output planes, eight pixels by eight channels at a time with an 8x8 transpose in
// registers (element by element, this store was about a tenth of a 64-channel 8x8 layer); the rest one by one.
void store_tile_transposed(const MismatchArgs& a, const float* tile, int tile_stride, int first_channel,
                           int channels, int oy, int ox0, int pixels) {
  const long plane = static_cast<long>(a.out_h) * a.out_w;
  float* row = a.y + first_channel * plane + static_cast<long>(oy) * a.out_w + ox0;
  int c = 0;
  for (; c + 8 <= channels; c += 8) {
    int j = 0;
    for (; j + 8 <= pixels; j += 8) {
      __m256 r[8], t[8];
      for (int k = 0; k < 8; ++k) r[k] = _mm256_load_ps(tile + (j + k) * tile_stride + c);
      for (int k = 0; k < 8; k += 2) {
        t[k] = _mm256_unpacklo_ps(r[k], r[k + 1]);
        t[k + 1] = _mm256_unpackhi_ps(r[k], r[k + 1]);
      }
      for (int k = 0; k < 8; k += 4) {
        r[k] = _mm256_shuffle_ps(t[k], t[k + 2], 0x44);
        r[k + 1] = _mm256_shuffle_ps(t[k], t[k + 2], 0xee);
        r[k + 2] = _mm256_shuffle_ps(t[k + 1], t[k + 3], 0x44);
        r[k + 3] = _mm256_shuffle_ps(t[k + 1], t[k + 3], 0xee);
      }
      // r[0..3] hold channels (0, 1, 2, 3) of pixels 0-3 in the low half, r[4..7] of pixels 4-7; 128-bit halves
      // joined give whole rows: channel k's eight pixels
      for (int k = 0; k < 4; ++k) {
        _mm256_storeu_ps(row + (c + k) * plane + j, _mm256_permute2f128_ps(r[k], r[k + 4], 0x20));
        _mm256_storeu_ps(row + (c + k + 4) * plane + j, _mm256_permute2f128_ps(r[k], r[k + 4], 0x31));
      }
    }
    for (; j < pixels; ++j)
      for (int k = 0; k < 8; ++k) row[(c + k) * plane + j] = tile[j * tile_stride + c + k];
  }
  for (; c < channels; ++c)
    for (int j = 0; j < pixels; ++j) row[c * plane + j] = tile[j * tile_stride + c];
}

// Output channel blocks [first_block, first_block + kBlocks) at every output pixel, the broadcast activation words
// shared by the blocks; results through a [pixel][channel] tile, as in the AVX-512 path (binary_conv_avx512.cpp).
// kRows and kRun, where not 0, are kernel_h and kernel_w * words known at compile time (3 and 3: a 3x3 layer of up
// to 64 channels; 3 and 1: one row-packed; 3 and 6 or 12: 128 or 256 channels), so that the loops over a pixel's few
// words unroll: at 8x8 and 16 channels those loops, not the counting, were most of the time.
template <int kBlocks, int kRows = 0, int kRun = 0>
void convolve_blocks(const MismatchArgs& a, int first_block) {
  constexpr int kTilePixels = 64;
  const __m256i table = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                         0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low_nibbles = _mm256_set1_epi8(0x0f);
  const __m256i zero = _mm256_setzero_si256();
  const __m256i pick = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);  // the low 32 bits of each 64-bit sum
  const int taps = a.kernel_h * a.kernel_w;
  const int run = kRun > 0 ? kRun : a.kernel_w * a.words;  // a kernel row's pixels are adjacent in the padded planes
  const int rows = kRows > 0 ? kRows : a.kernel_h;
  const long block_stride = static_cast<long>(taps) * a.words * 8;
  const uint64_t* block_weights = a.weights + first_block * block_stride;
  const int first_channel = first_block * 8;
  const int channels = a.out_channels - first_channel < kBlocks * 8 ? a.out_channels - first_channel : kBlocks * 8;
  alignas(32) float tile[kTilePixels][kBlocks * 8];
  // the epilogue, applied per register of four channels (binary_conv_paths.hpp): mul and add stay separate
  // instructions (this file is compiled without FMA contraction), so each step rounds on its own
  const EpilogueLanes<kBlocks * 8> lanes(a, first_channel);
  const __m128 zero_ps = _mm_setzero_ps();
  for (int oy = 0; oy < a.out_h; ++oy)
    for (int ox0 = 0; ox0 < a.out_w; ox0 += kTilePixels) {
      const int pixels = a.out_w - ox0 < kTilePixels ? a.out_w - ox0 : kTilePixels;
      for (int j = 0; j < pixels; ++j) {
        const int ox = ox0 + j;
        // per block: output channels 0-3 and 4-7 as 64-bit sums, and as byte counts not yet widened
        __m256i total[2 * kBlocks], bytes[2 * kBlocks];
        for (int r = 0; r < 2 * kBlocks; ++r) total[r] = bytes[r] = zero;
        int pending = 0;
        for (int ky = 0; ky < rows; ++ky) {
          const long pixel_row = (static_cast<long>(oy) * a.stride_h + ky) * a.padded_w + static_cast<long>(ox) * a.stride_w;
          const uint64_t* negative = a.negative + pixel_row * a.words;
          const uint64_t* nonzero = a.nonzero + pixel_row * a.words;
          const uint64_t* w = block_weights + static_cast<long>(ky * a.kernel_w) * a.words * 8;
          for (int i = 0; i < run; ++i) {
            const __m256i sign = _mm256_set1_epi64x(static_cast<long long>(negative[i]));
            const __m256i mask = _mm256_set1_epi64x(static_cast<long long>(nonzero[i]));
            for (int r = 0; r < 2 * kBlocks; ++r) {
              const __m256i weights =
                  _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + (r / 2) * block_stride + i * 8 + (r % 2) * 4));
              bytes[r] = _mm256_add_epi8(
                  bytes[r], byte_popcount(_mm256_and_si256(_mm256_xor_si256(sign, weights), mask), table, low_nibbles));
            }
            if (++pending == 31) {
              for (int r = 0; r < 2 * kBlocks; ++r) {
                total[r] = _mm256_add_epi64(total[r], _mm256_sad_epu8(bytes[r], zero));
                bytes[r] = zero;
              }
              pending = 0;
            }
          }
        }
        const __m128i count = _mm_set1_epi32(a.count_sum[static_cast<long>(oy) * a.out_w + ox]);
        for (int r = 0; r < 2 * kBlocks; ++r) {
          total[r] = _mm256_add_epi64(total[r], _mm256_sad_epu8(bytes[r], zero));
          const __m128i mismatches = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(total[r], pick));
          const __m128i y = _mm_sub_epi32(count, _mm_add_epi32(mismatches, mismatches));
          __m128 v = _mm_cvtepi32_ps(y);
          if (a.epilogue) {
            if (a.relu) v = _mm_max_ps(v, zero_ps);  // an integer count: never NaN, never -0
            if (a.scale != nullptr) v = _mm_mul_ps(v, _mm_load_ps(&lanes.scale[r * 4]));
            if (a.shift != nullptr) v = _mm_add_ps(v, _mm_load_ps(&lanes.shift[r * 4]));
            if (a.residual != nullptr) {
              const long at = oy * lanes.residual_row + ox * lanes.residual_column;
              const float* const* base = &lanes.residual[r * 4];
              v = _mm_add_ps(v, _mm_setr_ps(base[0] ? base[0][at] : 0.0f, base[1] ? base[1][at] : 0.0f,
                                            base[2] ? base[2][at] : 0.0f, base[3] ? base[3][at] : 0.0f));
            }
          }
          _mm_store_ps(&tile[j][r * 4], v);
        }
      }
      store_tile_transposed(a, &tile[0][0], kBlocks * 8, first_channel, channels, oy, ox0, pixels);
    }
}

template <int kRows, int kRun>
void convolve_all(const MismatchArgs& a) {
  int block = 0;
  for (; block + 2 <= a.blocks; block += 2) convolve_blocks<2, kRows, kRun>(a, block);
  for (; block < a.blocks; ++block) convolve_blocks<1, kRows, kRun>(a, block);
}

}  // namespace

void convolve_avx2(const MismatchArgs& a) {
  const int run = a.kernel_w * a.words;
  if (a.kernel_h == 3 && run == 1) return convolve_all<3, 1>(a);    // row-packed
  if (a.kernel_h == 3 && run == 3) return convolve_all<3, 3>(a);    // 3x3, up to 64 channels
  if (a.kernel_h == 3 && run == 6) return convolve_all<3, 6>(a);    // 128
  if (a.kernel_h == 3 && run == 12) return convolve_all<3, 12>(a);  // 256
  convolve_all<0, 0>(a);
}

void pack_avx2(const PackArgs& a) {
  const long plane = static_cast<long>(a.height) * a.width;
  const __m128 low = _mm_set1_ps(-a.threshold), high = _mm_set1_ps(a.threshold);
  alignas(32) uint64_t negative[8], nonzero[8];
  for (int word = 0; word < a.words; ++word) {
    const int first = word * 64;
    const int last = a.channels < first + 64 ? a.channels : first + 64;
    for (int iy = 0; iy < a.height; ++iy) {
      const float* row = a.image + static_cast<long>(iy) * a.width;
      const long padded_row = static_cast<long>(iy + a.pad_top) * a.padded_w + a.pad_left;
      int ix = 0;
      for (; ix + 8 <= a.width; ix += 8) {  // eight pixels: two registers of four 64-bit words each
        __m256i neg_low = _mm256_setzero_si256(), neg_high = neg_low, nz_low = neg_low, nz_high = neg_low;
        for (int c = first; c < last; ++c) {
          const __m256i bit = _mm256_set1_epi64x(static_cast<long long>(uint64_t(1) << (c - first)));
          const float* source = row + c * plane + ix;
          const __m128 v_low = _mm_loadu_ps(source), v_high = _mm_loadu_ps(source + 4);
          // compare results are all-ones 32-bit lanes; sign-extended to 64 bits they select the bit
          const __m128i n_low = _mm_castps_si128(_mm_cmple_ps(v_low, low));  // NaN compares false
          const __m128i n_high = _mm_castps_si128(_mm_cmple_ps(v_high, low));
          const __m128i z_low = _mm_or_si128(n_low, _mm_castps_si128(_mm_cmpge_ps(v_low, high)));
          const __m128i z_high = _mm_or_si128(n_high, _mm_castps_si128(_mm_cmpge_ps(v_high, high)));
          neg_low = _mm256_or_si256(neg_low, _mm256_and_si256(_mm256_cvtepi32_epi64(n_low), bit));
          neg_high = _mm256_or_si256(neg_high, _mm256_and_si256(_mm256_cvtepi32_epi64(n_high), bit));
          nz_low = _mm256_or_si256(nz_low, _mm256_and_si256(_mm256_cvtepi32_epi64(z_low), bit));
          nz_high = _mm256_or_si256(nz_high, _mm256_and_si256(_mm256_cvtepi32_epi64(z_high), bit));
        }
        _mm256_store_si256(reinterpret_cast<__m256i*>(negative), neg_low);
        _mm256_store_si256(reinterpret_cast<__m256i*>(negative + 4), neg_high);
        _mm256_store_si256(reinterpret_cast<__m256i*>(nonzero), nz_low);
        _mm256_store_si256(reinterpret_cast<__m256i*>(nonzero + 4), nz_high);
        for (int j = 0; j < 8; ++j) {
          const long padded = padded_row + ix + j;
          a.negative[padded * a.words + word] = negative[j];
          a.nonzero[padded * a.words + word] = nonzero[j];
          a.count[padded] = (word == 0 ? 0 : a.count[padded]) + __builtin_popcountll(nonzero[j]);
        }
      }
      for (; ix < a.width; ++ix) {  // the last pixels of the row, one at a time
        uint64_t negative_word = 0, nonzero_word = 0;
        for (int c = first; c < last; ++c) {
          const float v = row[c * plane + ix];
          const uint64_t is_negative = v <= -a.threshold, is_positive = v >= a.threshold;
          negative_word |= is_negative << (c - first);
          nonzero_word |= (is_negative | is_positive) << (c - first);
        }
        const long padded = padded_row + ix;
        a.negative[padded * a.words + word] = negative_word;
        a.nonzero[padded * a.words + word] = nonzero_word;
        a.count[padded] = (word == 0 ? 0 : a.count[padded]) + __builtin_popcountll(nonzero_word);
      }
    }
  }
}

}  // namespace edgesdk::binary::detail
