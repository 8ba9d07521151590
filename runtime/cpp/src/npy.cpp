#include "npy.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "errors.hpp"
#include "files.hpp"

namespace edgesdk {
namespace {

const char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicSize = 6;

struct DtypeInfo {
  const char* name;
  size_t itemsize;
};
constexpr DtypeInfo kDtypes[] = {{"<f4", 4}, {"<f8", 8}, {"<i8", 8}, {"<i4", 4}, {"|u1", 1}, {"<u4", 4}};

const DtypeInfo* find_dtype(const std::string& name) {
  for (const DtypeInfo& info : kDtypes) {
    if (name == info.name) return &info;
  }
  return nullptr;
}

template <typename T>
T load(const uint8_t* p) {
  T value;
  std::memcpy(&value, p, sizeof value);  // unaligned-safe; little-endian host assumed (every Android/iOS CPU)
  return value;
}

// Element i as an arithmetic type, from any supported dtype.
template <typename Out>
std::vector<Out> convert(const NpyArray& array) {
  const std::string& d = array.dtype;
  size_t itemsize = npy_itemsize(d);
  int64_t n = array.count();
  if (array.bytes.size() != static_cast<size_t>(n) * itemsize) {
    fail(Status::kInvalidArgument, "npy array holds " + std::to_string(array.bytes.size()) + " bytes, expected " +
                                       std::to_string(n * static_cast<int64_t>(itemsize)));
  }
  std::vector<Out> out(static_cast<size_t>(n));
  const uint8_t* p = array.bytes.data();
  for (int64_t i = 0; i < n; ++i, p += itemsize) {
    Out& o = out[static_cast<size_t>(i)];
    if (d == "<f4") o = static_cast<Out>(load<float>(p));
    else if (d == "<f8") o = static_cast<Out>(load<double>(p));
    else if (d == "<i8") o = static_cast<Out>(load<int64_t>(p));
    else if (d == "<i4") o = static_cast<Out>(load<int32_t>(p));
    else if (d == "<u4") o = static_cast<Out>(load<uint32_t>(p));
    else o = static_cast<Out>(*p);
  }
  return out;
}

// ---- the header: a Python dict literal such as {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }

class HeaderReader {
 public:
  HeaderReader(const std::string& text, const std::string& path) : text_(text), path_(path) {}

  void read(NpyArray& array, bool& fortran_order) {
    bool have_descr = false, have_order = false, have_shape = false;
    skip_space();
    expect('{');
    while (true) {
      skip_space();
      if (peek() == '}') break;
      std::string key = quoted();
      skip_space();
      expect(':');
      skip_space();
      if (key == "descr") {
        if (peek() != '\'' && peek() != '"') {
          bad("dtype " + rest() + " is a structured or object dtype; the C++ runtime reads plain numeric arrays");
        }
        array.dtype = quoted();
        have_descr = true;
      } else if (key == "fortran_order") {
        fortran_order = boolean();
        have_order = true;
      } else if (key == "shape") {
        array.shape = tuple();
        have_shape = true;
      } else {
        bad("unexpected header key '" + key + "'");
      }
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      skip_space();
      if (peek() != '}') bad("expected ',' or '}' in the header");
    }
    if (!have_descr || !have_order || !have_shape) bad("the header lacks descr, fortran_order or shape");
  }

 private:
  const std::string& text_;
  const std::string& path_;
  size_t pos_ = 0;

