// Opening files that live in folders other users may write to (a log folder), without
// being redirected by them.
//
// A plain open(path, O_CREAT | O_APPEND) follows a symbolic link as the last part of the
// path: whoever can write to the folder can plant `audit.log -> /etc/passwd` and make a
// root keysvcctl append its records there. open_for_append() refuses that, and refuses
// anything but a regular file with a single link (a FIFO would block the writer, a device
// or a hard link to another file would be written through).
#pragma once

#include <sys/types.h>

#include <stdexcept>
#include <string>
#include <utility>

namespace keysvc {

// A file that open_for_append() refused or could not open. The message is one line:
// "cannot open PATH for appending: REASON".
class FileError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// An owned file descriptor, closed when dropped. Move-only.
class UniqueFd {
 public:
  UniqueFd() noexcept = default;
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  // Gives up ownership: the caller closes the descriptor.
  int release() noexcept { return std::exchange(fd_, -1); }
  // Closes the descriptor now (if any).
  void reset() noexcept;

 private:
  int fd_ = -1;
};

// Opens `path` for appending, creating it with `mode` (less the umask) if it is missing:
// O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC. Throws FileError if the last
// part of the path is a symbolic link, if the file is not a regular file (a FIFO, socket,
// device or folder: opened non-blocking, so a FIFO without reader does not hang), if it
// has more than one hard link, or if it cannot be opened. Symbolic links in the folders
// above it are followed: they belong to whoever set up the folders.
UniqueFd open_for_append(const std::string& path, mode_t mode = 0640);

// True if `path` names, without following a symbolic link as its last part, the same
// file as the open descriptor `fd` (same device and inode). For code that must open the
// file a second time by name (a logging library's file sink) after open_for_append():
// checking afterwards that the name still leads to the checked file closes the window in
// which the name could have been swapped for a link.
bool same_file(int fd, const std::string& path) noexcept;

}  // namespace keysvc
