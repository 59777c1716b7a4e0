// The audit log's file sink (audit_log.h, "Durability"): spdlog's file sink that counts
// its flushes, so flush() can wait for the one it asked for, fsyncs, and keeps the first
// write error.
#pragma once

#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/basic_file_sink.h>

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>

namespace keysvc::audit::detail {

// Flushes the file sink and tells waiters how many flushes it has done.
class NotifyingFileSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  // Opens (creates) the log at `path`, never through a symlink: one planted in a writable
  // log folder would make a root keysvcctl create or append to any file. Throws.
  NotifyingFileSink(const std::string& path, bool do_fsync)
      : file_(path, false, no_symlink_handlers()), path_(path), fsync_(do_fsync) {
    file_.set_pattern("%v");
  }
  std::uint64_t flushed() {
    std::lock_guard<std::mutex> lock(count_mutex_);
    return flushes_;
  }
  void wait_for(std::uint64_t n) {
    std::unique_lock<std::mutex> lock(count_mutex_);
    flushed_cv_.wait(lock, [&] { return flushes_ >= n; });
  }
  // The first write, flush or fsync failure, if any (the worker thread only reports
  // errors to spdlog's error handler; flush() turns this into an exception).
  std::string error() {
    std::lock_guard<std::mutex> lock(count_mutex_);
    return error_;
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override;
  void flush_() override;

 private:
  static spdlog::file_event_handlers no_symlink_handlers();

  spdlog::sinks::basic_file_sink_st file_;
  std::string path_;
  bool fsync_;
  std::mutex count_mutex_;
  std::condition_variable flushed_cv_;
  std::uint64_t flushes_ = 0;
  std::string error_;

  void fail(const std::string& what);
};

}  // namespace keysvc::audit::detail
