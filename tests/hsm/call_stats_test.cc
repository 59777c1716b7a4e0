#include "keysvc/hsm/call_stats.h"

#include <gtest/gtest.h>

#include <array>
#include <thread>
#include <vector>

#include "keysvc/hsm/error.h"
#include "keysvc/hsm/object.h"
#include "keysvc/hsm/secret_key.h"
#include "test_helpers.h"

namespace keysvc::hsm {
namespace {

std::uint64_t errors_of(const CallSnapshot& s, CK_RV rv) {
  for (const auto& [r, n] : s.errors)
    if (r == rv) return n;
  return 0;
}

TEST(CallStats, NamesEveryFunction) {
  EXPECT_EQ(call_name(Call::kInitialize), "C_Initialize");
  EXPECT_EQ(call_name(Call::kSignInit), "C_SignInit");
  EXPECT_EQ(call_name(Call::kSign), "C_Sign");
  EXPECT_EQ(call_name(Call::kFindObjects), "C_FindObjects");
  EXPECT_EQ(call_name(Call::kCopyObject), "C_CopyObject");
  for (std::size_t i = 0; i < kCallCount; ++i) {
    std::string_view name = call_name(static_cast<Call>(i));
    EXPECT_TRUE(name.starts_with("C_") && name.size() > 2 && name != "C_?") << i;
  }
}

TEST(CallStats, BucketsAreInclusiveUpperBounds) {
  CallStats stats;
  stats.record(Call::kSign, 0, CKR_OK);                      // bucket 0 (<= 1 us)
  stats.record(Call::kSign, 1'000, CKR_OK);                  // bucket 0: a bound belongs to its bucket
  stats.record(Call::kSign, 1'001, CKR_OK);                  // bucket 1 (<= 2.5 us)
  stats.record(Call::kSign, 30'000, CKR_OK);                 // bucket 5 (<= 50 us)
  stats.record(Call::kSign, 2'500'000'000, CKR_OK);          // the last bound's bucket
  stats.record(Call::kSign, 2'500'000'001, CKR_OK);          // the unbounded bucket
  CallSnapshot s = stats.snapshot(Call::kSign);
  EXPECT_EQ(s.call, Call::kSign);
  EXPECT_EQ(s.count, 6u);
  EXPECT_EQ(s.total_ns, 0u + 1'000 + 1'001 + 30'000 + 2'500'000'000 + 2'500'000'001);
  std::array<std::uint64_t, kLatencyBuckets> want{};
  want[0] = 2;
  want[1] = 1;
  want[5] = 1;
  want[kLatencyBuckets - 2] = 1;
  want[kLatencyBuckets - 1] = 1;
  EXPECT_EQ(s.buckets, want);
  EXPECT_TRUE(s.errors.empty());
  EXPECT_EQ(stats.snapshot(Call::kSignInit).count, 0u);
}

TEST(CallStats, CountsErrorsByReturnValue) {
  CallStats stats;
  stats.record(Call::kLogin, 10, CKR_PIN_INCORRECT);
  stats.record(Call::kLogin, 10, CKR_PIN_INCORRECT);
  stats.record(Call::kLogin, 10, CKR_OK);
  stats.record(Call::kSign, 10, CKR_DEVICE_ERROR);
  CallSnapshot login = stats.snapshot(Call::kLogin);
  EXPECT_EQ(login.count, 3u);
  ASSERT_EQ(login.errors.size(), 1u);
  EXPECT_EQ(login.errors[0], (std::pair<CK_RV, std::uint64_t>{CKR_PIN_INCORRECT, 2}));
  EXPECT_EQ(login.error_count(), 2u);
  CallSnapshot sign = stats.snapshot(Call::kSign);
  EXPECT_EQ(errors_of(sign, CKR_DEVICE_ERROR), 1u);
  // snapshot() lists the functions called, in enum order.
  auto all = stats.snapshot();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].call, Call::kLogin);
  EXPECT_EQ(all[1].call, Call::kSign);
}

TEST(CallStats, ConcurrentRecordsAreAllCounted) {
  CallStats stats;
  constexpr int kThreads = 4, kPerThread = 100'000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i)
        stats.record(t % 2 ? Call::kSign : Call::kSignInit, static_cast<std::uint64_t>(i), i % 1000 ? CKR_OK : CKR_GENERAL_ERROR);
    });
  for (auto& th : threads) th.join();
  for (Call c : {Call::kSign, Call::kSignInit}) {
    CallSnapshot s = stats.snapshot(c);
    EXPECT_EQ(s.count, 2u * kPerThread);
    EXPECT_EQ(errors_of(s, CKR_GENERAL_ERROR), 2u * kPerThread / 1000);
  }
}

TEST(CallStats, CallAndCheckedCallRecordTheirResult) {
  CallStats stats;
  auto ok = [](int) -> CK_RV { return CKR_OK; };
  auto bad = [](int) -> CK_RV { return CKR_KEY_HANDLE_INVALID; };
  EXPECT_EQ(call(stats, Call::kSignInit, +ok, 1), static_cast<CK_RV>(CKR_OK));
  EXPECT_EQ(call(stats, Call::kSignInit, +bad, 1), static_cast<CK_RV>(CKR_KEY_HANDLE_INVALID));
  try {
    checked_call(stats, Call::kSignInit, +bad, 1);
    FAIL() << "checked_call did not throw";
  } catch (const Pkcs11Error& e) {
    EXPECT_STREQ(e.what(), "C_SignInit: CKR_KEY_HANDLE_INVALID");
  }
  CallSnapshot s = stats.snapshot(Call::kSignInit);
  EXPECT_EQ(s.count, 3u);
  EXPECT_EQ(errors_of(s, CKR_KEY_HANDLE_INVALID), 2u);
}

// ---- against the real token: the module's stats count exactly the calls made ----

class ModuleCallStats : public ::testing::Test {
 protected:
  void SetUp() override {
    test::TestToken::get().clear();
    token_ = std::make_unique<Token>(test::test_hsm_token());
  }
  CallStats& stats() { return token_->module()->stats(); }
  std::uint64_t count(Call c) { return stats().snapshot(c).count; }
  std::uint64_t errors(Call c, CK_RV rv) { return errors_of(stats().snapshot(c), rv); }

  std::unique_ptr<Token> token_;
};

TEST_F(ModuleCallStats, SessionsShareTheirModulesStats) {
  Session s(*token_, true);
  EXPECT_EQ(&s.stats(), &token_->module()->stats());
  EXPECT_GE(count(Call::kInitialize), 1u);  // loading the module
}

TEST_F(ModuleCallStats, CountsEqualTheCallsMade) {
  const auto open0 = count(Call::kOpenSession), close0 = count(Call::kCloseSession);
  {
    auto s = test::user_session();
    EXPECT_EQ(count(Call::kOpenSession), open0 + 1);
    CK_OBJECT_HANDLE key = generate_hmac_key(*s, test::random_bytes(16), "stats-key");

    const auto init0 = stats().snapshot(Call::kSignInit), sign0 = stats().snapshot(Call::kSign);
    constexpr int kSigns = 25;
    std::array<std::uint8_t, kHmacSha256Bytes> mac{};
    for (int i = 0; i < kSigns; ++i) hmac_sha256(*s, key, test::as_bytes("message"), mac);
    const auto init1 = stats().snapshot(Call::kSignInit), sign1 = stats().snapshot(Call::kSign);
    EXPECT_EQ(init1.count - init0.count, static_cast<std::uint64_t>(kSigns));
    EXPECT_EQ(sign1.count - sign0.count, static_cast<std::uint64_t>(kSigns));
    EXPECT_GT(sign1.total_ns, sign0.total_ns);
    EXPECT_EQ(sign1.error_count(), sign0.error_count());

    const auto find_init0 = count(Call::kFindObjectsInit), final0 = count(Call::kFindObjectsFinal);
    EXPECT_EQ(find_objects(*s, {.label = std::string("stats-key")}).size(), 1u);
    EXPECT_EQ(count(Call::kFindObjectsInit), find_init0 + 1);
    EXPECT_EQ(count(Call::kFindObjectsFinal), final0 + 1);
  }
  EXPECT_EQ(count(Call::kCloseSession), close0 + 1);
}

TEST_F(ModuleCallStats, AWrongPinShowsUpByItsReturnValue) {
  const auto before = errors(Call::kLogin, CKR_PIN_INCORRECT);
  Session s(*token_, true);
  ASSERT_FALSE(s.user_logged_in());
  EXPECT_THROW(s.login(CKU_USER, SecretString("not-the-pin-" + test::random_text(8))), Pkcs11Error);
  EXPECT_EQ(errors(Call::kLogin, CKR_PIN_INCORRECT), before + 1);
}

TEST_F(ModuleCallStats, AnInvalidKeyHandleShowsUpByItsReturnValue) {
  auto s = test::user_session();
  const auto init0 = stats().snapshot(Call::kSignInit);
  const auto sign0 = count(Call::kSign);
  std::array<std::uint8_t, kHmacSha256Bytes> mac{};
  CK_RV rv = CKR_OK;
  try {
    hmac_sha256(*s, 0x7fff'fff0, test::as_bytes("x"), mac);
  } catch (const Pkcs11Error& e) {
    rv = e.rv();
  }
  ASSERT_NE(rv, static_cast<CK_RV>(CKR_OK)) << "C_SignInit accepted a made-up handle";
  const auto init1 = stats().snapshot(Call::kSignInit);
  EXPECT_EQ(init1.count, init0.count + 1);
  EXPECT_EQ(errors_of(init1, rv), errors_of(init0, rv) + 1) << rv_name(rv);
  EXPECT_EQ(count(Call::kSign), sign0) << "no C_Sign after a failed C_SignInit";
}

}  // namespace
}  // namespace keysvc::hsm
