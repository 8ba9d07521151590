// The .pte pre-check (src/pte.cpp): a program's identifier and extended header judged before ExecuTorch sees it.
// Synthetic heads only (no exported bundle): what matters is which sizes pass and which are refused.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "check.hpp"
#include "errors.hpp"
#include "pte.hpp"

using edgesdk::Status;

namespace {

void put_le(std::vector<uint8_t>& bytes, size_t at, uint64_t value, size_t count) {
  for (size_t i = 0; i < count; ++i) bytes[at + i] = uint8_t(value >> (8 * i));
}

// A 64-byte head: root offset, "ET12", and (when `extended`) an "eh00" header recording the given sizes.
std::vector<uint8_t> head(bool extended, uint64_t program_size = 0, uint64_t segment_base = 0,
                          uint64_t segment_size = 0) {
  std::vector<uint8_t> bytes(64, 0);
  put_le(bytes, 0, 64, 4);
  std::memcpy(bytes.data() + 4, "ET12", 4);
  if (extended) {
    std::memcpy(bytes.data() + 8, "eh00", 4);
    put_le(bytes, 12, 32, 4);  // header length: with the segment data size
    put_le(bytes, 16, program_size, 8);
    put_le(bytes, 24, segment_base, 8);
    put_le(bytes, 32, segment_size, 8);
  }
  return bytes;
}

void check_head(const std::vector<uint8_t>& bytes, uint64_t file_size) {
  edgesdk::check_program_head(bytes.data(), bytes.size(), file_size, "'x.pte'");
}

}  // namespace

TEST_CASE("a program whose header fits its file passes") {
  check_head(head(false), 64);
  check_head(head(true, 1000, 1024, 4096), 1024 + 4096);
  check_head(head(true, 1000, 0, 0), 1000);  // no segments
}

TEST_CASE("no ET12 identifier, or too few bytes for one, is refused") {
  std::vector<uint8_t> bytes = head(false);
  bytes[5] = 'X';
  CHECK_FAILS(check_head(bytes, 64), Status::kBundleCorrupt, "no ET12 identifier");
  CHECK_FAILS(edgesdk::check_program_head(bytes.data(), 0, 0, "'x.pte'"), Status::kBundleCorrupt, "0 bytes");
  CHECK_FAILS(edgesdk::check_program_head(head(false).data(), 7, 7, "'x.pte'"), Status::kBundleCorrupt, "ET12");
}

TEST_CASE("a truncated file is refused by the sizes its extended header records") {
  CHECK_FAILS(check_head(head(true, 1000, 1024, 4096), 3000), Status::kBundleCorrupt, "truncated");
  CHECK_FAILS(check_head(head(true, 5000, 0, 0), 4999), Status::kBundleCorrupt, "truncated");
  CHECK_FAILS(edgesdk::check_program_head(head(true, 10, 0, 0).data(), 20, 20, "'x.pte'"), Status::kBundleCorrupt,
              "truncated header");
}

TEST_CASE("sizes near 2^64 do not wrap around into a pass") {
  CHECK_FAILS(check_head(head(true, 100, 128, UINT64_MAX - 64), 4096), Status::kBundleCorrupt, "truncated");
  CHECK_FAILS(check_head(head(true, 100, UINT64_MAX, 2), 4096), Status::kBundleCorrupt, "truncated");
  CHECK_FAILS(check_head(head(true, 2000, 1024, 10), 4096), Status::kBundleCorrupt, "truncated");  // overlaps
}

TEST_MAIN()
