// keysvc over a network HSM stand-in: `p11-kit server` exports the SoftHSM test token on
// a unix socket and the service loads p11-kit-client.so (every PKCS#11 call is an RPC).
//   - the ticket path and rotation (key generation in the token) work through it;
//   - killing the server (and its connections) mid-load never aborts a handshake or
//     crashes the process: handshakes go on as full handshakes;
//   - after the server is restarted on the same socket, resumption comes back by itself:
//     p11-kit 0.24's client never reconnects (every call keeps failing with
//     CKR_DEVICE_REMOVED until C_Finalize + C_Initialize), so keysvc restarts the module
//     when the breaker's probe finds the device gone (docs/RELIABILITY.md). The time from
//     the restart to the first resumed handshake is printed; 5 s is the (generous) bound.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <iostream>
#include <thread>

#include "handshake_load.h"
#include "keysvc/token_gateway.h"
#include "keysvc/openssl/ticket_adapter.h"
#include "p11kit_server.h"
#include "test_token.h"
#include "tls_pair.h"

namespace keysvc {
namespace {

using namespace std::chrono_literals;

class NetworkHsm : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ::signal(SIGPIPE, SIG_IGN);  // as every TLS server does (keysvc-tls-server, nginx)
    test::TestToken& token = test::TestToken::get();
    server_ = new test::P11KitServer(token.dir() + "/p11kit.sock", token.token_uri());
    server_->start();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }

  void SetUp() override {
    test::TestToken::get().clear();
    Config config = test::TestToken::get().config();
    config.hsm.module = test::kP11KitClientModule;
    config.hsm.call_timeout = 500ms;
    config.hsm.breaker_backoff = 100ms;
    service_ = TicketKeyService::open(config);
    tls_ = test::make_server_ctx();
    openssl::install(tls_.get(), service_);
  }

  static test::P11KitServer* server_;
  std::shared_ptr<TicketKeyService> service_;
  test::SslCtxPtr tls_;
};
test::P11KitServer* NetworkHsm::server_ = nullptr;

TEST_F(NetworkHsm, TicketPathAndRotationWorkThroughP11KitClient) {
  // Offers a fresh copy each time: OpenSSL's client may mark an offered session object
  // not resumable once a connection used it.
  auto resume = [&](SSL_CTX* client, SSL_SESSION* ticket) {
    test::SessionPtr copy(SSL_SESSION_dup(ticket));
    return test::handshake(tls_.get(), client, copy.get());
  };
  for (int version : {TLS1_3_VERSION, TLS1_2_VERSION}) {
    SCOPED_TRACE(version);
    auto client = test::make_client_ctx(version);
    test::Handshake full = test::handshake(tls_.get(), client.get());
    ASSERT_TRUE(full.ok) << full.error;
    ASSERT_NE(full.last(), nullptr) << "no ticket issued through the network HSM";
    test::Handshake resumed = resume(client.get(), full.last());
    ASSERT_TRUE(resumed.ok) << resumed.error;
    EXPECT_TRUE(resumed.reused);
  }

  // Rotation: a new generation generated in the token over RPC; a ticket of the old
  // generation still resumes, new tickets are under the new name.
  auto client = test::make_client_ctx(TLS1_3_VERSION);
  test::Handshake old = test::handshake(tls_.get(), client.get());
  ASSERT_TRUE(old.ok && old.last() != nullptr) << old.error;
  const auto before = service_->encrypt_key_name();
  const Generation created = service_->create_generation();
  EXPECT_NE(before, std::optional<KeyName>(created.name));
  // A generation made within a second of the current one's start encrypts from that
  // start + 1 s (schedule_encrypting_now): wait for it rather than race the clock.
  for (int i = 0; i < 30 && service_->encrypt_key_name() != std::optional<KeyName>(created.name); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(service_->encrypt_key_name(), std::optional<KeyName>(created.name));
  test::Handshake old_ticket = resume(client.get(), old.last());
  ASSERT_TRUE(old_ticket.ok) << old_ticket.error;
  EXPECT_TRUE(old_ticket.reused) << "a ticket of the previous generation did not resume";
  test::Handshake fresh = test::handshake(tls_.get(), client.get());
  ASSERT_TRUE(fresh.ok && fresh.last() != nullptr) << fresh.error;
  auto bytes = test::ticket_of(fresh.last());
  ASSERT_GE(bytes.size(), created.name.size());
  EXPECT_TRUE(std::equal(created.name.begin(), created.name.end(), bytes.begin()));
  EXPECT_TRUE(resume(client.get(), fresh.last()).reused);
  EXPECT_EQ(service_->counters().hsm_errors, 0u);
}

TEST_F(NetworkHsm, KillingTheServerMidLoadNeverAbortsAHandshake) {
  test::HandshakeLoad load(tls_.get(), TLS1_3_VERSION, 2);
  load.start();
  load.wait_for_resumption(0, 10s);  // resumption works before the kill
  std::this_thread::sleep_for(300ms);
  const int outage = load.next_phase();
  server_->kill();
  std::this_thread::sleep_for(700ms);
  server_->start();
  const int restarted = load.next_phase();
  auto recovered = load.wait_for_resumption(restarted, 5s);
  load.stop();

  const auto before = load.counts(0), during = load.counts(outage), after = load.counts(restarted);
  const auto guard = service_->gateway().counters().guard;
  std::cout << "[network-hsm] kill -9 of p11-kit server mid-load: before " << before.handshakes << " handshakes ("
            << before.resumed << " resumed); outage " << during.handshakes << " handshakes (full " << during.full
            << ", resumed " << during.resumed << "), aborted " << before.aborted + during.aborted + after.aborted
            << "; after restart " << after.handshakes << " handshakes, resumed " << after.resumed
            << (recovered ? " (first after " + std::to_string(recovered->count()) + " ms)" : std::string(""))
            << "; breaker opens " << guard.breaker.opens << ", probes " << guard.breaker.probes << ", refused "
            << guard.breaker.refused << "; module restarts " << service_->counters().module_restarts << "\n";
  EXPECT_GT(before.resumed, 0u);
  EXPECT_GT(during.handshakes, 0u) << "no handshake completed while the HSM was gone";
  EXPECT_GT(after.handshakes, 0u);
  EXPECT_EQ(before.aborted + during.aborted + after.aborted, 0u) << test::errors_text({&before, &during, &after});
  EXPECT_GE(guard.breaker.opens, 1u) << "the breaker never opened while the HSM was gone";
  // Resumption is back by itself, through a restart of the client module.
  ASSERT_TRUE(recovered.has_value()) << "no resumption within 5 s of the p11-kit server's restart";
  EXPECT_LE(*recovered, 5s);
  EXPECT_GT(after.resumed, 0u);
  EXPECT_GE(service_->counters().module_restarts, 1u);
}

}  // namespace
}  // namespace keysvc
