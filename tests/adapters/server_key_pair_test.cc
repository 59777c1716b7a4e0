// Server key pairs generated in the SoftHSM token: the attributes the header promises,
// for EC P-256 and RSA-2048, a stored certificate, and finding objects by name.
#include "keysvc/openssl/server_key_pair.h"

#include <gtest/gtest.h>

#include "keysvc/hsm/call_stats.h"
#include "keysvc/hsm/error.h"
#include "keysvc/hsm/object.h"
#include "keysvc/ticket_key_service.h"
#include "test_token.h"

namespace keysvc::openssl {

// Readable parameter values (found by argument-dependent lookup, so not in the anonymous namespace).
void PrintTo(ServerKeyType t, std::ostream* os) { *os << to_string(t); }

namespace {

constexpr std::uint8_t kId[] = {0x01, 0x02};

class ServerKeyPairTest : public ::testing::TestWithParam<ServerKeyType> {
 protected:
  void SetUp() override {
    test::TestToken::get().clear();
    pool_ = test::open_pool(test::TestToken::get().config());
  }
  std::unique_ptr<hsm::SessionPool> pool_;
};

INSTANTIATE_TEST_SUITE_P(KeyTypes, ServerKeyPairTest, ::testing::Values(ServerKeyType::kEcP256, ServerKeyType::kRsa2048),
                         [](const auto& p) { return p.param == ServerKeyType::kEcP256 ? "EcP256" : "Rsa2048"; });

// Expects each CK_BBOOL attribute of `object` to be as listed.
void expect_flags(hsm::Session& s, CK_OBJECT_HANDLE object,
                  std::initializer_list<std::pair<CK_ATTRIBUTE_TYPE, bool>> expected) {
  for (const auto& [type, value] : expected)
    EXPECT_EQ(hsm::get_bool_attribute(s, object, type), value) << "attribute 0x" << std::hex << type;
}

TEST_P(ServerKeyPairTest, PrivateHalfSignsOnlyAndNeverLeaves) {
  pool_->run([&](hsm::Session& s) {
    const std::uint64_t calls_before = s.stats().snapshot(hsm::Call::kGenerateKeyPair).count;
    ServerKeyPair pair = generate_server_key_pair(s, GetParam(), kId, "srv");
    EXPECT_EQ(s.stats().snapshot(hsm::Call::kGenerateKeyPair).count, calls_before + 1);  // counted like every call
    const CK_OBJECT_HANDLE k = pair.private_key;
    expect_flags(s, k,
                 {{CKA_TOKEN, true}, {CKA_PRIVATE, true}, {CKA_SENSITIVE, true}, {CKA_ALWAYS_SENSITIVE, true},
                  {CKA_EXTRACTABLE, false}, {CKA_NEVER_EXTRACTABLE, true}, {CKA_SIGN, true}, {CKA_SIGN_RECOVER, false},
                  {CKA_DECRYPT, false}, {CKA_UNWRAP, false}, {CKA_DERIVE, false}, {CKA_MODIFIABLE, false},
                  {CKA_COPYABLE, false}});
    const CK_OBJECT_HANDLE p = pair.public_key;
    expect_flags(s, p, {{CKA_VERIFY, true}, {CKA_ENCRYPT, false}, {CKA_WRAP, false}, {CKA_PRIVATE, false}});
    EXPECT_EQ(hsm::get_attribute(s, k, CKA_ID), hsm::Bytes(std::begin(kId), std::end(kId)));
    EXPECT_EQ(hsm::get_attribute(s, p, CKA_LABEL), hsm::Bytes({'s', 'r', 'v'}));
    // No way to read or wrap the private key out.
    EXPECT_THROW(hsm::get_attribute(s, k, GetParam() == ServerKeyType::kEcP256 ? CKA_VALUE : CKA_PRIVATE_EXPONENT),
                 hsm::Pkcs11Error);
    return 0;
  });
}

TEST_P(ServerKeyPairTest, ObjectsNamedFindsBothHalvesAndTheCertificate) {
  pool_->run([&](hsm::Session& s) {
    EXPECT_TRUE(objects_named(s, "srv", kId).empty());
    generate_server_key_pair(s, GetParam(), kId, "srv");
    const std::uint8_t der[] = {0x30, 0x00};
    store_certificate(s, der, der, kId, "srv");
    EXPECT_EQ(objects_named(s, "srv", kId).size(), 3u);
    const std::uint8_t other_id[] = {0x09};
    EXPECT_EQ(objects_named(s, "srv", other_id).size(), 3u);     // by label
    EXPECT_EQ(objects_named(s, "other", kId).size(), 3u);        // by id
    EXPECT_TRUE(objects_named(s, "other", other_id).empty());
    auto certs = hsm::find_objects(s, {.object_class = CKO_CERTIFICATE});
    EXPECT_EQ(certs.size(), 1u);
    if (!certs.empty()) {
      EXPECT_FALSE(hsm::get_bool_attribute(s, certs[0], CKA_PRIVATE));
    }
    return 0;
  });
}

TEST(ServerKeyType, Names) {
  EXPECT_STREQ(to_string(ServerKeyType::kEcP256), "ec-p256");
  EXPECT_STREQ(to_string(ServerKeyType::kRsa2048), "rsa-2048");
}

}  // namespace
}  // namespace keysvc::openssl
