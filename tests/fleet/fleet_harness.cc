#include "fleet_harness.h"

#include <signal.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>
#include <sstream>
#include <stdexcept>

#include "keysvc/config.h"
#include "keysvc/key_name.h"
#include "keysvc/token_store.h"
#include "opencryptoki_token.h"
#include "test_token.h"
#include "tls_server_process.h"
#include "tpm_token.h"

namespace keysvc::fleet {
namespace {

using namespace std::chrono_literals;

constexpr auto kStartTimeout = 30s;

// Set by TokenAccess: the token of the current test's fleet when it is not SoftHSM's.
const keysvc::test::TestBackend* g_backend = nullptr;

// Names (32 hex digits) listed under "created" in `keysvcctl rotate --json` output.
std::size_t created_in_rotate_output(const std::string& out) {
  std::smatch m;
  if (!std::regex_search(out, m, std::regex(R"x("created"\s*:\s*\[([^\]]*)\])x"))) return 0;
  const std::string list = m[1];
  std::regex hex("[0-9a-f]{32}");
  return static_cast<std::size_t>(std::distance(std::sregex_iterator(list.begin(), list.end(), hex),
                                                std::sregex_iterator()));
}

// Lines of a server log at warn level or above.
std::string warnings_in(const std::string& log) {
  std::istringstream in(log);
  std::string line, out;
  while (std::getline(in, line))
    if ((line.find("warn") != std::string::npos || line.find("error") != std::string::npos) &&
        line.find("keysvc tickets:") == std::string::npos && line.find("stopped after") == std::string::npos)
      out += "    " + line + "\n";
  return out;
}

// The adapter's counters line the server logs at exit.
std::string counters_line(const std::string& err) {
  std::smatch m;
  if (std::regex_search(err, m, std::regex(R"(keysvc tickets: [^\n]*)"))) return m[0];
  return "(no counters line)";
}

}  // namespace

std::string server_bin() { return KEYSVC_TLS_SERVER_BIN; }
std::string ctl_bin() { return KEYSVCCTL_BIN; }

// ---- how the fleet reaches the token ----

std::string fleet_param_name(const ::testing::TestParamInfo<FleetParam>& info) {
  return std::string(info.param.version == keysvc::test::TlsVersion::kTls13 ? "tls13" : "tls12") +
         (info.param.hsm == Hsm::kP11Kit         ? "_p11kit"
          : info.param.hsm == Hsm::kOpencryptoki ? "_opencryptoki"
          : info.param.hsm == Hsm::kTpm          ? "_tpm"
                                                 : "") +
         (info.param.tier.empty() ? "" : "_" + info.param.tier) + info.param.epoch;
}

std::string describe_param(const FleetParam& p) {
  return std::string(keysvc::test::tls_version_name(p.version)) +
         (p.hsm == Hsm::kP11Kit         ? " through p11-kit"
          : p.hsm == Hsm::kOpencryptoki ? " on opencryptoki"
          : p.hsm == Hsm::kTpm          ? " on a TPM"
                                        : "") +
         (p.tier.empty() ? "" : ", " + p.tier + " tier") + (p.epoch.empty() ? "" : ", " + p.epoch + " epochs");
}

const keysvc::test::TestBackend& backend() { return g_backend ? *g_backend : keysvc::test::TestToken::get(); }

void PrintTo(const FleetParam& p, std::ostream* os) { *os << describe_param(p); }

TokenAccess::TokenAccess(Hsm hsm) : hsm_(hsm) {
  if (hsm_ == Hsm::kOpencryptoki) g_backend = &keysvc::test::OpencryptokiToken::get();
  if (hsm_ == Hsm::kTpm) g_backend = &keysvc::test::TpmToken::get();
  if (hsm_ != Hsm::kP11Kit) return;
  keysvc::test::TestToken& token = keysvc::test::TestToken::get();
  server_ = std::make_unique<keysvc::test::P11KitServer>(token.dir() + "/p11kit.sock", token.token_uri());
  server_->start();
}

const char* TokenAccess::module() const {
  if (hsm_ == Hsm::kOpencryptoki) return keysvc::test::kOpencryptokiModule;
  if (hsm_ == Hsm::kTpm) return keysvc::test::kTpm2Module;
  return hsm_ == Hsm::kP11Kit ? keysvc::test::kP11KitClientModule : keysvc::test::kSoftHsmModule;
}

const char* TokenAccess::other_module() const {
  return hsm_ == Hsm::kSoftHsm ? keysvc::test::kP11KitClientModule : keysvc::test::kSoftHsmModule;
}

void FleetTest::SetUpTestSuite() { ::signal(SIGPIPE, SIG_IGN); }

// ---- the fleet's config ----

// hsm.call_timeout is raised from its 500 ms default to 5 s: these tests check that the
// servers agree on the keys, not how a server rides out a slow HSM (the fault matrix and
// network_hsm_test do). Under a sanitizer on a starved 2-core machine, a server's ring
// scan through p11-kit has taken over 500 ms. Such an overrun no longer opens the
// breaker (circuit_breaker.h), but the scan still fails, so the server does not see a
// new generation until a later scan and answers its tickets with full handshakes: the
// documented fallback, which reads here as a disagreement. A hung call still ends the
// test (every wait in the tests is bounded).
std::string write_fleet_config(const std::string& file, const Timing& t, const TokenAccess& access) {
  const keysvc::test::TestBackend& token = backend();
  const std::string path = token.dir() + "/" + file;
  std::ofstream out(path, std::ios::trunc);
  out << "[hsm]\nmodule = \"" << access.module() << "\"\ntoken = \"" << token.token_uri()
      << "\"\npin = \"file:pin\"\nsessions = 4\ncall_timeout = \"5s\"\n\n"
      << "[tickets]\nper_handshake = 2\nlifetime = \"" << t.lifetime << "\"\nmax_session_age = \""
      << t.max_session_age << "\"\n" << (t.epoch.empty() ? "" : "epoch = \"" + t.epoch + "\"\n") << "\n"
      << "[rotation]\nencrypt_period = \"" << t.encrypt_period << "\"\npublish_lead = \"" << t.publish_lead
      << "\"\ndecrypt_window = \"" << t.decrypt_window << "\"\nclock_skew = \"" << t.clock_skew
      << "\"\nrefresh_interval = \"" << t.refresh_interval << "\"\nself_rotate = false\n"
      << (t.tier.empty() ? "" : "tier = \"" + t.tier + "\"\n") << "\n"
      << "[log]\nlevel = \"info\"\n";
  out.close();
  if (!out) throw std::runtime_error("cannot write " + path);
  std::filesystem::permissions(path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  return path;
}

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// ---- keysvcctl: the operator's tools, as separate processes ----

std::optional<std::size_t> run_rotator(const std::string& config_path, std::string& error) {
  keysvc::test::RunResult r =
      keysvc::test::run({ctl_bin(), "--config", config_path, "rotate", "--json"}, "", kCtlTimeout);
  if (r.exit_code != std::optional<int>(0) || r.out.find("\"created\"") == std::string::npos) {
    error = keysvc::test::describe(r);
    return std::nullopt;
  }
  if (r.err.find(backend().pin()) != std::string::npos || r.out.find(backend().pin()) != std::string::npos) {
    error = "the PIN appears in keysvcctl rotate's output";
    return std::nullopt;
  }
  return created_in_rotate_output(r.out);
}

keysvc::KeyRing load_ring(const std::string& config_path) {
  backend().refresh_view();  // a TPM shows the rotator's changes only after a re-initialise
  auto pool = keysvc::test::open_pool(keysvc::Config::load_file(config_path));
  return pool->run([](keysvc::hsm::Session& s) { return keysvc::token_store::load(s); });
}

std::string describe_ring(const std::string& config_path) {
  try {
    keysvc::KeyRing ring = load_ring(config_path);
    const std::int64_t now = unix_now();
    std::ostringstream out;
    for (const auto& g : ring.generations()) {
      out << "    " << keysvc::to_hex(g.name) << " " << keysvc::to_string(ring.state(g, now)) << " created "
          << g.schedule.created << " encrypt [" << g.schedule.encrypt_from << ", " << g.schedule.encrypt_until
          << ") decrypt_until " << g.schedule.decrypt_until << "\n";
    }
    return out.str();
  } catch (const std::exception& e) {
    return std::string("    (cannot load the ring: ") + e.what() + ")\n";
  }
}

// ---- servers ----

Server::Server(const std::string& name, const std::string& config_path) : name_(name) {
  process_ = std::make_unique<keysvc::test::Process>(std::vector<std::string>{
      server_bin(), "--config", config_path, "--listen", "127.0.0.1:0", "--cert", keysvc::test::tls_cert_path(),
      "--key", keysvc::test::tls_key_path(), "--tickets", "keysvc", "--threads", "2", "--log-level", "info"});
  auto m = process_->wait_for_stderr(std::regex(R"(listening on 127\.0\.0\.1:(\d+)\n)"), kStartTimeout);
  if (!m) {
    throw std::runtime_error("server " + name + " did not start: " + process_->command_line() +
                             "\n--- stderr\n" + process_->err());
  }
  port_ = std::stoi((*m)[1]);
}

std::string Server::stop() {
  process_->signal(SIGTERM);
  auto code = process_->wait(kStopTimeout);
  std::string err = process_->err();
  EXPECT_EQ(code, std::optional<int>(0)) << "server " << name_ << " stderr:\n" << err;
  EXPECT_EQ(err.find(backend().pin()), std::string::npos) << "the PIN appears in server " << name_ << "'s log";
  return err;
}

Fleet::Fleet(const std::string& config_path, const TokenAccess& access) {
  // One at a time: the first generates the shared certificate and key.
  for (const char* name : {"A", "B", "C"}) servers_.push_back(std::make_unique<Server>(name, config_path));
  // Each server reached the token through the configured module only (through p11-kit:
  // no SoftHSM in its own address space).
  const std::string module = std::filesystem::canonical(access.module()).string();
  const std::string other = std::filesystem::canonical(access.other_module()).string();
  for (auto& s : servers_) {
    const std::string maps = keysvc::test::read_file("/proc/" + std::to_string(s->pid()) + "/maps");
    EXPECT_NE(maps.find(module), std::string::npos) << "server " << s->name() << " has not loaded " << module;
    EXPECT_EQ(maps.find(other), std::string::npos) << "server " << s->name() << " has loaded " << other;
  }
}

std::string Fleet::stop() {
  std::string summary;
  for (auto& s : servers_) {
    const std::string err = s->stop();
    summary += "  server " + s->name() + ": " + counters_line(err) + "\n" + warnings_in(err);
  }
  return summary;
}

}  // namespace keysvc::fleet
