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
  int32_t* mismatches;       // out: [out_h * out_w][blocks * 8], popcount((neg ^ wneg) & nonzero) over all taps
};

void mismatches_scalar(const MismatchArgs& args);
void mismatches_avx2(const MismatchArgs& args);
void mismatches_avx512(const MismatchArgs& args);
void mismatches_neon(const MismatchArgs& args);

}  // namespace edgesdk::binary::detail
