#include "keysvc/hsm/module.h"

#include <dlfcn.h>
#include <gtest/gtest.h>
#include <openssl/crypto.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "keysvc/hsm/error.h"
#include "keysvc/hsm/object.h"
#include "keysvc/hsm/secret_key.h"
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
  EXPECT_NO_THROW(m->reinitialize_after_fork());
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

}  // namespace
}  // namespace keysvc::hsm
