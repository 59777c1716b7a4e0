// ngx_http_keysvc_module in the real nginx (/usr/sbin/nginx, Debian's 1.22) on a real
// SoftHSM token made for the test, with real clients (openssl s_client, curl):
//   - the module's binary signature is the installed nginx's, and load_module takes it;
//   - the directives in http and server blocks, and the configurations it refuses;
//   - the PKCS#11 module is opened in each worker, never in the master;
//   - TLS 1.3 and 1.2 tickets resume across workers and across two nginx instances;
//   - `keysvcctl rotate` run every second under load causes no resumption failure;
//   - an HSM that fails (keysvc-faultmod) gives full handshakes, nginx stays up, and
//     tickets resume again when the HSM is back; a worker that starts while the HSM is
//     down serves full handshakes and turns tickets on when it returns.
//
// Every test name contains "Nginx" so `ctest -R Nginx` selects them. Waits are bounded;
// nothing asserts a duration.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "audit_report.h"
#include "fault_control.h"
#include "nginx_instance.h"
#include "process.h"
#include "test_token.h"

namespace {

using namespace std::chrono_literals;
using keysvc::test::FaultControl;
using keysvc::test::NginxInstance;
using keysvc::test::NginxOptions;
using keysvc::test::RunResult;
using keysvc::test::TestToken;

constexpr auto kClientTimeout = 20s;
constexpr auto kCtlTimeout = 30s;
constexpr char kSoftHsmLibrary[] = "libsofthsm2.so";

std::string module_path() { return KEYSVC_NGINX_MODULE; }
std::string ctl_bin() { return KEYSVCCTL_BIN; }

std::string describe(const RunResult& r) {
  return "exit " + (r.exit_code ? std::to_string(*r.exit_code) : std::string("(timed out)")) + "\n--- stdout\n" +
         r.out + "\n--- stderr\n" + r.err;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string dir(const std::string& name) {
  const std::string d = TestToken::get().dir() + "/" + name;
  std::filesystem::create_directories(d);
  return d;
}

// A self-signed EC P-256 certificate for localhost and 127.0.0.1, made once per process.
struct Cert {
  std::string cert, key;
};
const Cert& cert() {
  static const Cert c = [] {
    const std::string d = dir("tls");
    Cert made{d + "/server.crt", d + "/server.key"};
    RunResult r = keysvc::test::run({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                                     "ec_paramgen_curve:P-256", "-nodes", "-keyout", made.key, "-out", made.cert,
                                     "-days", "2", "-subj", "/CN=localhost", "-addext",
                                     "subjectAltName=DNS:localhost,IP:127.0.0.1"},
                                    "", kClientTimeout);
    if (r.exit_code != std::optional<int>(0)) throw std::runtime_error("openssl req failed: " + describe(r));
    return made;
  }();
  return c;
}

// ---- keysvc's configuration for nginx: TestToken's [hsm] with rotation settings ----

struct KeysvcToml {
  std::string module = keysvc::test::kSoftHsmModule;
  // Short generations (rotation test) or one long one (everything else).
  std::string lifetime = "60s", encrypt_period = "1h", publish_lead = "10m", decrypt_window = "2h",
              refresh_interval = "30s";
  std::string audit_path;  // [audit] path; empty: no audit
};

std::string write_keysvc_toml(const std::string& file, const KeysvcToml& t) {
  TestToken& token = TestToken::get();
  const std::string path = token.dir() + "/" + file;
  std::ofstream out(path, std::ios::trunc);
  out << "[hsm]\nmodule = \"" << t.module << "\"\ntoken = \"" << token.token_uri()
      << "\"\npin = \"file:pin\"\nsessions = 2\n\n"
      << "[tickets]\nper_handshake = 2\nlifetime = \"" << t.lifetime << "\"\nmax_session_age = \"1h\"\n"
      << "issue_pool = 8\n\n"
      << "[rotation]\nencrypt_period = \"" << t.encrypt_period << "\"\npublish_lead = \"" << t.publish_lead
      << "\"\ndecrypt_window = \"" << t.decrypt_window << "\"\nclock_skew = \"0s\"\nrefresh_interval = \""
      << t.refresh_interval << "\"\n"
      // Several workers and instances are a fleet: one rotator (keysvcctl) for all.
      << "self_rotate = false\n\n[log]\nlevel = \"info\"\n";
  if (!t.audit_path.empty()) out << "\n[audit]\npath = \"" << t.audit_path << "\"\n";
  out.close();
  if (!out) throw std::runtime_error("cannot write " + path);
  return path;
}

// `keysvcctl rotate`, as an operator's timer runs it. Returns how many generations it
// created, or std::nullopt with the reason in `error`.
std::optional<std::size_t> rotate(const std::string& toml, std::string& error) {
  RunResult r = keysvc::test::run({ctl_bin(), "--config", toml, "rotate", "--json"}, "", kCtlTimeout);
  if (r.exit_code != std::optional<int>(0)) {
    error = describe(r);
    return std::nullopt;
  }
  std::smatch m;
  if (!std::regex_search(r.out, m, std::regex(R"x("created"\s*:\s*\[([^\]]*)\])x"))) return 0;
  const std::string list = m[1];
  const std::regex hex("[0-9a-f]{32}");
  return static_cast<std::size_t>(
      std::distance(std::sregex_iterator(list.begin(), list.end(), hex), std::sregex_iterator()));
}

NginxOptions keysvc_nginx(int workers, const std::string& toml) {
  NginxOptions o;
  o.workers = workers;
  o.load_modules = {module_path()};
  o.http = "    keysvc_config " + toml + ";\n";
  o.server = "        keysvc_tickets on;\n";
  o.cert = cert().cert;
  o.key = cert().key;
  return o;
}

// ---- clients ----

enum class Version { kTls13, kTls12 };
const char* version_name(Version v) { return v == Version::kTls13 ? "TLSv1.3" : "TLSv1.2"; }
std::string version_param_name(const ::testing::TestParamInfo<Version>& info) {
  return info.param == Version::kTls13 ? "tls13" : "tls12";
}

// What one request saw: the worker that answered and whether it resumed the session.
struct Answer {
  bool ok = false;
  pid_t pid = 0;
  bool reused = false;
  std::string protocol;
  std::string detail;  // the client's output, for messages
};

Answer parse_answer(const std::string& text, std::string::size_type from = 0) {
  Answer a;
  std::smatch m;
  const std::string tail = text.substr(from);
  if (std::regex_search(tail, m, std::regex(keysvc::test::kNginxBodyPattern))) {
    a.ok = true;
    a.pid = static_cast<pid_t>(std::stol(m[1]));
    a.reused = m[2] == "r";
    a.protocol = m[3];
  }
  return a;
}

// openssl s_client: one HTTP request, the whole response read (so TLS 1.3 tickets, sent
// after the handshake, are in). Offers the session in `sess_in` if not empty; saves the
// session (with the newest ticket) to `sess_out` if not empty.
Answer s_client(int port, Version v, const std::string& sess_in, const std::string& sess_out) {
  std::vector<std::string> argv = {"openssl", "s_client", "-connect", "127.0.0.1:" + std::to_string(port),
                                   "-servername", "localhost", v == Version::kTls13 ? "-tls1_3" : "-tls1_2",
                                   "-CAfile", cert().cert, "-verify_return_error", "-verify_hostname",
                                   "localhost", "-ign_eof"};
  if (!sess_in.empty()) argv.insert(argv.end(), {"-sess_in", sess_in});
  if (!sess_out.empty()) argv.insert(argv.end(), {"-sess_out", sess_out});
  RunResult r = keysvc::test::run(argv, "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                                  kClientTimeout);
  Answer a = parse_answer(r.out);
  a.detail = describe(r);
  if (r.exit_code != std::optional<int>(0) || r.out.find("Verify return code: 0 (ok)") == std::string::npos) {
    a.ok = false;
  }
  // The client's own view must agree with the server's.
  const std::string client_says = std::string(a.reused ? "Reused, " : "New, ") + version_name(v);
  if (a.ok && r.out.find(client_says) == std::string::npos) a.ok = false;
  return a;
}

// The ticket's key name (its first 16 bytes, hex) in an s_client session file; empty if
// the session carries no ticket.
std::string ticket_key_name(const std::string& sess_file) {
  RunResult r = keysvc::test::run({"openssl", "sess_id", "-in", sess_file, "-noout", "-text"}, "", kClientTimeout);
  std::smatch m;
  // "TLS session ticket:\n    0000 - 3f 1a ... 16 bytes ..."
  if (!std::regex_search(r.out, m, std::regex(R"(TLS session ticket:\s*\n\s*0000 - ((?:[0-9a-f]{2}[ -]){16}))"))) {
    return {};
  }
  std::string hex;
  for (char c : std::string(m[1])) {
    if (std::isxdigit(static_cast<unsigned char>(c))) hex += c;
  }
  return hex;
}

// curl: `count` requests to one nginx in one invocation, each on a new connection
// (Connection: close), every connection after the first offering curl's newest session.
std::vector<Answer> curl_requests(int port, Version v, int count, std::string& detail) {
  std::vector<std::string> argv = {"curl", "--silent", "--show-error", "--cacert", cert().cert,
                                   "--resolve", "localhost:" + std::to_string(port) + ":127.0.0.1",
                                   "-H", "Connection: close"};
  if (v == Version::kTls13) {
    argv.insert(argv.end(), {"--tlsv1.3", "--tls-max", "1.3"});
  } else {
    argv.insert(argv.end(), {"--tlsv1.2", "--tls-max", "1.2"});
  }
  for (int i = 0; i < count; ++i) argv.push_back("https://localhost:" + std::to_string(port) + "/");
  RunResult r = keysvc::test::run(argv, "", kClientTimeout);
  detail = describe(r);
  std::vector<Answer> answers;
  const std::regex body(keysvc::test::kNginxBodyPattern);
  for (auto it = std::sregex_iterator(r.out.begin(), r.out.end(), body); it != std::sregex_iterator(); ++it) {
    answers.push_back(parse_answer((*it)[0]));
  }
  return answers;
}

// Sums of the per-worker counters the module logs at exit ("keysvc: server ... tickets:").
struct Counters {
  std::uint64_t workers = 0, issued = 0, resumed = 0, issue_failed = 0, hsm_error = 0;
};
Counters exit_counters(const std::string& log) {
  Counters c;
  const std::regex line(R"(keysvc: server "[^"]*" worker \d+ tickets: issued=(\d+) resumed=(\d+) renewed=\d+ )"
                        R"(issue_failed=(\d+) unknown_key=\d+ retired_key=\d+ hsm_error=(\d+))");
  for (auto it = std::sregex_iterator(log.begin(), log.end(), line); it != std::sregex_iterator(); ++it) {
    ++c.workers;
    c.issued += std::stoull((*it)[1]);
    c.resumed += std::stoull((*it)[2]);
    c.issue_failed += std::stoull((*it)[3]);
    c.hsm_error += std::stoull((*it)[4]);
  }
  return c;
}

// Stops nginx gracefully and checks what every test expects of its log: exit 0, every
// worker reported its counters, no PIN, no crash of a worker, no sanitizer report.
Counters stop_and_check(NginxInstance& nginx, std::size_t workers) {
  EXPECT_EQ(nginx.stop(), std::optional<int>(0)) << nginx.error_log();
  const std::string log = nginx.error_log();
  EXPECT_EQ(log.find(TestToken::get().pin()), std::string::npos) << "the PIN appears in nginx's error log";
  EXPECT_EQ(log.find("exited on signal"), std::string::npos) << log;
  EXPECT_EQ(nginx.sanitizer_report(), "") << log;
  Counters c = exit_counters(log);
  EXPECT_EQ(c.workers, workers) << log;
  return c;
}

void print_figure(const std::string& what) { std::cout << "[ figure   ] " << what << std::endl; }

// ---- 1. the binary signature, load_module and the directives ----

// NGX_MODULE_SIGNATURE: "8,4,8,0011..." (pointer, sig_atomic_t and time_t sizes, then
// one flag per build option).
std::set<std::string> signatures_in(const std::string& file) {
  const std::string bytes = read_text(file);
  std::set<std::string> found;
  const std::regex sig(R"(\d,\d,\d,[01]{30,40})");
  for (auto it = std::sregex_iterator(bytes.begin(), bytes.end(), sig); it != std::sregex_iterator(); ++it) {
    found.insert((*it)[0]);
  }
  return found;
}

TEST(NginxModule, NginxSignatureOfTheModuleIsTheInstalledNginxs) {
  const auto in_nginx = signatures_in(keysvc::test::kNginxBinary);
  const auto in_module = signatures_in(module_path());
  ASSERT_EQ(in_nginx.size(), 1u);
  ASSERT_EQ(in_module.size(), 1u);
  EXPECT_EQ(*in_module.begin(), *in_nginx.begin());

  // The module was configured with nginx-dev's conf_flags: each of them is among the
  // installed binary's configure arguments (nginx -V).
  RunResult v = keysvc::test::run({keysvc::test::kNginxBinary, "-V"}, "", kClientTimeout);
  ASSERT_EQ(v.exit_code, std::optional<int>(0)) << describe(v);
  const std::string flags = read_text("/usr/share/nginx/src/conf_flags");
  const std::regex flag(R"(--[a-z0-9_-]+(=[^ )]+)?)");
  std::size_t checked = 0;
  for (auto it = std::sregex_iterator(flags.begin(), flags.end(), flag); it != std::sregex_iterator(); ++it) {
    EXPECT_NE(v.err.find((*it)[0]), std::string::npos) << (*it)[0] << " is not in nginx -V:\n" << v.err;
    ++checked;
  }
  EXPECT_GT(checked, 10u);
  EXPECT_NE(v.err.find("--with-compat"), std::string::npos) << v.err;
}

std::string conf_with(const std::string& http, const std::string& server, const std::string& d) {
  NginxOptions o = keysvc_nginx(1, write_keysvc_toml("nginx-keysvc.toml", {}));
  o.http = http;
  o.server = server;
  return NginxInstance::render(d, o, keysvc::test::free_port());
}

TEST(NginxModule, NginxAcceptsTheDirectivesInHttpAndServerBlocks) {
  const std::string toml = write_keysvc_toml("nginx-keysvc.toml", {});
  const std::string d = dir("conf");
  struct Case {
    std::string name, http, server;
  };
  for (const Case& c : std::vector<Case>{
           {"both in http", "keysvc_config " + toml + ";\nkeysvc_tickets on;\n", ""},
           {"both in server", "", "keysvc_config " + toml + ";\nkeysvc_tickets on;\n"},
           {"config in http, tickets in server", "keysvc_config " + toml + ";\n", "keysvc_tickets on;\n"},
           {"on in http, off in server, no config", "keysvc_tickets on;\n", "keysvc_tickets off;\n"},
           {"relative config path", "keysvc_config ../nginx-keysvc.toml;\nkeysvc_tickets on;\n", ""},
       }) {
    RunResult r = NginxInstance::test_config(d, "ok.conf", conf_with(c.http, c.server, d));
    EXPECT_EQ(r.exit_code, std::optional<int>(0)) << c.name << "\n" << describe(r);
    EXPECT_NE(r.err.find("test is successful"), std::string::npos) << c.name << "\n" << describe(r);
  }
}

TEST(NginxModule, NginxRefusesConflictingOrBadConfigurations) {
  const std::string toml = write_keysvc_toml("nginx-keysvc.toml", {});
  const std::string d = dir("conf");
  const std::string bad_toml = TestToken::get().dir() + "/bad.toml";
  std::ofstream(bad_toml) << read_text(toml) << "\n[tickets2]\nlifetme = 3\n";
  const std::string on = "keysvc_config " + toml + ";\nkeysvc_tickets on;\n";
  // nginx's own ticket key file: 80 bytes (it refuses any other size before keysvc looks).
  const std::string ticket_key = d + "/ticket.key";
  std::ofstream(ticket_key, std::ios::binary) << std::string(80, 'k');
  struct Case {
    std::string name, http, server, message;
  };
  for (const Case& c : std::vector<Case>{
           {"no keysvc_config", "keysvc_tickets on;\n", "", "needs \"keysvc_config\""},
           {"ssl_session_ticket_key", on, "ssl_session_ticket_key " + ticket_key + ";\n",
            "\"keysvc_tickets on\" and \"ssl_session_ticket_key\""},
           {"ssl_session_tickets off", on, "ssl_session_tickets off;\n",
            "\"keysvc_tickets on\" and \"ssl_session_tickets off\""},
           {"ssl_early_data on", on, "ssl_early_data on;\n", "\"keysvc_tickets on\" and \"ssl_early_data on\""},
           {"bad keysvc toml", "keysvc_config " + bad_toml + ";\nkeysvc_tickets on;\n", "", "bad.toml:"},
           {"missing keysvc toml", "keysvc_config /nonexistent/keysvc.toml;\nkeysvc_tickets on;\n", "",
            "/nonexistent/keysvc.toml"},
           {"bad flag", "keysvc_tickets maybe;\n", "", "invalid value \"maybe\""},
           {"twice", "keysvc_config " + toml + ";\nkeysvc_config " + toml + ";\n", "", "is duplicate"},
       }) {
    RunResult r = NginxInstance::test_config(d, "bad.conf", conf_with(c.http, c.server, d));
    EXPECT_EQ(r.exit_code, std::optional<int>(1)) << c.name << "\n" << describe(r);
    EXPECT_NE(r.err.find("[emerg]"), std::string::npos) << c.name << "\n" << describe(r);
    EXPECT_NE(r.err.find(c.message), std::string::npos) << c.name << "\n" << describe(r);
  }
}

// ---- 2. the token is opened in the workers, never in the master ----

TEST(NginxModule, NginxOpensTheTokenInEachWorkerNotInTheMaster) {
  const std::string toml = write_keysvc_toml("nginx-keysvc.toml", {});
  std::string error;
  ASSERT_TRUE(rotate(toml, error)) << error;
  NginxInstance nginx(dir("nginx"), keysvc_nginx(3, toml));
  ASSERT_TRUE(nginx.wait_for_log(std::regex("keysvc: opened"), 3, 20s)) << nginx.error_log();

  EXPECT_FALSE(keysvc::test::maps_file(nginx.master_pid(), kSoftHsmLibrary)) << "the master loaded SoftHSM";
  const auto workers = nginx.worker_pids();
  ASSERT_EQ(workers.size(), 3u);
  std::set<std::string> opened_by;
  const std::string log = nginx.error_log();
  const std::regex opened(R"(keysvc: opened "[^"]+" in worker (\d+))");
  for (auto it = std::sregex_iterator(log.begin(), log.end(), opened); it != std::sregex_iterator(); ++it) {
    opened_by.insert((*it)[1]);
  }
  for (pid_t w : workers) {
    EXPECT_TRUE(keysvc::test::maps_file(w, kSoftHsmLibrary)) << "worker " << w << " has not loaded SoftHSM";
    EXPECT_EQ(opened_by.count(std::to_string(w)), 1u) << log;
  }
  EXPECT_EQ(log.find("keysvc: cannot open"), std::string::npos) << log;
  print_figure("workers that opened the token: " + std::to_string(opened_by.size()) + " of 3; master: 0");
  stop_and_check(nginx, 3);
}

// Workers share one TOML; with {pid} in [audit] path each writes (and locks) its own file.
// Each file verifies, and the report over the files counts what the workers did.
TEST(NginxModule, NginxWorkersEachWriteTheirOwnAuditLog) {
  const std::string audit_dir = dir("audit-" + std::to_string(::getpid()));
  KeysvcToml t;
  t.audit_path = audit_dir + "/audit-{pid}.jsonl";
  const std::string toml = write_keysvc_toml("nginx-keysvc-audit.toml", t);
  std::string error;
  ASSERT_TRUE(rotate(toml, error)) << error;
  NginxInstance nginx(dir("nginx"), keysvc_nginx(2, toml));
  ASSERT_TRUE(nginx.wait_for_log(std::regex("keysvc: opened"), 2, 20s)) << nginx.error_log();
  const auto workers = nginx.worker_pids();
  ASSERT_EQ(workers.size(), 2u);

  const std::string sess = nginx.dir() + "/audit-session.pem";
  Answer first = s_client(nginx.port(), Version::kTls12, "", sess);
  ASSERT_TRUE(first.ok) << first.detail;
  const std::string name = ticket_key_name(sess);
  ASSERT_FALSE(name.empty()) << "no ticket in the session";
  std::uint64_t resumed = 0;
  for (int i = 0; i < 6; ++i) {
    Answer a = s_client(nginx.port(), Version::kTls12, sess, "");
    ASSERT_TRUE(a.ok) << a.detail;
    if (a.reused) ++resumed;
  }
  Counters c = stop_and_check(nginx, 2);
  const std::string log = nginx.error_log();
  EXPECT_EQ(log.find("keysvc: cannot open"), std::string::npos) << log;

  std::vector<std::string> files;
  for (pid_t w : workers) {
    const std::string file = audit_dir + "/audit-" + std::to_string(w) + ".jsonl";
    ASSERT_TRUE(std::filesystem::exists(file)) << "worker " << w << " wrote no " << file;
    RunResult v = keysvc::test::run({ctl_bin(), "--config", toml, "audit", "verify", file}, "", kCtlTimeout);
    EXPECT_EQ(v.exit_code, std::optional<int>(0)) << describe(v);
    files.push_back(file);
  }
  EXPECT_TRUE(std::filesystem::exists(audit_dir + "/audit-keysvcctl.jsonl")) << "keysvcctl's own file";
  std::vector<std::string> argv = {ctl_bin(), "audit", "report", "--json"};
  argv.insert(argv.end(), files.begin(), files.end());
  RunResult rep = keysvc::test::run(argv, "", kCtlTimeout);
  ASSERT_EQ(rep.exit_code, std::optional<int>(0)) << describe(rep);
  // TLS 1.2 without renewal: one ticket issued by the full handshake, none on resumption.
  EXPECT_EQ(keysvc::test::audit_report_field(rep.out, name, "issued"), static_cast<long long>(c.issued)) << rep.out;
  EXPECT_EQ(keysvc::test::audit_report_field(rep.out, name, "resumed"), static_cast<long long>(resumed)) << rep.out;
  EXPECT_EQ(c.resumed, resumed);
  EXPECT_EQ(resumed, 6u);
  print_figure("audit: " + std::to_string(files.size()) + " worker files verified; report issued=" +
               std::to_string(c.issued) + " resumed=" + std::to_string(resumed));
}

// ---- 3. resumption across workers and across instances ----

class NginxResume : public ::testing::TestWithParam<Version> {};

// s_client: one full handshake, then resumptions each offering the newest ticket,
// until they have met at least two other workers than the issuer's.
TEST_P(NginxResume, NginxSClientResumesAcrossWorkers) {
  const Version v = GetParam();
  const std::string toml = write_keysvc_toml("nginx-keysvc.toml", {});
  std::string error;
  ASSERT_TRUE(rotate(toml, error)) << error;
  NginxInstance nginx(dir("nginx"), keysvc_nginx(4, toml));

  const std::string sess = nginx.dir() + "/session.pem";
  Answer first = s_client(nginx.port(), v, "", sess);
  ASSERT_TRUE(first.ok) << first.detail;
  ASSERT_FALSE(first.reused);
  ASSERT_EQ(first.protocol, version_name(v));
  ASSERT_FALSE(ticket_key_name(sess).empty()) << "no ticket in the session";

  std::set<pid_t> resumed_on;
  int attempts = 0, resumed = 0;
  while (attempts < 40 && (resumed_on.size() < 3 || attempts < 8)) {
    ++attempts;
    Answer a = s_client(nginx.port(), v, sess, sess);
    ASSERT_TRUE(a.ok) << a.detail;
    EXPECT_TRUE(a.reused) << "attempt " << attempts << " on worker " << a.pid << "\n" << a.detail;
    if (a.reused) {
      ++resumed;
      if (a.pid != first.pid) resumed_on.insert(a.pid);
    }
  }
  EXPECT_GE(resumed_on.size(), 2u) << "resumptions met only these other workers: " << resumed_on.size();
  print_figure(std::string(version_name(v)) + " s_client: " + std::to_string(resumed) + "/" +
               std::to_string(attempts) + " resumed, on " + std::to_string(resumed_on.size()) +
               " workers other than the issuer's (4 workers)");
  Counters c = stop_and_check(nginx, 4);
  EXPECT_GE(c.resumed, static_cast<std::uint64_t>(resumed));
  EXPECT_EQ(c.hsm_error, 0u);
}

// curl: one invocation, many URLs, a new connection for each; every one after the first
// resumes (curl offers its newest session), whichever worker it meets. TLS 1.3 only:
// curl (7.88, OpenSSL backend) sets SSL_OP_NO_TICKET, so in TLS 1.2 it offers no ticket
// extension and resumes only by session ID, which is nginx's ssl_session_cache, not
// tickets (TLS 1.2 tickets are covered with s_client above).
TEST(NginxModule, NginxCurlResumesTls13AcrossWorkers) {
  const Version v = Version::kTls13;
  const std::string toml = write_keysvc_toml("nginx-keysvc.toml", {});
  std::string error;
  ASSERT_TRUE(rotate(toml, error)) << error;
  NginxInstance nginx(dir("nginx"), keysvc_nginx(4, toml));

  constexpr int kRequests = 16;
  std::string detail;
  const auto answers = curl_requests(nginx.port(), v, kRequests, detail);
  ASSERT_EQ(answers.size(), static_cast<std::size_t>(kRequests)) << detail;
  EXPECT_FALSE(answers[0].reused) << detail;
  std::set<pid_t> workers;
  int resumed = 0;
  for (int i = 1; i < kRequests; ++i) {
    EXPECT_TRUE(answers[i].reused) << "request " << i << "\n" << detail;
    EXPECT_EQ(answers[i].protocol, version_name(v));
    resumed += answers[i].reused;
    workers.insert(answers[i].pid);
  }
  EXPECT_GE(workers.size(), 2u) << detail;
  print_figure(std::string(version_name(v)) + " curl: " + std::to_string(resumed) + "/" +
               std::to_string(kRequests - 1) + " resumed, on " + std::to_string(workers.size()) + " of 4 workers");
  stop_and_check(nginx, 4);
}

// Two nginx instances on one token: a ticket from either resumes on the other.
TEST_P(NginxResume, NginxResumesAcrossInstances) {
  const Version v = GetParam();
  const std::string toml = write_keysvc_toml("nginx-keysvc.toml", {});
  std::string error;
  ASSERT_TRUE(rotate(toml, error)) << error;
  NginxInstance a(dir("nginx-a"), keysvc_nginx(2, toml));
  NginxInstance b(dir("nginx-b"), keysvc_nginx(2, toml));

  int resumed = 0, attempts = 0;
  for (int round = 0; round < 4; ++round) {
    NginxInstance& issuer = round % 2 == 0 ? a : b;
    NginxInstance& other = round % 2 == 0 ? b : a;
    const std::string sess = issuer.dir() + "/session-" + std::to_string(round) + ".pem";
    Answer first = s_client(issuer.port(), v, "", sess);
    ASSERT_TRUE(first.ok) << first.detail;
    ASSERT_FALSE(first.reused);
    // There and back: the other instance resumes, then the issuer resumes the other's ticket.
    for (NginxInstance* target : {&other, &issuer}) {
      ++attempts;
      Answer r = s_client(target->port(), v, sess, sess);
      ASSERT_TRUE(r.ok) << r.detail;
      EXPECT_TRUE(r.reused) << "round " << round << "\n" << r.detail;
      resumed += r.reused;
    }
  }
  print_figure(std::string(version_name(v)) + " across two instances: " + std::to_string(resumed) + "/" +
               std::to_string(attempts) + " resumed");
  stop_and_check(a, 2);
  stop_and_check(b, 2);
}

INSTANTIATE_TEST_SUITE_P(nginx, NginxResume, ::testing::Values(Version::kTls13, Version::kTls12),
                         version_param_name);

// ---- 4. rotation under load ----

// Two instances of two workers; `keysvcctl rotate` every second rolls 3-second
// generations while clients make full handshakes on one instance and resume on the
// other and back (s_client), and curl bursts (TLS 1.3) resume across workers.
TEST(NginxModule, NginxRotationUnderLoadCausesNoResumptionFailure) {
  KeysvcToml t;
  t.lifetime = "8s";
  t.encrypt_period = "3s";
  t.publish_lead = "2s";
  t.decrypt_window = "8s";
  t.refresh_interval = "1s";
  const std::string toml = write_keysvc_toml("rotating.toml", t);
  std::string error;
  ASSERT_TRUE(rotate(toml, error)) << error;
  NginxInstance a(dir("nginx-a"), keysvc_nginx(2, toml));
  NginxInstance b(dir("nginx-b"), keysvc_nginx(2, toml));

  std::atomic<bool> stop{false};
  std::mutex mutex;
  std::uint64_t rotator_runs = 0, created = 0, full = 0, resumptions = 0, failures = 0;
  std::set<std::string> key_names;
  std::vector<std::string> failure_log, rotator_errors;

  std::thread rotator([&] {
    while (!stop.load()) {
      std::string err;
      auto n = rotate(toml, err);
      std::lock_guard lock(mutex);
      ++rotator_runs;
      if (n) {
        created += *n;
      } else if (rotator_errors.size() < 3) {
        rotator_errors.push_back(err);
      }
      for (int i = 0; i < 50 && !stop.load(); ++i) std::this_thread::sleep_for(20ms);
    }
  });
  auto record = [&](bool resumed_ok, const std::string& what) {
    std::lock_guard lock(mutex);
    ++resumptions;
    if (!resumed_ok) {
      ++failures;
      if (failure_log.size() < 3) failure_log.push_back(what);
    }
  };
  const auto end = std::chrono::steady_clock::now() + 10s;
  std::thread s_client_load([&] {
    for (int i = 0; std::chrono::steady_clock::now() < end; ++i) {
      const Version v = i % 2 == 0 ? Version::kTls13 : Version::kTls12;
      NginxInstance& issuer = i % 2 == 0 ? a : b;
      NginxInstance& other = i % 2 == 0 ? b : a;
      const std::string sess = issuer.dir() + "/load-" + std::to_string(i) + ".pem";
      Answer first = s_client(issuer.port(), v, "", sess);
      if (!first.ok) {
        record(false, "full handshake failed: " + first.detail);
        continue;
      }
      {
        std::lock_guard lock(mutex);
        ++full;
        key_names.insert(ticket_key_name(sess));
      }
      for (NginxInstance* target : {&other, &issuer}) {
        Answer r = s_client(target->port(), v, sess, sess);
        record(r.ok && r.reused, r.detail);
      }
    }
  });
  std::thread curl_load([&] {
    for (int i = 0; std::chrono::steady_clock::now() < end; ++i) {
      std::string detail;
      const auto answers = curl_requests(i % 2 == 0 ? a.port() : b.port(), Version::kTls13, 6, detail);
      if (answers.size() != 6) {
        record(false, "curl: " + detail);
        continue;
      }
      {
        std::lock_guard lock(mutex);
        ++full;
      }
      for (std::size_t k = 1; k < answers.size(); ++k) record(answers[k].reused, "curl: " + detail);
    }
  });
  s_client_load.join();
  curl_load.join();
  stop = true;
  rotator.join();

  EXPECT_TRUE(rotator_errors.empty()) << rotator_errors.front();
  EXPECT_EQ(failures, 0u) << failure_log.front();
  EXPECT_GE(created, 2u) << "the rotator created too few generations to test anything";
  key_names.erase("");
  EXPECT_GE(key_names.size(), 2u) << "full handshakes met only one generation";
  EXPECT_GT(resumptions, 20u);
  print_figure("rotation under load (10 s): " + std::to_string(rotator_runs) + " rotator runs, " +
               std::to_string(created) + " generations created, " + std::to_string(key_names.size()) +
               " generations seen in s_client tickets, " + std::to_string(full) + " full handshakes, " +
               std::to_string(resumptions) + " resumptions, " + std::to_string(failures) + " failed");
  stop_and_check(a, 2);
  stop_and_check(b, 2);
}

// ---- 5. HSM failure ----

std::string faultmod_toml(const std::string& file) {
  KeysvcToml t;
  t.module = FaultControl::module_path();
  t.refresh_interval = "1s";
  return write_keysvc_toml(file, t);
}

NginxOptions faultmod_nginx(int workers, const std::string& toml) {
  NginxOptions o = keysvc_nginx(workers, toml);
  o.env = {"KEYSVC_FAULTMOD_CONTROL", "KEYSVC_FAULTMOD_STATS", "KEYSVC_FAULTMOD_TARGET"};
  return o;
}

// Tries to resume `sess` (each time from the same ticket, as a TLS 1.2 client may) until
// it works or `attempts` runs out. Returns the attempts used, or std::nullopt.
std::optional<int> resume_within(int port, Version v, const std::string& sess, int attempts, std::string& last) {
  for (int i = 1; i <= attempts; ++i) {
    Answer r = s_client(port, v, sess, "");
    last = r.detail;
    if (r.ok && r.reused) return i;
    std::this_thread::sleep_for(250ms);
  }
  return std::nullopt;
}

TEST(NginxModule, NginxStaysUpWhenTheHsmFailsAndResumesWhenItReturns) {
  FaultControl faults(dir("faults"));
  faults.export_env();
  const std::string toml = faultmod_toml("faulty.toml");
  std::string error;
  ASSERT_TRUE(rotate(toml, error)) << error;
  NginxInstance nginx(dir("nginx"), faultmod_nginx(2, toml));
  const auto workers = nginx.worker_pids();

  const std::string before13 = nginx.dir() + "/before13.pem", before12 = nginx.dir() + "/before12.pem";
  ASSERT_TRUE(s_client(nginx.port(), Version::kTls13, "", before13).ok);
  ASSERT_TRUE(s_client(nginx.port(), Version::kTls12, "", before12).ok);

  // The HSM fails every call.
  faults.set("C_* CKR_DEVICE_ERROR\n");
  int full_during = 0, resumed_during = 0, failed_during = 0;
  for (int i = 0; i < 6; ++i) {
    for (const auto& [v, sess] : {std::pair{Version::kTls13, before13}, std::pair{Version::kTls12, before12}}) {
      Answer r = s_client(nginx.port(), v, sess, "");
      if (!r.ok) {
        ++failed_during;
        ADD_FAILURE() << "handshake failed while the HSM was down\n" << r.detail;
      } else if (r.reused) {
        ++resumed_during;
      } else {
        ++full_during;
      }
    }
  }
  EXPECT_EQ(resumed_during, 0) << "a ticket was opened without the HSM";
  EXPECT_EQ(full_during, 12);
  EXPECT_GT(faults.stats().injected, 0u);
  EXPECT_TRUE(nginx.running());
  EXPECT_EQ(nginx.worker_pids(), workers) << "a worker died while the HSM was down";

  // The HSM is back: the tickets from before the failure resume again.
  faults.clear();
  std::string last;
  auto took13 = resume_within(nginx.port(), Version::kTls13, before13, 40, last);
  EXPECT_TRUE(took13) << last;
  auto took12 = resume_within(nginx.port(), Version::kTls12, before12, 40, last);
  EXPECT_TRUE(took12) << last;
  // And fresh tickets work end to end. Within the same bound: the worker that takes the
  // connection may be one whose breaker is still open (no client reached it since the
  // HSM came back), which issues no ticket until its next probe (hsm.breaker_backoff).
  const std::string after = nginx.dir() + "/after.pem";
  std::optional<int> took_fresh;
  for (int i = 1; i <= 40 && !took_fresh; ++i) {
    std::filesystem::remove(after);
    Answer full = s_client(nginx.port(), Version::kTls13, "", after);
    ASSERT_TRUE(full.ok) << full.detail;
    if (std::filesystem::exists(after)) {
      Answer again = s_client(nginx.port(), Version::kTls13, after, "");
      if (again.ok && again.reused) took_fresh = i;
      last = again.detail;
    } else {
      last = "no ticket in the full handshake";
    }
    if (!took_fresh) std::this_thread::sleep_for(250ms);
  }
  EXPECT_TRUE(took_fresh) << last;

  print_figure("HSM down (C_* CKR_DEVICE_ERROR): " + std::to_string(full_during) + " full handshakes, " +
               std::to_string(resumed_during) + " resumed, " + std::to_string(failed_during) +
               " failed; HSM back: TLS 1.3 resumed after " + (took13 ? std::to_string(*took13) : "-") +
               " attempt(s), TLS 1.2 after " + (took12 ? std::to_string(*took12) : "-") +
               ", a fresh ticket resumed after " + (took_fresh ? std::to_string(*took_fresh) : "-"));
  Counters c = stop_and_check(nginx, 2);
  EXPECT_GT(c.hsm_error, 0u);
}

TEST(NginxModule, NginxStartsWhileTheHsmIsDownAndTurnsTicketsOnWhenItReturns) {
  FaultControl faults(dir("faults"));
  faults.export_env();
  const std::string toml = faultmod_toml("faulty.toml");
  std::string error;
  ASSERT_TRUE(rotate(toml, error)) << error;
  faults.set("C_OpenSession CKR_TOKEN_NOT_PRESENT\n");
  NginxInstance nginx(dir("nginx"), faultmod_nginx(2, toml));
  ASSERT_TRUE(nginx.wait_for_log(std::regex("keysvc: cannot open"), 2, 20s)) << nginx.error_log();

  // Full handshakes, and no ticket at all (never OpenSSL's own keys).
  const std::string sess = nginx.dir() + "/down.pem";
  Answer down = s_client(nginx.port(), Version::kTls12, "", sess);
  ASSERT_TRUE(down.ok) << down.detail;
  EXPECT_EQ(ticket_key_name(sess), "") << "a ticket was issued while keysvc could not open the token";

  faults.clear();
  ASSERT_TRUE(nginx.wait_for_log(std::regex("keysvc: opened"), 2, 30s)) << nginx.error_log();
  const std::string up = nginx.dir() + "/up.pem";
  ASSERT_TRUE(s_client(nginx.port(), Version::kTls13, "", up).ok);
  EXPECT_FALSE(ticket_key_name(up).empty());
  Answer r = s_client(nginx.port(), Version::kTls13, up, "");
  EXPECT_TRUE(r.ok && r.reused) << r.detail;
  const std::string log = nginx.error_log();
  const std::regex failed_open("keysvc: cannot open");
  print_figure("HSM down at start: " +
               std::to_string(std::distance(std::sregex_iterator(log.begin(), log.end(), failed_open),
                                            std::sregex_iterator())) +
               " failed opens (2 workers), no ticket while down; tickets on and resumed after it returned: " +
               (r.ok && r.reused ? "yes" : "no"));
  stop_and_check(nginx, 2);
}

}  // namespace
