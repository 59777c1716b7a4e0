// HsmGuard against the real SoftHSM test token seen through keysvc-faultmod: work runs
// on pooled sessions, a failed session is closed, a dead one is replaced and the work
// retried, a hung call is abandoned at the deadline (breaker open, session quarantined
// when the call returns), and everything comes back once the fault is cleared.
#include "keysvc/hsm_guard.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <iostream>
#include <thread>
#include <vector>

#include "fault_control.h"
#include "keysvc/hsm/secret_key.h"
#include "test_helpers.h"

namespace keysvc {
namespace {

using namespace std::chrono_literals;
using Outcome = HsmGuard::Outcome;

test::FaultControl& faults() {
  static test::FaultControl* control = [] {
    auto* c = new test::FaultControl(test::TestToken::get().dir() + "/guard-faults");
    c->export_env();
    return c;
  }();
  return *control;
}

class HsmGuardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    faults().clear();
    test::TestToken& token = test::TestToken::get();
    auto module = hsm::Module::load(test::FaultControl::module_path());
    hsm::Token t = hsm::Token::find(module, hsm::TokenUri::parse(token.token_uri()));
    // SoftHSM logs the application out, and forgets its handles to private objects, when
    // its last session closes; the guard closes failed sessions. Keep one open.
    keeper_ = std::make_unique<hsm::Session>(t, false);
    pool_ = std::make_unique<hsm::SessionPool>(t, hsm::PinSource::parse("file:" + token.pin_path()), 4);
    auto lease = pool_->lease();
    key_ = hsm::import_hmac_key(lease.session(), test::random_bytes(16), "guard-test", test::random_bytes(32));
  }
  void TearDown() override { faults().clear(); }

  std::unique_ptr<HsmGuard> guard(std::chrono::milliseconds timeout, std::size_t workers = 2) {
    return std::make_unique<HsmGuard>(*pool_, HsmGuard::Options{timeout, {2, 50ms}, workers});
  }
  HsmGuard::Work hmac() {
    return [key = key_](hsm::Session& s) {
      std::array<std::uint8_t, hsm::kHmacSha256Bytes> mac{};
      hsm::hmac_sha256(s, key, test::as_bytes("data"), mac);
    };
  }
  void set(const std::string& rules) {
    faults().set(rules);
    std::this_thread::sleep_for(10ms);  // the module looks at the file every 2 ms
  }

  std::unique_ptr<hsm::Session> keeper_;
  std::unique_ptr<hsm::SessionPool> pool_;
  CK_OBJECT_HANDLE key_ = CK_INVALID_HANDLE;
};

TEST_F(HsmGuardTest, RunsWorkOnAWorkerWithAPooledSession) {
  auto g = guard(1000ms);
  std::thread::id ran_on;
  auto r = g->run([&](hsm::Session& s) {
    ran_on = std::this_thread::get_id();
    EXPECT_TRUE(s.user_logged_in());
  });
  EXPECT_TRUE(r.ok()) << r.error;
  EXPECT_NE(ran_on, std::this_thread::get_id());
  EXPECT_TRUE(g->run(hmac()).ok());
}

TEST_F(HsmGuardTest, WithoutADeadlineWorkRunsOnTheCallersThread) {
  auto g = guard(0ms);
  std::thread::id ran_on;
  EXPECT_TRUE(g->run([&](hsm::Session&) { ran_on = std::this_thread::get_id(); }).ok());
  EXPECT_EQ(ran_on, std::this_thread::get_id());
}

TEST_F(HsmGuardTest, AFailureReportsItsCodeAndTheSessionIsNotReused) {
  auto g = guard(1000ms);
  CK_SESSION_HANDLE failed_on = CK_INVALID_HANDLE;
  set("C_SignInit CKR_FUNCTION_FAILED times 1\n");
  auto r = g->run([&, w = hmac()](hsm::Session& s) {
    failed_on = s.handle();
    w(s);
  });
  EXPECT_EQ(r.outcome, Outcome::kFailed);
  EXPECT_EQ(r.rv, static_cast<CK_RV>(CKR_FUNCTION_FAILED));
  EXPECT_NE(r.error.find("C_SignInit"), std::string::npos) << r.error;
  ASSERT_TRUE(r.exception);
  for (int i = 0; i < 8; ++i)
    g->run([&](hsm::Session& s) { EXPECT_NE(s.handle(), failed_on) << "a session a call failed on came back"; });
}

TEST_F(HsmGuardTest, ADeadSessionIsReplacedAndTheWorkRetriedOnce) {
  auto g = guard(1000ms);
  set("C_Sign CKR_SESSION_HANDLE_INVALID times 1\n");
  EXPECT_TRUE(g->run(hmac()).ok());
  set("C_Sign CKR_SESSION_HANDLE_INVALID times 2\n");
  auto r = g->run(hmac());
  EXPECT_EQ(r.rv, static_cast<CK_RV>(CKR_SESSION_HANDLE_INVALID)) << "retried more than once";
  EXPECT_EQ(faults().stats().by_rule["C_Sign CKR_SESSION_HANDLE_INVALID times 2"], 2u);
}

