#include "keysvc/metrics.h"

#include <gtest/gtest.h>

#include "test_helpers.h"

namespace keysvc {
namespace {

std::uint64_t count_of(const MetricsSnapshot& m, hsm::Call call) {
  const hsm::CallSnapshot* c = m.hsm_call(call);
  return c ? c->count : 0;
}

// A service without the issue pool, so every ticket is derived when it is asked for
// and the HSM call counts follow the tickets exactly.
std::shared_ptr<TicketKeyService> open_service() {
  test::TestToken::get().clear();
  Config c = test::strict(test::TestToken::get().config());
  c.tickets.issue_pool = 0;
  return TicketKeyService::open(c);
}

TEST(Metrics, SnapshotCountsWhatTheServiceDid) {
  auto svc = open_service();
  const MetricsSnapshot before = read_metrics(*svc);
  ASSERT_TRUE(before.encrypt_key.has_value());
  EXPECT_EQ(before.encrypt_key, svc->encrypt_key_name());
  EXPECT_EQ(before.generations, svc->ring()->generations().size());
  EXPECT_GE(before.hsm_sessions, 1u);
  EXPECT_GE(count_of(before, hsm::Call::kLogin), 1u);
  EXPECT_GE(count_of(before, hsm::Call::kFindObjects), 1u);

  constexpr int kIssued = 7, kOpened = 4;
  std::vector<IssueKeys> tickets(kIssued);
  for (auto& t : tickets) ASSERT_TRUE(svc->derive_for_issue(t));
  for (int i = 0; i < kOpened; ++i) {
    TicketKeys keys;
    ASSERT_EQ(svc->derive_for_open(tickets[i].name, tickets[i].iv, keys), OpenStatus::kOk);
  }
  TicketKeys keys;
  KeyName unknown{};
  unknown.fill(0xab);
  EXPECT_EQ(svc->derive_for_open(unknown, tickets[0].iv, keys), OpenStatus::kUnknownKey);

  const MetricsSnapshot after = read_metrics(*svc);
  EXPECT_EQ(after.service.issued - before.service.issued, static_cast<std::uint64_t>(kIssued));
  EXPECT_EQ(after.service.opened - before.service.opened, static_cast<std::uint64_t>(kOpened));
  EXPECT_EQ(after.service.unknown_key - before.service.unknown_key, 1u);
  // Two HMACs (C_SignInit + C_Sign) in the token per derived ticket.
  const std::uint64_t derivations = kIssued + kOpened;
  EXPECT_EQ(count_of(after, hsm::Call::kSign) - count_of(before, hsm::Call::kSign), 2 * derivations);
  EXPECT_EQ(count_of(after, hsm::Call::kSignInit) - count_of(before, hsm::Call::kSignInit), 2 * derivations);
  EXPECT_EQ(after.service.hsm_calls - before.service.hsm_calls, 2 * derivations);
  const hsm::CallSnapshot* sign = after.hsm_call(hsm::Call::kSign);
  ASSERT_NE(sign, nullptr);
  EXPECT_EQ(sign->error_count(), 0u);
  EXPECT_GT(sign->total_ns, 0u);

  // Per key: the encrypt generation issued every ticket; the unknown name is counted
  // under its own name.
  const KeyUsage* used = after.usage.find(*after.encrypt_key);
  ASSERT_NE(used, nullptr);
  EXPECT_EQ(used->counters[static_cast<std::size_t>(TicketOutcome::kIssued)], static_cast<std::uint64_t>(kIssued));
  const KeyUsage* stranger = after.usage.find(unknown);
  ASSERT_NE(stranger, nullptr);
  EXPECT_EQ(stranger->counters[static_cast<std::size_t>(TicketOutcome::kUnknownKey)], 1u);
}

TEST(Metrics, HsmCallLooksUpOneFunction) {
  MetricsSnapshot m;
  EXPECT_EQ(m.hsm_call(hsm::Call::kSign), nullptr);
  m.hsm_calls.push_back({.call = hsm::Call::kSign, .count = 3});
  ASSERT_NE(m.hsm_call(hsm::Call::kSign), nullptr);
  EXPECT_EQ(m.hsm_call(hsm::Call::kSign)->count, 3u);
  EXPECT_EQ(m.hsm_call(hsm::Call::kSignInit), nullptr);
}

}  // namespace
}  // namespace keysvc
