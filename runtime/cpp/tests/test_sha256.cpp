#include <cstdio>
#include <string>
#include <vector>

#include <sys/stat.h>

#include "check.hpp"
#include "errors.hpp"
#include "files.hpp"
#include "sha256.hpp"

using edgesdk::Status;

TEST_CASE("FIPS 180-2 test vectors") {
  CHECK_EQ(edgesdk::sha256_hex("", 0), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK_EQ(edgesdk::sha256_hex("abc", 3), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  std::string two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  CHECK_EQ(edgesdk::sha256_hex(two_blocks.data(), two_blocks.size()),
           "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  std::string million(1000000, 'a');
  CHECK_EQ(edgesdk::sha256_hex(million.data(), million.size()),
           "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST_CASE("incremental updates of every split give the same digest") {
  std::string text;
  for (int i = 0; i < 300; ++i) text += static_cast<char>(i * 7 + 3);
  std::string whole = edgesdk::sha256_hex(text.data(), text.size());
  for (size_t split : {size_t(0), size_t(1), size_t(55), size_t(56), size_t(63), size_t(64), size_t(65), size_t(299)}) {
    edgesdk::Sha256 hash;
    hash.update(text.data(), split);
    hash.update(text.data() + split, text.size() - split);
    CHECK_EQ(hash.hex_digest(), whole);
  }
}

TEST_CASE("files: the same digest as the buffer, across the 1 MiB chunk boundary") {
  std::vector<uint8_t> bytes((1 << 20) + 1234);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 2654435761u >> 13);
  std::string path = check::fixture("sha256_test.bin");
  edgesdk::write_file_atomic(path, bytes.data(), bytes.size());
  CHECK_EQ(edgesdk::sha256_file_hex(path), edgesdk::sha256_hex(bytes.data(), bytes.size()));
  std::remove(path.c_str());
  // a file numpy wrote: the digest Python's hashlib gives for it is recorded by the bundle's manifest
  CHECK_EQ(edgesdk::sha256_file_hex(check::fixture("onebit/plain.bin")),
           edgesdk::sha256_hex("plain bytes, not a container", 28));
}

TEST_CASE("files: an atomic write gets what a plain open() would (0666 less the umask), not mkstemp's 0600") {
  std::string path = check::fixture("mode_test.bin");
  for (mode_t mask : {mode_t(022), mode_t(027)}) {
    const mode_t previous = ::umask(mask);
    edgesdk::write_file_atomic(path, "x", 1);
    ::umask(previous);
    struct stat info {};
    CHECK(::stat(path.c_str(), &info) == 0);
    CHECK_EQ(info.st_mode & 0777, 0666 & ~mask);
    std::remove(path.c_str());
  }
}

TEST_CASE("an unreadable file is kIoError") {
  CHECK_THROWS_STATUS(edgesdk::sha256_file_hex(check::fixture("no/such/file")), Status::kIoError);
  CHECK_THROWS_STATUS(edgesdk::sha256_file_hex(check::fixture("npy")), Status::kIoError);  // a folder
}

TEST_MAIN()