TEST_F(HsmGuardTest, AHungCallIsAbandonedAtTheDeadlineAndItsSessionQuarantined) {
  auto g = guard(100ms);
  set("C_Sign hang\n");
  auto r = g->run(hmac());
  EXPECT_EQ(r.outcome, Outcome::kTimedOut);
  auto c = g->counters();
  EXPECT_EQ(c.timeouts, 1u);
  EXPECT_EQ(c.stuck, 1u);
  EXPECT_EQ(c.breaker.state, CircuitBreaker::State::kOpen) << "a stall opens the breaker at once";
  EXPECT_EQ(g->run(hmac()).outcome, Outcome::kRefused) << "the open breaker let a call through";

  faults().clear();
  for (int i = 0; i < 500 && g->counters().stuck > 0; ++i) std::this_thread::sleep_for(10ms);
  c = g->counters();
  EXPECT_EQ(c.stuck, 0u) << "the hung call did not return after the hang was cleared";
  EXPECT_EQ(c.quarantined, 1u);
  std::this_thread::sleep_for(60ms);  // one backoff: the next call is the probe
  EXPECT_TRUE(g->run(hmac()).ok());
  EXPECT_EQ(g->counters().breaker.state, CircuitBreaker::State::kClosed);
}

TEST_F(HsmGuardTest, WhenEveryWorkerIsStuckWorkIsRefusedWithoutWaiting) {
  auto g = guard(100ms, /*workers=*/1);
  set("C_Sign hang\n");
  EXPECT_EQ(g->run(hmac()).outcome, Outcome::kTimedOut);
  auto r = g->run(hmac(), HsmGuard::Admission::kBypassBreaker);
  EXPECT_EQ(r.outcome, Outcome::kRefused);
  EXPECT_EQ(g->counters().busy_refusals, 1u);
  faults().clear();
}

TEST_F(HsmGuardTest, BypassWorkRunsWhileTheBreakerIsOpen) {
  auto g = guard(1000ms);
  set("C_SignInit CKR_DEVICE_ERROR\n");
  for (int i = 0; i < 2; ++i) EXPECT_EQ(g->run(hmac()).outcome, Outcome::kFailed);
  ASSERT_EQ(g->counters().breaker.state, CircuitBreaker::State::kOpen);
  set("");
  EXPECT_EQ(g->run(hmac()).outcome, Outcome::kRefused);
  EXPECT_TRUE(g->run(hmac(), HsmGuard::Admission::kBypassBreaker).ok());
  EXPECT_EQ(g->counters().breaker.state, CircuitBreaker::State::kOpen) << "bypass work does not close it";
}

// The census that decides whether an idle worker polls (hsm_guard.h): each thread that
// hands the guard work counts once per window, the maintenance thread's kind not at all.
// Counts only: the threads run until the largest count seen is the expected one (or
// 20 s pass), and it must never be larger.
TEST_F(HsmGuardTest, CountsTheThreadsThatHandItWorkButNotBackgroundThreads) {
  auto census = [&](int handshake_threads, int background_threads) {
    auto g = guard(1000ms);
    std::atomic<bool> stop{false};
    std::vector<std::thread> threads;
    for (int i = 0; i < handshake_threads + background_threads; ++i)
      threads.emplace_back([&, background = i >= handshake_threads] {
        if (background) HsmGuard::mark_background_thread();
        while (!stop.load()) EXPECT_TRUE(g->run([](hsm::Session&) {}).ok());
      });
    std::uint32_t most = 0;
    const auto give_up = std::chrono::steady_clock::now() + 20s;
    while (most < static_cast<std::uint32_t>(handshake_threads) && std::chrono::steady_clock::now() < give_up) {
      most = std::max(most, g->callers_last_window());
      std::this_thread::sleep_for(100us);
    }
    for (int k = 0; k < 200; ++k) {  // and it stays at most that
      most = std::max(most, g->callers_last_window());
      std::this_thread::sleep_for(100us);
    }
    stop = true;
    for (auto& t : threads) t.join();
    return most;
  };
  EXPECT_EQ(census(1, 0), 1u);
  EXPECT_EQ(census(2, 0), 2u);
  EXPECT_EQ(census(3, 0), 3u);
  EXPECT_EQ(census(1, 1), 1u) << "a background thread was counted";
  EXPECT_EQ(census(0, 2), 0u) << "background threads were counted";
}

// Not a timing assertion: prints what the deadline costs per guarded operation (one
// derivation = two HMACs in SoftHSM), for docs/RELIABILITY.md.
TEST_F(HsmGuardTest, ReportsTheCostOfTheDeadlinePerOperation) {
  constexpr int kOps = 3000;
  auto measure = [&](HsmGuard& g) {
    auto work = [key = key_](hsm::Session& s) {
      std::array<std::uint8_t, hsm::kHmacSha256Bytes> mac{};
      hsm::hmac_sha256(s, key, test::as_bytes("data"), mac);
      hsm::hmac_sha256(s, key, test::as_bytes("more"), mac);
    };
    for (int i = 0; i < 200; ++i) EXPECT_TRUE(g.run(work).ok());  // warm up sessions and workers
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < kOps; ++i) EXPECT_TRUE(g.run(work).ok());
    return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count() / kOps;
  };
  auto inline_guard = guard(0ms);
  auto deadline_guard = guard(500ms);
  const double inline_us = measure(*inline_guard);
  const double deadline_us = measure(*deadline_guard);
  const double inline_again = measure(*inline_guard);
  std::cout << "[guard-cost] one derivation (2 HMAC, SoftHSM), " << kOps << " ops, 1 caller: inline "
            << std::min(inline_us, inline_again) << " us/op, with deadline (worker hand-off) " << deadline_us
            << " us/op, cost of the hand-off " << deadline_us - std::min(inline_us, inline_again) << " us/op\n";
}

}  // namespace
}  // namespace keysvc
