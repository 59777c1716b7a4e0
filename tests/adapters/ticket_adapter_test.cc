// The ticket callbacks end to end: real OpenSSL handshakes over memory BIOs against a
// server SSL_CTX with keysvc installed on a real SoftHSM token.
#include "keysvc/token_gateway.h"
#include "keysvc/openssl/ticket_adapter.h"

#include <gtest/gtest.h>
#include <openssl/provider.h>

#include <atomic>
#include <thread>

#include "app_data.h"
#include "keysvc/hsm/session.h"
#include "keysvc/token_store.h"
#include "test_token.h"
#include "tls_pair.h"

namespace keysvc::openssl {
namespace {

using test::Handshake;
using test::TestToken;

std::string version_name(const ::testing::TestParamInfo<int>& info) {
  return info.param == TLS1_3_VERSION ? "TLS13" : "TLS12";
}

class TicketAdapterTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    TestToken::get().clear();
    start_ = std::chrono::system_clock::now();
    // HSM work per ticket is what many of these count: the strict tier (the epoch tier's
    // own: epoch_tickets_test.cc).
    Config config = test::strict(TestToken::get().config());
    config.tickets.lifetime = std::chrono::seconds(50);
    config.tickets.max_session_age = std::chrono::seconds(100);
    service_ = TicketKeyService::open(config, [this] { return start_ + std::chrono::seconds(offset_.load()); });
    server_ = test::make_server_ctx();
    install(server_.get(), service_);
    client_ = test::make_client_ctx(GetParam());
  }

  Handshake full() { return test::handshake(server_.get(), client_.get()); }
  Handshake resume(SSL_SESSION* s) { return test::handshake(server_.get(), client_.get(), s); }
  void advance(int seconds) { offset_ += seconds; }
  TicketCallbackCounters stats() const { return counters(server_.get()); }
  // The service's per-key usage counter (usage.h) for `name` and `outcome`.
  std::uint64_t used(const KeyName& name, TicketOutcome outcome) const {
    const UsageSnapshot usage = service_->usage();  // find() points into it: keep it alive
    const KeyUsage* k = usage.find(name);
    return k ? k->counters[static_cast<std::size_t>(outcome)] : 0;
  }
  static KeyName name_of(SSL_SESSION* s) {
    auto t = test::ticket_of(s);
    KeyName n{};
    std::copy(t.begin(), t.begin() + 16, n.begin());
    return n;
  }
  bool tls13() const { return GetParam() == TLS1_3_VERSION; }

  // A full handshake that must succeed with at least one ticket.
  test::SessionPtr ticket() {
    Handshake h = full();
    EXPECT_TRUE(h.ok) << h.error;
    EXPECT_FALSE(h.tickets.empty());
    if (h.tickets.empty()) return nullptr;
    return std::move(h.tickets.back());
  }

  // Presents `session` and expects a full handshake that hands out fresh tickets.
  void expect_full_handshake_with_fresh_tickets(SSL_SESSION* session) {
    Handshake h = resume(session);
    ASSERT_TRUE(h.ok) << h.error;
    EXPECT_FALSE(h.reused);
    ASSERT_FALSE(h.tickets.empty());
    // The fresh ticket resumes.
    Handshake again = resume(h.last());
    ASSERT_TRUE(again.ok) << again.error;
    EXPECT_TRUE(again.reused);
  }

  std::chrono::system_clock::time_point start_;
  std::atomic<int> offset_{0};
  std::shared_ptr<TicketKeyService> service_;
  test::SslCtxPtr server_, client_;
};

INSTANTIATE_TEST_SUITE_P(Versions, TicketAdapterTest, ::testing::Values(TLS1_3_VERSION, TLS1_2_VERSION),
                         version_name);

TEST_P(TicketAdapterTest, FullHandshakeIssuesTheConfiguredNumberOfTickets) {
  Handshake h = full();
  ASSERT_TRUE(h.ok) << h.error;
  EXPECT_EQ(h.version, GetParam());
  EXPECT_FALSE(h.reused);
  std::size_t expected = tls13() ? 2 : 1;
  EXPECT_EQ(h.tickets.size(), expected);
  EXPECT_EQ(stats().issued, expected);
  EXPECT_EQ(service_->counters().hsm_calls, 2 * expected);  // two HMACs in the token per ticket
  // Every ticket leads with the encrypting generation's name.
  for (auto& s : h.tickets) {
    auto t = test::ticket_of(s.get());
    ASSERT_GE(t.size(), 16u + 16u + 16u + 32u);
    EXPECT_TRUE(std::equal(t.begin(), t.begin() + 16, service_->encrypt_key_name()->begin()));
  }
}

