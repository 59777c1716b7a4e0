// The C API's preloading (keysvc_openssl.h): keysvc_preload() reads the configuration and
// the PIN once; keysvc_service_open_preloaded() opens the token with that PIN without
// reading its source again (the PIN file may be gone or unreadable by then, as for a
// web server's worker); failures are one line; no call leaves anything on OpenSSL's
// error queue. Real SoftHSM token, in-memory TLS handshakes.
#include <gtest/gtest.h>
#include <openssl/err.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "keysvc/openssl/keysvc_openssl.h"
#include "test_token.h"
#include "tls_pair.h"

namespace {

using keysvc::test::Handshake;
using keysvc::test::TestToken;

// A copy of the test token's config whose PIN file is a copy of its own, so the test
// can take the PIN file away.
std::string config_with_own_pin_file(const std::string& name) {
  const TestToken& token = TestToken::get();
  const std::string pin = token.dir() + "/" + name + ".pin";
  std::filesystem::copy_file(token.pin_path(), pin, std::filesystem::copy_options::overwrite_existing);
  const std::string path = token.dir() + "/" + name + ".toml";
  std::ofstream(path) << "[hsm]\nmodule = \"" << keysvc::test::kSoftHsmModule << "\"\ntoken = \"" << token.token_uri()
                      << "\"\npin = \"file:" << pin << "\"\n";
  return path;
}

TEST(CApiPreload, OpensWithThePreloadedPinWhenThePinFileIsGone) {
  TestToken::get().clear();
  char err[256] = "";
  const std::string config = config_with_own_pin_file("preload");
  ERR_clear_error();  // what the test token's own set-up left (SoftHSM in this process)
  keysvc_preloaded* pre = keysvc_preload(config.c_str(), err, sizeof err);
  ASSERT_NE(pre, nullptr) << err;
  std::filesystem::remove(TestToken::get().dir() + "/preload.pin");

  // Twice, as two workers (or a worker's retry) would.
  for (int i = 0; i < 2; ++i) {
    keysvc_service* svc = keysvc_service_open_preloaded(pre, err, sizeof err);
    ASSERT_NE(svc, nullptr) << err;
    auto server = keysvc::test::make_server_ctx();
    ASSERT_EQ(keysvc_ssl_ctx_install(server.get(), svc, nullptr, nullptr, err, sizeof err), 1) << err;
    keysvc_service_free(svc);
    auto client = keysvc::test::make_client_ctx(TLS1_3_VERSION);
    Handshake h = keysvc::test::handshake(server.get(), client.get());
    ASSERT_TRUE(h.ok) << h.error;
    ASSERT_FALSE(h.tickets.empty());
    EXPECT_TRUE(keysvc::test::handshake(server.get(), client.get(), h.last()).reused);
  }
  keysvc_preloaded_free(pre);
  EXPECT_EQ(ERR_peek_error(), 0ul) << "keysvc left an error on OpenSSL's error queue";
}

TEST(CApiPreload, FailuresAreOneLineAndLeaveNoOpenSslErrors) {
  char err[256] = "";
  const std::string config = config_with_own_pin_file("no-pin");
  std::filesystem::remove(TestToken::get().dir() + "/no-pin.pin");
  ERR_clear_error();  // what the test token's own set-up left (SoftHSM in this process)
  EXPECT_EQ(keysvc_preload(config.c_str(), err, sizeof err), nullptr);
  EXPECT_NE(std::string(err).find("cannot read PIN file"), std::string::npos) << err;
  EXPECT_EQ(std::string(err).find('\n'), std::string::npos) << err;

  EXPECT_EQ(keysvc_preload("/nonexistent/keysvc.toml", err, sizeof err), nullptr);
  EXPECT_NE(std::string(err).find("/nonexistent/keysvc.toml"), std::string::npos) << err;
  EXPECT_EQ(keysvc_preload(nullptr, err, sizeof err), nullptr);
  EXPECT_EQ(keysvc_service_open_preloaded(nullptr, err, sizeof err), nullptr);
  EXPECT_NE(std::string(err).find("no preloaded configuration"), std::string::npos) << err;

  // A preloaded PIN the token refuses: the open fails with the token's reason.
  const std::string wrong = TestToken::get().dir() + "/wrong.toml";
  const std::string wrong_pin = TestToken::get().dir() + "/wrong.pin";
  std::ofstream(wrong_pin) << "not-the-pin\n";
  std::ofstream(wrong) << "[hsm]\nmodule = \"" << keysvc::test::kSoftHsmModule << "\"\ntoken = \""
                       << TestToken::get().token_uri() << "\"\npin = \"file:" << wrong_pin << "\"\n";
  keysvc_preloaded* pre = keysvc_preload(wrong.c_str(), err, sizeof err);
  ASSERT_NE(pre, nullptr) << err;
  EXPECT_EQ(keysvc_service_open_preloaded(pre, err, sizeof err), nullptr);
  EXPECT_NE(std::string(err).find("CKR_PIN_INCORRECT"), std::string::npos) << err;
  EXPECT_EQ(std::string(err).find("not-the-pin"), std::string::npos) << err;
  keysvc_preloaded_free(pre);
  keysvc_preloaded_free(nullptr);
  EXPECT_EQ(ERR_peek_error(), 0ul) << "keysvc left an error on OpenSSL's error queue";
}

}  // namespace
