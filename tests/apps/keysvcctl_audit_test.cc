// keysvcctl audit verify / audit report, run as subprocesses against the test token, on
// logs this process writes through AuditLog (sealed with the token's audit key).
#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <regex>
#include <string>
#include <vector>

#include "audit_report.h"
#include "audit_test_log.h"
#include "keysvcctl_runner.h"
#include "keysvc/audit_key.h"
#include "keysvc/ticket_key_service.h"
#include "process.h"
#include "test_token.h"

namespace {

using keysvc::test::TestToken;
namespace fs = std::filesystem;

using keysvc::test::keysvcctl::Result;

// keysvcctl ARGS..., with the test token's config first unless `with_config` is false.
Result ctl(std::vector<std::string> args, bool with_config = true) {
  return with_config ? keysvc::test::keysvcctl::ctl_config(std::move(args))
                     : keysvc::test::keysvcctl::ctl(std::move(args));
}

class KeysvcctlAudit : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    TestToken::get().clear();
    gateway_ = keysvc::TokenGateway::open(TestToken::get().config()).release();
  }
  static void TearDownTestSuite() {
    delete gateway_;
    gateway_ = nullptr;
  }
  void SetUp() override {
    dir_ = TestToken::get().dir() + "/ctl-audit-" + ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::remove_all(dir_);
  }
  static keysvc::TokenGateway* gateway_;
  std::string dir_;
};
keysvc::TokenGateway* KeysvcctlAudit::gateway_ = nullptr;

TEST_F(KeysvcctlAudit, VerifyIntactLogExitsZero) {
  auto w = keysvc::test::write_realistic_log(*gateway_, dir_, true);
  Result r = ctl({"audit", "verify", w.files[0], w.files[1]});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("intact: "), std::string::npos) << r.out;
  EXPECT_TRUE(r.err.empty()) << r.err;
  Result j = ctl({"audit", "verify", "--json", w.files[0], w.files[1]});
  EXPECT_EQ(j.exit_code, 0) << j.err;
  EXPECT_NE(j.out.find("\"ok\": true"), std::string::npos) << j.out;
  EXPECT_NE(j.out.find("\"seals\": 4"), std::string::npos) << j.out;  // middle, rotation, new file, close
  EXPECT_NE(j.out.find("\"anchor\": {"), std::string::npos) << j.out;
}

TEST_F(KeysvcctlAudit, VerifyTamperedLogNamesTheLineOnOneLine) {
  auto w = keysvc::test::write_realistic_log(*gateway_, dir_);
  std::size_t line = keysvc::test::line_with(w.files[0], "\"issued\":5");
  auto ls = keysvc::test::lines_of(keysvc::test::slurp(w.files[0]));
  ls[line - 1].replace(ls[line - 1].find("\"issued\":5"), 10, "\"issued\":6");
  keysvc::test::spit(w.files[0], keysvc::test::join_lines(ls));
  Result r = ctl({"audit", "verify", w.files[0]});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(r.out.empty()) << r.out;
  EXPECT_EQ(keysvc::test::count_lines(r.err), 1u) << r.err;
  EXPECT_EQ(r.err.rfind("keysvcctl: audit verify: " + w.files[0] + ":" + std::to_string(line) + ": edited", 0), 0u)
      << r.err;

  ls[line - 1].replace(ls[line - 1].find("\"issued\":6"), 10, "\"issued\":5");
  keysvc::test::spit(w.files[0], keysvc::test::join_lines(ls));
  {
    // A writer that is running: its records after the last seal are pending (exit 3),
    // accepted with --allow-pending.
    keysvc::audit::AuditLog running(w.files[0], keysvc::audit::token_sealer(*gateway_), {});
    running.append_durable(keysvc::audit::ConfigLoaded{"/etc/keysvc/running.toml"});
    r = ctl({"audit", "verify", w.files[0]});
    EXPECT_EQ(r.exit_code, 3);
    EXPECT_NE(r.err.find(": unsealed_tail: "), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("intact and sealed up to seq "), std::string::npos) << r.err;
    r = ctl({"audit", "verify", "--allow-pending", w.files[0]});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out.rfind("pending: intact and sealed up to seq ", 0), 0u) << r.out;
  }
  // Without its final seal, the file ends before the seal the token's anchor names.
  ls = keysvc::test::lines_of(keysvc::test::slurp(w.files[0]));
  ls.pop_back();
  keysvc::test::spit(w.files[0], keysvc::test::join_lines(ls));
  r = ctl({"audit", "verify", "--allow-pending", w.files[0]});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err.rfind("keysvcctl: audit verify: " + w.files[0] + ":" + std::to_string(ls.size() + 1) + ": truncated: ",
                        0),
            0u)
      << r.err;
}

