// numpy-compatible random numbers (src/numpy_random.hpp) against numpy's own draws: bit for bit.
// Reference data: tests/zo_reference.py writes $EDGESDK_CPP_FIXTURES/zo/random.json (run here when missing).
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "check.hpp"
#include "zo_fixtures.hpp"
#include "errors.hpp"
#include "json.hpp"
#include "numpy_random.hpp"

using edgesdk::NumpyGenerator;
using edgesdk::Status;
namespace json = edgesdk::json;

namespace {

using zo_reference::load_json;
using zo_reference::zo_fixtures;

uint64_t hex_u64(const json::Value& value) { return std::strtoull(value.as_string().c_str(), nullptr, 16); }

uint64_t bits(double x) {
  uint64_t out;
  std::memcpy(&out, &x, sizeof out);
  return out;
}

uint64_t hex_double_bits(const json::Value& value) { return bits(std::strtod(value.as_string().c_str(), nullptr)); }

uint64_t decimal_u64(const json::Value& value) { return std::strtoull(value.as_string().c_str(), nullptr, 10); }

NumpyGenerator::State numpy_state(const json::Value& value) {
  NumpyGenerator::State s;
  s.state_high = decimal_u64(value.at("state_high"));
  s.state_low = decimal_u64(value.at("state_low"));
  s.inc_high = decimal_u64(value.at("inc_high"));
  s.inc_low = decimal_u64(value.at("inc_low"));
  s.has_uint32 = value.at("has_uint32").as_int() != 0;
  s.uinteger = static_cast<uint32_t>(value.at("uinteger").as_int());
  return s;
}

const json::Value& reference() {
  static const json::Value data = load_json(zo_fixtures() + "/random.json");
  return data;
}

template <typename Body>
void for_each_seed(Body body) {
  for (const auto& [name, entry] : reference().as_object()) body(decimal_u64(entry.at("seed")), entry);
}

}  // namespace

TEST_CASE("seed sequence words and PCG64 seeding equal numpy's") {
  for_each_seed([](uint64_t seed, const json::Value& entry) {
    uint32_t words[8];
    edgesdk::seed_sequence_words(seed, words, 8);
    const auto& expected = entry.at("seed_sequence_words").as_array();
    for (int i = 0; i < 8; ++i) CHECK_EQ(static_cast<int64_t>(words[i]), expected[i].as_int());
    // numpy's bit_generator.state, split into 64-bit halves, is our State
    CHECK(NumpyGenerator(seed).state() == numpy_state(entry.at("initial_state")));
  });
}

TEST_CASE("next_uint64, random and standard_normal: the first 1000 draws") {
  for_each_seed([](uint64_t seed, const json::Value& entry) {
    NumpyGenerator raw(seed), uniform(seed), normal(seed);
    int mismatches = 0;
    for (int i = 0; i < 1000; ++i) {
      mismatches += raw.next_uint64() != hex_u64(entry.at("uint64").as_array()[i]);
      mismatches += bits(uniform.random()) != hex_double_bits(entry.at("random").as_array()[i]);
      mismatches += bits(normal.standard_normal()) != hex_double_bits(entry.at("normal").as_array()[i]);
    }
    CHECK_EQ(mismatches, 0);
  });
}

TEST_CASE("standard_normal over 10^6 draws: tail and wedge branches included") {
  for_each_seed([](uint64_t seed, const json::Value& entry) {
    NumpyGenerator rng(seed);
    std::vector<double> draws(1000000);
    rng.standard_normal(draws.data(), draws.size());
    uint64_t sum = 0;
    int64_t tail = 0;
    for (double x : draws) {
      sum += bits(x);  // wraps mod 2^64, as numpy's uint64 sum
      tail += std::fabs(x) > 3.6541528853610087963519472518;
    }
    CHECK_EQ(sum, hex_u64(entry.at("normal_bits_sum")));
    CHECK_EQ(tail, entry.at("normal_tail_count").as_int());
    CHECK(tail > 100);
    for (const auto& pair : entry.at("normal_tail").as_array()) {
      CHECK_EQ(bits(draws[static_cast<size_t>(pair.as_array()[0].as_int())]), hex_double_bits(pair.as_array()[1]));
    }
    // the wedge draws an extra uniform: the same state afterwards means the same number of 64-bit draws
    CHECK(rng.state() == numpy_state(entry.at("normal_state_after")));
  });
}

