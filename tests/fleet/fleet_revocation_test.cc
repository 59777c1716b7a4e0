// A fleet of keysvc-tls-server processes sharing one SoftHSM token, driven by real TLS
// clients over 127.0.0.1 (fleet_harness.h, fleet_client.h):
//   - a revoked generation stops working on every server within one refresh interval,
//     and the servers hand out fresh tickets under another generation;
//   - on a network HSM stand-in (p11-kit-client.so talking to `p11-kit server`, which
//     exports the test token over a unix socket), the operator's long-lived rotator
//     (`keysvcctl rotate --every`) outlives the loss of the HSM server.
// The revocation test also runs, in one TLS version, with every process of the fleet
// (servers, keysvcctl runs) on that network HSM stand-in (names ending in "_p11kit"),
// and on opencryptoki's soft token behind the test's own pkcsslotd (names ending in
// "_opencryptoki"; tests/support/opencryptoki_token.h).
//
// Every test name contains "fleet" and "Fleet" so `ctest -R fleet` / `-R Fleet` select
// them. Every wait is bounded; the only timing bounds asserted are the documented ones.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>

#include "fleet_client.h"
#include "fleet_harness.h"
#include "keysvc/key_name.h"
#include "process.h"
#include "test_token.h"
#include "tls_pair.h"
#include "tls_server_process.h"