TEST_F(KeysvcctlAudit, VerifyUsageAndMissingFiles) {
  Result r = ctl({"audit", "verify"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  r = ctl({"audit", "verify", dir_ + "/nope.log"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("nope.log:1: malformed: cannot read the file (No such file or directory)"), std::string::npos)
      << r.err;
  r = ctl({"audit", "verify", "/etc/hostname"}, /*with_config=*/false);
  EXPECT_EQ(r.exit_code, 2) << "verify needs the token: " << r.err;
}

TEST_F(KeysvcctlAudit, ReportTotalsAndAnomalies) {
  auto w = keysvc::test::write_realistic_log(*gateway_, dir_, true);
  Result r = ctl({"audit", "report", "--json", w.files[0], w.files[1]}, /*with_config=*/false);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // Key a: issued 5, resumed 3+2, renewed 1+1, 3 refused as revoked; b: issued 4+2, resumed 1.
  std::string a = keysvc::to_hex(w.a), b = keysvc::to_hex(w.b);
  using keysvc::test::audit_report_field;
  EXPECT_EQ(audit_report_field(r.out, a, "issued"), 5) << r.out;
  EXPECT_EQ(audit_report_field(r.out, a, "resumed"), 5) << r.out;
  EXPECT_EQ(audit_report_field(r.out, a, "renewed"), 2) << r.out;
  EXPECT_EQ(audit_report_field(r.out, a, "revoked"), 3) << r.out;
  EXPECT_EQ(audit_report_field(r.out, b, "issued"), 6) << r.out;
  EXPECT_EQ(audit_report_field(r.out, b, "resumed"), 1) << r.out;
  EXPECT_EQ(audit_report_field(r.out, b, "renewed"), 0) << r.out;
  EXPECT_NE(r.out.find("\"kind\": \"unknown_key_name\""), std::string::npos);
  EXPECT_NE(r.out.find("\"kind\": \"ticket_under_revoked_key\""), std::string::npos);

  Result t = ctl({"audit", "report", w.files[0], w.files[1]}, false);
  EXPECT_EQ(t.exit_code, 0) << t.err;
  EXPECT_NE(t.out.find(a), std::string::npos);
  EXPECT_NE(t.out.find("anomalies:"), std::string::npos) << t.out;

  Result none = ctl({"audit", "report", "--json", "--since", "2999-01-01T00:00:00Z", w.files[0]}, false);
  EXPECT_EQ(none.exit_code, 0) << none.err;
  EXPECT_NE(none.out.find("\"records\": 0"), std::string::npos) << none.out;
  Result unix_since = ctl({"audit", "report", "--json", "--since", "0", "--until", "32503680000", w.files[0]}, false);
  EXPECT_EQ(unix_since.exit_code, 0) << unix_since.err;
  EXPECT_EQ(unix_since.out.find("\"records\": 0,"), std::string::npos) << unix_since.out;

  Result bad = ctl({"audit", "report", "--since", "yesterday", w.files[0]}, false);
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_EQ(keysvc::test::count_lines(bad.err), 1u) << bad.err;
}

// --html: without --config the seals are shown unchecked; with it, a tampered file's
// stretch after its last verified seal is shown broken. (Rendering in a browser:
// tests/interop/audit_html_test.cc.)
TEST_F(KeysvcctlAudit, ReportHtmlShowsWhatVerifySaid) {
  auto w = keysvc::test::write_realistic_log(*gateway_, dir_);
  const std::string html = dir_ + "/report.html";
  Result unchecked = ctl({"audit", "report", "--html", html, w.files[0]}, /*with_config=*/false);
  ASSERT_EQ(unchecked.exit_code, 0) << unchecked.err;
  std::string page = keysvc::test::slurp(html);
  EXPECT_NE(page.find("data-kind=\"unchecked\""), std::string::npos);
  EXPECT_EQ(page.find("data-verified=\"true\""), std::string::npos);
  EXPECT_NE(page.find("seals not checked in a token: run with --config"), std::string::npos);

  auto ls = keysvc::test::lines_of(keysvc::test::slurp(w.files[0]));
  std::size_t line = keysvc::test::line_with(w.files[0], "\"event\":\"revoked\"");
  ls[line - 1].insert(1, "\"x\":1,");
  keysvc::test::spit(w.files[0], keysvc::test::join_lines(ls));
  Result checked = ctl({"audit", "report", "--html", html, w.files[0]});
  ASSERT_EQ(checked.exit_code, 0) << checked.err;
  page = keysvc::test::slurp(html);
  EXPECT_NE(page.find("data-kind=\"covered\""), std::string::npos);
  EXPECT_NE(page.find("data-kind=\"broken\""), std::string::npos);
  EXPECT_NE(page.find("edited at line " + std::to_string(line)), std::string::npos);
  EXPECT_NE(page.find("id=\"r-0-" + std::to_string(line) + "\""), std::string::npos);

  Result both = ctl({"audit", "report", "--json", "--html", html, w.files[0]}, false);
  EXPECT_EQ(both.exit_code, 2) << both.err;
}

}  // namespace
