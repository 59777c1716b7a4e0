// What a web server's unprivileged workers and the systemd rotator need from the tools:
//   - keysvcctl --pin-source replaces the config's PIN source (the units give the PIN
//     through LoadCredential= as file:%d/pin); a bad one is refused with one line;
//   - softhsm-config/dev-token --owner USER makes a token whose folder is USER's and
//     whose PIN files stay root's: keysvcctl run as USER with the PIN given to it alone
//     rotates, and USER cannot read the PIN file (root only; skipped otherwise).
// Real SoftHSM tokens, keysvcctl as a subprocess.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <algorithm>
#include <fstream>
#include <string>

#include "test_token.h"
#include "tls_server_process.h"
#include "webserver_keysvc.h"
#include "worker_user.h"

namespace {

using namespace std::chrono_literals;
using namespace keysvc::test;
namespace fs = std::filesystem;

// The test token's config with a PIN source that does not work.
std::string config_without_pin() {
  const std::string path = TestToken::get().dir() + "/no-pin.toml";
  std::ofstream(path) << "[hsm]\nmodule = \"" << kSoftHsmModule << "\"\ntoken = \"" << TestToken::get().token_uri()
                      << "\"\npin = \"file:/nonexistent/pin\"\n";
  return path;
}

TEST(KeysvcctlPinSource, ReplacesTheConfigsPinSource) {
  const std::string config = config_without_pin();
  RunResult without = run({keysvcctl(), "--config", config, "status"}, "", 30s);
  EXPECT_EQ(without.exit_code, std::optional<int>(1)) << describe(without);
  EXPECT_NE(without.err.find("/nonexistent/pin"), std::string::npos) << describe(without);

  RunResult from_file = run({keysvcctl(), "--config", config, "--pin-source", "file:" + TestToken::get().pin_path(),
                             "status"}, "", 30s);
  EXPECT_EQ(from_file.exit_code, std::optional<int>(0)) << describe(from_file);
  RunResult from_env = run({keysvcctl(), "--pin-source", "env:KEYSVC_TEST_PIN", "--config", config, "status"}, "", 30s,
                           {"KEYSVC_TEST_PIN=" + TestToken::get().pin()});
  EXPECT_EQ(from_env.exit_code, std::optional<int>(0)) << describe(from_env);
  EXPECT_EQ(from_env.out.find(TestToken::get().pin()), std::string::npos);
  EXPECT_EQ(from_env.err.find(TestToken::get().pin()), std::string::npos);

  RunResult bad = run({keysvcctl(), "--config", config, "--pin-source", "stdin", "status"}, "", 30s);
  EXPECT_EQ(bad.exit_code, std::optional<int>(2)) << describe(bad);
  EXPECT_NE(bad.err.find("--pin-source: PIN source must be file:PATH or env:NAME"), std::string::npos)
      << describe(bad);
  EXPECT_LE(std::count(bad.err.begin(), bad.err.end(), '\n'), 1) << describe(bad);
}

class DevTokenOwner : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!worker_user()) GTEST_SKIP() << "dev-token --owner needs root";
    base_ = TestToken::get().dir() + "/dev-owner-" + ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::create_directories(base_);
    fs::permissions(TestToken::get().dir(), fs::perms::owner_all | fs::perms::others_exec);
    dir_ = base_ + "/token";
  }
  RunResult dev_token(const std::string& owner) {
    return run({std::string(KEYSVC_SOURCE_DIR) + "/softhsm-config/dev-token", "--owner", owner, dir_}, "", 60s,
               {"SOFTHSM2_CONF=" + dir_ + "/softhsm2.conf",
                "KEYSVC_BIN_DIR=" + fs::path(keysvcctl()).parent_path().string()});
  }
  std::string base_, dir_;
};

TEST_F(DevTokenOwner, MakesATokenTheWorkerUserUsesWithoutReadingThePin) {
  fs::permissions(base_, fs::perms::owner_all | fs::perms::others_exec);
  RunResult made = dev_token(worker_user()->name);
  ASSERT_EQ(made.exit_code, std::optional<int>(0)) << describe(made);
  struct stat st {};
  ASSERT_EQ(::stat((dir_ + "/tokens").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, worker_user()->uid);
  ASSERT_EQ(::stat((dir_ + "/pin").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, ::geteuid());
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  RunResult read_pin = run(as_worker({"cat", dir_ + "/pin"}), "", 10s);
  EXPECT_NE(read_pin.exit_code, std::optional<int>(0)) << "the worker user can read the PIN file";
  const std::string pin = read_file(dir_ + "/pin").substr(0, 32);
  RunResult rotated = run(as_worker({keysvcctl(), "--config", dir_ + "/keysvc.toml", "--pin-source", "env:PIN", "rotate"}),
                          "", 30s, {"SOFTHSM2_CONF=" + dir_ + "/softhsm2.conf", "PIN=" + pin});
  EXPECT_EQ(rotated.exit_code, std::optional<int>(0)) << describe(rotated);
  EXPECT_NE(rotated.out.find("created"), std::string::npos) << describe(rotated);
  for (const auto& entry : fs::recursive_directory_iterator(dir_ + "/tokens")) {
    ASSERT_EQ(::stat(entry.path().c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, worker_user()->uid) << entry.path() << " is not the worker user's";
  }

  // Again: the token is kept, and stays the worker user's.
  RunResult again = dev_token(worker_user()->name);
  EXPECT_EQ(again.exit_code, std::optional<int>(0)) << describe(again);
  EXPECT_NE(again.out.find("keeping"), std::string::npos) << describe(again);
}

TEST_F(DevTokenOwner, RefusesAnUnknownUserWithOneLine) {
  RunResult r = dev_token("no-such-user-keysvc");
  EXPECT_EQ(r.exit_code, std::optional<int>(1)) << describe(r);
  EXPECT_NE(r.err.find("no such user"), std::string::npos) << describe(r);
  EXPECT_FALSE(fs::exists(dir_ + "/tokens"));
}

}  // namespace
