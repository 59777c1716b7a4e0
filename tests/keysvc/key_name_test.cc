#include "keysvc/key_name.h"

#include <gtest/gtest.h>

#include "test_helpers.h"

namespace keysvc {
namespace {

TEST(KeyName, ToHexIsLowercaseAndOrdered) {
  KeyName name{};
  for (std::size_t i = 0; i < name.size(); ++i) name[i] = static_cast<std::uint8_t>(i * 17);
  EXPECT_EQ(to_hex(name), "00112233445566778899aabbccddeeff");
  EXPECT_EQ(to_hex(KeyName{}), std::string(32, '0'));
  KeyName ff;
  ff.fill(0xff);
  EXPECT_EQ(to_hex(ff), std::string(32, 'f'));
}

TEST(KeyName, HexRoundTrip) {
  for (int i = 0; i < 50; ++i) {
    auto bytes = test::random_bytes(kKeyNameBytes);
    KeyName name{};
    std::copy(bytes.begin(), bytes.end(), name.begin());
    std::string hex = to_hex(name);
    EXPECT_EQ(hex, test::hex(bytes));
    auto back = key_name_from_hex(hex);
    ASSERT_TRUE(back.has_value()) << hex;
    EXPECT_EQ(*back, name);
  }
}

TEST(KeyName, AcceptsUppercase) {
  auto upper = key_name_from_hex("00112233445566778899AABBCCDDEEFF");
  auto mixed = key_name_from_hex("00112233445566778899aAbBcCdDeEfF");
  ASSERT_TRUE(upper && mixed);
  EXPECT_EQ(*upper, *mixed);
  EXPECT_EQ(to_hex(*upper), "00112233445566778899aabbccddeeff");
}

TEST(KeyName, RejectsWrongLengthOrNonHex) {
  const std::string good = "00112233445566778899aabbccddeeff";
  ASSERT_TRUE(key_name_from_hex(good));
  for (const std::string& bad : {std::string(), good.substr(0, 31), good + "0", good + "00", good.substr(0, 30),
                                 "0x" + good.substr(2), "g" + good.substr(1), good.substr(0, 31) + "z",
                                 " " + good.substr(1), good.substr(0, 16) + "-" + good.substr(17),
                                 std::string("00112233445566778899aabbccddee\0f", 32)}) {
    EXPECT_FALSE(key_name_from_hex(bad).has_value()) << "accepted '" << bad << "'";
  }
}

}  // namespace
}  // namespace keysvc
