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

}  // namespace

void convolve_avx2(const MismatchArgs& a) {
  const __m256i table = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                         0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low_nibbles = _mm256_set1_epi8(0x0f);
  const __m256i zero = _mm256_setzero_si256();
  const __m256i pick = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);  // the low 32 bits of each 64-bit sum
  const int taps = a.kernel_h * a.kernel_w;
  const int run = a.kernel_w * a.words;  // a kernel row's pixels are adjacent in the padded planes
  alignas(32) int32_t mismatches[8];
  for (int block = 0; block < a.blocks; ++block) {
    const uint64_t* block_weights = a.weights + static_cast<long>(block) * taps * a.words * 8;
    for (int oy = 0; oy < a.out_h; ++oy)
      for (int ox = 0; ox < a.out_w; ++ox) {
        __m256i total_low = zero, total_high = zero;   // output channels 0-3 and 4-7 of the block, 64-bit sums
        __m256i bytes_low = zero, bytes_high = zero;   // the same as byte counts not yet widened
        int pending = 0;
        for (int ky = 0; ky < a.kernel_h; ++ky) {
          const long pixel_row = (static_cast<long>(oy) * a.stride_h + ky) * a.padded_w + static_cast<long>(ox) * a.stride_w;
          const uint64_t* negative = a.negative + pixel_row * a.words;
          const uint64_t* nonzero = a.nonzero + pixel_row * a.words;
          const uint64_t* w = block_weights + static_cast<long>(ky * a.kernel_w) * a.words * 8;
          for (int i = 0; i < run; ++i) {
            const __m256i sign = _mm256_set1_epi64x(static_cast<long long>(negative[i]));
            const __m256i mask = _mm256_set1_epi64x(static_cast<long long>(nonzero[i]));
            const __m256i w_low = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + i * 8));
            const __m256i w_high = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + i * 8 + 4));
            bytes_low = _mm256_add_epi8(
                bytes_low, byte_popcount(_mm256_and_si256(_mm256_xor_si256(sign, w_low), mask), table, low_nibbles));
            bytes_high = _mm256_add_epi8(
                bytes_high, byte_popcount(_mm256_and_si256(_mm256_xor_si256(sign, w_high), mask), table, low_nibbles));
            if (++pending == 31) {
              total_low = _mm256_add_epi64(total_low, _mm256_sad_epu8(bytes_low, zero));
              total_high = _mm256_add_epi64(total_high, _mm256_sad_epu8(bytes_high, zero));
              bytes_low = bytes_high = zero;
              pending = 0;
            }
          }
        }
        total_low = _mm256_add_epi64(total_low, _mm256_sad_epu8(bytes_low, zero));
        total_high = _mm256_add_epi64(total_high, _mm256_sad_epu8(bytes_high, zero));
        _mm_store_si128(reinterpret_cast<__m128i*>(mismatches),
                        _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(total_low, pick)));
        _mm_store_si128(reinterpret_cast<__m128i*>(mismatches + 4),
                        _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(total_high, pick)));
        store_block(a, block, static_cast<long>(oy) * a.out_w + ox, mismatches);
      }
  }
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