TEST_CASE("integers over every range size, interleaved with all other draws") {
  for_each_seed([](uint64_t seed, const json::Value& entry) {
    NumpyGenerator rng(seed);
    const auto& ops = entry.at("ops").as_array();
    const auto& results = entry.at("results").as_array();
    int mismatches = 0;
    for (size_t i = 0; i < ops.size(); ++i) {
      const auto& op = ops[i].as_array();
      const std::string& kind = op[0].as_string();
      uint64_t got = 0;
      if (kind == "uint64") {
        got = rng.next_uint64();
      } else if (kind == "uint32") {
        got = rng.next_uint32();
      } else if (kind == "random") {
        got = bits(rng.random());
      } else if (kind == "normal") {
        got = bits(rng.standard_normal());
      } else {
        const int64_t low = std::strtoll(op[1].as_string().c_str(), nullptr, 10);
        const int64_t high = std::strtoll(op[2].as_string().c_str(), nullptr, 10);
        got = static_cast<uint64_t>(rng.integers(low, high));
      }
      const bool is_double = kind == "random" || kind == "normal";
      if (got != (is_double ? hex_double_bits(results[i]) : hex_u64(results[i]))) {
        if (mismatches < 5) std::fprintf(stderr, "op %zu (%s) differs\n", i, kind.c_str());
        ++mismatches;
      }
    }
    CHECK_EQ(mismatches, 0);
    CHECK(rng.state() == numpy_state(entry.at("state_after_ops")));
  });
}

TEST_CASE("a numpy state with a buffered 32-bit half continues as numpy does") {
  for_each_seed([](uint64_t seed, const json::Value& entry) {
    NumpyGenerator rng(seed + 99);
    const NumpyGenerator::State state = numpy_state(entry.at("buffered_state"));
    CHECK(state.has_uint32);
    rng.set_state(state);
    CHECK(rng.state() == state);
    CHECK_EQ(static_cast<uint64_t>(rng.next_uint32()), hex_u64(entry.at("after_buffered").as_array()[0]));
    CHECK_EQ(rng.next_uint64(), hex_u64(entry.at("after_buffered").as_array()[1]));
  });
}

TEST_CASE("state save and restore round trip, through JSON too") {
  NumpyGenerator rng(2024);
  rng.standard_normal();
  rng.next_uint32();  // leaves a buffered half in the state
  const NumpyGenerator::State saved = rng.state();
  CHECK(saved.has_uint32);
  auto draw_mix = [](NumpyGenerator& g) {
    std::vector<uint64_t> out;
    for (int i = 0; i < 200; ++i) {
      out.push_back(g.next_uint32());
      out.push_back(static_cast<uint64_t>(g.integers(-5, 1000)));
      out.push_back(bits(g.standard_normal()));
      out.push_back(static_cast<uint64_t>(g.integers(int64_t{1} << 40)));
      out.push_back(bits(g.random()));
    }
    return out;
  };
  const std::vector<uint64_t> first = draw_mix(rng);
  const NumpyGenerator::State after = rng.state();
  rng.set_state(saved);
  CHECK(draw_mix(rng) == first);
  CHECK(rng.state() == after);

  const std::string text = NumpyGenerator::state_to_json(saved);
  CHECK(NumpyGenerator::state_from_json(text) == saved);
  NumpyGenerator other(1);
  other.set_state(NumpyGenerator::state_from_json(text));
  CHECK(draw_mix(other) == first);

  CHECK_THROWS_STATUS(NumpyGenerator::state_from_json("not json"), Status::kInvalidArgument);
  CHECK_THROWS_STATUS(NumpyGenerator::state_from_json("{\"bit_generator\":\"MT19937\"}"), Status::kInvalidArgument);
  std::string bad = text;
  bad.replace(bad.find("\"state_low\":\"") + 13, 1, "x");
  CHECK_THROWS_STATUS(NumpyGenerator::state_from_json(bad), Status::kInvalidArgument);
}

TEST_CASE("integers: a one-value range draws nothing, an empty one is refused") {
  NumpyGenerator rng(5);
  const NumpyGenerator::State before = rng.state();
  CHECK_EQ(rng.integers(3, 4), 3);
  CHECK_EQ(rng.integers(1), 0);
  CHECK(rng.state() == before);
  CHECK_THROWS_STATUS(rng.integers(5, 5), Status::kInvalidArgument);
  CHECK_THROWS_STATUS(rng.integers(0), Status::kInvalidArgument);
  for (int i = 0; i < 1000; ++i) {
    const int64_t x = rng.integers(-3, 4);
    CHECK(x >= -3 && x < 4);
  }
}

TEST_MAIN()
