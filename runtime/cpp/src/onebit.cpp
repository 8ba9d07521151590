#include "onebit.hpp"

#include <cstring>

#include "errors.hpp"
#include "files.hpp"
#include "json.hpp"
#include "sha256.hpp"

namespace edgesdk {
namespace {

const char kMagic[] = "EDGESDK1BIT";  // plus its terminating NUL: 12 bytes, as b"EDGESDK1BIT\0"
constexpr size_t kMagicSize = 12;
constexpr uint32_t kPlusOne = 0x3F800000, kMinusOne = 0xBF800000;
const char kSuffix[] = ".1bit";

struct Header {
  uint64_t original_size = 0;
  std::string original_sha256;
  std::vector<std::pair<uint64_t, uint64_t>> runs;  // (byte offset in the original, words)
  uint64_t skeleton_size = 0, bits_size = 0, binary_words = 0;
};

uint64_t count_field(const json::Value& header, const char* key) {
  int64_t value = header.at(key).as_int();
  if (value < 0) fail(Status::kBundleCorrupt, std::string("negative ") + key);
  return static_cast<uint64_t>(value);
}

Header parse_header(const std::string& text, const std::string& what) {
  json::Value root = json::parse(text, what + " header");
  Header header;
  header.original_size = count_field(root, "original_size");
  header.original_sha256 = root.at("original_sha256").as_string();
  header.skeleton_size = count_field(root, "skeleton_size");
  header.bits_size = count_field(root, "bits_size");
  header.binary_words = count_field(root, "binary_words");
  for (const json::Value& run : root.at("runs").as_array()) {
    const json::Value::Array& pair = run.as_array();
    if (pair.size() != 2 || pair[0].as_int() < 0 || pair[1].as_int() < 0) {
      fail(Status::kBundleCorrupt, "a run is not [offset, words]");
    }
    header.runs.emplace_back(static_cast<uint64_t>(pair[0].as_int()), static_cast<uint64_t>(pair[1].as_int()));
  }
  return header;
}

// The runs must tile the original in order, the skeleton must fill exactly the gaps and the bits must cover
// every run word: checked before writing, so a hostile header cannot make the rebuild read or write out of range.
void check_consistent(const Header& h, size_t body_available) {
  uint64_t cursor = 0, words = 0;
  for (const auto& [offset, count] : h.runs) {
    if (offset < cursor || offset > h.original_size || count > (h.original_size - offset) / 4) {
      fail(Status::kBundleCorrupt, "runs overlap or leave the original file");
    }
    cursor = offset + 4 * count;
    words += count;
  }
  if (words != h.binary_words || (h.binary_words + 7) / 8 > h.bits_size) {
    fail(Status::kBundleCorrupt, "binary_words does not match the runs and bits");
  }
  if (h.original_size - 4 * words != h.skeleton_size) {
    fail(Status::kBundleCorrupt, "skeleton_size does not match the runs");
  }
  if (h.skeleton_size > body_available || h.bits_size > body_available - h.skeleton_size) {
    fail(Status::kBundleCorrupt, "the container is truncated");
  }
}

}  // namespace

bool is_1bit_path(const std::string& path) {
  size_t n = sizeof kSuffix - 1;
  return path.size() >= n && path.compare(path.size() - n, n, kSuffix) == 0;
}

std::vector<uint8_t> unpack_1bit(const std::vector<uint8_t>& blob, const std::string& what) {
  if (blob.size() < kMagicSize + 4 || std::memcmp(blob.data(), kMagic, kMagicSize) != 0) {
    fail(Status::kBundleCorrupt, what + " is not a 1-bit model container (bad magic); re-export the bundle");
  }
  uint32_t header_length = 0;
  std::memcpy(&header_length, &blob[kMagicSize], 4);  // little-endian, as the host
  size_t body = kMagicSize + 4 + header_length;
  if (header_length > blob.size() - kMagicSize - 4) {
    fail(Status::kBundleCorrupt, what + ": 1-bit model container is truncated; re-export the bundle");
  }
  Header header;
  try {
    header = parse_header(std::string(reinterpret_cast<const char*>(&blob[kMagicSize + 4]), header_length), what);
    check_consistent(header, blob.size() - body);
  } catch (const Failure& e) {
    fail(Status::kBundleCorrupt, what + ": 1-bit model container header is malformed (" + e.what() +
                                     "); re-export the bundle");
  }

  std::vector<uint8_t> out(header.original_size);
  const uint8_t* skeleton = blob.data() + body;
  const uint8_t* bits = skeleton + header.skeleton_size;
  uint64_t in = 0, at = 0, used = 0;
  for (const auto& [offset, words] : header.runs) {
    std::memcpy(out.data() + at, skeleton + in, offset - at);  // the bytes before this run, as stored
    in += offset - at;
    for (uint64_t w = 0; w < words; ++w, ++used) {
      bool negative = (bits[used / 8] >> (7 - used % 8)) & 1;  // numpy packbits order: first bit is the MSB
      uint32_t word = negative ? kMinusOne : kPlusOne;
      std::memcpy(out.data() + offset + 4 * w, &word, 4);  // little-endian, as the host
    }
    at = offset + 4 * words;
  }
  std::memcpy(out.data() + at, skeleton + in, header.original_size - at);
  if (sha256_hex(out.data(), out.size()) != header.original_sha256) {
    fail(Status::kBundleCorrupt, what + ": 1-bit model container is corrupt (rebuilt bytes do not match their "
                                        "checksum); re-export the bundle");
  }
  return out;
}

std::vector<uint8_t> read_model_bytes(const std::string& path) {
  std::vector<uint8_t> bytes = read_file_bytes(path);
  if (!is_1bit_path(path)) return bytes;
  return unpack_1bit(bytes, path);
}

}  // namespace edgesdk
