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


std::unique_ptr<TokenGateway> gateway() { return TokenGateway::open(test::TestToken::get().config()); }

KeyRing load(TokenGateway& g) {
  return g.call([](hsm::Session& s) { return token_store::load(s); });
}

TEST(Rotate, CarriesThePlanOutInTheToken) {
  test::TestToken::get().clear();
  auto g = gateway();
  TokenGateway& p = *g;
  RotationResult first = rotate(p, kNow, policy());
  ASSERT_EQ(first.created.size(), 1u);
  EXPECT_TRUE(first.destroyed.empty());
  RotationResult again = rotate(p, kNow, policy());
  EXPECT_TRUE(again.created.empty()) << "idempotent";
  // Later: the next one is published ahead, and after everything expired it is destroyed.
  RotationResult later = rotate(p, kNow + 3600 - 600, policy());
  EXPECT_EQ(later.created.size(), 1u);
  EXPECT_EQ(load(p).generations().size(), 2u);
  RotationResult end = rotate(p, kNow + 100000, policy());
  EXPECT_EQ(end.destroyed.size(), 2u);
  EXPECT_EQ(end.created.size(), 1u);
  EXPECT_EQ(p.call([](hsm::Session& s) { return hsm::find_objects(s, {}).size(); }), 3u);
}

TEST(Rotate, CreatesNothingWhenTheTokenLostEveryGenerationItHeld) {
  test::TestToken::get().clear();
  auto g = gateway();
  rotate(*g, kNow, policy());
  auto last_good = std::make_shared<const KeyRing>(load(*g));
  ASSERT_FALSE(last_good->empty());
  test::TestToken::get().clear();  // what an unreadable token folder looks like to a scan
  EXPECT_THROW(rotate(*g, kNow + 60, policy(), last_good), hsm::Error);
  EXPECT_TRUE(load(*g).empty()) << "nothing created during the outage";
  EXPECT_EQ(rotate(*g, kNow + 60, policy()).created.size(), 1u) << "without a last good ring: an empty token";
}

TEST(Revoke, RevokesAndReplacesTheEncryptGeneration) {
  test::TestToken::get().clear();
  auto gw = gateway();
  TokenGateway& p = *gw;
  Generation g = rotate(p, kNow, policy()).created.at(0);
  EXPECT_TRUE(revoke(p, g.name, kNow + 60, policy()));
  KeyRing ring = load(p);
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
