// Whole-file reads and atomic writes, shared by the readers and writers of npy, PNG and model files.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace edgesdk {

// The file's bytes. Throws Failure(kIoError) naming the path and the system's reason.
std::vector<uint8_t> read_file_bytes(const std::string& path);

// Writes to a temporary file in the same folder, then renames it over `path`: a crash or a full disk never
// leaves a half-written file under the final name. Throws Failure(kIoError).
void write_file_atomic(const std::string& path, const void* data, size_t size);

}  // namespace edgesdk
