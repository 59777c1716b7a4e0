// The server's own private key in the SoftHSM token through libp11, sharing the module
// with keysvc's ticket sessions in one process: TLS 1.3 and 1.2 handshakes signed by
// the token key (the client verifies against the self-signed certificate) interleaved
// with keysvc ticket resumptions on the same SSL_CTX; either user closing its sessions
// leaves the other working; bad URIs and PINs are one-line errors.
#include "keysvc/openssl/token_private_key.h"

#include <gtest/gtest.h>
#include <openssl/x509.h>

#include <fstream>

#include "keysvc/hsm/error.h"
#include "keysvc/hsm/object.h"
#include "keysvc/openssl/ossl.h"
#include "keysvc/openssl/self_signed_cert.h"
#include "keysvc/openssl/server_key_pair.h"
#include "keysvc/openssl/ticket_adapter.h"
#include "keysvc/ticket_key_service.h"
#include "test_token.h"
#include "tls_pair.h"

namespace keysvc::openssl {

// Readable parameter values (found by argument-dependent lookup, so not in the anonymous namespace).
void PrintTo(ServerKeyType t, std::ostream* os) { *os << to_string(t); }

namespace {

using test::TestToken;

constexpr std::uint8_t kKeyId[] = {0x5e, 0x4e, 0x01};

std::string key_uri(const std::string& label) {
  return "pkcs11:token=keysvc-test;object=" + label + ";type=private";
}

TokenKeyDefaults token_defaults() {
  return {.module = test::kSoftHsmModule, .pin = hsm::PinSource::parse("file:" + TestToken::get().pin_path())};
}

// Generates a key pair labelled `label` in the test token.
void create_key(ServerKeyType type, const std::string& label) {
  auto pool = test::open_pool(TestToken::get().config());
  pool->run([&](hsm::Session& s) { return generate_server_key_pair(s, type, kKeyId, label); });
}

X509Ptr parse_der(const std::vector<std::uint8_t>& der) {
  const unsigned char* p = der.data();
  return X509Ptr(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
}

// A server context whose only private key is `key` (in the token), with `cert`.
test::SslCtxPtr server_ctx(const TokenPrivateKey& key, X509* cert) {
  test::SslCtxPtr ctx(SSL_CTX_new(TLS_server_method()));
  EXPECT_EQ(SSL_CTX_use_certificate(ctx.get(), cert), 1) << test::openssl_errors();
  EXPECT_EQ(SSL_CTX_use_PrivateKey(ctx.get(), key.pkey()), 1) << test::openssl_errors();
  EXPECT_EQ(SSL_CTX_check_private_key(ctx.get()), 1) << test::openssl_errors();
  SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_OFF);
  return ctx;
}

// A client that verifies the server against `cert` and fails the handshake otherwise.
test::SslCtxPtr verifying_client(int version, X509* cert) {
  test::SslCtxPtr ctx = test::make_client_ctx(version);
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  EXPECT_EQ(X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx.get()), cert), 1);
  return ctx;
}

class TokenPrivateKeyTest : public ::testing::TestWithParam<ServerKeyType> {
 protected:
  void SetUp() override {
    TestToken::get().clear();
    create_key(GetParam(), "tls-server");
    service_ = TicketKeyService::open(TestToken::get().config());
  }

  std::shared_ptr<TicketKeyService> service_;
};

INSTANTIATE_TEST_SUITE_P(KeyTypes, TokenPrivateKeyTest,
                         ::testing::Values(ServerKeyType::kEcP256, ServerKeyType::kRsa2048),
                         [](const auto& p) { return p.param == ServerKeyType::kEcP256 ? "EcP256" : "Rsa2048"; });

// Full handshakes signed in the token and keysvc resumptions, interleaved on one
// SSL_CTX, for both protocol versions; every count is exact.
TEST_P(TokenPrivateKeyTest, TokenKeySignsWhileKeysvcTicketsResume) {
  TokenPrivateKey key = TokenPrivateKey::open(key_uri("tls-server"), token_defaults());
  EXPECT_EQ(key.describe_type(), GetParam() == ServerKeyType::kEcP256 ? "EC P-256" : "RSA 2048");
  X509Ptr cert = parse_der(make_self_signed_certificate(key.pkey()).der);
  ASSERT_TRUE(cert);
  test::SslCtxPtr server = server_ctx(key, cert.get());
  install(server.get(), service_);

  constexpr int kRounds = 3;
  int full = 0, resumed = 0;
  for (int version : {TLS1_3_VERSION, TLS1_2_VERSION}) {
    test::SslCtxPtr client = verifying_client(version, cert.get());
    for (int round = 0; round < kRounds; ++round) {
      test::Handshake first = test::handshake(server.get(), client.get());
      ASSERT_TRUE(first.ok) << first.error;
      EXPECT_FALSE(first.reused);
      ASSERT_NE(first.last(), nullptr);
      ++full;
      test::Handshake again = test::handshake(server.get(), client.get(), first.last());
      ASSERT_TRUE(again.ok) << again.error;
      EXPECT_TRUE(again.reused) << "round " << round << " version " << version;
      ++resumed;
    }
  }
  EXPECT_EQ(full, 2 * kRounds);
  const TicketCallbackCounters c = counters(server.get());
  EXPECT_EQ(c.resumed, static_cast<std::uint64_t>(resumed));
  // TLS 1.3: 2 tickets per full handshake + 1 per resumption; TLS 1.2: 1 per full handshake.
  EXPECT_EQ(c.issued, static_cast<std::uint64_t>(kRounds * (2 + 1) + kRounds * 1));
  EXPECT_EQ(c.hsm_error, 0u);
  EXPECT_EQ(c.issue_failed, 0u);
}

