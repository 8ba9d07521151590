// .safetensors reading and writing (src/safetensors.hpp), and interoperation with Python's safetensors.numpy.
// Reference files: tests/zo_reference.py writes them into $EDGESDK_CPP_FIXTURES/zo (run here when missing).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "check.hpp"
#include "zo_fixtures.hpp"
#include "errors.hpp"
#include "safetensors.hpp"

using edgesdk::SafeTensorsFile;
using edgesdk::Status;

namespace {

using zo_reference::zo_fixtures;

std::string python() {
  const char* path = std::getenv("EDGESDK_PYTHON");
  return path && *path ? path : "python3";
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream stream(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(stream)), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream stream(path, std::ios::binary | std::ios::trunc);
  stream.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

std::string scratch(const std::string& name) {
  const std::string folder = check::fixture("safetensors_scratch");
  std::filesystem::create_directories(folder);
  return folder + "/" + name;
}

// A file with one tensor of every dtype the ZO code uses, and metadata.
SafeTensorsFile sample_file() {
  SafeTensorsFile file;
  file.tensors["theta"] = edgesdk::f64_tensor({0.5, -1.25, 3.0, 1e-300, -0.0, 7.0}, {2, 3});
  file.tensors["token"] = edgesdk::f32_tensor({0.25f, -1.5f, 3.0f}, {1, 3});
  file.tensors["step"] = edgesdk::i64_tensor({-(int64_t{1} << 40)}, {1});
  file.tensors["empty"] = edgesdk::f64_tensor({}, {0, 3});
  file.tensors["scalar"] = edgesdk::f32_tensor({2.5f}, {});
  file.metadata["format"] = "edgesdk-test";
  file.metadata["config"] = "{\"a\": 1, \"quote\": \"\\\"\"}";
  return file;
}

}  // namespace


TEST_CASE("reads a file written by Python's safetensors.numpy") {
  const SafeTensorsFile file = edgesdk::read_safetensors(zo_fixtures() + "/python.safetensors");
  CHECK_EQ(file.tensors.size(), 4u);
  CHECK(file.metadata == (std::map<std::string, std::string>{{"format", "pt"}, {"token", "<cat>"}}));
  const auto& a = file.tensors.at("a");
  CHECK(a.dtype == "F64" && a.shape == std::vector<int64_t>{4});
  CHECK(edgesdk::f64_values(a) == (std::vector<double>{0.5, -1.25, 3.0, 1e-300}));
  const auto& b = file.tensors.at("b");
  CHECK(b.dtype == "F32" && b.shape == (std::vector<int64_t>{2, 3}));
  CHECK(edgesdk::f32_values(b) == (std::vector<float>{0.0f, 0.125f, 0.25f, 0.375f, 0.5f, 0.625f}));
  CHECK(edgesdk::i64_values(file.tensors.at("c")) == (std::vector<int64_t>{-(int64_t{1} << 40), 7}));
  const auto& empty = file.tensors.at("empty");
  CHECK(empty.shape == (std::vector<int64_t>{0, 3}) && empty.bytes.empty());
  CHECK_FAILS(edgesdk::f32_values(a), Status::kInvalidArgument, "expected dtype F32, got F64");
}

TEST_CASE("writes the same bytes as Python for the same content") {
  SafeTensorsFile file;
  file.tensors["token"] = edgesdk::f32_tensor({0.25f, -1.5f, 3.0f, 1e-3f}, {1, 4});
  file.metadata["token"] = "<cat>";
  const std::string path = scratch("single.safetensors");
  edgesdk::write_safetensors(path, file);
  CHECK(read_bytes(path) == read_bytes(zo_fixtures() + "/single.safetensors"));
  // Python's layout with several dtypes (larger first, then by name). Python orders metadata keys by hash, so
  // multi.safetensors holds python.safetensors' tensors with a single metadata key.
  const std::string python_path = zo_fixtures() + "/python.safetensors";
  SafeTensorsFile python_file = edgesdk::read_safetensors(python_path);
  python_file.metadata.erase("format");
  edgesdk::write_safetensors(path, python_file);
  CHECK(read_bytes(path) == read_bytes(zo_fixtures() + "/multi.safetensors"));
}

TEST_CASE("a C++-written file reads back in C++ and in Python") {
  const SafeTensorsFile file = sample_file();
  const std::string path = scratch("cpp.safetensors");
  edgesdk::write_safetensors(path, file);
  const SafeTensorsFile back = edgesdk::read_safetensors(path);
  CHECK(back.metadata == file.metadata);
  CHECK_EQ(back.tensors.size(), file.tensors.size());
  for (const auto& [name, tensor] : file.tensors) {
    const auto& other = back.tensors.at(name);
    CHECK(other.dtype == tensor.dtype && other.shape == tensor.shape && other.bytes == tensor.bytes);
  }
  std::vector<uint8_t> bytes = read_bytes(path);
  uint64_t header_length = 0;
  for (int i = 7; i >= 0; --i) header_length = (header_length << 8) | bytes[static_cast<size_t>(i)];
  CHECK_EQ(header_length % 8, 0u);  // the data starts 8-byte aligned

  const std::string script =
      "import sys, numpy as np; from safetensors import safe_open; from safetensors.numpy import load_file; "
      "t = load_file(sys.argv[1]); m = safe_open(sys.argv[1], 'np').metadata(); "
      "assert sorted(t) == ['empty', 'scalar', 'step', 'theta', 'token'], sorted(t); "
      "assert t['theta'].dtype == np.float64 and t['theta'].tolist() == [[0.5, -1.25, 3.0], [1e-300, -0.0, 7.0]]; "
      "assert t['token'].dtype == np.float32 and t['token'].tolist() == [[0.25, -1.5, 3.0]]; "
      "assert t['step'].dtype == np.int64 and t['step'].tolist() == [-(2**40)]; "
      "assert t['empty'].shape == (0, 3) and t['scalar'].shape == () and float(t['scalar']) == 2.5; "
      "assert m == {'format': 'edgesdk-test', 'config': '{\"a\": 1, \"quote\": \"\\\\\"\"}'}, m";
  const std::string script_path = scratch("check.py");
  {
    std::ofstream out(script_path);
    out << script << "\n";
  }
  const std::string command = "\"" + python() + "\" \"" + script_path + "\" \"" + path + "\"";
  CHECK_EQ(std::system(command.c_str()), 0);
}

TEST_CASE("a malformed or truncated file is refused with kEmbeddingInvalid, never a crash") {
  const std::string good = scratch("good.safetensors");
  edgesdk::write_safetensors(good, sample_file());
  const std::vector<uint8_t> bytes = read_bytes(good);
  const std::string bad = scratch("bad.safetensors");
  const char* invalid = "is not a learned-token .safetensors file";

  CHECK_FAILS(edgesdk::read_safetensors(scratch("missing.safetensors")), Status::kEmbeddingInvalid, "cannot read");
  for (size_t length = 0; length < bytes.size(); ++length) {  // every truncation
    write_bytes(bad, std::vector<uint8_t>(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(length)));
    CHECK_FAILS(edgesdk::read_safetensors(bad), Status::kEmbeddingInvalid, invalid);
  }
  for (size_t at = 0; at < bytes.size(); ++at) {  // every byte flipped: refused or read, never a crash
    std::vector<uint8_t> flipped = bytes;
    flipped[at] ^= 0x5A;
    write_bytes(bad, flipped);
    try {
      edgesdk::read_safetensors(bad);
    } catch (const edgesdk::Failure& e) {
      CHECK(e.status() == Status::kEmbeddingInvalid);
    }
  }

  auto with_header = [&](const std::string& header, size_t data_bytes) {
    std::vector<uint8_t> out(8, 0);
    for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<uint8_t>(header.size() >> (8 * i));
    out.insert(out.end(), header.begin(), header.end());
    out.insert(out.end(), data_bytes, 0);
    write_bytes(bad, out);
    return bad;
  };
  CHECK_FAILS(edgesdk::read_safetensors(with_header("{not json", 0)), Status::kEmbeddingInvalid, "not JSON");
  CHECK_FAILS(edgesdk::read_safetensors(with_header("[1, 2]", 0)), Status::kEmbeddingInvalid, "not a JSON object");
  CHECK_FAILS(edgesdk::read_safetensors(with_header(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}})", 16)),
              Status::kEmbeddingInvalid, "needs 8");
  CHECK_FAILS(edgesdk::read_safetensors(with_header(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4)),
              Status::kEmbeddingInvalid, "outside");
  CHECK_FAILS(edgesdk::read_safetensors(with_header(R"({"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8)),
              Status::kEmbeddingInvalid, "invalid shape");
  CHECK_FAILS(edgesdk::read_safetensors(with_header(R"({"t":{"dtype":"Q7","shape":[2],"data_offsets":[0,8]}})", 8)),
              Status::kEmbeddingInvalid, "unknown dtype");
  CHECK_FAILS(edgesdk::read_safetensors(with_header(R"({"t":{"dtype":"F32","shape":[2]}})", 8)),
              Status::kEmbeddingInvalid, "data_offsets");
  CHECK_FAILS(edgesdk::read_safetensors(with_header(R"({"__metadata__":{"a":1}})", 0)), Status::kEmbeddingInvalid,
              "not a string");
  CHECK_FAILS(edgesdk::read_safetensors(
                  with_header(R"({"t":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}})", 8)),
              Status::kEmbeddingInvalid, "invalid shape");
  std::vector<uint8_t> huge(16, 0xFF);
  write_bytes(bad, huge);
  CHECK_FAILS(edgesdk::read_safetensors(bad), Status::kEmbeddingInvalid, "exceeds the file size");
  // a caller reading a checkpoint gets its own status and wording
  CHECK_FAILS(edgesdk::read_safetensors(bad, Status::kCheckpointInvalid, "ZO checkpoint"), Status::kCheckpointInvalid,
              "is not a ZO checkpoint (");
}