TEST_P(TicketAdapterTest, TicketsPerHandshakeIsConfigurable) {
  auto server = test::make_server_ctx();
  InstallOptions options;
  options.tickets_per_handshake = 4;
  install(server.get(), service_, options);
  Handshake h = test::handshake(server.get(), client_.get());
  ASSERT_TRUE(h.ok) << h.error;
  EXPECT_EQ(h.tickets.size(), tls13() ? 4u : 1u);
}

TEST_P(TicketAdapterTest, TicketResumes) {
  auto session = ticket();
  ASSERT_TRUE(session);
  Handshake h = resume(session.get());
  ASSERT_TRUE(h.ok) << h.error;
  EXPECT_TRUE(h.reused);
  EXPECT_EQ(stats().resumed, 1u);
  EXPECT_EQ(stats().renewed, 0u);
  const KeyName name = name_of(session.get());
  EXPECT_EQ(used(name, TicketOutcome::kResumed), 1u);
  EXPECT_EQ(used(name, TicketOutcome::kRenewed), 0u);
  EXPECT_EQ(used(name, TicketOutcome::kIssued), tls13() ? 3u : 1u);  // + the fresh TLS 1.3 ticket
  // TLS 1.3 clients use a ticket once: like OpenSSL's own keys, send exactly one fresh
  // ticket after a TLS 1.3 resumption, and it resumes too. TLS 1.2 keeps its ticket.
  ASSERT_EQ(h.tickets.size(), tls13() ? 1u : 0u);
  if (tls13()) {
    EXPECT_TRUE(resume(h.last()).reused);
  }
}

TEST_P(TicketAdapterTest, TicketUnderOlderGenerationResumesAndIsRenewed) {
  auto session = ticket();
  ASSERT_TRUE(session);
  KeyName old_name = *service_->encrypt_key_name();
  advance(1);
  service_->create_generation();
  ASSERT_NE(*service_->encrypt_key_name(), old_name);
  Handshake h = resume(session.get());
  ASSERT_TRUE(h.ok) << h.error;
  EXPECT_TRUE(h.reused);
  EXPECT_EQ(stats().renewed, 1u);
  EXPECT_EQ(used(old_name, TicketOutcome::kResumed), 1u);
  EXPECT_EQ(used(old_name, TicketOutcome::kRenewed), 1u);
  EXPECT_EQ(used(*service_->encrypt_key_name(), TicketOutcome::kIssued), 1u);
  ASSERT_EQ(h.tickets.size(), 1u);  // exactly one new ticket, under the new generation
  auto t = test::ticket_of(h.last());
  EXPECT_TRUE(std::equal(t.begin(), t.begin() + 16, service_->encrypt_key_name()->begin()));
}

TEST_P(TicketAdapterTest, FlippedBitInKeyNameGivesFullHandshake) {
  auto session = ticket();
  ASSERT_TRUE(session);
  auto bytes = test::ticket_of(session.get());
  bytes[3] ^= 0x20;
  auto forged = test::with_ticket(session.get(), bytes);
  expect_full_handshake_with_fresh_tickets(forged.get());
  EXPECT_EQ(stats().unknown_key, 1u);
  EXPECT_EQ(used(name_of(forged.get()), TicketOutcome::kUnknownKey), 1u);
}

TEST_P(TicketAdapterTest, FlippedBitInIvCiphertextOrMacGivesFullHandshake) {
  auto session = ticket();
  ASSERT_TRUE(session);
  auto len = static_cast<long>(test::ticket_of(session.get()).size());
  const long offsets[] = {16, 31, 32, 40, len - 33, len - 32, len - 1};  // IV, ciphertext, MAC
  for (long offset : offsets) {
    auto bytes = test::ticket_of(session.get());
    bytes[static_cast<std::size_t>(offset)] ^= 0x01;
    auto forged = test::with_ticket(session.get(), bytes);
    Handshake h = resume(forged.get());
    ASSERT_TRUE(h.ok) << h.error;
    EXPECT_FALSE(h.reused) << "flipped byte " << offset;
    EXPECT_FALSE(h.tickets.empty()) << "no fresh ticket after flipped byte " << offset;
  }
  EXPECT_EQ(stats().rejected_bad_ticket, std::size(offsets));
  EXPECT_EQ(stats().resumed, 0u);
  EXPECT_EQ(used(name_of(session.get()), TicketOutcome::kMacFailure), std::size(offsets));
  // The untouched ticket still resumes.
  Handshake h = resume(session.get());
  EXPECT_TRUE(h.reused);
}

