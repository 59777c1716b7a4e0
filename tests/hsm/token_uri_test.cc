#include "keysvc/hsm/token_uri.h"

#include <gtest/gtest.h>

#include <cstring>

#include "keysvc/hsm/error.h"

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
