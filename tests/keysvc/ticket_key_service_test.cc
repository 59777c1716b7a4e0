#include "keysvc/ticket_key_service.h"
#include "keysvc/token_gateway.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <set>
#include <thread>

#include "keysvc/derivation.h"
#include "keysvc/hsm/error.h"
#include "keysvc/hsm/object.h"
#include "keysvc/token_store.h"
#include "known_secrets.h"
#include "test_helpers.h"

namespace keysvc {
namespace {

// A clock the test moves by hand.
struct TestClock {
  std::shared_ptr<std::atomic<std::int64_t>> seconds = std::make_shared<std::atomic<std::int64_t>>(1'800'000'000);
  Clock clock() const {
    return [s = seconds] { return std::chrono::system_clock::time_point(std::chrono::seconds(s->load())); };
  }
  void advance(std::int64_t by) { *seconds += by; }
};

// Most of these tests count HSM work per ticket: the strict tier (epoch tier: key_deriver_test).
Config test_config() { return test::strict(test::TestToken::get().config()); }

bool same_keys(const TicketKeys& a, const TicketKeys& b) { return a.aes_key == b.aes_key && a.hmac_key == b.hmac_key; }

TEST(TicketKeyService, OpenOnEmptyTokenCreatesOneGeneration) {
  test::TestToken::get().clear();
  TestClock clock;
  auto svc = TicketKeyService::open(test_config(), clock.clock());
  auto ring = svc->ring();
  ASSERT_EQ(ring->generations().size(), 1u);
  ASSERT_TRUE(svc->encrypt_key_name().has_value());
  EXPECT_EQ(*svc->encrypt_key_name(), ring->generations()[0].name);
  EXPECT_EQ(ring->generations()[0].schedule.encrypt_from, *clock.seconds);
  EXPECT_EQ(svc->gateway().call([](hsm::Session& s) { return hsm::find_objects(s, {}).size(); }), 3u);

  // A second server on the same token finds it and creates nothing.
  auto other = TicketKeyService::open(test_config(), clock.clock());
  EXPECT_EQ(other->ring()->generations().size(), 1u);
  EXPECT_EQ(other->encrypt_key_name(), svc->encrypt_key_name());
}

TEST(TicketKeyService, OpenWithoutCreatingLeavesAnEmptyRing) {
  test::TestToken::get().clear();
  Config c = test_config();
  c.tickets.create_if_empty = false;
  c.rotation.self_rotate = false;
  auto svc = TicketKeyService::open(c);
  EXPECT_TRUE(svc->ring()->empty());
  EXPECT_FALSE(svc->encrypt_key_name().has_value());
  IssueKeys out;
  EXPECT_FALSE(svc->derive_for_issue(out));
  EXPECT_EQ(svc->ticket_counters()[TicketEvent::kIssueFailed], 1u);
  EXPECT_EQ(svc->counters().hsm_errors, 0u) << "no generation is not a token failure";
  EXPECT_EQ(svc->counters().issued, 0u);
}

TEST(TicketKeyService, IssueAndOpenDeriveTheSameKeys) {
  test::TestToken::get().clear();
  TestClock clock;
  auto svc = TicketKeyService::open(test_config(), clock.clock());
  IssueKeys issued;
  ASSERT_TRUE(svc->derive_for_issue(issued));
  EXPECT_EQ(issued.name, *svc->encrypt_key_name());
  EXPECT_NE(issued.keys.aes_key, (std::array<std::uint8_t, 32>{}));
  EXPECT_NE(issued.keys.aes_key, issued.keys.hmac_key);
  test::remember_secret_bytes(issued.keys.aes_key);  // never in any log (the secret scan)
  test::remember_secret_bytes(issued.keys.hmac_key);

  TicketKeys opened;
  EXPECT_EQ(svc->derive_for_open(issued.name, issued.iv, opened), OpenStatus::kOk);
  EXPECT_TRUE(same_keys(opened, issued.keys));

  // They are the documented derivation of this generation and IV.
  const Generation* g = svc->ring()->find(issued.name);
  ASSERT_NE(g, nullptr);
  TicketKeys direct;
  svc->gateway().call([&](hsm::Session& s) { derive_ticket_keys(s, *g, issued.iv, direct); });
  EXPECT_TRUE(same_keys(direct, issued.keys));

  // Another IV, other keys; every issue has a fresh IV.
  IssueKeys second;
  ASSERT_TRUE(svc->derive_for_issue(second));
  EXPECT_NE(second.iv, issued.iv);
  EXPECT_FALSE(same_keys(second.keys, issued.keys));
}

TEST(TicketKeyService, AnotherServerOpensTheTicket) {
  test::TestToken::get().clear();
  TestClock clock;
  auto a = TicketKeyService::open(test_config(), clock.clock());
  auto b = TicketKeyService::open(test_config(), clock.clock());
  IssueKeys issued;
  ASSERT_TRUE(a->derive_for_issue(issued));
  TicketKeys opened;
  EXPECT_EQ(b->derive_for_open(issued.name, issued.iv, opened), OpenStatus::kOk);
  EXPECT_TRUE(same_keys(opened, issued.keys));
}

TEST(TicketKeyService, UnknownNameIsUnknownKey) {
  test::TestToken::get().clear();
  auto svc = TicketKeyService::open(test_config());
  KeyName bogus = *svc->encrypt_key_name();
  bogus[0] ^= 0xff;
  TicketKeys out;
  out.aes_key.fill(7);
  EXPECT_EQ(svc->derive_for_open(bogus, Iv{}, out), OpenStatus::kUnknownKey);
  EXPECT_EQ(svc->counters().unknown_key, 1u);
  EXPECT_EQ(svc->counters().opened, 0u);
  EXPECT_EQ(svc->counters().hsm_calls, 0u) << "no HMAC for an unknown name";
}

TEST(TicketKeyService, OlderGenerationIsRenewedAfterCreateGeneration) {
  test::TestToken::get().clear();
  TestClock clock;
  auto svc = TicketKeyService::open(test_config(), clock.clock());
  IssueKeys old_ticket;
  ASSERT_TRUE(svc->derive_for_issue(old_ticket));

  clock.advance(1);  // a later encrypt window start than the first generation's
  Generation newer = svc->create_generation();
  EXPECT_NE(newer.name, old_ticket.name);
  EXPECT_EQ(svc->ring()->generations().size(), 2u);
  EXPECT_EQ(*svc->encrypt_key_name(), newer.name);

  TicketKeys opened;
  EXPECT_EQ(svc->derive_for_open(old_ticket.name, old_ticket.iv, opened), OpenStatus::kOkRenew);
  EXPECT_TRUE(same_keys(opened, old_ticket.keys)) << "the old ticket still opens";

  IssueKeys new_ticket;
  ASSERT_TRUE(svc->derive_for_issue(new_ticket));
  EXPECT_EQ(new_ticket.name, newer.name);
  TicketKeys reopened;
  EXPECT_EQ(svc->derive_for_open(new_ticket.name, new_ticket.iv, reopened), OpenStatus::kOk);
}

TEST(TicketKeyService, ExpiredGenerationIsRetired) {
  test::TestToken::get().clear();
  TestClock clock;
  Config c = test_config();
  c.rotation.self_rotate = false;
  auto svc = TicketKeyService::open(c, clock.clock());
  IssueKeys t;
  ASSERT_TRUE(svc->derive_for_issue(t));
  const Generation* g = svc->ring()->find(t.name);
  ASSERT_NE(g, nullptr);
  clock.advance(g->schedule.decrypt_until - *clock.seconds + c.rotation.clock_skew.count());
  TicketKeys out;
  EXPECT_EQ(svc->derive_for_open(t.name, t.iv, out), OpenStatus::kRetired);
  EXPECT_EQ(svc->counters().retired_key, 1u);
}

TEST(TicketKeyService, CountersCount) {
  test::TestToken::get().clear();
  auto svc = TicketKeyService::open(test_config());
  ServiceCounters before = svc->counters();
  for (int i = 0; i < 3; ++i) {
    IssueKeys k;
    ASSERT_TRUE(svc->derive_for_issue(k));
    TicketKeys o;
    ASSERT_EQ(svc->derive_for_open(k.name, k.iv, o), OpenStatus::kOk);
  }
  TicketKeys o;
  svc->derive_for_open(KeyName{}, Iv{}, o);
  ServiceCounters c = svc->counters();
  EXPECT_EQ(c.issued - before.issued, 3u);
  EXPECT_EQ(c.opened - before.opened, 3u);
  EXPECT_EQ(c.unknown_key - before.unknown_key, 1u);
  EXPECT_EQ(c.hsm_calls - before.hsm_calls, 12u) << "two HMACs per derivation";
  EXPECT_EQ(c.hsm_errors, 0u);
}

TEST(TicketKeyService, DerivationTwoMakesOneHsmCallPerTicket) {
  test::TestToken::get().clear();
  Config config = test_config();
  config.rotation.derivation = 2;
  auto svc = TicketKeyService::open(config);
  ASSERT_EQ(svc->ring()->generations().size(), 1u);
  EXPECT_EQ(svc->ring()->generations()[0].derivation, 2);
  ServiceCounters before = svc->counters();
  IssueKeys k;
  ASSERT_TRUE(svc->derive_for_issue(k));
  TicketKeys o;
  ASSERT_EQ(svc->derive_for_open(k.name, k.iv, o), OpenStatus::kOk);
  EXPECT_TRUE(same_keys(o, k.keys));
  EXPECT_EQ(svc->counters().hsm_calls - before.hsm_calls, 2u) << "one HMAC-SHA512 per derivation";
  // A server without the opt-in reads the v2 generation and opens the ticket too.
  auto other = TicketKeyService::open(test_config());
  TicketKeys p;
  ASSERT_EQ(other->derive_for_open(k.name, k.iv, p), OpenStatus::kOk);
  EXPECT_TRUE(same_keys(p, k.keys));
}

// Per key name: what the service sees itself, plus what the adapter reports by record().
TEST(TicketKeyService, UsageCountsPerKeyName) {
  test::TestToken::get().clear();
  TestClock clock;
  Config c = test_config();
  c.rotation.self_rotate = false;
  auto svc = TicketKeyService::open(c, clock.clock());
  IssueKeys t;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(svc->derive_for_issue(t));
  KeyName bogus = t.name;
  bogus[0] ^= 0xff;
  TicketKeys out;
  ASSERT_EQ(svc->derive_for_open(bogus, Iv{}, out), OpenStatus::kUnknownKey);
  svc->record(t.name, TicketOutcome::kResumed);
  svc->record(t.name, TicketOutcome::kMacFailure);
  const Generation* g = svc->ring()->find(t.name);
  ASSERT_NE(g, nullptr);
  clock.advance(g->schedule.decrypt_until - *clock.seconds + c.rotation.clock_skew.count());
  ASSERT_EQ(svc->derive_for_open(t.name, t.iv, out), OpenStatus::kRetired);

  UsageSnapshot u = svc->usage();
  const KeyUsage* k = u.find(t.name);
  ASSERT_NE(k, nullptr);
  EXPECT_EQ(k->kind, KeyUsage::Kind::kGeneration);
  auto at = [](const KeyUsage* ku, TicketOutcome o) { return ku->counters[static_cast<std::size_t>(o)]; };
  EXPECT_EQ(at(k, TicketOutcome::kIssued), 3u);
  EXPECT_EQ(at(k, TicketOutcome::kResumed), 1u);
  EXPECT_EQ(at(k, TicketOutcome::kMacFailure), 1u);
  EXPECT_EQ(at(k, TicketOutcome::kExpired), 1u);
  EXPECT_EQ(k->rejected(), 2u);
  const KeyUsage* unknown = u.find(bogus);
  ASSERT_NE(unknown, nullptr);
  EXPECT_EQ(unknown->kind, KeyUsage::Kind::kUnknown);
  EXPECT_EQ(at(unknown, TicketOutcome::kUnknownKey), 1u);
}

// The token fails (keys destroyed behind the service's back): an HSM error, keys wiped.
TEST(TicketKeyService, TokenFailureIsHsmErrorAndWipesTheOutput) {
  test::TestToken::get().clear();
  Config c = test_config();
  c.rotation.self_rotate = false;
  auto svc = TicketKeyService::open(c);
  IssueKeys t;
  ASSERT_TRUE(svc->derive_for_issue(t));
  svc->gateway().call([&](hsm::Session& s) { token_store::destroy_generation(s, t.name); });
  TicketKeys out;
  out.aes_key.fill(0x5a);
  out.hmac_key.fill(0x5a);
  EXPECT_EQ(svc->derive_for_open(t.name, t.iv, out), OpenStatus::kHsmError);
  EXPECT_EQ(out.aes_key, (std::array<std::uint8_t, 32>{}));
  EXPECT_EQ(out.hmac_key, (std::array<std::uint8_t, 32>{}));
  EXPECT_GE(svc->counters().hsm_errors, 1u);
  IssueKeys again;
  EXPECT_FALSE(svc->derive_for_issue(again));
}

TEST(TicketKeyService, ConcurrentDeriveFromFourThreads) {
  test::TestToken::get().clear();
  auto svc = TicketKeyService::open(test_config());
  constexpr int kThreads = 4, kPerThread = 100;
  std::atomic<int> mismatches{0}, failures{0};
  std::vector<std::thread> threads;
  std::mutex ivs_mutex;
  std::set<Iv> ivs;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kPerThread; ++i) {
        IssueKeys k;
        if (!svc->derive_for_issue(k)) {
          ++failures;
          continue;
        }
        TicketKeys o;
        if (svc->derive_for_open(k.name, k.iv, o) != OpenStatus::kOk) ++failures;
        else if (!same_keys(o, k.keys)) ++mismatches;
        std::lock_guard lock(ivs_mutex);
        ivs.insert(k.iv);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(mismatches.load(), 0);
  EXPECT_EQ(ivs.size(), static_cast<std::size_t>(kThreads * kPerThread));
  ServiceCounters c = svc->counters();
  EXPECT_EQ(c.issued, static_cast<std::uint64_t>(kThreads * kPerThread));
  EXPECT_EQ(c.opened, static_cast<std::uint64_t>(kThreads * kPerThread));
  EXPECT_LE(svc->gateway().open_sessions(), test_config().hsm.sessions);
}

TEST(TicketKeyService, WrongPinIsOneLineWithoutThePin) {
  const std::string wrong = "bad-" + test::random_text(10);
  ::setenv("KEYSVC_SERVICE_TEST_PIN", wrong.c_str(), 1);
  Config c = test_config();
  c.hsm.pin_source = "env:KEYSVC_SERVICE_TEST_PIN";
  try {
    TicketKeyService::open(c);
    FAIL() << "opened with a wrong PIN";
  } catch (const hsm::Pkcs11Error& e) {
    EXPECT_STREQ(e.what(), "C_Login: CKR_PIN_INCORRECT");
    EXPECT_EQ(std::string(e.what()).find(wrong), std::string::npos);
  }
}

TEST(TicketKeyService, MissingTokenOrModuleIsAConfigError) {
  Config c = test_config();
  c.hsm.token_uri = "pkcs11:token=not-here";
  try {
    TicketKeyService::open(c);
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("pkcs11:token=not-here"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("keysvc-test"), std::string::npos) << e.what();
  }
  c = test_config();
  c.hsm.module = "/nonexistent/libp11-missing.so";
  try {
    TicketKeyService::open(c);
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/libp11-missing.so"), std::string::npos) << e.what();
  }
  c = test_config();
  c.hsm.token_uri = "pkcs11:token=%zz";
  EXPECT_THROW(TicketKeyService::open(c), ConfigError);
}

}  // namespace
}  // namespace keysvc
