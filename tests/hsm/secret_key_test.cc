#include "keysvc/hsm/secret_key.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "keysvc/hsm/error.h"
#include "keysvc/hsm/object.h"
#include "pty_run.h"
#include "test_helpers.h"

namespace keysvc::hsm {
namespace {

using test::as_bytes;
using test::ByteVec;
using Mac = test::TokenMac;
using test::token_hmac;

ByteVec vec(const Mac& m) { return ByteVec(m.begin(), m.end()); }

TEST(SecretKey, GenerateFindSignDestroy) {
  test::TestToken::get().clear();
  auto s = test::user_session();
  ByteVec id = test::random_bytes(16);
  CK_OBJECT_HANDLE key = generate_hmac_key(*s, id, "gen-key");

  auto found = find_objects(*s, {.object_class = CKO_SECRET_KEY, .id = id, .label = std::string("gen-key")});
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found.front(), key);
  // A 32-byte generic secret token key.
  CK_KEY_TYPE type = 0;
  CK_ULONG len = 0;
  CK_ATTRIBUTE a[] = {{CKA_KEY_TYPE, &type, sizeof type}, {CKA_VALUE_LEN, &len, sizeof len}};
  ASSERT_EQ(s->fn()->C_GetAttributeValue(s->handle(), key, a, 2), static_cast<CK_RV>(CKR_OK));
  EXPECT_EQ(type, static_cast<CK_KEY_TYPE>(CKK_GENERIC_SECRET));
  EXPECT_EQ(len, kHmacKeyBytes);
  EXPECT_TRUE(get_bool_attribute(*s, key, CKA_TOKEN));
  EXPECT_TRUE(get_bool_attribute(*s, key, CKA_PRIVATE));

  Mac m1 = token_hmac(*s, key, as_bytes("message one"));
  EXPECT_EQ(token_hmac(*s, key, as_bytes("message one")), m1);  // deterministic
  EXPECT_NE(token_hmac(*s, key, as_bytes("message two")), m1);  // depends on the data
  EXPECT_NE(m1, Mac{});

  // A second key with the same data gives another MAC: the key is really random.
  CK_OBJECT_HANDLE other = generate_hmac_key(*s, test::random_bytes(16), "gen-key-2");
  EXPECT_NE(token_hmac(*s, other, as_bytes("message one")), m1);

