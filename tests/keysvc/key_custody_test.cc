// Keys and records planted in the token (key_custody.h): a generation whose keys were
// imported with a value the planter knows, a record whose schedule reaches years ahead,
// copyable keys without the opt-in, a planted audit key. Each is refused (never used,
// said why, a planted generation in the audit trail) while keysvc's own keys next to them
// keep working. Real SoftHSM token.
#include "keysvc/key_custody.h"

#include <gtest/gtest.h>

#include <ctime>
#include <filesystem>
#include <limits>

#include "keysvc/audit_key.h"
#include "keysvc/audit_report.h"
#include "keysvc/hsm/object.h"
#include "keysvc/metrics.h"
#include "keysvc/rotation.h"
#include "keysvc/ticket_key_service.h"
#include "keysvc/token_store.h"
#include "process.h"
#include "test_helpers.h"

namespace keysvc {
namespace {

// What keysvc's own keys report (hsm/secret_key.h).
hsm::KeyCustody keysvc_made() {
  hsm::KeyCustody c;
  c.sensitive = c.always_sensitive = c.never_extractable = c.local = c.sign = true;
  c.extractable = false;
  return c;
}

TEST(KeyCustody, AKeyAsKeysvcMakesItPasses) {
  EXPECT_EQ(custody_refusal(keysvc_made(), {}), "");
}

TEST(KeyCustody, EachMissingAttributeIsNamed) {
  const std::pair<void (*)(hsm::KeyCustody&), const char*> changes[] = {
      {[](hsm::KeyCustody& c) { c.sensitive = false; }, "CKA_SENSITIVE"},
      {[](hsm::KeyCustody& c) { c.extractable = true; }, "CKA_EXTRACTABLE"},
      {[](hsm::KeyCustody& c) { c.always_sensitive = false; }, "CKA_ALWAYS_SENSITIVE"},
      {[](hsm::KeyCustody& c) { c.never_extractable = false; }, "CKA_NEVER_EXTRACTABLE"},
      {[](hsm::KeyCustody& c) { c.local = false; }, "CKA_LOCAL"},
      {[](hsm::KeyCustody& c) { c.sign = false; }, "CKA_SIGN"},
      {[](hsm::KeyCustody& c) { c.verify = true; }, "CKA_VERIFY"},
      {[](hsm::KeyCustody& c) { c.encrypt = true; }, "CKA_ENCRYPT"},
      {[](hsm::KeyCustody& c) { c.decrypt = true; }, "CKA_DECRYPT"},
      {[](hsm::KeyCustody& c) { c.wrap = true; }, "CKA_WRAP"},
      {[](hsm::KeyCustody& c) { c.unwrap = true; }, "CKA_UNWRAP"},
      {[](hsm::KeyCustody& c) { c.derive = true; }, "CKA_DERIVE"},
      {[](hsm::KeyCustody& c) { c.copyable = true; }, "CKA_COPYABLE"},
      {[](hsm::KeyCustody& c) { c.modifiable = true; }, "CKA_MODIFIABLE"},
  };
  for (const auto& [change, attribute] : changes) {
    hsm::KeyCustody c = keysvc_made();
    change(c);
    EXPECT_NE(custody_refusal(c, {}).find(attribute), std::string::npos) << attribute;
  }
  // The opt-in allows copies; a token that does not enforce custody (tpm2-pkcs11) sets
  // CKA_VERIFY itself; a 2.20 token that does not report CKA_LOCAL is not held to it.
  hsm::KeyCustody copyable = keysvc_made();
  copyable.copyable = copyable.modifiable = true;
  EXPECT_EQ(custody_refusal(copyable, {.copyable_allowed = true}), "");
  hsm::KeyCustody tpm = keysvc_made();
  tpm.verify = true;
  tpm.enforced = false;
  EXPECT_EQ(custody_refusal(tpm, {}), "");
  hsm::KeyCustody old = keysvc_made();
  old.local = false;
  old.local_known = false;
  EXPECT_EQ(custody_refusal(old, {}), "");
}

TEST(KeyCustody, SchedulesReachingTooFarAreRefused) {
  constexpr std::int64_t now = 1'800'000'000, day = 86400;
  EXPECT_EQ(schedule_refusal({now, now + 600, now + 3600 + 600, now + 3 * 3600}), "");
  EXPECT_EQ(schedule_refusal({now, now, now + 31 * day, now + 62 * day}), "");
  EXPECT_NE(schedule_refusal({now, now, now + 10 * 365 * day, now + 10 * 365 * day}).find("encrypt window"),
            std::string::npos);
  EXPECT_NE(schedule_refusal({now, now, now + 3600, now + 3600 + 32 * day}).find("decrypt window"),
            std::string::npos);
  EXPECT_NE(schedule_refusal({now, now + 63 * day, now + 64 * day, now + 65 * day}).find("after its creation"),
            std::string::npos);
  // The extremes of int64 (their differences overflow) are refused, not undefined.
  constexpr auto lo = std::numeric_limits<std::int64_t>::min(), hi = std::numeric_limits<std::int64_t>::max();
  EXPECT_NE(schedule_refusal({lo, lo, hi - 1, hi}), "");
  EXPECT_NE(schedule_refusal({lo, lo, lo + 1, hi}), "");
  EXPECT_NE(schedule_refusal({lo, hi - 2, hi - 1, hi}), "");
}

// ---------------------------------------------------------------- in the token

hsm::Bytes id_of(const KeyName& n) { return hsm::Bytes(n.begin(), n.end()); }

// A v1 generation record for `name` with schedule `s`, as keysvc writes it.
void plant_record(hsm::Session& s, const KeyName& name, const Schedule& sc) {
  const std::string text = "keysvc-generation v1\ncreated=" + std::to_string(sc.created) +
                           "\nencrypt_from=" + std::to_string(sc.encrypt_from) +
                           "\nencrypt_until=" + std::to_string(sc.encrypt_until) +
                           "\ndecrypt_until=" + std::to_string(sc.decrypt_until) + "\n";
  hsm::create_data_object(s, token_store::kApplication, token_store::kRecordLabelPrefix + to_hex(name),
                          test::as_bytes(text));
}

// A generation whose two keys were imported with values the planter knows (the attack
// of issue 15: every ticket under it could be decrypted by whoever planted it).
KeyName plant_known_value_generation(hsm::Session& s, const Schedule& sc) {
  KeyName name{};
  auto r = test::random_bytes(name.size());
  std::copy(r.begin(), r.end(), name.begin());
  hsm::import_hmac_key(s, id_of(name), token_store::kEncKeyLabel, test::random_bytes(32));
  hsm::import_hmac_key(s, id_of(name), token_store::kMacKeyLabel, test::random_bytes(32));
  plant_record(s, name, sc);
  return name;
}

std::int64_t unix_now() { return std::time(nullptr); }

// The token emptied, then a known-value generation planted that encrypts now (what a
// server starting on that token finds).
KeyName plant_on_an_empty_token() {
  test::TestToken::get().clear();
  const std::int64_t now = unix_now();
  auto s = test::user_session();
  return plant_known_value_generation(*s, {now - 30, now - 30, now + 3600, now + 7200});
}

TEST(KeyCustodyInToken, KnownValueGenerationIsRefusedAndNeverEncrypts) {
  test::TestToken::get().clear();
  auto s = test::user_session();
  const std::int64_t now = unix_now();
  Generation own = token_store::create_generation(*s, {now - 60, now - 60, now + 3600, now + 7200});
  // Started later than keysvc's own: without the check it is the one every server picks.
  KeyName planted = plant_known_value_generation(*s, {now - 30, now - 30, now + 3600, now + 7200});

  KeyRing ring = token_store::load(*s);
  ASSERT_EQ(ring.generations().size(), 2u) << "a refused generation stays in the ring, to be seen";
  const Generation* p = ring.find(planted);
  ASSERT_NE(p, nullptr);
  EXPECT_NE(p->refused.find("CKA_ALWAYS_SENSITIVE"), std::string::npos) << p->refused;
  EXPECT_FALSE(p->usable());
  EXPECT_EQ(ring.state(*p, now), GenerationState::kRefused);
  EXPECT_EQ(to_string(GenerationState::kRefused), "refused");
  ASSERT_NE(ring.encrypt_generation(now), nullptr);
  EXPECT_EQ(ring.encrypt_generation(now)->name, own.name);
  EXPECT_TRUE(ring.find(own.name)->refused.empty());
  EXPECT_FALSE(KeyRing::decrypts(*p, now, 30));
}

TEST(KeyCustodyInToken, FarFutureRecordIsRefusedAndRotationGoesOn) {
  test::TestToken::get().clear();
  auto gateway = TokenGateway::open(test::TestToken::get().config());
  const std::int64_t now = unix_now();
  // Keys made in the token, so custody passes: only the record's reach gives it away.
  const KeyName far = gateway->call([now](hsm::Session& s) {
    Generation g = token_store::create_generation(s, {now, now, now + 3600, now + 7200});
    for (auto h : hsm::find_objects(s, {.object_class = CKO_DATA, .label = token_store::kRecordLabelPrefix + to_hex(g.name)}))
      hsm::destroy_object(s, h);
    plant_record(s, g.name, {now, now, now + 10LL * 365 * 86400, now + 10LL * 365 * 86400 + 7200});
    return g.name;
  });
  RotationPolicy policy;
  RotationResult r = rotate(*gateway, now, policy);
  EXPECT_FALSE(r.created.empty()) << "the planted record made the rotator think the future was covered";
  KeyRing ring = gateway->call([](hsm::Session& s) { return token_store::load(s); });
  EXPECT_NE(ring.find(far)->refused.find("record: its encrypt window"), std::string::npos) << ring.find(far)->refused;
  ASSERT_NE(ring.encrypt_generation(now), nullptr);
  EXPECT_NE(ring.encrypt_generation(now)->name, far);
}

TEST(KeyCustodyInToken, CopyableKeysNeedTheOptIn) {
  test::TestToken::get().clear();
  auto s = test::user_session();
  const std::int64_t now = unix_now();
  Generation g = token_store::create_generation(*s, {now, now, now + 3600, now + 7200}, {hsm::Copyable::kYes, 1});
  EXPECT_NE(token_store::load(*s).find(g.name)->refused.find("CKA_COPYABLE"), std::string::npos);
  EXPECT_EQ(token_store::load(*s, {.copyable_allowed = true}).find(g.name)->refused, "");
  Config c = test::TestToken::get().config();
  EXPECT_FALSE(custody_rule_of(c).copyable_allowed);
  c.hsm.session_copies = true;
  EXPECT_TRUE(custody_rule_of(c).copyable_allowed);
}

TEST(KeyCustodyInToken, ServiceNeverUsesAPlantedGenerationAndCountsIt) {
  KeyName planted = plant_on_an_empty_token();
  auto svc = TicketKeyService::open(test::strict(test::TestToken::get().config()));
  ASSERT_TRUE(svc->encrypt_key_name().has_value()) << "the service made its own generation";
  EXPECT_NE(*svc->encrypt_key_name(), planted);
  EXPECT_EQ(read_metrics(*svc).refused_generations, 1u);
  EXPECT_EQ(read_metrics(*svc).generations, 2u);

  const std::uint64_t sign_calls = svc->counters().hsm_calls;
  TicketKeys out;
  EXPECT_EQ(svc->derive_for_open(planted, Iv{}, out), OpenStatus::kUnknownKey);
  EXPECT_EQ(svc->counters().hsm_calls, sign_calls) << "no HSM work for a planted generation's ticket";
  for (int i = 0; i < 8; ++i) {
    IssueKeys issued;
    ASSERT_TRUE(svc->derive_for_issue(issued));
    EXPECT_NE(issued.name, planted);
  }
}

// A generation planted before the server starts is in the server's audit trail from its
// first ring on (generation_refused, once however often it rescans), and the audit report
// raises it as an anomaly.
TEST(KeyCustodyInToken, AGenerationPlantedBeforeTheServerStartsIsInItsAuditTrail) {
  KeyName planted = plant_on_an_empty_token();
  const std::string dir = test::TestToken::get().dir() + "/custody-audit";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  Config config = test::strict(test::TestToken::get().config());
  config.audit.path = dir + "/audit.jsonl";
  {
    auto svc = TicketKeyService::open(config);
    svc->reload();
    svc->reload();
  }
  const std::string text = test::read_file(config.audit.path);
  const std::string record = "\"event\":\"generation_refused\",\"name\":\"" + to_hex(planted) + "\",\"reason\":";
  std::size_t records = 0;
  for (auto at = text.find(record); at != std::string::npos; at = text.find(record, at + 1)) ++records;
  EXPECT_EQ(records, 1u) << text;
  const audit::Report rep = audit::report({config.audit.path}, {});
  ASSERT_EQ(rep.anomalies.size(), 1u) << text;
  EXPECT_EQ(rep.anomalies[0].kind, "generation_refused");
  EXPECT_EQ(rep.anomalies[0].name, to_hex(planted));
}

TEST(KeyCustodyInToken, PlantedAuditKeyIsNeverUsed) {
  test::TestToken::get().clear();
  auto s = test::user_session();
  // The smallest CKA_ID there can be: before the check, every writer sealed with it.
  const hsm::Bytes zero(audit::kAuditKeyIdBytes, 0);
  hsm::import_hmac_key(*s, zero, audit::kAuditKeyLabel, test::random_bytes(32));
  EXPECT_TRUE(audit::find_audit_keys(*s).empty());
  EXPECT_FALSE(audit::find_audit_key(*s, std::string(32, '0')));
  audit::AuditKey k = audit::find_or_create_audit_key(*s);
  EXPECT_NE(k.id, zero);
  EXPECT_TRUE(hsm::read_custody(*s, k.handle).held_in_token());
  ASSERT_EQ(audit::find_audit_keys(*s).size(), 1u);
  EXPECT_EQ(audit::find_audit_keys(*s).front().id, k.id);
}

}  // namespace
}  // namespace keysvc
