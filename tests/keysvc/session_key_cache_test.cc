#include "keysvc/session_key_cache.h"

#include <gtest/gtest.h>

#include "keysvc/derivation.h"
#include "keysvc/hsm/error.h"
#include "keysvc/hsm/object.h"
#include "keysvc/hsm/session_copy.h"
#include "keysvc/ticket_key_service.h"
#include "keysvc/token_gateway.h"
#include "keysvc/token_store.h"
#include "test_helpers.h"

namespace keysvc {
namespace {

constexpr std::int64_t kNow = 5000;
constexpr std::int64_t kSkew = 30;
const Schedule kSchedule{1000, 4000, 7600, 14800};

bool same_keys(const TicketKeys& a, const TicketKeys& b) { return a.aes_key == b.aes_key && a.hmac_key == b.hmac_key; }

// The generation as the token alone knows it (no copies).
Generation token_only(Generation g) {
  g.enc_copy = g.mac_copy = CK_INVALID_HANDLE;
  return g;
}

class SessionKeyCacheTest : public ::testing::Test {
 protected:
  void SetUp() override { test::TestToken::get().clear(); }
  std::unique_ptr<hsm::Session> session_ = test::user_session();
  SessionKeyCache cache_{test::test_hsm_token()};

  Generation make(hsm::Copyable copyable, const Schedule& s = kSchedule) {
    return token_store::create_generation(*session_, s, {copyable});
  }
  // A cache exists only with hsm.session_copies, which allows copyable keys (custody_rule_of).
  KeyRing attach(std::int64_t now = kNow) {
    return cache_.attach(token_store::load(*session_, {.copyable_allowed = true}), now, kSkew);
  }
};

TEST_F(SessionKeyCacheTest, CopyableGenerationGetsCopiesThatDeriveTheSameKeys) {
  Generation g = make(hsm::Copyable::kYes);
  KeyRing ring = attach();
  const Generation* attached = ring.find(g.name);
  ASSERT_NE(attached, nullptr);
  ASSERT_TRUE(attached->has_copies());
  EXPECT_NE(attached->enc_signing_key(), attached->enc_key);
  EXPECT_NE(attached->mac_signing_key(), attached->mac_key);
  EXPECT_NE(attached->enc_copy, attached->mac_copy);
  Iv iv{};
  iv[3] = 7;
  TicketKeys with_copies, with_token;
  derive_ticket_keys(*session_, *attached, iv, with_copies);
  derive_ticket_keys(*session_, token_only(*attached), iv, with_token);
  EXPECT_TRUE(same_keys(with_copies, with_token));
  // The copies are held in the token like the keys they copy.
  EXPECT_TRUE(hsm::read_custody(*session_, attached->enc_copy).held_in_token());
  EXPECT_FALSE(hsm::get_bool_attribute(*session_, attached->mac_copy, CKA_TOKEN));
  auto st = cache_.stats();
  EXPECT_EQ(st.made, 1u);
  EXPECT_EQ(st.live, 1u);

  // A second reload keeps the same copies.
  KeyRing again = attach();
  EXPECT_EQ(again.find(g.name)->enc_copy, attached->enc_copy);
  EXPECT_EQ(cache_.stats().made, 1u);
  // And a token-key search still finds exactly the two token keys of the generation.
  EXPECT_EQ(token_store::load(*session_).find(g.name)->enc_key, g.enc_key);
}

TEST_F(SessionKeyCacheTest, DerivationTwoGenerationGetsOneCopy) {
  Generation g = token_store::create_generation(*session_, kSchedule, {hsm::Copyable::kYes, 2});
  KeyRing ring = attach();
  const Generation* attached = ring.find(g.name);
  ASSERT_NE(attached, nullptr);
  ASSERT_TRUE(attached->has_copies());
  EXPECT_EQ(attached->enc_copy, attached->mac_copy);
  EXPECT_EQ(hsm::find_objects(*session_, {.label = std::string(kSessionCopyLabel)}).size(), 1u);
  Iv iv{};
  TicketKeys with_copies, with_token;
  derive_ticket_keys(*session_, *attached, iv, with_copies);
  derive_ticket_keys(*session_, token_only(*attached), iv, with_token);
  EXPECT_TRUE(same_keys(with_copies, with_token));
}

TEST_F(SessionKeyCacheTest, DefaultGenerationIsRefusedOnceAndKeepsItsTokenKeys) {
  Generation g = make(hsm::Copyable::kNo);
  KeyRing ring = attach();
  ASSERT_NE(ring.find(g.name), nullptr);
  EXPECT_FALSE(ring.find(g.name)->has_copies());
  EXPECT_EQ(ring.find(g.name)->enc_signing_key(), g.enc_key);
  attach();
  auto st = cache_.stats();
  EXPECT_EQ(st.refused, 1u);  // not tried again on the next reload
  EXPECT_EQ(st.made, 0u);
  EXPECT_EQ(st.live, 0u);
}

TEST_F(SessionKeyCacheTest, RemovedExpiredAndRevokedGenerationsLoseTheirCopies) {
  Generation removed = make(hsm::Copyable::kYes);
  Generation expiring = make(hsm::Copyable::kYes, Schedule{1000, 2000, 3000, 6000});
  Generation revoked = make(hsm::Copyable::kYes);
  Generation kept = make(hsm::Copyable::kYes);
  KeyRing first = attach();
  EXPECT_EQ(cache_.stats().live, 4u);
  const CK_OBJECT_HANDLE removed_copy = first.find(removed.name)->enc_copy;
  const CK_OBJECT_HANDLE expiring_copy = first.find(expiring.name)->mac_copy;
  const CK_OBJECT_HANDLE revoked_copy = first.find(revoked.name)->enc_copy;

  token_store::destroy_generation(*session_, removed.name);
  token_store::write_revocation(*session_, revoked.name, kNow, kSchedule.decrypt_until);
  KeyRing second = attach(6000 + kSkew);  // `expiring` no longer decrypts
  EXPECT_EQ(second.find(removed.name), nullptr);
  EXPECT_FALSE(second.find(expiring.name)->has_copies());
  EXPECT_FALSE(second.find(revoked.name)->has_copies());
  EXPECT_TRUE(second.find(kept.name)->has_copies());
  auto st = cache_.stats();
  EXPECT_EQ(st.dropped, 3u);
  EXPECT_EQ(st.live, 1u);
  // Destroyed one reload later: a handshake may still hold the first ring.
  EXPECT_TRUE(hsm::object_exists(*session_, removed_copy));
  attach(6000 + kSkew);
  for (CK_OBJECT_HANDLE h : {removed_copy, expiring_copy, revoked_copy}) EXPECT_FALSE(hsm::object_exists(*session_, h));
  EXPECT_TRUE(hsm::object_exists(*session_, second.find(kept.name)->enc_copy));
}

TEST_F(SessionKeyCacheTest, CopiesAreMadeAgainAfterTheTokenForgotThem) {
  Generation g = make(hsm::Copyable::kYes);
  KeyRing first = attach();
  const CK_OBJECT_HANDLE old_copy = first.find(g.name)->enc_copy;
  // Every session of the application closes (a token reset does the same): the holder
  // session and its copies are gone, and the token's object handles may change.
  ASSERT_EQ(session_->fn()->C_CloseAllSessions(test::test_hsm_token().slot()), static_cast<CK_RV>(CKR_OK));
  session_ = test::user_session();
  EXPECT_FALSE(hsm::object_exists(*session_, old_copy));
  KeyRing second = attach();
  ASSERT_TRUE(second.find(g.name)->has_copies());
  Iv iv{};
  TicketKeys with_copies, with_token;
  derive_ticket_keys(*session_, *second.find(g.name), iv, with_copies);
  derive_ticket_keys(*session_, token_only(*second.find(g.name)), iv, with_token);
  EXPECT_TRUE(same_keys(with_copies, with_token));
  EXPECT_EQ(cache_.stats().made, 2u);
  EXPECT_EQ(cache_.stats().live, 1u);
}

// Through the service: hsm.session_copies + rotation.copyable_keys.
Config copies_config() {
  Config c = test::strict(test::TestToken::get().config());
  c.hsm.session_copies = true;
  c.rotation.copyable_keys = true;
  return c;
}

TEST(SessionKeyCacheService, DerivesWithCopiesAndRecoversAfterSessionLoss) {
  test::TestToken::get().clear();
  auto svc = TicketKeyService::open(copies_config());
  ASSERT_TRUE(svc->session_copies() != nullptr);
  IssueKeys issued;
  ASSERT_TRUE(svc->derive_for_issue(issued));
  const Generation* g = svc->ring()->find(issued.name);
  ASSERT_NE(g, nullptr);
  ASSERT_TRUE(g->has_copies());
  auto custody = svc->gateway().call([&](hsm::Session& s) { return token_store::read_custody(s, *g); });
  EXPECT_TRUE(custody.enc.copyable && custody.enc.modifiable && custody.enc.held_in_token());
  const CK_OBJECT_HANDLE old_copy = g->enc_copy;

  auto outsider = test::user_session();
  ASSERT_EQ(outsider->fn()->C_CloseAllSessions(test::test_hsm_token().slot()), static_cast<CK_RV>(CKR_OK));
  TicketKeys opened;
  EXPECT_EQ(svc->derive_for_open(issued.name, issued.iv, opened), OpenStatus::kOk);
  EXPECT_TRUE(same_keys(opened, issued.keys));
  const Generation* after = svc->ring()->find(issued.name);
  ASSERT_NE(after, nullptr);
  EXPECT_TRUE(after->has_copies());
  EXPECT_NE(after->enc_copy, old_copy);
  EXPECT_EQ(svc->session_copies()->stats().made, 2u);
  EXPECT_EQ(svc->counters().hsm_errors, 0u);
}

TEST(SessionKeyCacheService, RecoversAfterALogout) {
  test::TestToken::get().clear();
  auto svc = TicketKeyService::open(copies_config());
  IssueKeys issued;
  ASSERT_TRUE(svc->derive_for_issue(issued));
  auto outsider = test::user_session();
  ASSERT_EQ(outsider->fn()->C_Logout(outsider->handle()), static_cast<CK_RV>(CKR_OK));
  TicketKeys opened;
  EXPECT_EQ(svc->derive_for_open(issued.name, issued.iv, opened), OpenStatus::kOk);
  EXPECT_TRUE(same_keys(opened, issued.keys));
  EXPECT_TRUE(svc->ring()->find(issued.name)->has_copies());
  EXPECT_EQ(svc->session_copies()->stats().made, 2u);  // SoftHSM destroys private session objects at logout
  EXPECT_EQ(svc->counters().hsm_errors, 0u);
}

TEST(SessionKeyCacheService, OffByDefault) {
  test::TestToken::get().clear();
  auto svc = TicketKeyService::open(test::strict(test::TestToken::get().config()));
  EXPECT_EQ(svc->session_copies(), nullptr);
  auto name = svc->encrypt_key_name();
  ASSERT_TRUE(name.has_value());
  EXPECT_FALSE(svc->ring()->find(*name)->has_copies());
  auto custody = svc->gateway().call([&](hsm::Session& s) {
    return token_store::read_custody(s, *svc->ring()->find(*name));
  });
  EXPECT_FALSE(custody.enc.copyable || custody.enc.modifiable || custody.mac.copyable || custody.mac.modifiable);
}

}  // namespace
}  // namespace keysvc
