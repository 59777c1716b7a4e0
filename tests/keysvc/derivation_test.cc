#include "keysvc/derivation.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
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

// Derivation 3 (the epoch tier): the epoch key from the imported root key in the token
// (one C_Sign), the ticket's keys by HKDF-Expand-SHA256 in process, the epoch in the IV.
// Checked three ways: the code's messages, the token's HMAC, and HKDF-Expand computed
// from RFC 5869's definition (HMAC blocks) and by OpenSSL's EVP_PKEY HKDF, a different
// entry point than the code's EVP_KDF.
ByteVec hkdf_expand_rfc5869(const ByteVec& prk, const ByteVec& info, std::size_t length) {
  ByteVec out, block;
  for (std::uint8_t i = 1; out.size() < length; ++i) {
    ByteVec input = block;
    input.insert(input.end(), info.begin(), info.end());
    input.push_back(i);
    block = test::openssl_hmac_sha256(prk, input);
    out.insert(out.end(), block.begin(), block.end());
  }
  out.resize(length);
  return out;
}

ByteVec openssl_pkey_hkdf_expand(const ByteVec& prk, const ByteVec& info, std::size_t length) {
  std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, nullptr),
                                                                 EVP_PKEY_CTX_free);
  ByteVec out(length);
  std::size_t len = length;
  if (!ctx || EVP_PKEY_derive_init(ctx.get()) != 1 ||
      EVP_PKEY_CTX_set_hkdf_mode(ctx.get(), EVP_PKEY_HKDEF_MODE_EXPAND_ONLY) != 1 ||
      EVP_PKEY_CTX_set_hkdf_md(ctx.get(), EVP_sha256()) != 1 ||
      EVP_PKEY_CTX_set1_hkdf_key(ctx.get(), prk.data(), static_cast<int>(prk.size())) != 1 ||
      EVP_PKEY_CTX_add1_hkdf_info(ctx.get(), info.data(), static_cast<int>(info.size())) != 1 ||
      EVP_PKEY_derive(ctx.get(), out.data(), &len) != 1 || len != length)
    throw std::runtime_error("EVP_PKEY HKDF failed");
  return out;
}

TEST(DerivationDoc, V3TestVectorMatchesTheTokenAndOpenSslHkdf) {
  auto v = documented_vector("test-vector-v3");
  for (const char* field :
       {"root_key", "key_name", "epoch", "epoch_message", "epoch_key", "iv", "info", "aes_key", "hmac_key"})
    ASSERT_EQ(v.count(field), 1u) << "docs/DERIVATION.md v3 test vector lacks " << field;
  auto name = to_array<kKeyNameBytes>(v["key_name"]);
  auto iv = to_array<kIvBytes>(v["iv"]);
  ASSERT_EQ(v["epoch"].size(), 8u);
  std::int64_t epoch = 0;
  for (std::uint8_t b : v["epoch"]) epoch = (epoch << 8) | b;

  // The documented messages and IV layout are the code's.
  EpochKeyMessage em = epoch_key_message(name, epoch);
  EXPECT_EQ(ByteVec(em.begin(), em.end()), v["epoch_message"]);
  ByteVec spelled(kEpochKeyLabel.begin(), kEpochKeyLabel.end());
  spelled.push_back(0x00);
  spelled.insert(spelled.end(), name.begin(), name.end());
  spelled.insert(spelled.end(), v["epoch"].begin(), v["epoch"].end());
  EXPECT_EQ(ByteVec(em.begin(), em.end()), spelled);
  EXPECT_EQ(kEpochKeyLabel, "keysvc epoch v1");
  EXPECT_EQ(kTicketKeysV3Label, "keysvc ticket v3 aes-256-cbc+hmac-sha256");
  TicketInfoV3 info = ticket_info_v3(name, iv);
  EXPECT_EQ(ByteVec(info.begin(), info.end()), v["info"]);
  EXPECT_EQ(ByteVec(info.begin(), info.end()), documented_message(kTicketKeysV3Label, name, iv));
  EXPECT_EQ(epoch_of_iv(iv, epoch), epoch);
  EXPECT_EQ(epoch_of_iv(iv, epoch + 1000), epoch);
  Iv fresh{};
  ASSERT_TRUE(make_epoch_iv(epoch, fresh));
  EXPECT_TRUE(std::equal(fresh.begin(), fresh.begin() + 4, iv.begin())) << "the IV's first 4 bytes are the epoch";

  // The documented epoch key is what the token computes with the documented root key...
  test::TestToken::get().clear();
  auto s = test::user_session();
  Generation g;
  g.name = name;
  g.derivation = 3;
  g.epoch_seconds = 300;
  g.enc_key = g.mac_key = hsm::import_hmac_key(*s, name, "test-epoch-root", v["root_key"]);
  EpochKey key;
  derive_epoch_key(*s, g, epoch, key);
  EXPECT_EQ(test::hex(key.span()), test::hex(v["epoch_key"]));
  EXPECT_EQ(g.sign_calls(), 1);
  EXPECT_EQ(test::openssl_hmac_sha256(v["root_key"], v["epoch_message"]), v["epoch_key"]);

  // ...and the documented ticket keys are what the code, RFC 5869 and OpenSSL's other HKDF
  // entry point derive from it.
  TicketKeys keys;
  derive_ticket_keys_from_epoch(key, name, iv, keys);
  EXPECT_EQ(test::hex(keys.aes_key), test::hex(v["aes_key"]));
  EXPECT_EQ(test::hex(keys.hmac_key), test::hex(v["hmac_key"]));
  ByteVec both = v["aes_key"];
  both.insert(both.end(), v["hmac_key"].begin(), v["hmac_key"].end());
  EXPECT_EQ(hkdf_expand_rfc5869(v["epoch_key"], v["info"], 64), both);
  EXPECT_EQ(openssl_pkey_hkdf_expand(v["epoch_key"], v["info"], 64), both);
  for (const char* field : {"root_key", "epoch_key", "aes_key", "hmac_key"})  // never in any log (the secret scan)
    test::remember_secret_bytes(v[field]);
}

// derive_ticket_keys_from_epoch writes HKDF-Expand out (derivation.cc): the same bytes as
// OpenSSL's HKDF for random epoch keys, key names and IVs.
TEST(DeriveTicketKeys, FromAnEpochKeyIsOpenSslsHkdfExpandForRandomInputs) {
  for (int round = 0; round < 200; ++round) {
    EpochKey key;
    KeyName name{};
    Iv iv{};
    key.assign([](std::span<std::uint8_t, kEpochKeyBytes> k) { ASSERT_EQ(RAND_bytes(k.data(), kEpochKeyBytes), 1); });
    ASSERT_EQ(RAND_bytes(name.data(), static_cast<int>(name.size())), 1);
    ASSERT_EQ(RAND_bytes(iv.data(), static_cast<int>(iv.size())), 1);
    TicketKeys keys;
    derive_ticket_keys_from_epoch(key, name, iv, keys);
    const TicketInfoV3 info = ticket_info_v3(name, iv);
    ByteVec both(keys.both().begin(), keys.both().end());
    ASSERT_EQ(both, openssl_pkey_hkdf_expand(ByteVec(key.span().begin(), key.span().end()),
                                             ByteVec(info.begin(), info.end()), 64))
        << "round " << round;
  }
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
