// An HSM that hangs (keysvc-faultmod's `hang` on C_Sign, forwarding to the SoftHSM test
// token) while keysvc audits every handshake: handshakes keep completing within the
// ticket deadline (full handshakes, no tickets) although the audit seal's HMAC hangs too;
// and a fork while the maintenance thread waits in that seal goes through, the child
// deriving its own keys once the HSM answers.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "fault_control.h"
#include "handshake_load.h"
#include "keysvc/audit_key.h"
#include "keysvc/audit_verify.h"
#include "keysvc/openssl/ticket_adapter.h"
#include "keysvc/token_gateway.h"
#include "process.h"
#include "test_token.h"
#include "tls_pair.h"

#if defined(__SANITIZE_THREAD__)
// The fork test's child starts threads, which ThreadSanitizer stops by default after a
// fork of a multi-threaded process (see fork_hooks_test.cc).
extern "C" const char* __tsan_default_options() { return "die_after_fork=0"; }
#endif

namespace keysvc {
namespace {

using namespace std::chrono_literals;
constexpr auto kCallTimeout = 200ms;

class HungHsm : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    faults_ = new test::FaultControl(test::TestToken::get().dir() + "/hung-faults");
    faults_->export_env();
  }
  void SetUp() override {
    faults_->clear();
    test::TestToken::get().clear();
    dir_ = test::TestToken::get().dir() + "/hung-" + test::random_text(6);
    std::filesystem::create_directories(dir_);
    config_ = test::TestToken::get().config();
    config_.hsm.module = test::FaultControl::module_path();
    config_.hsm.call_timeout = kCallTimeout;
    config_.hsm.maintenance_timeout = 500ms;
    config_.hsm.breaker_backoff = 100ms;
    config_.audit.path = dir_ + "/audit.jsonl";
    config_.audit.per_handshake = true;
    config_.audit.seal_interval = 1s;
    service_ = TicketKeyService::open(config_);
    server_ = test::make_server_ctx();
    openssl::install(server_.get(), service_);
  }
  void TearDown() override {
    faults_->clear();  // hung calls return before the service stops
    server_.reset();
    service_.reset();
  }
  void set(const std::string& rules) {
    faults_->set(rules);
    std::this_thread::sleep_for(10ms);  // the module looks at the file every 2 ms
  }
  // Forks a child that tries to issue a ticket every 20 ms for 10 s: exit 0 once it did,
  // 3 if it never could. Its own module state, its own sessions: it derives once the HSM
  // answers. Returns the child's pid (-1 if fork failed).
  pid_t fork_a_deriving_child() {
    const pid_t child = ::fork();
    if (child != 0) return child;
    for (int i = 0; i < 500; ++i) {
      IssueKeys keys;
      if (service_->derive_for_issue(keys)) ::_exit(0);
      std::this_thread::sleep_for(20ms);
    }
    ::_exit(3);
  }
  bool verifies() {
    auto gateway = TokenGateway::open(test::TestToken::get().config());
    auto r = audit::verify({config_.audit.path}, audit::token_keyed_hmac(*gateway));
    if (!r.ok) {
      std::ifstream in(config_.audit.path);
      std::stringstream text;
      text << in.rdbuf();
      ADD_FAILURE() << r.detail << "\n" << text.str();
    }
    return r.ok;
  }

  static test::FaultControl* faults_;
  std::string dir_;
  Config config_;
  std::shared_ptr<TicketKeyService> service_;
  test::SslCtxPtr server_;
};
test::FaultControl* HungHsm::faults_ = nullptr;

