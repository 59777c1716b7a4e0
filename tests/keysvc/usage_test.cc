// UsageTable: per-key counters, bounded memory under floods of names, exact totals under
// concurrent recording, and snapshot differences for the audit log's usage records.
#include "keysvc/usage.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace keysvc {
namespace {

KeyName name_of(std::uint32_t n) {
  KeyName k{};
  k[0] = 0x80;  // never the all-zero overflow name
  k[12] = static_cast<std::uint8_t>(n >> 24);
  k[13] = static_cast<std::uint8_t>(n >> 16);
  k[14] = static_cast<std::uint8_t>(n >> 8);
  k[15] = static_cast<std::uint8_t>(n);
  return k;
}

std::uint64_t count(const UsageSnapshot& s, const KeyName& name, TicketOutcome o) {
  const KeyUsage* k = s.find(name);
  return k ? k->counters[static_cast<std::size_t>(o)] : 0;
}

TEST(Usage, OutcomeNamesRoundTrip) {
  for (std::size_t k = 0; k < kTicketOutcomeCount; ++k) {
    auto o = static_cast<TicketOutcome>(k);
    EXPECT_EQ(outcome_from_name(outcome_name(o)), o);
  }
  EXPECT_EQ(outcome_name(TicketOutcome::kMacFailure), "mac_failure");
  EXPECT_FALSE(outcome_from_name("bogus").has_value());
}

TEST(Usage, CountsPerTrackedNameAndOutcome) {
  UsageTable t;
  std::vector<KeyName> ring = {name_of(1), name_of(2)};
  t.track(ring);
  t.record(name_of(1), TicketOutcome::kIssued, 3);
  t.record(name_of(1), TicketOutcome::kResumed);
  t.record(name_of(2), TicketOutcome::kRevoked);
  UsageSnapshot s = t.snapshot();
  ASSERT_EQ(s.keys.size(), 2u);
  EXPECT_EQ(count(s, name_of(1), TicketOutcome::kIssued), 3u);
  EXPECT_EQ(count(s, name_of(1), TicketOutcome::kResumed), 1u);
  EXPECT_EQ(count(s, name_of(2), TicketOutcome::kRevoked), 1u);
  EXPECT_EQ(s.find(name_of(2))->rejected(), 1u);
  EXPECT_EQ(s.find(name_of(1))->kind, KeyUsage::Kind::kGeneration);
  EXPECT_EQ(s.total()[static_cast<std::size_t>(TicketOutcome::kIssued)], 3u);
}

TEST(Usage, CountersSurviveRetrackingAndRingChanges) {
  UsageTable t;
  std::vector<KeyName> first = {name_of(1)};
  t.track(first);
  t.record(name_of(1), TicketOutcome::kIssued);
  std::vector<KeyName> second = {name_of(2)};  // generation 1 destroyed
  t.track(second);
  t.record(name_of(1), TicketOutcome::kIssued);  // a late ticket under it: still its own row
  UsageSnapshot s = t.snapshot();
  EXPECT_EQ(count(s, name_of(1), TicketOutcome::kIssued), 2u);
  EXPECT_EQ(s.find(name_of(2))->counters, UsageCounters{});
}

TEST(Usage, AFloodOfUnknownNamesIsBounded) {
  UsageTable t;
  for (std::uint32_t n = 0; n < 10000; ++n) t.record(name_of(1000 + n), TicketOutcome::kUnknownKey);
  UsageSnapshot s = t.snapshot();
  ASSERT_EQ(s.keys.size(), UsageTable::kMaxUnknownNames + 1);
  EXPECT_EQ(s.keys.front().kind, KeyUsage::Kind::kOverflow);
  EXPECT_EQ(s.keys.front().name, KeyName{});
  EXPECT_EQ(count(s, KeyName{}, TicketOutcome::kUnknownKey), 10000u - UsageTable::kMaxUnknownNames);
  EXPECT_EQ(count(s, name_of(1000), TicketOutcome::kUnknownKey), 1u);
  EXPECT_EQ(s.find(name_of(1000))->kind, KeyUsage::Kind::kUnknown);
  EXPECT_EQ(s.total()[static_cast<std::size_t>(TicketOutcome::kUnknownKey)], 10000u);
}

TEST(Usage, TrackedNamesAreBoundedDroppingTheOldestRetired) {
  UsageTable t;
  for (std::uint32_t n = 0; n < UsageTable::kMaxTracked + 10; ++n) {
    std::vector<KeyName> ring = {name_of(n)};
    t.track(ring);
  }
  UsageSnapshot s = t.snapshot();
  EXPECT_EQ(s.keys.size(), UsageTable::kMaxTracked);
  EXPECT_EQ(s.find(name_of(0)), nullptr);
  EXPECT_NE(s.find(name_of(UsageTable::kMaxTracked + 9)), nullptr);
}

TEST(Usage, NameSeenUnknownThenTrackedIsOneRow) {
  UsageTable t;
  t.record(name_of(7), TicketOutcome::kUnknownKey);
  std::vector<KeyName> ring = {name_of(7)};
  t.track(ring);
  t.record(name_of(7), TicketOutcome::kResumed);
  UsageSnapshot s = t.snapshot();
  ASSERT_EQ(s.keys.size(), 1u);
  EXPECT_EQ(s.keys[0].kind, KeyUsage::Kind::kGeneration);
  EXPECT_EQ(s.keys[0].rejected(), 1u);
  EXPECT_EQ(count(s, name_of(7), TicketOutcome::kResumed), 1u);
}

TEST(Usage, ConcurrentRecordingIsExact) {
  UsageTable t;
  std::vector<KeyName> ring = {name_of(1), name_of(2)};
  t.track(ring);
  constexpr int kThreads = 4, kEach = 20000;
  std::vector<std::thread> threads;
  for (int k = 0; k < kThreads; ++k) {
    threads.emplace_back([&, k] {
      for (int i = 0; i < kEach; ++i) {
        t.record(name_of(1 + (i & 1)), TicketOutcome::kIssued);
        t.record(name_of(100 + (i % 40)), TicketOutcome::kUnknownKey);  // slots claimed concurrently
        if (k == 0 && i % 1000 == 0) {
          std::vector<KeyName> again = {name_of(1), name_of(2), name_of(3 + i / 1000)};
          t.track(again);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  UsageSnapshot s = t.snapshot();
  EXPECT_EQ(count(s, name_of(1), TicketOutcome::kIssued) + count(s, name_of(2), TicketOutcome::kIssued),
            std::uint64_t{kThreads} * kEach);
  EXPECT_EQ(s.total()[static_cast<std::size_t>(TicketOutcome::kUnknownKey)], std::uint64_t{kThreads} * kEach);
  std::size_t unknown_rows = 0;
  for (const auto& k : s.keys) unknown_rows += k.kind == KeyUsage::Kind::kUnknown;
  EXPECT_EQ(unknown_rows, UsageTable::kMaxUnknownNames);
}

TEST(Usage, DeltaHoldsOnlyWhatChanged) {
  UsageTable t;
  std::vector<KeyName> ring = {name_of(1), name_of(2)};
  t.track(ring);
  t.record(name_of(1), TicketOutcome::kIssued, 5);
  UsageSnapshot before = t.snapshot();
  t.record(name_of(1), TicketOutcome::kIssued, 2);
  t.record(name_of(9), TicketOutcome::kUnknownKey);
  UsageSnapshot d = usage_delta(t.snapshot(), before);
  ASSERT_EQ(d.keys.size(), 2u);
  EXPECT_EQ(count(d, name_of(1), TicketOutcome::kIssued), 2u);
  EXPECT_EQ(count(d, name_of(9), TicketOutcome::kUnknownKey), 1u);
  EXPECT_EQ(d.find(name_of(2)), nullptr);
  EXPECT_TRUE(usage_delta(t.snapshot(), t.snapshot()).keys.empty());
}

}  // namespace
}  // namespace keysvc
