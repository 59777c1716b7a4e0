#include "keysvc/audit_key.h"

#include <gtest/gtest.h>

#include "keysvc/hsm/error.h"
#include "keysvc/ticket_key_service.h"
#include "test_helpers.h"

namespace keysvc::audit {
namespace {

std::string text(const hsm::Bytes& b) { return std::string(b.begin(), b.end()); }

TEST(AuditKey, CreatedOnceNonExtractableWithRandomId) {
  test::TestToken::get().clear();
  auto s = test::user_session();
  EXPECT_TRUE(find_audit_keys(*s).empty());
  AuditKey k = find_or_create_audit_key(*s);
  EXPECT_EQ(k.id.size(), kAuditKeyIdBytes);
  EXPECT_EQ(k.id_hex().size(), 32u);
  EXPECT_EQ(text(hsm::get_attribute(*s, k.handle, CKA_LABEL)), "keysvc-audit-seal");
  EXPECT_EQ(hsm::get_attribute(*s, k.handle, CKA_ID), k.id);
  auto c = hsm::read_custody(*s, k.handle);
  EXPECT_TRUE(c.held_in_token());
  EXPECT_TRUE(c.sign && !c.verify && !c.encrypt && !c.decrypt && !c.wrap && !c.unwrap && !c.derive);
  try {
    (void)hsm::get_attribute(*s, k.handle, CKA_VALUE);
    ADD_FAILURE() << "CKA_VALUE readable";
  } catch (const hsm::Pkcs11Error& e) {
    EXPECT_EQ(e.rv(), static_cast<CK_RV>(CKR_ATTRIBUTE_SENSITIVE));
  }

  AuditKey again = find_or_create_audit_key(*s);
  EXPECT_EQ(again.id, k.id);
  EXPECT_EQ(find_audit_keys(*s).size(), 1u);
  ASSERT_TRUE(find_audit_key(*s, k.id_hex()));
  EXPECT_FALSE(find_audit_key(*s, std::string(32, '0')));
  EXPECT_FALSE(find_audit_key(*s, "not hex"));
  EXPECT_FALSE(find_audit_key(*s, ""));
}

TEST(AuditKey, SealerAndVerifierAgreeInTheToken) {
  test::TestToken::get().clear();
  auto gateway = TokenGateway::open(test::TestToken::get().config());
  Sealer sealer = token_sealer(*gateway);
  EXPECT_EQ(sealer.key_id_hex.size(), 32u);
  Hash head = sha256("a line");
  auto msg = seal_message(7, head);
  EXPECT_EQ(msg.size(), sizeof kSealLabel + 8 + 32);
  EXPECT_EQ(msg[sizeof kSealLabel - 1], 0);
  EXPECT_EQ(msg[sizeof kSealLabel + 7], 7);
  Mac m = sealer.hmac(msg);
  KeyedHmac verify = token_keyed_hmac(*gateway);
  EXPECT_EQ(verify(sealer.key_id_hex, msg), m);
  EXPECT_NE(verify(sealer.key_id_hex, seal_message(8, head)), m);
  EXPECT_FALSE(verify(std::string(32, 'f'), msg));
  // A second sealer reuses the key.
  EXPECT_EQ(token_sealer(*gateway).key_id_hex, sealer.key_id_hex);
}

}  // namespace
}  // namespace keysvc::audit
