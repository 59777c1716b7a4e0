// A flood of tickets under random (unknown) key names against a server SSL_CTX with
// keysvc installed, over memory BIOs: the on-demand token rescans stay bounded by the
// negative cache (at most one per refresh_interval), and no PKCS#11 sign operation is
// spent on an unknown name: the HSM cost is exactly that of the fresh tickets issued by
// the full handshakes the flood falls back to.
//
// Test names contain "fleet" and "Fleet" so `ctest -R fleet` / `-R Fleet` select them.
#include <gtest/gtest.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "keysvc/epoch_keys.h"
#include "keysvc/key_deriver.h"
#include "keysvc/openssl/ticket_adapter.h"
#include "keysvc/ticket_key_service.h"
#include "keysvc/ticket_rules.h"
#include "test_token.h"
#include "tls_pair.h"
#include "tls_server_process.h"

namespace {

using namespace std::chrono_literals;
using keysvc::test::TestToken;
using keysvc::test::TlsVersion;

class FleetFlood : public ::testing::TestWithParam<TlsVersion> {};

TEST_P(FleetFlood, UnknownKeyNameFloodKeepsRescansBounded) {
  const TlsVersion version = GetParam();
  constexpr int kTickets = 300;
  constexpr auto kSpread = 2500ms;

  keysvc::Config config = TestToken::get().config();
  config.rotation.refresh_interval = 1s;
  config.rotation.publish_lead = 10s;
  config.rotation.clock_skew = 0s;
  config.rotation.self_rotate = false;
  config.tickets.create_if_empty = true;  // one generation, created at open
  auto service = keysvc::TicketKeyService::open(config);
  ASSERT_TRUE(service->encrypt_key_name().has_value());

  auto server = keysvc::test::make_server_ctx();
  keysvc::openssl::install(server.get(), service, {});
  auto client = keysvc::test::make_client_ctx(version == TlsVersion::kTls13 ? TLS1_3_VERSION : TLS1_2_VERSION);

  // A genuine ticket to start from; it resumes.
  auto base = keysvc::test::handshake(server.get(), client.get());
  ASSERT_TRUE(base.ok) << base.error;
  ASSERT_NE(base.last(), nullptr);
  {
    auto again = keysvc::test::handshake(server.get(), client.get(), base.last());
    ASSERT_TRUE(again.ok) << again.error;
    ASSERT_TRUE(again.reused);
  }
  const std::vector<std::uint8_t> genuine = keysvc::test::ticket_of(base.last());
  ASSERT_GT(genuine.size(), keysvc::kKeyNameBytes);
  // The maintenance thread's first run derives the current and the next epoch's key
  // after open(), while the handshakes above may derive the current one on demand: let
  // it finish, so that the window below counts only what the flood itself causes.
  const keysvc::KeyName name = *service->encrypt_key_name();
  const std::int64_t epoch_seconds = service->ring()->find(name)->epoch_seconds;
  auto next_epoch_key_held = [&] {
    const std::int64_t next = keysvc::epoch_of(service->unix_now(), epoch_seconds) + 1;
    return service->deriver().epoch_keys().find(name, next) != nullptr;
  };
  for (int i = 0; i < 1000 && !next_epoch_key_held(); ++i) std::this_thread::sleep_for(10ms);
  ASSERT_TRUE(next_epoch_key_held()) << "the maintenance thread derived no next epoch key within 10 s";

  const keysvc::ServiceCounters before = service->counters();
  const auto epoch_keys_before = service->ticket_counters()[keysvc::TicketEvent::kEpochKeysDerived];
  const keysvc::openssl::TicketCallbackCounters adapter_before = keysvc::openssl::counters(server.get());

  int reused = 0, failed = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kTickets; ++i) {
    std::this_thread::sleep_until(start + kSpread * i / kTickets);
    std::vector<std::uint8_t> forged = genuine;
    ASSERT_EQ(RAND_bytes(forged.data(), static_cast<int>(keysvc::kKeyNameBytes)), 1);
    auto session = keysvc::test::with_ticket(base.last(), forged);
    auto h = keysvc::test::handshake(server.get(), client.get(), session.get());
    if (!h.ok) ++failed;
    if (h.reused) ++reused;
  }
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  const keysvc::ServiceCounters after = service->counters();
  const keysvc::openssl::TicketCallbackCounters adapter_after = keysvc::openssl::counters(server.get());
  const auto interval = static_cast<double>(config.rotation.refresh_interval.count());
  const auto rescan_bound = static_cast<std::uint64_t>(1 + std::ceil(elapsed / interval));
  const std::uint64_t issued = after.issued - before.issued;
  const std::uint64_t hsm_calls = after.hsm_calls - before.hsm_calls;

  std::cout << "[fleet] unknown-key flood " << keysvc::test::tls_version_name(version) << ": "
            << kTickets << " tickets in " << elapsed << " s, rescans=" << after.rescans << " (bound " << rescan_bound
            << "), unknown_key=" << (after.unknown_key - before.unknown_key) << ", fresh tickets issued=" << issued
            << ", hsm_calls=" << hsm_calls << ", periodic+on-demand refreshes=" << (after.refreshes - before.refreshes)
            << std::endl;

  EXPECT_EQ(failed, 0);
  EXPECT_EQ(reused, 0) << "a ticket under a random key name resumed";
  EXPECT_EQ(after.unknown_key - before.unknown_key, static_cast<std::uint64_t>(kTickets));
  EXPECT_EQ(adapter_after.unknown_key - adapter_before.unknown_key, static_cast<std::uint64_t>(kTickets));
  EXPECT_EQ(after.opened, before.opened) << "keys were derived for an unknown name";
  // The negative cache: one rescan at once, then at most one per refresh_interval.
  EXPECT_GE(after.rescans, 1u);
  EXPECT_LE(after.rescans, rescan_bound);
  // Each rejected ticket falls back to a full handshake with fresh tickets.
  const std::uint64_t per_handshake = version == TlsVersion::kTls13 ? 2 : 1;
  EXPECT_EQ(issued, per_handshake * kTickets);
  // No sign operation for the unknown names: only what issuing costs, which in the epoch
  // tier is an epoch key now and then (one sign each), not a call per ticket.
  const auto epoch_keys = service->ticket_counters()[keysvc::TicketEvent::kEpochKeysDerived] - epoch_keys_before;
  EXPECT_EQ(hsm_calls, epoch_keys);
  EXPECT_LE(epoch_keys, 2u + static_cast<std::uint64_t>(elapsed / static_cast<double>(config.rotation.epoch.count())));
  EXPECT_EQ(after.hsm_errors, before.hsm_errors);
}

std::string version_param_name(const ::testing::TestParamInfo<TlsVersion>& param) {
  return param.param == TlsVersion::kTls13 ? "tls13" : "tls12";
}

INSTANTIATE_TEST_SUITE_P(fleet, FleetFlood, ::testing::Values(TlsVersion::kTls13, TlsVersion::kTls12),
                         version_param_name);

}  // namespace
