// keysvc-tls-server with keysvc tickets on opencryptoki's soft token and on a software
// TPM through tpm2-pkcs11 (tests/support/*_token.h), against openssl s_client and
// gnutls-cli, TLS 1.3 and 1.2: a full handshake, then a resumption, on each. The
// generation comes from `keysvcctl keys generate` (a TPM's keys come from its own tool:
// the server does not rotate for itself there). SoftHSM runs the same checks in
// tls_server_interop_test.cc.
//
// Every test name contains "interop" so `ctest -R interop` selects them.
#include <gtest/gtest.h>

#include <iostream>
#include <optional>
#include <ostream>
#include <regex>
#include <string>
#include <tuple>
#include <vector>

#include "opencryptoki_token.h"
#include "process.h"
#include "tls_server_process.h"
#include "tpm_token.h"

namespace {

using namespace std::chrono_literals;
using keysvc::test::describe;
using keysvc::test::RunResult;
using keysvc::test::TestBackend;
using keysvc::test::TlsVersion;

enum class Backend { kOpencryptoki, kTpm };
using Param = std::tuple<Backend, TlsVersion>;

// For gtest's listing of the parameter.
void PrintTo(Backend b, std::ostream* os) { *os << (b == Backend::kOpencryptoki ? "opencryptoki" : "tpm"); }

const TestBackend& backend_of(Backend b) {
  if (b == Backend::kOpencryptoki) return keysvc::test::OpencryptokiToken::get();
  return keysvc::test::TpmToken::get();
}

class TokenInterop : public ::testing::TestWithParam<Param> {};

// Empties the backend's token, writes a keysvc TOML `file` in its folder (no rotation by
// the server) and makes one generation with `keysvcctl keys generate`. Returns the
// TOML's path, or "" after a gtest failure.
std::string config_with_one_generation(const TestBackend& b, const std::string& file) {
  b.clear();
  const std::string config = b.dir() + "/" + file;
  keysvc::test::write_test_file(config,
                                "[hsm]\nmodule = \"" + b.module() + "\"\ntoken = \"" + b.token_uri() +
                                    "\"\npin = \"file:pin\"\n\n[rotation]\nself_rotate = false\n\n[tickets]\n"
                                    "create_if_empty = false\n",
                                0600);
  RunResult gen = keysvc::test::run({KEYSVCCTL_BIN, "--config", config, "keys", "generate"}, "", 120s);
  EXPECT_EQ(gen.exit_code, std::optional<int>(0)) << describe(gen);
  return gen.exit_code == std::optional<int>(0) ? config : "";
}

std::string param_name_of(Backend which, TlsVersion v) {
  return std::string(which == Backend::kOpencryptoki ? "opencryptoki" : "tpm") +
         (v == TlsVersion::kTls13 ? "_tls13" : "_tls12");
}

TEST_P(TokenInterop, KeysvcTicketsResumeWithSClientAndGnutlsCli) {
  const auto& [which, v] = GetParam();
  const TestBackend& b = backend_of(which);
  const std::string config = config_with_one_generation(b, "interop.toml");
  ASSERT_FALSE(config.empty());

  keysvc::test::TlsServerProcess server(KEYSVC_TLS_SERVER_BIN, {.tickets = "keysvc", .config = config});
  const std::string sess = b.dir() + "/interop-session.pem";
  RunResult first = keysvc::test::s_client(server.port(), v, "-sess_out", sess);
  ASSERT_EQ(first.exit_code, std::optional<int>(0)) << describe(first);
  RunResult again = keysvc::test::s_client(server.port(), v, "-sess_in", sess);
  ASSERT_EQ(again.exit_code, std::optional<int>(0)) << describe(again);
  EXPECT_NE(again.out.find(std::string("Reused, ") + keysvc::test::tls_version_name(v)), std::string::npos)
      << describe(again);

  std::vector<std::string> gnutls = {"gnutls-cli", "--port", std::to_string(server.port()), "--x509cafile",
                                     keysvc::test::tls_cert_path(), "--resume"};
  if (v == TlsVersion::kTls13) {
    gnutls.push_back("--priority=NORMAL:-VERS-ALL:+VERS-TLS1.3");
    gnutls.push_back("--waitresumption");
  } else {
    gnutls.push_back("--priority=NORMAL:-VERS-ALL:+VERS-TLS1.2");
  }
  gnutls.push_back("127.0.0.1");
  RunResult g = keysvc::test::run(gnutls, "GET / HTTP/1.0\r\n\r\n", 30s);
  ASSERT_EQ(g.exit_code, std::optional<int>(0)) << describe(g);
  EXPECT_NE(g.out.find("This is a resumed session"), std::string::npos) << describe(g);

  const std::string err = server.stop();
  EXPECT_EQ(err.find(b.pin()), std::string::npos) << "the PIN appears in the server's log";
  std::smatch m;
  ASSERT_TRUE(std::regex_search(err, m, std::regex(R"(keysvc tickets: issued=(\d+) .*resumed=(\d+))"))) << err;
  EXPECT_GE(std::stol(m[1]), 2) << err;
  EXPECT_GE(std::stol(m[2]), 2) << err;  // s_client's and gnutls-cli's resumptions, both keysvc's
}

// Resumptions per second that `openssl s_time -reuse` reaches against the server for
// `seconds`; std::nullopt (and a gtest failure) if it did not run or resumed nothing.
std::optional<double> s_time_reuse(int port, TlsVersion v, int seconds) {
  RunResult r = keysvc::test::run({"openssl", "s_time", "-connect", "127.0.0.1:" + std::to_string(port), "-reuse",
                                   "-www", "/", "-time", std::to_string(seconds),
                                   v == TlsVersion::kTls13 ? "-tls1_3" : "-tls1_2"},
                                  "", std::chrono::seconds(seconds * 3 + 20));
  EXPECT_EQ(r.exit_code, std::optional<int>(0)) << describe(r);
  std::smatch m;
  std::string rest = r.out;
  std::optional<double> rate;
  // The last "N connections in T real seconds" is the reuse pass.
  while (std::regex_search(rest, m, std::regex(R"((\d+) connections in ([0-9.]+) real seconds)"))) {
    if (std::stod(m[2]) > 0) rate = std::stod(m[1]) / std::stod(m[2]);
    rest = m.suffix();
  }
  EXPECT_TRUE(rate && *rate > 0) << describe(r);
  return rate;
}

// The default (epoch) tier on each token: a steady stream of resumptions asks nothing of
// the token, so keysvc's rate is compared with OpenSSL's own ticket keys in the same run.
// A figure, not a timing check: the test checks that both resumed and that every
// resumption with keysvc tickets was counted as keysvc's.
TEST_P(TokenInterop, DefaultTierResumptionRateNextToOpensslsOwnKeys) {
  const auto& [which, v] = GetParam();
  const TestBackend& b = backend_of(which);
  const std::string config = config_with_one_generation(b, "rate.toml");
  ASSERT_FALSE(config.empty());
  constexpr int kSeconds = 2;
  std::optional<double> keysvc_rate, openssl_rate;
  {
    keysvc::test::TlsServerProcess server(KEYSVC_TLS_SERVER_BIN, {.tickets = "keysvc", .config = config});
    keysvc_rate = s_time_reuse(server.port(), v, kSeconds);
    const std::string err = server.stop();
    std::smatch m;
    ASSERT_TRUE(std::regex_search(err, m, std::regex(R"(keysvc tickets: issued=(\d+) .*resumed=(\d+))"))) << err;
    EXPECT_GT(std::stol(m[2]), 0) << err;
  }
  {
    keysvc::test::TlsServerProcess server(KEYSVC_TLS_SERVER_BIN, {.tickets = "openssl", .config = config});
    openssl_rate = s_time_reuse(server.port(), v, kSeconds);
    server.stop();
  }
  if (keysvc_rate && openssl_rate)
    std::cout << "[ figure   ] " << param_name_of(which, v) << ": s_time -reuse " << static_cast<long>(*keysvc_rate)
              << " resumptions/s with keysvc tickets (default tier), " << static_cast<long>(*openssl_rate)
              << " with OpenSSL's own keys: ratio " << *keysvc_rate / *openssl_rate << "\n";
}

std::string param_name(const ::testing::TestParamInfo<Param>& info) {
  const auto& [which, v] = info.param;
  return param_name_of(which, v);
}

INSTANTIATE_TEST_SUITE_P(interop, TokenInterop,
                         ::testing::Combine(::testing::Values(Backend::kOpencryptoki, Backend::kTpm),
                                            ::testing::Values(TlsVersion::kTls13, TlsVersion::kTls12)),
                         param_name);

}  // namespace