// A client that trusts a different certificate refuses the handshake: the successful
// ones above were verified, not merely completed.
TEST_P(TokenPrivateKeyTest, ClientTrustingAnotherCertificateRefuses) {
  TokenPrivateKey key = TokenPrivateKey::open(key_uri("tls-server"), token_defaults());
  X509Ptr cert = parse_der(make_self_signed_certificate(key.pkey()).der);
  test::SslCtxPtr server = server_ctx(key, cert.get());
  test::SslCtxPtr client = test::make_client_ctx(TLS1_3_VERSION);  // trusts nothing
  SSL_CTX_set_verify(client.get(), SSL_VERIFY_PEER, nullptr);
  test::Handshake h = test::handshake(server.get(), client.get());
  EXPECT_FALSE(h.ok) << "an unverifiable server certificate was accepted";
}

// libp11 releasing its key and keysvc closing its pool each leave the other user's
// sessions and login intact.
TEST_P(TokenPrivateKeyTest, EitherUserClosingLeavesTheOtherWorking) {
  auto key = std::make_unique<TokenPrivateKey>(TokenPrivateKey::open(key_uri("tls-server"), token_defaults()));
  X509Ptr cert = parse_der(make_self_signed_certificate(key->pkey()).der);
  test::SslCtxPtr client = verifying_client(TLS1_3_VERSION, cert.get());
  {
    test::SslCtxPtr server = server_ctx(*key, cert.get());
    ASSERT_TRUE(test::handshake(server.get(), client.get()).ok);
  }
  // The ticket service goes: its sessions close; the token key still signs.
  service_.reset();
  {
    test::SslCtxPtr server = server_ctx(*key, cert.get());
    test::Handshake h = test::handshake(server.get(), client.get());
    EXPECT_TRUE(h.ok) << h.error;
  }
  // A new service comes, then the token key goes: tickets still resume.
  service_ = TicketKeyService::open(TestToken::get().config());
  key.reset();
  test::SslCtxPtr plain = test::make_server_ctx();
  install(plain.get(), service_);
  test::SslCtxPtr any_client = test::make_client_ctx(TLS1_3_VERSION);
  test::Handshake first = test::handshake(plain.get(), any_client.get());
  ASSERT_TRUE(first.ok) << first.error;
  ASSERT_NE(first.last(), nullptr);
  test::Handshake again = test::handshake(plain.get(), any_client.get(), first.last());
  EXPECT_TRUE(again.ok && again.reused) << again.error;
  EXPECT_EQ(counters(plain.get()).hsm_error, 0u);
}

// The key is really in the token: sensitive, never extractable, sign only.
TEST_P(TokenPrivateKeyTest, KeyIsHeldInTheToken) {
  auto pool = test::open_pool(TestToken::get().config());
  pool->run([](hsm::Session& s) {
    auto keys = hsm::find_objects(s, {.object_class = CKO_PRIVATE_KEY, .label = "tls-server"});
    EXPECT_EQ(keys.size(), 1u);
    if (keys.size() != 1) return 0;
    EXPECT_TRUE(hsm::get_bool_attribute(s, keys[0], CKA_SENSITIVE));
    EXPECT_TRUE(hsm::get_bool_attribute(s, keys[0], CKA_ALWAYS_SENSITIVE));
    EXPECT_FALSE(hsm::get_bool_attribute(s, keys[0], CKA_EXTRACTABLE));
    EXPECT_TRUE(hsm::get_bool_attribute(s, keys[0], CKA_NEVER_EXTRACTABLE));
    EXPECT_TRUE(hsm::get_bool_attribute(s, keys[0], CKA_SIGN));
    EXPECT_FALSE(hsm::get_bool_attribute(s, keys[0], CKA_DECRYPT));
    EXPECT_FALSE(hsm::get_bool_attribute(s, keys[0], CKA_UNWRAP));
    EXPECT_FALSE(hsm::get_bool_attribute(s, keys[0], CKA_DERIVE));
    EXPECT_THROW(hsm::get_attribute(s, keys[0], GetParam() == ServerKeyType::kEcP256 ? CKA_VALUE
                                                                                      : CKA_PRIVATE_EXPONENT),
                 hsm::Pkcs11Error);
    return 0;
  });
}

class TokenPrivateKeyErrorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    TestToken::get().clear();
    create_key(ServerKeyType::kEcP256, "tls-server");
  }
  // The message of the ConfigError `open` throws.
  static std::string config_error(const std::string& uri, const TokenKeyDefaults& defaults = token_defaults()) {
    try {
      TokenPrivateKey::open(uri, defaults);
    } catch (const hsm::ConfigError& e) {
      return e.what();
    }
    ADD_FAILURE() << "no ConfigError for " << uri;
    return {};
  }
};

TEST_F(TokenPrivateKeyErrorTest, UnknownLabelNamesTheUri) {
  std::string m = config_error(key_uri("no-such-key"));
  EXPECT_NE(m.find("no private key matches 'pkcs11:token=keysvc-test;object=no-such-key"), std::string::npos) << m;
}

TEST_F(TokenPrivateKeyErrorTest, UriWithoutAKeyIsRefused) {
  EXPECT_NE(config_error("pkcs11:token=keysvc-test").find("names no key"), std::string::npos);
  EXPECT_NE(config_error("pkcs11:token=keysvc-test;object=tls-server;type=cert").find("private key"),
            std::string::npos);
  EXPECT_NE(config_error("pkcs11:token=keysvc-test;object=%zz").find("invalid PKCS#11 key URI"), std::string::npos);
}

TEST_F(TokenPrivateKeyErrorTest, UnknownTokenIsRefused) {
  EXPECT_FALSE(config_error("pkcs11:token=elsewhere;object=tls-server").empty());
}

TEST_F(TokenPrivateKeyErrorTest, NoModuleOrPinSourceIsRefused) {
  EXPECT_NE(config_error(key_uri("tls-server"), {.pin = token_defaults().pin}).find("no PKCS#11 module"),
            std::string::npos);
  EXPECT_NE(config_error(key_uri("tls-server"), {.module = test::kSoftHsmModule}).find("no PIN source"),
            std::string::npos);
}

TEST_F(TokenPrivateKeyErrorTest, UriModuleAndPinSourceNeedNoDefaults) {
  TokenPrivateKey key = TokenPrivateKey::open(key_uri("tls-server") + "?module-path=" + test::kSoftHsmModule +
                                                  "&pin-source=file:" + TestToken::get().pin_path(),
                                              {});
  EXPECT_NE(key.pkey(), nullptr);
}

TEST_F(TokenPrivateKeyErrorTest, WrongPinIsRefusedAndNeverShown) {
  const std::string wrong = TestToken::get().dir() + "/wrong-pin";
  std::ofstream(wrong) << "not-" << TestToken::get().pin() << "\n";
  try {
    TokenPrivateKey::open(key_uri("tls-server"), {.module = test::kSoftHsmModule,
                                                   .pin = hsm::PinSource::parse("file:" + wrong)});
    ADD_FAILURE() << "a wrong PIN was accepted";
  } catch (const hsm::Pkcs11Error& e) {
    EXPECT_EQ(e.rv(), CKR_PIN_INCORRECT);
    EXPECT_EQ(std::string(e.what()).find(TestToken::get().pin()), std::string::npos);
  }
}

TEST_F(TokenPrivateKeyErrorTest, PinValueIsNeverInMessages) {
  // Logged in already (as with a running ticket service), so the URI's PIN is not tried.
  auto pool = test::open_pool(TestToken::get().config());
  const std::string secret = "S3cretPinValue";
  std::string m = config_error("pkcs11:token=keysvc-test;object=missing?pin-value=" + secret, {.module = test::kSoftHsmModule});
  EXPECT_EQ(m.find(secret), std::string::npos) << m;
  m = config_error("pkcs11:token=keysvc-test;object=%zz?pin-value=" + secret, {});
  EXPECT_EQ(m.find(secret), std::string::npos) << m;
}

TEST(TokenPrivateKeyUri, RecognisesPkcs11Uris) {
  EXPECT_TRUE(is_pkcs11_uri("pkcs11:token=a;object=b"));
  EXPECT_FALSE(is_pkcs11_uri("/etc/keysvc/server.key"));
  EXPECT_FALSE(is_pkcs11_uri("server.pkcs11:x"));
}

}  // namespace
}  // namespace keysvc::openssl
