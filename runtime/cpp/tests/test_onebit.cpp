#include <string>
#include <vector>

#include "check.hpp"
#include "errors.hpp"
#include "files.hpp"
#include "onebit.hpp"

using edgesdk::Status;

TEST_CASE("a container written by runtime/onebit.py unpacks to the original bytes") {
  std::vector<uint8_t> original = edgesdk::read_file_bytes(check::fixture("onebit/model.bin"));
  std::vector<uint8_t> container = edgesdk::read_file_bytes(check::fixture("onebit/model.bin.1bit"));
  CHECK(container.size() < original.size());  // the runs were packed
  CHECK(edgesdk::unpack_1bit(container) == original);
  CHECK(edgesdk::read_model_bytes(check::fixture("onebit/model.bin.1bit")) == original);
}

TEST_CASE("other files are read as they are") {
  CHECK(edgesdk::is_1bit_path("x/unet.pte.1bit"));
  CHECK(!edgesdk::is_1bit_path("x/unet.pte"));
  CHECK(!edgesdk::is_1bit_path("1bit"));
  std::vector<uint8_t> plain = edgesdk::read_model_bytes(check::fixture("onebit/plain.bin"));
  CHECK_EQ(std::string(plain.begin(), plain.end()), "plain bytes, not a container");
  CHECK_THROWS_STATUS(edgesdk::read_model_bytes(check::fixture("onebit/absent.pte")), Status::kIoError);
}

TEST_CASE("corrupt containers are kBundleCorrupt") {
  for (const char* name : {"onebit/corrupt.bin.1bit", "onebit/badmagic.bin.1bit", "onebit/truncated.bin.1bit"}) {
    CHECK_THROWS_STATUS(edgesdk::read_model_bytes(check::fixture(name)), Status::kBundleCorrupt);
  }
  try {
    edgesdk::read_model_bytes(check::fixture("onebit/corrupt.bin.1bit"));
  } catch (const edgesdk::Failure& e) {
    CHECK(std::string(e.what()).find("do not match their checksum") != std::string::npos);
  }
  // a header whose runs point outside the file must be refused before anything is written
  std::vector<uint8_t> container = edgesdk::read_file_bytes(check::fixture("onebit/model.bin.1bit"));
  std::string text(container.begin(), container.end());
  size_t runs = text.find("\"runs\": [[");
  CHECK(runs != std::string::npos);
  if (runs != std::string::npos) {
    container[runs + 10] = '9';  // the first run moves from offset 3 to 9: it overlaps the next one
    CHECK_THROWS_STATUS(edgesdk::unpack_1bit(container), Status::kBundleCorrupt);
  }
  CHECK_THROWS_STATUS(edgesdk::unpack_1bit({}), Status::kBundleCorrupt);
}

TEST_MAIN()
