// Server key pairs generated in the SoftHSM token: the attributes the header promises,
// for EC P-256 and RSA-2048, a stored certificate, and finding objects by name.
#include "keysvc/openssl/server_key_pair.h"

#include <gtest/gtest.h>

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
    pool_ = open_session_pool(test::TestToken::get().config());
  }
  std::unique_ptr<hsm::SessionPool> pool_;
};

INSTANTIATE_TEST_SUITE_P(KeyTypes, ServerKeyPairTest, ::testing::Values(ServerKeyType::kEcP256, ServerKeyType::kRsa2048),
                         [](const auto& p) { return p.param == ServerKeyType::kEcP256 ? "EcP256" : "Rsa2048"; });

TEST_P(ServerKeyPairTest, PrivateHalfSignsOnlyAndNeverLeaves) {
  pool_->run([&](hsm::Session& s) {
    ServerKeyPair pair = generate_server_key_pair(s, GetParam(), kId, "srv");
    const CK_OBJECT_HANDLE k = pair.private_key;
    EXPECT_TRUE(hsm::get_bool_attribute(s, k, CKA_TOKEN));
    EXPECT_TRUE(hsm::get_bool_attribute(s, k, CKA_PRIVATE));
    EXPECT_TRUE(hsm::get_bool_attribute(s, k, CKA_SENSITIVE));
    EXPECT_TRUE(hsm::get_bool_attribute(s, k, CKA_ALWAYS_SENSITIVE));
    EXPECT_FALSE(hsm::get_bool_attribute(s, k, CKA_EXTRACTABLE));
    EXPECT_TRUE(hsm::get_bool_attribute(s, k, CKA_NEVER_EXTRACTABLE));
    EXPECT_TRUE(hsm::get_bool_attribute(s, k, CKA_SIGN));
    EXPECT_FALSE(hsm::get_bool_attribute(s, k, CKA_SIGN_RECOVER));
    EXPECT_FALSE(hsm::get_bool_attribute(s, k, CKA_DECRYPT));
    EXPECT_FALSE(hsm::get_bool_attribute(s, k, CKA_UNWRAP));
    EXPECT_FALSE(hsm::get_bool_attribute(s, k, CKA_DERIVE));
    EXPECT_FALSE(hsm::get_bool_attribute(s, k, CKA_MODIFIABLE));
    EXPECT_FALSE(hsm::get_bool_attribute(s, k, CKA_COPYABLE));
    const CK_OBJECT_HANDLE p = pair.public_key;
    EXPECT_TRUE(hsm::get_bool_attribute(s, p, CKA_VERIFY));
    EXPECT_FALSE(hsm::get_bool_attribute(s, p, CKA_ENCRYPT));
    EXPECT_FALSE(hsm::get_bool_attribute(s, p, CKA_WRAP));
    EXPECT_FALSE(hsm::get_bool_attribute(s, p, CKA_PRIVATE));
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
