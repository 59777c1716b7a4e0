// `keysvcctl audit report`'s lifecycle anomalies on real audit files: keysvcctl changes
// the token while a keysvc-tls-server that does not rescan it (refresh_interval 1 h) keeps
// issuing tickets under the generation it started with (audit_scenario.h).
//
//   used_after_revocation      only for usage periods that start after the revocation
//                              (a period spanning it is not evidence); the server uses
//                              session copies of the keys, which the revocation (it
//                              destroys the token's keys) does not reach
//   issued_after_decrypt_only  tickets issued in periods that start after the generation
//                              stopped encrypting (keysvcctl's `keys generate`)
//
// The expected counts come from the server's own usage records: the sum over the records
// whose period starts after keysvcctl's lifecycle record.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "audit_report.h"
#include "audit_scenario.h"
#include "keysvc/audit_log.h"
#include "keysvc/config.h"

namespace {

using keysvc::test::AuditScenario;
using keysvc::test::describe;
using keysvc::test::read_file;
using keysvc::test::RunResult;
using Json = nlohmann::json;

std::string test_name() { return ::testing::UnitTest::GetInstance()->current_test_info()->name(); }

AuditScenario scenario(AuditScenario::Options options) {
  return AuditScenario("audit_anomaly/" + test_name(), KEYSVCCTL_BIN, KEYSVC_TLS_SERVER_BIN, options);
}

// The report's anomalies of `kind` for `name`: their summed count, or -1 if there is none.
long long anomaly_count(const Json& report, const std::string& kind, const std::string& name) {
  long long n = -1;
  for (const auto& a : report["anomalies"])
    if (a["kind"] == kind && a["name"] == name) n = (n < 0 ? 0 : n) + a["count"].get<long long>();
  return n;
}

Json report_json(const AuditScenario& s, std::vector<std::string> files) {
  files.insert(files.begin(), {"audit", "report", "--json"});
  RunResult r = s.ctl(files, /*with_config=*/false);
  EXPECT_EQ(r.exit_code, std::optional<int>(0)) << describe(r);
  return Json::parse(r.out, nullptr, false);
}

// Sum of `name`'s issued (+ resumed, with `resumed`) over usage records starting after `t`.
std::uint64_t used_in_periods_after(const AuditScenario& s, const std::string& name, std::int64_t t, bool resumed) {
  std::uint64_t n = 0;
  for (const Json& r : AuditScenario::records(s.server_log()))
    if (r["event"] == "usage" && AuditScenario::period_start(r) > t)
      n += AuditScenario::count(r, name, "issued") + (resumed ? AuditScenario::count(r, name, "resumed") : 0);
  return n;
}

TEST(AuditAnomaly, UseInAPeriodSpanningTheRevocationIsNotFlagged) {
  // One usage record, at shutdown: it spans the revocation, with uses on both sides.
  AuditScenario s = scenario({.summary_interval = "0", .seal_interval = "60s"});
  const std::string g1 = s.generate();
  ASSERT_FALSE(g1.empty());
  auto server = s.start_server();
  s.full_handshakes(server->port(), 2);
  RunResult revoke = s.ctl({"keys", "revoke", g1});
  ASSERT_EQ(revoke.exit_code, std::optional<int>(0)) << describe(revoke);
  s.full_handshakes(server->port(), 1);
  server->stop();

  for (const auto& order : {std::vector{s.server_log(), s.ctl_log()}, std::vector{s.ctl_log(), s.server_log()}}) {
    Json rep = report_json(s, order);
    ASSERT_TRUE(rep.is_object());
    // The two handshakes before the revocation (the server finds the keys gone at the
    // next one, rescans and issues under the replacement).
    const int per_handshake = keysvc::Config::load_file(s.config()).tickets.per_handshake;
    EXPECT_GE(keysvc::test::audit_report_field(rep.dump(2), g1, "issued"), 2 * per_handshake) << rep.dump(2);
    EXPECT_EQ(anomaly_count(rep, "used_after_revocation", g1), -1) << rep.dump(2);
    EXPECT_EQ(anomaly_count(rep, "issued_after_decrypt_only", g1), -1) << rep.dump(2);
  }
  for (const auto& file : {s.server_log(), s.ctl_log()}) {
    RunResult v = s.ctl({"audit", "verify", file});
    EXPECT_EQ(v.exit_code, std::optional<int>(0)) << describe(v);
  }
}

TEST(AuditAnomaly, UseInAPeriodStartingAfterTheRevocationIsFlagged) {
  // The server derives with session copies: it keeps using the revoked generation.
  AuditScenario s = scenario({.summary_interval = "1s", .session_copies = true});
  const std::string g1 = s.generate();
  ASSERT_FALSE(g1.empty());
  auto server = s.start_server();
  s.full_handshakes(server->port(), 1);
  RunResult revoke = s.ctl({"keys", "revoke", g1});
  ASSERT_EQ(revoke.exit_code, std::optional<int>(0)) << describe(revoke);
  const auto revoked = AuditScenario::event_time(s.ctl_log(), "revoked", g1);
  ASSERT_TRUE(revoked) << read_file(s.ctl_log());
  ASSERT_TRUE(s.wait_for_issued_after(server->port(), g1, *revoked)) << read_file(s.server_log());
  server->stop();

  const std::uint64_t after = used_in_periods_after(s, g1, *revoked, /*resumed=*/true);
  Json rep = report_json(s, {s.server_log(), s.ctl_log()});
  ASSERT_TRUE(rep.is_object());
  const long long issued = keysvc::test::audit_report_field(rep.dump(2), g1, "issued");
  ASSERT_GT(after, 0u);
  ASSERT_LT(static_cast<long long>(after), issued) << "the first handshake came before the revocation";
  EXPECT_EQ(anomaly_count(rep, "used_after_revocation", g1), static_cast<long long>(after)) << rep.dump(2);
  EXPECT_EQ(anomaly_count(rep, "issued_after_decrypt_only", g1), -1) << "revocation is the finding";
  // The text report names it too.
  RunResult text = s.ctl({"audit", "report", s.ctl_log(), s.server_log()}, false);
  EXPECT_NE(text.out.find("used_after_revocation " + g1 + ": " + std::to_string(after)), std::string::npos)
      << text.out;
}

TEST(AuditAnomaly, IssuingUnderADecryptOnlyGenerationIsFlagged) {
  AuditScenario s = scenario({.summary_interval = "1s"});
  const std::string g1 = s.generate();
  ASSERT_FALSE(g1.empty());
  auto server = s.start_server();
  s.full_handshakes(server->port(), 1);
  const std::string g2 = s.generate_successor();  // encrypts now: g1 becomes decrypt-only
  ASSERT_FALSE(g2.empty());
  const auto decrypt_only = AuditScenario::event_time(s.ctl_log(), "decrypt_only", g1);
  const auto activated = AuditScenario::event_time(s.ctl_log(), "activated", g2);
  ASSERT_TRUE(decrypt_only && activated) << read_file(s.ctl_log());
  ASSERT_TRUE(s.wait_for_issued_after(server->port(), g1, *decrypt_only)) << read_file(s.server_log());
  server->stop();

  const std::uint64_t after = used_in_periods_after(s, g1, *decrypt_only, /*resumed=*/false);
  Json rep = report_json(s, {s.ctl_log(), s.server_log()});
  ASSERT_TRUE(rep.is_object());
  ASSERT_GT(after, 0u);
  EXPECT_EQ(anomaly_count(rep, "issued_after_decrypt_only", g1), static_cast<long long>(after)) << rep.dump(2);
  EXPECT_EQ(anomaly_count(rep, "issued_after_decrypt_only", g2), -1) << rep.dump(2);
  EXPECT_EQ(anomaly_count(rep, "used_after_revocation", g1), -1) << rep.dump(2);

  // The text table has the activated and decrypt-only columns, with g1's times.
  RunResult text = s.ctl({"audit", "report", s.ctl_log(), s.server_log()}, false);
  ASSERT_EQ(text.exit_code, std::optional<int>(0)) << describe(text);
  const std::size_t header_at = text.out.find('\n') + 1;
  const std::string header = text.out.substr(header_at, text.out.find('\n', header_at) - header_at);
  EXPECT_NE(header.find("activated"), std::string::npos) << text.out;
  EXPECT_NE(header.find("decrypt-only"), std::string::npos) << text.out;
  const std::size_t row = text.out.find("\n" + g1);
  ASSERT_NE(row, std::string::npos) << text.out;
  const std::string g1_row = text.out.substr(row + 1, text.out.find('\n', row + 1) - row - 1);
  for (const auto& [event, at] : {std::pair{"activated", AuditScenario::event_time(s.ctl_log(), "activated", g1)},
                                  std::pair{"decrypt_only", decrypt_only}}) {
    ASSERT_TRUE(at) << event;
    EXPECT_NE(g1_row.find(keysvc::audit::iso8601_ms(*at)), std::string::npos) << event << ": " << g1_row;
  }
  EXPECT_NE(text.out.find("issued_after_decrypt_only " + g1 + ": " + std::to_string(after)), std::string::npos)
      << text.out;
}

}  // namespace