TEST_P(TicketAdapterTest, TruncatedTicketsGiveFullHandshakes) {
  auto session = ticket();
  ASSERT_TRUE(session);
  auto bytes = test::ticket_of(session.get());
  for (std::size_t keep : {std::size_t{1}, std::size_t{16}, std::size_t{31}, std::size_t{32}, std::size_t{48},
                           std::size_t{80}, bytes.size() - 1}) {
    auto forged = test::with_ticket(session.get(), std::vector<std::uint8_t>(bytes.begin(), bytes.begin() + static_cast<long>(keep)));
    Handshake h = resume(forged.get());
    ASSERT_TRUE(h.ok) << "kept " << keep << ": " << h.error;
    EXPECT_FALSE(h.reused) << "kept " << keep;
    EXPECT_FALSE(h.tickets.empty()) << "kept " << keep;
  }
  // Every truncation long enough to carry a key name counts as a MAC failure under it
  // (16 and 31 bytes: OpenSSL refuses them before asking keysvc).
  EXPECT_EQ(used(name_of(session.get()), TicketOutcome::kMacFailure), 6u);
}

TEST_P(TicketAdapterTest, RandomKeyNamesNeverReachTheHsm) {
  auto session = ticket();
  ASSERT_TRUE(session);
  auto calls_before = service_->counters().hsm_calls;
  auto bytes = test::ticket_of(session.get());
  const std::uint8_t original = bytes[0];
  for (int i = 0; i < 20; ++i) {
    bytes[0] = static_cast<std::uint8_t>(original ^ (i + 1));
    auto forged = test::with_ticket(session.get(), bytes);
    Handshake h = resume(forged.get());
    ASSERT_TRUE(h.ok) << h.error;
    EXPECT_FALSE(h.reused);
  }
  EXPECT_EQ(stats().unknown_key, 20u);
  // Only the fresh tickets of the 20 full handshakes cost HSM calls.
  EXPECT_EQ(service_->counters().hsm_calls - calls_before, 20u * 2u * (tls13() ? 2u : 1u));
}

TEST_P(TicketAdapterTest, AppDataRecordsTheOriginalAuthenticationTime) {
  advance(7);
  auto session = ticket();
  ASSERT_TRUE(session);
  // The client's copy of the session does not carry server app data; resume and check
  // the server accepted it (it parsed the record) and that the record stays the same
  // across renewal (see MaxSessionAgeIsEnforcedAcrossRenewals for the time itself).
  Handshake h = resume(session.get());
  ASSERT_TRUE(h.ok) << h.error;
  EXPECT_TRUE(h.reused);
  EXPECT_EQ(stats().rejected_bad_ticket, 0u);
}

TEST_P(TicketAdapterTest, MaxSessionAgeIsEnforcedAcrossRenewals) {
  auto first = ticket();  // authenticated at t=0
  ASSERT_TRUE(first);
  advance(1);
  service_->create_generation();  // so that resuming renews
  advance(59);
  Handshake renewed = resume(first.get());  // t=60: resumes, renewed ticket
  ASSERT_TRUE(renewed.ok) << renewed.error;
  ASSERT_TRUE(renewed.reused);
  ASSERT_EQ(renewed.tickets.size(), 1u);
  auto fresh = ticket();  // a new full handshake at t=60
  ASSERT_TRUE(fresh);

  advance(60);  // t=120: the renewed ticket's chain began at t=0, max age is 100
  Handshake too_old = resume(renewed.last());
  ASSERT_TRUE(too_old.ok) << too_old.error;
  EXPECT_FALSE(too_old.reused);
  EXPECT_FALSE(too_old.tickets.empty());
  EXPECT_EQ(stats().rejected_too_old, 1u);
  EXPECT_EQ(used(name_of(renewed.last()), TicketOutcome::kMaxSessionAge), 1u);

  Handshake young = resume(fresh.get());  // chain began at t=60: 60 s old
  ASSERT_TRUE(young.ok) << young.error;
  EXPECT_TRUE(young.reused);
}

