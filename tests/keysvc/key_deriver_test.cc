// The epoch tier's keys in a service (key_deriver.h, epoch_keys.h), on a real SoftHSM
// token:
//   - the epoch keys a service holds are the token's HMAC of the generation's root key
//     (checked by deriving them again through a session of this test); they are
//     registered for the suite-wide secret scan (tools/scan_logs_for_secrets.py), which
//     must find none in any log; the audit trail records each derivation (generation and
//     epoch number) and never the key;
//   - a service holds the keys of the current and the next epoch, derived ahead of time,
//     and at most lifetime / epoch + 2 per generation however many epochs tickets come
//     from;
//   - a revoked generation's epoch keys are wiped from every service of a fleet by its
//     first token scan after the revocation (scans run every refresh_interval);
//   - a handshake and the maintenance thread needing the same epoch key at once (the
//     first handshakes after start-up) cost one derivation, whichever asks first.
// Counts only: the waits below are bounded but never measured.
#include "keysvc/key_deriver.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <span>
#include <sstream>
#include <thread>

#include "keysvc/derivation.h"
#include "keysvc/rotation.h"
#include "keysvc/ring_store.h"
#include "keysvc/ticket_key_service.h"
#include "keysvc/ticket_rules.h"
#include "keysvc/token_store.h"
#include "fault_control.h"
#include "known_secrets.h"
#include "test_token.h"

