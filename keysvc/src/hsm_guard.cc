#include "keysvc/hsm_guard.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>

#include <algorithm>
#include <thread>

#include "keysvc/hsm/error.h"
#include "keysvc/hsm/thread_residue.h"
#include "keysvc/log.h"

namespace keysvc {

namespace {

// Polls `ready` for at most `budget`. Between polls: a pause instruction, and every few
// polls the core is yielded, so that on a busy machine the thread being waited for (or
// another handshake thread) runs instead of this one. Returns ready().
template <class Ready>
bool spin_until(Ready ready, std::chrono::nanoseconds budget) {
  const auto end = std::chrono::steady_clock::now() + budget;
  for (unsigned i = 1;; ++i) {
    if (ready()) return true;
    if (i % 16 == 0) {
      if (std::chrono::steady_clock::now() >= end) return ready();
      std::this_thread::yield();
    } else {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#elif defined(__aarch64__)
      asm volatile("yield" ::: "memory");
#endif
    }
  }
}

thread_local bool t_background = false;  // HsmGuard::mark_background_thread
// The census window this thread was last counted in, and by which guard (a process may
// have several).
thread_local const HsmGuard* t_census_guard = nullptr;
thread_local std::uint64_t t_census_window = 0;

// The cores this process may run on (its CPU affinity mask; a container's cpuset shows
// there), at least 1.
std::uint32_t usable_cores() noexcept {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) return static_cast<std::uint32_t>(std::max(CPU_COUNT(&set), 1));
  return std::max(std::thread::hardware_concurrency(), 1u);
}

}  // namespace

void HsmGuard::mark_background_thread() noexcept { t_background = true; }

void HsmGuard::count_caller(std::chrono::steady_clock::time_point now) noexcept {
  // census_: the window being counted in the high 48 bits, its count in the low 16. One
  // compare-and-swap moves both, so a thread counted in a window is never counted in the
  // next one by a race, and a count is never above the threads that called.
  const std::uint64_t window = static_cast<std::uint64_t>(now.time_since_epoch() / kCensusWindow) & 0xffff'ffff'ffff;
  const bool count = !t_background && !(t_census_guard == this && t_census_window == window);
  std::uint64_t seen = census_.load(std::memory_order_relaxed);
  for (;;) {
    const std::uint64_t seen_window = seen >> 16, seen_count = seen & 0xffff;
    if (seen_window > window) return;  // read the clock just before another thread moved on
    if (seen_window == window && !count) return;
    const std::uint64_t next = seen_window == window ? (window << 16) | std::min<std::uint64_t>(seen_count + 1, 0xffff)
                                                     : (window << 16) | (count ? 1 : 0);
    if (!census_.compare_exchange_weak(seen, next, std::memory_order_relaxed)) continue;
    if (seen_window != window)  // a window ended: its count, or 0 if windows passed with no caller
      census_previous_.store(seen_window + 1 == window ? static_cast<std::uint32_t>(seen_count) : 0,
                             std::memory_order_relaxed);
    break;
  }
  if (count) {
    t_census_guard = this;
    t_census_window = window;
  }
}

struct HsmGuard::Job {
  Job(Work w, hsm::SessionPool::Deadline d) : work(std::move(w)), deadline(d) {}
  Work work;
  hsm::SessionPool::Deadline deadline;  // the caller stops waiting then; so does the lease
  std::mutex mutex;
  std::condition_variable finished;
  bool started = false;    // a worker took it
  bool done = false;       // result is final
  bool abandoned = false;  // the caller stopped waiting
  std::atomic<bool> finished_flag{false};  // `done`, for a caller polling without the lock
  Result result;
};

HsmGuard::HsmGuard(hsm::SessionPool& pool, Options options)
    : pool_(pool), options_(options), breaker_(options.breaker), cores_(usable_cores()) {
  // Workers exist even with call_timeout = 0: work with a deadline of its own (ring
  // scans, seals, rotation) still runs on them.
  const std::size_t n = std::max<std::size_t>(options_.workers, 1);
  workers_.reserve(n);
  for (std::size_t i = 0; i < n; ++i) workers_.emplace_back([this] { worker_loop(); });
}

HsmGuard::~HsmGuard() { stop(std::chrono::steady_clock::time_point::max()); }

