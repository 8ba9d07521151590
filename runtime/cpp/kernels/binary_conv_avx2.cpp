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

// The epilogue (binary_conv_paths.hpp, finish) on eight adjacent output pixels (oy, ox .. ox + 7) of one channel: the
// same steps in the same order, each rounded on its own (this file is compiled without FMA contraction).
inline __m256 finish8(const MismatchArgs& a, int channel, int oy, int ox, __m256 v) {
  if (a.relu) v = _mm256_max_ps(v, _mm256_setzero_ps());  // an integer count: never NaN, never -0
  if (a.scale != nullptr) v = _mm256_mul_ps(v, _mm256_set1_ps(a.scale[channel]));
  if (a.shift != nullptr) v = _mm256_add_ps(v, _mm256_set1_ps(a.shift[channel]));
  if (a.residual != nullptr) {
    const int source = channel - a.residual_offset;
    __m256 residual = _mm256_setzero_ps();  // a zero-padded channel: still added, as the float graph adds its 0
    if (source >= 0 && source < a.residual_channels) {
      const long s = a.residual_stride;
      const float* row = a.residual + (static_cast<long>(source) * a.out_h + oy) * s * a.out_w * s + ox * s;
      residual = s == 1 ? _mm256_loadu_ps(row)
                        : _mm256_setr_ps(row[0], row[s], row[2 * s], row[3 * s], row[4 * s], row[5 * s], row[6 * s],
                                         row[7 * s]);
    }
    v = _mm256_add_ps(v, residual);
  }
  return v;
}

// The [pixel][channel] tile to the output planes, eight pixels by eight channels at a time with an 8x8 transpose in
// registers (element by element, this store was about a tenth of a 64-channel 8x8 layer), the epilogue applied to
// each channel's eight pixels on the way (applied per register of four channels with four gathered residual values
// it made that layer 4 % slower: 12.7 against 12.2 us); the rest one by one.
void store_tile_transposed(const MismatchArgs& a, const float* tile, int tile_stride, int first_channel,
                           int channels, int oy, int ox0, int pixels) {
  const long plane = static_cast<long>(a.out_h) * a.out_w;
  const long first_pixel = static_cast<long>(oy) * a.out_w + ox0;
  float* row = a.y + first_channel * plane + first_pixel;
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
        t[k] = _mm256_permute2f128_ps(r[k], r[k + 4], 0x20);
        t[k + 4] = _mm256_permute2f128_ps(r[k], r[k + 4], 0x31);
      }
      for (int k = 0; k < 8; ++k) {
        const int channel = first_channel + c + k;
        _mm256_storeu_ps(row + (c + k) * plane + j, a.epilogue ? finish8(a, channel, oy, ox0 + j, t[k]) : t[k]);
      }
    }
    for (; j < pixels; ++j)
      for (int k = 0; k < 8; ++k) {
        const float value = tile[j * tile_stride + c + k];
        row[(c + k) * plane + j] = a.epilogue ? finish(a, first_channel + c + k, first_pixel + j, value) : value;
      }
  }
  for (; c < channels; ++c)
    for (int j = 0; j < pixels; ++j) {
      const float value = tile[j * tile_stride + c];
      row[c * plane + j] = a.epilogue ? finish(a, first_channel + c, first_pixel + j, value) : value;
    }
}

