#include "keysvc/hsm/secret.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <stdexcept>
#include <array>
#include <string_view>
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
  // The old value's block went back to secure memory, wiped: the next secret of its
  // size gets it, all zero.
  SecretString next = SecretString::with_capacity(64);
  ASSERT_EQ(next.buffer().data(), old);
  EXPECT_TRUE(std::all_of(old, old + 64, [](char c) { return c == '\0'; }));
}

TEST(SecretString, LivesInSecureMemory) {
  SecretString s("pin-in-secure-memory");
  EXPECT_TRUE(is_secure_memory(s.reveal().data(), s.size()));
  const std::string plain = "not a secret";
  EXPECT_FALSE(is_secure_memory(plain.data(), plain.size()));
}

TEST(SecretString, FilledInPlace) {
  SecretString s = SecretString::with_capacity(40);
  EXPECT_TRUE(s.empty());
  EXPECT_EQ(s.capacity(), 40u);
  std::string_view text = "filled-in-place\n";
  text.copy(s.buffer().data(), text.size());
  s.resize(text.size() - 1);
  EXPECT_EQ(s.reveal(), "filled-in-place");
  EXPECT_EQ(s.buffer()[text.size() - 1], '\0') << "the byte after the new end is wiped";
  EXPECT_THROW(s.resize(41), std::length_error);
}

TEST(SecretString, AtMost256Bytes) {
  EXPECT_EQ(SecretString(std::string(kMaxSecretBytes, 'x')).size(), kMaxSecretBytes);
  EXPECT_THROW(SecretString(std::string(kMaxSecretBytes + 1, 'x')), std::length_error);
  EXPECT_THROW(SecretString::with_capacity(kMaxSecretBytes + 1), std::length_error);
}

}  // namespace
}  // namespace keysvc::hsm
