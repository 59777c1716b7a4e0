#include "keysvc/hsm/token.h"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace keysvc::hsm
