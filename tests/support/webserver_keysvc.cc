#include "webserver_keysvc.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <regex>
#include <stdexcept>
#include <vector>

#include "prefork_server.h"
#include "test_token.h"
#include "tls_clients.h"
#include "worker_user.h"

namespace keysvc::test {

using namespace std::chrono_literals;

std::string token_subdir(const std::string& name) {
  const std::string d = TestToken::get().dir() + "/" + name;
  std::filesystem::create_directories(d);
  return d;
}

const Cert& localhost_cert() {
  static const Cert c = [] {
    const std::string d = token_subdir("tls");
    Cert made{d + "/server.crt", d + "/server.key"};
    RunResult r = run({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                       "-keyout", made.key, "-out", made.cert, "-days", "2", "-subj", "/CN=localhost", "-addext",
                       "subjectAltName=DNS:localhost,IP:127.0.0.1"},
                      "", 30s);
    if (r.exit_code != std::optional<int>(0)) throw std::runtime_error("openssl req failed: " + describe(r));
    return made;
  }();
  return c;
}

std::string write_keysvc_toml(const std::string& file, const KeysvcToml& t) {
  TestToken& token = TestToken::get();
  const std::string path = token.dir() + "/" + file;
  std::ofstream out(path, std::ios::trunc);
  out << "[hsm]\nmodule = \"" << (t.module.empty() ? kSoftHsmModule : t.module) << "\"\ntoken = \""
      << token.token_uri() << "\"\npin = \"file:pin\"\nsessions = 2\n\n"
      << "[tickets]\nper_handshake = 2\nlifetime = \"" << t.lifetime << "\"\nmax_session_age = \"1h\"\n"
      << "issue_pool = 8\n\n"
      << "[rotation]\nencrypt_period = \"" << t.encrypt_period << "\"\npublish_lead = \"" << t.publish_lead
      << "\"\ndecrypt_window = \"" << t.decrypt_window << "\"\nclock_skew = \"0s\"\nrefresh_interval = \""
      << t.refresh_interval << "\"\n"
      << (t.tier.empty() ? "" : "tier = \"" + t.tier + "\"\n") << "self_rotate = false\n\n[log]\nlevel = \"info\"\n";
  if (!t.audit_path.empty()) out << "\n[audit]\npath = \"" << t.audit_path << "\"\n";
  out.close();
  if (!out) throw std::runtime_error("cannot write " + path);
  namespace fs = std::filesystem;
  fs::permissions(path, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                            fs::perms::others_read);
  return path;
}

std::string keysvcctl() { return KEYSVCCTL_BIN; }

RunResult ctl(const std::string& toml, std::vector<std::string> args) {
  share_token_with_worker();
  std::vector<std::string> argv = {keysvcctl(), "--config", toml, "--pin-source", kWorkerPinSource};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(as_worker(std::move(argv)), "", 30s, worker_pin_env());
}

std::optional<std::size_t> rotate(const std::string& toml, std::string& error) {
  RunResult r = ctl(toml, {"rotate", "--json"});
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

TicketCounters exit_counters(const std::string& log) {
  TicketCounters c;
  const std::regex line(R"(keysvc: server .* (?:worker|child) \d+ tickets: issued=(\d+) resumed=(\d+) renewed=\d+ )"
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

TicketCounters stop_and_check(PreforkServer& server, std::size_t workers) {
  EXPECT_EQ(server.stop(), std::optional<int>(0)) << server.error_log();
  const std::string log = server.error_log();
  EXPECT_EQ(log.find(TestToken::get().pin()), std::string::npos) << "the PIN appears in the error log";
  EXPECT_EQ(log.find("exited on signal"), std::string::npos) << log;  // nginx
  EXPECT_EQ(log.find("exit signal"), std::string::npos) << log;       // httpd
  EXPECT_EQ(server.sanitizer_report(), "") << log;
  std::smatch loud;
  EXPECT_FALSE(std::regex_search(log, loud, std::regex(R"([^\n]*\[(\w+:)?(alert|crit|emerg)\][^\n]*)")))
      << loud.str(0);
  EXPECT_EQ(log.find("stale global SSL error"), std::string::npos) << log;
  TicketCounters c = exit_counters(log);
  EXPECT_EQ(c.workers, workers) << log;
  return c;
}

void print_figure(const std::string& what) { std::cout << "[ figure   ] " << what << std::endl; }

}  // namespace keysvc::test
