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

// An exclusive flock on a file for the life of the object, waited for at most
// `max_wait_ms`: anyone who can read the file can hold the lock (a stuck process, or a
// hostile one), and a worker must not hang on it. Nothing if the file cannot be opened
// or the lock is not had in time (then the worker opens without taking turns).
class FileLock {
 public:
  FileLock(const char* path, long max_wait_ms) : fd_(path ? ::open(path, O_RDONLY | O_CLOEXEC) : -1) {
    if (fd_ == -1) return;
    constexpr long kPollMs = 10;
    for (long waited = 0;; waited += kPollMs) {
      if (::flock(fd_, LOCK_EX | LOCK_NB) == 0) return;
      if ((errno != EWOULDBLOCK && errno != EINTR) || waited >= max_wait_ms) break;
      ::usleep(kPollMs * 1000);
    }
    ::close(fd_);
    fd_ = -1;
  }
  bool held() const noexcept { return fd_ != -1; }
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

extern "C" keysvc_service* keysvc_webserver_open_within(const keysvc_preloaded* preloaded, const char* lock_path,
                                                        long max_lock_wait_ms, int* lock_held, char* err,
                                                        size_t err_len) {
  FileLock lock(lock_path, max_lock_wait_ms);
  if (lock_held != nullptr) *lock_held = lock.held() ? 1 : 0;
  AllSignalsBlocked blocked;
  return keysvc_service_open_preloaded(preloaded, err, err_len);
}

extern "C" keysvc_service* keysvc_webserver_open(const keysvc_preloaded* preloaded, const char* lock_path, char* err,
                                                 size_t err_len) {
  return keysvc_webserver_open_within(preloaded, lock_path, KEYSVC_WEBSERVER_LOCK_WAIT_MS, nullptr, err, err_len);
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
