// ngx_http_keysvc_module in the real nginx (/usr/sbin/nginx, Debian's 1.22) on a real
// SoftHSM token made for the test, workers running as www-data when the test runs as
// root (tests/support/worker_user.h):
//   - the module's binary signature is the installed nginx's, and load_module takes it;
//   - the directives in http and server blocks, and the configurations it refuses;
//   - the master reads keysvc's TOML and PIN; the workers, as www-data, cannot read the
//     PIN file and open the token themselves; the master never loads the PKCS#11 module;
//   - each worker writes its own audit log;
//   - nginx's log has no alert from keysvc (stop_and_check).
// Reload and binary upgrade: nginx_lifecycle_test.cc. Ticket behaviour (resumption,
// rotation, HSM failure): nginx_tickets_test.cc.
//
// Every test name contains "Nginx" so `ctest -R Nginx` selects them. Waits are bounded;
// nothing asserts a duration.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "audit_report.h"
#include "nginx_keysvc.h"
#include "test_token.h"
#include "ticket_scenarios.h"

namespace {

using namespace std::chrono_literals;
using namespace keysvc::test;

// ---- 1. the binary signature, load_module and the directives ----

// NGX_MODULE_SIGNATURE: "8,4,8,0011..." (pointer, sig_atomic_t and time_t sizes, then
// one flag per build option).
std::set<std::string> signatures_in(const std::string& file) {
  const std::string bytes = read_file(file);
  std::set<std::string> found;
  const std::regex sig(R"(\d,\d,\d,[01]{30,40})");
  for (auto it = std::sregex_iterator(bytes.begin(), bytes.end(), sig); it != std::sregex_iterator(); ++it) {
    found.insert((*it)[0]);
  }
  return found;
}

TEST(NginxModule, NginxSignatureOfTheModuleIsTheInstalledNginxs) {
  const auto in_nginx = signatures_in(kNginxBinary);
  const auto in_module = signatures_in(nginx_module_path());
  ASSERT_EQ(in_nginx.size(), 1u);
  ASSERT_EQ(in_module.size(), 1u);
  EXPECT_EQ(*in_module.begin(), *in_nginx.begin());

  // The module was configured with nginx-dev's conf_flags: each of them is among the
  // installed binary's configure arguments (nginx -V).
  RunResult v = run({kNginxBinary, "-V"}, "", 20s);
  ASSERT_EQ(v.exit_code, std::optional<int>(0)) << describe(v);
  const std::string flags = read_file("/usr/share/nginx/src/conf_flags");
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
  return NginxInstance::render(d, o, free_port());
}

TEST(NginxModule, NginxAcceptsTheDirectivesInHttpAndServerBlocks) {
  const std::string toml = write_keysvc_toml("nginx-keysvc.toml", {});
  const std::string d = token_subdir("conf");
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
  const std::string d = token_subdir("conf");
  const std::string bad_toml = TestToken::get().dir() + "/bad.toml";
  std::ofstream(bad_toml) << read_file(toml) << "\n[tickets2]\nlifetme = 3\n";
  // The master reads the PIN at configuration time: a PIN file it cannot read is a
  // configuration error, found by `nginx -t` like a missing ssl_password_file.
  const std::string no_pin_toml = TestToken::get().dir() + "/no-pin.toml";
  std::ofstream(no_pin_toml) << std::regex_replace(read_file(toml), std::regex("file:pin"), "file:/nonexistent/pin");
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
           {"ssl_session_cache shared", on, "ssl_session_cache shared:keysvc_test:1m;\n",
            "\"keysvc_tickets on\" and \"ssl_session_cache\""},
           {"ssl_session_cache builtin", on, "ssl_session_cache builtin;\n",
            "\"keysvc_tickets on\" and \"ssl_session_cache\""},
           {"bad keysvc toml", "keysvc_config " + bad_toml + ";\nkeysvc_tickets on;\n", "", "bad.toml:"},
           {"missing keysvc toml", "keysvc_config /nonexistent/keysvc.toml;\nkeysvc_tickets on;\n", "",
            "/nonexistent/keysvc.toml"},
           {"missing PIN file", "keysvc_config " + no_pin_toml + ";\nkeysvc_tickets on;\n", "",
            "cannot read PIN file /nonexistent/pin"},
           {"bad flag", "keysvc_tickets maybe;\n", "", "invalid value \"maybe\""},
           {"twice", "keysvc_config " + toml + ";\nkeysvc_config " + toml + ";\n", "", "is duplicate"},
       }) {
    RunResult r = NginxInstance::test_config(d, "bad.conf", conf_with(c.http, c.server, d));
    EXPECT_EQ(r.exit_code, std::optional<int>(1)) << c.name << "\n" << describe(r);
    EXPECT_NE(r.err.find("[emerg]"), std::string::npos) << c.name << "\n" << describe(r);
    EXPECT_NE(r.err.find(c.message), std::string::npos) << c.name << "\n" << describe(r);
  }
}

