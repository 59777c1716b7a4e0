// An immutable snapshot swapped in whole by writers and read by any number of threads:
// what std::atomic<std::shared_ptr<const T>> does, with a plain mutex.
//
// Why not std::atomic<std::shared_ptr>: libstdc++ 12 implements it with a lock bit in
// the control-block pointer and futex waits that ThreadSanitizer cannot see, so every
// TSan build reports data races inside <bits/shared_ptr_atomic.h>
// (github.com/google/sanitizers/issues/1558). A mutex is understood by every tool, and the
// critical section is one reference-count increment: measured as costly as the atomic
// with one thread and cheaper with two (docs/FUZZING.md, "Sanitizers").
#pragma once

#include <memory>
#include <mutex>
#include <utility>

namespace keysvc::hsm {

template <class T>
class SharedSnapshot {
 public:
  SharedSnapshot() = default;
  explicit SharedSnapshot(std::shared_ptr<T> value) : value_(std::move(value)) {}
  SharedSnapshot(const SharedSnapshot&) = delete;
  SharedSnapshot& operator=(const SharedSnapshot&) = delete;

  // The current snapshot (it stays valid however often it is replaced afterwards).
  std::shared_ptr<T> load() const {
    std::lock_guard lock(mutex_);
    return value_;
  }
  // Replaces the snapshot; the old one is released outside the lock.
  void store(std::shared_ptr<T> value) { exchange(std::move(value)); }
  // Replaces the snapshot and returns the previous one.
  std::shared_ptr<T> exchange(std::shared_ptr<T> value) {
    std::lock_guard lock(mutex_);
    value_.swap(value);
    return value;
  }

  // Holds the snapshot still (BasicLockable): for a pthread_atfork handler, so that fork()
  // never copies the lock held by a thread the child will not have.
  void lock() const { mutex_.lock(); }
  void unlock() const { mutex_.unlock(); }

 private:
  mutable std::mutex mutex_;
  std::shared_ptr<T> value_;
};

}  // namespace keysvc::hsm
