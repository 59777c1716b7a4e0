// Bounds every HSM call of the ticket path: a deadline for calls that hang, and a
// circuit breaker (circuit_breaker.h) for an HSM that keeps failing.
//
// PKCS#11 has no timeout and no way to cancel a call, and a thread blocked inside
// C_Sign cannot be interrupted safely. So the caller never makes the call itself: it
// hands the work to one of a few worker threads and waits for it at most
// hsm.call_timeout. If the deadline passes, the caller gets kTimedOut and serves a
// full handshake; the worker stays blocked in the module until the call returns. That
// call is "abandoned": its session is quarantined (closed when the call finally
// returns, never handed out again) and the breaker opens at once, so no new work goes
// to the stalled HSM except one probe per hsm.breaker_backoff. If every worker is
// stuck in an abandoned call, new work is refused without waiting.
//
// The work must therefore own everything it touches (it may still run after run()
// returned): capture shared_ptrs, never references to the caller's stack.
//
// With call_timeout = 0 the work runs on the caller's thread (no deadline, no thread
// hop), still behind the breaker.
//
// Cost: one hand-off to a worker and one back per guarded operation. Both sides spin
// briefly before sleeping (a worker after each job, kWorkerSpin; the caller while its job
// runs, kCallerSpin), yielding the core between polls: a fast token's call is then handed
// over and back without a sleep and a wake-up (a futex wake, a scheduler pass and, on a
// virtual machine, an inter-processor interrupt each way), while a slow or stalled one
// still ends in a condition-variable wait with the deadline. docs/RELIABILITY.md and
// docs/PERFORMANCE.md have the measured figures.
#pragma once

#include <p11-kit/pkcs11.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "keysvc/circuit_breaker.h"
#include "keysvc/hsm/session_pool.h"

namespace keysvc {

class HsmGuard {
 public:
  struct Options {
    std::chrono::milliseconds call_timeout{500};  // default deadline; 0: on the caller's thread
    CircuitBreaker::Options breaker;
    std::size_t workers = 4;  // threads making HSM calls (at least 1)
    std::chrono::milliseconds maintenance_timeout{10000};  // TokenGateway's maintenance lane
  };

  enum class Outcome {
    kOk,        // the work completed
    kFailed,    // the work threw (a PKCS#11 error, a PIN source error...)
    kTimedOut,  // the deadline passed; the work may still be running
    kRefused,   // not attempted: the breaker is open, or every worker is stuck
  };

  struct Result {
    Outcome outcome = Outcome::kOk;
    CK_RV rv = CKR_OK;   // for kFailed with a PKCS#11 error
    std::string error;   // one line for logs, for anything but kOk
    std::exception_ptr exception;  // for kFailed: what the work threw, to rethrow as is
    bool probe = false;  // the call was the open breaker's probe (CircuitBreaker::Permit::kProbe)
    bool ok() const noexcept { return outcome == Outcome::kOk; }
  };

  struct Counters {
    CircuitBreaker::Counters breaker;
    std::uint64_t runs = 0;         // guarded operations attempted (refused ones included)
    std::uint64_t timeouts = 0;     // operations whose caller stopped waiting
    std::uint64_t quarantined = 0;  // sessions closed because their call overran
    std::uint64_t stuck = 0;        // workers blocked in an abandoned call right now
    std::uint64_t busy_refusals = 0;  // refused because every worker was stuck
  };

  using Work = std::function<void(hsm::Session&)>;

  // How long the caller polls for its job's result before sleeping on it: covers one
  // SoftHSM derivation (a few to some tens of microseconds); slower HSMs sleep.
  static constexpr std::chrono::microseconds kCallerSpin{100};
  // How long an idle worker polls for the next job before sleeping: under load the next
  // derivation comes sooner than that. One worker polls at a time (the others sleep), and
  // a caller wakes a sleeping worker only when none polls: on 2 cores, several polling
  // workers or a needless wake-up cost more than they save.
  static constexpr std::chrono::microseconds kWorkerSpin{100};
  // ...but only while fewer threads hand the guard work than the process may use cores.
  // With as many busy handshake threads as cores, a worker that polls under load never
  // sleeps and takes a third of the cores from them (docs/PERFORMANCE.md, "The strict
  // tier's guard hand-off": at two threads on two cores 0.59 of `openssl` with the
  // poll, 0.70 without; at one thread 0.82-0.85 with it, 0.71 without). The guard
  // counts the distinct threads that called run() with a deadline in each
  // kCensusWindow, leaving out background threads (mark_background_thread); a worker
  // polls if the last complete window had fewer than the cores in the process's CPU
  // affinity mask.
  static constexpr std::chrono::milliseconds kCensusWindow{2};

