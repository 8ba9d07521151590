// Whole-file reads and atomic writes, shared by the readers and writers of npy, PNG and model files.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "limits.hpp"

namespace edgesdk {

// The file's bytes. Throws Failure(kIoError) naming the path and the system's reason, and Failure(kInvalidArgument)
// for a FIFO, device or folder, or a file above `max_bytes` (judged from its size before a byte is read).
std::vector<uint8_t> read_file_bytes(const std::string& path, int64_t max_bytes = limits::kMaxReadBytes);

// Writes to a temporary file in the same folder, then renames it over `path`: a crash or a full disk never
// leaves a half-written file under the final name. Throws Failure(kIoError).
void write_file_atomic(const std::string& path, const void* data, size_t size);

}  // namespace edgesdk
