// NumPy .npy files (format versions 1-3): the bundle's array assets and the test fixtures. Parsing the header
// never evaluates anything (numpy's own reader uses ast.literal_eval; this reads the three keys by hand).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace edgesdk {

struct NpyArray {
  std::string dtype;  // "<f4", "<f8", "<i8", "<i4", "|u1" or "<u4" (little-endian, as numpy writes on every phone)
  std::vector<int64_t> shape;  // empty for a 0-d array
  std::vector<uint8_t> bytes;  // C order, count() * itemsize bytes

  int64_t count() const;  // number of elements (1 for a 0-d array)
  // The values converted (as numpy's astype would): every supported dtype converts to each of these.
  std::vector<float> to_float32() const;
  std::vector<double> to_float64() const;
  std::vector<int64_t> to_int64() const;
};

// Bytes per element of a supported dtype; throws Failure(kInvalidArgument) for another.
size_t npy_itemsize(const std::string& dtype);

// Throws Failure(kBundleCorrupt) for a malformed file, Fortran order, big-endian data, or a dtype not listed
// above (object arrays included: nothing is unpickled); Failure(kIoError) when the file cannot be read.
NpyArray read_npy(const std::string& path);

// The header of .npy bytes [file, file + size), whose data may be absent (a bundle checks a 152 MB token table's
// header without reading it): fills array.dtype and array.shape (array.bytes stays empty) and returns the offset
// where the data starts. Throws read_npy's Failure(kBundleCorrupt) for a malformed or unsupported header.
size_t parse_npy_header(const uint8_t* file, size_t size, const std::string& path, NpyArray& array);

// A read-only memory map of an .npy file's float32 data: pages are read when touched, so looking up a few rows of a
// large table (SD-1.5's 49408 x 768 token embedding, 152 MB) keeps only those rows resident, as the Python runtime's
// Bundle.asset_array(name, mapped=True) does.
class MappedFloat32Npy {
 public:
  // The mapping, or nullptr when the file is a valid .npy that cannot be used in place (another dtype than "<f4",
  // data not 4-byte aligned in the file): read it with read_npy then. Throws read_npy's Failures for a malformed
  // file, Failure(kIoError) when it cannot be opened or mapped.
  static std::unique_ptr<MappedFloat32Npy> open(const std::string& path);
  ~MappedFloat32Npy();
  MappedFloat32Npy(const MappedFloat32Npy&) = delete;
  MappedFloat32Npy& operator=(const MappedFloat32Npy&) = delete;

  const float* data() const { return data_; }
  const std::vector<int64_t>& shape() const { return shape_; }

 private:
  MappedFloat32Npy() = default;
  void* base_ = nullptr;
  size_t size_ = 0;
  const float* data_ = nullptr;
  std::vector<int64_t> shape_;
};

// Writes format version 1 (2 when the header needs it), atomically. Throws Failure(kInvalidArgument) when
// bytes does not hold shape's count of dtype, Failure(kIoError) when the file cannot be written.
void write_npy(const std::string& path, const NpyArray& array);

}  // namespace edgesdk
