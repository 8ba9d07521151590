// The AVX-512 path: one zmm register holds one 64-bit weight word for each of eight output channels, and
// VPOPCNTQ counts all eight at once. Compiled with -mavx512f -mavx512vpopcntdq and called only when the CPU has
// both (binary_conv.cpp checks); includes nothing but plain data and intrinsics (see binary_conv_paths.hpp).
#include <immintrin.h>

#include "binary_conv_paths.hpp"

namespace edgesdk::binary::detail {

void mismatches_avx512(const MismatchArgs& a) {
  const int taps = a.kernel_h * a.kernel_w;
  const int row = a.blocks * 8;
  for (int block = 0; block < a.blocks; ++block) {
    const uint64_t* block_weights = a.weights + static_cast<long>(block) * taps * a.words * 8;
    for (int oy = 0; oy < a.out_h; ++oy)
      for (int ox = 0; ox < a.out_w; ++ox) {
        __m512i total = _mm512_setzero_si512();
        for (int ky = 0; ky < a.kernel_h; ++ky) {
          const long pixel_row = (static_cast<long>(oy) * a.stride_h + ky) * a.padded_w + static_cast<long>(ox) * a.stride_w;
          for (int kx = 0; kx < a.kernel_w; ++kx) {
            const uint64_t* negative = a.negative + (pixel_row + kx) * a.words;
            const uint64_t* nonzero = a.nonzero + (pixel_row + kx) * a.words;
            const uint64_t* w = block_weights + static_cast<long>(ky * a.kernel_w + kx) * a.words * 8;
            for (int word = 0; word < a.words; ++word) {
              const __m512i weights = _mm512_loadu_si512(w + word * 8);
              const __m512i differ = _mm512_and_si512(
                  _mm512_xor_si512(_mm512_set1_epi64(static_cast<long long>(negative[word])), weights),
                  _mm512_set1_epi64(static_cast<long long>(nonzero[word])));
              total = _mm512_add_epi64(total, _mm512_popcnt_epi64(differ));
            }
          }
        }
        int32_t* out = a.mismatches + (static_cast<long>(oy) * a.out_w + ox) * row + block * 8;
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm512_maskz_cvtepi64_epi32(0xff, total));
      }
  }
}

}  // namespace edgesdk::binary::detail
