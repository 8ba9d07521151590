#include "files.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "errors.hpp"

namespace edgesdk {

std::vector<uint8_t> read_file_bytes(const std::string& path) {
  std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!file) fail(Status::kIoError, "cannot read " + path + ": " + std::strerror(errno));
  std::vector<uint8_t> bytes;
  uint8_t chunk[1 << 16];
  while (true) {
    size_t got = std::fread(chunk, 1, sizeof chunk, file.get());
    bytes.insert(bytes.end(), chunk, chunk + got);
    if (got < sizeof chunk) break;
  }
  if (std::ferror(file.get())) fail(Status::kIoError, "cannot read " + path + ": read error");
  return bytes;
}

void write_file_atomic(const std::string& path, const void* data, size_t size) {
  size_t slash = path.find_last_of('/');
  std::string folder = slash == std::string::npos ? "." : path.substr(0, slash == 0 ? 1 : slash);
  std::string temp = folder + "/.tmp-XXXXXX";
  int fd = ::mkstemp(temp.data());
  if (fd < 0) fail(Status::kIoError, "cannot write " + path + ": " + std::strerror(errno));
  const char* cursor = static_cast<const char*>(data);
  size_t left = size;
  while (left > 0) {
    ssize_t wrote = ::write(fd, cursor, left);
    if (wrote < 0 && errno == EINTR) continue;
    if (wrote <= 0) {
      int saved = errno;
      ::close(fd);
      ::unlink(temp.c_str());
      fail(Status::kIoError, "cannot write " + path + ": " + std::strerror(saved));
    }
    cursor += wrote;
    left -= static_cast<size_t>(wrote);
  }
  // mkstemp makes the file 0600; give it what a plain open(path, O_CREAT, 0666) would: 0666 less the umask (read
  // by setting it and putting it back at once: the process has no other way to ask)
  const mode_t mask = ::umask(0);
  ::umask(mask);
  ::fchmod(fd, 0666 & ~mask);
  if (::close(fd) != 0 || std::rename(temp.c_str(), path.c_str()) != 0) {
    int saved = errno;
    ::unlink(temp.c_str());
    fail(Status::kIoError, "cannot write " + path + ": " + std::strerror(saved));
  }
}

}  // namespace edgesdk
