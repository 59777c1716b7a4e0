#include "keysvc/hsm/module.h"

#include <dlfcn.h>
#include <gtest/gtest.h>
#include <openssl/crypto.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include "keysvc/hsm/error.h"
#include "keysvc/hsm/object.h"
#include "keysvc/hsm/secret_key.h"
#include "fault_control.h"
#include "test_helpers.h"

namespace keysvc::hsm {
namespace {

using test::kSoftHsmModule;
using test::TestToken;

TEST(Module, LoadsOncePerPath) {
  TestToken::get();
  auto a = Module::load(kSoftHsmModule);
  auto b = Module::load(kSoftHsmModule);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a.get(), b.get());
  EXPECT_EQ(a->path(), kSoftHsmModule);
  ASSERT_NE(a->fn(), nullptr);
  // The function list is live: C_GetInfo answers.
  CK_INFO info{};
  EXPECT_EQ(a->fn()->C_GetInfo(&info), static_cast<CK_RV>(CKR_OK));
  EXPECT_EQ(info.cryptokiVersion.major, 2);
}

TEST(Module, AlreadyInitializedByAnotherUserIsAccepted) {
  TestToken::get();
  auto m = Module::load(kSoftHsmModule);
  // Someone else in the process initialises the same module: our handle keeps working.
  CK_C_INITIALIZE_ARGS args{};
  args.flags = CKF_OS_LOCKING_OK;
  EXPECT_EQ(m->fn()->C_Initialize(&args), static_cast<CK_RV>(CKR_CRYPTOKI_ALREADY_INITIALIZED));
  EXPECT_EQ(Module::load(kSoftHsmModule).get(), m.get());
  EXPECT_FALSE(m->slots_with_token().empty());
}

TEST(Module, SlotsWithTokenIncludesTheTestToken) {
  Token token = test::test_hsm_token();
  auto slots = token.module()->slots_with_token();
  EXPECT_NE(std::find(slots.begin(), slots.end(), token.slot()), slots.end());
  // SoftHSM always keeps one free (uninitialised) slot next to the initialised tokens.
  EXPECT_GE(slots.size(), 2u);
}

TEST(Module, MissingPathIsAConfigErrorNamingThePath) {
  const std::string path = "/nonexistent/keysvc-test/libnothere-pkcs11.so";
  try {
    Module::load(path);
    FAIL() << "loading a missing module succeeded";
  } catch (const ConfigError& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
  // A failed load is not cached as a success.
  EXPECT_THROW(Module::load(path), ConfigError);
}

TEST(Module, LibraryWithoutFunctionListIsAConfigError) {
  // libcrypto is a real shared library, but not a PKCS#11 module.
  Dl_info info{};
  ASSERT_NE(dladdr(reinterpret_cast<void*>(&OPENSSL_cleanse), &info), 0);
  ASSERT_NE(info.dli_fname, nullptr);
  std::string path = info.dli_fname;
  try {
    Module::load(path);
    FAIL() << "loading libcrypto as a PKCS#11 module succeeded";
  } catch (const ConfigError& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("C_GetFunctionList"), std::string::npos) << msg;
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
  }
}

TEST(Module, FileThatIsNotALibraryIsAConfigError) {
  TestToken& t = TestToken::get();
  try {
    Module::load(t.config_path());
    FAIL() << "loading a text file as a module succeeded";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(t.config_path()), std::string::npos) << e.what();
  }
}

// After fork() the child re-initialises and can log in and sign on its own.
TEST(Module, ChildCanUseTheModuleAfterReinitialize) {
  Token token = test::test_hsm_token();
  auto parent = test::user_session();
  auto key = generate_hmac_key(*parent, test::as_bytes("fork-key"), "fork-key");
  std::array<std::uint8_t, kHmacSha256Bytes> expected{};
  hmac_sha256(*parent, key, test::as_bytes("data"), expected);

  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int code = 0;
    try {
      token.module()->reinitialize_after_fork();
      Session s(token, true);
      s.login(CKU_USER, SecretString(TestToken::get().pin()));
      auto found = find_objects(s, {.object_class = CKO_SECRET_KEY, .label = std::string("fork-key")});
      std::array<std::uint8_t, kHmacSha256Bytes> mac{};
      if (found.size() != 1) {
        code = 2;
      } else {
        hmac_sha256(s, found.front(), test::as_bytes("data"), mac);
        code = mac == expected ? 0 : 3;
      }
    } catch (...) {
      code = 4;
    }
    ::_exit(code);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "2: key not found, 3: wrong MAC, 4: exception in the child";
}

// --- Module::restart() and the call gate. SoftHSM is restarted for the whole process:
// ctest runs every test in a process of its own.

using namespace std::chrono_literals;

