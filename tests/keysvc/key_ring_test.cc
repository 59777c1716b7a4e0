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

}  // namespace
}  // namespace keysvc
