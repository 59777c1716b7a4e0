// A circuit breaker in front of the HSM: stops hammering a token that keeps failing, and
// probes it at a bounded rate until it answers again.
//
//   closed     every call goes to the HSM; `threshold` consecutive failures open it
//              (a call that overran its deadline opens it at once: the HSM is stalled)
//   open       no call goes to the HSM (callers serve a full handshake instead) until
//              `backoff` has passed since it opened
//   half-open  exactly one caller, the probe, goes to the HSM; everyone else is still
//              refused. The probe's success closes the breaker, its failure reopens it
//              for another `backoff`.
// So while the HSM is down it sees at most one call per `backoff`, and once it is back
// the breaker closes within `backoff` plus one call.
//
// The closed-state path is two relaxed atomic loads per call (allow + success); state
// changes take a mutex.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>

namespace keysvc {

class CircuitBreaker {
 public:
  enum class State : int { kClosed = 0, kOpen = 1, kHalfOpen = 2 };
  // What a caller may do now.
  // kBypass: a call made without asking (recovery work with its own rate limit): neither
  // its success nor its failure, an overrun included, changes the state (counted only).
  enum class Permit { kCall, kProbe, kRefuse, kBypass };

  struct Options {
    unsigned threshold = 5;                            // consecutive failures that open it (>= 1)
    std::chrono::milliseconds backoff{250};            // open this long before a probe
  };

  struct Counters {
    State state = State::kClosed;
    std::uint64_t opens = 0;     // closed/half-open -> open transitions
    std::uint64_t probes = 0;    // calls let through while open (half-open)
    std::uint64_t refused = 0;   // calls not made because the breaker was open
    std::uint64_t failures = 0;  // failures reported
  };

  using SteadyClock = std::chrono::steady_clock;

  explicit CircuitBreaker(Options options);

  // Asks before calling the HSM. kCall and kProbe must be followed by exactly one
  // success() or failure(); kRefuse by nothing.
  Permit allow() noexcept;
  void success(Permit permit) noexcept;
  // `stalled`: the call overran its deadline; opens the breaker whatever the count.
  void failure(Permit permit, bool stalled = false) noexcept;

  State state() const noexcept { return static_cast<State>(state_.load(std::memory_order_relaxed)); }
  Counters counters() const noexcept;
  const Options& options() const noexcept { return options_; }

  static const char* name(State s) noexcept;

 private:
  void open_locked(SteadyClock::time_point now) noexcept;

  const Options options_;
  std::atomic<int> state_{0};
  std::atomic<unsigned> consecutive_failures_{0};
  std::mutex mutex_;
  SteadyClock::time_point opened_at_{};
  bool probe_out_ = false;
  std::atomic<std::uint64_t> opens_{0}, probes_{0}, refused_{0}, failures_{0};
};

}  // namespace keysvc
