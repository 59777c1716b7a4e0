// The maintenance thread: the one thread that does keysvc's background work.
//
// Ring refreshes and self-rotation, module restarts, refilling the issue pool, deriving
// epoch keys ahead, audit seals, usage summaries and HSM error records are tasks of one
// scheduler with one thread. Tasks run one at a time, in the order they were added when
// several are due, each either every `period` or when requested (request() never
// blocks, so a handshake thread can ask for a rescan). Every HSM call a task makes goes
// through the token gateway with its deadline, so one stalled HSM delays the others by at
// most that deadline.
//
// Fork: stop() waits for the task in progress and joins the thread; start() makes a new
// one. The fork hooks (fork_hooks.h) do exactly that around fork(), so no background
// thread of keysvc is ever inside a call or holding a lock when the process forks.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace keysvc {

class Maintenance {
 public:
  using Task = std::function<void()>;
  using TaskId = std::size_t;
  using Clock = std::chrono::steady_clock;

  Maintenance() = default;
  ~Maintenance();  // stop()
  Maintenance(const Maintenance&) = delete;
  Maintenance& operator=(const Maintenance&) = delete;

  // Adds a task run every `period` (first `period` after start()), and whenever
  // requested; a zero period means only when requested. Only while stopped. `name` is for
  // the log line when the task throws (it is caught there).
  TaskId add(std::string name, std::chrono::milliseconds period, Task task);

  // Runs the task as soon as the thread is free (at once if idle). Several requests
  // before it runs make one run. Never blocks on the task; safe from any thread, also
  // from inside a task, and while stopped (the request waits for start()).
  void request(TaskId id) noexcept;

  // Starts the thread. No-op if running.
  void start();
  // Lets the task in progress finish, then joins the thread. Pending requests stay
  // pending for the next start(). No-op if stopped. Never from inside a task.
  void stop() noexcept;

  bool running() const noexcept;
  // Whether the calling thread is the maintenance thread.
  bool on_thread() const noexcept { return std::this_thread::get_id() == thread_id_.load(std::memory_order_relaxed); }

 private:
  struct Entry {
    std::string name;
    std::chrono::milliseconds period;
    Task task;
    Clock::time_point next_due;
    bool requested = false;
  };
  void loop();

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<Entry> tasks_;
  bool stopping_ = false;
  std::thread thread_;
  std::atomic<std::thread::id> thread_id_{};  // read by on_thread() from any thread
};

}  // namespace keysvc
