// The fault matrix (issue #6): for each (PKCS#11 function, fault), the service runs
// under in-process TLS 1.3 load (2 client threads, real handshakes) on a SoftHSM token
// seen through keysvc-faultmod, and:
//   - while the fault lasts, handshakes keep completing (full handshakes when the HSM
//     cannot derive) and none aborts;
//   - the fault really happened (the module counted injections);
//   - within 1 s of the fault clearing, resumption works again.
//
// C_SignInit and C_Sign are on every ticket's path. C_FindObjects*, C_GetAttributeValue,
// C_OpenSession and C_Login are only reached when keysvc must recover, so those cells
// also log the token out once at the start of the fault (the module's "logout": SoftHSM
// itself drops the login and the private key handles): recovering then needs new
// sessions, a new login and a ring reload, through the faulty function.
//
// Each cell prints one "[matrix]" line: function, fault, handshakes during the fault
// (full/resumed), aborted, injections, breaker opens, and the time from clearing the
// fault to the first resumption. Each (function) is a parametrised test of its own,
// so ctest runs the rows in parallel.
#include <gtest/gtest.h>

#include <chrono>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>

#include "fault_control.h"
#include "handshake_load.h"
#include "keysvc/token_gateway.h"
#include "keysvc/openssl/ticket_adapter.h"
#include "test_token.h"
#include "tls_pair.h"

namespace keysvc {
namespace {

using namespace std::chrono_literals;

constexpr auto kBaseline = 300ms;
constexpr auto kFaultDuration = 700ms;
constexpr auto kRecoveryBound = 1000ms;  // the bound
constexpr auto kCallTimeout = 200ms;
constexpr auto kBreakerBackoff = 100ms;

const char* const kFaults[] = {"CKR_DEVICE_ERROR",     "CKR_SESSION_HANDLE_INVALID", "CKR_USER_NOT_LOGGED_IN",
                               "CKR_TOKEN_NOT_PRESENT", "CKR_DEVICE_REMOVED",        "CKR_FUNCTION_FAILED",
                               "CKR_GENERAL_ERROR",    "CKR_OBJECT_HANDLE_INVALID",  "latency 50",
                               "hang"};

bool on_ticket_path(const std::string& function) { return function == "C_SignInit" || function == "C_Sign"; }

struct Cell {
  std::string function;
  std::string fault;
};

void PrintTo(const Cell& c, std::ostream* os) { *os << c.function << " " << c.fault; }

std::string cell_name(const ::testing::TestParamInfo<Cell>& info) {
  std::string n = info.param.function + "_" + info.param.fault;
  for (char& c : n)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return n;
}

// One service on the fault module for the whole process (the module is loaded once).
class FaultMatrix : public ::testing::TestWithParam<Cell> {
 protected:
  static void SetUpTestSuite() {
    test::TestToken& token = test::TestToken::get();
    faults_ = new test::FaultControl(token.dir() + "/faults");
    faults_->export_env();
  }

  void SetUp() override {
    faults_->clear();
    test::TestToken::get().clear();
    Config config = test::TestToken::get().config();
    config.hsm.module = test::FaultControl::module_path();
    config.hsm.call_timeout = kCallTimeout;
    config.hsm.breaker_threshold = 3;
    config.hsm.breaker_backoff = kBreakerBackoff;
    service_ = TicketKeyService::open(config);
    server_ = test::make_server_ctx();
    openssl::install(server_.get(), service_);
  }

  void TearDown() override {
    faults_->clear();  // a hung call must return before the service can stop
    server_.reset();
    service_.reset();
  }

  static test::FaultControl* faults_;
  std::shared_ptr<TicketKeyService> service_;
  test::SslCtxPtr server_;
};
test::FaultControl* FaultMatrix::faults_ = nullptr;

TEST_P(FaultMatrix, HandshakesCompleteDuringTheFaultAndResumptionReturnsWithinOneSecond) {
  const Cell& cell = GetParam();
  std::string rules = cell.function + " " + cell.fault + "\n";
  if (!on_ticket_path(cell.function)) rules += "C_SignInit logout times 1\n";

  test::HandshakeLoad load(server_.get(), TLS1_3_VERSION, 2);
  load.start();
  // The baseline lasts until resumption works (a loaded machine may need longer than
  // kBaseline for the first one), and at least kBaseline.
  load.wait_for_resumption(0, 10s);
  std::this_thread::sleep_for(kBaseline);
  const auto before = faults_->stats();
  const auto breaker_before = service_->gateway().counters().guard.breaker;

  const int fault_phase = load.next_phase();
  faults_->set(rules);
  std::this_thread::sleep_for(kFaultDuration);
  const auto during = faults_->stats();
  faults_->clear();
  const int recovery_phase = load.next_phase();
  auto recovered = load.wait_for_resumption(recovery_phase, 5s);
  load.stop();

  const test::PhaseCounts baseline = load.counts(0), fault = load.counts(fault_phase),
                          after = load.counts(recovery_phase);
  const auto guard = service_->gateway().counters().guard;
  const std::uint64_t injected = during.injected - before.injected;
  std::ostringstream line;
  line << "[matrix] " << cell.function << " | " << cell.fault << " | handshakes during fault " << fault.handshakes
       << " (full " << fault.full << ", resumed " << fault.resumed << "/" << fault.resume_attempts << ") | aborted "
       << baseline.aborted + fault.aborted + after.aborted << " | injected " << injected << " | breaker opens "
       << guard.breaker.opens - breaker_before.opens << " | timeouts " << guard.timeouts << " | recovered "
       << (recovered ? std::to_string(recovered->count()) + " ms" : std::string("NO")) << "\n";
  std::cout << line.str() << std::flush;

  EXPECT_GT(baseline.resumed, 0u) << "no resumption before the fault" << line.str();
  EXPECT_GT(injected, 0u) << "the fault never happened" << line.str();
  EXPECT_GT(fault.handshakes, 0u) << "no handshake completed during the fault" << line.str();
  EXPECT_EQ(baseline.aborted + fault.aborted + after.aborted, 0u) << line.str() << test::errors_text({&baseline, &fault, &after});
  ASSERT_TRUE(recovered.has_value()) << "resumption did not come back" << line.str();
  EXPECT_LE(*recovered, kRecoveryBound) << line.str();
}

std::vector<Cell> cells_for(const std::string& function) {
  std::vector<Cell> cells;
  for (const char* f : kFaults) cells.push_back({function, f});
  return cells;
}

INSTANTIATE_TEST_SUITE_P(SignInit, FaultMatrix, ::testing::ValuesIn(cells_for("C_SignInit")), cell_name);
INSTANTIATE_TEST_SUITE_P(Sign, FaultMatrix, ::testing::ValuesIn(cells_for("C_Sign")), cell_name);
INSTANTIATE_TEST_SUITE_P(FindObjects, FaultMatrix, ::testing::ValuesIn(cells_for("C_FindObjects*")), cell_name);
INSTANTIATE_TEST_SUITE_P(GetAttributeValue, FaultMatrix, ::testing::ValuesIn(cells_for("C_GetAttributeValue")),
                         cell_name);
INSTANTIATE_TEST_SUITE_P(OpenSession, FaultMatrix, ::testing::ValuesIn(cells_for("C_OpenSession")), cell_name);
INSTANTIATE_TEST_SUITE_P(Login, FaultMatrix, ::testing::ValuesIn(cells_for("C_Login")), cell_name);

}  // namespace
}  // namespace keysvc
