// An HSM outage of a few epochs under load, in the epoch tier (issue 13): keysvc over a
// network HSM stand-in (p11-kit-client.so talking to `p11-kit server`, which exports the
// SoftHSM test token), 1 s epochs, the p11-kit server killed with every connection.
//   - while the epoch keys derived before the outage last (the current epoch's and the
//     next one's, prepared ahead), tickets issued before the outage keep resuming and
//     full handshakes still get new tickets;
//   - once the epochs they cover are over, full handshakes go on without tickets (never
//     under OpenSSL's own keys: every ticket a client receives names keysvc's
//     generation), and tickets of the cached epochs still resume;
//   - after the server is back, new tickets are issued and resume again.
// Progress is followed by the service's clock and counted per stage; no time is asserted.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <iostream>
#include <thread>

#include "handshake_load.h"
#include "keysvc/key_deriver.h"
#include "keysvc/openssl/ticket_adapter.h"
#include "keysvc/ticket_rules.h"
#include "keysvc/token_gateway.h"
#include "p11kit_server.h"
#include "test_token.h"
#include "tls_pair.h"

namespace keysvc {
namespace {

using namespace std::chrono_literals;

std::int64_t epoch_field(const std::vector<std::uint8_t>& t) {
  return (std::int64_t{t.at(16)} << 24) | (std::int64_t{t.at(17)} << 16) | (std::int64_t{t.at(18)} << 8) | t.at(19);
}

// What happened in one stage of the test.
struct Stage {
  int full = 0;               // full handshakes completed
  int with_tickets = 0;       // ... that handed out tickets
  int resumed_old = 0;        // resumptions of the ticket issued before the outage
  int resume_attempts = 0;
  int foreign_tickets = 0;    // tickets not under the generation, or of an epoch it could not issue in
  int aborted = 0;
  std::string errors;
};

class EpochOutage : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ::signal(SIGPIPE, SIG_IGN);
    test::TestToken& token = test::TestToken::get();
    server_ = new test::P11KitServer(token.dir() + "/p11kit-epoch.sock", token.token_uri());
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
    config.rotation.epoch = 1s;
    config.rotation.encrypt_period = 1h;  // one generation: only epochs change
    config.rotation.decrypt_window = 1h;
    config.rotation.clock_skew = 0s;
    config.rotation.refresh_interval = 1s;
    config.rotation.self_rotate = false;
    config.tickets.lifetime = 30s;
    service_ = TicketKeyService::open(config);
    tls_ = test::make_server_ctx();
    openssl::install(tls_.get(), service_);
    client_ = test::make_client_ctx(TLS1_3_VERSION);
  }

  std::int64_t epoch_now() const { return epoch_of(service_->unix_now(), 1); }
  // The last epoch from now on whose key the service holds for `name` (now - 1 if none).
  std::int64_t last_held(const KeyName& name) const {
    std::int64_t e = epoch_now();
    while (service_->deriver().epoch_keys().find(name, e)) ++e;
    return e - 1;
  }

  // One full handshake and one resumption of `old`, tallied in `stage`. `expect_tickets`:
  // whether the full handshake must (true) or must not (false) hand out tickets, if its
  // whole handshake fell in epochs where that is certain.
  void round(Stage& stage, const KeyName& gen, SSL_SESSION* old, std::int64_t last_issuing_epoch, bool expect) {
    const std::int64_t before = epoch_now();
    test::Handshake h = test::handshake(tls_.get(), client_.get());
    const std::int64_t after = epoch_now();
    if (!h.ok) {
      ++stage.aborted;
      stage.errors += "  full: " + h.error + "\n";
    } else {
      ++stage.full;
      if (!h.tickets.empty()) ++stage.with_tickets;
      for (const auto& t : h.tickets) {
        auto bytes = test::ticket_of(t.get());
        if (!std::equal(gen.begin(), gen.end(), bytes.begin()) || epoch_field(bytes) > (last_issuing_epoch & 0xffffffff))
          ++stage.foreign_tickets;
      }
      const bool certain = expect ? after <= last_issuing_epoch : before > last_issuing_epoch;
      if (certain) {
        EXPECT_EQ(!h.tickets.empty(), expect) << "epochs " << before << ".." << after << ", keys up to "
                                              << last_issuing_epoch;
      }
    }
    test::SessionPtr copy(SSL_SESSION_dup(old));
    test::Handshake r = test::handshake(tls_.get(), client_.get(), copy.get());
    ++stage.resume_attempts;
    if (!r.ok) {
      ++stage.aborted;
      stage.errors += "  resume: " + r.error + "\n";
    } else if (r.reused) {
      ++stage.resumed_old;
    }
  }

  static test::P11KitServer* server_;
  std::shared_ptr<TicketKeyService> service_;
  test::SslCtxPtr tls_, client_;
};
test::P11KitServer* EpochOutage::server_ = nullptr;

