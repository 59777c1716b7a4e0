// The pre-derived issue pool: unit behaviour, and the service's issue path with it on.
#include "keysvc/issue_pool.h"

#include <gtest/gtest.h>

#include <thread>

#include "keysvc/ticket_key_service.h"
#include "test_token.h"

namespace keysvc {
namespace {

std::unique_ptr<IssueKeys> entry(std::uint8_t generation, std::uint8_t fill) {
  auto e = std::make_unique<IssueKeys>();
  e->name.fill(generation);
  e->iv.fill(fill);
  e->keys.aes_key.fill(fill);
  e->keys.hmac_key.fill(static_cast<std::uint8_t>(fill + 1));
  return e;
}

KeyName name_of(std::uint8_t generation) {
  KeyName n;
  n.fill(generation);
  return n;
}

TEST(IssueKeyPool, HandsOutEachEntryOnceInOrder) {
  IssueKeyPool pool(4);
  EXPECT_EQ(pool.missing(name_of(1)), 4u);
  ASSERT_TRUE(pool.put(entry(1, 10)));
  ASSERT_TRUE(pool.put(entry(1, 20)));
  EXPECT_EQ(pool.missing(name_of(1)), 2u);
  IssueKeys out;
  ASSERT_TRUE(pool.take(name_of(1), out));
  EXPECT_EQ(out.iv[0], 10);
  EXPECT_EQ(out.keys.aes_key[0], 10);
  EXPECT_EQ(out.keys.hmac_key[0], 11);
  ASSERT_TRUE(pool.take(name_of(1), out));
  EXPECT_EQ(out.iv[0], 20);
  EXPECT_FALSE(pool.take(name_of(1), out));
}

TEST(IssueKeyPool, NeverHandsOutAnotherGenerationsKeys) {
  IssueKeyPool pool(4);
  ASSERT_TRUE(pool.put(entry(1, 10)));
  IssueKeys out;
  EXPECT_FALSE(pool.take(name_of(2), out));
  EXPECT_EQ(pool.missing(name_of(2)), 4u);
  // An entry of the new generation drops the old ones.
  ASSERT_TRUE(pool.put(entry(2, 30)));
  EXPECT_EQ(pool.size(), 1u);
  EXPECT_FALSE(pool.take(name_of(1), out));
  ASSERT_TRUE(pool.take(name_of(2), out));
  EXPECT_EQ(out.iv[0], 30);
}

TEST(IssueKeyPool, RefusesEntriesBeyondCapacityAndClears) {
  IssueKeyPool pool(2);
  EXPECT_TRUE(pool.put(entry(1, 1)));
  EXPECT_TRUE(pool.put(entry(1, 2)));
  EXPECT_FALSE(pool.put(entry(1, 3)));
  EXPECT_EQ(pool.size(), 2u);
  pool.clear();
  EXPECT_EQ(pool.size(), 0u);
}

class IssuePoolServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    test::TestToken::get().clear();
    Config config = test::strict(test::TestToken::get().config());  // the pool is the strict tier's
    config.tickets.issue_pool = 8;
    service_ = TicketKeyService::open(config, [this] { return t0_ + std::chrono::seconds(offset_.load()); });
  }
  // Waits (bounded) until the refiller has derived `n` entries' worth of HSM calls.
  bool wait_for_hsm_calls(std::uint64_t n) {
    for (int i = 0; i < 500; ++i) {
      if (service_->counters().hsm_calls >= n) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }
  std::chrono::system_clock::time_point t0_ = std::chrono::system_clock::now();
  std::atomic<int> offset_{0};
  std::shared_ptr<TicketKeyService> service_;
};

TEST_F(IssuePoolServiceTest, IssuePathUsesPreDerivedKeysThatOpenCorrectly) {
  ASSERT_TRUE(wait_for_hsm_calls(2 * 8)) << "the refiller did not fill the pool";
  for (int i = 0; i < 8; ++i) {
    IssueKeys issued;
    ASSERT_TRUE(service_->derive_for_issue(issued));
    EXPECT_EQ(issued.name, *service_->encrypt_key_name());
    TicketKeys opened;
    ASSERT_EQ(service_->derive_for_open(issued.name, issued.iv, opened), OpenStatus::kOk);
    EXPECT_EQ(opened.aes_key, issued.keys.aes_key);
    EXPECT_EQ(opened.hmac_key, issued.keys.hmac_key);
  }
  auto c = service_->counters();
  EXPECT_GE(c.issued_from_pool, 1u);
  EXPECT_EQ(c.issued, 8u);
  EXPECT_EQ(c.hsm_errors, 0u);
}

TEST_F(IssuePoolServiceTest, PoolFollowsTheEncryptGeneration) {
  ASSERT_TRUE(wait_for_hsm_calls(2 * 8));
  offset_ = 1;
  Generation next = service_->create_generation();  // reload drops the old entries
  ASSERT_EQ(*service_->encrypt_key_name(), next.name);
  for (int i = 0; i < 16; ++i) {
    IssueKeys issued;
    ASSERT_TRUE(service_->derive_for_issue(issued));
    EXPECT_EQ(issued.name, next.name) << "ticket " << i << " used a key of the previous generation";
  }
}

}  // namespace
}  // namespace keysvc
