#include "keysvc/hsm/token_uri.h"

#include <gtest/gtest.h>

#include <cstring>

#include "keysvc/hsm/error.h"
#include "keysvc/hsm/secure_memory.h"

namespace keysvc::hsm {
namespace {

void pad(CK_UTF8CHAR* field, std::size_t size, const std::string& value) {
  std::memset(field, ' ', size);
  std::memcpy(field, value.data(), std::min(size, value.size()));
}

CK_TOKEN_INFO token_info(const std::string& label, const std::string& serial = "0123456789abcdef") {
  CK_TOKEN_INFO info{};
  pad(info.label, sizeof info.label, label);
  pad(info.manufacturerID, sizeof info.manufacturerID, "SoftHSM project");
  pad(info.model, sizeof info.model, "SoftHSM v2");
  pad(info.serialNumber, sizeof info.serialNumber, serial);
  return info;
}

std::string config_error(std::string_view uri) {
  try {
    TokenUri::parse(uri);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(TokenUri, MatchesOnTokenAttributes) {
  TokenUri uri = TokenUri::parse("pkcs11:token=keysvc");
  EXPECT_TRUE(uri.matches(token_info("keysvc")));
  EXPECT_FALSE(uri.matches(token_info("keysvc2")));
  EXPECT_FALSE(uri.matches(token_info("other")));

  TokenUri with_serial = TokenUri::parse("pkcs11:token=keysvc;serial=42");
  EXPECT_TRUE(with_serial.matches(token_info("keysvc", "42")));
  EXPECT_FALSE(with_serial.matches(token_info("keysvc", "43")));

  TokenUri model = TokenUri::parse("pkcs11:model=SoftHSM%20v2;manufacturer=SoftHSM%20project");
  EXPECT_TRUE(model.matches(token_info("anything")));
  EXPECT_TRUE(TokenUri::parse("pkcs11:").matches(token_info("anything")));
  EXPECT_FALSE(TokenUri::parse("pkcs11:model=Other").matches(token_info("keysvc")));
}

TEST(TokenUri, QueryAttributes) {
  TokenUri uri = TokenUri::parse(
      "pkcs11:token=keysvc?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/keysvc/pin");
  EXPECT_EQ(uri.module_path(), "/usr/lib/softhsm/libsofthsm2.so");
  EXPECT_EQ(uri.pin_source(), "file:/etc/keysvc/pin");
  EXPECT_FALSE(uri.pin_value().has_value());

  TokenUri plain = TokenUri::parse("pkcs11:token=keysvc");
  EXPECT_FALSE(plain.module_path().has_value());
  EXPECT_FALSE(plain.pin_source().has_value());
  EXPECT_FALSE(plain.pin_value().has_value());
  EXPECT_EQ(plain.describe(), "pkcs11:token=keysvc");
}

TEST(TokenUri, PinValueIsKeptButNeverDescribed) {
  TokenUri uri = TokenUri::parse("pkcs11:token=keysvc?pin-value=S3cretPin");
  ASSERT_TRUE(uri.pin_value().has_value());
  EXPECT_EQ(uri.pin_value()->reveal(), "S3cretPin");
  EXPECT_EQ(uri.describe().find("S3cretPin"), std::string::npos) << uri.describe();
  EXPECT_EQ(uri.describe().find("pin-value"), std::string::npos) << uri.describe();
  EXPECT_NE(uri.describe().find("token=keysvc"), std::string::npos) << uri.describe();
}

TEST(TokenUri, MalformedUrisAreConfigErrors) {
  for (const char* bad : {"pkcs11:token=%zz", "http://x", "", "token=keysvc", "pkcs11:token=%4"}) {
    std::string msg = config_error(bad);
    EXPECT_NE(msg, "(no error)") << "accepted '" << bad << "'";
    EXPECT_NE(msg.find("invalid PKCS#11 URI"), std::string::npos) << msg;
    EXPECT_NE(msg.find(std::string("'") + bad + "'"), std::string::npos) << "message does not name the URI: " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

TEST(TokenUri, MalformedUriWithPinValueDoesNotEchoThePin) {
  std::string msg = config_error("pkcs11:token=%zz?pin-value=S3cretPin");
  EXPECT_NE(msg, "(no error)");
  EXPECT_EQ(msg.find("S3cretPin"), std::string::npos) << msg;
}

// The text never holds the PIN: it goes to secure memory, percent-decoded, as soon as
// the text is made; the other query attributes stay as written.
TEST(TokenUriText, TakesThePinValueOutOfTheText) {
  TokenUriText t("pkcs11:token=keysvc?module-path=/m.so&pin-value=S3cret%20P%25n&pin-source=x");
  EXPECT_EQ(t.text(), "pkcs11:token=keysvc?module-path=/m.so&pin-source=x");
  ASSERT_NE(t.pin_value(), nullptr);
  EXPECT_EQ(t.pin_value()->reveal(), "S3cret P%n");
  EXPECT_TRUE(is_secure_memory(t.pin_value()->reveal().data(), t.pin_value()->size()));
  EXPECT_EQ(TokenUriText("pkcs11:token=keysvc?pin-value=p").text(), "pkcs11:token=keysvc");
  TokenUriText none("pkcs11:token=keysvc?pin-source=file:/p");
  EXPECT_EQ(none.text(), "pkcs11:token=keysvc?pin-source=file:/p");
  EXPECT_EQ(none.pin_value(), nullptr);
  // Copies share the PIN; the text compares and prints as a string.
  TokenUriText copy = t;
  EXPECT_EQ(copy.pin_value(), t.pin_value());
  EXPECT_TRUE(copy == "pkcs11:token=keysvc?module-path=/m.so&pin-source=x");
  EXPECT_EQ(TokenUri::parse(t).pin_value()->reveal(), "S3cret P%n");
  EXPECT_EQ(TokenUri::parse(t).pin_source(), "x");
}

TEST(TokenUriText, BadPinValuesAreOneLineWithoutThePin) {
  for (const char* bad : {"pkcs11:token=k?pin-value=S3cret%zz", "pkcs11:token=k?pin-value=S3cret%4",
                          "pkcs11:token=k?pin-value=S3cret&pin-value=S3cret"}) {
    try {
      TokenUriText t(bad);
      ADD_FAILURE() << "accepted " << bad;
    } catch (const ConfigError& e) {
      const std::string msg = e.what();
      EXPECT_EQ(msg.find("S3cret"), std::string::npos) << msg;
      EXPECT_NE(msg.find("pin-value"), std::string::npos) << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
  }
  EXPECT_THROW(TokenUriText("pkcs11:token=k?pin-value=" + std::string(kMaxSecretBytes + 1, 'p')), ConfigError);
}

// A pin-value p11-kit would read but the split does not take out (an escaped attribute
// name) is refused rather than left in p11-kit's hands and in the printable text.
TEST(TokenUri, PinValueP11KitWouldReadIsNeverLeftInTheText) {
  std::string msg = config_error("pkcs11:token=keysvc?pin%2Dvalue=S3cretPin");
  if (msg != "(no error)") {
    EXPECT_EQ(msg.find("S3cretPin"), std::string::npos) << msg;
  } else {
    TokenUri uri = TokenUri::parse("pkcs11:token=keysvc?pin%2Dvalue=S3cretPin");
    EXPECT_FALSE(uri.pin_value().has_value());
  }
}

TEST(TokenUri, ObjectAttributesAreRefused) {
  for (const char* uri : {"pkcs11:token=keysvc;object=my-key", "pkcs11:token=keysvc;id=%01%02",
                          "pkcs11:token=keysvc;type=secret-key"}) {
    std::string msg = config_error(uri);
    EXPECT_NE(msg.find("names objects"), std::string::npos) << uri << ": " << msg;
  }
}

TEST(TrimPadded, RemovesBlankAndNulPadding) {
  const unsigned char a[8] = {'a', 'b', ' ', 'c', ' ', ' ', ' ', ' '};
  EXPECT_EQ(trim_padded(a, sizeof a), "ab c");
  const unsigned char b[4] = {'x', 0, 0, 0};
  EXPECT_EQ(trim_padded(b, sizeof b), "x");
  const unsigned char c[3] = {' ', ' ', ' '};
  EXPECT_EQ(trim_padded(c, sizeof c), "");
  const unsigned char d[3] = {'f', 'u', 'l'};
  EXPECT_EQ(trim_padded(d, sizeof d), "ful");
}

}  // namespace
}  // namespace keysvc::hsm
