// keysvc-faultmod against the real SoftHSM test token: it forwards what is not injected
// (same HMAC as SoftHSM's own), injects each CKR code, latency, hang and logout for the
// functions named (exact names and prefixes), picks up control-file changes while
// loaded, counts what it injected, and ignores a malformed control file.
#include "faultmod.h"

#include <dlfcn.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>

#include "fault_control.h"
#include "keysvc/hsm/error.h"
#include "keysvc/hsm/object.h"
#include "keysvc/hsm/secret_key.h"
#include "test_helpers.h"

namespace keysvc::test {
namespace {

using namespace std::chrono_literals;

// The control files of this process, exported before the module is first loaded.
FaultControl& faults() {
  static FaultControl* control = [] {
    auto* c = new FaultControl(TestToken::get().dir() + "/faultmod");
    c->export_env();
    return c;
  }();
  return *control;
}

// The test token seen through the fault module.
hsm::Token faulty_token() {
  faults();
  return hsm::Token::find(hsm::Module::load(FaultControl::module_path()),
                          hsm::TokenUri::parse(TestToken::get().token_uri()));
}

std::unique_ptr<hsm::Session> faulty_session() {
  auto s = std::make_unique<hsm::Session>(faulty_token(), true);
  s->login(CKU_USER, hsm::SecretString(TestToken::get().pin()));
  return s;
}

// A control-file change is seen within 2 ms; wait a little more than that.
void settle() { std::this_thread::sleep_for(10ms); }

class FaultModule : public ::testing::Test {
 protected:
  void SetUp() override {
    faults().clear();
    settle();
    session_ = faulty_session();
    key_ = hsm::import_hmac_key(*session_, random_bytes(16), "faultmod-test", key_bytes_);
  }
  void TearDown() override {
    faults().clear();
    settle();
    if (session_) hsm::destroy_object(*session_, key_);
  }

  void set(const std::string& rules) {
    faults().set(rules);
    settle();
  }

  // HMAC through the fault module; the CK_RV it failed with, or CKR_OK.
  CK_RV try_hmac(hsm::Session& s) {
    std::array<std::uint8_t, hsm::kHmacSha256Bytes> mac{};
    try {
      hsm::hmac_sha256(s, key_, as_bytes("data"), mac);
    } catch (const hsm::Pkcs11Error& e) {
      return e.rv();
    }
    EXPECT_EQ(ByteVec(mac.begin(), mac.end()), openssl_hmac_sha256(key_bytes_, as_bytes("data")));
    return CKR_OK;
  }