  destroy_object(*s, key);
  EXPECT_TRUE(find_objects(*s, {.id = id}).empty());
  try {
    token_hmac(*s, key, as_bytes("message one"));
    FAIL() << "signed with a destroyed key";
  } catch (const Pkcs11Error& e) {
    EXPECT_EQ(e.operation(), "C_SignInit");
  }
}

TEST(SecretKey, TokenHmacMatchesOpenSslForImportedKey) {
  test::TestToken::get().clear();
  auto s = test::user_session();
  ByteVec value = test::random_bytes(kHmacKeyBytes);
  CK_OBJECT_HANDLE key = import_hmac_key(*s, as_bytes("imported"), "imported", value);
  for (std::size_t n : {0u, 1u, 31u, 32u, 61u, 64u, 65u, 1000u}) {
    ByteVec data = test::random_bytes(n);
    EXPECT_EQ(vec(token_hmac(*s, key, data)), test::openssl_hmac_sha256(value, data)) << "data length " << n;
  }
}

// RFC 4231 test case 7 (key longer than the block size), computed in the token.
TEST(SecretKey, Rfc4231TestCase7) {
  test::TestToken::get().clear();
  auto s = test::user_session();
  ByteVec value(131, 0xaa);
  std::string data =
      "This is a test using a larger than block-size key and a larger than block-size data. The key needs to "
      "be hashed before being used by the HMAC algorithm.";
  CK_OBJECT_HANDLE key = import_hmac_key(*s, as_bytes("rfc"), "rfc", value);
  EXPECT_EQ(test::hex(token_hmac(*s, key, as_bytes(data))),
            "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2");
  EXPECT_EQ(vec(token_hmac(*s, key, as_bytes(data))), test::openssl_hmac_sha256(value, as_bytes(data)));
}

TEST(SecretKey, ValueOfGeneratedKeyIsRefused) {
  test::TestToken::get().clear();
  auto s = test::user_session();
  CK_OBJECT_HANDLE key = generate_hmac_key(*s, as_bytes("g"), "g");
  try {
    get_attribute(*s, key, CKA_VALUE);
    FAIL() << "CKA_VALUE of a generated key was readable";
  } catch (const Pkcs11Error& e) {
    EXPECT_EQ(e.rv(), static_cast<CK_RV>(CKR_ATTRIBUTE_SENSITIVE)) << e.what();
  }
  // Same for an imported key: it was created sensitive.
  CK_OBJECT_HANDLE imported = import_hmac_key(*s, as_bytes("i"), "i", test::random_bytes(32));
  try {
    get_attribute(*s, imported, CKA_VALUE);
    FAIL() << "CKA_VALUE of an imported key was readable";
  } catch (const Pkcs11Error& e) {
    EXPECT_EQ(e.rv(), static_cast<CK_RV>(CKR_ATTRIBUTE_SENSITIVE)) << e.what();
  }
}

TEST(SecretKey, CustodyOfGeneratedKey) {
  test::TestToken::get().clear();
  auto s = test::user_session();
  KeyCustody c = read_custody(*s, generate_hmac_key(*s, as_bytes("c"), "c"));
  EXPECT_TRUE(c.sensitive);
  EXPECT_TRUE(c.always_sensitive);
  EXPECT_FALSE(c.extractable);
  EXPECT_TRUE(c.never_extractable);
  EXPECT_TRUE(c.sign);
  EXPECT_FALSE(c.verify);
  EXPECT_FALSE(c.encrypt);
  EXPECT_FALSE(c.decrypt);
  EXPECT_FALSE(c.wrap);
  EXPECT_FALSE(c.unwrap);
  EXPECT_FALSE(c.derive);
  EXPECT_FALSE(c.copyable);
  EXPECT_FALSE(c.modifiable);
  EXPECT_TRUE(c.held_in_token());
}

TEST(SecretKey, ImportedKeyIsNotHeldInToken) {
  test::TestToken::get().clear();
  auto s = test::user_session();
  KeyCustody c = read_custody(*s, import_hmac_key(*s, as_bytes("i"), "i", test::random_bytes(32)));
  EXPECT_TRUE(c.sensitive);
  EXPECT_FALSE(c.extractable);
  EXPECT_TRUE(c.sign);
  EXPECT_FALSE(c.wrap);
  EXPECT_FALSE(c.never_extractable);
  EXPECT_FALSE(c.held_in_token());
}

TEST(SecretKey, HeldInTokenNeedsEveryProperty) {
  KeyCustody good;
  good.sensitive = good.always_sensitive = good.never_extractable = true;
  good.extractable = false;
  ASSERT_TRUE(good.held_in_token());
  auto with = [&](auto change) {
    KeyCustody c = good;
    change(c);
    return c.held_in_token();
  };
  EXPECT_FALSE(with([](KeyCustody& c) { c.sensitive = false; }));
  EXPECT_FALSE(with([](KeyCustody& c) { c.always_sensitive = false; }));
  EXPECT_FALSE(with([](KeyCustody& c) { c.extractable = true; }));
  EXPECT_FALSE(with([](KeyCustody& c) { c.never_extractable = false; }));
  EXPECT_FALSE(with([](KeyCustody& c) { c.wrap = true; }));
}

// The token enforces the usage attributes, not just reports them.
TEST(SecretKey, TokenRefusesOtherUses) {
  test::TestToken::get().clear();
  auto s = test::user_session();
  CK_OBJECT_HANDLE key = generate_hmac_key(*s, as_bytes("u"), "u");
  auto* fn = s->fn();

  CK_MECHANISM hmac{CKM_SHA256_HMAC, nullptr, 0};
  EXPECT_NE(fn->C_VerifyInit(s->handle(), &hmac, key), static_cast<CK_RV>(CKR_OK));

  // No copy (a copy could be made extractable) and no attribute changes.
  CK_OBJECT_HANDLE copy = CK_INVALID_HANDLE;
  CK_BBOOL no = CK_FALSE, yes = CK_TRUE;
  CK_ATTRIBUTE token_false{CKA_TOKEN, &no, 1};
  EXPECT_NE(fn->C_CopyObject(s->handle(), key, &token_false, 1, &copy), static_cast<CK_RV>(CKR_OK));
  CK_ATTRIBUTE extractable{CKA_EXTRACTABLE, &yes, 1};
  EXPECT_NE(fn->C_SetAttributeValue(s->handle(), key, &extractable, 1), static_cast<CK_RV>(CKR_OK));
  EXPECT_FALSE(get_bool_attribute(*s, key, CKA_EXTRACTABLE));

  // Wrapping it under a key that may wrap is refused too.
  CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
  CK_KEY_TYPE aes = CKK_AES;
  CK_ULONG len = 32;
  CK_ATTRIBUTE wt[] = {{CKA_CLASS, &cls, sizeof cls}, {CKA_KEY_TYPE, &aes, sizeof aes}, {CKA_VALUE_LEN, &len, sizeof len},
                       {CKA_TOKEN, &no, 1}, {CKA_WRAP, &yes, 1}};
  CK_MECHANISM gen{CKM_AES_KEY_GEN, nullptr, 0};
  CK_OBJECT_HANDLE wrapping = CK_INVALID_HANDLE;
  ASSERT_EQ(fn->C_GenerateKey(s->handle(), &gen, wt, std::size(wt), &wrapping), static_cast<CK_RV>(CKR_OK));
  CK_MECHANISM wrap{CKM_AES_KEY_WRAP, nullptr, 0};
  CK_BYTE out[128];
  CK_ULONG out_len = sizeof out;
  EXPECT_EQ(fn->C_WrapKey(s->handle(), &wrap, wrapping, key, out, &out_len), static_cast<CK_RV>(CKR_KEY_UNEXTRACTABLE));
}

TEST(SecretKey, KeyTooShortForHmacIsRefused) {
  test::TestToken::get().clear();
  auto s = test::user_session();
  // Below the digest length SoftHSM refuses the key at C_SignInit.
  CK_OBJECT_HANDLE key = import_hmac_key(*s, as_bytes("short"), "short", test::random_bytes(16));
  EXPECT_THROW(token_hmac(*s, key, as_bytes("x")), Pkcs11Error);
}

// ---- pkcs11-tool, a real outside client, cannot read keysvc's keys ----

std::vector<std::string> tool_args(std::vector<std::string> extra) {
  std::vector<std::string> argv = {"pkcs11-tool", "--module", test::kSoftHsmModule, "--login"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return argv;
}

bool contains(const std::string& haystack, std::span<const std::uint8_t> needle) {
  return std::search(haystack.begin(), haystack.end(), needle.begin(), needle.end(),
                     [](char a, std::uint8_t b) { return static_cast<std::uint8_t>(a) == b; }) != haystack.end();
}

// The harness works: with the PIN typed into the terminal, pkcs11-tool logs in and lists
// the (private) key, and the PIN itself never appears in the output.
TEST(SecretKeyPkcs11Tool, HarnessCanLogInAndListObjects) {
  auto& t = test::TestToken::get();
  t.clear();
  ByteVec id = test::random_bytes(16);
  {
    auto s = test::user_session();
    generate_hmac_key(*s, id, "keysvc-listed-key");
  }
  auto r = test::run_under_pty(tool_args({"--list-objects"}), t.pin());
  ASSERT_FALSE(r.timed_out) << r.output;
  EXPECT_TRUE(r.pin_prompted) << r.output;
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("Secret Key Object"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("keysvc-listed-key"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(test::hex(id)), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find(t.pin()), std::string::npos) << "the PIN was echoed";
}

// The harness would see key bytes if the token gave them out: a deliberately
// extractable, non-sensitive key (not made by keysvc) is read back in full.
TEST(SecretKeyPkcs11Tool, HarnessCanReadAnExtractableKey) {
  auto& t = test::TestToken::get();
  t.clear();
  ByteVec id = test::random_bytes(16);
  ByteVec value = test::random_bytes(32);
  {
    auto s = test::user_session();
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE type = CKK_GENERIC_SECRET;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_ATTRIBUTE tmpl[] = {{CKA_CLASS, &cls, sizeof cls}, {CKA_KEY_TYPE, &type, sizeof type},
                           {CKA_TOKEN, &yes, 1}, {CKA_PRIVATE, &yes, 1}, {CKA_SENSITIVE, &no, 1},
                           {CKA_EXTRACTABLE, &yes, 1}, {CKA_ID, id.data(), id.size()},
                           {CKA_VALUE, value.data(), value.size()}};
    CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
    ASSERT_EQ(s->fn()->C_CreateObject(s->handle(), tmpl, std::size(tmpl), &h), static_cast<CK_RV>(CKR_OK));
  }
  auto r = test::run_under_pty(tool_args({"--read-object", "--type", "secrkey", "--id", test::hex(id)}), t.pin());
  ASSERT_FALSE(r.timed_out) << r.output;
  EXPECT_TRUE(r.pin_prompted);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, value)) << "extractable key value not in pkcs11-tool's output: " << r.output;
}

TEST(SecretKeyPkcs11Tool, CannotReadGeneratedKey) {
  auto& t = test::TestToken::get();
  t.clear();
  ByteVec id = test::random_bytes(16);
  {
    auto s = test::user_session();
    generate_hmac_key(*s, id, "keysvc-ticket-enc");
  }
  auto r = test::run_under_pty(tool_args({"--read-object", "--type", "secrkey", "--id", test::hex(id)}), t.pin());
  ASSERT_FALSE(r.timed_out) << r.output;
  EXPECT_TRUE(r.pin_prompted) << r.output;
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.find(t.pin()), std::string::npos) << "the PIN was echoed";
}

// With a key whose value we know (imported with keysvc's attributes), check that no
// key byte sequence reaches the output, raw or as hex.
TEST(SecretKeyPkcs11Tool, CannotReadImportedKeyBytes) {
  auto& t = test::TestToken::get();
  t.clear();
  ByteVec id = test::random_bytes(16);
  ByteVec value = test::random_bytes(32);
  {
    auto s = test::user_session();
    import_hmac_key(*s, id, "keysvc-ticket-mac", value);
  }
  auto r = test::run_under_pty(tool_args({"--read-object", "--type", "secrkey", "--id", test::hex(id)}), t.pin());
  ASSERT_FALSE(r.timed_out) << r.output;
  EXPECT_TRUE(r.pin_prompted) << r.output;
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_FALSE(contains(r.output, value)) << "raw key bytes in the output";
  EXPECT_EQ(r.output.find(test::hex(value)), std::string::npos) << "hex key bytes in the output";
  EXPECT_FALSE(contains(r.output, std::span(value).first(8))) << "part of the key in the output";
}

}  // namespace
}  // namespace keysvc::hsm
