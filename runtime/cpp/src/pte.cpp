#include "pte.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "errors.hpp"

namespace edgesdk {

namespace {

constexpr size_t kHeadBytes = 64;

uint64_t little_endian(const uint8_t* bytes, size_t count) {
  uint64_t value = 0;
  for (size_t i = count; i-- > 0;) value = (value << 8) | bytes[i];
  return value;
}

}  // namespace

void check_program_head(const uint8_t* head, size_t head_size, uint64_t file_size, const std::string& what) {
  const std::string refused = what + " is not a valid ExecuTorch program";
  // a flatbuffer: 4 bytes of root offset, then the file identifier
  if (head_size < 8 || std::memcmp(head + 4, "ET12", 4) != 0)
    fail(Status::kBundleCorrupt, refused + " (no ET12 identifier; " + std::to_string(file_size) +
                                     " bytes); re-export the bundle");
  if (head_size < 12 || std::memcmp(head + 8, "eh00", 4) != 0) return;  // no extended header: nothing more to check
  // the extended header: magic, u32 length, u64 program size, u64 segment base offset, then (when the length says
  // so) u64 segment data size
  if (head_size < 32) fail(Status::kBundleCorrupt, refused + " (truncated header); re-export the bundle");
  const uint64_t length = little_endian(head + 12, 4);
  const uint64_t program_size = little_endian(head + 16, 8);
  const uint64_t segment_base = little_endian(head + 24, 8);
  const uint64_t segment_size = length > 24 && head_size >= 40 ? little_endian(head + 32, 8) : 0;
  // compared by subtraction: a hostile header's sizes near 2^64 must not wrap around
  const bool segments_fit = segment_base <= file_size && segment_size <= file_size - segment_base;
  if (program_size > file_size || !segments_fit || (segment_base != 0 && segment_base < program_size)) {
    const uint64_t claimed = segments_fit ? std::max(program_size, segment_base + segment_size)
                                          : std::max(program_size, segment_base);
    fail(Status::kBundleCorrupt, refused + " (its header says " + std::to_string(claimed) + " bytes or more, the " +
                                     "file has " + std::to_string(file_size) + ": truncated or corrupt); " +
                                     "re-export the bundle");
  }
}

void check_program_file(const std::string& path, const std::string& what) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) fail(Status::kIoError, "cannot read " + what + ": " + std::strerror(errno));
  struct stat info {};
  uint8_t head[kHeadBytes];
  size_t have = 0;
  int error = ::fstat(fd, &info) != 0 ? errno : 0;
  while (error == 0 && have < sizeof head) {
    const ssize_t got = ::read(fd, head + have, sizeof head - have);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) error = errno;
    if (got <= 0) break;
    have += size_t(got);
  }
  ::close(fd);
  if (error != 0) fail(Status::kIoError, "cannot read " + what + ": " + std::strerror(error));
  if (!S_ISREG(info.st_mode)) fail(Status::kBundleCorrupt, what + " is not a regular file; the bundle is refused");
  check_program_head(head, have, uint64_t(info.st_size), what);
}

}  // namespace edgesdk
