// The login policy through a real session pool on the SoftHSM test token: a PIN the token
// refused costs at most one C_Login per change of its source, whatever the number of
// leases or threads that find the user logged out.
#include "keysvc/hsm/login_policy.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>
#include <vector>

#include "fault_control.h"
#include "known_secrets.h"
#include "keysvc/hsm/report.h"
#include "keysvc/hsm/session_pool.h"
#include "test_helpers.h"

namespace keysvc::hsm {
namespace {

std::mutex g_reports_mutex;
std::vector<std::string> g_reports;
void capture(ReportLevel, std::string_view line) {
  std::lock_guard lock(g_reports_mutex);
  g_reports.emplace_back(line);
}

class LoginPolicyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test::TestToken::get().dir() + "/login-policy-" + test::random_text(8);
    std::filesystem::create_directories(dir_);
    pin_path_ = dir_ + "/pin";
    write_pin(test::TestToken::get().pin());
    set_report_sink(&capture);
    std::lock_guard lock(g_reports_mutex);
    g_reports.clear();
  }
  void TearDown() override {
    set_report_sink(nullptr);
    std::filesystem::remove_all(dir_);
  }

  // Replaces the PIN file as rotation tools do: a new file renamed over the old one.
  void write_pin(const std::string& pin) {
    const std::string tmp = pin_path_ + ".tmp";
    std::ofstream(tmp, std::ios::trunc) << pin << "\n";
    ASSERT_EQ(::rename(tmp.c_str(), pin_path_.c_str()), 0);
  }
  static std::uint64_t logins(const Token& token) {
    return token.module()->stats().snapshot(Call::kLogin).count;
  }
  // Logs the whole application out (login state is shared by all its sessions), as a
  // token reset would.
  static void log_everyone_out(const Token& token) {
    Session s(token, true);
    if (s.user_logged_in()) {
      ASSERT_EQ(s.fn()->C_Logout(s.handle()), static_cast<CK_RV>(CKR_OK));
    }
  }
  static std::size_t reports_with(const std::string& text) {
    std::lock_guard lock(g_reports_mutex);
    return static_cast<std::size_t>(std::count_if(g_reports.begin(), g_reports.end(), [&](const std::string& l) {
      return l.find(text) != std::string::npos;
    }));
  }
  // A pool of `max` sessions on the test token whose PIN file holds a wrong PIN, with
  // the application logged out: its next lease must log in.
  std::unique_ptr<SessionPool> pool_with_wrong_pin(const Token& token, std::size_t max) {
    auto pool = std::make_unique<SessionPool>(token, PinSource::parse("file:" + pin_path_), max);
    log_everyone_out(token);
    write_pin("wrong-" + test::random_text(10));
    return pool;
  }
  // A lease that must fail with CKR_PIN_INCORRECT.
  static void expect_refused(SessionPool& pool) {
    try {
      auto l = pool.lease();
      ADD_FAILURE() << "logged in with a wrong PIN";
    } catch (const Pkcs11Error& e) {
      EXPECT_EQ(e.rv(), static_cast<CK_RV>(CKR_PIN_INCORRECT)) << e.what();
      EXPECT_EQ(std::string(e.what()).rfind("C_Login: CKR_PIN_INCORRECT", 0), 0u) << e.what();
    }
  }

  std::string dir_;
  std::string pin_path_;
};

TEST_F(LoginPolicyTest, AWrongPinIsTriedOncePerChangeOfItsFile) {
  Token token = test::test_hsm_token();
  SessionPool pool(token, PinSource::parse("file:" + pin_path_), 1);
  { auto l = pool.lease(); }  // logged in with the right PIN
  log_everyone_out(token);
  { pool.lease().discard(); }  // the idle session predates the logout
  const std::string wrong = "wrong-" + test::random_text(12);
  test::remember_secret_text(wrong);
  write_pin(wrong);

  const std::uint64_t before = logins(token);
  for (int i = 0; i < 20; ++i) expect_refused(pool);
  EXPECT_EQ(logins(token) - before, 1u) << "one C_Login for 20 leases";
  EXPECT_EQ(pool.login_refusals(), 1u);
  EXPECT_EQ(pool.login_policy().withheld(), 19u);
  EXPECT_EQ(reports_with("the token refused the PIN from file:" + pin_path_ + " (CKR_PIN_INCORRECT)"), 1u);

  // The same wrong PIN written again (a new file): one more attempt, no more.
  write_pin(wrong);
  for (int i = 0; i < 5; ++i) expect_refused(pool);
  EXPECT_EQ(logins(token) - before, 2u);
  EXPECT_EQ(pool.login_refusals(), 2u);

  // The right PIN: logged in at the next lease.
  write_pin(test::TestToken::get().pin());
  auto l = pool.lease();
  EXPECT_TRUE(l->user_logged_in());
  EXPECT_EQ(logins(token) - before, 3u);
  EXPECT_EQ(pool.login_refusals(), 2u);
}

