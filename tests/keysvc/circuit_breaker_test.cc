// The circuit breaker's state machine: opens after `threshold` consecutive failures or
// one stall, refuses while open, lets exactly one probe through per backoff, closes on a
// successful probe; bypass calls never close it.
#include "keysvc/circuit_breaker.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace keysvc {
namespace {

using namespace std::chrono_literals;
using Permit = CircuitBreaker::Permit;
using State = CircuitBreaker::State;

TEST(CircuitBreaker, OpensAfterThresholdConsecutiveFailures) {
  CircuitBreaker b({3, 50ms});
  for (int i = 0; i < 2; ++i) b.failure(b.allow());
  EXPECT_EQ(b.state(), State::kClosed);
  b.success(b.allow());  // resets the run of failures
  for (int i = 0; i < 2; ++i) b.failure(b.allow());
  EXPECT_EQ(b.state(), State::kClosed);
  b.failure(b.allow());
  EXPECT_EQ(b.state(), State::kOpen);
  EXPECT_EQ(b.counters().opens, 1u);
  EXPECT_EQ(b.counters().failures, 5u);
}

TEST(CircuitBreaker, AStallOpensAtOnce) {
  CircuitBreaker b({100, 50ms});
  b.failure(b.allow(), /*stalled=*/true);
  EXPECT_EQ(b.state(), State::kOpen);
}

TEST(CircuitBreaker, RefusesWhileOpenThenLetsOneProbeThrough) {
  CircuitBreaker b({1, 50ms});
  b.failure(b.allow());
  EXPECT_EQ(b.allow(), Permit::kRefuse);
  std::this_thread::sleep_for(60ms);
  const Permit probe = b.allow();
  EXPECT_EQ(probe, Permit::kProbe);
  EXPECT_EQ(b.state(), State::kHalfOpen);
  EXPECT_EQ(b.allow(), Permit::kRefuse) << "a second caller got through while the probe was out";
  b.failure(probe);
  EXPECT_EQ(b.state(), State::kOpen);
  EXPECT_EQ(b.counters().opens, 2u);
  EXPECT_EQ(b.allow(), Permit::kRefuse) << "a failed probe restarts the backoff";
  std::this_thread::sleep_for(60ms);
  const Permit second = b.allow();
  ASSERT_EQ(second, Permit::kProbe);
  b.success(second);
  EXPECT_EQ(b.state(), State::kClosed);
  EXPECT_EQ(b.allow(), Permit::kCall);
  const auto c = b.counters();
  EXPECT_EQ(c.probes, 2u);
  EXPECT_EQ(c.refused, 3u);
}

TEST(CircuitBreaker, ACallThatStartedBeforeItOpenedDoesNotCloseOrReopenIt) {
  CircuitBreaker b({1, 50ms});
  const Permit early = b.allow();
  b.failure(b.allow());
  ASSERT_EQ(b.state(), State::kOpen);
  b.success(early);
  EXPECT_EQ(b.state(), State::kOpen);
  b.failure(early);
  EXPECT_EQ(b.counters().opens, 1u);
}

// Rescans bypass the breaker and never move it: the derivations judge the HSM.
TEST(CircuitBreaker, BypassCallsNeitherOpenNorCloseIt) {
  CircuitBreaker b({5, 50ms});
  for (int i = 0; i < 10; ++i) b.failure(Permit::kBypass);
  EXPECT_EQ(b.state(), State::kClosed) << "bypass failures are not counted towards the threshold";
  b.failure(Permit::kBypass, /*stalled=*/true);
  EXPECT_EQ(b.state(), State::kClosed) << "a slow rescan does not open it";
  EXPECT_EQ(b.counters().failures, 11u);
  b.failure(b.allow(), /*stalled=*/true);  // a derivation's overrun does
  ASSERT_EQ(b.state(), State::kOpen);
  b.success(Permit::kBypass);
  EXPECT_EQ(b.state(), State::kOpen) << "nor does a rescan's success close it";
}

TEST(CircuitBreaker, ProbesAreBoundedByTheBackoffUnderConcurrentLoad) {
  CircuitBreaker b({1, 20ms});
  b.failure(b.allow());
  std::atomic<bool> stop{false};
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> callers;
  for (int i = 0; i < 4; ++i) {
    callers.emplace_back([&] {
      while (!stop) {
        Permit p = b.allow();
        if (p == Permit::kProbe) b.failure(p);  // the HSM is still down
      }
    });
  }
  std::this_thread::sleep_for(200ms);
  stop = true;
  for (auto& t : callers) t.join();
  const auto elapsed = std::chrono::steady_clock::now() - start;
  const auto c = b.counters();
  // At most one probe per backoff: a probe needs `backoff` since the last opening.
  EXPECT_LE(c.probes, static_cast<std::uint64_t>(elapsed / 20ms) + 1);
  EXPECT_GE(c.probes, 1u);
  EXPECT_GT(c.refused, c.probes);
}

}  // namespace
}  // namespace keysvc
