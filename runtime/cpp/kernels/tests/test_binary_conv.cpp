// The binary convolution against a direct float convolution of s(x) = clamp(x * 2^100, -1, 1) with the +-1
// weights, compared exactly, on every instruction path this machine runs. Needs no fixture.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "binary_conv.hpp"
#include "check.hpp"

namespace bc = edgesdk::binary;

namespace {

// the float graph's s(x), in float as the exported graph computes it
float delegable_sign(float x) {
  const float scaled = x * std::ldexp(1.0f, 100);
  return scaled < -1.0f ? -1.0f : (scaled > 1.0f ? 1.0f : scaled);
}

std::vector<float> reference(const bc::ConvGeometry& g, const std::vector<float>& x, const std::vector<float>& w,
                             int batch, int height, int width, int out_h, int out_w) {
  std::vector<float> y(size_t(batch) * g.out_channels * out_h * out_w);
  size_t index = 0;
  for (int n = 0; n < batch; ++n)
    for (int oc = 0; oc < g.out_channels; ++oc)
      for (int oy = 0; oy < out_h; ++oy)
        for (int ox = 0; ox < out_w; ++ox) {
          double sum = 0.0;
          for (int ic = 0; ic < g.in_channels; ++ic)
            for (int ky = 0; ky < g.kernel_h; ++ky)
              for (int kx = 0; kx < g.kernel_w; ++kx) {
                const int iy = oy * g.stride_h + ky - g.pad_top, ix = ox * g.stride_w + kx - g.pad_left;
                if (iy < 0 || ix < 0 || iy >= height || ix >= width) continue;  // zero padding
                const float s = delegable_sign(x[((size_t(n) * g.in_channels + ic) * height + iy) * width + ix]);
                const float b = w[((size_t(oc) * g.in_channels + ic) * g.kernel_h + ky) * g.kernel_w + kx] >= 0.0f ? 1.0f : -1.0f;
                sum += double(s) * b;
              }
          y[index++] = float(sum);
        }
  return y;
}

// activations with exact zeros, values at and just above the +-1 threshold (2^-100) and ordinary values
std::vector<float> activations(size_t count, std::mt19937& random) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> kind(0, 9);
  const float threshold = std::ldexp(1.0f, -100);
  std::vector<float> x(count);
  for (float& v : x) {
    switch (kind(random)) {
      case 0: v = 0.0f; break;
      case 1: v = -0.0f; break;
      case 2: v = threshold; break;
      case 3: v = -threshold; break;
      case 4: v = 1e-30f * (normal(random) < 0 ? -1.0f : 1.0f); break;
      default: v = normal(random);
    }
  }
  return x;
}

std::vector<bc::Isa> runnable_paths() {
  std::vector<bc::Isa> paths;
  for (bc::Isa isa : {bc::Isa::scalar, bc::Isa::avx2, bc::Isa::avx512, bc::Isa::neon})
    if (bc::isa_available(isa)) paths.push_back(isa);
  return paths;
}

// pack_binary_weights's bytes, written independently of the kernel: uint8 (blocks, kh, kw, words, 8 lanes, 8 bytes),
// bit c % 8 of byte (c % 64) / 8 set where W < 0 for output channel block * 8 + lane, input channel word * 64 + c
std::vector<uint8_t> layout_bytes(const bc::ConvGeometry& g, const std::vector<float>& w) {
  const int blocks = (g.out_channels + 7) / 8, words = (g.in_channels + 63) / 64;
  std::vector<uint8_t> packed(size_t(blocks) * g.kernel_h * g.kernel_w * words * 64, 0);
  for (int oc = 0; oc < g.out_channels; ++oc)
    for (int ic = 0; ic < g.in_channels; ++ic)
      for (int ky = 0; ky < g.kernel_h; ++ky)
        for (int kx = 0; kx < g.kernel_w; ++kx)
          if (w[((size_t(oc) * g.in_channels + ic) * g.kernel_h + ky) * g.kernel_w + kx] < 0.0f) {
            const size_t word = (((size_t(oc / 8) * g.kernel_h + ky) * g.kernel_w + kx) * words + ic / 64) * 8 + oc % 8;
            packed[word * 8 + (ic % 64) / 8] |= uint8_t(1u << (ic % 8));
          }
  return packed;
}