// A "PKCS#11 call" that stays inside the module until released: what a hung call looks
// like to the gate.
struct HeldCall {
  std::promise<void> release;
  std::promise<void> entered;
  std::future<CK_RV> rv;
  explicit HeldCall(const Module& m) {
    auto released = release.get_future().share();
    rv = std::async(std::launch::async, [&m, this, released] {
      return m.call(Module::kAnyGeneration, Call::kGetSlotList, [&] {
        entered.set_value();
        released.wait();
        return static_cast<CK_RV>(CKR_OK);
      });
    });
    entered.get_future().wait();
  }
};

CK_RV no_op(const Module& m) {
  return m.call(Module::kAnyGeneration, Call::kGetSlotList, [] { return static_cast<CK_RV>(CKR_OK); });
}

TEST(ModuleRestart, StartsANewGenerationInWhichTheTokenAndItsKeysWorkAgain) {
  Token token = test::test_hsm_token();
  auto before = test::user_session();
  auto key = generate_hmac_key(*before, test::as_bytes("restart-key"), "restart-key");
  const auto expected = test::token_hmac(*before, key, test::as_bytes("data"));
  auto m = token.module();
  ASSERT_TRUE(m->only_user());
  const std::uint64_t generation = m->generation();
  const auto finalized = m->stats().snapshot(Call::kFinalize).count;

  ASSERT_TRUE(m->restart(1s));
  EXPECT_EQ(m->generation(), generation + 1);
  EXPECT_EQ(m->stats().snapshot(Call::kFinalize).count, finalized + 1);
  EXPECT_TRUE(m->only_user()) << "keysvc's own C_Initialize again";

  // A new session finds the token (slot looked up again), logs in, and the token key
  // still MACs the same; the old key handle is not trusted (it is the caller's to re-find).
  Session after(token, true);
  after.login(CKU_USER, SecretString(TestToken::get().pin()));
  auto found = find_objects(after, {.object_class = CKO_SECRET_KEY, .label = std::string("restart-key")});
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(test::token_hmac(after, found.front(), test::as_bytes("data")), expected);
}

TEST(ModuleRestart, WaitsForTheCallsInFlightAndRefusesNewOnesMeanwhile) {
  auto m = test::test_hsm_token().module();
  const std::uint64_t generation = m->generation();
  auto held = std::make_unique<HeldCall>(*m);
  auto restarted = std::async(std::launch::async, [&] { return m->restart(10s); });
  // The gate closes before the restart waits: new calls are refused, not made.
  CK_RV rv = CKR_OK;
  for (int i = 0; i < 2000 && (rv = no_op(*m)) == CKR_OK; ++i) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(rv, static_cast<CK_RV>(CKR_CRYPTOKI_NOT_INITIALIZED));
  EXPECT_EQ(restarted.wait_for(50ms), std::future_status::timeout) << "finalized under a call in flight";
  EXPECT_EQ(m->generation(), generation);
  held->release.set_value();
  EXPECT_EQ(held->rv.get(), static_cast<CK_RV>(CKR_OK));
  EXPECT_TRUE(restarted.get());
  EXPECT_EQ(m->generation(), generation + 1);
  EXPECT_EQ(no_op(*m), static_cast<CK_RV>(CKR_OK)) << "the gate opens again";
}

TEST(ModuleRestart, GivesUpOnAHungCallAndLeavesTheModuleAsItWas) {
  auto session = test::user_session();
  auto m = test::test_hsm_token().module();
  const std::uint64_t generation = m->generation();
  HeldCall held(*m);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(m->restart(100ms));
  EXPECT_GE(std::chrono::steady_clock::now() - start, 100ms);
  EXPECT_EQ(m->generation(), generation);
  EXPECT_EQ(m->stats().snapshot(Call::kFinalize).count, 0u);
  EXPECT_EQ(no_op(*m), static_cast<CK_RV>(CKR_OK)) << "the gate opens again";
  EXPECT_TRUE(session->user_logged_in()) << "the session survived";
  held.release.set_value();
  EXPECT_EQ(held.rv.get(), static_cast<CK_RV>(CKR_OK));
}

TEST(ModuleRestart, ACallWithHandlesOfAnEarlierGenerationIsNotMade) {
  auto m = test::test_hsm_token().module();
  const std::uint64_t old = m->generation();
  ASSERT_TRUE(m->restart(1s));
  bool made = false;
  EXPECT_EQ(m->call(old, Call::kGetSessionInfo, [&] { made = true; return static_cast<CK_RV>(CKR_OK); }),
            static_cast<CK_RV>(CKR_SESSION_HANDLE_INVALID));
  EXPECT_FALSE(made);
  EXPECT_EQ(m->call(m->generation(), Call::kGetSessionInfo, [&] { made = true; return static_cast<CK_RV>(CKR_OK); }),
            static_cast<CK_RV>(CKR_OK));
  EXPECT_TRUE(made);
}

