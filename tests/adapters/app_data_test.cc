#include "app_data.h"

#include <gtest/gtest.h>

#include <vector>

namespace keysvc::openssl {
namespace {

TEST(TicketAppData, RoundTrips) {
  TicketAppData d;
  d.auth_time = 1732350000;
  for (std::size_t i = 0; i < d.issued_under.size(); ++i) d.issued_under[i] = static_cast<std::uint8_t>(i * 7);
  auto bytes = d.encode();
  ASSERT_EQ(bytes.size(), TicketAppData::kEncodedBytes);
  EXPECT_EQ(bytes[0], 1);
  auto back = TicketAppData::decode(bytes);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->auth_time, d.auth_time);
  EXPECT_EQ(back->issued_under, d.issued_under);
}

TEST(TicketAppData, AuthTimeIsBigEndian) {
  TicketAppData d;
  d.auth_time = 0x0102030405060708;
  auto bytes = d.encode();
  EXPECT_EQ(bytes[2], 0x01);
  EXPECT_EQ(bytes[9], 0x08);
}

TEST(TicketAppData, RejectsMalformedRecords) {
  auto good = TicketAppData{}.encode();
  EXPECT_FALSE(TicketAppData::decode({}));
  EXPECT_FALSE(TicketAppData::decode(std::span(good).first(good.size() - 1)));
  std::vector<std::uint8_t> longer(good.begin(), good.end());
  longer.push_back(0);
  EXPECT_FALSE(TicketAppData::decode(longer));
  auto version = good;
  version[0] = 2;
  EXPECT_FALSE(TicketAppData::decode(version));
  auto flags = good;
  flags[1] = 1;
  EXPECT_FALSE(TicketAppData::decode(flags));
  auto negative = good;
  negative[2] = 0x80;
  EXPECT_FALSE(TicketAppData::decode(negative));
}

}  // namespace
}  // namespace keysvc::openssl