// The mismatch counts of output channel blocks [0, kBlocks) from `w` at one output pixel, over `rows` kernel rows of
// `run` words each: activation words from `negative` and `nonzero` (rows activation_row words apart), weight words
// from `w` (rows weight_row apart, blocks block_stride apart). kMasked: AND with the nonzero plane, needed wherever a
// counted channel may be 0. kRows and kRun, where not 0, are rows and run known at compile time (3 and 3: a whole 3x3
// window of up to 64 channels; 3 and 1: one row-packed; 3 and 6 or 12: 128 or 256 channels), so that the loops over
// a pixel's few words unroll: at 8x8 and 16 channels those loops, not the counting, were most of the time.
// Out: sums[2b] and sums[2b + 1], the 64-bit counts of block b's channels 0-3 and 4-7.
// kBounded: kRows and kRun are bounds instead, rows and run the counts (a window cut by the padding), the loops
// still unrolled.
template <int kBlocks, bool kMasked, int kRows, int kRun, bool kBounded = false>
inline void count_window(const uint64_t* negative, const uint64_t* nonzero, long activation_row, const uint64_t* w,
                         long weight_row, long block_stride, int rows, int run, __m256i table, __m256i low_nibbles,
                         __m256i (&sums)[2 * kBlocks]) {
  // a window of at most 31 words (a 3x3 kernel of up to 192 channels) never needs its byte counts widened midway
  constexpr bool kShortWindow = kRows > 0 && kRun > 0 && kRows * kRun <= 31;
  const int row_count = kRows > 0 ? kRows : rows, word_count = kRun > 0 ? kRun : run;
  const __m256i zero = _mm256_setzero_si256();
  __m256i bytes[2 * kBlocks];  // byte counts not yet widened
  for (int r = 0; r < 2 * kBlocks; ++r) sums[r] = bytes[r] = zero;
  int pending = 0;
  for (int ky = 0; ky < row_count; ++ky, negative += activation_row, nonzero += activation_row, w += weight_row) {
    if (kBounded && ky >= rows) break;
    for (int i = 0; i < word_count; ++i) {
      if (kBounded && i >= run) break;
      const __m256i sign = _mm256_set1_epi64x(static_cast<long long>(negative[i]));
      __m256i mask = zero;
      if (kMasked) mask = _mm256_set1_epi64x(static_cast<long long>(nonzero[i]));
      for (int r = 0; r < 2 * kBlocks; ++r) {
        const __m256i weights =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + (r / 2) * block_stride + i * 8 + (r % 2) * 4));
        __m256i differ = _mm256_xor_si256(sign, weights);
        if (kMasked) differ = _mm256_and_si256(differ, mask);
        bytes[r] = _mm256_add_epi8(bytes[r], byte_popcount(differ, table, low_nibbles));
      }
      if (!kShortWindow && ++pending == 31) {
        for (int r = 0; r < 2 * kBlocks; ++r) {
          sums[r] = _mm256_add_epi64(sums[r], _mm256_sad_epu8(bytes[r], zero));
          bytes[r] = zero;
        }
        pending = 0;
      }
    }
  }
  for (int r = 0; r < 2 * kBlocks; ++r) sums[r] = _mm256_add_epi64(sums[r], _mm256_sad_epu8(bytes[r], zero));
}

