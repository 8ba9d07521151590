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

void mismatches_avx2(const MismatchArgs& a) {
  const __m256i table = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                         0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low_nibbles = _mm256_set1_epi8(0x0f);
  const __m256i zero = _mm256_setzero_si256();
  const int taps = a.kernel_h * a.kernel_w;
  const int row = a.blocks * 8;
  for (int block = 0; block < a.blocks; ++block) {
    const uint64_t* block_weights = a.weights + static_cast<long>(block) * taps * a.words * 8;
    for (int oy = 0; oy < a.out_h; ++oy)
      for (int ox = 0; ox < a.out_w; ++ox) {
        __m256i total_low = zero, total_high = zero;   // output channels 0-3 and 4-7 of the block, 64-bit sums
        __m256i bytes_low = zero, bytes_high = zero;   // the same as byte counts not yet widened
        int pending = 0;
        for (int ky = 0; ky < a.kernel_h; ++ky) {
          const long pixel_row = (static_cast<long>(oy) * a.stride_h + ky) * a.padded_w + static_cast<long>(ox) * a.stride_w;
          for (int kx = 0; kx < a.kernel_w; ++kx) {
            const uint64_t* negative = a.negative + (pixel_row + kx) * a.words;
            const uint64_t* nonzero = a.nonzero + (pixel_row + kx) * a.words;
            const uint64_t* w = block_weights + static_cast<long>(ky * a.kernel_w + kx) * a.words * 8;
            for (int word = 0; word < a.words; ++word) {
              const __m256i sign = _mm256_set1_epi64x(static_cast<long long>(negative[word]));
              const __m256i mask = _mm256_set1_epi64x(static_cast<long long>(nonzero[word]));
              const __m256i w_low = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + word * 8));
              const __m256i w_high = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + word * 8 + 4));
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
        }
        total_low = _mm256_add_epi64(total_low, _mm256_sad_epu8(bytes_low, zero));
        total_high = _mm256_add_epi64(total_high, _mm256_sad_epu8(bytes_high, zero));
        // the low 32 bits of each 64-bit sum, in lane order: elements 0, 2, 4, 6 of each register
        const __m256i pick = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
        const __m128i low = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(total_low, pick));
        const __m128i high = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(total_high, pick));
        int32_t* out = a.mismatches + (static_cast<long>(oy) * a.out_w + ox) * row + block * 8;
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out), low);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 4), high);
      }
  }
}

}  // namespace edgesdk::binary::detail