namespace keysvc {
namespace {

using namespace std::chrono_literals;

// Epoch-tier config: 2 s epochs, 1 s refresh, one generation for an hour.
Config epoch_config() {
  Config config = test::TestToken::get().config();
  config.rotation.tier = RotationPolicy::Tier::kEpoch;
  config.rotation.epoch = 2s;
  config.rotation.encrypt_period = 1h;
  config.rotation.decrypt_window = 1h;
  config.rotation.clock_skew = 0s;
  config.rotation.refresh_interval = 1s;
  config.rotation.self_rotate = false;
  config.tickets.lifetime = 10s;
  return config;
}

// How many epoch keys of `name` `s` holds (every epoch a ticket could name now, and a
// margin either side).
std::size_t held(TicketKeyService& s, const KeyName& name) {
  const std::int64_t now = epoch_of(s.unix_now(), s.config().rotation.epoch.count());
  std::size_t n = 0;
  for (std::int64_t e = now - 50; e <= now + 5; ++e)
    if (s.deriver().epoch_keys().find(name, e)) ++n;
  return n;
}

// Waits (bounded) until `s` holds the current and the next epoch key of its encrypt
// generation.
bool ready(TicketKeyService& s) {
  for (int i = 0; i < 200; ++i) {
    auto name = s.encrypt_key_name();
    const std::int64_t e = epoch_of(s.unix_now(), s.config().rotation.epoch.count());
    if (name && s.deriver().epoch_keys().find(*name, e) && s.deriver().epoch_keys().find(*name, e + 1)) return true;
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

// $KEYSVC_TEST_TMPDIR/logs/NAME, emptied: kept after the test for the suite's secret scan.
std::string logs_dir(const std::string& name) {
  const char* base = std::getenv("KEYSVC_TEST_TMPDIR");
  const std::string dir = std::string(base ? base : "/tmp") + "/logs/" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string hex_of(std::span<const std::uint8_t> bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string s;
  for (auto b : bytes) (s += digits[b >> 4]) += digits[b & 15];
  return s;
}

TEST(KeyDeriver, EpochKeysAreTheTokensHmacOfTheRootKeyAndAreRegisteredForTheLogScan) {
  test::TestToken::get().clear();
  Config config = epoch_config();
  // The audit trail records each derivation (generation and epoch, never the key); its
  // file stays for the suite's secret scan.
  config.audit.path = logs_dir("key_deriver") + "/audit.jsonl";
  auto service = TicketKeyService::open(config);
  ASSERT_TRUE(ready(*service));
  const KeyName name = *service->encrypt_key_name();
  // The current and the next epoch's keys, taken together (an epoch may begin meanwhile).
  EpochKeyCache::Key current, next;
  std::int64_t e = 0;
  for (int i = 0; i < 5 && !(current && next); ++i) {
    ASSERT_TRUE(ready(*service));
    e = epoch_of(service->unix_now(), 2);
    current = service->deriver().epoch_keys().find(name, e);
    next = service->deriver().epoch_keys().find(name, e + 1);
  }
  ASSERT_TRUE(current && next);

  // The same derivation in this test's own session with the same root key.
  std::vector<std::string> key_hex;
  auto pool = test::open_pool(config);
  pool->run([&](hsm::Session& session) {
    KeyRing ring = token_store::load(session);
    const Generation* g = ring.find(name);
    ASSERT_NE(g, nullptr);
    ASSERT_TRUE(g->epoch_tier());
    EXPECT_EQ(g->epoch_seconds, 2);
    for (auto [epoch, held_key] : {std::pair{e, current}, std::pair{e + 1, next}}) {
      EpochKey mine;
      derive_epoch_key(session, *g, epoch, mine);
      key_hex.push_back(hex_of(mine.span()));
      test::remember_epoch_key(mine.span());
      const auto a = mine.span();
      const auto b = held_key->span();
      EXPECT_TRUE(std::equal(a.begin(), a.end(), b.begin())) << "epoch " << epoch;
    }
    // Another epoch gives another key.
    EpochKey other, same;
    derive_epoch_key(session, *g, e + 2, other);
    derive_epoch_key(session, *g, e, same);
    test::remember_epoch_key(other.span());
    EXPECT_FALSE(std::equal(other.span().begin(), other.span().end(), same.span().begin()));
  });

  current.reset();
  next.reset();
  service.reset();  // the trail's last records and seal
  const std::string audit = read_text(config.audit.path);
  std::istringstream lines(audit);
  std::size_t derivations = 0;
  for (std::string line; std::getline(lines, line);)
    if (line.find("\"event\":\"epoch_key_derived\"") != std::string::npos && line.find(to_hex(name)) != std::string::npos)
      ++derivations;
  EXPECT_GE(derivations, 2u) << audit;
  EXPECT_NE(audit.find("\"epoch\":" + std::to_string(e + 1)), std::string::npos) << audit;
  for (const auto& k : key_hex) EXPECT_EQ(audit.find(k), std::string::npos) << "an epoch key in the audit trail";
}

TEST(KeyDeriver, AServiceHoldsAtMostLifetimeOverEpochPlusTwoKeysPerGeneration) {
  test::TestToken::get().clear();
  // A clock moved by hand, one epoch at a time, with a ticket opened from every epoch.
  auto seconds = std::make_shared<std::atomic<std::int64_t>>(1'900'000'000);
  Config config = epoch_config();
  auto service = TicketKeyService::open(
      config, [seconds] { return std::chrono::system_clock::time_point(std::chrono::seconds(seconds->load())); });
  ASSERT_TRUE(ready(*service));
  const KeyName name = *service->encrypt_key_name();
  const std::size_t bound = static_cast<std::size_t>(config.tickets.lifetime / config.rotation.epoch) + 2;
  std::vector<Iv> ivs;
  std::size_t most = 0;
  for (int step = 0; step < 12; ++step) {  // 24 s: more than twice the lifetime
    IssueKeys issued;
    ASSERT_TRUE(service->derive_for_issue(issued));
    ivs.push_back(issued.iv);
    for (const Iv& iv : ivs) {  // every ticket so far is presented again
      TicketKeys keys;
      service->derive_for_open(name, iv, keys);
    }
    service->deriver().retain_epochs(*service->ring(), service->unix_now());  // as each scan does
    most = std::max(most, held(*service, name));
    *seconds += 2;
    ASSERT_TRUE(ready(*service));
  }
  std::cout << "[epoch-keys] 2 s epochs, 10 s lifetime: at most " << most << " epoch keys held (bound " << bound
            << ")\n";
  EXPECT_LE(most, bound);
  EXPECT_GE(most, bound - 1) << "tickets from every epoch of the lifetime were presented";
}

// After a module restart the ring's handles are void. When the next epoch's key is due
// before any scheduled scan, the maintenance thread rescans itself: it does not ask for
// a scan and wait for it, which would leave it waiting behind its own task until the
// call deadline (made a minute here, so such a wait cannot pass the bounded waits).
TEST(KeyDeriver, AfterAModuleRestartTheMaintenanceThreadRereadsTheHandlesItself) {
  test::TestToken::get().clear();
  auto seconds = std::make_shared<std::atomic<std::int64_t>>(1'900'000'000);
  Config config = epoch_config();
  config.hsm.call_timeout = 60s;
  config.hsm.maintenance_timeout = 60s;
  config.rotation.refresh_interval = 1h;  // no scheduled scan during the test
  config.rotation.publish_lead = 2h;
  auto service = TicketKeyService::open(
      config, [seconds] { return std::chrono::system_clock::time_point(std::chrono::seconds(seconds->load())); });
  ASSERT_TRUE(ready(*service));
  const std::uint64_t scans = service->rings().scans_finished();
  ASSERT_TRUE(service->gateway().token().module()->restart(1s)) << "the module has another user in this process";
  *seconds += 2;  // the next epoch: its successor's key is due, under void handles
  ASSERT_TRUE(ready(*service)) << "the next epoch key was not derived after the module restart";
  EXPECT_GT(service->rings().scans_finished(), scans) << "no rescan read the new handles";
}

TEST(KeyDeriver, ARevokedGenerationsEpochKeysAreGoneFromEveryServerByItsNextScan) {
  test::TestToken::get().clear();
  const Config config = epoch_config();
  auto a = TicketKeyService::open(config);
  auto b = TicketKeyService::open(config);
  ASSERT_TRUE(ready(*a) && ready(*b));
  const KeyName revoked = *a->encrypt_key_name();
  ASSERT_EQ(*b->encrypt_key_name(), revoked);
  // Tickets of the generation are opened on both, so both hold its keys.
  IssueKeys issued;
  ASSERT_TRUE(a->derive_for_issue(issued));
  TicketKeys keys;
  ASSERT_EQ(b->derive_for_open(revoked, issued.iv, keys), OpenStatus::kOk);
  std::weak_ptr<const EpochKey> a_key = a->deriver().epoch_keys().find(revoked, epoch_of_iv(issued.iv, epoch_of(a->unix_now(), 2)));
  std::weak_ptr<const EpochKey> b_key = b->deriver().epoch_keys().find(revoked, epoch_of_iv(issued.iv, epoch_of(a->unix_now(), 2)));
  const std::size_t before_a = held(*a, revoked), before_b = held(*b, revoked);
  EXPECT_GE(before_a, 2u);
  EXPECT_GE(before_b, 2u);

  // The operator revokes it (as `keysvcctl keys revoke`, through its own gateway).
  const std::uint64_t scans_a = a->rings().scans_finished(), scans_b = b->rings().scans_finished();
  {
    auto operator_gateway = TokenGateway::open(config);
    ASSERT_TRUE(revoke(*operator_gateway, revoked, a->unix_now(), config.rotation));
  }
  // A scan that started after the revocation has finished once two more have (scans run
  // one at a time on each service's maintenance thread).
  for (int i = 0; i < 200 && (a->rings().scans_finished() < scans_a + 2 || b->rings().scans_finished() < scans_b + 2); ++i)
    std::this_thread::sleep_for(50ms);
  ASSERT_GE(a->rings().scans_finished(), scans_a + 2);
  ASSERT_GE(b->rings().scans_finished(), scans_b + 2);
  std::cout << "[epoch-keys] revoked generation: " << before_a << " and " << before_b << " epoch keys held; after "
            << a->rings().scans_finished() - scans_a << " and " << b->rings().scans_finished() - scans_b
            << " scans: " << held(*a, revoked) << " and " << held(*b, revoked) << "\n";
  for (TicketKeyService* s : {a.get(), b.get()}) {
    EXPECT_EQ(held(*s, revoked), 0u);
    ASSERT_TRUE(s->encrypt_key_name().has_value());
    EXPECT_NE(*s->encrypt_key_name(), revoked) << "the replacement encrypts";
  }
  EXPECT_TRUE(a_key.expired()) << "a's epoch key is still alive (not wiped)";
  EXPECT_TRUE(b_key.expired()) << "b's epoch key is still alive (not wiped)";
  // And the replacement's keys are prepared on both; the revoked generation's tickets are refused.
  EXPECT_TRUE(ready(*a) && ready(*b));
  TicketKeys again;
  EXPECT_EQ(b->derive_for_open(revoked, issued.iv, again), OpenStatus::kRetired);
}

// The first handshakes after start-up ask for the current epoch's key while the
// maintenance thread prepares it. The fault module holds every C_Sign for 300 ms, so the
// second call (50 ms later; the wait orders the calls, nothing is timed) arrives while
// the first one's derivation is under way, and must wait for it rather than derive again.
TEST(KeyDeriver, AHandshakeAndTheMaintenanceThreadNeedingTheSameEpochKeyCostOneDerivation) {
  test::TestToken::get().clear();
  static const test::FaultControl faults(test::TestToken::get().dir() + "/key-deriver-faults");
  faults.export_env();
  Config config = epoch_config();
  config.hsm.module = test::FaultControl::module_path();
  config.hsm.call_timeout = 20s;
  config.hsm.maintenance_timeout = 20s;
  const std::int64_t now = 1'900'000'000;
  auto gateway = TokenGateway::open(config);
  RingStore rings(*gateway, [now] { return now; }, 0, nullptr);
  gateway->call([&](hsm::Session& s) {
    return token_store::create_generation(s, Schedule{now, now, now + 3600, now + 7200}, key_options(config.rotation));
  });
  ASSERT_EQ(rings.scan(), RingStore::ScanResult::kInstalled);
  TicketCounters counters;
  KeyDeriver deriver(config, [now] { return now; }, *gateway, rings, counters, [&] { rings.scan(); });
  using Lane = TokenGateway::Lane;
  const std::int64_t epoch = epoch_of(now, config.rotation.epoch.count());
  for (const Lane first : {Lane::kMaintenance, Lane::kTicket}) {
    const Lane second = first == Lane::kTicket ? Lane::kMaintenance : Lane::kTicket;
    const std::int64_t e = first == Lane::kTicket ? epoch + 1 : epoch;  // not derived yet
    const char* order = first == Lane::kTicket ? "handshake first" : "maintenance first";
    auto ask = [&](Lane lane) {
      auto ring = rings.current();
      const Generation* g = &ring->generations().front();
      return deriver.epoch_key(ring, g, e, lane);
    };
    faults.set("C_Sign latency 300\n");
    std::this_thread::sleep_for(10ms);  // the module reads its rules every 2 ms
    const std::uint64_t before = counters.snapshot()[TicketEvent::kEpochKeysDerived];
    EpochKeyCache::Key a, b;
    std::thread early([&] { a = ask(first); });
    std::this_thread::sleep_for(50ms);
    b = ask(second);
    early.join();
    faults.clear();
    ASSERT_TRUE(a && b) << order;
    EXPECT_EQ(a.get(), b.get()) << order << ": both callers get the one key";
    EXPECT_EQ(counters.snapshot()[TicketEvent::kEpochKeysDerived] - before, 1u) << order;
  }
}

}  // namespace
}  // namespace keysvc