// A C_Initialize that fails (a network HSM's client that cannot reach its server yet)
// leaves the module finalized by keysvc, its only user: the next restart tries again.
TEST(ModuleRestart, AFailedInitializeIsTriedAgainByTheNextRestart) {
  TestToken& token = TestToken::get();
  test::FaultControl faults(token.dir() + "/restart-faults");
  faults.export_env();
  // The fault module forwards to a private SoftHSM: TestToken has initialised the real
  // one in this process, which would make keysvc not its only user.
  ::setenv("KEYSVC_FAULTMOD_TARGET", test::private_softhsm_copy().c_str(), 1);
  auto m = Module::load(test::FaultControl::module_path());
  Token t = Token::find(m, TokenUri::parse(token.token_uri()));
  ASSERT_TRUE(m->only_user());
  faults.set("C_Initialize CKR_DEVICE_ERROR times 1\n");
  std::this_thread::sleep_for(20ms);  // the fault module polls its control file every 2 ms
  EXPECT_THROW(m->restart(1s), Pkcs11Error);
  EXPECT_EQ(faults.stats().injected, 1u);
  EXPECT_TRUE(m->only_user()) << "keysvc finalized the module itself: still its only user";
  ASSERT_TRUE(m->restart(1s)) << "the next restart must try again";
  Session s(t, false);
  s.login(CKU_USER, SecretString(token.pin()));
  EXPECT_TRUE(s.user_logged_in());
  faults.clear();
}

// A module that did not notice the fork answers the child's C_Initialize with
// CKR_CRYPTOKI_ALREADY_INITIALIZED (the fault module, in front of a private SoftHSM): the
// child finalizes and initializes it again, in a new generation, and then works.
TEST(ModuleFork, AModuleThatKeptTheParentsStateIsStartedAfresh) {
  TestToken& token = TestToken::get();
  test::FaultControl faults(token.dir() + "/fork-faults");
  faults.export_env();
  ::setenv("KEYSVC_FAULTMOD_TARGET", test::private_softhsm_copy().c_str(), 1);
  auto m = Module::load(test::FaultControl::module_path());
  Token t = Token::find(m, TokenUri::parse(token.token_uri()));
  std::array<std::uint8_t, kHmacSha256Bytes> expected{};
  {
    Session s(t, true);
    s.login(CKU_USER, SecretString(token.pin()));
    hmac_sha256(s, generate_hmac_key(s, test::as_bytes("fork-key"), "fork-key"), test::as_bytes("data"), expected);
  }
  const std::uint64_t generation = m->generation();
  const std::uint64_t finalized = m->stats().snapshot(Call::kFinalize).count;
  faults.set("C_Initialize CKR_CRYPTOKI_ALREADY_INITIALIZED times 1\n");
  std::this_thread::sleep_for(20ms);  // the fault module polls its control file every 2 ms

  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int code = 0;
    try {
      m->reinitialize_after_fork();
      if (m->generation() != generation + 1) code = 2;
      else if (m->stats().snapshot(Call::kFinalize).count != finalized + 1) code = 3;
      else if (m->stats().snapshot(Call::kInitialize).count < 2) code = 4;
      Session s(t, true);
      s.login(CKU_USER, SecretString(token.pin()));
      auto found = find_objects(s, {.object_class = CKO_SECRET_KEY, .label = std::string("fork-key")});
      std::array<std::uint8_t, kHmacSha256Bytes> mac{};
      if (code == 0 && found.size() == 1) hmac_sha256(s, found.front(), test::as_bytes("data"), mac);
      if (code == 0 && mac != expected) code = 5;
    } catch (...) {
      code = 6;
    }
    ::_exit(code);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "2: same generation, 3: not finalized, 4: not initialized again, "
                                       "5: no working key, 6: an exception";
  faults.clear();
}

// Last in this file: the declaration lasts for the process.
TEST(ModuleRestart, NeverWhileAnotherUserIsDeclared) {
  auto session = test::user_session();
  auto m = test::test_hsm_token().module();
  const std::uint64_t generation = m->generation();
  m->add_other_user();
  EXPECT_FALSE(m->only_user());
  EXPECT_FALSE(m->restart(1s));
  EXPECT_FALSE(m->rescan_tokens());
  EXPECT_EQ(m->generation(), generation);
  EXPECT_EQ(m->stats().snapshot(Call::kFinalize).count, 0u);
  EXPECT_TRUE(session->user_logged_in());
}

}  // namespace
}  // namespace keysvc::hsm