  ByteVec key_bytes_ = random_bytes(32);
  std::unique_ptr<hsm::Session> session_;
  CK_OBJECT_HANDLE key_ = CK_INVALID_HANDLE;
};

TEST_F(FaultModule, ForwardsEveryCallWhenNoRuleMatches) {
  EXPECT_EQ(try_hmac(*session_), static_cast<CK_RV>(CKR_OK));
  auto found = hsm::find_objects(*session_, {.object_class = CKO_SECRET_KEY, .label = "faultmod-test"});
  EXPECT_EQ(found.size(), 1u);
  FaultStats s = faults().stats();
  EXPECT_EQ(s.errors, 0u);
}

TEST_F(FaultModule, InjectsEachReturnCodeUntilCleared) {
  const CK_RV codes[] = {CKR_DEVICE_ERROR,    CKR_SESSION_HANDLE_INVALID, CKR_USER_NOT_LOGGED_IN,
                         CKR_TOKEN_NOT_PRESENT, CKR_DEVICE_REMOVED,       CKR_FUNCTION_FAILED,
                         CKR_GENERAL_ERROR,   CKR_OBJECT_HANDLE_INVALID,  CKR_KEY_HANDLE_INVALID};
  for (CK_RV rv : codes) {
    SCOPED_TRACE(hsm::rv_name(rv));
    const std::uint64_t before = faults().stats().injected;
    set("C_SignInit " + hsm::rv_name(rv) + "\n");
    EXPECT_EQ(try_hmac(*session_), rv);
    EXPECT_EQ(try_hmac(*session_), rv);
    FaultStats s = faults().stats();
    EXPECT_EQ(s.injected, before + 2);
    EXPECT_EQ(s.by_rule["C_SignInit " + hsm::rv_name(rv)], 2u);
    set("");
    EXPECT_EQ(try_hmac(*session_), static_cast<CK_RV>(CKR_OK)) << "the real session survived the injection";
  }
}

TEST_F(FaultModule, PrefixMatchesAFamilyOfFunctions) {
  set("C_FindObjects* CKR_DEVICE_ERROR\n");
  try {
    hsm::find_objects(*session_, {.label = "faultmod-test"});
    ADD_FAILURE() << "C_FindObjectsInit was not failed";
  } catch (const hsm::Pkcs11Error& e) {
    EXPECT_EQ(e.operation(), "C_FindObjectsInit");
    EXPECT_EQ(e.rv(), static_cast<CK_RV>(CKR_DEVICE_ERROR));
  }
  EXPECT_EQ(try_hmac(*session_), static_cast<CK_RV>(CKR_OK)) << "other functions are untouched";
}

TEST_F(FaultModule, FirstMatchingRuleWinsAndCommentsAreIgnored) {
  set("# a comment\n\nC_Sign CKR_GENERAL_ERROR  # first\nC_Sign* CKR_DEVICE_ERROR\n");
  EXPECT_EQ(try_hmac(*session_), static_cast<CK_RV>(CKR_DEVICE_ERROR)) << "C_SignInit only matches the prefix";
  set("C_Sign CKR_GENERAL_ERROR\nC_Sign* CKR_DEVICE_ERROR\n");
  EXPECT_EQ(faults().stats().errors, 0u);
}

TEST_F(FaultModule, TimesLimitsTheInjections) {
  set("C_SignInit CKR_DEVICE_ERROR times 2\n");
  EXPECT_EQ(try_hmac(*session_), static_cast<CK_RV>(CKR_DEVICE_ERROR));
  EXPECT_EQ(try_hmac(*session_), static_cast<CK_RV>(CKR_DEVICE_ERROR));
  EXPECT_EQ(try_hmac(*session_), static_cast<CK_RV>(CKR_OK));
  EXPECT_EQ(faults().stats().by_rule["C_SignInit CKR_DEVICE_ERROR times 2"], 2u);
}

TEST_F(FaultModule, LatencyDelaysButForwards) {
  set("C_Sign latency 20\n");
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(try_hmac(*session_), static_cast<CK_RV>(CKR_OK));
  EXPECT_GE(std::chrono::steady_clock::now() - start, 20ms) << "a sleep of 20 ms lasts at least 20 ms";
  EXPECT_EQ(faults().stats().by_rule["C_Sign latency 20"], 1u);
}

TEST_F(FaultModule, HangBlocksUntilTheRuleIsCleared) {
  set("C_Sign hang\n");
  auto call = std::async(std::launch::async, [&] { return try_hmac(*session_); });
  EXPECT_EQ(call.wait_for(200ms), std::future_status::timeout) << "the call returned while the hang rule was set";
  EXPECT_EQ(faults().stats().by_rule["C_Sign hang"], 1u) << "a hang counts once";
  faults().clear();
  ASSERT_EQ(call.wait_for(10s), std::future_status::ready) << "the call still hangs after the rule was cleared";
  EXPECT_EQ(call.get(), static_cast<CK_RV>(CKR_OK)) << "a cleared hang forwards the call";
}

TEST_F(FaultModule, LogoutReallyLogsTheTokenOut) {
  set("C_SignInit logout\n");
  EXPECT_EQ(try_hmac(*session_), static_cast<CK_RV>(CKR_USER_NOT_LOGGED_IN));
  set("");
  EXPECT_FALSE(session_->user_logged_in()) << "SoftHSM itself is logged out";
  EXPECT_NE(try_hmac(*session_), static_cast<CK_RV>(CKR_OK)) << "the private key is out of reach";
  session_->login(CKU_USER, hsm::SecretString(TestToken::get().pin()));
  // SoftHSM hands out new handles for private objects after a new login: find it again.
  auto found = hsm::find_objects(*session_, {.object_class = CKO_SECRET_KEY, .label = "faultmod-test"});
  ASSERT_EQ(found.size(), 1u);
  key_ = found.front();
  EXPECT_EQ(try_hmac(*session_), static_cast<CK_RV>(CKR_OK));
}

TEST_F(FaultModule, MalformedControlFileInjectsNothingAndIsCounted) {
  for (const char* bad : {"C_Sign\n", "C_Sign CKR_NOPE\n", "C_Nope CKR_DEVICE_ERROR\n", "C_Sign latency x\n",
                          "C_Sign hang now\n", "C_OpenSession logout\n",
                          "C_Sign hang times 0\n"}) {
    SCOPED_TRACE(bad);
    const std::uint64_t errors = faults().stats().errors;
    set(std::string("C_SignInit CKR_DEVICE_ERROR\n") + bad);
    EXPECT_EQ(try_hmac(*session_), static_cast<CK_RV>(CKR_OK));
    EXPECT_EQ(faults().stats().errors, errors + 1);
  }
}

TEST_F(FaultModule, CountsCallsAndExportsStatsInProcess) {
  const std::uint64_t before = faults().stats().calls_to("C_Sign");
  EXPECT_EQ(try_hmac(*session_), static_cast<CK_RV>(CKR_OK));
  set("C_GenerateRandom CKR_FUNCTION_FAILED\n");  // an injection rewrites the stats file
  CK_BYTE r[4];
  EXPECT_EQ(session_->fn()->C_GenerateRandom(session_->handle(), r, sizeof r), static_cast<CK_RV>(CKR_FUNCTION_FAILED));
  EXPECT_GE(faults().stats().calls_to("C_Sign"), before + 1);

  void* self = ::dlopen(FaultControl::module_path().c_str(), RTLD_NOW | RTLD_NOLOAD);
  ASSERT_NE(self, nullptr);
  auto injected = reinterpret_cast<unsigned long (*)()>(::dlsym(self, "keysvc_faultmod_injected"));
  auto stats = reinterpret_cast<size_t (*)(char*, size_t)>(::dlsym(self, "keysvc_faultmod_stats"));
  ASSERT_NE(injected, nullptr);
  ASSERT_NE(stats, nullptr);
  EXPECT_EQ(injected(), faults().stats().injected);
  char buf[4096];
  EXPECT_GT(stats(buf, sizeof buf), 0u);
  EXPECT_NE(std::string(buf).find("rule C_GenerateRandom CKR_FUNCTION_FAILED 1"), std::string::npos) << buf;
  ::dlclose(self);
}

}  // namespace
}  // namespace keysvc::test