struct Case {
  int in_channels, out_channels, kernel, stride, pad_top, pad_left, pad_bottom, pad_right, batch, height, width;
};

// dense: every activation +-1 (no zero, as after a sign), which lets the AVX2 path leave out the nonzero mask
void check_case(const Case& c, bool dense, std::mt19937& random) {
  bc::ConvGeometry g;
  g.in_channels = c.in_channels;
  g.out_channels = c.out_channels;
  g.kernel_h = g.kernel_w = c.kernel;
  g.stride_h = g.stride_w = c.stride;
  g.pad_top = c.pad_top;
  g.pad_left = c.pad_left;
  g.pad_bottom = c.pad_bottom;
  g.pad_right = c.pad_right;
  std::vector<float> x = activations(size_t(c.batch) * c.in_channels * c.height * c.width, random);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  if (dense)
    for (float& v : x) v = normal(random) < 0.0f ? -1.5f : 0.25f;
  std::vector<float> w(size_t(c.out_channels) * c.in_channels * c.kernel * c.kernel);
  for (float& v : w) v = normal(random);
  w[0] = 0.0f;  // sign(0) is +1 for weights
  int out_h = 0, out_w = 0;
  bc::output_size(g, c.height, c.width, &out_h, &out_w);
  const std::vector<float> expected = reference(g, x, w, c.batch, c.height, c.width, out_h, out_w);

  const bc::PackedWeights from_float = bc::PackedWeights::from_float(g, w.data());
  // the exported bytes, 8-byte aligned (a vector of words), viewed in place: no copy
  const std::vector<uint8_t> bytes = layout_bytes(g, w);
  std::vector<uint64_t> aligned((bytes.size() + 7) / 8);
  std::memcpy(aligned.data(), bytes.data(), bytes.size());
  const bc::PackedWeights from_bytes = bc::PackedWeights::view(g, aligned.data(), bytes.size());
  CHECK_EQ(from_float.bytes(), bytes.size());
  CHECK_EQ(from_bytes.bytes(), bytes.size());
  CHECK(from_bytes.data() == aligned.data());
  CHECK_EQ(from_bytes.owned_bytes(), size_t(0));
  CHECK_EQ(from_float.owned_bytes(), from_float.bytes());
  CHECK(std::equal(from_float.data(), from_float.data() + from_float.bytes() / 8, from_bytes.data()));

  // the fused epilogue: ReLU, then scale and shift per channel, then a residual, each rounded on its own (volatile
  // keeps this reference from being contracted into multiply-adds whatever this file is compiled with)
  std::vector<float> scale(c.out_channels), shift(c.out_channels), residual(expected.size());
  for (float& v : scale) v = normal(random);
  for (float& v : shift) v = normal(random);
  for (float& v : residual) v = normal(random);
  const size_t plane = size_t(out_h) * out_w;
  std::vector<float> fused_expected(expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    const size_t channel = (i / plane) % size_t(c.out_channels);
    volatile float v = std::max(expected[i], 0.0f);
    v = v * scale[channel];
    v = v + shift[channel];
    v = v + residual[i];
    fused_expected[i] = v;
  }
  bc::Epilogue epilogue;
  epilogue.relu = true;
  epilogue.scale = scale.data();
  epilogue.shift = shift.data();
  epilogue.residual = residual.data();

  for (bc::Isa isa : runnable_paths()) {
    for (bool fused : {false, true}) {
      std::vector<float> y(expected.size(), -12345.0f);
      bc::binary_conv2d(from_bytes, x.data(), c.batch, c.height, c.width, y.data(), isa,
                        fused ? epilogue : bc::Epilogue());
      const std::vector<float>& want = fused ? fused_expected : expected;
      size_t wrong = 0;
      for (size_t i = 0; i < y.size(); ++i) wrong += std::memcmp(&y[i], &want[i], sizeof(float)) != 0;
      if (wrong != 0)
        check::report(__FILE__, __LINE__,
                      std::string(bc::isa_name(isa)) + (fused ? " with the epilogue" : "") + ": " +
                          std::to_string(wrong) + " of " + std::to_string(y.size()) + " outputs differ, case C=" +
                          std::to_string(c.in_channels) + " OC=" + std::to_string(c.out_channels) +
                          " k=" + std::to_string(c.kernel) + " s=" + std::to_string(c.stride) +
                          (dense ? " (dense)" : ""));
    }
  }
}

}  // namespace

