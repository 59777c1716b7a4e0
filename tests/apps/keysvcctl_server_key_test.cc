// keysvcctl server-key create, end to end: the key pair it makes in the SoftHSM token
// signs keysvc-tls-server's TLS 1.3 and 1.2 handshakes (openssl s_client verifies them
// against the certificate it wrote) while keysvc tickets resume in the same process,
// and the server exits cleanly. Bad input: one error line, exit 1 or 2, token unchanged.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <regex>

#include "keysvc/hsm/object.h"
#include "keysvc/ticket_key_service.h"
#include "process.h"
#include "test_token.h"

namespace {

using namespace std::chrono_literals;
using keysvc::test::Process;
using keysvc::test::RunResult;
using keysvc::test::TestToken;

constexpr auto kTimeout = 30s;

std::string dir() {
  std::string d = TestToken::get().dir() + "/server-key";
  std::filesystem::create_directories(d);
  return d;
}

RunResult keysvcctl(std::vector<std::string> args) {
  args.insert(args.begin(), {KEYSVCCTL_PATH, "--config", TestToken::get().config_path()});
  return keysvc::test::run(args, "", kTimeout);
}

std::string describe(const RunResult& r) {
  return "exit " + (r.exit_code ? std::to_string(*r.exit_code) : std::string("(timed out)")) + "\n--- stdout\n" +
         r.out + "\n--- stderr\n" + r.err;
}

// Labels of every object on the token (public and private).
std::vector<std::string> token_objects() {
  auto pool = keysvc::test::open_pool(TestToken::get().config());
  return pool->run([](keysvc::hsm::Session& s) {
    std::vector<std::string> labels;
    for (auto h : keysvc::hsm::find_objects(s, {})) {
      auto l = keysvc::hsm::get_attribute(s, h, CKA_LABEL);
      labels.emplace_back(l.begin(), l.end());
    }
    std::sort(labels.begin(), labels.end());
    return labels;
  });
}

class ServerKeyCreateTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    TestToken::get().clear();
    std::filesystem::remove_all(dir());
  }
};

INSTANTIATE_TEST_SUITE_P(Types, ServerKeyCreateTest, ::testing::Values("ec-p256", "rsa-2048"),
                         [](const auto& p) { return p.param == "ec-p256" ? "EcP256" : "Rsa2048"; });

// s_client: one request, full handshake (-sess_out) or resumption (-sess_in).
RunResult s_client(int port, const std::string& version, const std::string& cert, const std::string& sess_flag,
                   const std::string& sess) {
  return keysvc::test::run({"openssl", "s_client", "-connect", "127.0.0.1:" + std::to_string(port), "-servername",
                            "localhost", version, "-CAfile", cert, "-verify_return_error", "-verify_hostname",
                            "localhost", "-ign_eof", sess_flag, sess},
                           "GET / HTTP/1.0\r\n\r\n", kTimeout);
}

TEST_P(ServerKeyCreateTest, TokenKeySignsServerHandshakesWhileTicketsResume) {
  const std::string cert = dir() + "/server.crt";
  RunResult created = keysvcctl({"server-key", "create", "--label", "web", "--type", GetParam(), "--cert-out", cert,
                                 "--store-cert", "--json"});
  ASSERT_EQ(created.exit_code, std::optional<int>(0)) << describe(created);
  EXPECT_NE(created.out.find("\"key_uri\": \"pkcs11:token=keysvc-test;object=web;type=private\""),
            std::string::npos)
      << created.out;
  EXPECT_EQ(token_objects(), (std::vector<std::string>{"web", "web", "web"}));  // private, public, certificate

  // The ticket token and the key's token are one: the key's PIN comes from the config.
  Process server({KEYSVC_TLS_SERVER_BIN, "--listen", "127.0.0.1:0", "--cert", cert, "--key",
                  "pkcs11:token=keysvc-test;object=web;type=private", "--config", TestToken::get().config_path(),
                  "--threads", "2"});
  auto m = server.wait_for_stderr(std::regex(R"(listening on 127\.0\.0\.1:(\d+)\n)"), kTimeout);
  ASSERT_TRUE(m) << server.err();
  const int port = std::stoi((*m)[1]);
  EXPECT_NE(server.err().find("server key: token key pkcs11:token=keysvc-test;object=web;type=private"),
            std::string::npos)
      << server.err();

  for (const std::string version : {"-tls1_3", "-tls1_2"}) {
    const std::string sess = dir() + "/session" + version + ".pem";
    RunResult full = s_client(port, version, cert, "-sess_out", sess);
    ASSERT_EQ(full.exit_code, std::optional<int>(0)) << describe(full);
    EXPECT_NE(full.out.find("Verify return code: 0 (ok)"), std::string::npos) << describe(full);
    EXPECT_NE(full.out.find("New, TLSv1."), std::string::npos) << describe(full);
    RunResult again = s_client(port, version, cert, "-sess_in", sess);
    ASSERT_EQ(again.exit_code, std::optional<int>(0)) << describe(again);
    EXPECT_NE(again.out.find("Reused, TLSv1."), std::string::npos) << describe(again);
  }

  server.signal(SIGTERM);
  EXPECT_EQ(server.wait(kTimeout), std::optional<int>(0)) << server.err();
  EXPECT_NE(server.err().find("stopped after 4 connection(s): 2 full handshake(s), 2 resumed, 0 failed"),
            std::string::npos)
      << server.err();
  EXPECT_NE(server.err().find("resumed=2"), std::string::npos) << server.err();
  EXPECT_EQ(server.err().find(TestToken::get().pin()), std::string::npos);
}

