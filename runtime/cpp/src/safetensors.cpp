// .safetensors reading and writing; see safetensors.hpp.
#include "safetensors.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <utility>

#include <unistd.h>  // fsync: POSIX, present on Android and iOS

#include "errors.hpp"
#include "files.hpp"
#include "json.hpp"

namespace edgesdk {
namespace {

// The largest header accepted, as the Rust implementation (a bigger one is not a tensor file but an attack).
const uint64_t kMaxHeaderBytes = 100u * 1024u * 1024u;

struct DtypeInfo {
  const char* name;
  size_t size;
  int order;  // Python's safetensors writes tensors of a higher order first (its Dtype enum, reversed)
};

const DtypeInfo kDtypes[] = {
    {"BOOL", 1, 0}, {"U8", 1, 1},   {"I8", 1, 2},   {"F8_E5M2", 1, 3}, {"F8_E4M3", 1, 4},
    {"I16", 2, 5},  {"U16", 2, 6},  {"F16", 2, 7},  {"BF16", 2, 8},    {"I32", 4, 9},
    {"U32", 4, 10}, {"F32", 4, 11}, {"F64", 8, 12}, {"I64", 8, 13},    {"U64", 8, 14},
};

const DtypeInfo* find_dtype(const std::string& name) {
  for (const DtypeInfo& info : kDtypes) {
    if (name == info.name) return &info;
  }
  return nullptr;
}

// Element count, or -1 for a negative dimension or a product beyond 2^62 (no real file is that large).
int64_t checked_elements(const std::vector<int64_t>& shape) {
  int64_t count = 1;
  for (int64_t dim : shape) {
    if (dim < 0) return -1;
    if (dim != 0 && count > (int64_t{1} << 62) / dim) return -1;
    count *= dim;
  }
  return count;
}

std::string describe_shape(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

// Parses the header and slices the data; returns "" on success or why the file is not valid.
std::string parse_file(const std::vector<uint8_t>& content, SafeTensorsFile& out) {
  if (content.size() < 8) return "shorter than the 8-byte header length";
  uint64_t header_bytes = 0;
  for (int i = 7; i >= 0; --i) header_bytes = (header_bytes << 8) | content[static_cast<size_t>(i)];
  if (header_bytes > kMaxHeaderBytes || header_bytes > content.size() - 8) {
    return "header length " + std::to_string(header_bytes) + " exceeds the file size " +
           std::to_string(content.size());
  }
  const size_t data_start = 8 + static_cast<size_t>(header_bytes);
  const uint64_t data_bytes = content.size() - data_start;
  std::string header_text(reinterpret_cast<const char*>(content.data()) + 8, static_cast<size_t>(header_bytes));

  json::Value header;
  try {
    header = json::parse(header_text, "header");
  } catch (const Failure& e) {
    return std::string("header is not JSON: ") + e.what();
  }
  if (!header.is_object()) return "header is not a JSON object";

  for (const auto& [name, entry] : header.as_object()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) return "__metadata__ is not an object";
      for (const auto& [key, value] : entry.as_object()) {
        if (!value.is_string()) return "metadata value of '" + key + "' is not a string";
        out.metadata[key] = value.as_string();
      }
      continue;
    }
    const std::string where = "tensor '" + name + "'";
    if (out.tensors.count(name)) return where + " appears twice";
    const json::Value* dtype = entry.find("dtype");
    const json::Value* shape = entry.find("shape");
    const json::Value* offsets = entry.find("data_offsets");
    if (!entry.is_object() || dtype == nullptr || shape == nullptr || offsets == nullptr || !dtype->is_string() ||
        !shape->is_array() || !offsets->is_array() || offsets->size() != 2) {
      return where + " needs dtype, shape and data_offsets [begin, end]";
    }
    const DtypeInfo* info = find_dtype(dtype->as_string());
    if (info == nullptr) return where + " has unknown dtype " + dtype->as_string();
    SafeTensor tensor;
    tensor.dtype = info->name;
    int64_t begin = 0, end = 0;
    try {
      for (const json::Value& dim : shape->as_array()) tensor.shape.push_back(dim.as_int());
      begin = offsets->as_array()[0].as_int();
      end = offsets->as_array()[1].as_int();
    } catch (const Failure&) {
      return where + " has a non-integer shape or offset";
    }
    const int64_t elements = checked_elements(tensor.shape);
    if (elements < 0) return where + " has an invalid shape " + describe_shape(tensor.shape);
    if (begin < 0 || end < begin || static_cast<uint64_t>(end) > data_bytes) {
      return where + " has data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
             "] outside the " + std::to_string(data_bytes) + " data bytes";
    }
    if (static_cast<uint64_t>(end - begin) != static_cast<uint64_t>(elements) * info->size) {
      return where + " has " + std::to_string(end - begin) + " bytes, but " + tensor.dtype + " " +
             describe_shape(tensor.shape) + " needs " + std::to_string(elements * static_cast<int64_t>(info->size));
    }
    auto first = content.begin() + static_cast<std::ptrdiff_t>(data_start + static_cast<size_t>(begin));
    tensor.bytes.assign(first, first + static_cast<std::ptrdiff_t>(end - begin));
    out.tensors.emplace(name, std::move(tensor));
  }
  return "";
}

template <typename T>
SafeTensor make_tensor(const char* dtype, const std::vector<T>& values, std::vector<int64_t> shape) {
  SafeTensor tensor;
  tensor.dtype = dtype;
  tensor.shape = std::move(shape);
  tensor.bytes.resize(values.size() * sizeof(T));
  if (!values.empty()) std::memcpy(tensor.bytes.data(), values.data(), tensor.bytes.size());
  return tensor;
}

template <typename T>
std::vector<T> tensor_values(const SafeTensor& tensor, const char* dtype) {
  if (tensor.dtype != dtype) {
    fail(Status::kInvalidArgument, std::string("expected dtype ") + dtype + ", got " + tensor.dtype);
  }
  std::vector<T> values(tensor.bytes.size() / sizeof(T));
  if (!values.empty()) std::memcpy(values.data(), tensor.bytes.data(), values.size() * sizeof(T));
  return values;
}

}  // namespace

