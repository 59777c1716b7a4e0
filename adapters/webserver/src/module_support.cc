// The C++ side of keysvc/webserver/module_support.h.
#include "keysvc/webserver/module_support.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>

#include "keysvc/openssl/ticket_adapter.h"

namespace {

// An exclusive flock on a file for the life of the object; nothing if the file cannot
// be opened.
class FileLock {
 public:
  explicit FileLock(const char* path) : fd_(path ? ::open(path, O_RDONLY | O_CLOEXEC) : -1) {
    if (fd_ == -1) return;
    while (::flock(fd_, LOCK_EX) == -1 && errno == EINTR) {
    }
  }
  ~FileLock() {
    if (fd_ != -1) ::close(fd_);  // releases the lock
  }
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_;
};

// Every signal blocked on this thread for the life of the object: threads started
// meanwhile inherit the full mask.
class AllSignalsBlocked {
 public:
  AllSignalsBlocked() {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &saved_);
  }
  ~AllSignalsBlocked() { pthread_sigmask(SIG_SETMASK, &saved_, nullptr); }
  AllSignalsBlocked(const AllSignalsBlocked&) = delete;
  AllSignalsBlocked& operator=(const AllSignalsBlocked&) = delete;

 private:
  sigset_t saved_;
};

}  // namespace

extern "C" keysvc_service* keysvc_webserver_open(const keysvc_preloaded* preloaded, const char* lock_path, char* err,
                                                 size_t err_len) {
  FileLock lock(lock_path);
  AllSignalsBlocked blocked;
  return keysvc_service_open_preloaded(preloaded, err, err_len);
}

extern "C" void keysvc_webserver_counters(const SSL_CTX* ctx, char* out, size_t out_len) {
  if (out == nullptr || out_len == 0) return;
  const keysvc::openssl::TicketCallbackCounters c = keysvc::openssl::counters(ctx);
  std::snprintf(out, out_len,
                "issued=%" PRIu64 " resumed=%" PRIu64 " renewed=%" PRIu64 " issue_failed=%" PRIu64
                " unknown_key=%" PRIu64 " retired_key=%" PRIu64 " hsm_error=%" PRIu64 " rejected=%" PRIu64,
                c.issued, c.resumed, c.renewed, c.issue_failed, c.unknown_key, c.retired_key, c.hsm_error,
                c.rejected_bad_ticket + c.rejected_unopened + c.rejected_too_old + c.rejected_bad_epoch);
}