TEST_F(EpochOutage, TicketsGoOnWhileCachedEpochKeysLastThenFullHandshakesThenBack) {
  const KeyName gen = *service_->encrypt_key_name();
  // Before: the current and the next epoch's keys are prepared; a ticket is issued.
  for (int i = 0; i < 100 && last_held(gen) <= epoch_now(); ++i) std::this_thread::sleep_for(50ms);
  ASSERT_GT(last_held(gen), epoch_now()) << "the next epoch's key was not prepared ahead";
  test::Handshake first = test::handshake(tls_.get(), client_.get());
  ASSERT_TRUE(first.ok && first.last() != nullptr) << first.error;
  test::SessionPtr old(SSL_SESSION_dup(first.last()));

  test::HandshakeLoad load(tls_.get(), TLS1_3_VERSION, 2);  // the load beside the counted rounds
  load.start();
  ASSERT_TRUE(load.wait_for_resumption(0, 10s).has_value());

  // The outage: the HSM host dies.
  const int outage_phase = load.next_phase();
  const std::int64_t last_key = last_held(gen);
  server_->kill();
  const std::int64_t killed_in = epoch_now();
  Stage cached, exhausted, restored;
  // 1. While the cached epochs last.
  while (epoch_now() <= last_key) {
    round(cached, gen, old.get(), last_key, true);
    std::this_thread::sleep_for(20ms);
  }
  // 2. Two epochs with no key: full handshakes, no tickets; the old ticket still resumes.
  while (epoch_now() <= last_key + 2) {
    round(exhausted, gen, old.get(), last_key, false);
    std::this_thread::sleep_for(20ms);
  }
  const auto failed_issues = openssl::counters(tls_.get()).issue_failed;

  // 3. The HSM is back: tickets of the current epoch again, and they resume.
  const int restored_phase = load.next_phase();
  server_->start();
  std::int64_t now_issuing = -1;
  for (int i = 0; i < 200 && restored.with_tickets == 0; ++i) {
    round(restored, gen, old.get(), epoch_now() + 1, false);
    if (restored.with_tickets == 0) std::this_thread::sleep_for(50ms);
  }
  test::Handshake fresh = test::handshake(tls_.get(), client_.get());
  ASSERT_TRUE(fresh.ok && fresh.last() != nullptr) << "no ticket after the HSM came back: " << fresh.error;
  now_issuing = epoch_field(test::ticket_of(fresh.last()));
  test::SessionPtr fresh_copy(SSL_SESSION_dup(fresh.last()));
  EXPECT_TRUE(test::handshake(tls_.get(), client_.get(), fresh_copy.get()).reused);
  auto back = load.wait_for_resumption(restored_phase, 10s);
  load.stop();

  const auto l_before = load.counts(0), l_outage = load.counts(outage_phase), l_after = load.counts(restored_phase);
  std::cout << "[epoch-outage] 1 s epochs, p11-kit server killed in epoch " << killed_in << " holding keys up to "
            << last_key << ": while cached " << cached.full << " full handshakes (" << cached.with_tickets
            << " with tickets), old ticket resumed " << cached.resumed_old << "/" << cached.resume_attempts
            << "; keys exhausted " << exhausted.full << " full (" << exhausted.with_tickets << " with tickets), old ticket resumed "
            << exhausted.resumed_old << "/" << exhausted.resume_attempts << ", " << failed_issues
            << " tickets not issued; restored: " << restored.full << " full handshakes until the first ticket (epoch "
            << now_issuing << "); load: before " << l_before.handshakes << " (" << l_before.resumed << " resumed), outage "
            << l_outage.handshakes << " (" << l_outage.resumed << " resumed), after " << l_after.handshakes << " ("
            << l_after.resumed << " resumed); module restarts " << service_->counters().module_restarts << "\n";

  EXPECT_GT(cached.full, 0);
  EXPECT_GT(cached.with_tickets, 0) << "no ticket issued from the cached epoch keys";
  EXPECT_EQ(cached.resumed_old, cached.resume_attempts) << "a ticket from before the outage did not resume";
  EXPECT_GT(exhausted.full, 0);
  EXPECT_EQ(exhausted.resumed_old, exhausted.resume_attempts) << "the cached epoch's ticket stopped resuming";
  EXPECT_GT(failed_issues, 0u);
  for (const Stage* s : {&cached, &exhausted, &restored}) {
    EXPECT_EQ(s->aborted, 0) << s->errors;
    EXPECT_EQ(s->foreign_tickets, 0) << "a ticket not under keysvc's generation and epochs";
  }
  EXPECT_GT(restored.with_tickets, 0);
  EXPECT_GE(now_issuing, last_key + 2) << "after the outage, tickets of the current epoch";
  EXPECT_EQ(l_before.aborted + l_outage.aborted + l_after.aborted, 0u) << test::errors_text({&l_before, &l_outage, &l_after});
  EXPECT_GT(l_outage.resumed, 0u) << "the load's resumptions stopped with the HSM";
  EXPECT_TRUE(back.has_value()) << "the load did not resume after the restore";
}

}  // namespace
}  // namespace keysvc