size_t safetensors_dtype_size(const std::string& dtype) {
  const DtypeInfo* info = find_dtype(dtype);
  return info == nullptr ? 0 : info->size;
}

int64_t safetensors_elements(const std::vector<int64_t>& shape) { return checked_elements(shape); }

SafeTensorsFile read_safetensors(const std::string& path) {
  return read_safetensors(path, Status::kEmbeddingInvalid, "learned-token .safetensors file");
}

SafeTensorsFile read_safetensors(const std::string& path, Status status, const std::string& kind) {
  // bounded, and never a FIFO or device: a learned token or checkpoint is a few MB, a hostile one may be anything
  std::vector<uint8_t> content;
  try {
    content = read_file_bytes(path, limits::kMaxArrayFileBytes);
  } catch (const Failure& e) {
    fail(status, path + " is not a " + kind + " (" + e.what() + ")");
  }
  SafeTensorsFile file;
  std::string problem = parse_file(content, file);
  if (!problem.empty()) fail(status, path + " is not a " + kind + " (" + problem + ")");
  return file;
}

void write_safetensors(const std::string& path, const SafeTensorsFile& file) {
  // Layout order: larger dtypes first, then by name (as Python's safetensors), so each tensor stays aligned.
  std::vector<std::pair<const std::string*, const SafeTensor*>> order;
  for (const auto& [name, tensor] : file.tensors) {
    const DtypeInfo* info = find_dtype(tensor.dtype);
    if (info == nullptr) fail(Status::kInvalidArgument, "tensor '" + name + "' has unknown dtype " + tensor.dtype);
    int64_t elements = checked_elements(tensor.shape);
    if (elements < 0 || tensor.bytes.size() != static_cast<uint64_t>(elements) * info->size) {
      fail(Status::kInvalidArgument, "tensor '" + name + "' holds " + std::to_string(tensor.bytes.size()) +
                                         " bytes, not what " + tensor.dtype + " " + describe_shape(tensor.shape) +
                                         " needs");
    }
    if (name == "__metadata__") fail(Status::kInvalidArgument, "a tensor cannot be named __metadata__");
    order.emplace_back(&name, &tensor);
  }
  std::stable_sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
    return find_dtype(a.second->dtype)->order > find_dtype(b.second->dtype)->order;  // names already sorted
  });

  json::Value header = json::Value::object();
  if (!file.metadata.empty()) {
    json::Value metadata = json::Value::object();
    for (const auto& [key, value] : file.metadata) metadata.set(key, json::Value::string(value));
    header.set("__metadata__", metadata);
  }
  int64_t offset = 0;
  for (const auto& [name, tensor] : order) {
    json::Value::Array shape, offsets;
    for (int64_t dim : tensor->shape) shape.push_back(json::Value::integer(dim));
    offsets.push_back(json::Value::integer(offset));
    offset += static_cast<int64_t>(tensor->bytes.size());
    offsets.push_back(json::Value::integer(offset));
    json::Value entry = json::Value::object();
    entry.set("dtype", json::Value::string(tensor->dtype));
    entry.set("shape", json::Value::array(std::move(shape)));
    entry.set("data_offsets", json::Value::array(std::move(offsets)));
    header.set(*name, entry);
  }
  std::string header_text = json::dump(header);
  header_text.append((8 - header_text.size() % 8) % 8, ' ');  // the data must start 8-byte aligned

  uint8_t length_bytes[8];
  for (int i = 0; i < 8; ++i) length_bytes[i] = static_cast<uint8_t>(static_cast<uint64_t>(header_text.size()) >> (8 * i));

  const std::string temp_path = path + ".tmp";
  std::FILE* out = std::fopen(temp_path.c_str(), "wb");
  if (out == nullptr) fail(Status::kIoError, "cannot write " + path + ": " + std::strerror(errno));
  int error = 0;  // the first failure's errno
  auto check = [&error](bool success) {
    if (!success && error == 0) error = errno != 0 ? errno : EIO;
  };
  check(std::fwrite(length_bytes, 1, 8, out) == 8);
  check(std::fwrite(header_text.data(), 1, header_text.size(), out) == header_text.size());
  for (const auto& item : order) {
    const std::vector<uint8_t>& bytes = item.second->bytes;
    if (error == 0 && !bytes.empty()) check(std::fwrite(bytes.data(), 1, bytes.size(), out) == bytes.size());
  }
  // The bytes must be on disk before the rename makes them the file: otherwise a power cut can leave it empty.
  if (error == 0) check(std::fflush(out) == 0 && fsync(fileno(out)) == 0);
  check(std::fclose(out) == 0);
  if (error == 0) check(std::rename(temp_path.c_str(), path.c_str()) == 0);
  if (error != 0) {
    std::remove(temp_path.c_str());
    fail(Status::kIoError, "cannot write " + path + ": " + std::strerror(error));
  }
}

SafeTensor f64_tensor(const std::vector<double>& values, std::vector<int64_t> shape) {
  return make_tensor("F64", values, std::move(shape));
}
SafeTensor f32_tensor(const std::vector<float>& values, std::vector<int64_t> shape) {
  return make_tensor("F32", values, std::move(shape));
}
SafeTensor i64_tensor(const std::vector<int64_t>& values, std::vector<int64_t> shape) {
  return make_tensor("I64", values, std::move(shape));
}
std::vector<double> f64_values(const SafeTensor& tensor) { return tensor_values<double>(tensor, "F64"); }
std::vector<float> f32_values(const SafeTensor& tensor) { return tensor_values<float>(tensor, "F32"); }
std::vector<int64_t> i64_values(const SafeTensor& tensor) { return tensor_values<int64_t>(tensor, "I64"); }

}  // namespace edgesdk
