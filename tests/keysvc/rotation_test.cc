#include "keysvc/rotation.h"

#include <gtest/gtest.h>

#include <set>

#include "keysvc/hsm/object.h"
#include "keysvc/token_store.h"
#include "test_helpers.h"

namespace keysvc {
namespace {

using namespace std::chrono_literals;

constexpr std::int64_t kNow = 1'800'000'000;

RotationPolicy policy() {
  RotationPolicy p;
  p.encrypt_period = 1h;
  p.publish_lead = 10min;
  p.decrypt_window = 2h;
  p.clock_skew = 30s;
  p.refresh_interval = 30s;
  return p;
}

Generation gen(std::uint8_t name, Schedule s) {
  Generation g;
  g.name.fill(name);
  g.enc_key = 10 + name;
  g.mac_key = 20 + name;
  g.schedule = s;
  return g;
}

hsm::SessionPool pool() {
  return hsm::SessionPool(test::test_hsm_token(), hsm::PinSource::parse("file:" + test::TestToken::get().pin_path()), 2);
}

TEST(PlanRotation, EmptyRingGetsOneGenerationEncryptingNow) {
  RotationPlan plan = plan_rotation(KeyRing(), kNow, policy());
  ASSERT_EQ(plan.create.size(), 1u);
  EXPECT_EQ(plan.create[0], (Schedule{kNow, kNow, kNow + 3600, kNow + 3600 + 7200}));
  EXPECT_TRUE(plan.destroy.empty());
  EXPECT_FALSE(plan.empty());
}

TEST(PlanRotation, PublishesAheadWhenCoverageRunsShort) {
  // The current generation ends in 15 minutes, less than 2 x publish_lead away.
  KeyRing ring({gen(1, Schedule{kNow - 2700, kNow - 2700, kNow + 900, kNow + 900 + 7200})});
  RotationPlan plan = plan_rotation(ring, kNow, policy());
  ASSERT_EQ(plan.create.size(), 1u);
  EXPECT_EQ(plan.create[0].encrypt_from, kNow + 900) << "starts exactly when the current one ends";
  EXPECT_EQ(plan.create[0].encrypt_until, kNow + 900 + 3600);
  EXPECT_EQ(plan.create[0].created, kNow);
  // Far enough ahead: nothing to do (the rotator is idempotent).
  KeyRing covered({gen(1, Schedule{kNow, kNow, kNow + 3600, kNow + 3600 + 7200})});
  EXPECT_TRUE(plan_rotation(covered, kNow, policy()).empty());
}

TEST(PlanRotation, ShortPeriodsCreateSeveral) {
  RotationPolicy p = policy();
  p.encrypt_period = 5min;
  RotationPlan plan = plan_rotation(KeyRing(), kNow, p);
  ASSERT_EQ(plan.create.size(), 4u);  // coverage must reach 2 x 10 minutes
  for (std::size_t i = 1; i < plan.create.size(); ++i)
    EXPECT_EQ(plan.create[i].encrypt_from, plan.create[i - 1].encrypt_until);
}

TEST(PlanRotation, DestroysExpiredAfterSkewAndRaceLosers) {
  Schedule expired{kNow - 20000, kNow - 20000, kNow - 16400, kNow - 30};  // decrypt_until + skew == now
  Schedule almost{kNow - 20000, kNow - 20000, kNow - 16400, kNow - 29};
  Schedule current{kNow, kNow, kNow + 3600, kNow + 10800};
  Schedule next{kNow, kNow + 3600, kNow + 7200, kNow + 14400};
  KeyRing ring({gen(1, expired), gen(2, almost), gen(3, current), gen(9, next), gen(5, next)});
  RotationPlan plan = plan_rotation(ring, kNow, policy());
  EXPECT_TRUE(plan.create.empty());
  std::set<KeyName> destroyed(plan.destroy.begin(), plan.destroy.end());
  KeyName n1, n9;
  n1.fill(1);
  n9.fill(9);
  EXPECT_EQ(destroyed, (std::set<KeyName>{n1, n9})) << "expired 1, and 9 lost the race for the next window to 5";
}

TEST(Rotate, CarriesThePlanOutInTheToken) {
  test::TestToken::get().clear();
  auto p = pool();
  RotationResult first = rotate(p, kNow, policy());
  ASSERT_EQ(first.created.size(), 1u);
  EXPECT_TRUE(first.destroyed.empty());
  RotationResult again = rotate(p, kNow, policy());
  EXPECT_TRUE(again.created.empty()) << "idempotent";
  // Later: the next one is published ahead, and after everything expired it is destroyed.
  RotationResult later = rotate(p, kNow + 3600 - 600, policy());
  EXPECT_EQ(later.created.size(), 1u);
  KeyRing ring = p.run([](hsm::Session& s) { return token_store::load(s); });
  EXPECT_EQ(ring.generations().size(), 2u);
  RotationResult end = rotate(p, kNow + 100000, policy());
  EXPECT_EQ(end.destroyed.size(), 2u);
  EXPECT_EQ(end.created.size(), 1u);
  EXPECT_EQ(p.run([](hsm::Session& s) { return hsm::find_objects(s, {}).size(); }), 3u);
}

TEST(Revoke, RevokesAndReplacesTheEncryptGeneration) {
  test::TestToken::get().clear();
  auto p = pool();
  Generation g = rotate(p, kNow, policy()).created.at(0);
  EXPECT_TRUE(revoke(p, g.name, kNow + 60, policy()));
  KeyRing ring = p.run([](hsm::Session& s) { return token_store::load(s); });
  const Generation* revoked = ring.find(g.name);
  ASSERT_NE(revoked, nullptr);
  EXPECT_TRUE(revoked->revoked);
  EXPECT_FALSE(revoked->has_keys()) << "keys destroyed";
  const Generation* current = ring.encrypt_generation(kNow + 60);
  ASSERT_NE(current, nullptr);
  EXPECT_NE(current->name, g.name);
  KeyName unknown{};
  EXPECT_FALSE(revoke(p, unknown, kNow, policy()));
}

}  // namespace
}  // namespace keysvc