bool HsmGuard::stop(std::chrono::steady_clock::time_point deadline) noexcept {
  bool all_ended = true;
  {
    std::unique_lock lock(queue_mutex_);
    stopping_ = true;
    queue_wake_.notify_all();
    const auto ended = [&] { return workers_ended_ == workers_.size(); };
    if (deadline == std::chrono::steady_clock::time_point::max()) worker_ended_.wait(lock, ended);
    else all_ended = worker_ended_.wait_until(lock, deadline, ended);
  }
  for (auto& t : workers_) {
    if (!t.joinable()) continue;
    if (all_ended) t.join();
    else t.detach();
  }
  return all_ended;
}

void HsmGuard::execute(Job& job) noexcept {
  // A session whose call overran its deadline is not trusted again: quarantined.
  auto quarantine_if_abandoned = [&](hsm::SessionPool::Lease& lease) {
    std::lock_guard lock(job.mutex);
    if (!job.abandoned) return false;
    lease.discard();
    quarantined_.fetch_add(1, std::memory_order_relaxed);
    return true;
  };
  Result r;
  try {
    // The pool retries once on a fresh session if the work's session died.
    pool_.run_leased([&](hsm::SessionPool::Lease& lease) {
      // The caller may have given up while we waited for (or opened) a session.
      if (quarantine_if_abandoned(lease)) {
        r = Result{Outcome::kTimedOut, CKR_OK, "abandoned before the call", {}};
        return;
      }
      try {
        job.work(lease.session());
      } catch (const hsm::Pkcs11Error&) {
        // Never reuse a session a call failed on: a C_Sign that failed after C_SignInit
        // may leave the operation active (every later C_SignInit on it then fails with
        // CKR_OPERATION_ACTIVE), and a dead one is dead. Closing it is cheap.
        lease.discard();
        throw;
      } catch (...) {
        quarantine_if_abandoned(lease);
        throw;
      }
      quarantine_if_abandoned(lease);
    }, job.deadline);
  } catch (const hsm::Pkcs11Error& e) {
    r = Result{Outcome::kFailed, e.rv(), e.what(), std::current_exception()};
  } catch (const std::exception& e) {
    r = Result{Outcome::kFailed, CKR_OK, e.what(), std::current_exception()};
  } catch (...) {
    r = Result{Outcome::kFailed, CKR_OK, "unknown error", std::current_exception()};
  }
  job.result = std::move(r);
  // What the call read or wrote (a PIN, a derived key: the module's own copies) may be
  // in this thread's registers and in the module's returned stack frames, which a core
  // dump saves while the thread waits (thread_residue.h).
  hsm::clear_call_residue();
}

void HsmGuard::worker_loop() {
  // A network HSM's client module (p11-kit-client.so) writes to a socket: if the HSM
  // end dies, that write raises SIGPIPE, which kills a process that does not ignore it.
  // Blocked here, it stays pending on this thread and the call fails with an error.
  sigset_t pipe;
  sigemptyset(&pipe);
  sigaddset(&pipe, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe, nullptr);
  for (;;) {
    std::shared_ptr<Job> job;
    // Poll before sleeping, unless another worker polls already or the census says the
    // callers had every core in the last window (hsm_guard.h). A caller that saw this
    // worker polling does not notify; the queue is checked under the lock after the poll
    // ends, so its job is taken either way.
    std::size_t none = 0;
    if (census_previous_.load(std::memory_order_relaxed) < cores_ && spinning_.compare_exchange_strong(none, 1)) {
      spin_until([&] { return queued_.load(std::memory_order_acquire) > 0; }, kWorkerSpin);
      spinning_.store(0);
    }
    bool more = false;
    {
      std::unique_lock lock(queue_mutex_);
      queue_wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) {  // stopping, nothing left
        ++workers_ended_;
        worker_ended_.notify_all();  // under the lock: stop() cannot return before it
        return;
      }
      job = std::move(queue_.front());
      queue_.pop_front();
      queued_.fetch_sub(1, std::memory_order_relaxed);
      more = !queue_.empty();
    }
    // Callers that saw a polling worker did not wake anyone: pass the rest on, so a job
    // never waits behind this one (which may hang) while other workers sleep.
    if (more) queue_wake_.notify_one();
    {
      std::lock_guard lock(job->mutex);
      if (job->abandoned) continue;  // the caller gave up before we started
      job->started = true;
    }
    execute(*job);
    bool abandoned;
    {
      std::lock_guard lock(job->mutex);
      job->done = true;
      abandoned = job->abandoned;
    }
    job->finished_flag.store(true, std::memory_order_release);
    job->finished.notify_one();  // no system call unless the caller is asleep
    if (abandoned) stuck_.fetch_sub(1, std::memory_order_relaxed);
  }
}