TEST_CASE("writing: malformed tensors and unwritable paths are refused, no temp file is left") {
  SafeTensorsFile file;
  file.tensors["x"] = edgesdk::f32_tensor({1.0f, 2.0f}, {3});
  CHECK_FAILS(edgesdk::write_safetensors(scratch("x.safetensors"), file), Status::kInvalidArgument, "'x'");
  file.tensors["x"] = edgesdk::f32_tensor({1.0f, 2.0f}, {2});
  file.tensors["x"].dtype = "F31";
  CHECK_FAILS(edgesdk::write_safetensors(scratch("x.safetensors"), file), Status::kInvalidArgument, "unknown dtype");
  file.tensors["x"].dtype = "F32";
  const std::string unwritable = scratch("no/such/folder/x.safetensors");
  CHECK_FAILS(edgesdk::write_safetensors(unwritable, file), Status::kIoError, "cannot write");
  // overwriting keeps only the final file
  const std::string path = scratch("overwrite.safetensors");
  edgesdk::write_safetensors(path, file);
  file.tensors["x"] = edgesdk::f32_tensor({3.0f, 4.0f}, {2});
  edgesdk::write_safetensors(path, file);
  CHECK(edgesdk::f32_values(edgesdk::read_safetensors(path).tensors.at("x")) == (std::vector<float>{3.0f, 4.0f}));
  CHECK(!std::ifstream(path + ".tmp"));
}

TEST_MAIN()
