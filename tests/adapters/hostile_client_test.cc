// What a hostile client or a careless server configuration can make of keysvc's adapter
// (keysvc/openssl/ticket_adapter.h), on a real SoftHSM token:
//   - one TLS 1.3 ClientHello carrying 1,600 PSK identities under the real key name
//     (built byte by byte here, as an attacker would) costs at most the per-handshake
//     cap of derivations and is answered with a full handshake;
//   - install() refuses early data with anti-replay off, and leaves a session timeout
//     the server chose itself alone when it is shorter than tickets.lifetime.
#include "keysvc/openssl/ticket_adapter.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "keysvc/ticket_key_service.h"
#include "test_token.h"
#include "tls_pair.h"

namespace keysvc::openssl {
namespace {

using Bytes = std::vector<std::uint8_t>;

void put16(Bytes& b, std::size_t v) {
  b.push_back(static_cast<std::uint8_t>(v >> 8));
  b.push_back(static_cast<std::uint8_t>(v));
}
void put24(Bytes& b, std::size_t v) {
  b.push_back(static_cast<std::uint8_t>(v >> 16));
  put16(b, v & 0xffff);
}
void append(Bytes& b, const Bytes& more) { b.insert(b.end(), more.begin(), more.end()); }
Bytes random_bytes(std::size_t n) {
  Bytes b(n);
  EXPECT_EQ(RAND_bytes(b.data(), static_cast<int>(n)), 1);
  return b;
}
// One TLS extension: type, 2-byte length, body.
void extension(Bytes& out, std::uint16_t type, const Bytes& body) {
  put16(out, type);
  put16(out, body.size());
  append(out, body);
}

// A TLS 1.3 ClientHello (X25519 key share, AES-128-GCM) whose pre_shared_key extension
// offers `identities` tickets, each the real key name and a random IV: the shortest
// identity OpenSSL hands to the ticket callback, so that the most fit in the 64 KiB of a
// ClientHello's extensions. One binder (OpenSSL reads the binders only for an identity
// it accepted). Returned as TLS records of at most 16 KiB of handshake bytes each.
Bytes psk_flood_client_hello(const KeyName& name, std::size_t identities) {
  EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "X25519");
  Bytes share(32);
  std::size_t share_len = share.size();
  EXPECT_EQ(EVP_PKEY_get_raw_public_key(key, share.data(), &share_len), 1);
  EVP_PKEY_free(key);

  Bytes ext;
  extension(ext, 0x002b, {0x02, 0x03, 0x04});              // supported_versions: TLS 1.3
  extension(ext, 0x000a, {0x00, 0x02, 0x00, 0x1d});        // supported_groups: x25519
  extension(ext, 0x000d, {0x00, 0x06, 0x04, 0x03, 0x08, 0x04, 0x08, 0x09});  // signature_algorithms
  Bytes ks;
  put16(ks, 2 + 2 + share.size());
  append(ks, {0x00, 0x1d});
  put16(ks, share.size());
  append(ks, share);
  extension(ext, 0x0033, ks);                              // key_share
  extension(ext, 0x002d, {0x01, 0x01});                    // psk_key_exchange_modes: psk_dhe_ke
  Bytes ids, binders = {32};
  append(binders, Bytes(32, 0));
  for (std::size_t i = 0; i < identities; ++i) {
    Bytes ticket(name.begin(), name.end());
    append(ticket, random_bytes(16));  // the IV
    put16(ids, ticket.size());
    append(ids, ticket);
    append(ids, {0, 0, 0, 0});  // obfuscated_ticket_age
  }
  Bytes psk;
  put16(psk, ids.size());
  append(psk, ids);
  put16(psk, binders.size());
  append(psk, binders);
  extension(ext, 0x0029, psk);  // pre_shared_key: always the last extension

  Bytes body = {0x03, 0x03};
  append(body, random_bytes(32));
  body.push_back(32);
  append(body, random_bytes(32));  // legacy_session_id
  append(body, {0x00, 0x02, 0x13, 0x01, 0x01, 0x00});  // TLS_AES_128_GCM_SHA256; no compression
  put16(body, ext.size());
  append(body, ext);
  Bytes handshake = {0x01};
  put24(handshake, body.size());
  append(handshake, body);

