// Attacks on the audit trail by someone who can write the audit files but cannot use the
// HSM (docs/AUDIT.md, "Threat model"), each scripted on real files written by keysvcctl
// and keysvc-tls-server against the test token, and what `keysvcctl audit verify` then
// says: the reason, the line and the exit code. Each verdict line is printed
// ("[audit-attack] ...") for the docs.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "audit_scenario.h"
#include "keysvc/audit_key.h"
#include "keysvc/audit_log.h"
#include "known_secrets.h"
#include "legacy_audit_log.h"
#include "test_token.h"

namespace {

using keysvc::test::AuditScenario;
using keysvc::test::describe;
using keysvc::test::read_file;
using keysvc::test::RunResult;
using Json = nlohmann::json;
namespace fs = std::filesystem;
namespace audit = keysvc::audit;

std::string test_name() { return ::testing::UnitTest::GetInstance()->current_test_info()->name(); }

AuditScenario scenario(AuditScenario::Options o = {}) {
  return AuditScenario("audit_attack/" + test_name(), KEYSVCCTL_BIN, KEYSVC_TLS_SERVER_BIN, o);
}

std::vector<std::string> lines_of(const std::string& file) {
  std::vector<std::string> out;
  std::istringstream in(read_file(file));
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

void write_lines(const std::string& file, const std::vector<std::string>& lines, std::size_t count) {
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  for (std::size_t k = 0; k < count && k < lines.size(); ++k) out << lines[k] << '\n';
}

// Appends records that chain on from the file's last line, as an attacker who knows the
// format writes them: each field right, each prev the hash of the line before.
void forge(const std::string& file, const std::vector<std::string>& events, std::int64_t ts_ms) {
  std::vector<std::string> ls = lines_of(file);
  ASSERT_FALSE(ls.empty());
  Json last = Json::parse(ls.back());
  std::uint64_t seq = last["seq"].get<std::uint64_t>();
  audit::Hash prev = audit::sha256(ls.back());
  std::ofstream out(file, std::ios::binary | std::ios::app);
  for (const auto& e : events) {
    const std::string line = "{\"seq\":" + std::to_string(++seq) + ",\"ts\":\"" + audit::iso8601_ms(ts_ms) +
                             "\",\"host\":" + last["host"].dump() + ",\"pid\":" + last["pid"].dump() + "," + e +
                             ",\"prev\":\"" + keysvc::to_hex(prev) + "\"}";
    out << line << '\n';
    prev = audit::sha256(line);
    ts_ms += 10;
  }
}

std::int64_t last_ts(const std::string& file) {
  return keysvc::test::audit_time_ms(Json::parse(lines_of(file).back())["ts"].get<std::string>());
}

const std::string kInvented(32, 'f');
std::vector<std::string> invented_generation() {
  return {"\"event\":\"generation_created\",\"name\":\"" + kInvented +
              "\",\"created\":1,\"encrypt_from\":2,\"encrypt_until\":3,\"decrypt_until\":4",
          "\"event\":\"destroyed\",\"name\":\"" + kInvented + "\""};
}

RunResult verify(const AuditScenario& s, const std::string& file, bool allow_pending = false) {
  std::vector<std::string> args = {"audit", "verify"};
  if (allow_pending) args.push_back("--allow-pending");
  args.push_back(file);
  return s.ctl(args);
}

// The verdict: exit code, and stderr's first line "keysvcctl: audit verify: FILE:LINE: REASON: ...".
void expect_verdict(const RunResult& r, int exit_code, const std::string& file, std::size_t line,
                    const std::string& reason, const std::string& step) {
  EXPECT_EQ(r.exit_code, std::optional<int>(exit_code)) << step << ": " << describe(r);
  const std::string head = "keysvcctl: audit verify: " + file + ":" + std::to_string(line) + ": " + reason + ": ";
  EXPECT_EQ(r.err.rfind(head, 0), 0u) << step << ": " << r.err;
  std::cout << "[audit-attack] " << test_name() << ", " << step << " (exit " << r.exit_code.value_or(-1)
            << "): " << r.err.substr(0, r.err.find('\n')) << "\n";
}

void expect_intact(const RunResult& r, const std::string& step) {
  EXPECT_EQ(r.exit_code, std::optional<int>(0)) << step << ": " << describe(r);
  EXPECT_EQ(r.out.rfind("intact: ", 0), 0u) << step << ": " << r.out;
  EXPECT_NE(r.out.find("anchored in the token"), std::string::npos) << step << ": " << r.out;
  std::cout << "[audit-attack] " << test_name() << ", " << step << " (exit 0): " << r.out;
}

// The attack: two hash-chained records for an invented name, dated before the
// record they follow. Verify sees the time going back at once; the next keysvcctl
// command does not seal over them, and verify names them for good.
TEST(AuditAttack, ForgedTailThenAnHonestKeysvcctlCommand) {
  AuditScenario s = scenario();
  ASSERT_FALSE(s.generate().empty());
  const std::size_t sealed = lines_of(s.ctl_log()).size();
  forge(s.ctl_log(), invented_generation(), last_ts(s.ctl_log()) - 60'000);
  expect_verdict(verify(s, s.ctl_log()), 1, s.ctl_log(), sealed + 1, "reordered", "forged tail");
  ASSERT_FALSE(s.generate().empty());  // an honest command reopens the file
  expect_verdict(verify(s, s.ctl_log()), 1, s.ctl_log(), sealed + 1, "unverified_tail", "then keys generate");
  const Json start = Json::parse(lines_of(s.ctl_log())[sealed + 2]);
  EXPECT_EQ(start["event"], "chain_start");
  EXPECT_EQ(start["found"]["reason"], "unsealed");
  EXPECT_EQ(start["found"]["lines"], 2);
}

// The same with a server: its restart finds the forged records after its anchored seal.
TEST(AuditAttack, ForgedTailThenAServerRestart) {
  AuditScenario s = scenario();
  ASSERT_FALSE(s.generate().empty());
  s.start_server()->stop();
  const std::size_t sealed = lines_of(s.server_log()).size();
  forge(s.server_log(), invented_generation(), last_ts(s.server_log()) + 10);
  // Dated after the seal: nothing but the next seal could tell them from a running server's.
  expect_verdict(verify(s, s.server_log()), 3, s.server_log(), sealed + 1, "unsealed_tail", "forged tail");
  s.start_server()->stop();
  expect_verdict(verify(s, s.server_log()), 1, s.server_log(), sealed + 1, "unverified_tail", "then a restart");
}

// A config whose PIN is wrong: keysvcctl's login fails and it records that.
std::string wrong_pin_config(const AuditScenario& s) {
  const std::string dir = keysvc::test::TestToken::get().dir();
  keysvc::test::write_test_file(dir + "/wrong-pin", "not-the-pin\n", 0600);
  std::string text = std::regex_replace(read_file(s.config()), std::regex("pin = \"file:pin\""),
                                        "pin = \"file:wrong-pin\"");
  const std::string path = dir + "/keysvc-wrong-pin-" + test_name() + ".toml";
  keysvc::test::write_test_file(path, text, 0600);
  return path;
}

TEST(AuditAttack, FailedLoginIsSealedByTheNextCommandThatReachesTheToken) {
  AuditScenario s = scenario();
  ASSERT_FALSE(s.generate().empty());
  const std::size_t sealed = lines_of(s.ctl_log()).size();
  RunResult failed = keysvc::test::run({KEYSVCCTL_BIN, "--config", wrong_pin_config(s), "status"}, "",
                                       std::chrono::seconds(60));
  ASSERT_EQ(failed.exit_code, std::optional<int>(1)) << describe(failed);
  ASSERT_NE(read_file(s.ctl_log()).find("\"event\":\"login_failed\""), std::string::npos);
  RunResult pending = verify(s, s.ctl_log());
  expect_verdict(pending, 3, s.ctl_log(), sealed + 1, "unsealed_tail", "after a failed login");
  EXPECT_NE(pending.err.find("written by a writer without the token"), std::string::npos) << pending.err;
  RunResult status = s.ctl({"status"});  // reaches the token: seals what the failed one wrote
  ASSERT_EQ(status.exit_code, std::optional<int>(0)) << describe(status);
  expect_intact(verify(s, s.ctl_log()), "then status");
  EXPECT_NE(read_file(s.ctl_log()).find("\"event\":\"reopened\",\"anchored\":" + std::to_string(sealed) +
                                        ",\"verified\":" + std::to_string(sealed) + ",\"vouched\":2"),
            std::string::npos)
      << read_file(s.ctl_log());
}

TEST(AuditAttack, DeletedUnsealedLoginFailedRecord) {
  AuditScenario s = scenario();
  ASSERT_FALSE(s.generate().empty());
  const std::vector<std::string> before = lines_of(s.ctl_log());
  RunResult failed = keysvc::test::run({KEYSVCCTL_BIN, "--config", wrong_pin_config(s), "status"}, "",
                                       std::chrono::seconds(60));
  ASSERT_EQ(failed.exit_code, std::optional<int>(1)) << describe(failed);
  write_lines(s.ctl_log(), before, before.size());  // the login_failed record and its config_loaded go
  expect_verdict(verify(s, s.ctl_log()), 1, s.ctl_log(), before.size() + 1, "deleted", "login_failed deleted");
  RunResult status = s.ctl({"status"});
  ASSERT_EQ(status.exit_code, std::optional<int>(0)) << describe(status);
  expect_verdict(verify(s, s.ctl_log()), 1, s.ctl_log(), before.size() + 1, "deleted", "then status");
}

// A log from before anchors, upgraded by this version's keysvcctl, cut in front of one of
// its chain_start records (the old writer wrote one per run): the upgraded chain says how
// many lines came before it.
TEST(AuditAttack, PrefixCutAtAChainStart) {
  AuditScenario s = scenario();
  {
    auto gateway = keysvc::TokenGateway::open(keysvc::test::TestToken::get().config());
    const auto hour_ago = std::chrono::system_clock::now() - std::chrono::hours(1);
    keysvc::test::write_legacy_log(*gateway, s.ctl_log(), 3,
                                   std::chrono::duration_cast<std::chrono::milliseconds>(hour_ago.time_since_epoch()).count());
  }
  RunResult legacy = verify(s, s.ctl_log());
  EXPECT_EQ(legacy.exit_code, std::optional<int>(0)) << describe(legacy);
  EXPECT_NE(legacy.out.find("not checked: a log from before anchors"), std::string::npos) << legacy.out;
  std::cout << "[audit-attack] " << test_name() << ", legacy log (exit 0): " << legacy.out;
  ASSERT_FALSE(s.generate().empty());  // upgrades it: a chain anchored after the legacy lines
  ASSERT_FALSE(s.generate().empty());
  expect_intact(verify(s, s.ctl_log()), "upgraded");
  const std::vector<std::string> ls = lines_of(s.ctl_log());
  std::size_t third_start = 0;
  for (std::size_t k = 0, n = 0; k < ls.size(); ++k)
    if (ls[k].find("\"event\":\"chain_start\"") != std::string::npos && ++n == 3) third_start = k;
  ASSERT_GT(third_start, 0u);
  write_lines(s.ctl_log(), std::vector<std::string>(ls.begin() + static_cast<long>(third_start), ls.end()), ls.size());
  expect_verdict(verify(s, s.ctl_log()), 1, s.ctl_log(), 1, "deleted", "cut before the third chain_start");

  // This version's file: one chain_start, then a reopened record per run; cut at one.
  AuditScenario t = AuditScenario("audit_attack/PrefixCutAtAReopenedRecord", KEYSVCCTL_BIN, KEYSVC_TLS_SERVER_BIN, {});
  ASSERT_FALSE(t.generate().empty());
  ASSERT_FALSE(t.generate().empty());
  const std::vector<std::string> ts = lines_of(t.ctl_log());
  std::size_t reopened = 0;
  while (reopened < ts.size() && ts[reopened].find("\"event\":\"reopened\"") == std::string::npos) ++reopened;
  ASSERT_LT(reopened, ts.size());
  write_lines(t.ctl_log(), std::vector<std::string>(ts.begin() + static_cast<long>(reopened), ts.end()), ts.size());
  expect_verdict(verify(t, t.ctl_log()), 1, t.ctl_log(), 1, "deleted", "cut before a reopened record");
}

// A log from before anchors, put back in place after this version's keysvcctl upgraded it:
// its own seals verify, but the token anchors a chain for this file that it does not hold.
TEST(AuditAttack, RollbackToACopyFromBeforeAnchors) {
  AuditScenario s = scenario();
  {
    auto gateway = keysvc::TokenGateway::open(keysvc::test::TestToken::get().config());
    const auto hour_ago = std::chrono::system_clock::now() - std::chrono::hours(1);
    keysvc::test::write_legacy_log(*gateway, s.ctl_log(), 2,
                                   std::chrono::duration_cast<std::chrono::milliseconds>(hour_ago.time_since_epoch()).count());
  }
  const std::string legacy = s.dir() + "/legacy-copy.jsonl";
  fs::copy_file(s.ctl_log(), legacy);
  ASSERT_FALSE(s.generate().empty());
  fs::copy_file(legacy, s.ctl_log(), fs::copy_options::overwrite_existing);
  expect_verdict(verify(s, s.ctl_log()), 1, s.ctl_log(), 1, "truncated", "the legacy copy put back");
}

TEST(AuditAttack, TruncationAfterTheFirstOfSeveralSeals) {
  AuditScenario s = scenario();
  for (int k = 0; k < 3; ++k) ASSERT_FALSE(s.generate().empty());
  const std::vector<std::string> ls = lines_of(s.ctl_log());
  std::size_t first_seal = 0;
  while (first_seal < ls.size() && ls[first_seal].find("\"event\":\"seal\"") == std::string::npos) ++first_seal;
  ASSERT_LT(first_seal + 1, ls.size());
  write_lines(s.ctl_log(), ls, first_seal + 1);
  expect_verdict(verify(s, s.ctl_log()), 1, s.ctl_log(), first_seal + 2, "truncated", "cut after the first seal");
}

TEST(AuditAttack, RollbackToACopyTakenEarlier) {
  AuditScenario s = scenario();
  ASSERT_FALSE(s.generate().empty());
  const std::string copy = s.dir() + "/copy.jsonl";
  fs::copy_file(s.ctl_log(), copy);
  const std::size_t copied = lines_of(copy).size();
  ASSERT_FALSE(s.generate().empty());
  ASSERT_FALSE(s.generate().empty());
  fs::copy_file(copy, s.ctl_log(), fs::copy_options::overwrite_existing);
  expect_verdict(verify(s, s.ctl_log()), 1, s.ctl_log(), copied + 1, "truncated", "rolled back");
  ASSERT_FALSE(s.generate().empty());  // the next writer finds it rolled back, and says so
  expect_verdict(verify(s, s.ctl_log()), 1, s.ctl_log(), copied + 1, "truncated", "then keys generate");
}

// A second token in the same SoftHSM, with its own keysvcctl writer.
std::string other_token_config(const AuditScenario& s) {
  const std::string dir = keysvc::test::TestToken::get().dir();
  const std::string pin = keysvc::test::random_text(16), so_pin = keysvc::test::random_text(16);
  keysvc::test::remember_secret_text(pin);
  keysvc::test::remember_secret_text(so_pin);
  keysvc::test::write_test_file(dir + "/other-pin", pin + "\n", 0600);
  keysvc::test::write_test_file(dir + "/other-so-pin", so_pin + "\n", 0600);
  RunResult init = keysvc::test::run({KEYSVCCTL_BIN, "token", "init", "--module", keysvc::test::kSoftHsmModule,
                                      "--label", "keysvc-other", "--pin-source", "file:" + dir + "/other-pin",
                                      "--so-pin-source", "file:" + dir + "/other-so-pin"},
                                     "", std::chrono::seconds(60));
  EXPECT_EQ(init.exit_code, std::optional<int>(0)) << describe(init);
  std::string text = read_file(s.config());
  text = std::regex_replace(text, std::regex("token = \"[^\"]*\""), "token = \"pkcs11:token=keysvc-other\"");
  text = std::regex_replace(text, std::regex("pin = \"file:pin\""), "pin = \"file:other-pin\"");
  text = std::regex_replace(text, std::regex("path = \"[^\"]*\""), "path = \"" + s.dir() + "/other/audit.jsonl\"");
  fs::create_directories(s.dir() + "/other");
  const std::string path = dir + "/keysvc-other-token.toml";
  keysvc::test::write_test_file(path, text, 0600);
  return path;
}

TEST(AuditAttack, FileCopiedFromAnotherTokensWriter) {
  AuditScenario s = scenario();
  ASSERT_FALSE(s.generate().empty());
  const std::string other = other_token_config(s);
  RunResult made = keysvc::test::run({KEYSVCCTL_BIN, "--config", other, "keys", "generate"}, "",
                                     std::chrono::seconds(60));
  ASSERT_EQ(made.exit_code, std::optional<int>(0)) << describe(made);
  const std::string theirs = s.dir() + "/other/audit-keysvcctl.jsonl";
  RunResult own = keysvc::test::run({KEYSVCCTL_BIN, "--config", other, "audit", "verify", theirs}, "",
                                    std::chrono::seconds(60));
  EXPECT_EQ(own.exit_code, std::optional<int>(0)) << "intact with its own token: " << describe(own);
  fs::copy_file(theirs, s.ctl_log(), fs::copy_options::overwrite_existing);
  expect_verdict(verify(s, s.ctl_log()), 1, s.ctl_log(), 1, "foreign", "another token's file in place");
}

TEST(AuditAttack, FileCopiedFromAnotherWriterOfTheSameToken) {
  AuditScenario s = scenario();
  ASSERT_FALSE(s.generate().empty());
  s.start_server()->stop();
  expect_intact(verify(s, s.server_log()), "the server's file");
  fs::copy_file(s.server_log(), s.ctl_log(), fs::copy_options::overwrite_existing);
  expect_verdict(verify(s, s.ctl_log()), 1, s.ctl_log(), 1, "foreign", "the server's file as keysvcctl's");
}

// A running writer's records after its last seal can be rewritten by whoever can write
// the file (nothing seals them yet), but not out of time order.
TEST(AuditAttack, TimestampsSwapped) {
  AuditScenario s = scenario();
  auto gateway = keysvc::TokenGateway::open(keysvc::test::TestToken::get().config());
  const std::string file = s.dir() + "/running.jsonl";
  audit::AuditLog running(file, audit::token_sealer(*gateway), {});
  running.append_durable(audit::ConfigLoaded{"/etc/keysvc/keysvc.toml"});
  running.seal();
  for (int k = 0; k < 3; ++k) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // distinct times
    running.append_durable(audit::HsmError{"C_Sign", "CKR_DEVICE_ERROR", 1});
  }
  RunResult before = verify(s, file, true);
  EXPECT_EQ(before.exit_code, std::optional<int>(0)) << "pending, accepted: " << describe(before);
  // Swap the times of the last two records and chain the rest again.
  std::vector<std::string> ls = lines_of(file);
  const std::size_t a = ls.size() - 2, b = ls.size() - 1;
  Json ja = Json::parse(ls[a]), jb = Json::parse(ls[b]);
  const std::string ta = ja["ts"], tb = jb["ts"];
  ASSERT_NE(ta, tb);
  ls[a].replace(ls[a].find(ta), ta.size(), tb);
  ls[b].replace(ls[b].find(tb), tb.size(), ta);
  const std::string old_prev = keysvc::to_hex(audit::sha256(lines_of(file)[a]));
  ls[b].replace(ls[b].find(old_prev), old_prev.size(), keysvc::to_hex(audit::sha256(ls[a])));
  const std::string copy = s.dir() + "/swapped.jsonl";
  write_lines(copy, ls, ls.size());
  expect_verdict(verify(s, copy, true), 1, copy, b + 1, "reordered", "times swapped in the pending tail");
}

// Nothing touched: a server, keysvcctl generating, rotating and revoking while it runs.
TEST(AuditAttack, UntouchedMultiWriterRunVerifies) {
  AuditScenario s = scenario();
  const std::string first = s.generate();
  ASSERT_FALSE(first.empty());
  auto server = s.start_server();
  s.full_handshakes(server->port(), 2);
  ASSERT_FALSE(s.generate_successor().empty());
  RunResult rotate = s.ctl({"rotate"});
  EXPECT_EQ(rotate.exit_code, std::optional<int>(0)) << describe(rotate);
  RunResult revoke = s.ctl({"keys", "revoke", first});
  EXPECT_EQ(revoke.exit_code, std::optional<int>(0)) << describe(revoke);
  s.full_handshakes(server->port(), 2);
  server->stop();
  expect_intact(verify(s, s.server_log()), "the server's file");
  expect_intact(verify(s, s.ctl_log()), "keysvcctl's file");
  // Both writers' files at once: each chain on its own, one line each.
  RunResult both = s.ctl({"audit", "verify", s.server_log(), s.ctl_log()});
  EXPECT_EQ(both.exit_code, std::optional<int>(0)) << describe(both);
  EXPECT_EQ(keysvc::test::count_lines(both.out), 2u) << both.out;
  EXPECT_EQ(both.out.rfind(s.server_log() + ": intact: ", 0), 0u) << both.out;
  EXPECT_NE(both.out.find("\n" + s.ctl_log() + ": intact: "), std::string::npos) << both.out;
  std::cout << "[audit-attack] " << test_name() << ", both files (exit 0):\n" << both.out;
  RunResult report = s.ctl({"audit", "report", "--json", s.server_log(), s.ctl_log()}, false);
  EXPECT_EQ(report.exit_code, std::optional<int>(0)) << describe(report);
}

}  // namespace