  [[noreturn]] void bad(const std::string& reason) const {
    fail(Status::kBundleCorrupt, path_ + " is not a readable .npy file: " + reason);
  }
  char peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }
  std::string rest() const { return text_.substr(pos_, 40); }
  void skip_space() {
    while (peek() == ' ' || peek() == '\n' || peek() == '\t') ++pos_;
  }
  void expect(char c) {
    if (peek() != c) bad(std::string("expected '") + c + "' in the header");
    ++pos_;
  }
  std::string quoted() {
    char quote = peek();
    if (quote != '\'' && quote != '"') bad("expected a quoted string in the header");
    size_t end = text_.find(quote, pos_ + 1);
    if (end == std::string::npos) bad("unterminated string in the header");
    std::string s = text_.substr(pos_ + 1, end - pos_ - 1);
    pos_ = end + 1;
    return s;
  }
  bool boolean() {
    if (text_.compare(pos_, 4, "True") == 0) {
      pos_ += 4;
      return true;
    }
    if (text_.compare(pos_, 5, "False") == 0) {
      pos_ += 5;
      return false;
    }
    bad("fortran_order is neither True nor False");
  }
  std::vector<int64_t> tuple() {
    std::vector<int64_t> dims;
    expect('(');
    while (true) {
      skip_space();
      if (peek() == ')') {
        ++pos_;
        return dims;
      }
      if (!(peek() >= '0' && peek() <= '9')) bad("shape holds something other than non-negative integers");
      int64_t dim = 0;
      while (peek() >= '0' && peek() <= '9') {
        if (dim > (INT64_MAX - 9) / 10) bad("a dimension is too large");
        dim = dim * 10 + (peek() - '0');
        ++pos_;
      }
      if (peek() == 'L') ++pos_;  // Python 2 longs, in files numpy wrote long ago
      dims.push_back(dim);
      skip_space();
      if (peek() == ',') ++pos_;
      else if (peek() != ')') bad("expected ',' or ')' in the shape");
    }
  }
};

std::string header_text(const NpyArray& array) {
  std::string shape = "(";
  for (size_t i = 0; i < array.shape.size(); ++i) {
    shape += std::to_string(array.shape[i]);
    if (array.shape.size() == 1 || i + 1 < array.shape.size()) shape += ",";
    if (i + 1 < array.shape.size()) shape += " ";
  }
  shape += ")";
  return "{'descr': '" + array.dtype + "', 'fortran_order': False, 'shape': " + shape + ", }";
}

}  // namespace

int64_t NpyArray::count() const {
  int64_t n = 1;
  for (int64_t dim : shape) n *= dim;
  return n;
}

std::vector<float> NpyArray::to_float32() const { return convert<float>(*this); }
std::vector<double> NpyArray::to_float64() const { return convert<double>(*this); }
std::vector<int64_t> NpyArray::to_int64() const { return convert<int64_t>(*this); }

size_t npy_itemsize(const std::string& dtype) {
  const DtypeInfo* info = find_dtype(dtype);
  if (info == nullptr) fail(Status::kInvalidArgument, "npy dtype '" + dtype + "' is not supported");
  return info->itemsize;
}

size_t parse_npy_header(const uint8_t* file, size_t size, const std::string& path, NpyArray& array) {
  auto bad = [&](const std::string& reason) {
    fail(Status::kBundleCorrupt, path + " is not a readable .npy file: " + reason);
  };
  if (size < kMagicSize + 4 || std::memcmp(file, kMagic, kMagicSize) != 0) {
    bad("it does not start with the .npy magic");
  }
  int major = file[6];
  size_t length_size = major == 1 ? 2 : (major == 2 || major == 3) ? 4 : 0;
  if (length_size == 0) bad("format version " + std::to_string(major) + " is unknown");
  size_t prefix = kMagicSize + 2 + length_size;
  if (size < prefix) bad("the header is truncated");
  size_t header_length = length_size == 2 ? load<uint16_t>(&file[8]) : load<uint32_t>(&file[8]);
  if (size - prefix < header_length) bad("the header is truncated");
  std::string header(reinterpret_cast<const char*>(&file[prefix]), header_length);

  bool fortran_order = false;
  HeaderReader(header, path).read(array, fortran_order);
  if (fortran_order) bad("it is in Fortran order; save it with np.ascontiguousarray (C order)");
  if (array.dtype.size() > 1 && array.dtype[0] == '>') {
    bad("dtype '" + array.dtype + "' is big-endian; save it as little-endian ('<')");
  }
  if (array.dtype == "|O" || array.dtype == "O") bad("it holds Python objects, which are never unpickled");
  const DtypeInfo* info = find_dtype(array.dtype);
  if (info == nullptr) {
    bad("dtype '" + array.dtype + "' is not supported (float32/64, int32/64, uint8, uint32 are)");
  }
  size_t count = 1;
  for (int64_t dim : array.shape) {
    if (dim != 0 && count > SIZE_MAX / static_cast<size_t>(dim) / info->itemsize) bad("the shape is too large");
    count *= static_cast<size_t>(dim);
  }
  return prefix + header_length;
}

