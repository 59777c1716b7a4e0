#include "keysvc/hsm/error.h"

#include <gtest/gtest.h>

#include "keysvc/hsm/secret_key.h"
#include "test_helpers.h"

namespace keysvc::hsm {
namespace {

TEST(RvName, NamesKnownReturnValues) {
  EXPECT_EQ(rv_name(CKR_OK), "CKR_OK");
  EXPECT_EQ(rv_name(CKR_PIN_INCORRECT), "CKR_PIN_INCORRECT");
  EXPECT_EQ(rv_name(CKR_PIN_LOCKED), "CKR_PIN_LOCKED");
  EXPECT_EQ(rv_name(CKR_ATTRIBUTE_SENSITIVE), "CKR_ATTRIBUTE_SENSITIVE");
  EXPECT_EQ(rv_name(CKR_SESSION_HANDLE_INVALID), "CKR_SESSION_HANDLE_INVALID");
  EXPECT_EQ(rv_name(CKR_KEY_HANDLE_INVALID), "CKR_KEY_HANDLE_INVALID");
  EXPECT_EQ(rv_name(CKR_USER_NOT_LOGGED_IN), "CKR_USER_NOT_LOGGED_IN");
  EXPECT_EQ(rv_name(CKR_CRYPTOKI_ALREADY_INITIALIZED), "CKR_CRYPTOKI_ALREADY_INITIALIZED");
  EXPECT_EQ(rv_name(CKR_FUNCTION_REJECTED), "CKR_FUNCTION_REJECTED");
}

TEST(RvName, UnknownValuesInHex) {
  EXPECT_EQ(rv_name(0x12345678UL), "CKR_0x12345678");
  EXPECT_EQ(rv_name(CKR_VENDOR_DEFINED), "CKR_0x80000000");
  EXPECT_EQ(rv_name(CKR_VENDOR_DEFINED + 0x2a), "CKR_0x8000002a");
}

TEST(Pkcs11Error, MessageIsOperationAndName) {
  Pkcs11Error e("C_SignInit", CKR_KEY_HANDLE_INVALID);
  EXPECT_STREQ(e.what(), "C_SignInit: CKR_KEY_HANDLE_INVALID");
  EXPECT_EQ(e.operation(), "C_SignInit");
  EXPECT_EQ(e.rv(), static_cast<CK_RV>(CKR_KEY_HANDLE_INVALID));
  // Part of the hierarchy callers catch.
  const Error* base = &e;
  const std::runtime_error* rt = &e;
  EXPECT_NE(base, nullptr);
  EXPECT_NE(rt, nullptr);
  EXPECT_STREQ(Pkcs11Error("C_Sign", 0x1234).what(), "C_Sign: CKR_0x1234");
}

TEST(Pkcs11Error, SessionKillingReturnValues) {
  for (CK_RV rv : {CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED, CKR_USER_NOT_LOGGED_IN, CKR_DEVICE_REMOVED,
                   CKR_TOKEN_NOT_PRESENT}) {
    EXPECT_TRUE(Pkcs11Error::rv_kills_session(rv)) << rv_name(rv);
    EXPECT_TRUE(Pkcs11Error("C_Sign", rv).session_is_dead()) << rv_name(rv);
  }
  for (CK_RV rv : {CKR_OK, CKR_PIN_INCORRECT, CKR_KEY_HANDLE_INVALID, CKR_OBJECT_HANDLE_INVALID,
                   CKR_OPERATION_ACTIVE, CKR_GENERAL_ERROR, CKR_DEVICE_ERROR, CKR_ATTRIBUTE_SENSITIVE}) {
    EXPECT_FALSE(Pkcs11Error::rv_kills_session(rv)) << rv_name(rv);
    EXPECT_FALSE(Pkcs11Error("C_Sign", rv).session_is_dead()) << rv_name(rv);
  }
}

TEST(Check, ThrowsOnlyOnFailure) {
  EXPECT_NO_THROW(check(CKR_OK, "C_Sign"));
  try {
    check(CKR_DEVICE_ERROR, "C_GenerateKey");
    FAIL() << "check did not throw";
  } catch (const Pkcs11Error& e) {
    EXPECT_STREQ(e.what(), "C_GenerateKey: CKR_DEVICE_ERROR");
    EXPECT_EQ(e.rv(), static_cast<CK_RV>(CKR_DEVICE_ERROR));
  }
}

TEST(ConfigError, IsAnHsmError) {
  try {
    throw ConfigError("bad thing");
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "bad thing");
  }
}

// A real failure from the token surfaces as a Pkcs11Error with the function and rv.
TEST(Pkcs11Error, RaisedByTheTokenForAnInvalidKeyHandle) {
  auto session = test::user_session();
  std::array<std::uint8_t, kHmacSha256Bytes> mac{};
  const std::uint8_t data[4] = {1, 2, 3, 4};
  try {
    hmac_sha256(*session, 0xdeadbeef, data, mac);
    FAIL() << "signing with a bogus key handle succeeded";
  } catch (const Pkcs11Error& e) {
    EXPECT_EQ(e.operation(), "C_SignInit");
    EXPECT_TRUE(e.rv() == CKR_KEY_HANDLE_INVALID || e.rv() == CKR_OBJECT_HANDLE_INVALID) << e.what();
    EXPECT_EQ(std::string(e.what()), "C_SignInit: " + rv_name(e.rv()));
    EXPECT_FALSE(e.session_is_dead());
  }
}

}  // namespace
}  // namespace keysvc::hsm
