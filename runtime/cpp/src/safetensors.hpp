// The .safetensors format (learned tokens, ZO checkpoints): an 8-byte little-endian header length N, N bytes of
// JSON header ({"__metadata__": {str: str}, name: {"dtype", "shape", "data_offsets": [begin, end]}}), then the
// tensors' bytes. Files interoperate with Python's safetensors.numpy save_file/load_file in both directions.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "edgesdk/status.hpp"

namespace edgesdk {

struct SafeTensor {
  std::string dtype;            // "F32", "F64", "I64", ... (safetensors' names)
  std::vector<int64_t> shape;   // {} is a scalar (one element)
  std::vector<uint8_t> bytes;   // little-endian, C order, exactly elements(shape) * dtype_size(dtype) bytes
};

struct SafeTensorsFile {
  std::map<std::string, SafeTensor> tensors;
  std::map<std::string, std::string> metadata;  // the header's "__metadata__" (string values only)
};

// Reads and validates a whole file: header length, JSON, known dtypes, offsets inside the data and matching
// dtype x shape. Any problem throws Failure(kEmbeddingInvalid, "<path> is not a learned-token .safetensors file
// (<why>)").
SafeTensorsFile read_safetensors(const std::string& path);
// The same with another status and description, e.g. (kCheckpointInvalid, "ZO checkpoint"):
// "<path> is not a ZO checkpoint (<why>)".
SafeTensorsFile read_safetensors(const std::string& path, Status status, const std::string& kind);

// Writes atomically (a temp file in the same folder, fsync, rename): a crash leaves the old file or the new one.
// Tensors are laid out as Python's safetensors does (larger dtypes first, then by name), so that every tensor is
// aligned to its element size and equal content gives equal bytes; the header is padded with spaces to 8 bytes.
// Throws Failure(kInvalidArgument) for a malformed tensor, Failure(kIoError) when the file cannot be written.
void write_safetensors(const std::string& path, const SafeTensorsFile& file);

// Bytes per element of a safetensors dtype name; 0 for a name this runtime does not know.
size_t safetensors_dtype_size(const std::string& dtype);
// Number of elements of a shape (1 for a scalar).
int64_t safetensors_elements(const std::vector<int64_t>& shape);

// Conversions between tensors and typed vectors (this runtime runs on little-endian CPUs only: ARM and x86).
SafeTensor f64_tensor(const std::vector<double>& values, std::vector<int64_t> shape);
SafeTensor f32_tensor(const std::vector<float>& values, std::vector<int64_t> shape);
SafeTensor i64_tensor(const std::vector<int64_t>& values, std::vector<int64_t> shape);
// These throw Failure(kInvalidArgument, "expected dtype F64, got F32") on another dtype.
std::vector<double> f64_values(const SafeTensor& tensor);
std::vector<float> f32_values(const SafeTensor& tensor);
std::vector<int64_t> i64_values(const SafeTensor& tensor);

}  // namespace edgesdk