TEST_P(TicketAdapterTest, HsmFailureNeverAbortsAHandshake) {
  auto session = ticket();
  ASSERT_TRUE(session);
  // Destroy the generation behind the service's back: its object handles now fail
  // with CKR_KEY_HANDLE_INVALID / CKR_OBJECT_HANDLE_INVALID inside the token.
  {
    service_->gateway().call(
        [name = *service_->encrypt_key_name()](hsm::Session& s) { token_store::destroy_generation(s, name); });
  }
  Handshake h = resume(session.get());  // decrypt fails in the HSM: full handshake
  ASSERT_TRUE(h.ok) << h.error;
  EXPECT_FALSE(h.reused);
  EXPECT_TRUE(h.tickets.empty());  // and issuing fails too: no ticket, but no abort
  EXPECT_GE(stats().hsm_error, 1u);
  EXPECT_GE(stats().issue_failed, 1u);
  EXPECT_GE(service_->counters().hsm_errors, 2u);

  // A new generation brings tickets back without restarting anything.
  advance(1);
  service_->create_generation();
  auto again = ticket();
  ASSERT_TRUE(again);
  EXPECT_TRUE(resume(again.get()).reused);
}

TEST_P(TicketAdapterTest, ConcurrentHandshakesFromSeveralThreads) {
  constexpr int kThreads = 4, kRounds = 10;
  std::atomic<int> resumed{0}, failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      auto client = test::make_client_ctx(GetParam());
      for (int i = 0; i < kRounds; ++i) {
        Handshake h = test::handshake(server_.get(), client.get());
        if (!h.ok || h.tickets.empty()) {
          ++failed;
          continue;
        }
        Handshake r = test::handshake(server_.get(), client.get(), h.last());
        (r.ok && r.reused ? resumed : failed)++;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(resumed.load(), kThreads * kRounds);
  EXPECT_EQ(stats().hsm_error, 0u);
}

TEST_P(TicketAdapterTest, WorksInItsOwnLibraryContext) {
  OSSL_LIB_CTX* libctx = OSSL_LIB_CTX_new();
  ASSERT_NE(libctx, nullptr);
  {
    auto server = test::make_server_ctx(libctx, nullptr);
    InstallOptions options;
    options.libctx = libctx;
    install(server.get(), service_, options);
    Handshake h = test::handshake(server.get(), client_.get());
    ASSERT_TRUE(h.ok) << h.error;
    ASSERT_FALSE(h.tickets.empty());
    EXPECT_TRUE(test::handshake(server.get(), client_.get(), h.last()).reused);
  }
  OSSL_LIB_CTX_free(libctx);
}

// The server's own info callback (nginx and httpd set one) is kept and called for every
// state, before keysvc counts the resumption.
std::atomic<int> g_server_info_calls{0}, g_server_handshakes_done{0};
void server_info_cb(const SSL*, int where, int) {
  ++g_server_info_calls;
  if (where & SSL_CB_HANDSHAKE_DONE) ++g_server_handshakes_done;
}

TEST_P(TicketAdapterTest, TheServersOwnInfoCallbackIsStillCalled) {
  auto server = test::make_server_ctx();
  SSL_CTX_set_info_callback(server.get(), server_info_cb);
  install(server.get(), service_);
  g_server_info_calls = g_server_handshakes_done = 0;
  Handshake h = test::handshake(server.get(), client_.get());
  ASSERT_TRUE(h.ok) << h.error;
  ASSERT_FALSE(h.tickets.empty());
  const int per_handshake = g_server_info_calls.load();
  EXPECT_GT(per_handshake, 2) << "the server's callback sees the states, not only the end";
  Handshake again = test::handshake(server.get(), client_.get(), h.last());
  ASSERT_TRUE(again.ok && again.reused) << again.error;
  EXPECT_EQ(g_server_handshakes_done.load(), 2);
  EXPECT_EQ(counters(server.get()).resumed, 1u);
}

TEST(TicketAdapterInstall, UnsatisfiablePropertyQueryIsOneClearError) {
  TestToken::get().clear();
  auto service = TicketKeyService::open(test::strict(TestToken::get().config()));
  auto server = test::make_server_ctx();
  InstallOptions options;
  options.propq = "provider=no-such-provider";
  try {
    install(server.get(), service, options);
    FAIL() << "install accepted an unsatisfiable property query";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("AES-256-CBC"), std::string::npos) << e.what();
  }
  EXPECT_EQ(counters(server.get()).issued, 0u);
}

TEST(TicketAdapterInstall, SecondInstallOnTheSameContextIsRefused) {
  TestToken::get().clear();
  auto service = TicketKeyService::open(test::strict(TestToken::get().config()));
  auto server = test::make_server_ctx();
  install(server.get(), service);
  EXPECT_THROW(install(server.get(), service), std::runtime_error);
}

}  // namespace
}  // namespace keysvc::openssl
