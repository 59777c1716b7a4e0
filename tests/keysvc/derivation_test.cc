#include "keysvc/derivation.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

#include "keysvc/hsm/error.h"
#include "keysvc/hsm/secret_key.h"
#include "known_secrets.h"
#include "test_helpers.h"

namespace keysvc {
namespace {

using test::ByteVec;

template <std::size_t N>
std::array<std::uint8_t, N> to_array(const ByteVec& v) {
  if (v.size() != N) throw std::invalid_argument("wrong length");
  std::array<std::uint8_t, N> a{};
  std::copy(v.begin(), v.end(), a.begin());
  return a;
}

// The message as the documentation spells it, built independently of the code.
ByteVec documented_message(std::string_view label, const KeyName& name, const Iv& iv) {
  ByteVec m(label.begin(), label.end());
  m.push_back(0x00);
  m.insert(m.end(), name.begin(), name.end());
  m.insert(m.end(), iv.begin(), iv.end());
  return m;
}

// A generation whose keys have known values (imported; for tests only).
Generation import_generation(hsm::Session& s, const KeyName& name, const ByteVec& enc, const ByteVec& mac) {
  Generation g;
  g.name = name;
  g.enc_key = hsm::import_hmac_key(s, name, "test-enc", enc);
  g.mac_key = hsm::import_hmac_key(s, name, "test-mac", mac);
  return g;
}

TEST(DerivationMessage, ExactBytes) {
  KeyName name{};
  Iv iv{};
  for (std::size_t i = 0; i < name.size(); ++i) name[i] = static_cast<std::uint8_t>(0xa0 + i);
  for (std::size_t i = 0; i < iv.size(); ++i) iv[i] = static_cast<std::uint8_t>(0xb0 + i);
  DerivationMessage m = derivation_message(kAesKeyLabel, name, iv);
  static_assert(std::tuple_size_v<DerivationMessage> == 61);
  EXPECT_EQ(std::string(m.begin(), m.begin() + 28), "keysvc ticket v1 aes-256-cbc");
  EXPECT_EQ(m[28], 0x00);
  EXPECT_TRUE(std::equal(name.begin(), name.end(), m.begin() + 29));
  EXPECT_TRUE(std::equal(iv.begin(), iv.end(), m.begin() + 45));
  EXPECT_EQ(ByteVec(m.begin(), m.end()), documented_message("keysvc ticket v1 aes-256-cbc", name, iv));

  DerivationMessage h = derivation_message(kHmacKeyLabel, name, iv);
  EXPECT_EQ(std::string(h.begin(), h.begin() + 28), "keysvc ticket v1 hmac-sha256");
  EXPECT_TRUE(std::equal(m.begin() + 28, m.end(), h.begin() + 28)) << "only the label differs";
}

TEST(DerivationMessage, LabelsAreTheDocumentedStrings) {
  EXPECT_EQ(kAesKeyLabel, "keysvc ticket v1 aes-256-cbc");
  EXPECT_EQ(kHmacKeyLabel, "keysvc ticket v1 hmac-sha256");
  EXPECT_EQ(kTicketKeyBytes, 32u);
}

TEST(DerivationMessage, RandomInputsMatchTheDocumentedLayout) {
  for (int i = 0; i < 20; ++i) {
    auto name = to_array<kKeyNameBytes>(test::random_bytes(kKeyNameBytes));
    auto iv = to_array<kIvBytes>(test::random_bytes(kIvBytes));
    for (auto label : {kAesKeyLabel, kHmacKeyLabel}) {
      DerivationMessage m = derivation_message(label, name, iv);
      EXPECT_EQ(ByteVec(m.begin(), m.end()), documented_message(label, name, iv));
    }
  }
}

TEST(DeriveTicketKeys, EqualsOpenSslHmacOfTheDocumentedMessage) {
  test::TestToken::get().clear();
  auto s = test::user_session();
  ByteVec enc = test::random_bytes(32), mac = test::random_bytes(32);
  Generation g = import_generation(*s, to_array<kKeyNameBytes>(test::random_bytes(16)), enc, mac);
  for (int i = 0; i < 10; ++i) {
    auto iv = to_array<kIvBytes>(test::random_bytes(kIvBytes));
    TicketKeys keys;
    derive_ticket_keys(*s, g, iv, keys);
    EXPECT_EQ(ByteVec(keys.aes_key.begin(), keys.aes_key.end()),
              test::openssl_hmac_sha256(enc, documented_message("keysvc ticket v1 aes-256-cbc", g.name, iv)));
    EXPECT_EQ(ByteVec(keys.hmac_key.begin(), keys.hmac_key.end()),
              test::openssl_hmac_sha256(mac, documented_message("keysvc ticket v1 hmac-sha256", g.name, iv)));
  }
}

TEST(DeriveTicketKeys, EveryInputMatters) {
  test::TestToken::get().clear();
  auto s = test::user_session();
  ByteVec enc = test::random_bytes(32), mac = test::random_bytes(32);
  auto name = to_array<kKeyNameBytes>(test::random_bytes(16));
  Generation g = import_generation(*s, name, enc, mac);
  auto iv = to_array<kIvBytes>(test::random_bytes(kIvBytes));
  TicketKeys base;
  derive_ticket_keys(*s, g, iv, base);
  EXPECT_NE(base.aes_key, base.hmac_key);

  Iv iv2 = iv;
  iv2[15] ^= 1;
  TicketKeys other_iv;
  derive_ticket_keys(*s, g, iv2, other_iv);
  EXPECT_NE(other_iv.aes_key, base.aes_key);
  EXPECT_NE(other_iv.hmac_key, base.hmac_key);

  Generation renamed = g;
  renamed.name[0] ^= 1;
  TicketKeys other_name;
  derive_ticket_keys(*s, renamed, iv, other_name);
  EXPECT_NE(other_name.aes_key, base.aes_key);
  EXPECT_NE(other_name.hmac_key, base.hmac_key);

  // Same inputs, same keys (this is what lets another server open the ticket).
  TicketKeys again;
  derive_ticket_keys(*s, g, iv, again);
  EXPECT_EQ(again.aes_key, base.aes_key);
  EXPECT_EQ(again.hmac_key, base.hmac_key);
}

TEST(DeriveTicketKeys, TokenErrorsAreThrown) {
  auto s = test::user_session();
  Generation g;  // invalid handles
  TicketKeys keys;
  EXPECT_THROW(derive_ticket_keys(*s, g, Iv{}, keys), hsm::Pkcs11Error);
}

TEST(TicketKeys, WipeZeroesBothKeys) {
  TicketKeys k;
  k.aes_key.fill(0x11);
  k.hmac_key.fill(0x22);
  k.wipe();
  EXPECT_EQ(k.aes_key, (std::array<std::uint8_t, kTicketKeyBytes>{}));
  EXPECT_EQ(k.hmac_key, (std::array<std::uint8_t, kTicketKeyBytes>{}));
}

// ---- docs/DERIVATION.md's test vector, through the token ----

std::string source_dir() {
  const char* env = std::getenv("KEYSVC_SOURCE_DIR");
  return env && *env ? env : KEYSVC_TEST_SOURCE_DIR;
}

// The "name = hex" lines between the `marker: begin` and `marker: end` lines.
std::map<std::string, ByteVec> documented_vector(const std::string& marker = "test-vector") {
  std::string path = source_dir() + "/docs/DERIVATION.md";
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::map<std::string, ByteVec> v;
  std::string line;
  bool inside = false;
  while (std::getline(in, line)) {
    if (line.find(marker + ": begin") != std::string::npos) inside = true;
    else if (line.find(marker + ": end") != std::string::npos) inside = false;
    else if (inside && line.find(" = ") != std::string::npos) {
      std::istringstream fields(line);
      std::string name, eq, hex;
      fields >> name >> eq >> hex;
      if (eq == "=") v[name] = test::from_hex(hex);
    }
  }
  return v;
}

TEST(DerivationDoc, TestVectorMatchesTheToken) {
  auto v = documented_vector();
  for (const char* field : {"enc_key", "mac_key", "key_name", "iv", "aes_message", "hmac_message", "aes_key", "hmac_key"})
    ASSERT_EQ(v.count(field), 1u) << "docs/DERIVATION.md test vector lacks " << field;
  auto name = to_array<kKeyNameBytes>(v["key_name"]);
  auto iv = to_array<kIvBytes>(v["iv"]);

  // The documented messages are the code's messages.
  DerivationMessage am = derivation_message(kAesKeyLabel, name, iv);
  DerivationMessage hm = derivation_message(kHmacKeyLabel, name, iv);
  EXPECT_EQ(ByteVec(am.begin(), am.end()), v["aes_message"]);
  EXPECT_EQ(ByteVec(hm.begin(), hm.end()), v["hmac_message"]);

  // The documented keys are what the token derives from the documented inputs...
  test::TestToken::get().clear();
  auto s = test::user_session();
  Generation g = import_generation(*s, name, v["enc_key"], v["mac_key"]);
  TicketKeys keys;
  derive_ticket_keys(*s, g, iv, keys);
  EXPECT_EQ(test::hex(keys.aes_key), test::hex(v["aes_key"]));
  EXPECT_EQ(test::hex(keys.hmac_key), test::hex(v["hmac_key"]));
  for (const char* field : {"enc_key", "mac_key", "aes_key", "hmac_key"})  // never in any log (the secret scan)
    test::remember_secret_bytes(v[field]);

  // ...and what an independent HMAC-SHA256 gives for the documented messages.
  EXPECT_EQ(test::openssl_hmac_sha256(v["enc_key"], v["aes_message"]), v["aes_key"]);
  EXPECT_EQ(test::openssl_hmac_sha256(v["mac_key"], v["hmac_message"]), v["hmac_key"]);
}

// Derivation 2 (opt-in): one HMAC-SHA512 under one 64-byte key gives both keys.
TEST(DerivationDoc, V2TestVectorMatchesTheToken) {
  auto v = documented_vector("test-vector-v2");
  for (const char* field : {"key", "key_name", "iv", "message", "aes_key", "hmac_key"})
    ASSERT_EQ(v.count(field), 1u) << "docs/DERIVATION.md v2 test vector lacks " << field;
  auto name = to_array<kKeyNameBytes>(v["key_name"]);
  auto iv = to_array<kIvBytes>(v["iv"]);
  DerivationMessageV2 m = derivation_message_v2(name, iv);
  EXPECT_EQ(ByteVec(m.begin(), m.end()), v["message"]);
  EXPECT_EQ(ByteVec(m.begin(), m.end()), documented_message(kTicketKeysV2Label, name, iv));

  test::TestToken::get().clear();
  auto s = test::user_session();
  Generation g;
  g.name = name;
  g.derivation = 2;
  g.enc_key = g.mac_key = hsm::import_hmac_key(*s, name, "test-key", v["key"]);
  TicketKeys keys;
  derive_ticket_keys(*s, g, iv, keys);
  EXPECT_EQ(test::hex(keys.aes_key), test::hex(v["aes_key"]));
  EXPECT_EQ(test::hex(keys.hmac_key), test::hex(v["hmac_key"]));
  EXPECT_EQ(g.sign_calls(), 1);

  // An independent HMAC-SHA512 of the documented message, split in two halves.
  unsigned char out[64];
  unsigned int len = 0;
  ASSERT_NE(HMAC(EVP_sha512(), v["key"].data(), static_cast<int>(v["key"].size()), v["message"].data(),
                 v["message"].size(), out, &len),
            nullptr);
  ASSERT_EQ(len, 64u);
  EXPECT_EQ(ByteVec(out, out + 32), v["aes_key"]);
  EXPECT_EQ(ByteVec(out + 32, out + 64), v["hmac_key"]);
}

TEST(DeriveTicketKeys, V2DiffersFromV1AndEveryInputMatters) {
  test::TestToken::get().clear();
  auto s = test::user_session();
  KeyName name{};
  name[0] = 1;
  Generation g;
  g.name = name;
  g.derivation = 2;
  g.enc_key = g.mac_key = hsm::generate_hmac_key(*s, name, "v2", hsm::Copyable::kNo, hsm::kHmacSha512KeyBytes);
  Iv iv{}, other_iv{};
  other_iv[15] = 1;
  TicketKeys a, b, c;
  derive_ticket_keys(*s, g, iv, a);
  derive_ticket_keys(*s, g, other_iv, b);
  EXPECT_NE(a.aes_key, a.hmac_key);
  EXPECT_NE(a.aes_key, b.aes_key);
  EXPECT_NE(a.hmac_key, b.hmac_key);
  Generation renamed = g;
  renamed.name[0] = 2;
  derive_ticket_keys(*s, renamed, iv, c);
  EXPECT_NE(a.aes_key, c.aes_key);
}

}  // namespace
}  // namespace keysvc
