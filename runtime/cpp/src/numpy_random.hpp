// numpy-compatible random numbers: np.random.Generator(np.random.PCG64(seed)), bit for bit.
//
// The Python runtime draws the ZO trainer's samples and directions and the sampler's initial noise from numpy
// (np.random.default_rng(seed) is the same generator). Reproducing those streams exactly lets the C++ runtime turn
// the same seed into the same images and the same learned token, and lets the tests compare against Python.
//
// What is reproduced: SeedSequence(seed).generate_state(4, uint64) -> PCG64 (128-bit LCG, XSL-RR output) seeding,
// next_uint64, the buffered next_uint32, random() (53 bits), integers(low, high) (Lemire's bounded method, 32-bit
// draws for ranges below 2^32), standard_normal (numpy's 256-layer ziggurat) and the full state for checkpoints.
// 128-bit arithmetic is done on 64-bit halves so that the code ports to Kotlin/Swift without a 128-bit type.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace edgesdk {

class NumpyGenerator {
 public:
  // Everything numpy's bit_generator.state holds: {"state": {"state": S, "inc": I}, "has_uint32", "uinteger"},
  // with the 128-bit S and I split into 64-bit halves (S = state_high * 2^64 + state_low).
  struct State {
    uint64_t state_high = 0, state_low = 0;
    uint64_t inc_high = 0, inc_low = 0;
    bool has_uint32 = false;  // a high half of the last 64-bit draw is waiting for next_uint32()
    uint32_t uinteger = 0;    // that half (numpy keeps the stale value after it is used; so do we)
    bool operator==(const State& other) const;
    bool operator!=(const State& other) const { return !(*this == other); }
  };

  // np.random.Generator(np.random.PCG64(seed)) for a non-negative integer seed.
  explicit NumpyGenerator(uint64_t seed);

  uint64_t next_uint64();
  // PCG64 hands out a 64-bit draw as two 32-bit values: the low half now, the high half at the next call.
  uint32_t next_uint32();
  // Uniform in [0, 1) with 53 random bits: Generator.random().
  double random();
  // Generator.integers(low, high): uniform in [low, high) (int64 result, scalar draw). Throws
  // Failure(kInvalidArgument) when high <= low, as numpy raises ValueError.
  int64_t integers(int64_t low, int64_t high);
  int64_t integers(int64_t high) { return integers(0, high); }
  // Generator.standard_normal(): one N(0, 1) double.
  double standard_normal();
  // Generator.standard_normal(n) (any shape: numpy fills in C order, one draw after the other).
  void standard_normal(double* out, size_t n);

  State state() const;
  void set_state(const State& state);

  // The state as compact JSON for checkpoints: {"bit_generator":"PCG64","state_high":"<decimal>",...,
  // "has_uint32":0,"uinteger":N}. 64-bit halves are decimal strings: JSON numbers are not exact beyond 2^53.
  static std::string state_to_json(const State& state);
  // The inverse; throws Failure(kInvalidArgument) naming what is wrong (callers rethrow with their own status).
  static State state_from_json(const std::string& text);

 private:
  void step();  // state = state * multiplier + increment (mod 2^128)

  uint64_t state_high_ = 0, state_low_ = 0;
  uint64_t inc_high_ = 0, inc_low_ = 0;
  bool has_uint32_ = false;
  uint32_t uinteger_ = 0;
};

// numpy's SeedSequence(seed).generate_state(n_words, np.uint32): exposed for tests.
void seed_sequence_words(uint64_t seed, uint32_t* out, size_t n_words);

}  // namespace edgesdk