TEST_F(HungHsm, HandshakesCompleteWithinTheDeadlineWhileTheSealHangsToo) {
  test::HandshakeLoad load(server_.get(), TLS1_3_VERSION, 2);
  load.start();
  ASSERT_TRUE(load.wait_for_resumption(0, 10s)) << "no resumption before the fault";
  const std::uint64_t signs_before = faults_->stats().calls_to("C_Sign");
  const int hung = load.next_phase();
  set("C_Sign hang\n");
  // Two seal intervals: the maintenance thread tries to seal the per-handshake records
  // into a hung HMAC at least once.
  std::this_thread::sleep_for(2500ms);
  const int cleared = load.next_phase();
  faults_->clear();
  auto recovered = load.wait_for_resumption(cleared, 10s);
  load.stop();

  const auto during = load.counts(hung);
  std::cout << "[hung-hsm] C_Sign hung 2.5 s with audit.per_handshake: " << during.handshakes << " handshakes ("
            << during.full << " full), slowest " << during.slowest.count() << " ms (call_timeout "
            << kCallTimeout.count() << " ms); C_Sign calls that hung or ran: "
            << faults_->stats().calls_to("C_Sign") - signs_before << "\n";
  EXPECT_GT(during.handshakes, 10u) << "handshakes stopped while the HSM hung";
  EXPECT_EQ(during.aborted + load.counts(0).aborted + load.counts(cleared).aborted, 0u)
      << test::errors_text({&during});
  // The margin covers a loaded (or sanitizer) machine; an audit append waiting for the
  // hung seal would block for the whole hang.
  EXPECT_LT(during.slowest, kCallTimeout + 1500ms);
  EXPECT_TRUE(recovered.has_value()) << "resumption not back within 10 s of clearing the fault";
  server_.reset();  // it holds the service too
  service_.reset();  // the final seal, with the HSM back
  EXPECT_TRUE(verifies());
}

#if defined(__SANITIZE_THREAD__)
TEST_F(HungHsm, DISABLED_AForkWhileTheMaintenanceThreadWaitsInASealGoesThrough) {
#else
TEST_F(HungHsm, AForkWhileTheMaintenanceThreadWaitsInASealGoesThrough) {
#endif
  KeyName name{};
  name.fill(7);
  service_->record(name, TicketOutcome::kResumed);  // something to seal
  set("C_Sign hang\n");
  // Wait until the seal's HMAC is inside the hung call (the only C_Sign now).
  const std::uint64_t before = faults_->stats().calls_to("C_Sign");
  for (int i = 0; i < 300 && faults_->stats().calls_to("C_Sign") == before; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_GT(faults_->stats().calls_to("C_Sign"), before) << "no seal started";
  const auto forking = std::chrono::steady_clock::now();
  const pid_t child = fork_a_deriving_child();
  ASSERT_GE(child, 0);
  const auto fork_took = std::chrono::steady_clock::now() - forking;
  faults_->clear();
  EXPECT_EQ(test::wait_for_child(child, 30s), 0) << "the child could not derive (-1: hung)";
  // fork() waited for the task in progress at most its deadline (maintenance_timeout).
  EXPECT_LT(fork_took, config_.hsm.maintenance_timeout + 2s);
  IssueKeys keys;
  EXPECT_TRUE(service_->derive_for_issue(keys)) << "the parent works on after the fork";
  server_.reset();
  service_.reset();
  EXPECT_TRUE(verifies());
}

// The HSM hangs before the first epoch key is derived: the maintenance thread's
// derivations overrun their deadline in guard workers, and a fork meanwhile still gives a
// child that starts its module afresh and derives once the HSM answers. (This is also a
// fork while a hung call in the parent polls the fault module's rules.)
#if defined(__SANITIZE_THREAD__)
TEST_F(HungHsm, DISABLED_AForkWhileEpochDerivationsHangGoesThrough) {
#else
TEST_F(HungHsm, AForkWhileEpochDerivationsHangGoesThrough) {
#endif
  server_.reset();
  service_.reset();
  test::TestToken::get().clear();
  set("C_Sign hang\n");
  const std::uint64_t before = faults_->stats().calls_to("C_Sign");
  service_ = TicketKeyService::open(config_);
  for (int i = 0; i < 300 && faults_->stats().calls_to("C_Sign") == before; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_GT(faults_->stats().calls_to("C_Sign"), before) << "no epoch key derivation started";
  const pid_t child = fork_a_deriving_child();
  ASSERT_GE(child, 0);
  faults_->clear();
  EXPECT_EQ(test::wait_for_child(child, 30s), 0) << "the child could not derive (-1: hung)";
  IssueKeys keys;
  EXPECT_TRUE(service_->derive_for_issue(keys)) << "the parent works on after the fork";
}

}  // namespace
}  // namespace keysvc
