#include "keysvc/hsm/session.h"

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <thread>

#include "keysvc/hsm/error.h"
#include "keysvc/hsm/object.h"
#include "fault_control.h"
#include "keysvc/hsm/token.h"
#include "test_helpers.h"

namespace keysvc::hsm {
namespace {

CK_SESSION_INFO session_info(const Session& s) {
  CK_SESSION_INFO info{};
  check(s.fn()->C_GetSessionInfo(s.handle(), &info), "C_GetSessionInfo");
  return info;
}

TEST(Session, OpensReadWriteOrReadOnlyAndClosesOnDestruction) {
  Token token = test::test_hsm_token();
  CK_SESSION_HANDLE handle = CK_INVALID_HANDLE;
  CK_FUNCTION_LIST* fn = nullptr;
  {
    Session rw(token, true);
    handle = rw.handle();
    fn = rw.fn();
    EXPECT_NE(handle, static_cast<CK_SESSION_HANDLE>(CK_INVALID_HANDLE));
    EXPECT_EQ(fn, token.module()->fn());
    CK_SESSION_INFO info = session_info(rw);
    EXPECT_EQ(info.slotID, token.slot());
    EXPECT_TRUE(info.flags & CKF_RW_SESSION);

    Session ro(token, false);
    EXPECT_NE(ro.handle(), handle);
    EXPECT_FALSE(session_info(ro).flags & CKF_RW_SESSION);
  }
  CK_SESSION_INFO info{};
  EXPECT_EQ(fn->C_GetSessionInfo(handle, &info), static_cast<CK_RV>(CKR_SESSION_HANDLE_INVALID));
}

TEST(Session, ReadOnlySessionCannotCreateTokenObjects) {
  Session ro(test::test_hsm_token(), false);
  ro.login(CKU_USER, SecretString(test::TestToken::get().pin()));
  try {
    create_data_object(ro, "app", "label", test::as_bytes("v"));
    FAIL() << "created a token object in a read-only session";
  } catch (const Pkcs11Error& e) {
    EXPECT_EQ(e.rv(), static_cast<CK_RV>(CKR_SESSION_READ_ONLY)) << e.what();
  }
}

TEST(Session, LoginIsSharedAndIdempotent) {
  Token token = test::test_hsm_token();
  Session a(token, true);
  Session b(token, true);
  EXPECT_FALSE(a.user_logged_in());
  EXPECT_FALSE(b.user_logged_in());
  a.login(CKU_USER, SecretString(test::TestToken::get().pin()));
  EXPECT_TRUE(a.user_logged_in());
  EXPECT_TRUE(b.user_logged_in()) << "login state is per application, not per session";
  // Logging in again (CKR_USER_ALREADY_LOGGED_IN) is a success.
  EXPECT_NO_THROW(b.login(CKU_USER, SecretString(test::TestToken::get().pin())));
  EXPECT_EQ(session_info(a).state, static_cast<CK_STATE>(CKS_RW_USER_FUNCTIONS));
}

// A wrong PIN: one line "C_Login: CKR_PIN_INCORRECT", without the PIN.
TEST(Session, WrongPinIsPinIncorrectWithoutThePin) {
  Session s(test::test_hsm_token(), true);
  const std::string wrong = "Wr0ngPin-" + test::random_text(12);
  try {
    s.login(CKU_USER, SecretString(wrong));
    FAIL() << "logged in with a wrong PIN";
  } catch (const Pkcs11Error& e) {
    EXPECT_STREQ(e.what(), "C_Login: CKR_PIN_INCORRECT");
    EXPECT_EQ(e.rv(), static_cast<CK_RV>(CKR_PIN_INCORRECT));
    EXPECT_EQ(std::string(e.what()).find(wrong), std::string::npos);
    EXPECT_EQ(std::string(e.what()).find(test::TestToken::get().pin()), std::string::npos);
  }
  EXPECT_FALSE(s.user_logged_in());
  // The right PIN still works afterwards.
  EXPECT_NO_THROW(s.login(CKU_USER, SecretString(test::TestToken::get().pin())));
  EXPECT_TRUE(s.user_logged_in());
}

// After a module restart (module.h) a session of the old generation is dead: its calls
// are not made (CKR_SESSION_HANDLE_INVALID, which callers treat as a dead session) and
// its destructor closes nothing (the handle may name a new session now).
TEST(Session, AfterAModuleRestartItIsDeadAndNeverClosed) {
  Token token = test::test_hsm_token();
  auto m = token.module();
  auto old = std::make_unique<Session>(token, true);
  EXPECT_FALSE(old->stale());
  ASSERT_TRUE(m->restart(std::chrono::seconds(1)));
  EXPECT_TRUE(old->stale());
  try {
    old->user_logged_in();
    FAIL() << "a call on a stale session was made";
  } catch (const Pkcs11Error& e) {
    EXPECT_EQ(e.rv(), static_cast<CK_RV>(CKR_SESSION_HANDLE_INVALID));
    EXPECT_TRUE(e.session_is_dead());
  }
  // A new session may get the old number back: destroying the stale one leaves it open.
  Session fresh(token, true);
  const auto closes = m->stats().snapshot(Call::kCloseSession).count;
  old.reset();
  EXPECT_EQ(m->stats().snapshot(Call::kCloseSession).count, closes);
  EXPECT_EQ(session_info(fresh).slotID, token.slot());
}


// SoftHSM fails a login that reads the token's file while another process's login
// rewrites it, with CKR_GENERAL_ERROR: login() tries twice more, and only for that code.
TEST(Session, LoginRetriesAGeneralErrorTwiceAndNothingElse) {
  test::TestToken& token = test::TestToken::get();
  test::FaultControl faults(token.dir() + "/login-faults");
  faults.export_env();
  Token t = Token::find(Module::load(test::FaultControl::module_path()), TokenUri::parse(token.token_uri()));
  Session s(t, false);
  auto set = [&](const std::string& rules) {
    faults.set(rules);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // the module polls every 2 ms
  };

  set("C_Login CKR_GENERAL_ERROR times 2\n");
  EXPECT_NO_THROW(s.login(CKU_USER, SecretString(token.pin())));
  EXPECT_TRUE(s.user_logged_in());
  EXPECT_EQ(faults.stats().injected, 2u);

  set("C_Login CKR_GENERAL_ERROR\n");
  try {
    s.login(CKU_USER, SecretString(token.pin()));
    FAIL() << "a login that always fails succeeded";
  } catch (const Pkcs11Error& e) {
    EXPECT_EQ(e.rv(), static_cast<CK_RV>(CKR_GENERAL_ERROR));
  }
  EXPECT_EQ(faults.stats().injected, 2u + 3u) << "one call and two retries";

  set("C_Login CKR_DEVICE_ERROR\n");
  EXPECT_THROW(s.login(CKU_USER, SecretString(token.pin())), Pkcs11Error);
  EXPECT_EQ(faults.stats().injected, 2u + 3u + 1u) << "other errors are never retried";
  faults.clear();
}

}  // namespace
}  // namespace keysvc::hsm