void HsmGuard::settle(CircuitBreaker::Permit permit, Result& r) noexcept {
  r.probe = permit == CircuitBreaker::Permit::kProbe;
  const auto before = breaker_.state();
  if (r.ok()) breaker_.success(permit);
  else breaker_.failure(permit, r.outcome == Outcome::kTimedOut || r.outcome == Outcome::kRefused);
  const auto after = breaker_.state();
  if (before == after) return;
  try {
    if (after == CircuitBreaker::State::kOpen && before == CircuitBreaker::State::kClosed) {
      logger()->warn("HSM circuit breaker opened ({}); one probe every {} ms until the HSM answers", r.error,
                     breaker_.options().backoff.count());
    } else if (after == CircuitBreaker::State::kClosed) {
      logger()->info("HSM circuit breaker closed: the HSM answers again");
    }
  } catch (...) {
  }
}

HsmGuard::Result HsmGuard::run(Work work, Admission admission, std::chrono::milliseconds timeout) noexcept {
  runs_.fetch_add(1, std::memory_order_relaxed);
  const CircuitBreaker::Permit permit =
      admission == Admission::kBreaker ? breaker_.allow() : CircuitBreaker::Permit::kBypass;
  if (permit == CircuitBreaker::Permit::kRefuse)
    return Result{Outcome::kRefused, CKR_OK, "HSM circuit breaker open"};

  if (timeout.count() == 0) {  // no deadline: on this thread (the lease still has a bound)
    Job job(std::move(work), std::chrono::steady_clock::now() + hsm::SessionPool::kDefaultLeaseWait);
    execute(job);
    settle(permit, job.result);
    return std::move(job.result);
  }

  if (stuck_.load(std::memory_order_relaxed) >= workers_.size()) {
    busy_refusals_.fetch_add(1, std::memory_order_relaxed);
    Result r{Outcome::kRefused, CKR_OK, "every HSM worker is blocked in a call that overran its deadline", {}};
    settle(permit, r);
    return r;
  }
  std::shared_ptr<Job> job;
  try {
    const auto now = std::chrono::steady_clock::now();
    count_caller(now);
    job = std::make_shared<Job>(std::move(work), now + timeout);
    std::lock_guard lock(queue_mutex_);
    queue_.push_back(job);
    queued_.fetch_add(1, std::memory_order_release);
  } catch (const std::exception& e) {
    Result r{Outcome::kFailed, CKR_OK, e.what(), std::current_exception()};
    settle(permit, r);
    return r;
  }
  // A polling worker takes it; otherwise wake a sleeping one.
  if (spinning_.load() == 0) queue_wake_.notify_one();

  // A fast call is back within the spin; the wait below then returns at once.
  spin_until([&] { return job->finished_flag.load(std::memory_order_acquire); },
             std::min<std::chrono::nanoseconds>(kCallerSpin, job->deadline - std::chrono::steady_clock::now()));
  std::unique_lock lock(job->mutex);
  if (!job->finished.wait_until(lock, job->deadline, [&] { return job->done; })) {
    job->abandoned = true;
    if (job->started) stuck_.fetch_add(1, std::memory_order_relaxed);
    lock.unlock();
    timeouts_.fetch_add(1, std::memory_order_relaxed);
    Result r{Outcome::kTimedOut, CKR_OK,
             "HSM call overran its deadline (" + std::to_string(timeout.count()) + " ms)", {}};
    settle(permit, r);
    return r;
  }
  Result r = std::move(job->result);
  lock.unlock();
  settle(permit, r);
  return r;
}

HsmGuard::Counters HsmGuard::counters() const noexcept {
  auto r = [](const std::atomic<std::uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  return {breaker_.counters(), r(runs_), r(timeouts_), r(quarantined_), r(stuck_), r(busy_refusals_)};
}

}  // namespace keysvc
