// keysvc-tls-server against real clients: openssl s_client and gnutls-cli, TLS 1.3 and
// 1.2, keysvc tickets (a fresh SoftHSM token per test process) and OpenSSL's stock
// tickets as the control. Also the server's command line contract: exit codes, one-line
// errors, clean exit on SIGTERM/SIGINT, and no PIN in its log.
//
// Every test name contains "interop" so `ctest -R interop` selects them.
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <ostream>
#include <regex>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "hostile_configs.h"
#include "process.h"
#include "test_token.h"
#include "tls_server_process.h"

namespace {

using namespace std::chrono_literals;
using keysvc::test::count_lines;
using keysvc::test::Process;
using keysvc::test::describe;
using keysvc::test::RunResult;
using keysvc::test::s_client;
using keysvc::test::tls_version_name;
using keysvc::test::TestToken;

constexpr auto kClientTimeout = 15s;
constexpr auto kStopTimeout = keysvc::test::TlsServerProcess::kStopTimeout;
constexpr char kRequest[] = "GET / HTTP/1.0\r\nHost: localhost\r\n\r\n";
constexpr char kBody[] = "hello from keysvc-tls-server";

std::string server_bin() { return KEYSVC_TLS_SERVER_BIN; }

std::string tls_dir() { return keysvc::test::tls_test_dir(); }
std::string cert_path() { return keysvc::test::tls_cert_path(); }
std::string key_path() { return keysvc::test::tls_key_path(); }

// A running keysvc-tls-server on 127.0.0.1 and a free port; tickets: "keysvc" or "openssl".
class Server : public keysvc::test::TlsServerProcess {
 public:
  explicit Server(const std::string& tickets, std::vector<std::string> extra = {})
      : TlsServerProcess(server_bin(), {.tickets = tickets, .extra = std::move(extra)}) {}
};

using Version = keysvc::test::TlsVersion;
enum class Client { kOpenSsl, kGnuTls };

// Readable parameter values in test names and failure messages.
void PrintTo(Client c, std::ostream* os) { *os << (c == Client::kOpenSsl ? "openssl s_client" : "gnutls-cli"); }

// gnutls-cli --resume: a full handshake, then a second connection resuming it.
RunResult gnutls_cli_resume(int port, Version v) {
  std::vector<std::string> argv = {"gnutls-cli", "--port", std::to_string(port), "--x509cafile", cert_path(),
                                   "--resume"};
  if (v == Version::kTls13) {
    argv.push_back("--priority=NORMAL:-VERS-ALL:+VERS-TLS1.3");
    // TLS 1.3 tickets arrive after the handshake: wait for one before reconnecting.
    argv.push_back("--waitresumption");
  } else {
    argv.push_back("--priority=NORMAL:-VERS-ALL:+VERS-TLS1.2");
  }
  argv.push_back("127.0.0.1");  // the certificate has IP:127.0.0.1; the server listens on IPv4 only
  return keysvc::test::run(argv, kRequest, kClientTimeout);
}

// Full handshake with s_client saving the session; then a resumption attempt.
void s_client_full_then_resume(int port, Version v, bool expect_reused) {
  const std::string sess = tls_dir() + "/session-" + std::to_string(port) + ".pem";
  RunResult first = s_client(port, v, "-sess_out", sess);
  ASSERT_EQ(first.exit_code, std::optional<int>(0)) << describe(first);
  EXPECT_NE(first.out.find(std::string("New, ") + tls_version_name(v)), std::string::npos) << describe(first);
  EXPECT_NE(first.out.find("Verify return code: 0 (ok)"), std::string::npos) << describe(first);
  EXPECT_NE(first.out.find(kBody), std::string::npos) << describe(first);
  ASSERT_TRUE(std::filesystem::exists(sess) && std::filesystem::file_size(sess) > 0) << describe(first);

  RunResult second = s_client(port, v, "-sess_in", sess);
  ASSERT_EQ(second.exit_code, std::optional<int>(0)) << describe(second);
  const std::string want = std::string(expect_reused ? "Reused, " : "New, ") + tls_version_name(v);
  EXPECT_NE(second.out.find(want), std::string::npos) << describe(second);
  EXPECT_NE(second.out.find(kBody), std::string::npos) << describe(second);
}

struct KeysvcCounters {
  long issued = -1;
  long resumed = -1;
};
KeysvcCounters keysvc_counters(const std::string& server_err) {
  std::smatch m;
  KeysvcCounters c;
  if (std::regex_search(server_err, m, std::regex(R"(keysvc tickets: issued=(\d+) .*resumed=(\d+))"))) {
    c.issued = std::stol(m[1]);
    c.resumed = std::stol(m[2]);
  }
  return c;
}

// ---- resumption with both clients, both versions, both ticket sources ----

using ResumeParam = std::tuple<std::string, Version, Client>;

class Resumption : public ::testing::TestWithParam<ResumeParam> {};

TEST_P(Resumption, SecondConnectionResumes) {
  const auto& [tickets, version, client] = GetParam();
  Server server(tickets);
  if (client == Client::kOpenSsl) {
    s_client_full_then_resume(server.port(), version, true);
  } else {
    RunResult r = gnutls_cli_resume(server.port(), version);
    ASSERT_EQ(r.exit_code, std::optional<int>(0)) << describe(r);
    EXPECT_NE(r.out.find("This is a resumed session"), std::string::npos) << describe(r);
    EXPECT_NE(r.out.find(kBody), std::string::npos) << describe(r);
    EXPECT_NE(r.out.find("The certificate is trusted"), std::string::npos) << describe(r);
  }
  const std::string err = server.stop();
  EXPECT_NE(err.find(std::string(tls_version_name(version)) + " session reused"), std::string::npos) << err;
  if (tickets == "keysvc") {
    // The keysvc callbacks, not OpenSSL's own keys, issued and opened the tickets.
    KeysvcCounters c = keysvc_counters(err);
    EXPECT_GE(c.issued, 1) << err;
    EXPECT_GE(c.resumed, 1) << err;
  }
}

std::string resume_name(const ::testing::TestParamInfo<ResumeParam>& info) {
  const auto& [tickets, version, client] = info.param;
  return tickets + (version == Version::kTls13 ? "_tls13" : "_tls12") +
         (client == Client::kOpenSsl ? "_s_client" : "_gnutls_cli");
}

INSTANTIATE_TEST_SUITE_P(interop, Resumption,
                         ::testing::Combine(::testing::Values("keysvc", "openssl"),
                                            ::testing::Values(Version::kTls13, Version::kTls12),
                                            ::testing::Values(Client::kOpenSsl, Client::kGnuTls)),
                         resume_name);

// ---- tickets outlive the server process (keys live in the token) ----

class Restart : public ::testing::TestWithParam<Version> {};

TEST_P(Restart, KeysvcTicketResumesOnANewServerProcess) {
  const Version v = GetParam();
  const std::string sess = tls_dir() + "/restart.pem";
  {
    Server first("keysvc");
    RunResult r = s_client(first.port(), v, "-sess_out", sess);
    ASSERT_EQ(r.exit_code, std::optional<int>(0)) << describe(r);
    first.stop();
  }
  Server second("keysvc");
  RunResult r = s_client(second.port(), v, "-sess_in", sess);
  ASSERT_EQ(r.exit_code, std::optional<int>(0)) << describe(r);
  EXPECT_NE(r.out.find(std::string("Reused, ") + tls_version_name(v)), std::string::npos) << describe(r);
  second.stop();
}

TEST_P(Restart, StockTicketDoesNotResumeOnANewServerProcess) {
  // The control: OpenSSL's built-in ticket keys are per process.
  const Version v = GetParam();
  const std::string sess = tls_dir() + "/restart-stock.pem";
  {
    Server first("openssl");
    RunResult r = s_client(first.port(), v, "-sess_out", sess);
    ASSERT_EQ(r.exit_code, std::optional<int>(0)) << describe(r);
    first.stop();
  }
  Server second("openssl");
  RunResult r = s_client(second.port(), v, "-sess_in", sess);
  ASSERT_EQ(r.exit_code, std::optional<int>(0)) << describe(r);
  EXPECT_NE(r.out.find(std::string("New, ") + tls_version_name(v)), std::string::npos) << describe(r);
  second.stop();
}

std::string version_param_name(const ::testing::TestParamInfo<Version>& param) {
  return param.param == Version::kTls13 ? "tls13" : "tls12";
}

INSTANTIATE_TEST_SUITE_P(interop, Restart, ::testing::Values(Version::kTls13, Version::kTls12), version_param_name);

// ---- process contract ----

TEST(interop, SigtermAfterServingExitsZero) {
  Server server("keysvc");
  RunResult r = s_client(server.port(), Version::kTls13, "-sess_out", tls_dir() + "/sigterm.pem");
  ASSERT_EQ(r.exit_code, std::optional<int>(0)) << describe(r);
  const std::string err = server.stop(SIGTERM);
  EXPECT_NE(err.find("stopped after 1 connection(s)"), std::string::npos) << err;
}

TEST(interop, SigtermWithAnIdleClientExitsPromptly) {
  // A client that connects and never sends a byte must not hold the server up.
  Server server("keysvc");
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(server.port()));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0);
  std::this_thread::sleep_for(200ms);  // let a worker pick it up and block in the handshake
  const auto start = std::chrono::steady_clock::now();
  server.stop(SIGTERM);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
  ::close(fd);
}