namespace {

// Reads the header of the .npy bytes file[0, size): fills array.dtype / shape, and where the data starts and its
// length. Throws Failure(kBundleCorrupt) for everything read_npy refuses.
void parse_file(const uint8_t* file, size_t size, const std::string& path, NpyArray& array, size_t& data_start,
                size_t& data_size) {
  data_start = parse_npy_header(file, size, path, array);
  data_size = static_cast<size_t>(array.count()) * npy_itemsize(array.dtype);
  if (size - data_start < data_size) {
    fail(Status::kBundleCorrupt, path + " is not a readable .npy file: data is truncated (" +
                                     std::to_string(size - data_start) + " of " + std::to_string(data_size) +
                                     " bytes)");
  }
}

}  // namespace

NpyArray read_npy(const std::string& path) {
  std::vector<uint8_t> file = read_file_bytes(path);
  NpyArray array;
  size_t data_start = 0, data_size = 0;
  parse_file(file.data(), file.size(), path, array, data_start, data_size);
  array.bytes.assign(file.begin() + static_cast<std::ptrdiff_t>(data_start),
                     file.begin() + static_cast<std::ptrdiff_t>(data_start + data_size));
  return array;
}

std::unique_ptr<MappedFloat32Npy> MappedFloat32Npy::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(Status::kIoError, "cannot open " + path + ": " + std::strerror(errno));
  struct stat info {};
  if (::fstat(fd, &info) != 0) {
    const int error = errno;
    ::close(fd);
    fail(Status::kIoError, "cannot read " + path + ": " + std::strerror(error));
  }
  std::unique_ptr<MappedFloat32Npy> mapped(new MappedFloat32Npy());
  mapped->size_ = static_cast<size_t>(info.st_size);
  if (mapped->size_ == 0) {
    ::close(fd);
    fail(Status::kBundleCorrupt, path + " is not a readable .npy file: it does not start with the .npy magic");
  }
  void* base = ::mmap(nullptr, mapped->size_, PROT_READ, MAP_PRIVATE, fd, 0);
  const int error = errno;
  ::close(fd);  // the mapping keeps the file
  if (base == MAP_FAILED) fail(Status::kIoError, "cannot map " + path + ": " + std::strerror(error));
  mapped->base_ = base;
  NpyArray header;
  size_t data_start = 0, data_size = 0;
  parse_file(static_cast<const uint8_t*>(base), mapped->size_, path, header, data_start, data_size);
  if (header.dtype != "<f4" || data_start % alignof(float) != 0) return nullptr;  // the destructor unmaps
  mapped->data_ = reinterpret_cast<const float*>(static_cast<const uint8_t*>(base) + data_start);
  mapped->shape_ = header.shape;
  return mapped;
}

MappedFloat32Npy::~MappedFloat32Npy() {
  if (base_ != nullptr) ::munmap(base_, size_);
}

void write_npy(const std::string& path, const NpyArray& array) {
  size_t itemsize = npy_itemsize(array.dtype);
  for (int64_t dim : array.shape) {
    if (dim < 0) fail(Status::kInvalidArgument, "npy shape has a negative dimension");
  }
  if (array.bytes.size() != static_cast<size_t>(array.count()) * itemsize) {
    fail(Status::kInvalidArgument, "npy array holds " + std::to_string(array.bytes.size()) + " bytes; shape and " +
                                       array.dtype + " need " + std::to_string(array.count() * int64_t(itemsize)));
  }
  // numpy pads the header with spaces and a newline so the data starts on a 64-byte boundary
  std::string header = header_text(array);
  int major = header.size() + 1 + kMagicSize + 4 > 65535 ? 2 : 1;
  size_t prefix = kMagicSize + 2 + (major == 1 ? 2 : 4);
  size_t total = prefix + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::vector<uint8_t> file(kMagic, kMagic + kMagicSize);
  file.push_back(static_cast<uint8_t>(major));
  file.push_back(0);
  uint32_t length = static_cast<uint32_t>(header.size());
  for (size_t i = 0; i < (major == 1 ? 2u : 4u); ++i) file.push_back(static_cast<uint8_t>(length >> (8 * i)));
  file.insert(file.end(), header.begin(), header.end());
  file.insert(file.end(), array.bytes.begin(), array.bytes.end());
  write_file_atomic(path, file.data(), file.size());
}

}  // namespace edgesdk
