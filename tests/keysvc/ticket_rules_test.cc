// The ticket rules (ticket_rules.h): which generation encrypts, what opens and renews,
// the rotation plan, and when a scan is not believed. Pure functions: no token.
#include "keysvc/ticket_rules.h"

#include <gtest/gtest.h>

namespace keysvc {
namespace {

using namespace std::chrono_literals;

constexpr std::int64_t kNow = 1'800'000'000;

KeyName name_of(std::uint8_t b) {
  KeyName n{};
  n.fill(b);
  return n;
}

// A usable generation (fake but valid-looking handles) encrypting [from, until).
Generation gen(std::uint8_t name, std::int64_t from, std::int64_t until, std::int64_t decrypt_until) {
  Generation g;
  g.name = name_of(name);
  g.enc_key = 100 + name;
  g.mac_key = 200 + name;
  g.schedule = Schedule{from - 600, from, until, decrypt_until};
  return g;
}

Generation sgen(std::uint8_t name, Schedule s) {
  Generation g;
  g.name.fill(name);
  g.enc_key = 10 + name;
  g.mac_key = 20 + name;
  g.schedule = s;
  return g;
}

RotationPolicy policy() {
  RotationPolicy p;
  p.encrypt_period = 1h;
  p.publish_lead = 10min;
  p.decrypt_window = 2h;
  p.clock_skew = 30s;
  p.refresh_interval = 30s;
  return p;
}

TEST(TicketRules, EncryptGenerationIsTheLatestBegunUsableOne) {
  KeyRing ring({gen(1, 1000, 2000, 9000), gen(2, 2000, 3000, 9000), gen(3, 3000, 4000, 9000)});
  EXPECT_EQ(ring.encrypt_generation(999), nullptr) << "nothing has begun";
  EXPECT_EQ(ring.encrypt_generation(1000)->name, name_of(1));
  EXPECT_EQ(ring.encrypt_generation(1999)->name, name_of(1));
  EXPECT_EQ(ring.encrypt_generation(2000)->name, name_of(2));
  EXPECT_EQ(ring.encrypt_generation(3500)->name, name_of(3));
  // Past its window, the newest keeps encrypting (late rotator) until it expires.
  EXPECT_EQ(ring.encrypt_generation(8999)->name, name_of(3));
  EXPECT_EQ(ring.encrypt_generation(9000), nullptr) << "all expired";
  EXPECT_EQ(KeyRing().encrypt_generation(1000), nullptr);
}

TEST(TicketRules, TiesGoToTheSmallestName) {
  KeyRing ring({gen(7, 1000, 2000, 9000), gen(4, 1000, 2000, 9000), gen(6, 1000, 2000, 9000)});
  EXPECT_EQ(ring.encrypt_generation(1500)->name, name_of(4));
}

TEST(TicketRules, RevokedOrKeylessGenerationsNeverEncrypt) {
  Generation revoked = gen(2, 2000, 3000, 9000);
  revoked.revoked = true;
  Generation keyless = gen(3, 2500, 3000, 9000);
  keyless.mac_key = CK_INVALID_HANDLE;
  EXPECT_FALSE(keyless.has_keys());
  EXPECT_FALSE(keyless.usable());
  EXPECT_TRUE(revoked.has_keys());
  EXPECT_FALSE(revoked.usable());
  KeyRing ring({gen(1, 1000, 2000, 9000), revoked, keyless});
  EXPECT_EQ(ring.encrypt_generation(2600)->name, name_of(1));
}

TEST(TicketRules, Decrypts) {
  Generation g = gen(1, 1000, 2000, 5000);
  EXPECT_TRUE(KeyRing::decrypts(g, 4999, 0));
  EXPECT_FALSE(KeyRing::decrypts(g, 5000, 0));
  EXPECT_TRUE(KeyRing::decrypts(g, 5029, 30)) << "clock skew allowance";
  EXPECT_FALSE(KeyRing::decrypts(g, 5030, 30));
  g.revoked = true;
  EXPECT_FALSE(KeyRing::decrypts(g, 1500, 30));
}

TEST(TicketRules, States) {
  Generation revoked = gen(4, 1500, 2500, 9000);
  revoked.revoked = true;
  KeyRing ring({gen(1, 1000, 2000, 4000), gen(2, 2000, 3000, 6000), gen(3, 3000, 4000, 7000), revoked});
  const Generation& g1 = *ring.find(name_of(1));
  const Generation& g2 = *ring.find(name_of(2));
  const Generation& g3 = *ring.find(name_of(3));
  EXPECT_EQ(ring.state(g1, 2500), GenerationState::kDecryptOnly);
  EXPECT_EQ(ring.state(g2, 2500), GenerationState::kActive);
  EXPECT_EQ(ring.state(g3, 2500), GenerationState::kPending);
  EXPECT_EQ(ring.state(g1, 4000), GenerationState::kExpired);
  EXPECT_EQ(ring.state(*ring.find(name_of(4)), 2000), GenerationState::kRevoked);
  EXPECT_EQ(to_string(GenerationState::kPending), "pending");
  EXPECT_EQ(to_string(GenerationState::kActive), "active");
  EXPECT_EQ(to_string(GenerationState::kDecryptOnly), "decrypt-only");
  EXPECT_EQ(to_string(GenerationState::kExpired), "expired");
  EXPECT_EQ(to_string(GenerationState::kRevoked), "revoked");
}

TEST(TicketRules, PlanEmptyRingGetsOneGenerationEncryptingNow) {
  RotationPlan plan = plan_rotation(KeyRing(), kNow, policy());
  ASSERT_EQ(plan.create.size(), 1u);
  EXPECT_EQ(plan.create[0], (Schedule{kNow, kNow, kNow + 3600, kNow + 3600 + 7200}));
  EXPECT_TRUE(plan.destroy.empty());
  EXPECT_FALSE(plan.empty());
}

TEST(TicketRules, PlanPublishesAheadWhenCoverageRunsShort) {
  // The current generation ends in 15 minutes, less than 2 x publish_lead away.
  KeyRing ring({sgen(1, Schedule{kNow - 2700, kNow - 2700, kNow + 900, kNow + 900 + 7200})});
  RotationPlan plan = plan_rotation(ring, kNow, policy());
  ASSERT_EQ(plan.create.size(), 1u);
  EXPECT_EQ(plan.create[0].encrypt_from, kNow + 900) << "starts exactly when the current one ends";
  EXPECT_EQ(plan.create[0].encrypt_until, kNow + 900 + 3600);
  EXPECT_EQ(plan.create[0].created, kNow);
  // Far enough ahead: nothing to do (the rotator is idempotent).
  KeyRing covered({sgen(1, Schedule{kNow, kNow, kNow + 3600, kNow + 3600 + 7200})});
  EXPECT_TRUE(plan_rotation(covered, kNow, policy()).empty());
}

TEST(TicketRules, PlanShortPeriodsCreateSeveral) {
  RotationPolicy p = policy();
  p.encrypt_period = 5min;
  RotationPlan plan = plan_rotation(KeyRing(), kNow, p);
  ASSERT_EQ(plan.create.size(), 4u);  // coverage must reach 2 x 10 minutes
  for (std::size_t i = 1; i < plan.create.size(); ++i)
    EXPECT_EQ(plan.create[i].encrypt_from, plan.create[i - 1].encrypt_until);
}

TEST(TicketRules, PlanDestroysExpiredAfterSkewAndRaceLosers) {
  Schedule expired{kNow - 20000, kNow - 20000, kNow - 16400, kNow - 30};  // decrypt_until + skew == now
  Schedule almost{kNow - 20000, kNow - 20000, kNow - 16400, kNow - 29};
  Schedule current{kNow, kNow, kNow + 3600, kNow + 10800};
  Schedule next{kNow, kNow + 3600, kNow + 7200, kNow + 14400};
  KeyRing ring({sgen(1, expired), sgen(2, almost), sgen(3, current), sgen(9, next), sgen(5, next)});
  RotationPlan plan = plan_rotation(ring, kNow, policy());
  EXPECT_TRUE(plan.create.empty());
  std::set<KeyName> destroyed(plan.destroy.begin(), plan.destroy.end());
  KeyName n1, n9;
  n1.fill(1);
  n9.fill(9);
  EXPECT_EQ(destroyed, (std::set<KeyName>{n1, n9})) << "expired 1, and 9 lost the race for the next window to 5";
}

TEST(TicketRules, AnOpenedTicketRenewsOnlyUnderAnOlderGeneration) {
  KeyRing ring({gen(1, 100, 200, 400), gen(2, 200, 300, 500), gen(3, 300, 400, 600)});
  const std::int64_t now = 250;  // 2 encrypts
  EXPECT_TRUE(ticket_renews(ring, *ring.find(name_of(1)), now));
  EXPECT_FALSE(ticket_renews(ring, *ring.find(name_of(2)), now));
  EXPECT_FALSE(ticket_renews(ring, *ring.find(name_of(3)), now)) << "newer: a server whose clock runs ahead";
  EXPECT_FALSE(ticket_renews(KeyRing({gen(1, 100, 200, 400)}), *ring.find(name_of(1)), 500)) << "nothing encrypts";
}

TEST(TicketRules, SessionAgeCountsFromTheOriginalHandshake) {
  EXPECT_TRUE(session_young_enough(1000, 1000 + 86400, 86400));
  EXPECT_FALSE(session_young_enough(1000, 1000 + 86401, 86400));
}

TEST(TicketRules, AScanThatLostEveryLiveGenerationIsNotBelieved) {
  KeyRing before({gen(1, 100, 200, 400), gen(2, 200, 300, 500)});
  EXPECT_TRUE(scan_lost_every_generation(before, KeyRing(), 250));
  EXPECT_FALSE(scan_lost_every_generation(before, KeyRing({gen(2, 200, 300, 500)}), 250)) << "one survives";
  EXPECT_FALSE(scan_lost_every_generation(before, KeyRing({gen(9, 250, 350, 550)}), 250))
      << "all replaced by a new one: the token was read";
  EXPECT_FALSE(scan_lost_every_generation(before, KeyRing(), 600)) << "all expired: destroying them is normal";
  EXPECT_FALSE(scan_lost_every_generation(KeyRing(), KeyRing(), 250)) << "an empty token stays empty";
  Generation revoked = gen(3, 100, 200, 400);
  revoked.revoked = true;
  EXPECT_FALSE(scan_lost_every_generation(KeyRing({revoked}), KeyRing(), 250)) << "only a revoked one left";
}

// Epoch tier: 300 s epochs, a generation encrypting [kNow - 3600, kNow + 3600), a 2 h
// ticket lifetime, 30 s of skew.
TEST(TicketRules, ATicketsEpochOpensIsTooOldOrCannotBeKeysvcs) {
  Generation g = gen(1, kNow - 3600, kNow + 3600, kNow + 3 * 3600);
  g.derivation = 3;
  g.epoch_seconds = 300;
  const std::int64_t now = kNow, lifetime = 7200, skew = 30, e = epoch_of(now, 300);
  EXPECT_EQ(check_ticket_epoch(g, e, now, lifetime, skew), TicketEpoch::kOpens);
  EXPECT_EQ(check_ticket_epoch(g, epoch_of(kNow - 3600, 300), now, lifetime, skew), TicketEpoch::kOpens);
  EXPECT_EQ(check_ticket_epoch(g, e + 1, now, lifetime, skew), TicketEpoch::kImpossible) << "from the future";
  // (the epoch before encrypt_from still opens: it holds encrypt_from - clock_skew)
  EXPECT_EQ(check_ticket_epoch(g, epoch_of(kNow - 3600, 300) - 2, now, lifetime, skew), TicketEpoch::kImpossible)
      << "from before the generation encrypted";
  // Three hours on, the first epochs of the generation are older than the lifetime.
  EXPECT_EQ(check_ticket_epoch(g, epoch_of(kNow - 3600, 300), now + 3 * 3600, lifetime, skew), TicketEpoch::kTooOld);
}

TEST(TicketRules, EpochKeysKeptAreThoseTicketsMayComeFromAndTheNextOne) {
  Generation g = gen(1, kNow - 3600, kNow + 3600, kNow + 3 * 3600);
  g.derivation = 3;
  g.epoch_seconds = 300;
  const EpochRange from = ticket_epochs(g, kNow, 7200, 30), keep = epochs_to_keep(g, kNow, 7200, 30);
  EXPECT_EQ(keep.first, from.first);
  EXPECT_EQ(keep.last, from.last + 1);
  g.revoked = true;
  EXPECT_EQ(epochs_to_keep(g, kNow, 7200, 30).size(), 0) << "a revoked generation keeps no key";
}

}  // namespace
}  // namespace keysvc
