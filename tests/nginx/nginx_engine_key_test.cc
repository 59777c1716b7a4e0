// The README's nginx set-up for a server key held in the HSM: the stock nginx loads the
// certificate's private key from the SoftHSM test token through the OpenSSL pkcs11
// engine (libengine-pkcs11-openssl, OPENSSL_CONF + `env`), next to keysvc's ticket
// directives; curl and openssl s_client verify the handshakes against the self-signed
// certificate `keysvcctl server-key create` wrote, and a keysvc ticket resumes.
// The workers (www-data when the test runs as root) sign with the token's key, so the
// key is made as the worker user too (tests/support/worker_user.h).
// Every test name contains "Nginx" (ctest -R Nginx).
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <regex>

#include "nginx_keysvc.h"
#include "test_token.h"

namespace {

using namespace std::chrono_literals;
using namespace keysvc::test;

constexpr auto kTimeout = 30s;
constexpr char kEngine[] = "/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so";

// The README's engine configuration, for the test token's module.
std::string write_openssl_conf(const std::string& dir) {
  const std::string path = dir + "/openssl-pkcs11.cnf";
  std::ofstream(path) << "openssl_conf = openssl_init\n[openssl_init]\nengines = engine_section\n"
                         "[engine_section]\npkcs11 = pkcs11_section\n[pkcs11_section]\nengine_id = pkcs11\n"
                         "dynamic_path = "
                      << kEngine << "\nMODULE_PATH = " << keysvc::test::kSoftHsmModule << "\ninit = 1\n";
  return path;
}

TEST(NginxEngineKey, NginxServesTlsWithTheTokenKeyAndKeysvcTickets) {
  if (!std::filesystem::exists(kEngine)) GTEST_SKIP() << kEngine << " missing (libengine-pkcs11-openssl)";
  TestToken::get().clear();
  const std::string dir = TestToken::get().dir() + "/nginx-engine";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  give_to_worker(dir);
  const std::string toml = write_keysvc_toml("nginx-engine.toml", {});
  const std::string cert = dir + "/web.crt";
  RunResult created = ctl(toml, {"server-key", "create", "--label", "web", "--cert-out", cert});
  ASSERT_EQ(created.exit_code, std::optional<int>(0)) << describe(created);

  // libp11's engine (0.4.12) takes a pin-source file's bytes as they are, trailing
  // newline included (keysvc strips it): give it the PIN without one.
  const std::string engine_pin = dir + "/engine-pin";
  std::ofstream(engine_pin) << TestToken::get().pin();
  std::filesystem::permissions(engine_pin, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);

  // nginx's master reads OPENSSL_CONF when it starts; `env` keeps it for the workers.
  ASSERT_EQ(setenv("OPENSSL_CONF", write_openssl_conf(dir).c_str(), 1), 0);
  NginxOptions o;
  o.workers = 2;
  o.env = {"OPENSSL_CONF"};
  o.load_modules = {nginx_module_path()};
  o.http = "keysvc_config " + toml + ";\nkeysvc_tickets on;\n";
  o.cert = cert;
  o.key = "\"engine:pkcs11:pkcs11:token=keysvc-test;object=web;type=private?pin-source=file:" + engine_pin + "\"";
  NginxInstance nginx(dir + "/prefix", o);
  unsetenv("OPENSSL_CONF");
  const std::string port = std::to_string(nginx.port());

  // curl verifies the certificate (and so the token's signature) by name.
  RunResult c = run({"curl", "-sS", "--cacert", cert, "--resolve", "localhost:" + port + ":127.0.0.1",
                                   "https://localhost:" + port + "/"},
                                  "", kTimeout);
  ASSERT_EQ(c.exit_code, std::optional<int>(0)) << describe(c) << "\n--- nginx\n" << nginx.error_log();
  EXPECT_TRUE(std::regex_search(c.out, std::regex(kServerBodyPattern))) << c.out;

  // s_client, TLS 1.2 and 1.3: verified full handshake, then the keysvc ticket resumes.
  for (const std::string version : {"-tls1_3", "-tls1_2"}) {
    const std::string sess = dir + "/session" + version + ".pem";
    std::vector<std::string> argv = {"openssl", "s_client", "-connect", "127.0.0.1:" + port, "-servername",
                                     "localhost", version, "-CAfile", cert, "-verify_return_error",
                                     "-verify_hostname", "localhost", "-ign_eof"};
    auto full_argv = argv;
    full_argv.insert(full_argv.end(), {"-sess_out", sess});
    RunResult full = run(full_argv, "GET / HTTP/1.0\r\n\r\n", kTimeout);
    ASSERT_EQ(full.exit_code, std::optional<int>(0)) << describe(full);
    EXPECT_NE(full.out.find("Verify return code: 0 (ok)"), std::string::npos) << describe(full);
    argv.insert(argv.end(), {"-sess_in", sess});
    RunResult again = run(argv, "GET / HTTP/1.0\r\n\r\n", kTimeout);
    ASSERT_EQ(again.exit_code, std::optional<int>(0)) << describe(again);
    EXPECT_NE(again.out.find("Reused, TLSv1."), std::string::npos) << describe(again) << nginx.error_log();
  }
  stop_and_check(nginx, 2);
}

}  // namespace
