#include "keysvc/audit_log.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <regex>
#include <thread>

#include "audit_test_log.h"
#include "keysvc/audit_report.h"
#include "keysvc/audit_verify.h"
#include "keysvc/hsm/object.h"
#include "keysvc/ticket_key_service.h"
#include "test_helpers.h"

namespace keysvc::audit {
namespace {

namespace fs = std::filesystem;
using test::lines_of;
using test::slurp;

class AuditLogTest : public test::AuditTokenTest {
 protected:
  void SetUp() override { make_dir("audit-log-"); }
  static AuditLog::Options quiet() {
    AuditLog::Options o;
    return o;
  }
};

TEST_F(AuditLogTest, RecordsChainAndCarryTheCommonFields) {
  auto w = test::write_realistic_log(*gateway_, dir_);
  auto ls = lines_of(slurp(w.files[0]));
  ASSERT_GE(ls.size(), 10u);
  const std::regex common(
      R"re(^\{"seq":(\d+),"ts":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z","host":"test-host","pid":(\d+),"event":"([a-z_]+)".*,"prev":"([0-9a-f]{64})"\}$)re");
  std::string prev_hash(64, '0');
  for (std::size_t k = 0; k < ls.size(); ++k) {
    std::smatch m;
    ASSERT_TRUE(std::regex_match(ls[k], m, common)) << ls[k];
    EXPECT_EQ(std::stoull(m[1]), k + 1);
    EXPECT_EQ(std::stoll(m[2]), static_cast<long long>(::getpid()));
    EXPECT_EQ(m[4].str(), prev_hash) << "line " << k + 1;
    prev_hash = to_hex(sha256(ls[k]));
  }
  const std::regex start(R"re(.*"event":"chain_start","chain":"([0-9a-f]{32})","writer":"server","file":"([^"]+)","prev_file":"","prev_seq":0,"prev":"0{64}"\}$)re");
  std::smatch m;
  ASSERT_TRUE(std::regex_match(ls.front(), m, start)) << ls.front();
  const std::string chain = m[1];
  EXPECT_EQ(m[2].str(), w.files[0]);
  EXPECT_NE(ls.back().find("\"event\":\"seal\",\"chain\":\"" + chain + "\",\"sealed\":" + std::to_string(ls.size() - 1) +
                           ",\"head\":\"" + to_hex(sha256(ls[ls.size() - 2])) + "\""),
            std::string::npos)
      << ls.back();
  std::string all = slurp(w.files[0]);
  for (const char* e : {"config_loaded", "generation_created", "activated", "decrypt_only", "revoked", "destroyed",
                        "hsm_error", "login_failed", "usage"})
    EXPECT_NE(all.find(std::string("\"event\":\"") + e + "\""), std::string::npos) << e;
  EXPECT_NE(all.find("\"held_in_token\":true"), std::string::npos);
  EXPECT_NE(all.find("\"rejected\":{\"unknown_key\":2,"), std::string::npos);
}

TEST_F(AuditLogTest, DurableAppendIsInTheFileWhenItReturns) {
  AuditLog log(dir_ + "/a.log", token_sealer(*gateway_), quiet());
  for (int k = 0; k < 200; ++k) log.append(ConfigLoaded{"/p" + std::to_string(k)});
  auto seq = log.append_durable(Revoked{KeyName{1}});
  auto ls = lines_of(slurp(dir_ + "/a.log"));
  ASSERT_EQ(ls.size(), seq);
  EXPECT_NE(ls.back().find("\"event\":\"revoked\""), std::string::npos);
  EXPECT_EQ(log.head().seq, seq);
  EXPECT_EQ(log.head().hash, sha256(ls.back()));
}

TEST_F(AuditLogTest, NeverWritesThePinOrKeyBytes) {
  // A ticket key with a value the test knows, logged as a generation.
  std::vector<std::uint8_t> value(32);
  for (std::size_t k = 0; k < value.size(); ++k) value[k] = static_cast<std::uint8_t>(0xa0 + k);
  KeyName name{};
  name.fill(0x42);
  GenerationCreated g;
  gateway_->call([&](hsm::Session& s) {
    CK_OBJECT_HANDLE h = hsm::import_hmac_key(s, std::vector<std::uint8_t>(name.begin(), name.end()), "t", value);
    g.enc = g.mac = hsm::read_custody(s, h);
    hsm::destroy_object(s, h);
    return 0;
  });
  g.name = name;
  {
    AuditLog log(dir_ + "/s.log", token_sealer(*gateway_), quiet());
    log.append(g);
    log.append(LoginFailed{"keysvc-test", "CKR_PIN_INCORRECT"});
    log.append(HsmError{"C_Login", "CKR_PIN_INCORRECT"});
    log.append(ConfigLoaded{test::TestToken::get().config_path()});
  }
  std::string all = slurp(dir_ + "/s.log");
  const std::string& pin = test::TestToken::get().pin();
  EXPECT_EQ(all.find(pin), std::string::npos);
  EXPECT_EQ(all.find(std::string(value.begin(), value.end())), std::string::npos);
  EXPECT_EQ(all.find(to_hex(value)), std::string::npos);
  EXPECT_EQ(all.find(to_hex(std::span<const std::uint8_t>(value).subspan(0, 8))), std::string::npos);
  EXPECT_NE(all.find(to_hex(name)), std::string::npos);  // the name is public
}

TEST_F(AuditLogTest, SealsAndSummarisesUsageWhenAsked) {
  // The usage source AuditTrail gives a server: the differences of a UsageTable.
  UsageTable table;
  UsageSnapshot last;
  AuditLog::Options o;
  o.usage_source = [&table, &last] {
    UsageSnapshot now = table.snapshot();
    UsageSummary s;
    for (const auto& k : usage_delta(now, last).keys) s.keys[k.name] = k.counters;
    last = std::move(now);
    return s;
  };
  KeyName a{};
  a.fill(1);
  const std::string path = dir_ + "/p.log";
  {
    AuditLog log(path, token_sealer(*gateway_), o);
    for (int k = 0; k < 7; ++k) table.record(a, Outcome::kIssued);
    table.record(a, Outcome::kMacFailure, 3);
    log.summarize();  // what the maintenance thread does every audit.summary_interval ...
    log.seal();       // ... and every audit.seal_interval
    EXPECT_GT(test::line_with(path, "\"event\":\"usage\""), 0u);
    EXPECT_GT(test::line_with(path, "\"event\":\"seal\""), 0u) << "sealed before close";
    table.record(a, Outcome::kResumed, 2);  // only in the summary written at close
  }
  auto r = verify({path}, token_keyed_hmac(*gateway_));
  EXPECT_TRUE(r.ok) << r.detail;
  Report rep = report({path}, {});
  ASSERT_EQ(rep.keys.size(), 1u);
  EXPECT_EQ(rep.keys[0].totals[0], 7u);
  EXPECT_EQ(rep.keys[0].totals[1], 2u);
  EXPECT_EQ(rep.keys[0].totals[static_cast<std::size_t>(Outcome::kMacFailure)], 3u);
}

TEST_F(AuditLogTest, HandshakeRecordsOnlyWhenAskedFor) {
  KeyName a{};
  {
    AuditLog log(dir_ + "/h.log", token_sealer(*gateway_), quiet());
    EXPECT_EQ(log.append(Handshake{a, Outcome::kResumed}), 0u);
  }
  EXPECT_EQ(test::line_with(dir_ + "/h.log", "handshake"), 0u);
  auto o = quiet();
  o.per_handshake = true;
  {
    AuditLog log(dir_ + "/h2.log", token_sealer(*gateway_), o);
    EXPECT_EQ(log.append(Handshake{a, Outcome::kResumed}), 2u);
  }
  EXPECT_GT(test::line_with(dir_ + "/h2.log", "\"event\":\"handshake\",\"name\":\"" + to_hex(a) + "\",\"outcome\":\"resumed\""), 0u);
}

TEST_F(AuditLogTest, RotateContinuesTheChainAndEachFileHasItsAnchor) {
  const std::string p1 = dir_ + "/r.log", p2 = dir_ + "/r.log.1", p3 = dir_ + "/r.log.2";
  {
    AuditLog log(p1, token_sealer(*gateway_), quiet());
    log.append(ConfigLoaded{"a"});
    log.rotate(p2);
    EXPECT_EQ(log.path(), p2);
    log.append(ConfigLoaded{"b"});
    log.rotate(p3);
    log.append(ConfigLoaded{"c"});
  }
  auto l1 = lines_of(slurp(p1)), l2 = lines_of(slurp(p2));
  ASSERT_EQ(l1.size(), 3u);  // chain_start, config_loaded, seal
  EXPECT_NE(l2[0].find("\"prev_file\":\"" + p1 + "\",\"prev_seq\":3,\"prev\":\"" + to_hex(sha256(l1[2])) + "\""),
            std::string::npos)
      << l2[0];
  EXPECT_NE(l2[1].find("\"event\":\"seal\""), std::string::npos) << "a new file is sealed at once: " << l2[1];
  const TokenView view = token_view(*gateway_, AuditConfig{});
  auto r = verify({p1, p2, p3}, view);
  EXPECT_TRUE(r.ok) << r.first_bad_file << ":" << r.first_bad_line << " " << r.detail;
  EXPECT_EQ(r.last_seq, 11u);
  EXPECT_TRUE(r.anchored);
  for (const auto& alone : {p1, p3}) {
    auto one = verify({alone}, view);
    EXPECT_TRUE(one.ok && one.anchored) << alone << ": " << one.first_bad_line << " " << one.detail;
  }
  auto gap = verify({p1, p3}, view);
  EXPECT_EQ(gap.reason, Failure::kDeleted) << gap.detail;
  EXPECT_EQ(gap.first_bad_file, p3);
}

TEST_F(AuditLogTest, ReopeningTheSameFileContinuesItsChain) {
  const std::string p = dir_ + "/same.log";
  for (int run = 0; run < 3; ++run) {
    AuditLog log(p, token_sealer(*gateway_), quiet());
    log.append(ConfigLoaded{"run " + std::to_string(run)});
  }
  auto r = verify({p}, token_keyed_hmac(*gateway_));
  EXPECT_TRUE(r.ok) << r.first_bad_line << " " << r.detail;
  EXPECT_EQ(r.last_seq, 9u);
  EXPECT_EQ(r.seals, 3u);
}

// What a seal costs in the token, counted from the module's call statistics (no other
// thread uses the token meanwhile): the MAC (C_SignInit + C_Sign on the audit key's kept
// handle) and the anchor's update. SoftHSM never lets a data object's value change
// (C_SetAttributeValue answers CKR_ATTRIBUTE_READ_ONLY, once), so the anchor is replaced:
// C_CreateObject of the new value, C_DestroyObject of the old.
TEST_F(AuditLogTest, ASealIsFourTokenCallsOnSoftHsm) {
  // PKCS#11 calls since `before`, per function, and their text.
  using Counts = std::map<std::string, std::uint64_t>;
  auto counts = [&] {
    Counts m;
    for (const auto& c : gateway_->call_stats().snapshot()) m[std::string(hsm::call_name(c.call))] = c.count;
    return m;
  };
  auto since = [&](const Counts& before, std::uint64_t& total) {
    Counts d;
    total = 0;
    for (const auto& [name, n] : counts())
      if (std::uint64_t k = n - (before.count(name) ? before.at(name) : 0)) {
        d[name] = k;
        total += k;
      }
    return d;
  };
  auto text = [](const Counts& d) {
    std::string t;
    for (const auto& [name, n] : d) t += " " + name + " " + std::to_string(n);
    return t;
  };
  AuditLog log(dir_ + "/cost.log", token_sealer(*gateway_), quiet());
  log.append(ConfigLoaded{"first"});
  log.seal();  // the first seal finds the key and the anchor
  const Counts before = counts();
  constexpr int kSeals = 20;
  for (int k = 0; k < kSeals; ++k) {
    log.append(ConfigLoaded{"seal " + std::to_string(k)});
    log.seal();
  }
  std::uint64_t total = 0;
  Counts per_call = since(before, total);
  std::cout << "[audit-seal-cost] " << kSeals << " seals:" << text(per_call) << " ("
            << static_cast<double>(total) / kSeals << " PKCS#11 calls per seal)\n";
  EXPECT_EQ(total, 4u * kSeals) << text(per_call);
  for (const char* call : {"C_SignInit", "C_Sign", "C_CreateObject", "C_DestroyObject"})
    EXPECT_EQ(per_call[call], static_cast<std::uint64_t>(kSeals)) << call << ":" << text(per_call);
  log.close();
  EXPECT_TRUE(verify({dir_ + "/cost.log"}, token_view(*gateway_, AuditConfig{})).ok);

  // Reopening the file: the slot's anchor and pending mark, in one trip to the token.
  Sealer sealer = token_sealer(*gateway_);
  const Counts at_open = counts();
  std::uint64_t open_calls = 0;
  Counts open_per_call;
  {
    AuditLog again(dir_ + "/cost.log", sealer, quiet());
    open_per_call = since(at_open, open_calls);
  }
  std::cout << "[audit-seal-cost] reopening a file:" << text(open_per_call) << " (" << open_calls
            << " PKCS#11 calls)\n";
  EXPECT_LE(open_calls, 9u) << text(open_per_call);
}

TEST_F(AuditLogTest, EscapesStrings) {
  {
    AuditLog log(dir_ + "/e.log", token_sealer(*gateway_), quiet());
    log.append(ConfigLoaded{std::string("a\"b\\c\nd\x01\xff", 9)});
  }
  auto ls = lines_of(slurp(dir_ + "/e.log"));
  ASSERT_EQ(ls.size(), 3u);
  EXPECT_NE(ls[1].find(R"re("path":"a\"b\\c\u000ad\u0001\u00ff")re"), std::string::npos) << ls[1];
  EXPECT_TRUE(verify({dir_ + "/e.log"}, token_keyed_hmac(*gateway_)).ok);
}

}  // namespace
}  // namespace keysvc::audit
