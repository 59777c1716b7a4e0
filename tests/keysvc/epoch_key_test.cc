// EpochKey (epoch_key.h): HMAC-SHA256 from the stored pad states is OpenSSL's HMAC, for
// any message split into any parts, and setting a key again replaces its states.
#include "keysvc/epoch_key.h"

#include <gtest/gtest.h>
#include <openssl/rand.h>

#include <algorithm>
#include <stdexcept>
#include <vector>

#include "test_helpers.h"

namespace keysvc {
namespace {

using test::ByteVec;

ByteVec random_bytes(std::size_t n) {
  ByteVec v(n);
  if (n > 0) {
    EXPECT_EQ(RAND_bytes(v.data(), static_cast<int>(n)), 1);
  }
  return v;
}

ByteVec hmac_of(const EpochKey& key, std::initializer_list<std::span<const std::uint8_t>> parts) {
  ByteVec out(32);
  EXPECT_TRUE(key.hmac(parts, out.data()));
  return out;
}

TEST(EpochKey, HmacIsOpenSslsHmacForMessagesOfEveryLengthAndSplit) {
  for (int round = 0; round < 300; ++round) {
    const ByteVec key_bytes = random_bytes(kEpochKeyBytes);
    EpochKey key;
    key.assign(std::span<const std::uint8_t, kEpochKeyBytes>(key_bytes.data(), kEpochKeyBytes));
    // 0..299 bytes: empty, shorter than a block, across one and several block edges.
    const ByteVec message = random_bytes(static_cast<std::size_t>(round));
    const std::size_t cut = message.empty() ? 0 : static_cast<std::size_t>(round * 7) % message.size();
    const std::span<const std::uint8_t> all(message), head = all.first(cut), tail = all.subspan(cut);
    const ByteVec expected = test::openssl_hmac_sha256(key_bytes, message);
    ASSERT_EQ(hmac_of(key, {all}), expected) << "length " << round;
    ASSERT_EQ(hmac_of(key, {head, tail}), expected) << "length " << round << " cut at " << cut;
    ASSERT_EQ(hmac_of(key, {head, {}, tail}), expected) << "length " << round;
  }
}

TEST(EpochKey, AssigningAgainReplacesTheStates) {
  const ByteVec first = random_bytes(kEpochKeyBytes), second = random_bytes(kEpochKeyBytes);
  const ByteVec message = random_bytes(74);
  EpochKey key;
  key.assign(std::span<const std::uint8_t, kEpochKeyBytes>(first.data(), kEpochKeyBytes));
  EXPECT_EQ(hmac_of(key, {message}), test::openssl_hmac_sha256(first, message));
  key.assign(std::span<const std::uint8_t, kEpochKeyBytes>(second.data(), kEpochKeyBytes));
  EXPECT_EQ(hmac_of(key, {message}), test::openssl_hmac_sha256(second, message));
  EXPECT_TRUE(std::equal(second.begin(), second.end(), key.span().begin()));
}

TEST(EpochKey, AFillThatThrowsLeavesTheKeyWiped) {
  EpochKey key;
  EXPECT_THROW(key.assign([](std::span<std::uint8_t, kEpochKeyBytes> k) {
    k[0] = 0xAA;
    throw std::runtime_error("the token failed");
  }),
               std::runtime_error);
  EXPECT_TRUE(std::all_of(key.span().begin(), key.span().end(), [](std::uint8_t b) { return b == 0; }));
}

TEST(EpochKey, KeyAndStatesLiveInSecureMemory) {
  EpochKey key;
  EXPECT_TRUE(hsm::is_secure_memory(key.span().data(), hsm::kMaxSecureBlock));
}

}  // namespace
}  // namespace keysvc