  // Marks the calling thread as background work (the maintenance thread: pool refills,
  // epoch keys, rescans): its calls are left out of the census above, which is about the
  // threads that serve handshakes.
  static void mark_background_thread() noexcept;

  // Whether the breaker decides. Recovery work (a ring rescan to reload stale object
  // handles, the periodic refresh) is rate-limited by its own throttle and must be able
  // to run while the breaker is open, or a probe failing on stale handles could never
  // be followed by the rescan that fixes them. It still has the deadline, but its
  // overrun does not open the breaker: a rescan is many calls and grows with the ring
  // (under load one took over 500 ms on a healthy token and stopped resumption for a
  // backoff); a stalled HSM shows in the derivations' own overruns.
  enum class Admission { kBreaker, kBypassBreaker };

  HsmGuard(hsm::SessionPool& pool, Options options);
  // Stops the workers (unless stop() did). Waits for a call still blocked in the module
  // to return: the module must not be used by a thread that outlives the pool.
  ~HsmGuard();
  // Stops the workers, giving a call still blocked in the module until `deadline` to
  // return. True: every worker ended (the guard and the pool may go). False: a call
  // is still inside the module (a client library can wait for ever: p11-kit's client
  // when its server died in the middle of a reply); that worker is detached and still
  // uses this guard and the pool, so the caller must keep both (leak them) from then on.
  bool stop(std::chrono::steady_clock::time_point deadline) noexcept;
  HsmGuard(const HsmGuard&) = delete;
  HsmGuard& operator=(const HsmGuard&) = delete;

  // Runs work(session) on a session of the pool, within `timeout` (0: on the caller's
  // thread, no deadline) and behind the breaker. Waiting for a free session counts
  // against the deadline. A session the work failed on (any Pkcs11Error) is closed,
  // never reused; if it died (Pkcs11Error::session_is_dead) the work is retried once on
  // a fresh session, which logs in again if the token lost the login. Never throws.
  Result run(Work work, Admission admission, std::chrono::milliseconds timeout) noexcept;
  // run() with the ticket path's deadline (Options::call_timeout).
  Result run(Work work, Admission admission = Admission::kBreaker) noexcept {
    return run(std::move(work), admission, options_.call_timeout);
  }

  Counters counters() const noexcept;
  // The census (kCensusWindow): the distinct non-background threads that called run()
  // with a deadline in the last complete window.
  std::uint32_t callers_last_window() const noexcept { return census_previous_.load(std::memory_order_relaxed); }
  const Options& options() const noexcept { return options_; }
  CircuitBreaker& breaker() noexcept { return breaker_; }

 private:
  struct Job;
  // Leases, runs, retries once on a dead session; quarantines the session if the job
  // was abandoned meanwhile. Fills job.result.
  void execute(Job& job) noexcept;
  void worker_loop();
  // Reports the outcome to the breaker, logs its transitions (opened, closed), sets r.probe.
  void settle(CircuitBreaker::Permit permit, Result& r) noexcept;
  // Counts the calling thread in the census of the window `now` falls in.
  void count_caller(std::chrono::steady_clock::time_point now) noexcept;

  hsm::SessionPool& pool_;
  const Options options_;
  CircuitBreaker breaker_;

  std::mutex queue_mutex_;
  std::condition_variable queue_wake_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::atomic<std::size_t> queued_{0};    // queue_.size(), for workers polling without the lock
  std::atomic<std::size_t> spinning_{0};  // workers polling the queue (0 or 1)
  // The census: the window being counted (steady-clock time / kCensusWindow) and its
  // count so far, in one word (count_caller), and the last complete window's count.
  std::atomic<std::uint64_t> census_{0};
  std::atomic<std::uint32_t> census_previous_{0};
  const std::uint32_t cores_;
  bool stopping_ = false;
  std::size_t workers_ended_ = 0;  // under queue_mutex_; signalled on worker_ended_
  std::condition_variable worker_ended_;
  std::vector<std::thread> workers_;

  std::atomic<std::uint64_t> runs_{0}, timeouts_{0}, quarantined_{0}, stuck_{0}, busy_refusals_{0};
};

}  // namespace keysvc
