// SHA-256 (FIPS 180-4): bundle checksums and the 1-bit container's check. Written here so the runtime needs no
// crypto library; it is used for integrity against corruption, not as a security boundary against a forger.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace edgesdk {

// Incremental hashing, for files read in chunks.
class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t size);
  std::string hex_digest();  // lower-case hex; finishes the hash (call once)

 private:
  void compress(const uint8_t block[64]);
  uint32_t state_[8];
  uint8_t buffer_[64];
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
};

// Lower-case hex SHA-256 of a buffer.
std::string sha256_hex(const void* data, size_t size);

// Lower-case hex SHA-256 of a file, read in 1 MiB chunks (bounded memory for multi-GB weights).
// Throws Failure(kIoError) when the file cannot be read.
std::string sha256_file_hex(const std::string& path);

}  // namespace edgesdk
