#include "keysvc/metrics.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>

#include "keysvc/key_deriver.h"
#include "keysvc/ticket_rules.h"

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

// The epoch keys this process holds for generation `g`, of the epochs around `now`.
std::int64_t held_for(TicketKeyService& svc, const Generation& g, std::int64_t now, std::int64_t span) {
  std::int64_t n = 0;
  const std::int64_t current = epoch_of(now, g.epoch_seconds);
  for (std::int64_t e = current - span; e <= current + 2; ++e) n += svc.deriver().epoch_keys().find(g.name, e) != nullptr;
  return n;
}

// What the epoch tier held and derived over four simulated hours (simulate_epoch_tier).
struct EpochTierRun {
  std::int64_t most = 0;                 // epoch keys held at once, every generation
  std::int64_t most_per_generation = 0;  // ... of one generation
  std::uint64_t derived_per_hour[4] = {};
};

// Runs a service with the default policy (5-minute epochs, 2 h lifetime, 1 h encrypt
// period, 30 s clock skew) from `offset` seconds into an epoch for four simulated hours,
// issuing a ticket every 10 s. The token is scanned (and rotated) in the first 10 s of
// every epoch, which is when the maintenance thread prepares the next epoch's key (a
// server scans every refresh_interval: more scans, the same keys); keys that tickets can
// no longer come from are dropped every 10 s (a server: every 30 s, its epoch task).
// Checks on the way that the gauge is what the cache holds, that no generation has more
// keys than its tickets may come from plus the next one prepared ahead (ticket_rules.h,
// "Epochs": the epochs meeting [now - lifetime - skew, now + skew], at most
// ceil((lifetime + 2 x skew) / epoch) + 1), that no key of a generation outside the ring
// is held, and that issuing always finds its key ready (no HSM call on the handshake).
EpochTierRun simulate_epoch_tier(std::int64_t offset) {
  EpochTierRun run;
  test::TestToken::get().clear();
  const Config c = test::TestToken::get().config();  // the default tier: epoch
  EXPECT_EQ(c.rotation.tier, RotationPolicy::Tier::kEpoch);
  const std::int64_t epoch = c.rotation.epoch.count(), lifetime = c.tickets.lifetime.count();
  const std::int64_t skew = c.rotation.clock_skew.count();
  EXPECT_EQ(epoch, 300);
  const std::int64_t start = 1'800'000'000 + offset;  // 1'800'000'000 starts an epoch
  auto unix_now = std::make_shared<std::atomic<std::int64_t>>(start);
  auto svc = TicketKeyService::open(
      c, [unix_now] { return std::chrono::system_clock::time_point(std::chrono::seconds(unix_now->load())); });
  const std::int64_t bound = (lifetime + 2 * skew + epoch - 1) / epoch + 1 + 1;
  std::uint64_t derived_at[5] = {};
  for (std::int64_t t = 0; t <= 4 * 3600; t += 10) {
    const std::int64_t now = start + t;
    unix_now->store(now);
    if (t == 0 || now % epoch < 10) {
      svc->refresh();  // rotation and scan; the ring install asks the maintenance thread for epoch keys
      // The maintenance thread derives the current and the next epoch's keys, the next one
      // under the generation that will encrypt then (no timing is checked: it only must happen).
      auto ring = svc->ring();
      const Generation* g = ring->encrypt_generation(now);
      const std::int64_t next = epoch_of(now, epoch) + 1;
      const Generation* then = ring->encrypt_generation(next * epoch);
      if (g == nullptr || then == nullptr) {
        ADD_FAILURE() << "no encrypt generation at " << t << " s";
        return run;
      }
      auto ready = [&] {
        return svc->deriver().epoch_keys().find(g->name, next - 1) != nullptr &&
               svc->deriver().epoch_keys().find(then->name, next) != nullptr;
      };
      for (int i = 0; i < 1000 && !ready(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      EXPECT_TRUE(ready()) << "the current or the next epoch's key not prepared at " << t << " s";
    }
    auto ring = svc->ring();
    svc->deriver().retain_epochs(*ring, now);
    const Generation* g = ring->encrypt_generation(now);
    if (g == nullptr || svc->deriver().epoch_keys().find(g->name, epoch_of(now, epoch)) == nullptr) {
      ADD_FAILURE() << "issuing at " << t << " s would wait for the HSM";
      return run;
    }
    IssueKeys keys;
    EXPECT_TRUE(svc->derive_for_issue(keys));
    const MetricsSnapshot m = read_metrics(*svc);
    EXPECT_EQ(m.epoch_keys, svc->deriver().epoch_keys().size());
    std::int64_t sum = 0;
    for (const Generation& x : ring->generations()) {
      const std::int64_t n = held_for(*svc, x, now, bound + 5);
      EXPECT_LE(n, bound) << "generation " << to_hex(x.name) << " at " << t << " s";
      run.most_per_generation = std::max(run.most_per_generation, n);
      sum += n;
    }
    EXPECT_EQ(sum, static_cast<std::int64_t>(m.epoch_keys)) << "keys of generations not in the ring at " << t << " s";
    run.most = std::max(run.most, static_cast<std::int64_t>(m.epoch_keys));
    if (t % 3600 == 0) derived_at[t / 3600] = m.service.epoch_keys_derived;
  }
  for (int h = 0; h < 4; ++h) run.derived_per_hour[h] = derived_at[h + 1] - derived_at[h];
  std::printf("epoch tier from %lld s into an epoch: at most %lld epoch keys held (%lld of one generation); "
              "derived per hour: %llu %llu %llu %llu\n",
              static_cast<long long>(offset), static_cast<long long>(run.most),
              static_cast<long long>(run.most_per_generation),
              static_cast<unsigned long long>(run.derived_per_hour[0]),
              static_cast<unsigned long long>(run.derived_per_hour[1]),
              static_cast<unsigned long long>(run.derived_per_hour[2]),
              static_cast<unsigned long long>(run.derived_per_hour[3]));
  return run;
}

// docs/TIERS.md quotes these counts. A generation encrypts for one hour (12 epochs), and
// keeps the keys of the epochs it encrypted in while tickets may come from them.
TEST(Metrics, EpochKeysHeldAndDerivedOverSimulatedHours) {
  // Generations change at an epoch boundary: one key per epoch, 12 an hour.
  const EpochTierRun aligned = simulate_epoch_tier(0);
  EXPECT_EQ(aligned.derived_per_hour[2], 12u);
  EXPECT_EQ(aligned.derived_per_hour[3], 12u);
  EXPECT_LE(aligned.most_per_generation, 13);
  EXPECT_LE(aligned.most, 27);  // ceil((2 h + 2 x 30 s) / 5 min) + 1 = 26, and the next one
  EXPECT_GE(aligned.most, 26) << "the keys of the last two hours' epochs are kept for their tickets";
  // Generations change 17 s into an epoch: that epoch has a key under both, 13 an hour.
  const EpochTierRun straddling = simulate_epoch_tier(17);
  EXPECT_EQ(straddling.derived_per_hour[2], 13u);
  EXPECT_EQ(straddling.derived_per_hour[3], 13u);
  EXPECT_LE(straddling.most_per_generation, 13);
  EXPECT_LE(straddling.most, 30);  // plus one per generation change in the window
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