TEST_CASE("every runnable path equals the float convolution of s(x), exactly") {
  std::mt19937 random(26);
  const Case cases[] = {
      {16, 8, 3, 1, 1, 1, 1, 1, 2, 7, 5},       {24, 13, 3, 2, 1, 1, 1, 1, 1, 9, 11},
      {32, 16, 3, 1, 1, 1, 1, 1, 3, 6, 6},      {70, 9, 3, 2, 1, 1, 1, 1, 2, 8, 7},
      // eight-pixel packing with a second 32-channel half in the last word (36 and 16 channels) and a tail
      {100, 10, 3, 1, 1, 1, 1, 1, 1, 3, 17},    {48, 8, 3, 1, 1, 1, 1, 1, 2, 4, 10},
      {64, 64, 3, 1, 1, 1, 1, 1, 1, 8, 8},      {128, 24, 3, 2, 1, 1, 1, 1, 1, 5, 9},
      {200, 17, 3, 1, 1, 1, 1, 1, 1, 4, 4},     {3, 5, 1, 1, 0, 0, 0, 0, 2, 3, 4},
      {40, 7, 5, 1, 2, 1, 0, 2, 1, 6, 7},       {16, 8, 3, 1, 0, 0, 0, 0, 1, 3, 3},
      {1000, 8, 3, 1, 1, 1, 1, 1, 1, 3, 3},  // > 31 words per output: the AVX2 and NEON byte counters flush
      // row-packed (a kernel row fits one word): 60 bits on a 5x5 kernel with uneven pads, 63 bits at stride 2,
      // one channel, and 64 bits exactly
      {12, 9, 5, 1, 2, 1, 0, 2, 2, 6, 7},       {21, 10, 3, 2, 1, 1, 1, 1, 2, 9, 7},
      {1, 4, 3, 1, 1, 1, 1, 1, 1, 5, 5},        {32, 11, 2, 1, 1, 0, 0, 1, 1, 6, 5},
  };
  for (const Case& c : cases)
    for (bool dense : {false, true}) check_case(c, dense, random);
}