namespace keysvc::fleet {
namespace {

using namespace std::chrono_literals;
using keysvc::test::describe;
using keysvc::test::Process;
using keysvc::test::RunResult;
using keysvc::test::SslCtxPtr;
using keysvc::test::TestToken;
using keysvc::test::TlsVersion;

// ---- revocation reaches every server within one refresh interval ----

class FleetRevocation : public FleetTest {};

TEST_P(FleetRevocation, RevocationTakesEffectOnEveryServerWithinOneRefreshInterval) {
  const TlsVersion version = GetParam().version;
  TokenAccess access(GetParam().hsm);
  backend().clear();
  const std::string config = write_fleet_config("fleet-revocation.toml", kRevocationFleet, access);
  const auto refresh_interval = 1s;
  {
    std::string error;
    ASSERT_TRUE(run_rotator(config, error).has_value()) << error;
  }
  Fleet fleet(config, access);
  SslCtxPtr ctx = make_client_ctx(version);

  Connection first = connect_once(ctx.get(), fleet[0].port(), nullptr);
  ASSERT_TRUE(first.ok) << first.error;
  ASSERT_NE(first.first(), nullptr) << "server A sent no ticket";
  const std::string revoked = key_name_of(first.first());
  {
    keysvc::KeyRing ring = load_ring(config);
    const keysvc::Generation* active = ring.encrypt_generation(unix_now());
    ASSERT_NE(active, nullptr);
    ASSERT_EQ(keysvc::to_hex(active->name), revoked) << "the ticket is not under the active generation";
  }
  for (std::size_t i = 1; i < fleet.size(); ++i) {
    Connection again = connect_once(ctx.get(), fleet[i].port(), first.tickets[(i - 1) % first.tickets.size()].get());
    ASSERT_TRUE(again.ok) << again.error;
    EXPECT_TRUE(again.reused) << "server " << fleet[i].name() << " did not resume A's ticket before the revocation";
  }

  {
    RunResult r = keysvc::test::run({ctl_bin(), "--config", config, "keys", "revoke", revoked}, "", kCtlTimeout);
    ASSERT_EQ(r.exit_code, std::optional<int>(0)) << describe(r);
    EXPECT_EQ(r.out.find(backend().pin()), std::string::npos);
    EXPECT_EQ(r.err.find(backend().pin()), std::string::npos);
  }
  std::this_thread::sleep_for(refresh_interval + 1s);

  for (std::size_t i = 0; i < fleet.size(); ++i) {
    SCOPED_TRACE("server " + fleet[i].name());
    Connection c = connect_once(ctx.get(), fleet[i].port(), first.first());
    ASSERT_TRUE(c.ok) << c.error;
    EXPECT_FALSE(c.reused) << "the revoked generation's ticket still resumes";
    ASSERT_NE(c.first(), nullptr) << "no fresh ticket after the full handshake";
    const std::string fresh = key_name_of(c.first());
    EXPECT_NE(fresh, revoked) << "fresh ticket under the revoked generation";
    // The fresh ticket resumes, on the next server of the fleet.
    const std::size_t next = (i + 1) % fleet.size();
    Connection resumed = connect_once(ctx.get(), fleet[next].port(), c.first());
    ASSERT_TRUE(resumed.ok) << resumed.error;
    EXPECT_TRUE(resumed.reused) << "the fresh ticket under " << fresh << " did not resume on server "
                                << fleet[next].name();
  }
  std::cout << "[fleet] " << describe_param(GetParam()) << " revocation of " << revoked << ":\n" << fleet.stop();
}

// Through p11-kit in the TLS version the rotation test does not cover there.
INSTANTIATE_TEST_SUITE_P(fleet, FleetRevocation,
                         ::testing::Values(FleetParam{TlsVersion::kTls13, Hsm::kSoftHsm},
                                           FleetParam{TlsVersion::kTls12, Hsm::kSoftHsm},
                                           FleetParam{TlsVersion::kTls12, Hsm::kP11Kit},
                                           FleetParam{TlsVersion::kTls12, Hsm::kOpencryptoki}),
                         fleet_param_name);
INSTANTIATE_TEST_SUITE_P(fleet_tpm, FleetRevocation,
                         ::testing::Values(FleetParam{TlsVersion::kTls12, Hsm::kTpm}), fleet_param_name);

// ---- the operator's rotator outlives the loss of the network HSM ----

// p11-kit's client writes each call to the server's socket: once the server is gone, a
// process that does not ignore SIGPIPE dies there, silently (exit 141). `keysvcctl rotate
// --every` promises to log token errors and retry: it must still be running, with one
// error line per failed run, and stop cleanly on SIGTERM.
class FleetRotator : public FleetTest {};

TEST_P(FleetRotator, RotatorOutlivesTheLossOfTheNetworkHsmAndRunsAgainWhenItReturns) {
  TestToken::get().clear();
  TokenAccess access(GetParam().hsm);
  const std::string config = write_fleet_config("fleet-rotator.toml", kRotatingFleet, access);
  Process rotator({ctl_bin(), "--config", config, "rotate", "--every", "1s", "--json"});
  const auto deadline = Clock::now() + kCtlTimeout;
  while (rotator.out().find("\"created\"") == std::string::npos && Clock::now() < deadline && !rotator.poll())
    std::this_thread::sleep_for(20ms);
  ASSERT_NE(rotator.out().find("\"created\""), std::string::npos) << rotator.out() << rotator.err();

  access.p11kit_server()->kill();
  auto logged = rotator.wait_for_stderr(std::regex("keysvcctl: rotate: [^\n]*\\(retrying in 1s\\)\n"), 10s);
  const auto code = rotator.poll();
  ASSERT_FALSE(code.has_value()) << "the rotator died (exit " << *code << ") after the HSM server went away\n"
                                 << rotator.err();
  ASSERT_TRUE(logged) << "no error line from the rotator: " << rotator.err();
  std::istringstream lines(rotator.err());
  for (std::string line; std::getline(lines, line);)
    EXPECT_EQ(line.rfind("keysvcctl: rotate: ", 0), 0u) << line;

  // The HSM server comes back on the same socket: the rotator runs again by itself (it
  // restarts its PKCS#11 module after a failed run; p11-kit's client never reconnects).
  auto runs = [&] {
    const std::string out = rotator.out();
    return static_cast<std::size_t>(std::count(out.begin(), out.end(), '\n'));
  };
  const std::size_t runs_before = runs();
  const auto back_at = Clock::now();
  access.p11kit_server()->start();
  while (runs() == runs_before && Clock::now() < back_at + 20s && !rotator.poll()) std::this_thread::sleep_for(20ms);
  const double back_after = std::chrono::duration<double>(Clock::now() - back_at).count();
  EXPECT_GT(runs(), runs_before) << "no successful run within 20 s of the HSM server's return\n" << rotator.err();
  EXPECT_EQ((rotator.out() + rotator.err()).find(backend().pin()), std::string::npos);
  std::cout << "[fleet] rotator after the loss of the p11-kit server: " << rotator.err()
            << "[fleet] first successful run " << back_after << " s after the server's return\n"
            << std::flush;
  rotator.signal(SIGTERM);
  EXPECT_EQ(rotator.wait(kStopTimeout), std::optional<int>(0)) << rotator.err();
}

// Only a network HSM can go away under a running rotator (SoftHSM's token folder taken
// away: tests/apps/keysvcctl_rotate_test.cc, RotateEveryLogsTokenErrorsAndKeepsGoing).
INSTANTIATE_TEST_SUITE_P(fleet, FleetRotator, ::testing::Values(FleetParam{TlsVersion::kTls13, Hsm::kP11Kit}),
                         fleet_param_name);

}  // namespace
}  // namespace keysvc::fleet