// Output channel blocks [first_block, first_block + kBlocks) at every output pixel, the broadcast activation words
// shared by the blocks; results through a [pixel][channel] tile, as in the AVX-512 path (binary_conv_avx512.cpp).
// Each pixel counts only the taps of its window that lie in the image (MismatchArgs: the zero padding adds 0) and
// leaves out the nonzero mask where its counted channels are all nonzero: at 8x8 that is 16 % fewer words and one
// instruction in nine fewer per word. kRows and kRun: a whole window's rows and run at compile time (count_window).
template <int kBlocks, int kRows = 0, int kRun = 0>
void convolve_blocks(const MismatchArgs& a, int first_block) {
  constexpr int kTilePixels = 64;
  const __m256i table = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                         0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low_nibbles = _mm256_set1_epi8(0x0f);
  const __m256i order = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);  // interleaved channels back in order
  const long block_stride = static_cast<long>(a.kernel_h) * a.kernel_w * a.words * 8;
  const long activation_row = static_cast<long>(a.padded_w) * a.words;
  const long weight_row = static_cast<long>(a.kernel_w) * a.words * 8;
  const uint64_t* block_weights = a.weights + first_block * block_stride;
  const int first_channel = first_block * 8;
  const int channels = a.out_channels - first_channel < kBlocks * 8 ? a.out_channels - first_channel : kBlocks * 8;
  alignas(32) float tile[kTilePixels][kBlocks * 8];
  for (int oy = 0; oy < a.out_h; ++oy) {
    const int row_first = a.row_first[oy], rows = a.row_last[oy] - row_first;
    for (int ox0 = 0; ox0 < a.out_w; ox0 += kTilePixels) {
      const int pixels = a.out_w - ox0 < kTilePixels ? a.out_w - ox0 : kTilePixels;
      for (int j = 0; j < pixels; ++j) {
        const int ox = ox0 + j;
        const int column_first = a.column_first[ox], columns = a.column_last[ox] - column_first;
        const long first_word = ((static_cast<long>(oy) * a.stride_h + row_first) * a.padded_w +
                                 static_cast<long>(ox) * a.stride_w + column_first) * a.words;
        const uint64_t* negative = a.negative + first_word;
        const uint64_t* nonzero = a.nonzero + first_word;
        const uint64_t* w = block_weights + (static_cast<long>(row_first) * a.kernel_w + column_first) * a.words * 8;
        const int run = columns * a.words;
        const bool whole = rows == a.kernel_h && columns == a.kernel_w;
        __m256i sums[2 * kBlocks];
        if (whole && a.unmasked[ox])
          count_window<kBlocks, false, kRows, kRun>(negative, nonzero, activation_row, w, weight_row, block_stride, rows,
                                                    run, table, low_nibbles, sums);
        else if (whole)
          count_window<kBlocks, true, kRows, kRun>(negative, nonzero, activation_row, w, weight_row, block_stride, rows,
                                                   run, table, low_nibbles, sums);
        else if (a.unmasked[ox])
          count_window<kBlocks, false, kRows, kRun, true>(negative, nonzero, activation_row, w, weight_row,
                                                          block_stride, rows, run, table, low_nibbles, sums);
        else
          count_window<kBlocks, true, kRows, kRun, true>(negative, nonzero, activation_row, w, weight_row,
                                                         block_stride, rows, run, table, low_nibbles, sums);
        const __m256i count = _mm256_set1_epi32(a.count_sum[static_cast<long>(oy) * a.out_w + ox]);
        for (int b = 0; b < kBlocks; ++b) {
          // the two registers' 64-bit sums (each below 2^32) as one register of eight 32-bit lanes: channels 0-3 in
          // the even lanes, 4-7 in the odd ones, then put in channel order
          const __m256i mismatches = _mm256_permutevar8x32_epi32(
              _mm256_blend_epi32(sums[2 * b], _mm256_slli_epi64(sums[2 * b + 1], 32), 0xaa), order);
          const __m256i y = _mm256_sub_epi32(count, _mm256_add_epi32(mismatches, mismatches));
          _mm256_store_ps(&tile[j][b * 8], _mm256_cvtepi32_ps(y));
        }
      }
      store_tile_transposed(a, &tile[0][0], kBlocks * 8, first_channel, channels, oy, ox0, pixels);
    }
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

// Eight pixels at a time, one 32-bit lane each: for channels c from the last to the first, acc = 2 * acc - m with m
// the compare's all-ones (-1) or 0 shifts the earlier channels up a bit and sets bit 0 where the compare held, so
// channel first + k ends at bit k: two instructions a channel for each plane (a 64-bit lane per pixel and a bit
// select per channel took five). Channels first .. first + 31 fill one register, the next 32 another; the two are
// then interleaved into the pixels' 64-bit words.
void pack_avx2(const PackArgs& a) {
  const long plane = static_cast<long>(a.height) * a.width;
  const __m256 low = _mm256_set1_ps(-a.threshold), high = _mm256_set1_ps(a.threshold);
  alignas(32) uint64_t negative[8], nonzero[8];
  for (int word = 0; word < a.words; ++word) {
    const int first = word * 64;
    const int last = a.channels < first + 64 ? a.channels : first + 64;
    const int middle = last < first + 32 ? last : first + 32;
    for (int iy = 0; iy < a.height; ++iy) {
      const float* row = a.image + static_cast<long>(iy) * a.width;
      const long padded_row = static_cast<long>(iy + a.pad_top) * a.padded_w + a.pad_left;
      int ix = 0;
      for (; ix + 8 <= a.width; ix += 8) {
        // [0]: channels first .. middle - 1, [1]: middle .. last - 1
        __m256i neg[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()}, nz[2] = {neg[0], neg[0]};
        for (int half = 0; half < 2; ++half) {
          const int begin = half == 0 ? first : middle, end = half == 0 ? middle : last;
          for (int c = end - 1; c >= begin; --c) {
            const __m256 v = _mm256_loadu_ps(row + c * plane + ix);
            const __m256i n = _mm256_castps_si256(_mm256_cmp_ps(v, low, _CMP_LE_OQ));  // NaN compares false
            const __m256i z = _mm256_or_si256(n, _mm256_castps_si256(_mm256_cmp_ps(v, high, _CMP_GE_OQ)));
            neg[half] = _mm256_sub_epi32(_mm256_add_epi32(neg[half], neg[half]), n);
            nz[half] = _mm256_sub_epi32(_mm256_add_epi32(nz[half], nz[half]), z);
          }
        }
        // 32-bit halves to 64-bit words: the unpacks give pixels (0, 1, 4, 5) and (2, 3, 6, 7)
        const __m256i neg_a = _mm256_unpacklo_epi32(neg[0], neg[1]), neg_b = _mm256_unpackhi_epi32(neg[0], neg[1]);
        const __m256i nz_a = _mm256_unpacklo_epi32(nz[0], nz[1]), nz_b = _mm256_unpackhi_epi32(nz[0], nz[1]);
        _mm256_store_si256(reinterpret_cast<__m256i*>(negative), _mm256_permute2x128_si256(neg_a, neg_b, 0x20));
        _mm256_store_si256(reinterpret_cast<__m256i*>(negative + 4), _mm256_permute2x128_si256(neg_a, neg_b, 0x31));
        _mm256_store_si256(reinterpret_cast<__m256i*>(nonzero), _mm256_permute2x128_si256(nz_a, nz_b, 0x20));
        _mm256_store_si256(reinterpret_cast<__m256i*>(nonzero + 4), _mm256_permute2x128_si256(nz_a, nz_b, 0x31));
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
