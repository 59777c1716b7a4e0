#include "keysvc/maintenance.h"

#include <algorithm>

#include "keysvc/hsm_guard.h"
#include "keysvc/log.h"

namespace keysvc {

Maintenance::~Maintenance() { stop(); }

Maintenance::TaskId Maintenance::add(std::string name, std::chrono::milliseconds period, Task task) {
  std::lock_guard lock(mutex_);
  tasks_.push_back(Entry{std::move(name), period, std::move(task), Clock::time_point::max(), false});
  return tasks_.size() - 1;
}

void Maintenance::request(TaskId id) noexcept {
  {
    std::lock_guard lock(mutex_);
    if (id >= tasks_.size()) return;
    tasks_[id].requested = true;
  }
  wake_.notify_one();
}

bool Maintenance::running() const noexcept {
  std::lock_guard lock(mutex_);
  return thread_.joinable();
}

void Maintenance::start() {
  std::lock_guard lock(mutex_);
  if (thread_.joinable()) return;
  stopping_ = false;
  const auto now = Clock::now();
  for (auto& t : tasks_) t.next_due = t.period.count() > 0 ? now + t.period : Clock::time_point::max();
  thread_ = std::thread([this] { loop(); });
}

void Maintenance::stop() noexcept {
  std::thread t;
  {
    std::lock_guard lock(mutex_);
    if (!thread_.joinable()) return;
    stopping_ = true;
    t = std::move(thread_);
  }
  wake_.notify_all();
  t.join();
  std::lock_guard lock(mutex_);
  thread_id_.store(std::thread::id{}, std::memory_order_relaxed);
}

void Maintenance::loop() {
  HsmGuard::mark_background_thread();  // not a handshake thread (hsm_guard.h, the census)
  std::unique_lock lock(mutex_);
  thread_id_.store(std::this_thread::get_id(), std::memory_order_relaxed);
  for (;;) {
    auto due = [&](const Entry& t) { return t.requested || Clock::now() >= t.next_due; };
    auto next = Clock::time_point::max();
    for (const auto& t : tasks_) next = std::min(next, t.requested ? Clock::time_point::min() : t.next_due);
    if (next == Clock::time_point::max()) {
      wake_.wait(lock, [&] { return stopping_ || std::any_of(tasks_.begin(), tasks_.end(), due); });
    } else {
      wake_.wait_until(lock, next, [&] { return stopping_ || std::any_of(tasks_.begin(), tasks_.end(), due); });
    }
    if (stopping_) return;
    for (std::size_t i = 0; i < tasks_.size() && !stopping_; ++i) {
      if (!due(tasks_[i])) continue;
      tasks_[i].requested = false;
      if (tasks_[i].period.count() > 0) tasks_[i].next_due = Clock::now() + tasks_[i].period;
      // Tasks are only added while stopped, so the entry outlives the unlocked run.
      const Entry& task = tasks_[i];
      lock.unlock();
      try {
        task.task();
      } catch (const std::exception& e) {
        logger()->warn("{} failed: {}", task.name, e.what());
      } catch (...) {
        logger()->warn("{} failed", task.name);
      }
      lock.lock();
      // A period counts from the end of the run, so a slow run is never repeated at once.
      if (tasks_[i].period.count() > 0) tasks_[i].next_due = Clock::now() + tasks_[i].period;
    }
  }
}

}  // namespace keysvc