// ---- 2. the master reads the PIN, the workers open the token ----

TEST(NginxModule, NginxOpensTheTokenInEachWorkerNotInTheMaster) {
  const std::string toml = write_keysvc_toml("nginx-keysvc.toml", {});
  std::string error;
  ASSERT_TRUE(rotate(toml, error)) << error;
  NginxInstance nginx(token_subdir("nginx"), keysvc_nginx(3, toml));
  opens_the_token_in_each_worker_not_in_the_master(nginx, 3);
}

// Workers share one TOML; with {pid} in [audit] path each writes (and locks) its own file.
// Each file verifies, and the report over the files counts what the workers did.
TEST(NginxModule, NginxWorkersEachWriteTheirOwnAuditLog) {
  const std::string audit_dir = token_subdir("audit-" + std::to_string(::getpid()));
  give_to_worker(audit_dir);
  KeysvcToml t;
  t.audit_path = audit_dir + "/audit-{pid}.jsonl";
  const std::string toml = write_keysvc_toml("nginx-keysvc-audit.toml", t);
  std::string error;
  ASSERT_TRUE(rotate(toml, error)) << error;
  NginxInstance nginx(token_subdir("nginx"), keysvc_nginx(2, toml));
  ASSERT_TRUE(nginx.wait_for_log(std::regex("keysvc: opened"), 2, 20s)) << nginx.error_log();
  const auto workers = nginx.worker_pids();
  ASSERT_EQ(workers.size(), 2u);

  const std::string sess = nginx.dir() + "/audit-session.pem";
  Answer first = s_client_request(nginx.port(), TlsVersion::kTls12, localhost_cert().cert, "", sess);
  ASSERT_TRUE(first.ok) << first.detail;
  const std::string name = ticket_key_name(sess);
  ASSERT_FALSE(name.empty()) << "no ticket in the session";
  std::uint64_t resumed = 0;
  for (int i = 0; i < 6; ++i) {
    Answer a = s_client_request(nginx.port(), TlsVersion::kTls12, localhost_cert().cert, sess, "");
    ASSERT_TRUE(a.ok) << a.detail;
    if (a.reused) ++resumed;
  }
  TicketCounters c = stop_and_check(nginx, 2);
  const std::string log = nginx.error_log();
  EXPECT_EQ(log.find("keysvc: cannot open"), std::string::npos) << log;

  std::vector<std::string> files;
  for (pid_t w : workers) {
    const std::string file = audit_dir + "/audit-" + std::to_string(w) + ".jsonl";
    ASSERT_TRUE(std::filesystem::exists(file)) << "worker " << w << " wrote no " << file;
    RunResult v = ctl(toml, {"audit", "verify", file});
    EXPECT_EQ(v.exit_code, std::optional<int>(0)) << describe(v);
    files.push_back(file);
  }
  EXPECT_TRUE(std::filesystem::exists(audit_dir + "/audit-keysvcctl.jsonl")) << "keysvcctl's own file";
  std::vector<std::string> argv = {keysvcctl(), "audit", "report", "--json"};
  argv.insert(argv.end(), files.begin(), files.end());
  RunResult rep = run(argv, "", 30s);
  ASSERT_EQ(rep.exit_code, std::optional<int>(0)) << describe(rep);
  // TLS 1.2 without renewal: one ticket issued by the full handshake, none on resumption.
  EXPECT_EQ(audit_report_field(rep.out, name, "issued"), static_cast<long long>(c.issued)) << rep.out;
  EXPECT_EQ(audit_report_field(rep.out, name, "resumed"), static_cast<long long>(resumed)) << rep.out;
  EXPECT_EQ(c.resumed, resumed);
  EXPECT_EQ(resumed, 6u);
  print_figure("audit: " + std::to_string(files.size()) + " worker files verified; report issued=" +
               std::to_string(c.issued) + " resumed=" + std::to_string(resumed));
}

}  // namespace
