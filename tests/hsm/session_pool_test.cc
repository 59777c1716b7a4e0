#include "keysvc/hsm/session_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <set>
#include <thread>

#include "keysvc/hsm/error.h"
#include "keysvc/hsm/object.h"
#include "keysvc/hsm/secret_key.h"
#include "test_helpers.h"

namespace keysvc::hsm {
namespace {

using namespace std::chrono_literals;
using test::ByteVec;

PinSource pin_file() { return PinSource::parse("file:" + test::TestToken::get().pin_path()); }

bool handle_is_open(CK_FUNCTION_LIST* fn, CK_SESSION_HANDLE h) {
  CK_SESSION_INFO info{};
  return fn->C_GetSessionInfo(h, &info) == CKR_OK;
}

TEST(SessionPool, OpensNothingUntilUsedThenLogsIn) {
  SessionPool pool(test::test_hsm_token(), pin_file(), 2);
  EXPECT_EQ(pool.open_sessions(), 0u);
  {
    auto lease = pool.lease();
    EXPECT_EQ(pool.open_sessions(), 1u);
    EXPECT_TRUE(lease->user_logged_in());
    CK_SESSION_INFO info{};
    ASSERT_EQ(lease->fn()->C_GetSessionInfo(lease->handle(), &info), static_cast<CK_RV>(CKR_OK));
    EXPECT_TRUE(info.flags & CKF_RW_SESSION);
  }
  EXPECT_EQ(pool.open_sessions(), 1u) << "a returned session stays open, idle";
}

TEST(SessionPool, ReturnedSessionIsReused) {
  SessionPool pool(test::test_hsm_token(), pin_file(), 4);
  CK_SESSION_HANDLE first;
  {
    auto l = pool.lease();
    first = l->handle();
  }
  {
    auto l = pool.lease();
    EXPECT_EQ(l->handle(), first);
  }
  EXPECT_EQ(pool.open_sessions(), 1u);
}

TEST(SessionPool, WarmUpOpensOneLoggedInSession) {
  SessionPool pool(test::test_hsm_token(), pin_file(), 3);
  pool.warm_up();
  EXPECT_EQ(pool.open_sessions(), 1u);
  EXPECT_TRUE(pool.lease()->user_logged_in());
  EXPECT_EQ(pool.open_sessions(), 1u);
}

TEST(SessionPool, ZeroMaxMeansOne) {
  SessionPool pool(test::test_hsm_token(), pin_file(), 0);
  auto held = pool.lease();
  std::atomic<bool> got{false};
  std::thread waiter([&] {
    auto l = pool.lease();
    got = true;
  });
  std::this_thread::sleep_for(100ms);
  EXPECT_FALSE(got.load()) << "a second session was opened with max_sessions = 0";
  { auto drop = std::move(held); }
  waiter.join();
  EXPECT_TRUE(got.load());
  EXPECT_EQ(pool.open_sessions(), 1u);
}

TEST(SessionPool, LeaseWaitsAtMaxUntilOneComesBack) {
  SessionPool pool(test::test_hsm_token(), pin_file(), 2);
  auto a = pool.lease();
  auto b = pool.lease();
  EXPECT_NE(a->handle(), b->handle());
  EXPECT_EQ(pool.open_sessions(), 2u);
  CK_SESSION_HANDLE b_handle = b->handle();

  std::atomic<bool> got{false};
  CK_SESSION_HANDLE waiter_handle = CK_INVALID_HANDLE;
  std::thread waiter([&] {
    auto l = pool.lease();
    waiter_handle = l->handle();
    got = true;
  });
  std::this_thread::sleep_for(150ms);
  EXPECT_FALSE(got.load()) << "lease() did not wait at max_sessions";
  EXPECT_EQ(pool.open_sessions(), 2u);
  { auto drop = std::move(b); }
  waiter.join();
  EXPECT_TRUE(got.load());
  EXPECT_EQ(waiter_handle, b_handle) << "the waiter should get the returned session";
  EXPECT_EQ(pool.open_sessions(), 2u);
}

TEST(SessionPool, DiscardFreesTheSlotForAWaiter) {
  SessionPool pool(test::test_hsm_token(), pin_file(), 1);
  auto held = pool.lease();
  CK_SESSION_HANDLE old = held->handle();
  CK_FUNCTION_LIST* fn = held->fn();
  std::atomic<bool> got{false};
  CK_SESSION_HANDLE fresh = CK_INVALID_HANDLE;
  std::thread waiter([&] {
    auto l = pool.lease();
    fresh = l->handle();
    got = l->user_logged_in();
  });
  std::this_thread::sleep_for(100ms);
  held.discard();
  EXPECT_FALSE(handle_is_open(fn, old)) << "discard() must close the session";
  { auto drop = std::move(held); }
  waiter.join();
  EXPECT_TRUE(got.load());
  EXPECT_NE(fresh, old);
  EXPECT_EQ(pool.open_sessions(), 1u);
}

// A session killed behind the pool's back and discarded is replaced by a fresh, logged-in
// session; the dead handle never comes back.
TEST(SessionPool, KilledSessionIsReplacedNotReused) {
  test::TestToken::get().clear();
  SessionPool pool(test::test_hsm_token(), pin_file(), 2);
  CK_SESSION_HANDLE dead;
  {
    auto l = pool.lease();
    dead = l->handle();
    ASSERT_EQ(l->fn()->C_CloseSession(dead), static_cast<CK_RV>(CKR_OK));
    l.discard();
  }
  EXPECT_EQ(pool.open_sessions(), 0u);
  auto a = pool.lease();
  auto b = pool.lease();
  EXPECT_NE(a->handle(), dead);
  EXPECT_NE(b->handle(), dead);
  // Closing the application's last session logged the user out: the pool logs in again.
  EXPECT_TRUE(a->user_logged_in());
  auto key = generate_hmac_key(a.session(), test::as_bytes("k"), "k");
  std::array<std::uint8_t, kHmacSha256Bytes> mac{};
  EXPECT_NO_THROW(hmac_sha256(b.session(), key, test::as_bytes("x"), mac));
}

// run() on a dead idle session: the first attempt fails with CKR_SESSION_HANDLE_INVALID
// in the token, the session is discarded and the call is retried once on a fresh one.
TEST(SessionPool, RunRetriesOnceOnAFreshSessionAfterARealDeadSession) {
  test::TestToken::get().clear();
  SessionPool pool(test::test_hsm_token(), pin_file(), 1);
  ByteVec value = test::random_bytes(32);
  CK_SESSION_HANDLE dead;
  {
    auto l = pool.lease();
    import_hmac_key(l.session(), test::as_bytes("k"), "k", value);
    dead = l->handle();
  }
  // Kill the pooled session and give it back as if nothing happened. (It was the only
  // session, so the user is logged out too: the fresh session must log in again.)
  {
    auto l = pool.lease();
    ASSERT_EQ(l->handle(), dead);
    ASSERT_EQ(l->fn()->C_CloseSession(dead), static_cast<CK_RV>(CKR_OK));
  }  // returned to the pool, dead
  std::vector<CK_SESSION_HANDLE> used;
  auto mac = pool.run([&](Session& s) {
    used.push_back(s.handle());
    // Object handles do not survive the application's last session (SoftHSM drops
    // them), so look the private key up again: found only if the session is logged in.
    auto found = find_objects(s, {.object_class = CKO_SECRET_KEY, .label = std::string("k")});
    if (found.size() != 1) throw std::runtime_error("key not found: session not logged in?");
    std::array<std::uint8_t, kHmacSha256Bytes> m{};
    hmac_sha256(s, found.front(), test::as_bytes("payload"), m);
    return m;
  });
  ASSERT_EQ(used.size(), 2u);
  EXPECT_EQ(used[0], dead);
  EXPECT_NE(used[1], dead);
  EXPECT_EQ(ByteVec(mac.begin(), mac.end()), test::openssl_hmac_sha256(value, test::as_bytes("payload")));
  EXPECT_EQ(pool.open_sessions(), 1u);
  EXPECT_EQ(pool.lease()->handle(), used[1]) << "the fresh session is the one kept";
}

TEST(SessionPool, RunRetriesOnceWhenTheLambdaReportsADeadSession) {
  SessionPool pool(test::test_hsm_token(), pin_file(), 2);
  pool.warm_up();
  std::vector<CK_SESSION_HANDLE> used;
  int result = pool.run([&](Session& s) {
    used.push_back(s.handle());
    if (used.size() == 1) throw Pkcs11Error("C_Sign", CKR_SESSION_HANDLE_INVALID);
    return 42;
  });
  EXPECT_EQ(result, 42);
  ASSERT_EQ(used.size(), 2u);
  EXPECT_NE(used[0], used[1]);
  EXPECT_EQ(pool.open_sessions(), 1u) << "the dead session was closed and not counted";
  // Never handed out again.
  auto a = pool.lease();
  auto b = pool.lease();
  EXPECT_NE(a->handle(), used[0]);
  EXPECT_NE(b->handle(), used[0]);
}

TEST(SessionPool, RunGivesUpAfterTheRetry) {
  SessionPool pool(test::test_hsm_token(), pin_file(), 2);
  int calls = 0;
  try {
    pool.run([&](Session&) -> int {
      ++calls;
      throw Pkcs11Error("C_Sign", CKR_DEVICE_REMOVED);
    });
    FAIL() << "run() swallowed the error";
  } catch (const Pkcs11Error& e) {
    EXPECT_EQ(e.rv(), static_cast<CK_RV>(CKR_DEVICE_REMOVED));
  }
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(pool.open_sessions(), 0u);
}

TEST(SessionPool, RunDoesNotRetryOtherErrorsAndKeepsTheSession) {
  SessionPool pool(test::test_hsm_token(), pin_file(), 2);
  std::vector<CK_SESSION_HANDLE> used;
  EXPECT_THROW(pool.run([&](Session& s) -> int {
    used.push_back(s.handle());
    throw Pkcs11Error("C_SignInit", CKR_KEY_HANDLE_INVALID);
  }),
               Pkcs11Error);
  EXPECT_EQ(used.size(), 1u);
  EXPECT_THROW(pool.run([&](Session& s) -> int {
    used.push_back(s.handle());
    throw std::runtime_error("not a token error");
  }),
               std::runtime_error);
  ASSERT_EQ(used.size(), 2u);
  EXPECT_EQ(used[0], used[1]) << "a live session is returned and reused";
  EXPECT_EQ(pool.open_sessions(), 1u);
}

// A failed login frees the slot it reserved, and the PIN is read again next time.
TEST(SessionPool, FailedLoginFreesTheSlot) {
  const std::string wrong = "nope-" + test::random_text(10);
  ::setenv("KEYSVC_POOL_TEST_PIN", wrong.c_str(), 1);
  SessionPool pool(test::test_hsm_token(), PinSource::parse("env:KEYSVC_POOL_TEST_PIN"), 1);
  try {
    pool.warm_up();
    FAIL() << "logged in with a wrong PIN";
  } catch (const Pkcs11Error& e) {
    EXPECT_STREQ(e.what(), "C_Login: CKR_PIN_INCORRECT");
    EXPECT_EQ(std::string(e.what()).find(wrong), std::string::npos);
  }
  EXPECT_EQ(pool.open_sessions(), 0u);
  ::setenv("KEYSVC_POOL_TEST_PIN", test::TestToken::get().pin().c_str(), 1);
  auto l = pool.lease();  // would block forever if the slot had leaked (max 1)
  EXPECT_TRUE(l->user_logged_in());
  EXPECT_EQ(pool.open_sessions(), 1u);
}

// Many HMACs from several threads; never more than max sessions; every MAC right.
TEST(SessionPool, ConcurrentHmacsStayWithinMax) {
  test::TestToken::get().clear();
  constexpr std::size_t kMax = 2;
  constexpr int kThreads = 4;
  constexpr int kPerThread = 250;
  SessionPool pool(test::test_hsm_token(), pin_file(), kMax);
  ByteVec value = test::random_bytes(32);
  CK_OBJECT_HANDLE key = pool.run([&](Session& s) { return import_hmac_key(s, test::as_bytes("c"), "c", value); });

  std::atomic<int> wrong{0}, errors{0}, too_many{0}, done{0};
  std::mutex handles_mutex;
  std::set<CK_SESSION_HANDLE> handles;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        ByteVec data = test::random_bytes(static_cast<std::size_t>(16 + (t * 7 + i) % 48));
        try {
          auto mac = pool.run([&](Session& s) {
            if (pool.open_sessions() > kMax) ++too_many;
            {
              std::lock_guard lock(handles_mutex);
              handles.insert(s.handle());
            }
            std::array<std::uint8_t, kHmacSha256Bytes> m{};
            hmac_sha256(s, key, data, m);
            return m;
          });
          if (ByteVec(mac.begin(), mac.end()) != test::openssl_hmac_sha256(value, data)) ++wrong;
          ++done;
        } catch (const std::exception&) {
          ++errors;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(done.load(), kThreads * kPerThread);
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(too_many.load(), 0);
  EXPECT_LE(pool.open_sessions(), kMax);
  EXPECT_LE(handles.size(), kMax);
  EXPECT_GE(handles.size(), 1u);
}

// After a module restart the idle sessions are of a finished generation: the next
// lease drops them without a call and opens (and logs in) a new one in their place.
TEST(SessionPool, DropsIdleSessionsOfAnEarlierModuleGenerationWithoutClosingThem) {
  SessionPool pool(test::test_hsm_token(), pin_file(), 2);
  { auto a = pool.lease(), b = pool.lease(); }
  ASSERT_EQ(pool.open_sessions(), 2u);
  auto m = pool.token().module();
  ASSERT_TRUE(m->restart(1s));
  const auto closes = m->stats().snapshot(Call::kCloseSession).count;
  auto lease = pool.lease();
  EXPECT_FALSE(lease->stale());
  EXPECT_TRUE(lease->user_logged_in()) << "the new session logged in again";
  EXPECT_EQ(pool.open_sessions(), 1u);
  EXPECT_EQ(m->stats().snapshot(Call::kCloseSession).count, closes);
}

}  // namespace
}  // namespace keysvc::hsm