// A pin-value in --key would put the PIN in argv: refused before anything starts, with
// one line that does not repeat it.
TEST_F(ServerKeyCreateTest, TlsServerRefusesAPinValueInItsKeyUri) {
  const std::string pin = TestToken::get().pin();
  RunResult r = keysvc::test::run({KEYSVC_TLS_SERVER_BIN, "--listen", "127.0.0.1:0", "--cert", dir() + "/server.crt",
                                   "--key", "pkcs11:token=keysvc-test;object=web;type=private?pin-value=" + pin,
                                   "--config", TestToken::get().config_path()},
                                  "", kTimeout);
  EXPECT_EQ(r.exit_code, std::optional<int>(2)) << describe(r);
  EXPECT_EQ(keysvc::test::count_lines(r.err), 1u) << describe(r);
  EXPECT_NE(r.err.find("pin-value would put the PIN in argv"), std::string::npos) << describe(r);
  EXPECT_EQ(r.err.find(pin), std::string::npos) << describe(r);
  EXPECT_FALSE(std::filesystem::exists(dir() + "/server.crt"));
}

TEST_F(ServerKeyCreateTest, BadInputChangesNothing) {
  const std::string cert = dir() + "/server.crt";
  ASSERT_EQ(keysvcctl({"server-key", "create", "--label", "web", "--cert-out", cert}).exit_code,
            std::optional<int>(0));
  const std::vector<std::string> before = token_objects();
  struct Case {
    std::vector<std::string> args;
    int exit_code;
    std::string says;
  };
  const std::vector<Case> cases = {
      {{"--label", "web", "--cert-out", dir() + "/other.crt"}, 1, "already has objects labelled 'web'"},
      {{"--label", "new", "--cert-out", cert}, 1, "already exists"},
      {{"--label", "new", "--cert-out", dir() + "/no/such/dir.crt"}, 1, "no directory"},
      {{"--label", "bad label", "--cert-out", dir() + "/x.crt"}, 2, "--label may only contain"},
      {{"--label", "new", "--cert-out", dir() + "/x.crt", "--type", "dsa"}, 2, "--type"},
      {{"--label", "new", "--cert-out", dir() + "/x.crt", "--days", "0"}, 2, "--days"},
      {{"--label", "new", "--cert-out", dir() + "/x.crt", "--alt-names", "NOPE:x"}, 1, "subjectAltName"},
      {{"--label", "new"}, 2, "--cert-out"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args = {"server-key", "create"};
    args.insert(args.end(), c.args.begin(), c.args.end());
    RunResult r = keysvcctl(args);
    EXPECT_EQ(r.exit_code, std::optional<int>(c.exit_code)) << describe(r);
    EXPECT_EQ(keysvc::test::count_lines(r.err), 1u) << describe(r);
    EXPECT_NE(r.err.find(c.says), std::string::npos) << describe(r);
    EXPECT_EQ(token_objects(), before) << describe(r);
  }
  EXPECT_FALSE(std::filesystem::exists(dir() + "/x.crt"));
}

}  // namespace
