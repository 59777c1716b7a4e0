// The audit trail end to end: keysvcctl and keysvc-tls-server with [audit] on, real
// openssl s_client handshakes (TLS 1.3 and 1.2, full and resumed, one forged ticket),
// then `keysvcctl audit verify` must accept both logs and `keysvcctl audit report --json`
// must count exactly the tickets this test drove, per key name, and show the lifecycle
// events keysvcctl wrote.
//
// The logs stay under $KEYSVC_TEST_TMPDIR/logs/tls_server_audit/<test name> for the suite-wide
// secret scan (tools/scan_logs_for_secrets.py).
#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <signal.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "keysvc/config.h"
#include "keysvc/key_name.h"
#include "audit_report.h"
#include "process.h"
#include "test_token.h"
#include "tls_pair.h"

namespace {

using namespace std::chrono_literals;
using keysvc::test::Process;
using keysvc::test::RunResult;
using keysvc::test::TestToken;

constexpr char kRequest[] = "GET / HTTP/1.0\r\nHost: localhost\r\n\r\n";

std::string bin(const std::string& name) { return name == "keysvcctl" ? KEYSVCCTL_BIN : KEYSVC_TLS_SERVER_BIN; }

// $KEYSVC_TEST_TMPDIR/logs/NAME, emptied: where this test's logs stay after it ends.
std::string log_dir(const std::string& name) {
  const char* base = std::getenv("KEYSVC_TEST_TMPDIR");
  std::string dir = std::string(base ? base : "/tmp") + "/logs/" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string describe(const RunResult& r) {
  return "exit " + (r.exit_code ? std::to_string(*r.exit_code) : std::string("(timed out)")) + "\n--- stdout\n" +
         r.out + "\n--- stderr\n" + r.err;
}

using keysvc::test::audit_report_field;

class TlsServerAudit : public ::testing::Test {
 protected:
  void SetUp() override {
    TestToken::get().clear();
    // One folder per test: ctest runs this binary's tests in parallel processes, and
    // log_dir() empties the folder it returns.
    logs_ = log_dir(std::string("tls_server_audit/") +
                    ::testing::UnitTest::GetInstance()->current_test_info()->name());
    tls_ = TestToken::get().dir() + "/audit-tls";
    std::filesystem::create_directories(tls_);
    config_ = TestToken::get().dir() + "/keysvc-audit.toml";  // next to the token's pin file
    std::ofstream(config_) << slurp(TestToken::get().config_path()) << "\n[audit]\npath = \"" << logs_
                           << "/audit.jsonl\"\n";
    server_log_ = logs_ + "/audit.jsonl";
    ctl_log_ = logs_ + "/audit-keysvcctl.jsonl";
  }

  RunResult ctl(std::vector<std::string> args, bool with_config = true) {
    std::vector<std::string> argv = {bin("keysvcctl")};
    if (with_config) argv.insert(argv.end(), {"--config", config_});
    argv.insert(argv.end(), args.begin(), args.end());
    return keysvc::test::run(argv, "", 60s);
  }

  RunResult s_client(int port, const char* version, const std::string& sess_flag, const std::string& sess_file) {
    return keysvc::test::run({"openssl", "s_client", "-connect", "127.0.0.1:" + std::to_string(port), "-servername",
                              "localhost", version, "-CAfile", tls_ + "/server.crt", "-ign_eof", sess_flag, sess_file},
                             kRequest, 15s);
  }

  std::string logs_, tls_, config_, server_log_, ctl_log_;
};

TEST_F(TlsServerAudit, ReportCountsExactlyTheHandshakesDrivenAndVerifyAcceptsTheLogs) {
  // keysvcctl makes the generation: its lifecycle records go to keysvcctl's own file.
  RunResult gen = ctl({"keys", "generate"});
  ASSERT_EQ(gen.exit_code, std::optional<int>(0)) << describe(gen);
  const std::string g1 = gen.out.substr(0, 32);
  ASSERT_TRUE(keysvc::key_name_from_hex(g1).has_value()) << gen.out;

  Process server({bin("keysvc-tls-server"), "--listen", "127.0.0.1:0", "--cert", tls_ + "/server.crt", "--key",
                  tls_ + "/server.key", "--config", config_, "--threads", "2"});
  auto m = server.wait_for_stderr(std::regex(R"(listening on 127\.0\.0\.1:(\d+)\n)"), 20s);
  ASSERT_TRUE(m) << server.err();
  const int port = std::stoi((*m)[1]);
  const int per_handshake = keysvc::Config::load_file(config_).tickets.per_handshake;

  // TLS 1.3: 3 full handshakes, 2 of their sessions resumed.
  constexpr int kFull13 = 3, kResumed13 = 2, kFull12 = 2, kResumed12 = 2;
  for (int i = 0; i < kFull13; ++i) {
    RunResult r = s_client(port, "-tls1_3", "-sess_out", tls_ + "/s13-" + std::to_string(i) + ".pem");
    ASSERT_EQ(r.exit_code, std::optional<int>(0)) << describe(r);
    ASSERT_NE(r.out.find("New, TLSv1.3"), std::string::npos) << describe(r);
  }
  for (int i = 0; i < kResumed13; ++i) {
    RunResult r = s_client(port, "-tls1_3", "-sess_in", tls_ + "/s13-" + std::to_string(i) + ".pem");
    ASSERT_EQ(r.exit_code, std::optional<int>(0)) << describe(r);
    ASSERT_NE(r.out.find("Reused, TLSv1.3"), std::string::npos) << describe(r);
  }
  // TLS 1.2: 2 full, both resumed (same generation: no renewal).
  for (int i = 0; i < kFull12; ++i) {
    RunResult r = s_client(port, "-tls1_2", "-sess_out", tls_ + "/s12-" + std::to_string(i) + ".pem");
    ASSERT_EQ(r.exit_code, std::optional<int>(0)) << describe(r);
    ASSERT_NE(r.out.find("New, TLSv1.2"), std::string::npos) << describe(r);
  }
  for (int i = 0; i < kResumed12; ++i) {
    RunResult r = s_client(port, "-tls1_2", "-sess_in", tls_ + "/s12-" + std::to_string(i) + ".pem");
    ASSERT_EQ(r.exit_code, std::optional<int>(0)) << describe(r);
    ASSERT_NE(r.out.find("Reused, TLSv1.2"), std::string::npos) << describe(r);
  }
  // One TLS 1.2 session whose ticket names no generation: a full handshake, counted as
  // unknown_key under that name.
  std::string forged_name;
  {
    BIO* in = BIO_new_file((tls_ + "/s12-0.pem").c_str(), "r");
    ASSERT_NE(in, nullptr);
    keysvc::test::SessionPtr session(PEM_read_bio_SSL_SESSION(in, nullptr, nullptr, nullptr));
    BIO_free(in);
    ASSERT_TRUE(session);
    auto ticket = keysvc::test::ticket_of(session.get());
    ASSERT_GE(ticket.size(), 16u);
    ticket[0] ^= 0xff;
    keysvc::KeyName n{};
    std::copy(ticket.begin(), ticket.begin() + 16, n.begin());
    forged_name = keysvc::to_hex(n);
    auto forged = keysvc::test::with_ticket(session.get(), ticket);
    BIO* out = BIO_new_file((tls_ + "/forged.pem").c_str(), "w");
    ASSERT_NE(out, nullptr);
    ASSERT_EQ(PEM_write_bio_SSL_SESSION(out, forged.get()), 1);
    BIO_free(out);
  }
  RunResult forged = s_client(port, "-tls1_2", "-sess_in", tls_ + "/forged.pem");
  ASSERT_EQ(forged.exit_code, std::optional<int>(0)) << describe(forged);
  ASSERT_NE(forged.out.find("New, TLSv1.2"), std::string::npos) << describe(forged);

  server.signal(SIGTERM);
  ASSERT_EQ(server.wait(20s), std::optional<int>(0)) << server.err();
  std::ofstream(logs_ + "/server.stderr.log") << server.err();

  // Revoking after the run: keysvcctl's lifecycle records (revoked; the replacement's
  // generation_created and activated).
  RunResult revoke = ctl({"keys", "revoke", g1});
  ASSERT_EQ(revoke.exit_code, std::optional<int>(0)) << describe(revoke);

  RunResult v1 = ctl({"audit", "verify", server_log_});
  EXPECT_EQ(v1.exit_code, std::optional<int>(0)) << describe(v1);
  RunResult v2 = ctl({"audit", "verify", ctl_log_});
  EXPECT_EQ(v2.exit_code, std::optional<int>(0)) << describe(v2);

  RunResult rep = ctl({"audit", "report", "--json", server_log_, ctl_log_}, /*with_config=*/false);
  ASSERT_EQ(rep.exit_code, std::optional<int>(0)) << describe(rep);
  std::ofstream(logs_ + "/report.json") << rep.out;
  const long long issued = std::int64_t{per_handshake} * kFull13 + kResumed13 + kFull12 + 1;
  EXPECT_EQ(audit_report_field(rep.out, g1, "issued"), issued) << rep.out;
  EXPECT_EQ(audit_report_field(rep.out, g1, "resumed"), kResumed13 + kResumed12) << rep.out;
  EXPECT_EQ(audit_report_field(rep.out, g1, "renewed"), 0) << rep.out;
  EXPECT_EQ(audit_report_field(rep.out, g1, "mac_failure"), 0) << rep.out;
  EXPECT_EQ(audit_report_field(rep.out, g1, "unknown_key"), 0) << rep.out;
  EXPECT_EQ(audit_report_field(rep.out, forged_name, "unknown_key"), 1) << rep.out;
  EXPECT_EQ(audit_report_field(rep.out, forged_name, "issued"), 0) << rep.out;
  EXPECT_NE(rep.out.find("\"kind\": \"unknown_key_name\""), std::string::npos) << rep.out;

  // Lifecycle: keysvcctl created, activated and revoked g1; the revocation's replacement.
  std::string ctl_text = slurp(ctl_log_);
  EXPECT_NE(ctl_text.find("\"event\":\"generation_created\",\"name\":\"" + g1 + "\""), std::string::npos) << ctl_text;
  EXPECT_NE(ctl_text.find("\"event\":\"activated\",\"name\":\"" + g1 + "\""), std::string::npos) << ctl_text;
  EXPECT_NE(ctl_text.find("\"event\":\"revoked\",\"name\":\"" + g1 + "\""), std::string::npos) << ctl_text;
  EXPECT_EQ(std::regex_search(rep.out, std::regex("\"name\": \"" + g1 + "\",\\s+\"first_seen\": \"[^\"]+\",\\s+"
                                                  "\"last_seen\": \"[^\"]+\",\\s+\"created\": \"20")),
            true)
      << rep.out;
  EXPECT_NE(rep.out.find("\"config_loaded\""), std::string::npos) << rep.out;
  EXPECT_NE(rep.out.find("\"seal\""), std::string::npos) << rep.out;
  // The server's stderr and the logs never carry the PIN.
  for (const auto& text : {server.err(), slurp(server_log_), ctl_text})
    EXPECT_EQ(text.find(TestToken::get().pin()), std::string::npos);
}

// Every token-changing keysvcctl command fails, changing nothing, when its audit record
// cannot be written (the log's folder is not writable).
TEST_F(TlsServerAudit, KeysvcctlFailsBeforeChangingTheTokenWhenTheAuditLogCannotBeOpened) {
  std::ofstream(config_) << slurp(TestToken::get().config_path()) << "\n[audit]\npath = \"/proc/keysvc-no/audit.jsonl\"\n";
  auto before = TestToken::get().objects();
  RunResult gen = ctl({"keys", "generate"});
  EXPECT_EQ(gen.exit_code, std::optional<int>(1)) << describe(gen);
  EXPECT_NE(gen.err.find("audit log"), std::string::npos) << gen.err;
  EXPECT_EQ(keysvc::test::count_lines(gen.err), 1u) << gen.err;
  // The audit key may have been created (it is needed to seal); no generation was.
  auto after = TestToken::get().objects();
  std::erase_if(after, [](const std::string& o) { return o.rfind("keysvc-audit-seal", 0) == 0; });
  EXPECT_EQ(after, before);
}

}  // namespace
