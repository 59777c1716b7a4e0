// keysvcctl on each PKCS#11 implementation keysvc supports (docs/DEPLOYMENT.md,
// "Compatibility"): SoftHSM, opencryptoki's soft token, a software TPM through
// tpm2-pkcs11. On each: `doctor` is green and leaves the token as it found it; keys
// generate, rotate and revoke work, and revocation never leaves the token without an
// encrypting generation. And a token that lacks what keysvc needs (the fault module
// refusing C_GenerateKey) makes doctor name it and the server refuse with one line.
//
// Each TEST runs in its own process (gtest_discover_tests), so each brings up its own
// token: pkcsslotd in private namespaces, or swtpm + dbus-daemon + tpm2-abrmd.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "fault_control.h"
#include "opencryptoki_token.h"
#include "process.h"
#include "test_token.h"
#include "tpm_token.h"

namespace {

using namespace std::chrono_literals;
using keysvc::test::RunResult;
using keysvc::test::TestBackend;

RunResult ctl(const TestBackend& b, std::vector<std::string> args) {
  std::vector<std::string> argv{KEYSVCCTL_PATH, "--config", b.config_path()};
  argv.insert(argv.end(), args.begin(), args.end());
  return keysvc::test::run(argv, "", 120s);
}

std::string describe(const RunResult& r) {
  return "exit " + (r.exit_code ? std::to_string(*r.exit_code) : std::string("(timeout)")) + "\nstdout:\n" + r.out +
         "\nstderr:\n" + r.err;
}

// The lifecycle every implementation must support, through keysvcctl in child processes.
void lifecycle(const TestBackend& b) {
  SCOPED_TRACE(b.name());
  b.clear();
  const auto empty = b.objects();

  RunResult doctor = ctl(b, {"doctor"});
  EXPECT_EQ(doctor.exit_code, std::optional<int>(0)) << describe(doctor);
  EXPECT_EQ(doctor.out.find("FAIL"), std::string::npos) << doctor.out;
  EXPECT_NE(doctor.out.find("keysvc can run on this token"), std::string::npos) << doctor.out;
  EXPECT_EQ(b.objects(), empty) << "doctor left something in the token";
  std::cout << "[tokens] keysvcctl doctor on " << b.name() << ":\n" << doctor.out << std::flush;

  RunResult gen = ctl(b, {"keys", "generate"});
  ASSERT_EQ(gen.exit_code, std::optional<int>(0)) << describe(gen);
  const std::string first = gen.out.substr(0, 32);
  RunResult rot = ctl(b, {"rotate", "--json"});
  ASSERT_EQ(rot.exit_code, std::optional<int>(0)) << describe(rot);
  RunResult list = ctl(b, {"keys", "list", "--json"});
  ASSERT_EQ(list.exit_code, std::optional<int>(0)) << describe(list);
  EXPECT_NE(list.out.find("\"held_in_token\": true"), std::string::npos) << list.out;
  EXPECT_EQ(list.out.find("\"held_in_token\": false"), std::string::npos) << list.out;

  RunResult rev = ctl(b, {"keys", "revoke", first, "--json"});
  ASSERT_EQ(rev.exit_code, std::optional<int>(0)) << describe(rev);
  EXPECT_EQ(rev.out.find("\"encrypt_generation\": null"), std::string::npos) << rev.out;
  RunResult status = ctl(b, {"status", "--json"});
  ASSERT_EQ(status.exit_code, std::optional<int>(0)) << describe(status);
  EXPECT_EQ(status.out.find("\"encrypt_generation\": null"), std::string::npos) << status.out;
  EXPECT_NE(status.out.find("\"revoked\": 1"), std::string::npos) << status.out;
  for (const auto* r : {&gen, &rot, &list, &rev, &status, &doctor})
    EXPECT_EQ((r->out + r->err).find(b.pin()), std::string::npos) << "the PIN appears in keysvcctl's output";
}

TEST(Tokens, KeysvcctlLifecycleAndDoctorOnOpencryptoki) { lifecycle(keysvc::test::OpencryptokiToken::get()); }

TEST(Tokens, KeysvcctlLifecycleAndDoctorOnTpm) { lifecycle(keysvc::test::TpmToken::get()); }

TEST(Tokens, KeysvcctlLifecycleAndDoctorOnSoftHsm) { lifecycle(keysvc::test::TestToken::get()); }

// A token without key generation: doctor names it and exits 1; a server on an empty ring
// refuses to start with one line naming the capability; nothing changed in the token.
TEST(Tokens, ATokenThatCannotGenerateKeysIsNamedByDoctorAndRefusedByTheServer) {
  auto& token = keysvc::test::TestToken::get();
  token.clear();
  keysvc::test::FaultControl faults(token.dir() + "/faults");
  faults.export_env();
  faults.set("C_GenerateKey CKR_MECHANISM_INVALID\n");
  const std::string config = token.dir() + "/faulty.toml";
  keysvc::test::write_test_file(config,
                                "[hsm]\nmodule = \"" + keysvc::test::FaultControl::module_path() + "\"\ntoken = \"" +
                                    token.token_uri() + "\"\npin = \"file:pin\"\n",
                                0600);
  const auto before = token.objects();
  RunResult doctor = keysvc::test::run({KEYSVCCTL_PATH, "--config", config, "doctor"}, "", 60s);
  EXPECT_EQ(doctor.exit_code, std::optional<int>(1)) << describe(doctor);
  EXPECT_NE(doctor.out.find("FAIL"), std::string::npos) << doctor.out;
  EXPECT_NE(doctor.out.find("CKM_GENERIC_SECRET_KEY_GEN"), std::string::npos) << doctor.out;
  EXPECT_NE(doctor.out.find("keysvc cannot run on this token"), std::string::npos) << doctor.out;

  RunResult server = keysvc::test::run({KEYSVC_TLS_SERVER_BIN, "--config", config, "--listen", "127.0.0.1:0",
                                        "--cert", token.dir() + "/faulty.crt", "--key", token.dir() + "/faulty.key",
                                        "--tickets", "keysvc", "--log-level", "error"},
                                       "", 60s);
  EXPECT_NE(server.exit_code, std::optional<int>(0)) << describe(server);
  EXPECT_NE(server.err.find("CKM_GENERIC_SECRET_KEY_GEN"), std::string::npos) << server.err;
  EXPECT_EQ(keysvc::test::count_lines(server.err), 1u) << server.err;
  RunResult gen = keysvc::test::run({KEYSVCCTL_PATH, "--config", config, "keys", "generate"}, "", 60s);
  EXPECT_EQ(gen.exit_code, std::optional<int>(1)) << describe(gen);
  EXPECT_EQ(keysvc::test::count_lines(gen.err), 1u) << gen.err;
  faults.clear();
  EXPECT_EQ(token.objects(), before);
}

}  // namespace
