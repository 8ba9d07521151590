#include <cstring>
#include <string>

#include "check.hpp"
#include "errors.hpp"
#include "files.hpp"
#include "json.hpp"
#include "npy.hpp"

using edgesdk::NpyArray;
using edgesdk::Status;

namespace {

edgesdk::json::Value expected() {
  std::vector<uint8_t> text = edgesdk::read_file_bytes(check::fixture("npy/expected.json"));
  return edgesdk::json::parse(std::string(text.begin(), text.end()), "expected.json");
}

std::string failure_message(const std::string& relative) {
  try {
    edgesdk::read_npy(check::fixture(relative));
  } catch (const edgesdk::Failure& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("every dtype numpy wrote reads back with its shape and values") {
  edgesdk::json::Value all = expected();
  CHECK_EQ(all.size(), size_t(8));
  for (const auto& [name, want] : all.as_object()) {
    NpyArray array = edgesdk::read_npy(check::fixture("npy/" + name + ".npy"));
    CHECK_EQ(array.dtype, want.at("dtype").as_string());
    std::vector<int64_t> shape;
    for (const auto& d : want.at("shape").as_array()) shape.push_back(d.as_int());
    CHECK(array.shape == shape);
    const auto& values = want.at("values").as_array();
    CHECK_EQ(array.count(), static_cast<int64_t>(values.size()));
    std::vector<double> as_double = array.to_float64();
    std::vector<float> as_float = array.to_float32();
    std::vector<int64_t> as_int = array.to_int64();
    for (size_t i = 0; i < values.size() && i < as_double.size(); ++i) {
      double v = values[i].as_double();
      CHECK(as_double[i] == v);
      CHECK(as_float[i] == static_cast<float>(v));
      if (name != "f4" && name != "f8" && name != "scalar") CHECK_EQ(as_int[i], static_cast<int64_t>(v));
    }
  }
}

TEST_CASE("int64 values beyond 2^53 stay exact") {
  NpyArray array = edgesdk::read_npy(check::fixture("npy/i8.npy"));
  CHECK_EQ(array.to_int64()[0], int64_t(-4) * 1000000007);
  CHECK_EQ(array.to_int64()[7], int64_t(3) * 1000000007);
}

TEST_CASE("format versions 2 and 3 read as version 1") {
  NpyArray v1 = edgesdk::read_npy(check::fixture("npy/f4.npy"));
  for (const char* name : {"npy/v2.npy", "npy/v3.npy"}) {
    NpyArray other = edgesdk::read_npy(check::fixture(name));
    CHECK(other.shape == v1.shape);
    CHECK(other.bytes == v1.bytes);
  }
}

TEST_CASE("refused files: Fortran order, big-endian, objects, other dtypes, truncated, not npy") {
  CHECK_THROWS_STATUS(edgesdk::read_npy(check::fixture("npy/fortran.npy")), Status::kBundleCorrupt);
  CHECK(failure_message("npy/fortran.npy").find("Fortran") != std::string::npos);
  CHECK_THROWS_STATUS(edgesdk::read_npy(check::fixture("npy/bigendian.npy")), Status::kBundleCorrupt);
  CHECK(failure_message("npy/bigendian.npy").find("big-endian") != std::string::npos);
  CHECK_THROWS_STATUS(edgesdk::read_npy(check::fixture("npy/object.npy")), Status::kBundleCorrupt);
  CHECK(failure_message("npy/object.npy").find("objects") != std::string::npos);
  CHECK_THROWS_STATUS(edgesdk::read_npy(check::fixture("npy/bool.npy")), Status::kBundleCorrupt);
  CHECK_THROWS_STATUS(edgesdk::read_npy(check::fixture("npy/truncated.npy")), Status::kBundleCorrupt);
  CHECK(failure_message("npy/truncated.npy").find("truncated") != std::string::npos);
  CHECK_THROWS_STATUS(edgesdk::read_npy(check::fixture("npy/notnpy.npy")), Status::kBundleCorrupt);
  CHECK_THROWS_STATUS(edgesdk::read_npy(check::fixture("npy/absent.npy")), Status::kIoError);
}

TEST_CASE("write_npy round-trips and numpy reads what it writes") {
  NpyArray array;
  array.dtype = "<f4";
  array.shape = {2, 3};
  float values[6] = {1.5f, -2.0f, 3.25f, 0.0f, 1e-8f, 7.0f};
  array.bytes.resize(sizeof values);
  std::memcpy(array.bytes.data(), values, sizeof values);
  std::string path = check::fixture("npy_written_by_cpp.npy");
  edgesdk::write_npy(path, array);
  NpyArray back = edgesdk::read_npy(path);
  CHECK_EQ(back.dtype, "<f4");
  CHECK(back.shape == array.shape);
  CHECK(back.bytes == array.bytes);
  // numpy's own reader (EDGESDK_PYTHON is the interpreter ctest ran the fixtures with)
  const char* python = std::getenv("EDGESDK_PYTHON");
  CHECK(python != nullptr);
  if (python != nullptr) {
    std::string command = std::string("\"") + python + "\" -c \"import numpy as np, sys; a = np.load(sys.argv[1]); "
                          "sys.exit(0 if a.dtype == np.float32 and a.shape == (2, 3) and a[0, 2] == 3.25 "
                          "and a[1, 1] == np.float32(1e-8) else 1)\" \"" + path + "\"";
    CHECK_EQ(std::system(command.c_str()), 0);
  }
  // 0-d, 1-d and empty shapes keep their header form
  for (std::vector<int64_t> shape : {std::vector<int64_t>{}, {4}, {0, 3}}) {
    NpyArray a;
    a.dtype = "|u1";
    a.shape = shape;
    a.bytes.assign(static_cast<size_t>(a.count()), 9);
    edgesdk::write_npy(path, a);
    NpyArray b = edgesdk::read_npy(path);
    CHECK(b.shape == shape);
    CHECK(b.bytes == a.bytes);
  }
  std::remove(path.c_str());
}

TEST_CASE("write_npy refuses inconsistent arrays and unwritable paths") {
  NpyArray array;
  array.dtype = "<f8";
  array.shape = {3};
  array.bytes.resize(8);
  CHECK_THROWS_STATUS(edgesdk::write_npy(check::fixture("x.npy"), array), Status::kInvalidArgument);
  array.dtype = ">f8";
  CHECK_THROWS_STATUS(edgesdk::write_npy(check::fixture("x.npy"), array), Status::kInvalidArgument);
  array.dtype = "<f8";
  array.bytes.resize(24);
  CHECK_THROWS_STATUS(edgesdk::write_npy(check::fixture("no/such/folder/x.npy"), array), Status::kIoError);
}

TEST_MAIN()
