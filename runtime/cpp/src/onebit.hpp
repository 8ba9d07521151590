// The 1-bit container (`*.1bit`, runtime/onebit.py): a model file whose runs of +-1.0f words are stored as one
// bit each. Reading one rebuilds the original bytes exactly and checks them against the stored SHA-256.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace edgesdk {

// True when `path` ends in ".1bit" (the container's suffix).
bool is_1bit_path(const std::string& path);

// The original model bytes of a container. `what` names the source in messages. Throws Failure(kBundleCorrupt)
// for a bad magic, an inconsistent header, or rebuilt bytes that do not match their checksum.
std::vector<uint8_t> unpack_1bit(const std::vector<uint8_t>& blob, const std::string& what = "1-bit container");

// What a backend loads: a file's bytes, or for a ".1bit" path the unpacked original bytes.
// Throws Failure(kIoError) when the file cannot be read, Failure(kBundleCorrupt) as unpack_1bit.
std::vector<uint8_t> read_model_bytes(const std::string& path);

}  // namespace edgesdk