TEST(interop, SigintExitsZero) {
  Server server("openssl");
  server.stop(SIGINT);
}

TEST(interop, MaxConnectionsExitsZeroAfterN) {
  Server server("keysvc", {"--max-connections", "2"});
  for (int i = 0; i < 2; ++i) {
    RunResult r = s_client(server.port(), Version::kTls12, "-sess_out", tls_dir() + "/max.pem");
    ASSERT_EQ(r.exit_code, std::optional<int>(0)) << describe(r);
  }
  auto code = server.process().wait(kStopTimeout);
  EXPECT_EQ(code, std::optional<int>(0)) << server.process().err();
  EXPECT_EQ(server.process().err().find(TestToken::get().pin()), std::string::npos);
}

TEST(interop, GeneratedCertificateAndKey) {
  { Server server("openssl"); server.stop(); }
  struct stat st {};
  ASSERT_EQ(::stat(key_path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  RunResult r = keysvc::test::run(
      {"openssl", "x509", "-in", cert_path(), "-noout", "-subject", "-ext", "subjectAltName", "-text"}, "", 10s);
  ASSERT_EQ(r.exit_code, std::optional<int>(0)) << describe(r);
  EXPECT_NE(r.out.find("CN = localhost"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("DNS:localhost, IP Address:127.0.0.1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("prime256v1"), std::string::npos) << r.out;
  // A second start reuses the files.
  const auto before = std::filesystem::last_write_time(cert_path());
  { Server server("openssl"); server.stop(); }
  EXPECT_EQ(std::filesystem::last_write_time(cert_path()), before);
}

TEST(interop, UsageErrorsExitTwoWithOneLine) {
  const std::vector<std::vector<std::string>> cases = {
      {"--bogus"},
      {"--cert", cert_path(), "--key", key_path(), "--bogus"},
      {"--cert", cert_path(), "--key", key_path(), "--tickets", "nope"},
      {"--cert", cert_path(), "--key", key_path(), "--threads", "0"},
      {"--cert", cert_path(), "--key", key_path(), "--listen", "localhost"},
      {"--cert", cert_path(), "--key", key_path(), "--listen", "127.0.0.1:99999"},
      {"--cert", cert_path(), "--key", key_path(), "--tickets", "keysvc"},  // no --config
      {"--key", key_path(), "--tickets", "openssl"},                          // no --cert
  };
  for (const auto& args : cases) {
    std::vector<std::string> argv = {server_bin()};
    argv.insert(argv.end(), args.begin(), args.end());
    RunResult r = keysvc::test::run(argv, "", 10s);
    const std::string cmd = ::testing::PrintToString(args);
    EXPECT_EQ(r.exit_code, std::optional<int>(2)) << cmd << "\n" << describe(r);
    EXPECT_EQ(count_lines(r.err), 1u) << cmd << "\n" << describe(r);
    EXPECT_TRUE(r.out.empty()) << cmd << "\n" << describe(r);
  }
}

TEST(interop, MissingConfigExitsOneWithOneLine) {
  const std::string missing = TestToken::get().dir() + "/no-such.toml";
  RunResult r = keysvc::test::run({server_bin(), "--cert", cert_path(), "--key", key_path(), "--listen",
                                   "127.0.0.1:0", "--config", missing},
                                  "", 10s);
  EXPECT_EQ(r.exit_code, std::optional<int>(1)) << describe(r);
  EXPECT_EQ(count_lines(r.err), 1u) << describe(r);
  EXPECT_NE(r.err.find(missing), std::string::npos) << describe(r);
}

TEST(interop, WrongPinExitsOneWithOneLineAndNoPin) {
  // A config whose PIN source holds a wrong PIN: the login fails, the PIN is not printed.
  const std::string dir = tls_dir();
  const std::string wrong = "wrong-" + keysvc::test::random_text(10);
  {
    std::ofstream(dir + "/wrong-pin") << wrong << "\n";
    std::ofstream(dir + "/wrong.toml") << "[hsm]\nmodule = \"" << keysvc::test::kSoftHsmModule << "\"\ntoken = \""
                                       << TestToken::get().token_uri() << "\"\npin = \"file:wrong-pin\"\n";
  }
  ::chmod((dir + "/wrong-pin").c_str(), 0600);
  RunResult r = keysvc::test::run({server_bin(), "--cert", cert_path(), "--key", key_path(), "--listen",
                                   "127.0.0.1:0", "--config", dir + "/wrong.toml"},
                                  "", 15s);
  EXPECT_EQ(r.exit_code, std::optional<int>(1)) << describe(r);
  EXPECT_EQ(count_lines(r.err), 1u) << describe(r);
  EXPECT_EQ(r.err.find(wrong), std::string::npos) << describe(r);
  EXPECT_EQ(r.err.find(TestToken::get().pin()), std::string::npos) << describe(r);
}

TEST(interop, HelpExitsZero) {
  RunResult r = keysvc::test::run({server_bin(), "--help"}, "", 10s);
  EXPECT_EQ(r.exit_code, std::optional<int>(0)) << describe(r);
  EXPECT_NE(r.out.find("--tickets"), std::string::npos) << describe(r);
  EXPECT_NE(r.out.find("--max-connections"), std::string::npos) << describe(r);
}

// Every bad config of the sweep (tests/support/hostile_configs.h): one line, exit 1 or 2,
// no PIN printed, and the token's objects as before (the server creates a generation in
// an empty token when its config is good, so a start that got too far would show).
TEST(interop, HostileConfigsChangeNothingInTheToken) {
  TestToken::get().clear();
  const auto before = TestToken::get().objects();
  for (const auto& c : keysvc::test::write_hostile_configs(TestToken::get().dir() + "/hostile-server")) {
    for (const auto& [k, v] : c.env) v.empty() ? ::unsetenv(k.c_str()) : ::setenv(k.c_str(), v.c_str(), 1);
    RunResult r = keysvc::test::run({server_bin(), "--cert", cert_path(), "--key", key_path(), "--listen",
                                     "127.0.0.1:0", "--config", c.path},
                                    "", 15s);
    for (const auto& [k, v] : c.env) ::unsetenv(k.c_str());
    EXPECT_TRUE(r.exit_code == 1 || r.exit_code == 2) << c.name << "\n" << describe(r);
    EXPECT_EQ(count_lines(r.err), 1u) << c.name << "\n" << describe(r);
    if (!c.secret.empty()) {
      EXPECT_EQ((r.out + r.err).find(c.secret), std::string::npos) << c.name << " printed its PIN";
    }
    EXPECT_EQ((r.out + r.err).find(TestToken::get().pin()), std::string::npos) << c.name;
    EXPECT_EQ(TestToken::get().objects(), before) << c.name << " changed the token";
  }
}

}  // namespace
