#include "keysvc/safe_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace keysvc {

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
  if (this != &other) {
    reset();
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

void UniqueFd::reset() noexcept {
  if (fd_ >= 0) ::close(std::exchange(fd_, -1));
}

namespace {

[[noreturn]] void refuse(const std::string& path, const std::string& why) {
  throw FileError("cannot open " + path + " for appending: " + why);
}

const char* kind_of(mode_t mode) {
  if (S_ISDIR(mode)) return "a folder";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device";
  return "not a regular file";
}

}  // namespace

UniqueFd open_for_append(const std::string& path, mode_t mode) {
  // Look before opening: opening a device can have effects of its own (a tape rewinds, a
  // terminal becomes the controlling one). The check after the open is the one that
  // counts, on the file actually opened.
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (S_ISLNK(st.st_mode)) refuse(path, "it is a symbolic link");
    if (!S_ISREG(st.st_mode)) refuse(path, std::string("it is ") + kind_of(st.st_mode));
  }
  // O_NONBLOCK only for the open itself: a FIFO swapped in after the look above would
  // otherwise block here.
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, mode));
  if (!fd) {
    const int e = errno;
    if (e == ELOOP) refuse(path, "it is a symbolic link");
    if (e == ENXIO) refuse(path, "it is a FIFO or a socket");
    refuse(path, std::strerror(e));
  }
  if (::fstat(fd.get(), &st) != 0) refuse(path, std::strerror(errno));
  if (!S_ISREG(st.st_mode)) refuse(path, std::string("it is ") + kind_of(st.st_mode));
  if (st.st_nlink != 1)
    refuse(path, "it has " + std::to_string(st.st_nlink) + " hard links (a log file has one)");
  const int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK) != 0) refuse(path, std::strerror(errno));
  return fd;
}

bool same_file(int fd, const std::string& path) noexcept {
  struct stat by_fd {}, by_name {};
  if (::fstat(fd, &by_fd) != 0 || ::lstat(path.c_str(), &by_name) != 0) return false;
  return S_ISREG(by_name.st_mode) && by_fd.st_dev == by_name.st_dev && by_fd.st_ino == by_name.st_ino;
}

}  // namespace keysvc
