// `keysvcctl audit verify` as an operator runs it (docs/AUDIT.md, "Checking"): a running
// keysvc-tls-server's file is pending (exit 3; 0 with --allow-pending once a seal is
// verified), never confused with tampering (exit 1, also with --allow-pending); a file
// that cannot be read names the OS's reason; a token that cannot be used checks nothing
// (exit 4).
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include "audit_scenario.h"
#include "test_token.h"

namespace {

using keysvc::test::AuditScenario;
using keysvc::test::describe;
using keysvc::test::read_file;
using keysvc::test::RunResult;
namespace fs = std::filesystem;

AuditScenario scenario() {
  // No seal but at close: a running server's file ends in records nothing sealed yet.
  return AuditScenario(std::string("audit_verify_cli/") +
                           ::testing::UnitTest::GetInstance()->current_test_info()->name(),
                       KEYSVCCTL_BIN, KEYSVC_TLS_SERVER_BIN, {.summary_interval = "0", .seal_interval = "1h"});
}

std::size_t line_count(const std::string& file) {
  std::string text = read_file(file);
  return static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n'));
}

void write(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

TEST(AuditVerifyCli, RunningServersFileIsPendingAndTamperingStaysTampering) {
  AuditScenario s = scenario();
  ASSERT_FALSE(s.generate().empty());
  const std::string log = s.server_log();
  {
    // A first run: its file has no seal while it runs, so nothing vouches for it yet.
    auto server = s.start_server();
    s.full_handshakes(server->port(), 1);
    RunResult r = s.ctl({"audit", "verify", "--allow-pending", log});
    EXPECT_EQ(r.exit_code, std::optional<int>(3)) << describe(r);
    EXPECT_NE(r.err.find(": unsealed_tail: "), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("no seal yet"), std::string::npos) << r.err;
    server->stop();  // seals at close
  }
  const std::size_t sealed_lines = line_count(log);
  auto server = s.start_server();  // appends to the same file, continuing its chain
  s.full_handshakes(server->port(), 1);

  RunResult plain = s.ctl({"audit", "verify", log});
  EXPECT_EQ(plain.exit_code, std::optional<int>(3)) << describe(plain);
  EXPECT_EQ(keysvc::test::count_lines(plain.err), 1u) << plain.err;
  const std::string first_pending = log + ":" + std::to_string(sealed_lines + 1) + ": unsealed_tail: ";
  EXPECT_EQ(plain.err.rfind("keysvcctl: audit verify: " + first_pending, 0), 0u) << plain.err;
  EXPECT_NE(plain.err.find("intact and sealed up to seq " + std::to_string(sealed_lines) + " at " + log + ":" +
                           std::to_string(sealed_lines)),
            std::string::npos)
      << plain.err;
  EXPECT_TRUE(plain.out.empty()) << plain.out;

  RunResult allowed = s.ctl({"audit", "verify", "--allow-pending", log});
  EXPECT_EQ(allowed.exit_code, std::optional<int>(0)) << describe(allowed);
  EXPECT_EQ(allowed.out.rfind("pending: intact and sealed up to seq " + std::to_string(sealed_lines), 0), 0u)
      << allowed.out;
  EXPECT_TRUE(allowed.err.empty()) << allowed.err;

  RunResult json = s.ctl({"audit", "verify", "--allow-pending", "--json", log});
  EXPECT_EQ(json.exit_code, std::optional<int>(0)) << describe(json);
  nlohmann::json j = nlohmann::json::parse(json.out, nullptr, false);
  ASSERT_TRUE(j.is_object()) << json.out;
  EXPECT_EQ(j["verdict"], "pending");
  EXPECT_EQ(j["exit_code"], 0);
  EXPECT_EQ(j["last_seal"]["line"], sealed_lines);
  EXPECT_GE(j["pending"].get<int>(), 2) << "chain_start and config_loaded of the second run";

  // Tampering, with or without --allow-pending: a sealed line, and a line of the tail
  // whose successor no longer chains to it.
  const std::string text = read_file(log);
  std::vector<std::string> lines;
  for (std::size_t at = 0; at < text.size();) {
    std::size_t end = text.find('\n', at);
    lines.push_back(text.substr(at, end - at));
    at = end == std::string::npos ? text.size() : end + 1;
  }
  for (std::size_t edited : {std::size_t{2}, sealed_lines + 1}) {
    std::vector<std::string> copy = lines;
    std::string& l = copy[edited - 1];
    l.insert(l.find("\"event\""), "\"x\":1,");
    std::string joined;
    for (const auto& x : copy) joined += x + "\n";
    const std::string tampered = s.dir() + "/tampered-" + std::to_string(edited) + ".jsonl";
    write(tampered, joined);
    RunResult t = s.ctl({"audit", "verify", "--allow-pending", tampered});
    EXPECT_EQ(t.exit_code, std::optional<int>(1)) << "line " << edited << ": " << describe(t);
    EXPECT_EQ(t.err.rfind("keysvcctl: audit verify: " + tampered + ":" + std::to_string(edited) + ": edited", 0), 0u)
        << t.err;
  }

  server->stop();
  RunResult closed = s.ctl({"audit", "verify", log});
  EXPECT_EQ(closed.exit_code, std::optional<int>(0)) << describe(closed);
  EXPECT_EQ(closed.out.rfind("intact: ", 0), 0u) << closed.out;
}

TEST(AuditVerifyCli, UnreadableFilesNameTheOsReason) {
  AuditScenario s = scenario();
  ASSERT_FALSE(s.generate().empty());  // keysvcctl's file, sealed
  const std::string locked = s.dir() + "/locked.jsonl";
  fs::copy_file(s.ctl_log(), locked);
  ::chmod(locked.c_str(), 0);
  const std::string missing = s.dir() + "/missing.jsonl";
  struct Case {
    std::string file, reason;
    bool drop_dac;  // root reads any file: drop CAP_DAC_OVERRIDE/READ_SEARCH for EACCES
  };
  for (const Case& c : {Case{missing, "No such file or directory", false}, Case{s.dir(), "Is a directory", false},
                        Case{locked, "Permission denied", true}}) {
    std::vector<std::string> argv = {KEYSVCCTL_BIN, "--config", s.config(), "audit", "verify", s.ctl_log(), c.file};
    if (c.drop_dac && ::geteuid() == 0)
      argv.insert(argv.begin(), {"setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search"});
    RunResult r = keysvc::test::run(argv, "", std::chrono::seconds(60));
    EXPECT_EQ(r.exit_code, std::optional<int>(1)) << describe(r);
    EXPECT_EQ(r.err, "keysvcctl: audit verify: " + c.file + ":1: malformed: cannot read the file (" + c.reason + ")\n");
  }
  // The readable file on its own is intact.
  RunResult ok = s.ctl({"audit", "verify", s.ctl_log()});
  EXPECT_EQ(ok.exit_code, std::optional<int>(0)) << describe(ok);
}

// Without the token the chain is still checked: intact is exit 4 with one line saying
// what was not checked; a broken chain is exit 1 all the same.
TEST(AuditVerifyCli, WithoutTheTokenOnlyTheChainIsChecked) {
  AuditScenario s = scenario();
  ASSERT_FALSE(s.generate().empty());
  std::string config = read_file(s.config());
  config = std::regex_replace(config, std::regex("token = \"[^\"]*\""), "token = \"pkcs11:token=no-such-token\"");
  const std::string other = keysvc::test::TestToken::get().dir() + "/keysvc-no-token.toml";
  write(other, config);
  RunResult r = keysvc::test::run({KEYSVCCTL_BIN, "--config", other, "audit", "verify", s.ctl_log()}, "",
                                  std::chrono::seconds(60));
  EXPECT_EQ(r.exit_code, std::optional<int>(4)) << describe(r);
  EXPECT_EQ(keysvc::test::count_lines(r.err), 1u) << r.err;
  EXPECT_EQ(r.err.rfind("keysvcctl: audit verify: seals and anchors not checked (", 0), 0u) << r.err;
  EXPECT_NE(r.err.find("no-such-token"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("the hash chain of "), std::string::npos) << r.err;

  const std::string edited = s.dir() + "/edited.jsonl";
  std::string text = read_file(s.ctl_log());
  text.replace(text.find("\"event\":\"config_loaded\""), 1, "\"x\":1,\"");
  write(edited, text);
  r = keysvc::test::run({KEYSVCCTL_BIN, "--config", other, "audit", "verify", edited}, "", std::chrono::seconds(60));
  EXPECT_EQ(r.exit_code, std::optional<int>(1)) << describe(r);
  EXPECT_EQ(keysvc::test::count_lines(r.err), 2u) << r.err;
  EXPECT_EQ(r.err.rfind("keysvcctl: audit verify: " + edited + ":2: edited", 0), 0u) << r.err;
  EXPECT_NE(r.err.find("\nkeysvcctl: audit verify: seals and anchors not checked: "), std::string::npos) << r.err;
}

}  // namespace
