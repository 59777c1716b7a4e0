#include "keysvc/circuit_breaker.h"

#include <algorithm>

namespace keysvc {

namespace {
CircuitBreaker::Options normalized(CircuitBreaker::Options o) {
  o.threshold = std::max(o.threshold, 1u);
  return o;
}
}  // namespace

CircuitBreaker::CircuitBreaker(Options options) : options_(normalized(options)) {}

CircuitBreaker::Permit CircuitBreaker::allow() noexcept {
  if (state_.load(std::memory_order_acquire) == static_cast<int>(State::kClosed)) return Permit::kCall;
  std::lock_guard lock(mutex_);
  const State s = state();
  if (s == State::kClosed) return Permit::kCall;  // closed while we took the lock
  const auto now = SteadyClock::now();
  if (s == State::kOpen && !probe_out_ && now - opened_at_ >= options_.backoff) {
    state_.store(static_cast<int>(State::kHalfOpen), std::memory_order_release);
    probe_out_ = true;
    probes_.fetch_add(1, std::memory_order_relaxed);
    return Permit::kProbe;
  }
  refused_.fetch_add(1, std::memory_order_relaxed);
  return Permit::kRefuse;
}

void CircuitBreaker::success(Permit permit) noexcept {
  if (permit == Permit::kBypass || permit == Permit::kRefuse) return;
  if (permit == Permit::kCall && state_.load(std::memory_order_relaxed) == static_cast<int>(State::kClosed)) {
    if (consecutive_failures_.load(std::memory_order_relaxed) != 0)
      consecutive_failures_.store(0, std::memory_order_relaxed);
    return;
  }
  std::lock_guard lock(mutex_);
  if (permit == Permit::kProbe) {
    probe_out_ = false;
    consecutive_failures_.store(0, std::memory_order_relaxed);
    state_.store(static_cast<int>(State::kClosed), std::memory_order_release);
  }
  // A plain call that succeeds after the breaker opened (it started before) proves
  // little: the next probe decides.
}

void CircuitBreaker::failure(Permit permit, bool stalled) noexcept {
  if (permit == Permit::kRefuse) return;
  failures_.fetch_add(1, std::memory_order_relaxed);
  // A ring rescan (bypass) is many calls and grows with the ring; a slow one says little
  // about the HSM's health, and a stalled HSM shows in the derivations' own overruns.
  if (permit == Permit::kBypass) return;
  if (permit == Permit::kCall && !stalled) {
    const unsigned n = consecutive_failures_.fetch_add(1, std::memory_order_relaxed) + 1;
    if (n < options_.threshold) return;
  }
  std::lock_guard lock(mutex_);
  if (permit == Permit::kProbe) probe_out_ = false;
  const State s = state();
  // A call that began while closed and fails after the breaker opened does not reopen it
  // (that would push the next probe out); a failed probe always does.
  if (s == State::kClosed || permit == Permit::kProbe) open_locked(SteadyClock::now());
}

void CircuitBreaker::open_locked(SteadyClock::time_point now) noexcept {
  opened_at_ = now;
  state_.store(static_cast<int>(State::kOpen), std::memory_order_release);
  opens_.fetch_add(1, std::memory_order_relaxed);
}

CircuitBreaker::Counters CircuitBreaker::counters() const noexcept {
  return {state(), opens_.load(std::memory_order_relaxed), probes_.load(std::memory_order_relaxed),
          refused_.load(std::memory_order_relaxed), failures_.load(std::memory_order_relaxed)};
}

const char* CircuitBreaker::name(State s) noexcept {
  switch (s) {
    case State::kClosed:
      return "closed";
    case State::kOpen:
      return "open";
    case State::kHalfOpen:
      return "half-open";
  }
  return "?";
}

}  // namespace keysvc
