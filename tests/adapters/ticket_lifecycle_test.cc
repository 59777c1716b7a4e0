// A generation's whole life, driven by an injected clock, with real TLS resumption
// checked at every step: pending -> active -> decrypt-only -> expired -> destroyed.
#include <gtest/gtest.h>

#include <atomic>

#include "keysvc/token_gateway.h"
#include "keysvc/openssl/ticket_adapter.h"
#include "keysvc/rotation.h"
#include "test_token.h"
#include "tls_pair.h"

namespace keysvc::openssl {
namespace {

using test::Handshake;

class TicketLifecycleTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    test::TestToken::get().clear();
    Config config = test::TestToken::get().config();
    config.tickets.lifetime = std::chrono::seconds(50);
    config.tickets.max_session_age = std::chrono::seconds(1000);
    config.rotation.encrypt_period = std::chrono::seconds(100);
    config.rotation.publish_lead = std::chrono::seconds(20);
    config.rotation.decrypt_window = std::chrono::seconds(60);
    config.rotation.clock_skew = std::chrono::seconds(0);
    config.rotation.refresh_interval = std::chrono::seconds(10);
    config.rotation.self_rotate = true;
    // Start on a round time so the schedule below reads simply.
    t0_ = std::chrono::system_clock::time_point(std::chrono::seconds(2'000'000'000));
    service_ = TicketKeyService::open(config, [this] { return t0_ + std::chrono::seconds(offset_.load()); });
    server_ = test::make_server_ctx();
    install(server_.get(), service_);
    client_ = test::make_client_ctx(GetParam());
  }

  // Moves the clock to t0 + `t` and lets the service do what its refresher would.
  void at(int t) {
    offset_ = t;
    service_->refresh();
  }
  const Generation& generation(const KeyName& name) {
    const Generation* g = service_->ring()->find(name);
    EXPECT_NE(g, nullptr);
    return *g;
  }
  GenerationState state(const KeyName& name) {
    auto ring = service_->ring();
    const Generation* g = ring->find(name);
    return g ? ring->state(*g, service_->unix_now()) : GenerationState::kExpired;
  }
  test::SessionPtr ticket() {
    Handshake h = test::handshake(server_.get(), client_.get());
    EXPECT_TRUE(h.ok) << h.error;
    EXPECT_FALSE(h.tickets.empty());
    return h.tickets.empty() ? nullptr : std::move(h.tickets.back());
  }
  static KeyName name_of(const SSL_SESSION* s) {
    auto t = test::ticket_of(s);
    KeyName n{};
    std::copy(t.begin(), t.begin() + 16, n.begin());
    return n;
  }
  Handshake resume(SSL_SESSION* s) { return test::handshake(server_.get(), client_.get(), s); }

  std::chrono::system_clock::time_point t0_;
  std::atomic<int> offset_{0};
  std::shared_ptr<TicketKeyService> service_;
  test::SslCtxPtr server_, client_;
};

INSTANTIATE_TEST_SUITE_P(Versions, TicketLifecycleTest, ::testing::Values(TLS1_3_VERSION, TLS1_2_VERSION),
                         [](const auto& param_info) { return param_info.param == TLS1_3_VERSION ? "TLS13" : "TLS12"; });

TEST_P(TicketLifecycleTest, PendingActiveDecryptOnlyExpiredDestroyed) {
  // t=0: the empty token got one generation, G1, encrypting [0, 100), decrypting to 160.
  ASSERT_EQ(service_->ring()->generations().size(), 1u);
  KeyName g1 = *service_->encrypt_key_name();
  EXPECT_EQ(state(g1), GenerationState::kActive);
  // TLS 1.3 clients use a ticket once: one ticket per later check.
  auto t_pending = ticket(), t_renew = ticket(), t_expired = ticket();
  ASSERT_TRUE(t_pending && t_renew && t_expired);
  EXPECT_EQ(name_of(t_pending.get()), g1);

  // t=70: coverage ends in 30 s < 2 x publish_lead: the rotator publishes G2 for
  // [100, 200). It is pending: it decrypts already but does not encrypt.
  at(70);
  ASSERT_EQ(service_->ring()->generations().size(), 2u);
  KeyName g2{};
  for (auto& g : service_->ring()->generations())
    if (g.name != g1) g2 = g.name;
  EXPECT_EQ(state(g2), GenerationState::kPending);
  EXPECT_EQ(generation(g2).schedule.encrypt_from, 2'000'000'100);
  EXPECT_EQ(generation(g2).schedule.encrypt_until, 2'000'000'200);
  EXPECT_EQ(generation(g2).schedule.decrypt_until, 2'000'000'260);
  EXPECT_EQ(*service_->encrypt_key_name(), g1);
  Handshake r = resume(t_pending.get());
  EXPECT_TRUE(r.reused) << r.error;
  EXPECT_EQ(counters(server_.get()).renewed, 0u);
  at(99);
  auto t_last_g1 = ticket();  // the last ticket G1 issues
  ASSERT_TRUE(t_last_g1);
  EXPECT_EQ(name_of(t_last_g1.get()), g1);

  // t=100: G2 is active, G1 decrypt-only: G1 tickets resume and are renewed under G2.
  at(100);
  EXPECT_EQ(state(g2), GenerationState::kActive);
  EXPECT_EQ(state(g1), GenerationState::kDecryptOnly);
  EXPECT_EQ(*service_->encrypt_key_name(), g2);
  auto fresh = ticket();
  ASSERT_TRUE(fresh);
  EXPECT_EQ(name_of(fresh.get()), g2);
  r = resume(t_renew.get());
  ASSERT_TRUE(r.reused) << r.error;
  ASSERT_EQ(r.tickets.size(), 1u);
  EXPECT_EQ(name_of(r.last()), g2);
  EXPECT_EQ(counters(server_.get()).renewed, 1u);

  // t=148: the last G1 ticket (issued at 99, lifetime 50) is still valid, and G1's
  // decrypt window (to 160) covers it.
  at(148);
  r = resume(t_last_g1.get());
  EXPECT_TRUE(r.reused) << r.error;

  // t=160: G1 has expired: its tickets get a full handshake with fresh G2 tickets. The
  // rotator destroys G1 in the token.
  at(160);
  EXPECT_EQ(service_->ring()->find(g1), nullptr) << "expired generation not destroyed";
  r = resume(t_expired.get());
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_FALSE(r.reused);
  ASSERT_FALSE(r.tickets.empty());
  EXPECT_EQ(name_of(r.last()), g2);
  // G2 tickets keep resuming throughout.
  EXPECT_TRUE(resume(fresh.get()).reused);
}

TEST_P(TicketLifecycleTest, RevokedGenerationStopsDecryptingAndIsReplaced) {
  KeyName g1 = *service_->encrypt_key_name();
  auto t = ticket();
  ASSERT_TRUE(t);
  at(10);
  ASSERT_TRUE(revoke(service_->gateway(), g1, service_->unix_now(), service_->config().rotation));
  service_->reload();
  EXPECT_EQ(state(g1), GenerationState::kRevoked);
  ASSERT_TRUE(service_->encrypt_key_name());
  EXPECT_NE(*service_->encrypt_key_name(), g1);
  Handshake r = resume(t.get());
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_FALSE(r.reused);
  ASSERT_FALSE(r.tickets.empty());
  EXPECT_NE(name_of(r.last()), g1);
  EXPECT_TRUE(resume(r.last()).reused);
  EXPECT_EQ(counters(server_.get()).retired_key, 1u);
}

TEST_P(TicketLifecycleTest, LongLivedConnectionGetsAFreshTicketAfterRotation) {
  test::Connection conn(server_.get(), client_.get());
  ASSERT_TRUE(conn.result().ok) << conn.result().error;
  KeyName g1 = *service_->encrypt_key_name();
  EXPECT_FALSE(push_ticket_if_rotated(conn.server())) << "nothing changed yet";
  std::size_t before = conn.result().tickets.size();
  at(1);
  service_->create_generation();  // the encrypt generation changes
  ASSERT_NE(*service_->encrypt_key_name(), g1);
  if (GetParam() == TLS1_2_VERSION) {
    EXPECT_FALSE(push_ticket_if_rotated(conn.server())) << "TLS 1.2 has no post-handshake tickets";
    return;
  }
  ASSERT_TRUE(push_ticket_if_rotated(conn.server()));
  ASSERT_TRUE(conn.exchange()) << conn.result().error;
  ASSERT_EQ(conn.result().tickets.size(), before + 1);
  EXPECT_EQ(name_of(conn.result().tickets.back().get()), *service_->encrypt_key_name());
  EXPECT_FALSE(push_ticket_if_rotated(conn.server())) << "already has a ticket under the new generation";
  EXPECT_EQ(counters(server_.get()).pushed, 1u);
  Handshake h = conn.finish();
  EXPECT_TRUE(resume(h.tickets.back().get()).reused);
}

}  // namespace
}  // namespace keysvc::openssl
