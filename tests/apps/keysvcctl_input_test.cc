// keysvcctl given bad input, run as subprocesses against the test process's own SoftHSM
// token (TestToken): usage errors and --help everywhere, missing, broken and hostile
// configs, bad arguments and PIN sources. One "keysvcctl: ..." line, exit 1 or 2, no PIN
// in the output, and the token unchanged.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "hostile_configs.h"
#include "keysvcctl_runner.h"
#include "test_token.h"

namespace {

using keysvc::test::TestToken;
using namespace keysvc::test::keysvcctl;

TEST(Keysvcctl, UsageErrorsExitTwoWithOneLine) {
  for (std::vector<std::string> args : std::vector<std::vector<std::string>>{
           {}, {"keys"}, {"keys", "lst"}, {"--bogus", "status"}, {"status", "--frob"}, {"token", "init"},
           {"keys", "list"} /* no --config */}) {
    Result r = ctl(args);
    std::string what;
    for (const auto& a : args) what += a + " ";
    EXPECT_EQ(r.exit_code, 2) << what << r.err;
    expect_one_error_line(r);
  }
}

TEST(Keysvcctl, HelpEverywhere) {
  for (std::vector<std::string> args : std::vector<std::vector<std::string>>{
           {"--help"}, {"keys", "--help"}, {"keys", "list", "--help"}, {"keys", "generate", "--help"},
           {"keys", "revoke", "--help"}, {"keys", "destroy", "--help"}, {"keys", "rotate", "--help"},
           {"rotate", "--help"}, {"status", "--help"}, {"token", "--help"}, {"token", "init", "--help"}}) {
    Result r = ctl(args);
    EXPECT_EQ(r.exit_code, 0) << args.front() << r.err;
    EXPECT_NE(r.out.find("Usage:"), std::string::npos) << r.out;
    EXPECT_TRUE(r.err.empty()) << r.err;
  }
}

TEST(Keysvcctl, MissingConfigExitsOneWithOneLine) {
  Result r = ctl({"--config", TestToken::get().dir() + "/no-such.toml", "keys", "list"});
  EXPECT_EQ(r.exit_code, 1);
  expect_one_error_line(r);
  EXPECT_NE(r.err.find("no-such.toml"), std::string::npos) << r.err;
}

TEST(Keysvcctl, BrokenConfigExitsOneWithOneLine) {
  std::string path = TestToken::get().dir() + "/broken.toml";
  std::ofstream(path) << "[hsm]\nmodule = \"" << keysvc::test::kSoftHsmModule << "\"\ntokn = \"x\"\n";
  Result r = ctl({"--config", path, "status"});
  EXPECT_EQ(r.exit_code, 1);
  expect_one_error_line(r);
}

// Bad configs, URIs, PINs and arguments, including the commands that write to the token:
// one "keysvcctl: ..." line, exit 1 or 2, no PIN in the output, and the token's objects
// exactly as before.
TEST(Keysvcctl, HostileInputChangesNothingInTheToken) {
  TestToken::get().clear();
  ASSERT_EQ(ctl_config({"rotate"}).exit_code, 0);  // a generation to keep
  const auto before = TestToken::get().objects();
  ASSERT_FALSE(before.empty());
  auto expect_refused = [&](const Result& r, const std::string& what, const std::string& secret) {
    EXPECT_TRUE(r.exit_code == 1 || r.exit_code == 2) << what << ": exit " << r.exit_code << "\n" << r.err;
    expect_one_error_line(r);
    if (!secret.empty()) {
      EXPECT_EQ(r.all().find(secret), std::string::npos) << what << " printed its PIN";
    }
    EXPECT_EQ(r.all().find(TestToken::get().pin()), std::string::npos) << what << " printed the PIN";
    EXPECT_EQ(TestToken::get().objects(), before) << what << " changed the token";
  };
  for (const auto& c : keysvc::test::write_hostile_configs(TestToken::get().dir() + "/hostile-ctl")) {
    std::map<std::string, std::string> env(c.env.begin(), c.env.end());
    // The two commands that write to the token when the config is good.
    for (std::vector<std::string> command : {std::vector<std::string>{"rotate"}, {"keys", "generate"}}) {
      command.insert(command.begin(), {"--config", c.path});
      expect_refused(ctl(command, env), c.name + " " + command[2], c.secret);
    }
  }
  const std::string unknown(32, 'a');
  const std::vector<std::vector<std::string>> bad_arguments = {
      {"keys", "revoke"},
      {"keys", "revoke", "not-a-name"},
      {"keys", "revoke", unknown},
      {"keys", "destroy", unknown},
      {"keys", "destroy", std::string(33, 'b')},
      {"keys", "generate", "--bogus"},
      {"rotate", "--every"},
      {"rotate", "--every", "-1s"},
      {"rotate", "extra"},
      {"frobnicate"},
      {"audit", "verify", TestToken::get().dir() + "/no-such.log"},
  };
  for (const auto& args : bad_arguments) expect_refused(ctl_config(args), ::testing::PrintToString(args), "");
  EXPECT_EQ(ctl({"keys", "list"}).exit_code, 2);  // no --config at all
  EXPECT_EQ(TestToken::get().objects(), before);
}

TEST(Keysvcctl, BadPinSourceRejected) {
  const std::string module = keysvc::test::kSoftHsmModule;
  // A PIN where a source belongs: a usage error that does not repeat the value.
  Result literal = ctl({"token", "init", "--module", module, "--label", "x", "--pin-source", "s3cr3t-pin",
                        "--so-pin-source", "env:SO"});
  EXPECT_EQ(literal.exit_code, 2);
  expect_one_error_line(literal);
  EXPECT_EQ(literal.err.find("s3cr3t-pin"), std::string::npos) << literal.err;
  EXPECT_NE(literal.err.find("--pin-source"), std::string::npos) << literal.err;

  Result empty = ctl({"token", "init", "--module", module, "--label", "x", "--pin-source", "file:",
                      "--so-pin-source", "env:SO"});
  EXPECT_EQ(empty.exit_code, 2);
  expect_one_error_line(empty);

  // Well-formed but unreadable: a failure, before the token is touched.
  Result unset = ctl({"token", "init", "--module", module, "--label", "x", "--pin-source",
                      "env:KEYSVCCTL_TEST_UNSET", "--so-pin-source", "env:KEYSVCCTL_TEST_UNSET"},
                     {{"KEYSVCCTL_TEST_UNSET", ""}});
  EXPECT_EQ(unset.exit_code, 1);
  expect_one_error_line(unset);

  // A config whose pin is not a source.
  std::string path = TestToken::get().dir() + "/literal-pin.toml";
  std::ofstream(path) << "[hsm]\nmodule = \"" << module << "\"\ntoken = \"" << TestToken::get().token_uri()
                      << "\"\npin = \"s3cr3t-pin\"\n";
  Result cfg = ctl({"--config", path, "status"});
  EXPECT_EQ(cfg.exit_code, 1);
  expect_one_error_line(cfg);
  EXPECT_EQ(cfg.err.find("s3cr3t-pin"), std::string::npos) << cfg.err;
}

TEST(Keysvcctl, PinNeverAppearsInOutput) {
  const std::string& pin = TestToken::get().pin();
  std::vector<Result> results = {
      ctl_config({"rotate"}),
      ctl_config({"keys", "generate"}),
      ctl_config({"keys", "generate", "--json"}),
      ctl_config({"keys", "list"}),
      ctl_config({"keys", "list", "--json"}),
      ctl_config({"status"}),
      ctl_config({"status", "--json"}),
      ctl_config({"keys", "revoke", std::string(32, 'f')}),
      ctl_config({"keys", "list", pin}),   // a PIN pasted on the command line
      ctl_config({"keys", "revoke", pin}),
      ctl_config({"keys", "destroy", pin}),
      ctl_config({"rotate", "--every", pin}),
      ctl_config({"status", "--pin", pin}),
      ctl_config({"--pin=" + pin, "status"}),
      ctl({"token", "init", "--module", keysvc::test::kSoftHsmModule, "--label", "x", "--pin-source", pin,
           "--so-pin-source", pin}),
  };
  for (std::size_t k = 0; k < results.size(); ++k) {
    EXPECT_EQ(results[k].all().find(pin), std::string::npos) << "command " << k << ": " << results[k].all();
    if (k == 7) {
      EXPECT_EQ(results[k].exit_code, 1) << results[k].err;  // unknown name
    }
    if (k >= 8) {
      EXPECT_EQ(results[k].exit_code, 2) << k << results[k].err;
    }
  }
}

}  // namespace
