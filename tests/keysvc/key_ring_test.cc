#include "keysvc/key_ring.h"

#include <gtest/gtest.h>

namespace keysvc {
namespace {

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

std::vector<KeyName> names(const KeyRing& r) {
  std::vector<KeyName> v;
  for (const auto& g : r.generations()) v.push_back(g.name);
  return v;
}

TEST(KeyRing, OrdersByEncryptFromThenName) {
  KeyRing ring({gen(3, 2000, 3000, 5000), gen(9, 1000, 2000, 4000), gen(1, 2000, 3000, 5000), gen(5, 500, 1000, 3000)});
  EXPECT_EQ(names(ring), (std::vector<KeyName>{name_of(5), name_of(9), name_of(1), name_of(3)}));
}

TEST(KeyRing, Find) {
  KeyRing ring({gen(1, 0, 10, 20), gen(2, 10, 20, 30)});
  ASSERT_NE(ring.find(name_of(2)), nullptr);
  EXPECT_EQ(ring.find(name_of(2))->enc_key, 102u);
  EXPECT_EQ(ring.find(name_of(1))->mac_key, 201u);
  EXPECT_EQ(ring.find(name_of(7)), nullptr);
  EXPECT_EQ(KeyRing().find(name_of(1)), nullptr);
  EXPECT_TRUE(KeyRing().empty());
  EXPECT_FALSE(ring.empty());
}

TEST(KeyRing, EncryptGenerationIsTheLatestBegunUsableOne) {
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

TEST(KeyRing, TiesGoToTheSmallestName) {
  KeyRing ring({gen(7, 1000, 2000, 9000), gen(4, 1000, 2000, 9000), gen(6, 1000, 2000, 9000)});
  EXPECT_EQ(ring.encrypt_generation(1500)->name, name_of(4));
}

TEST(KeyRing, RevokedOrKeylessGenerationsNeverEncrypt) {
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

TEST(KeyRing, Decrypts) {
  Generation g = gen(1, 1000, 2000, 5000);
  EXPECT_TRUE(KeyRing::decrypts(g, 4999, 0));
  EXPECT_FALSE(KeyRing::decrypts(g, 5000, 0));
  EXPECT_TRUE(KeyRing::decrypts(g, 5029, 30)) << "clock skew allowance";
  EXPECT_FALSE(KeyRing::decrypts(g, 5030, 30));
  g.revoked = true;
  EXPECT_FALSE(KeyRing::decrypts(g, 1500, 30));
}

TEST(KeyRing, States) {
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

}  // namespace
}  // namespace keysvc