  Bytes records;
  for (std::size_t at = 0; at < handshake.size(); at += 16384) {
    const std::size_t n = std::min<std::size_t>(16384, handshake.size() - at);
    append(records, {0x16, 0x03, 0x01});
    put16(records, n);
    records.insert(records.end(), handshake.begin() + static_cast<long>(at), handshake.begin() + static_cast<long>(at + n));
  }
  return records;
}

// The extension types of the ServerHello at the start of `out` (the server's first
// records), or nothing if it does not start with one.
std::vector<std::uint16_t> server_hello_extensions(const Bytes& out) {
  auto at16 = [&](std::size_t i) { return static_cast<std::uint16_t>(out.at(i) << 8 | out.at(i + 1)); };
  if (out.size() < 5 + 4 + 2 + 32 + 1 || out[0] != 0x16 || out[5] != 0x02) return {};
  std::size_t i = 5 + 4 + 2 + 32;
  i += 1 + out.at(i);  // legacy_session_id_echo
  i += 2 + 1;          // cipher_suite, legacy_compression_method
  const std::size_t end = i + 2 + at16(i);
  std::vector<std::uint16_t> types;
  for (i += 2; i + 4 <= end; i += 4 + at16(i + 2)) types.push_back(at16(i));
  return types;
}

class HostileClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    test::TestToken::get().clear();
    // The strict tier: every presented ticket under a known name costs derivations in the
    // token, which is what the cap bounds.
    Config config = test::strict(test::TestToken::get().config());
    config.tickets.lifetime = std::chrono::hours(1);  // not OpenSSL's default (2 h)
    service_ = TicketKeyService::open(config);
    server_ = test::make_server_ctx();
  }
  std::shared_ptr<TicketKeyService> service_;
  test::SslCtxPtr server_;
};

TEST_F(HostileClientTest, PskFloodCostsAtMostTheCapAndGetsAFullHandshake) {
  install(server_.get(), service_);
  const KeyName name = *service_->encrypt_key_name();
  const Bytes hello = psk_flood_client_hello(name, 1600);
  ASSERT_GT(hello.size(), 59u * 1024) << "about as large as the ClientHello of the attack";
  const ServiceCounters before = service_->counters();
  const TicketCallbackCounters tls_before = counters(server_.get());

  SSL* ssl = SSL_new(server_.get());
  BIO* in = BIO_new(BIO_s_mem());
  BIO* out = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl, in, out);
  ASSERT_EQ(BIO_write(in, hello.data(), static_cast<int>(hello.size())), static_cast<int>(hello.size()));
  const int r = SSL_accept(ssl);
  EXPECT_EQ(SSL_get_error(ssl, r), SSL_ERROR_WANT_READ) << "the server waits for the client's Finished: "
                                                        << test::openssl_errors();
  Bytes reply(static_cast<std::size_t>(BIO_pending(out)));
  BIO_read(out, reply.data(), static_cast<int>(reply.size()));
  const auto types = server_hello_extensions(reply);
  ASSERT_FALSE(types.empty()) << "no ServerHello";
  EXPECT_EQ(std::count(types.begin(), types.end(), 0x0029), 0) << "the server accepted a PSK";
  EXPECT_EQ(std::count(types.begin(), types.end(), 0x0033), 1) << "a full (EC)DHE handshake";
  EXPECT_FALSE(SSL_session_reused(ssl));
  SSL_free(ssl);

  const ServiceCounters after = service_->counters();
  const TicketCallbackCounters tls_after = counters(server_.get());
  // Two identities opened (the cap), two HMACs each in the strict tier; 1,598 refused
  // unopened, none of them reported as a MAC failure.
  EXPECT_LE(after.opened - before.opened, 2u);
  EXPECT_LE(after.hsm_calls - before.hsm_calls, 4u);
  EXPECT_GE(tls_after.over_cap - tls_before.over_cap, 1598u);
  EXPECT_LE(tls_after.rejected_bad_ticket - tls_before.rejected_bad_ticket, 2u);
}

TEST_F(HostileClientTest, InstallRefusesReplayableEarlyData) {
  SSL_CTX_set_max_early_data(server_.get(), 16384);
  SSL_CTX_set_options(server_.get(), SSL_OP_NO_ANTI_REPLAY);
  try {
    install(server_.get(), service_);
    ADD_FAILURE() << "installed on an SSL_CTX that accepts replayable 0-RTT";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("SSL_OP_NO_ANTI_REPLAY"), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
  }
  EXPECT_EQ(counters(server_.get()).issued, 0u);
  // With anti-replay on again it installs (OpenSSL then keeps TLS 1.3 tickets stateful).
  SSL_CTX_clear_options(server_.get(), SSL_OP_NO_ANTI_REPLAY);
  EXPECT_NO_THROW(install(server_.get(), service_));
}

TEST_F(HostileClientTest, SessionTimeoutTheServerChoseIsKeptOrCapped) {
  const long lifetime = static_cast<long>(service_->config().tickets.lifetime.count());
  ASSERT_GT(lifetime, 60);
  install(server_.get(), service_);
  EXPECT_EQ(SSL_CTX_get_timeout(server_.get()), lifetime) << "OpenSSL's default becomes tickets.lifetime";

  test::SslCtxPtr shorter = test::make_server_ctx();
  SSL_CTX_set_timeout(shorter.get(), 60);
  install(shorter.get(), service_);
  EXPECT_EQ(SSL_CTX_get_timeout(shorter.get()), 60) << "the server's shorter timeout is its decision";

  test::SslCtxPtr longer = test::make_server_ctx();
  SSL_CTX_set_timeout(longer.get(), 10 * lifetime);
  install(longer.get(), service_);
  EXPECT_EQ(SSL_CTX_get_timeout(longer.get()), lifetime) << "no ticket outlives tickets.lifetime";
}

}  // namespace
}  // namespace keysvc::openssl
