// The audit trail across an HSM outage (keysvc-faultmod forwarding to the SoftHSM test
// token; docs/AUDIT.md, "When the HSM is away"): a process that lives through it seals
// what it wrote meanwhile soon after the HSM is back (the seal retry), not at its next
// seal_interval; a seal whose anchor update failed is taken by the next writer (its MAC
// shows it is the writer's own); a process that stops during an outage leaves records
// nobody can vouch for, and the next writer says so.
#include <gtest/gtest.h>

#include <filesystem>
#include <thread>

#include "fault_control.h"
#include "keysvc/audit_key.h"
#include "keysvc/audit_trail.h"
#include "keysvc/audit_verify.h"
#include "keysvc/maintenance.h"
#include "keysvc/token_gateway.h"
#include "test_token.h"

namespace keysvc::audit {
namespace {

using namespace std::chrono_literals;

class AuditOutage : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    faults_ = new test::FaultControl(test::TestToken::get().dir() + "/audit-outage-faults");
    faults_->export_env();
  }
  void SetUp() override {
    faults_->clear();
    test::TestToken::get().clear();
    dir_ = test::TestToken::get().dir() + "/audit-outage-" + test::random_text(6);
    std::filesystem::create_directories(dir_);
    config_ = test::TestToken::get().config();
    config_.hsm.module = test::FaultControl::module_path();
    config_.hsm.maintenance_timeout = 500ms;
    config_.hsm.breaker_backoff = 100ms;
    config_.audit.path = dir_ + "/audit.jsonl";
    config_.audit.seal_interval = std::chrono::hours(1);  // only the retry can seal soon
    config_.audit.summary_interval = std::chrono::seconds(0);
    config_.source = "/etc/keysvc/keysvc.toml";
  }
  void TearDown() override {
    faults_->clear();
    std::filesystem::remove_all(dir_);
  }
  // Verified on the test token directly (not through the faulty module).
  VerifyResult check() {
    auto gateway = TokenGateway::open(test::TestToken::get().config());
    return verify({config_.audit.path}, token_view(*gateway, config_.audit));
  }

  static test::FaultControl* faults_;
  std::string dir_;
  Config config_;
};
test::FaultControl* AuditOutage::faults_ = nullptr;

KeyName some_name() {
  KeyName n{};
  n.fill(0x5a);
  return n;
}

TEST_F(AuditOutage, RecordsWrittenDuringAnOutageAreSealedSoonAfterTheHsmIsBack) {
  auto gateway = TokenGateway::open(config_);
  auto trail = AuditTrail::open(config_, Writer::kServer, gateway.get());
  Maintenance maintenance;
  schedule(maintenance, config_.audit, [&] { return trail.get(); });
  maintenance.start();
  trail->lifecycle(Activated{some_name()});
  trail->seal();
  ASSERT_FALSE(trail->log().seal_due());
  faults_->set("C_Sign CKR_DEVICE_ERROR\n");  // the seal's MAC: nothing else signs here
  std::this_thread::sleep_for(10ms);          // the module looks at the file every 2 ms
  trail->lifecycle(Revoked{some_name()});     // written during the outage
  trail->seal();                              // the periodic seal fails: retried in 1 s, 2 s, ...
  EXPECT_TRUE(trail->log().seal_due());
  std::this_thread::sleep_for(1500ms);  // the outage goes on a while
  faults_->clear();
  const auto back = std::chrono::steady_clock::now();
  while (trail->log().seal_due() && std::chrono::steady_clock::now() - back < 10s)
    std::this_thread::sleep_for(50ms);
  EXPECT_FALSE(trail->log().seal_due()) << "not sealed within 10 s of the HSM's return (seal_interval is 1 h)";
  EXPECT_GE(faults_->stats().by_rule["C_Sign CKR_DEVICE_ERROR"], 1u);
  VerifyResult r = check();  // the writer still runs: everything it wrote is sealed
  EXPECT_TRUE(r.ok && r.anchored) << to_string(r.reason) << " at " << r.first_bad_line << ": " << r.detail;
  maintenance.stop();
  trail->close();
}

TEST_F(AuditOutage, ASealWhoseAnchorUpdateFailedIsTakenByTheNextWriter) {
  {
    auto gateway = TokenGateway::open(config_);
    auto trail = AuditTrail::open(config_, Writer::kServer, gateway.get());
    trail->lifecycle(Activated{some_name()});
    trail->seal();
    // SoftHSM's anchor is replaced by a new object at each seal: that fails now.
    faults_->set("C_CreateObject CKR_DEVICE_ERROR\n");
    std::this_thread::sleep_for(10ms);
    trail->lifecycle(Revoked{some_name()});
    trail->seal();  // the seal is written; the token is not told
    EXPECT_TRUE(trail->log().seal_due()) << "the anchor update is still due";
    trail->close();
  }
  faults_->clear();
  VerifyResult r = check();  // the token's anchor names the seal before: still there
  EXPECT_TRUE(r.ok) << to_string(r.reason) << ": " << r.detail;
  {
    auto gateway = TokenGateway::open(config_);
    AuditTrail::open(config_, Writer::kServer, gateway.get())->close();
  }
  r = check();
  EXPECT_TRUE(r.ok && r.anchored) << to_string(r.reason) << " at " << r.first_bad_line << ": " << r.detail;
  EXPECT_EQ(r.anchor_seal, r.last_seal_seq) << "the next writer moved the anchor to the last seal";
}

TEST_F(AuditOutage, AProcessThatStopsDuringAnOutageLeavesRecordsTheNextWriterReports) {
  std::size_t sealed_lines = 0;
  {
    auto gateway = TokenGateway::open(config_);
    auto trail = AuditTrail::open(config_, Writer::kServer, gateway.get());
    trail->lifecycle(Activated{some_name()});
    trail->seal();
    sealed_lines = static_cast<std::size_t>(trail->log().head().seq);
    faults_->set("C_Sign CKR_DEVICE_ERROR\n");
    std::this_thread::sleep_for(10ms);
    trail->lifecycle(Revoked{some_name()});
    trail->close();  // the final seal fails: nothing can vouch for the revoked record
  }
  faults_->clear();
  {
    auto gateway = TokenGateway::open(config_);
    AuditTrail::open(config_, Writer::kServer, gateway.get())->close();
  }
  VerifyResult r = check();
  EXPECT_EQ(r.reason, Failure::kUnverifiedTail) << r.detail;
  EXPECT_EQ(r.first_bad_line, sealed_lines + 1) << r.detail;
}

}  // namespace
}  // namespace keysvc::audit
