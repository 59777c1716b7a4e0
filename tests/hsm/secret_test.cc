#include "keysvc/hsm/secret.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <string>
#include <utility>

namespace keysvc::hsm {
namespace {

TEST(Wipe, ZeroesEveryByte) {
  std::array<std::uint8_t, 64> buf;
  buf.fill(0xa5);
  wipe(buf.data(), buf.size());
  EXPECT_TRUE(std::all_of(buf.begin(), buf.end(), [](auto b) { return b == 0; }));
}

TEST(Wipe, OnlyTheGivenRange) {
  std::array<std::uint8_t, 8> buf;
  buf.fill(0xff);
  wipe(buf.data() + 2, 4);
  EXPECT_EQ(buf, (std::array<std::uint8_t, 8>{0xff, 0xff, 0, 0, 0, 0, 0xff, 0xff}));
  wipe(buf.data(), 0);  // empty: a no-op
  EXPECT_EQ(buf[0], 0xff);
}

TEST(SecretString, HoldsAndRevealsTheValue) {
  SecretString s("pin-1234");
  EXPECT_FALSE(s.empty());
  EXPECT_EQ(s.size(), 8u);
  EXPECT_EQ(s.reveal(), "pin-1234");
  SecretString none;
  EXPECT_TRUE(none.empty());
  EXPECT_EQ(none.reveal(), "");
}

// clear() overwrites the characters in place (the buffer is kept, so we can look).
TEST(SecretString, ClearWipesTheBufferInPlace) {
  const std::string value(100, 'S');  // long enough to live on the heap
  SecretString s{std::string(value)};
  const char* data = s.reveal().data();
  s.clear();
  EXPECT_TRUE(s.empty());
  EXPECT_EQ(s.reveal().data(), data) << "buffer moved; cannot check the wipe";
  EXPECT_TRUE(std::all_of(data, data + value.size(), [](char c) { return c == '\0'; }));
}

TEST(SecretString, MoveLeavesTheSourceEmpty) {
  SecretString a("moved-pin");
  SecretString b(std::move(a));
  EXPECT_EQ(b.reveal(), "moved-pin");
  EXPECT_TRUE(a.empty());  // NOLINT(bugprone-use-after-move): that is the point
}

TEST(SecretString, MoveAssignWipesTheOldValue) {
  SecretString target{std::string(64, 'O')};
  const char* old = target.reveal().data();
  SecretString source("new-value");
  target = std::move(source);
  EXPECT_EQ(target.reveal(), "new-value");
  EXPECT_TRUE(source.empty());  // NOLINT(bugprone-use-after-move)
  // The old value's buffer now belongs to `source` (swapped) and has been wiped.
  EXPECT_EQ(source.reveal().data(), old);
  EXPECT_TRUE(std::all_of(old, old + 64, [](char c) { return c == '\0'; }));
}

}  // namespace
}  // namespace keysvc::hsm