TEST_CASE("the epilogue reads an option-A shortcut in place: every other pixel, new channels zero") {
  // a stride-2 block's first layer: 16 -> 32 channels, 8x6 -> 4x3; the shortcut is the block's input, its 16 channels
  // added to output channels 8..23 at every other pixel, 0 added to the others
  bc::ConvGeometry g;
  g.in_channels = 16;
  g.out_channels = 32;
  g.stride_h = g.stride_w = 2;
  std::mt19937 random(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int batch = 2, height = 8, width = 6, out_h = 4, out_w = 3, offset = 8;
  std::vector<float> w(size_t(g.out_channels) * g.in_channels * 9), scale(g.out_channels);
  for (float& v : w) v = normal(random);
  for (float& v : scale) v = -std::fabs(normal(random));  // negative: relu(v) * scale is -0 wherever v <= 0
  const std::vector<float> x = activations(size_t(batch) * g.in_channels * height * width, random);
  const bc::PackedWeights packed = bc::PackedWeights::from_float(g, w.data());
  const std::vector<float> conv = reference(g, x, w, batch, height, width, out_h, out_w);
  std::vector<float> expected(conv.size());
  size_t negative_zeros = 0;
  for (int n = 0; n < batch; ++n)
    for (int c = 0; c < g.out_channels; ++c)
      for (int oy = 0; oy < out_h; ++oy)
        for (int ox = 0; ox < out_w; ++ox) {
          const size_t i = ((size_t(n) * g.out_channels + c) * out_h + oy) * out_w + ox;
          const int source = c - offset;
          const float r = source >= 0 && source < g.in_channels
                              ? x[((size_t(n) * g.in_channels + source) * height + oy * 2) * width + ox * 2]
                              : 0.0f;
          volatile float v = std::max(conv[i], 0.0f);
          v = v * scale[c];
          negative_zeros += v == 0.0f && std::signbit(v);
          v = v + r;
          expected[i] = v;
        }
  CHECK(negative_zeros > 0);  // so that a kernel skipping the zero channels' "+ 0" would be caught
  bc::Epilogue epilogue;
  epilogue.relu = true;
  epilogue.scale = scale.data();
  epilogue.residual = x.data();
  epilogue.residual_channels = g.in_channels;
  epilogue.residual_offset = offset;
  epilogue.residual_stride = 2;
  for (bc::Isa isa : runnable_paths()) {
    std::vector<float> y(expected.size());
    bc::binary_conv2d(packed, x.data(), batch, height, width, y.data(), isa, epilogue);
    CHECK(std::memcmp(y.data(), expected.data(), y.size() * sizeof(float)) == 0);
  }
  bool refused = false;
  epilogue.residual_offset = 17;  // 16 channels from 17 pass the 32 outputs
  try {
    std::vector<float> y(expected.size());
    bc::binary_conv2d(packed, x.data(), batch, height, width, y.data(), epilogue);
  } catch (const std::invalid_argument&) {
    refused = true;
  }
  CHECK(refused);
}

TEST_CASE("a view copies only unaligned bytes, refuses a wrong size, and ignores bits past the channels") {
  bc::ConvGeometry g;
  g.in_channels = 70;  // two words: bits 6..63 of the second word are past the channels
  g.out_channels = 13;  // two blocks: lanes 5..7 of the second block are past the channels
  std::mt19937 random(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> w(size_t(g.out_channels) * g.in_channels * 9);
  for (float& v : w) v = normal(random);
  const std::vector<uint8_t> bytes = layout_bytes(g, w);
  CHECK_EQ(bytes.size(), bc::PackedWeights::layout_bytes(g));
  CHECK_EQ(bytes.size(), size_t(2 * 9 * 2 * 8 * 8));
  std::vector<uint64_t> storage(bytes.size() / 8 + 1);
  uint8_t* unaligned = reinterpret_cast<uint8_t*>(storage.data()) + 1;
  std::memcpy(unaligned, bytes.data(), bytes.size());
  const bc::PackedWeights copied = bc::PackedWeights::view(g, unaligned, bytes.size());
  CHECK_EQ(copied.owned_bytes(), bytes.size());
  CHECK(static_cast<const void*>(copied.data()) != static_cast<const void*>(unaligned));
  const bc::PackedWeights from_float = bc::PackedWeights::from_float(g, w.data());
  CHECK(std::equal(from_float.data(), from_float.data() + from_float.bytes() / 8, copied.data()));
  for (size_t wrong : {bytes.size() - 1, bytes.size() + 8, size_t(0)}) {
    bool refused = false;
    try {
      bc::PackedWeights::view(g, storage.data(), wrong);
    } catch (const std::invalid_argument&) {
      refused = true;
    }
    CHECK(refused);
  }
  // every padding bit set: unused input channels of every word and the words of unused lanes
  std::vector<uint64_t> padded(bytes.size() / 8);
  std::memcpy(padded.data(), bytes.data(), bytes.size());
  for (size_t i = 0; i < padded.size(); ++i) {
    const size_t lane = i % 8, word = (i / 8) % 2, block = i / (8 * 2 * 9);
    if (word == 1) padded[i] |= ~uint64_t(0) << (70 - 64);
    if (block == 1 && lane >= 13 - 8) padded[i] = ~uint64_t(0);
  }
  const bc::PackedWeights dirty = bc::PackedWeights::view(g, padded.data(), bytes.size());
  CHECK_EQ(dirty.owned_bytes(), size_t(0));
  CHECK(!dirty.padding_clear());
  CHECK(from_float.padding_clear());
  CHECK(copied.padding_clear());
  const int height = 5, width = 4;
  std::vector<float> x = activations(size_t(2) * g.in_channels * height * width, random);
  for (bool dense : {false, true}) {
    if (dense)  // every activation +-1: where the weights are clean, the AVX2 path leaves out the nonzero mask
      for (float& v : x) v = v < 0.0f ? -1.0f : 1.0f;
    for (bc::Isa isa : runnable_paths()) {
      std::vector<float> want(size_t(2) * g.out_channels * height * width), got(want.size());
      bc::binary_conv2d(from_float, x.data(), 2, height, width, want.data(), isa);
      bc::binary_conv2d(dirty, x.data(), 2, height, width, got.data(), isa);
      CHECK(want == got);
    }
  }
}

TEST_CASE("one zero among +-1 activations is counted as 0: the mask stays where an image is not dense") {
  bc::ConvGeometry g;
  g.in_channels = 64;
  g.out_channels = 16;
  std::mt19937 random(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> w(size_t(g.out_channels) * g.in_channels * 9);
  for (float& v : w) v = normal(random);
  const int batch = 2, height = 6, width = 9;
  std::vector<float> x(size_t(batch) * g.in_channels * height * width);
  for (float& v : x) v = normal(random) < 0.0f ? -1.0f : 1.0f;
  // the second image only: the first stays dense, so each image decides on its own
  x[size_t(g.in_channels * height * width) + 3 * height * width + 2 * width + 4] = 0.0f;
  const bc::PackedWeights packed = bc::PackedWeights::from_float(g, w.data());
  const std::vector<float> expected = reference(g, x, w, batch, height, width, height, width);
  for (bc::Isa isa : runnable_paths()) {
    std::vector<float> y(expected.size());
    bc::binary_conv2d(packed, x.data(), batch, height, width, y.data(), isa);
    CHECK(y == expected);
  }
}

TEST_CASE("layers whose kernel row fits one word are row-packed, ignoring bits past the channels") {
  std::mt19937 random(9);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  struct Layer {
    int in_channels, kernel_w;
    bool row_packed;
  };
  for (const Layer& layer : {Layer{16, 3, true}, Layer{21, 3, true}, Layer{32, 2, true}, Layer{22, 3, false},
                             Layer{16, 1, false}, Layer{64, 3, false}}) {
    bc::ConvGeometry g;
    g.in_channels = layer.in_channels;
    g.out_channels = 10;
    g.kernel_w = layer.kernel_w;
    g.pad_left = g.pad_right = layer.kernel_w / 2;
    std::vector<float> w(size_t(g.out_channels) * g.in_channels * g.kernel_h * g.kernel_w);
    for (float& v : w) v = normal(random);
    const bc::PackedWeights packed = bc::PackedWeights::from_float(g, w.data());
    CHECK_EQ(packed.row_packed(), layer.row_packed);
    // one word per block, kernel row and lane: a kernel_w-th of the layout's words
    CHECK_EQ(packed.row_bytes(), layer.row_packed ? size_t(2 * 3 * 8 * 8) : size_t(0));
    if (!layer.row_packed) continue;
    // a view of the exported bytes with every bit past in_channels set derives the same rows
    std::vector<uint64_t> dirty(packed.bytes() / 8);
    std::memcpy(dirty.data(), packed.data(), packed.bytes());
    for (uint64_t& word : dirty)
      if (g.in_channels < 64) word |= ~uint64_t(0) << g.in_channels;
    const bc::PackedWeights view = bc::PackedWeights::view(g, dirty.data(), packed.bytes());
    CHECK_EQ(view.owned_bytes(), size_t(0));
    CHECK(std::equal(packed.row_data(), packed.row_data() + packed.row_bytes() / 8, view.row_data()));
    std::vector<float> x = activations(size_t(2) * g.in_channels * 6 * 5, random);
    int out_h = 0, out_w = 0;
    bc::output_size(g, 6, 5, &out_h, &out_w);
    for (bool dense : {false, true}) {
      if (dense)  // every activation +-1: the row words are built from the channels' bits, so no mask is needed
        for (float& v : x) v = v < 0.0f ? -1.0f : 1.0f;
      const std::vector<float> expected = reference(g, x, w, 2, 6, 5, out_h, out_w);
      for (bc::Isa isa : runnable_paths()) {
        std::vector<float> y(expected.size());
        bc::binary_conv2d(view, x.data(), 2, 6, 5, y.data(), isa);
        CHECK(y == expected);
      }
    }
  }
}

TEST_CASE("a value below 2^-100 or NaN counts as 0, every other value as its sign") {
  bc::ConvGeometry g;
  g.in_channels = 4;
  g.out_channels = 1;
  g.kernel_h = g.kernel_w = 1;
  g.pad_top = g.pad_left = g.pad_bottom = g.pad_right = 0;
  const float weights[4] = {1.0f, -1.0f, 1.0f, -1.0f};
  const bc::PackedWeights packed = bc::PackedWeights::from_float(g, weights);
  const float x[4] = {std::ldexp(1.0f, -101), -5.0f, std::nanf(""), std::ldexp(-1.0f, -100)};
  for (bc::Isa isa : runnable_paths()) {
    float y = 0.0f;
    bc::binary_conv2d(packed, x, 1, 1, 1, &y, isa);
    CHECK_EQ(y, 2.0f);  // 0 * 1 + (-1)(-1) + 0 * 1 + (-1)(-1)
  }
  // the same values in rows of 19 pixels (the vector paths pack 8 or 16 pixels at a time, then the rest one by one),
  // each channel's values rotated along the row
  const float values[8] = {std::ldexp(1.0f, -101), -5.0f, std::nanf(""), std::ldexp(-1.0f, -100),
                           std::ldexp(1.0f, -100), 0.0f, -0.0f, -std::ldexp(1.0f, -101)};
  const float signs[8] = {0.0f, -1.0f, 0.0f, -1.0f, 1.0f, 0.0f, 0.0f, 0.0f};
  const int width = 19;
  std::vector<float> row(size_t(4) * width);
  std::vector<float> expected(width, 0.0f);
  for (int c = 0; c < 4; ++c)
    for (int i = 0; i < width; ++i) {
      row[size_t(c) * width + i] = values[(i + 3 * c) % 8];
      expected[i] += signs[(i + 3 * c) % 8] * weights[c];
    }
  for (bc::Isa isa : runnable_paths()) {
    std::vector<float> y(width);
    bc::binary_conv2d(packed, row.data(), 1, 1, width, y.data(), isa);
    CHECK(y == expected);
  }
}

TEST_CASE("the selected path follows EDGESDK_BINARY_ISA, and a bad one is refused") {
  unsetenv("EDGESDK_BINARY_ISA");
  CHECK_EQ(bc::selected_isa(), bc::best_isa());
  for (bc::Isa isa : runnable_paths()) {
    setenv("EDGESDK_BINARY_ISA", bc::isa_name(isa), 1);
    CHECK_EQ(std::string(bc::binary_isa_name()), std::string(bc::isa_name(isa)));
  }
  std::printf("paths runnable here:");
  for (bc::Isa isa : runnable_paths()) std::printf(" %s", bc::isa_name(isa));
  std::printf("; best: %s\n", bc::isa_name(bc::best_isa()));
  setenv("EDGESDK_BINARY_ISA", "sse9", 1);
  bool refused = false;
  try {
    bc::selected_isa();
  } catch (const std::invalid_argument&) {
    refused = true;
  }
  CHECK(refused);
  for (bc::Isa isa : {bc::Isa::scalar, bc::Isa::avx2, bc::Isa::avx512, bc::Isa::neon}) {
    if (bc::isa_available(isa)) continue;
    setenv("EDGESDK_BINARY_ISA", bc::isa_name(isa), 1);
    bool unavailable_refused = false;
    try {
      bc::selected_isa();
    } catch (const std::invalid_argument&) {
      unavailable_refused = true;
    }
    CHECK(unavailable_refused);
  }
  unsetenv("EDGESDK_BINARY_ISA");
}

TEST_CASE("bad geometry and sizes are refused with a reason") {
  bc::ConvGeometry g;
  g.in_channels = 8;
  g.out_channels = 8;
  CHECK(bc::validate(g).empty());
  bc::ConvGeometry bad = g;
  bad.in_channels = 0;
  CHECK(!bc::validate(bad).empty());
  bad = g;
  bad.stride_h = 0;
  CHECK(!bc::validate(bad).empty());
  bad = g;
  bad.pad_left = 3;
  CHECK(!bc::validate(bad).empty());
  bad = g;
  bad.pad_top = -1;
  CHECK(!bc::validate(bad).empty());
  bad = g;
  bad.in_channels = 1 << 16;
  bad.kernel_h = bad.kernel_w = 31;
  CHECK(!bc::validate(bad).empty());
  int out_h = 0, out_w = 0;
  bc::ConvGeometry unpadded = g;
  unpadded.pad_top = unpadded.pad_left = unpadded.pad_bottom = unpadded.pad_right = 0;
  bool refused = false;
  try {
    bc::output_size(unpadded, 2, 2, &out_h, &out_w);
  } catch (const std::invalid_argument&) {
    refused = true;
  }
  CHECK(refused);
  bool constructor_refused = false;
  try {
    bc::PackedWeights::from_float(bad, nullptr);
  } catch (const std::invalid_argument&) {
    constructor_refused = true;
  }
  CHECK(constructor_refused);
}

TEST_MAIN()