// After a PIN change in the token, the same file content is right again once the file
// is touched (the operator's signal that the source has changed).
TEST_F(LoginPolicyTest, TouchingThePinFileAllowsOneMoreAttempt) {
  Token token = test::test_hsm_token();
  auto owned = pool_with_wrong_pin(token, 1);
  SessionPool& pool = *owned;
  const std::uint64_t before = logins(token);
  expect_refused(pool);
  expect_refused(pool);
  EXPECT_EQ(logins(token) - before, 1u);
  struct timespec later[2] = {{0, UTIME_NOW}, {0, UTIME_NOW}};
  std::this_thread::sleep_for(std::chrono::milliseconds(10));  // a different mtime
  ASSERT_EQ(::utimensat(AT_FDCWD, pin_path_.c_str(), later, 0), 0);
  expect_refused(pool);
  expect_refused(pool);
  EXPECT_EQ(logins(token) - before, 2u);
}

TEST_F(LoginPolicyTest, ThreadsThatFindTheUserLoggedOutSpendOneAttempt) {
  Token token = test::test_hsm_token();
  auto owned = pool_with_wrong_pin(token, 8);
  SessionPool& pool = *owned;
  const std::uint64_t before = logins(token);
  std::atomic<int> refused{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 5; ++i) {
        try {
          auto l = pool.lease();
        } catch (const Pkcs11Error& e) {
          if (e.rv() == CKR_PIN_INCORRECT) ++refused;
        }
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(refused.load(), 40);
  EXPECT_EQ(logins(token) - before, 1u);
  EXPECT_EQ(pool.login_refusals(), 1u);
}

// An env: PIN is read once and leaves the environment: a refused one stays refused until
// the variable is set again.
TEST_F(LoginPolicyTest, AnEnvPinIsRetriedOnlyWhenSetAgain) {
  Token token = test::test_hsm_token();
  ::setenv("KEYSVC_LOGIN_POLICY_PIN", "env-wrong-1234", 1);
  SessionPool pool(token, PinSource::parse("env:KEYSVC_LOGIN_POLICY_PIN"), 1);
  log_everyone_out(token);
  const std::uint64_t before = logins(token);
  expect_refused(pool);
  EXPECT_EQ(std::getenv("KEYSVC_LOGIN_POLICY_PIN"), nullptr) << "scrubbed from the environment";
  expect_refused(pool);
  expect_refused(pool);
  EXPECT_EQ(logins(token) - before, 1u);
  ::setenv("KEYSVC_LOGIN_POLICY_PIN", test::TestToken::get().pin().c_str(), 1);
  EXPECT_TRUE(pool.lease()->user_logged_in());
  EXPECT_EQ(logins(token) - before, 2u);
}

// Errors that do not say the PIN is wrong (a device error) are not remembered: the next
// lease tries again with the same PIN.
TEST_F(LoginPolicyTest, OtherLoginErrorsAreRetried) {
  test::FaultControl faults(dir_ + "/faults");
  faults.export_env();
  Token token = Token::find(Module::load(test::FaultControl::module_path()),
                            TokenUri::parse(test::TestToken::get().token_uri()));
  SessionPool pool(token, PinSource::parse("file:" + pin_path_), 1);
  log_everyone_out(token);
  const std::uint64_t before = logins(token);
  faults.set("C_Login CKR_DEVICE_ERROR times 1\n");
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // the module polls every 2 ms
  EXPECT_THROW(pool.lease(), Pkcs11Error);
  EXPECT_TRUE(pool.lease()->user_logged_in());
  EXPECT_EQ(pool.login_refusals(), 0u);
  EXPECT_EQ(logins(token) - before, 2u);
  EXPECT_EQ(faults.stats().injected, 1u);
  faults.clear();
}

TEST(LoginPolicy, PinRefusalCodes) {
  for (CK_RV rv : {CKR_PIN_INCORRECT, CKR_PIN_INVALID, CKR_PIN_LEN_RANGE, CKR_PIN_EXPIRED, CKR_PIN_LOCKED})
    EXPECT_TRUE(LoginPolicy::is_pin_refusal(rv)) << rv_name(rv);
  for (CK_RV rv : {CKR_OK, CKR_GENERAL_ERROR, CKR_DEVICE_ERROR, CKR_USER_ALREADY_LOGGED_IN, CKR_TOKEN_NOT_PRESENT})
    EXPECT_FALSE(LoginPolicy::is_pin_refusal(rv)) << rv_name(rv);
}

}  // namespace
}  // namespace keysvc::hsm
