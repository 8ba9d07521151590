#include "files.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "errors.hpp"
#include "limits.hpp"

namespace edgesdk {

namespace {

const char* kind_of(mode_t mode) {
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISDIR(mode)) return "a folder";
  return "not a regular file";
}

}  // namespace

std::vector<uint8_t> read_file_bytes(const std::string& path, int64_t max_bytes) {
  // stat first and open without blocking: a FIFO named x.png would block open() until a writer came, and a link to
  // /dev/zero never ends; both are refused before a byte is read. fstat after open closes the race with a swap.
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0)
    fail(Status::kIoError, "cannot read " + path + ": " + std::strerror(errno));
  if (!S_ISREG(info.st_mode))
    fail(Status::kInvalidArgument, path + " is " + kind_of(info.st_mode) + ", not a regular file");
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) fail(Status::kIoError, "cannot read " + path + ": " + std::strerror(errno));
  std::unique_ptr<FILE, int (*)(FILE*)> file(::fdopen(fd, "rb"), &std::fclose);
  if (!file) {
    ::close(fd);
    fail(Status::kIoError, "cannot read " + path + ": " + std::strerror(errno));
  }
  if (::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode))
    fail(Status::kInvalidArgument, path + " is not a regular file");
  if (info.st_size > max_bytes)
    fail(Status::kInvalidArgument, path + " is " + std::to_string(info.st_size >> 20) + " MiB, above the limit of " +
                                       std::to_string(max_bytes >> 20) + " MiB for this file");
  std::vector<uint8_t> bytes;
  bytes.reserve(size_t(info.st_size));
  uint8_t chunk[1 << 16];
  while (true) {
    size_t got = std::fread(chunk, 1, sizeof chunk, file.get());
    bytes.insert(bytes.end(), chunk, chunk + got);
    if (got < sizeof chunk) break;
    if (int64_t(bytes.size()) > max_bytes)  // a file that grows while read
      fail(Status::kInvalidArgument, path + " grew past the read limit while read");
  }
  if (std::ferror(file.get())) fail(Status::kIoError, "cannot read " + path + ": read error");
  return bytes;
}

namespace {

// Writes all of data to fd, retrying interrupted and short writes: 0, or the errno of the failure (ENOSPC where
// write() stopped without one).
int write_all(int fd, const void* data, size_t size) {
  const char* cursor = static_cast<const char*>(data);
  size_t left = size;
  while (left > 0) {
    const ssize_t wrote = ::write(fd, cursor, left);
    if (wrote < 0 && errno == EINTR) continue;
    if (wrote <= 0) return wrote < 0 ? errno : ENOSPC;
    cursor += wrote;
    left -= static_cast<size_t>(wrote);
  }
  return 0;
}

// A device the user named (-o /dev/null): written in place. A rename over it would replace the device with a
// regular file (as root, /dev/full would become a PNG); writing reports the device's own errors (ENOSPC).
void write_device(const std::string& path, const void* data, size_t size) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) fail(Status::kIoError, "cannot write " + path + ": " + std::strerror(errno));
  if (const int error = write_all(fd, data, size); error != 0) {
    ::close(fd);
    fail(Status::kIoError, "cannot write " + path + ": " + std::strerror(error));
  }
  if (::close(fd) != 0) fail(Status::kIoError, "cannot write " + path + ": " + std::strerror(errno));
}

}  // namespace

void write_file_atomic(const std::string& path, const void* data, size_t size) {
  struct stat info {};
  if (::stat(path.c_str(), &info) == 0) {
    if (S_ISCHR(info.st_mode) || S_ISBLK(info.st_mode)) return write_device(path, data, size);
    if (!S_ISREG(info.st_mode))
      fail(Status::kInvalidArgument, "output " + path + " is " + kind_of(info.st_mode) + "; give a regular file name");
  }
  size_t slash = path.find_last_of('/');
  std::string folder = slash == std::string::npos ? "." : path.substr(0, slash == 0 ? 1 : slash);
  std::string temp = folder + "/.tmp-XXXXXX";
  int fd = ::mkstemp(temp.data());
  if (fd < 0) fail(Status::kIoError, "cannot write " + path + ": " + std::strerror(errno));
  if (const int error = write_all(fd, data, size); error != 0) {
    ::close(fd);
    ::unlink(temp.c_str());
    fail(Status::kIoError, "cannot write " + path + ": " + std::strerror(error));
  }
  // mkstemp makes the file 0600; give it what a plain open(path, O_CREAT, 0666) would: 0666 less the umask (read
  // by setting it and putting it back at once: the process has no other way to ask)
  const mode_t mask = ::umask(0);
  ::umask(mask);
  ::fchmod(fd, 0666 & ~mask);
  if (::fsync(fd) != 0 && errno != EINVAL && errno != EROFS) {
    int saved = errno;
    ::close(fd);
    ::unlink(temp.c_str());
    fail(Status::kIoError, "cannot write " + path + ": " + std::strerror(saved));
  }
  if (::close(fd) != 0 || std::rename(temp.c_str(), path.c_str()) != 0) {
    int saved = errno;
    ::unlink(temp.c_str());
    fail(Status::kIoError, "cannot write " + path + ": " + std::strerror(saved));
  }
}

}  // namespace edgesdk
