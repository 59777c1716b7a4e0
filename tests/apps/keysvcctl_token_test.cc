// Making tokens, run as subprocesses: keysvcctl token init in a free slot of the test
// process's own SoftHSM (TestToken), and softhsm-config/dev-token, a token in a
// temporary folder with its own SOFTHSM2_CONF.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "keysvc/config.h"
#include "keysvcctl_runner.h"
#include "process.h"
#include "test_token.h"

namespace {

using keysvc::test::TestToken;
using keysvc::test::read_file;
using namespace keysvc::test::keysvcctl;
namespace fs = std::filesystem;

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : fallback;
}

std::string source_dir() { return env_or("KEYSVC_SOURCE_DIR", KEYSVC_SOURCE_DIR_DEFAULT); }

TEST(Keysvcctl, TokenInitMakesAUsableToken) {
  // The test token's SoftHSM keeps a free slot: initialise a second token in it.
  const std::string label = "ctl-" + keysvc::test::random_text(8);
  const std::string pin = keysvc::test::random_text(16), so_pin = keysvc::test::random_text(16);
  std::map<std::string, std::string> env = {{"CTL_TEST_PIN", pin}, {"CTL_TEST_SO_PIN", so_pin}};
  std::vector<std::string> init = {"token", "init", "--module", keysvc::test::kSoftHsmModule, "--label", label,
                                   "--pin-source", "env:CTL_TEST_PIN", "--so-pin-source", "env:CTL_TEST_SO_PIN"};
  Result r = ctl(init, env);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find(label), std::string::npos) << r.out;
  EXPECT_EQ(r.all().find(pin), std::string::npos);
  EXPECT_EQ(r.all().find(so_pin), std::string::npos);

  std::string path = TestToken::get().dir() + "/second.toml";
  std::ofstream(path) << "[hsm]\nmodule = \"" << keysvc::test::kSoftHsmModule << "\"\ntoken = \"pkcs11:token="
                      << label << "\"\npin = \"env:CTL_TEST_PIN\"\n";
  Result status = ctl({"--config", path, "status", "--json"}, env);
  ASSERT_EQ(status.exit_code, 0) << status.err;
  EXPECT_EQ(parse_json(status.out).at("token").at("label").get<std::string>(), label);

  // The same label again: refused, and no second token with that label appears.
  Result again = ctl(init, env);
  EXPECT_EQ(again.exit_code, 1);
  expect_one_error_line(again);
  EXPECT_NE(again.err.find("already exists"), std::string::npos) << again.err;
  EXPECT_EQ(ctl({"--config", path, "status"}, env).exit_code, 0);

  // Labels that would need escaping in a PKCS#11 URI are refused.
  init[5] = "a;b";
  EXPECT_EQ(ctl(init, env).exit_code, 2);
}

// ---------------------------------------------------------------- dev-token

class DevToken : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string root = env_or("KEYSVC_TEST_TMPDIR", "/tmp");
    fs::create_directories(root);
    std::string tmpl = root + "/dev-token-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    base_ = tmpl;
    dir_ = base_ + "/token";  // dev-token creates it
  }
  void TearDown() override { fs::remove_all(base_); }

  Result dev_token() {
    (void)TestToken::get();  // SOFTHSM2_CONF is overridden below; never the system's
    return run({source_dir() + "/softhsm-config/dev-token", dir_},
               {{"SOFTHSM2_CONF", dir_ + "/softhsm2.conf"},
                {"KEYSVC_BIN_DIR", fs::path(keysvcctl_path()).parent_path().string()}});
  }
  Result ctl_dev(std::vector<std::string> args) {
    args.insert(args.begin(), {"--config", dir_ + "/keysvc.toml"});
    return ctl(args, {{"SOFTHSM2_CONF", dir_ + "/softhsm2.conf"}});
  }
  static unsigned mode_of(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return 0;
    return st.st_mode & 07777;
  }

  std::string base_;
  std::string dir_;
};

TEST_F(DevToken, CreatesTokenPinsAndConfigIdempotently) {
  Result first = dev_token();
  ASSERT_EQ(first.exit_code, 0) << first.all();
  EXPECT_NE(first.out.find("export SOFTHSM2_CONF=" + dir_ + "/softhsm2.conf"), std::string::npos) << first.out;

  EXPECT_EQ(mode_of(dir_ + "/pin"), 0600u);
  EXPECT_EQ(mode_of(dir_ + "/so-pin"), 0600u);
  std::string pin = read_file(dir_ + "/pin"), so_pin = read_file(dir_ + "/so-pin");
  ASSERT_EQ(pin.size(), 33u);  // 32 hex digits and a newline
  EXPECT_NE(pin, so_pin);
  EXPECT_EQ(first.all().find(pin.substr(0, 32)), std::string::npos);
  EXPECT_EQ(first.all().find(so_pin.substr(0, 32)), std::string::npos);

  std::string conf = read_file(dir_ + "/softhsm2.conf");
  EXPECT_NE(conf.find("directories.tokendir = " + dir_ + "/tokens"), std::string::npos) << conf;
  EXPECT_EQ(conf.find("tokendir = /var/lib/softhsm"), std::string::npos) << conf;

  keysvc::Config config = keysvc::Config::load_file(dir_ + "/keysvc.toml");
  EXPECT_EQ(config.hsm.module, "/usr/lib/softhsm/libsofthsm2.so");
  EXPECT_EQ(config.hsm.token_uri, "pkcs11:token=keysvc");
  EXPECT_EQ(config.hsm.pin_source, "file:" + dir_ + "/pin");
  EXPECT_EQ(config.tickets.per_handshake, 2);
  EXPECT_EQ(config.tickets.lifetime, std::chrono::hours(2));
  EXPECT_EQ(config.tickets.max_session_age, std::chrono::hours(24));

  Result status = ctl_dev({"status", "--json"});
  ASSERT_EQ(status.exit_code, 0) << status.err;
  Json s = parse_json(status.out);
  EXPECT_EQ(s.at("token").at("label").get<std::string>(), "keysvc");
  std::string serial = s.at("token").at("serial").get<std::string>();

  // Second run: same token, same PINs, config untouched.
  Result second = dev_token();
  ASSERT_EQ(second.exit_code, 0) << second.all();
  EXPECT_NE(second.out.find("keeping"), std::string::npos) << second.out;
  EXPECT_NE(second.out.find("export SOFTHSM2_CONF="), std::string::npos) << second.out;
  EXPECT_EQ(read_file(dir_ + "/pin"), pin);
  EXPECT_EQ(read_file(dir_ + "/so-pin"), so_pin);
  Result status2 = ctl_dev({"status", "--json"});
  ASSERT_EQ(status2.exit_code, 0) << status2.err;
  EXPECT_EQ(parse_json(status2.out).at("token").at("serial").get<std::string>(), serial);
}

}  // namespace
