// The fleet tests' harness (fleet_rotation_test.cc, fleet_revocation_test.cc): the
// token as the fleet reaches it (SoftHSM, p11-kit, opencryptoki, a TPM), the fleet's
// config, the operator's keysvcctl run as a separate process, and three
// keysvc-tls-server processes on 127.0.0.1 sharing that token. The TLS client that
// talks to them is in fleet_client.h.
#pragma once

#include <gtest/gtest.h>
#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "keysvc/key_ring.h"
#include "p11kit_server.h"
#include "process.h"
#include "test_backend.h"
#include "tls_server_process.h"

namespace keysvc::fleet {

using Clock = std::chrono::steady_clock;

inline constexpr std::chrono::seconds kStopTimeout{20};
inline constexpr std::chrono::seconds kCtlTimeout{30};

// The binaries under test (KEYSVC_TLS_SERVER_BIN, KEYSVCCTL_BIN).
std::string server_bin();
std::string ctl_bin();

// ---- how the fleet reaches the token ----

enum class Hsm {
  kSoftHsm,       // every process loads SoftHSM itself (one token folder shared through fcntl locks)
  kP11Kit,        // every process loads p11-kit-client.so: each PKCS#11 call is an RPC to `p11-kit server`
  kOpencryptoki,  // every process loads opencryptoki: its soft token behind this test's pkcsslotd
  kTpm,           // every process loads tpm2-pkcs11: a software TPM behind this test's tpm2-abrmd
};

struct FleetParam {
  test::TlsVersion version;
  Hsm hsm;
  // The generations' tier and epoch ([rotation] tier, [tickets] epoch); empty: the
  // defaults (the epoch tier, its epoch the largest divisor of encrypt_period up to 5 min).
  std::string tier = "";
  std::string epoch = "";
};

// "tls13", "tls12_p11kit", ...
std::string fleet_param_name(const ::testing::TestParamInfo<FleetParam>& info);

// "TLSv1.3 through p11-kit", ...: for messages and the tests' summaries.
std::string describe_param(const FleetParam& p);

// The token the current test's fleet uses (set by TokenAccess; SoftHSM's by default).
const test::TestBackend& backend();

// For gtest's listing of the parameter.
void PrintTo(const FleetParam& p, std::ostream* os);

// The token as one test's fleet reaches it. With Hsm::kP11Kit: a p11-kit server
// exporting the test token, started here because it must come after the token exists
// (it inherits SOFTHSM2_CONF); every process started afterwards (servers, keysvcctl)
// inherits the P11_KIT_SERVER_ADDRESS it exports. Create it before the Fleet, so the
// servers stop before the HSM server goes away.
class TokenAccess {
 public:
  explicit TokenAccess(Hsm hsm);
  // The PKCS#11 module every process of the fleet loads ([hsm] module).
  const char* module() const;
  // The module no process of the fleet may load.
  const char* other_module() const;
  // The p11-kit server (Hsm::kP11Kit only), nullptr otherwise.
  test::P11KitServer* p11kit_server() const { return server_.get(); }

 private:
  Hsm hsm_;
  std::unique_ptr<test::P11KitServer> server_;
};

// Every fleet test. The test process ignores SIGPIPE, as keysvc-tls-server does:
// a peer that goes away (a server's TLS socket, or the p11-kit server under this
// process's own p11-kit client in load_ring) must give an error the test reports, not
// kill the test binary.
class FleetTest : public ::testing::TestWithParam<FleetParam> {
 protected:
  static void SetUpTestSuite();
};

// ---- the fleet's config, next to TestToken's (same [hsm] section but the module) ----

struct Timing {
  std::string lifetime, max_session_age, encrypt_period, publish_lead, decrypt_window, clock_skew, refresh_interval;
  std::string tier = "", epoch = "";  // empty: the defaults (FleetParam)
};

// The rotation of the rotation test: short generations, so several of them issue
// tickets within a ten-second run.
inline const Timing kRotatingFleet{"8s", "60s", "3s", "2s", "8s", "0s", "1s"};
// The same on a TPM, with a publish lead of 4 s: there one rotator run (key made by the
// module's Python tool, then the record) took up to about 3 s on this 2-core machine under
// load, and a generation is published only when its run ends. With 2 s, a generation
// created at the last moment reached the token ~0.1 s before it started encrypting, and
// a server whose scan had just passed answered its first tickets with full handshakes.
// (Production leads are minutes: docs/DEPLOYMENT.md, "Rotation".)
inline const Timing kRotatingTpmFleet{"8s", "60s", "3s", "4s", "8s", "0s", "1s"};
// The revocation test: one long generation, so only the revocation changes the keys.
inline const Timing kRevocationFleet{"8s", "60s", "60s", "10s", "60s", "0s", "1s"};

// Writes the config `file` in the token's folder; returns its path.
std::string write_fleet_config(const std::string& file, const Timing& t, const TokenAccess& access);

std::int64_t unix_now();

// ---- keysvcctl: the operator's tools, as separate processes ----

// One rotator run, as an operator's timer would do it: `keysvcctl --config FILE rotate
// --json` in its own process. Returns how many generations it created, or std::nullopt
// (with `error`) if it failed.
std::optional<std::size_t> run_rotator(const std::string& config_path, std::string& error);

// The current ring, read in this process.
KeyRing load_ring(const std::string& config_path);

// The ring's generations, one indented line each, for failure messages.
std::string describe_ring(const std::string& config_path);

// ---- servers ----

class Server {
 public:
  Server(const std::string& name, const std::string& config_path);

  const std::string& name() const { return name_; }
  int port() const { return port_; }
  pid_t pid() const { return process_->pid(); }

  // SIGTERM; expects exit 0 and no PIN in the log. Returns stderr.
  std::string stop();

 private:
  std::string name_;
  std::unique_ptr<test::Process> process_;
  int port_ = 0;
};

// Three servers (A, B, C) on one config, each checked to have loaded the configured
// module and not the other one.
class Fleet {
 public:
  Fleet(const std::string& config_path, const TokenAccess& access);
  std::size_t size() const { return servers_.size(); }
  Server& operator[](std::size_t i) { return *servers_.at(i); }
  // Stops every server; returns their counters lines.
  std::string stop();

 private:
  std::vector<std::unique_ptr<Server>> servers_;
};

}  // namespace keysvc::fleet
