#include "keysvc/hsm/token.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include "keysvc/hsm/error.h"
#include "keysvc/hsm/session.h"
#include "test_helpers.h"

namespace keysvc::hsm {
namespace {

using test::kSoftHsmModule;

std::shared_ptr<Module> module() {
  test::TestToken::get();
  return Module::load(kSoftHsmModule);
}

TEST(Token, FindsTheTestTokenAndReportsItsInfo) {
  Token token = Token::find(module(), TokenUri::parse(test::TestToken::get().token_uri()));
  EXPECT_EQ(token.module(), module());
  TokenInfo info = token.info();
  EXPECT_EQ(info.label, "keysvc-test");
  EXPECT_EQ(info.model, "SoftHSM v2");
  EXPECT_EQ(info.manufacturer, "SoftHSM project");
  EXPECT_FALSE(info.serial.empty());
  EXPECT_EQ(info.serial.find(' '), std::string::npos) << "padding not trimmed: '" << info.serial << "'";
  EXPECT_TRUE(info.initialized);
  EXPECT_TRUE(info.user_pin_initialized);
}

TEST(Token, FindsByModelAndSerial) {
  Token token = Token::find(module(), TokenUri::parse(test::TestToken::get().token_uri()));
  std::string serial = token.info().serial;
  Token by_serial = Token::find(module(), TokenUri::parse("pkcs11:model=SoftHSM%20v2;serial=" + serial));
  EXPECT_EQ(by_serial.slot(), token.slot());
  Token by_model = Token::find(module(), TokenUri::parse("pkcs11:model=SoftHSM%20v2"));
  EXPECT_EQ(by_model.slot(), token.slot());
}

TEST(Token, MissingTokenIsAConfigErrorNamingTheUriAndTheTokensPresent) {
  try {
    Token::find(module(), TokenUri::parse("pkcs11:token=no-such-token"));
    FAIL() << "found a token that does not exist";
  } catch (const ConfigError& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("pkcs11:token=no-such-token"), std::string::npos) << msg;
    EXPECT_NE(msg.find("keysvc-test"), std::string::npos) << msg;
    EXPECT_NE(msg.find(kSoftHsmModule), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

TEST(Token, MissingTokenErrorDoesNotShowAPinValue) {
  try {
    Token::find(module(), TokenUri::parse("pkcs11:token=no-such-token?pin-value=T0pS3cret"));
    FAIL() << "found a token that does not exist";
  } catch (const ConfigError& e) {
    std::string msg = e.what();
    EXPECT_EQ(msg.find("T0pS3cret"), std::string::npos) << msg;
    EXPECT_NE(msg.find("no-such-token"), std::string::npos) << msg;
  }
}

TEST(Token, InitFreeSlotMakesAUsableTokenAndAmbiguousUrisAreRefused) {
  auto m = module();
  const std::string user_pin = test::random_text(12);
  Token second = Token::init_free_slot(m, "keysvc-second", SecretString(test::random_text(12)), SecretString(user_pin));
  EXPECT_EQ(second.info().label, "keysvc-second");
  EXPECT_TRUE(second.info().user_pin_initialized);
  EXPECT_NE(second.slot(), Token::find(m, TokenUri::parse(test::TestToken::get().token_uri())).slot());
  EXPECT_EQ(Token::find(m, TokenUri::parse("pkcs11:token=keysvc-second")).slot(), second.slot());
  {
    Session s(second, true);
    EXPECT_NO_THROW(s.login(CKU_USER, SecretString(user_pin)));
    EXPECT_TRUE(s.user_logged_in());
  }
  // Both tokens are SoftHSM v2 now: a URI that only names the model is ambiguous.
  try {
    Token::find(m, TokenUri::parse("pkcs11:model=SoftHSM%20v2"));
    FAIL() << "an ambiguous URI picked a token";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("several tokens"), std::string::npos) << e.what();
  }
  // The error for a missing token lists both.
  try {
    Token::find(m, TokenUri::parse("pkcs11:token=absent"));
    FAIL();
  } catch (const ConfigError& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("keysvc-test"), std::string::npos) << msg;
    EXPECT_NE(msg.find("keysvc-second"), std::string::npos) << msg;
  }
}


std::uint64_t calls(const Module& m, Call c) { return m.stats().snapshot(c).count; }

bool lists_initialised_token(const Module& m, const std::string& label) {
  for (CK_SLOT_ID slot : m.slots_with_token()) {
    CK_TOKEN_INFO info{};
    if (m.fn()->C_GetTokenInfo(slot, &info) != CKR_OK || !(info.flags & CKF_TOKEN_INITIALIZED)) continue;
    if (trim_padded(info.label, sizeof info.label) == label) return true;
  }
  return false;
}

// SoftHSM lists tokens once, at C_Initialize: a token another process initialises later
// (or one whose files another process was rewriting during that scan) stays invisible.
// Token::find looks again (C_Finalize + C_Initialize) before calling it missing, while
// keysvc is the module's only user in the process.
TEST(Token, FindLooksAgainForATokenAnotherProcessMadeAfterTheModuleListedItsTokens) {
  // Its own SoftHSM instance: TestToken has opened sessions through the real one.
  auto m = Module::load(test::private_softhsm_copy());
  ASSERT_TRUE(m->may_rescan_tokens());
  const std::string label = "keysvc-late-" + test::random_text(6);
  pid_t child = fork();
  ASSERT_NE(child, -1);
  if (child == 0) {  // another process: its own PKCS#11 state, then a new token
    int rc = 1;
    try {
      m->reinitialize_after_fork();
      Token::init_free_slot(m, label, SecretString(test::random_text(12)), SecretString(test::random_text(12)));
      rc = 0;
    } catch (...) {
    }
    _exit(rc);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "the child could not make the token";
  ASSERT_FALSE(lists_initialised_token(*m, label)) << "SoftHSM saw the new token without a rescan";

  const std::uint64_t finalizes = calls(*m, Call::kFinalize);
  Token late = Token::find(m, TokenUri::parse("pkcs11:token=" + label));
  EXPECT_EQ(late.info().label, label);
  EXPECT_EQ(calls(*m, Call::kFinalize), finalizes + 1);
  EXPECT_EQ(Token::find(m, TokenUri::parse(test::TestToken::get().token_uri())).info().label, "keysvc-test");

  // Once a session is open through the module, C_Finalize would close it: no rescan.
  Session session(late, false);
  EXPECT_FALSE(m->may_rescan_tokens());
  EXPECT_THROW(Token::find(m, TokenUri::parse("pkcs11:token=absent")), ConfigError);
  EXPECT_EQ(calls(*m, Call::kFinalize), finalizes + 1);
  EXPECT_NO_THROW(session.user_logged_in()) << "the session did not survive";
}

}  // namespace
}  // namespace keysvc::hsm
