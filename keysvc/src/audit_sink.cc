#include "audit_sink.h"

#include <fcntl.h>
#include <unistd.h>

#include "keysvc/safe_file.h"

namespace keysvc::audit::detail {

spdlog::file_event_handlers NotifyingFileSink::no_symlink_handlers() {
  spdlog::file_event_handlers h;
  // Checked and created before spdlog's fopen (which would follow a symlink and create
  // its target), then checked to be the very file fopen opened.
  h.before_open = [](const spdlog::filename_t& path) { (void)open_for_append(path); };
  h.after_open = [](const spdlog::filename_t& path, std::FILE* file) {
    if (!same_file(::fileno(file), path)) throw FileError("cannot open " + path + " for appending: it was replaced");
  };
  return h;
}

void NotifyingFileSink::sink_it_(const spdlog::details::log_msg& msg) {
  try {
    file_.log(msg);
  } catch (const std::exception& e) {
    fail(e.what());
    throw;
  }
}

void NotifyingFileSink::flush_() {
  try {
    file_.flush();
  } catch (const std::exception& e) {
    fail(e.what());
  }
  if (fsync_) {
    // fsync on any descriptor of the file writes its dirty pages.
    int fd = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW);  // O_APPEND: an append-only (chattr +a) file
    if (fd < 0 || ::fsync(fd) != 0) fail("fsync failed");
    if (fd >= 0) ::close(fd);
  }
  {
    std::lock_guard<std::mutex> lock(count_mutex_);
    ++flushes_;
  }
  flushed_cv_.notify_all();
}

void NotifyingFileSink::fail(const std::string& what) {
  std::lock_guard<std::mutex> lock(count_mutex_);
  if (error_.empty()) error_ = what.empty() ? "write failed" : what;
}

}  // namespace keysvc::audit::detail
