// The epoch tier end to end (issue 13): real OpenSSL handshakes over memory BIOs against a
// server SSL_CTX with keysvc installed on a real SoftHSM token, with the default tier.
// Every HSM call is counted twice: as the service counts its sign operations for tickets
// and as the module saw them (C_Sign calls through the token gateway's module).
//   - tickets are issued and resume with no HSM call once the epoch keys are prepared,
//     and each ticket's IV names its epoch (derivation.h: 4 bytes, big endian);
//   - tickets older than their lifetime, or from epochs that have not begun (beyond the
//     clock skew), are refused without an HSM call and end in a full handshake;
//   - forged epoch bytes in the IV are refused, and presenting them again and again costs
//     no more HSM work than presenting them once;
//   - a ticket of an epoch this process does not hold costs one HSM call; a second one
//     of that epoch costs none.
// The service's clock is frozen and moved by hand, so no epoch begins by itself while
// calls are counted.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <set>
#include <thread>

#include "keysvc/key_deriver.h"
#include "keysvc/derivation.h"
#include "keysvc/hsm/call_stats.h"
#include "keysvc/openssl/ticket_adapter.h"
#include "keysvc/ticket_rules.h"
#include "keysvc/token_gateway.h"
#include "test_token.h"
#include "tls_pair.h"

namespace keysvc::openssl {
namespace {

using test::Handshake;
using test::TestToken;

constexpr std::int64_t kEpoch = 10, kLifetime = 30, kSkew = 5;

std::string version_name(const ::testing::TestParamInfo<int>& info) {
  return info.param == TLS1_3_VERSION ? "TLS13" : "TLS12";
}

// The epoch a ticket's IV names (ticket bytes 16..19: the IV follows the 16-byte key name).
std::int64_t epoch_field(SSL_SESSION* s) {
  auto t = test::ticket_of(s);
  return (std::int64_t{t.at(16)} << 24) | (std::int64_t{t.at(17)} << 16) | (std::int64_t{t.at(18)} << 8) | t.at(19);
}

KeyName name_of(SSL_SESSION* s) {
  auto t = test::ticket_of(s);
  KeyName n{};
  std::copy(t.begin(), t.begin() + 16, n.begin());
  return n;
}

// HSM work of one service: its count of sign operations for tickets, and the C_Sign calls
// its module made (every sign of any kind).
struct HsmWork {
  std::uint64_t ticket_signs = 0, c_sign = 0;
};
HsmWork work_of(TicketKeyService& s) {
  return {s.counters().hsm_calls, s.gateway().call_stats().snapshot(hsm::Call::kSign).count};
}

class EpochTicketsTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    TestToken::get().clear();
    start_ = std::chrono::system_clock::now();
    service_ = open_service();
    server_ = test::make_server_ctx();
    install(server_.get(), service_);
    client_ = test::make_client_ctx(GetParam());
    ASSERT_TRUE(epoch_keys_ready(*service_)) << "the maintenance thread did not prepare the epoch keys";
  }

  // The default tier with 10 s epochs, a 30 s ticket lifetime and 5 s of clock skew, on the
  // test's clock; generations encrypt for an hour, so only epochs change.
  std::shared_ptr<TicketKeyService> open_service() {
    Config config = TestToken::get().config();
    EXPECT_EQ(config.rotation.tier, RotationPolicy::Tier::kEpoch) << "the epoch tier is the default";
    config.rotation.epoch = std::chrono::seconds(kEpoch);
    config.rotation.encrypt_period = std::chrono::hours(1);
    config.rotation.decrypt_window = std::chrono::hours(1);
    config.rotation.clock_skew = std::chrono::seconds(kSkew);
    config.rotation.refresh_interval = std::chrono::seconds(1);  // epoch keys prepared every second
    config.rotation.self_rotate = false;
    config.tickets.lifetime = std::chrono::seconds(kLifetime);
    config.tickets.max_session_age = std::chrono::seconds(1000);
    return TicketKeyService::open(config, [this] { return start_ + std::chrono::seconds(offset_.load()); });
  }

  // Waits (at most 10 s) until `s` holds the keys of the current and the next epoch of its
  // encrypt generation: after that, nothing but presented tickets makes it call the HSM.
  static bool epoch_keys_ready(TicketKeyService& s) {
    for (int i = 0; i < 200; ++i) {
      auto name = s.encrypt_key_name();
      const std::int64_t e = epoch_of(s.unix_now(), kEpoch);
      if (name && s.deriver().epoch_keys().find(*name, e) && s.deriver().epoch_keys().find(*name, e + 1)) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }
  // Moves the clock to `offset` seconds after the start and waits for that epoch's keys.
  void move_clock_to(int offset) {
    offset_ = offset;
    ASSERT_TRUE(epoch_keys_ready(*service_)) << "no epoch keys at offset " << offset;
  }

  Handshake full() { return test::handshake(server_.get(), client_.get()); }
  Handshake resume(SSL_SESSION* s) {
    test::SessionPtr copy(SSL_SESSION_dup(s));  // a client may mark an offered session used
    return test::handshake(server_.get(), client_.get(), copy.get());
  }
  TicketCallbackCounters stats() const { return counters(server_.get()); }
  std::uint64_t used(const KeyName& name, TicketOutcome outcome) const {
    const UsageSnapshot usage = service_->usage();
    const KeyUsage* k = usage.find(name);
    return k ? k->counters[static_cast<std::size_t>(outcome)] : 0;
  }
  bool tls13() const { return GetParam() == TLS1_3_VERSION; }
  std::int64_t current_epoch() const { return epoch_of(service_->unix_now(), kEpoch); }

  test::SessionPtr ticket() {
    Handshake h = full();
    EXPECT_TRUE(h.ok) << h.error;
    EXPECT_FALSE(h.tickets.empty());
    if (h.tickets.empty()) return nullptr;
    return std::move(h.tickets.back());
  }

  // Presents `s`: expects a full handshake with fresh tickets of the current epoch.
  void expect_refused(SSL_SESSION* s, const std::string& what) {
    Handshake h = resume(s);
    ASSERT_TRUE(h.ok) << what << ": " << h.error;
    EXPECT_FALSE(h.reused) << what;
    ASSERT_FALSE(h.tickets.empty()) << what << ": no fresh ticket";
    EXPECT_EQ(epoch_field(h.last()), current_epoch() & 0xffffffff) << what;
  }

  std::chrono::system_clock::time_point start_;
  std::atomic<int> offset_{0};
  std::shared_ptr<TicketKeyService> service_;
  test::SslCtxPtr server_, client_;
};

INSTANTIATE_TEST_SUITE_P(Versions, EpochTicketsTest, ::testing::Values(TLS1_3_VERSION, TLS1_2_VERSION), version_name);

TEST_P(EpochTicketsTest, TicketsIssueAndResumeWithoutHsmCalls) {
  const HsmWork before = work_of(*service_);
  constexpr int kRounds = 10;
  std::set<std::vector<std::uint8_t>> ivs;
  for (int i = 0; i < kRounds; ++i) {
    Handshake h = full();
    ASSERT_TRUE(h.ok) << h.error;
    ASSERT_EQ(h.tickets.size(), tls13() ? 2u : 1u);
    for (auto& t : h.tickets) {
      EXPECT_EQ(epoch_field(t.get()), current_epoch() & 0xffffffff) << "the IV names the issuing epoch";
      auto bytes = test::ticket_of(t.get());
      ivs.emplace(bytes.begin() + 16, bytes.begin() + 32);
    }
    Handshake r = resume(h.last());
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_TRUE(r.reused);
  }
  const HsmWork after = work_of(*service_);
  EXPECT_EQ(after.ticket_signs - before.ticket_signs, 0u);
  EXPECT_EQ(after.c_sign - before.c_sign, 0u);
  const std::size_t issued = kRounds * (tls13() ? 3u : 1u);  // + one fresh ticket per TLS 1.3 resumption
  EXPECT_EQ(stats().issued, issued);
  EXPECT_EQ(stats().resumed, static_cast<std::uint64_t>(kRounds));
  EXPECT_EQ(ivs.size(), kRounds * (tls13() ? 2u : 1u)) << "every ticket has its own IV";
  // Two epoch keys (this epoch's and the next one's) for all of it.
  EXPECT_EQ(service_->ticket_counters()[TicketEvent::kEpochKeysDerived], 2u);
}

TEST_P(EpochTicketsTest, TicketOlderThanItsLifetimeIsRefusedWithoutHsmCall) {
  auto old = ticket();
  ASSERT_TRUE(old);
  move_clock_to(kLifetime + kSkew + kEpoch + 5);  // its epoch ended more than lifetime + skew ago
  const HsmWork before = work_of(*service_);
  expect_refused(old.get(), "a ticket past its lifetime");
  EXPECT_EQ(work_of(*service_).ticket_signs, before.ticket_signs);
  EXPECT_EQ(work_of(*service_).c_sign, before.c_sign);
  EXPECT_EQ(used(name_of(old.get()), TicketOutcome::kExpired), 1u);
  EXPECT_EQ(stats().retired_key, 1u);
  EXPECT_EQ(stats().resumed, 0u);
  // A ticket just inside its lifetime still resumes: a boundary, not a blanket refusal.
  auto young = ticket();
  move_clock_to(kLifetime + kSkew + kEpoch + 5 + kLifetime - kEpoch);
  Handshake h = resume(young.get());
  ASSERT_TRUE(h.ok) << h.error;
  EXPECT_TRUE(h.reused);
}

TEST_P(EpochTicketsTest, TicketFromAFutureEpochIsRefusedWithoutHsmCall) {
  move_clock_to(100);  // a server whose clock runs 100 s ahead issues it
  auto future = ticket();
  ASSERT_TRUE(future);
  move_clock_to(0);
  const HsmWork before = work_of(*service_);
  expect_refused(future.get(), "a ticket from the future");
  EXPECT_EQ(work_of(*service_).ticket_signs, before.ticket_signs);
  EXPECT_EQ(work_of(*service_).c_sign, before.c_sign);
  EXPECT_EQ(used(name_of(future.get()), TicketOutcome::kBadEpoch), 1u);
  EXPECT_EQ(stats().resumed, 0u);
  // Within the clock skew it resumes (one derivation of that epoch's key at most).
  move_clock_to(100 - static_cast<int>(kSkew) + 1);
  Handshake h = resume(future.get());
  ASSERT_TRUE(h.ok) << h.error;
  EXPECT_TRUE(h.reused);
}

TEST_P(EpochTicketsTest, ForgedEpochBytesAreRefusedWithoutMultiplyingHsmWork) {
  move_clock_to(25);  // a few epochs into the generation: neighbouring epochs are valid ones
  auto session = ticket();
  ASSERT_TRUE(session);
  const KeyName name = name_of(session.get());
  auto forge = [&](std::size_t byte, std::uint8_t bit) {
    auto bytes = test::ticket_of(session.get());
    bytes.at(byte) ^= bit;
    return test::with_ticket(session.get(), bytes);
  };
  // Far from now (2^24, 2^16, 256 epochs away): refused before any HSM call.
  HsmWork before = work_of(*service_);
  for (std::size_t byte : {16u, 17u, 18u}) expect_refused(forge(byte, 0x01).get(), "epoch byte " + std::to_string(byte));
  EXPECT_EQ(work_of(*service_).ticket_signs, before.ticket_signs);
  EXPECT_EQ(work_of(*service_).c_sign, before.c_sign);
  EXPECT_EQ(used(name, TicketOutcome::kBadEpoch), 3u);

  // One or two epochs away (valid epochs of the generation): the MAC fails. The first
  // presentation may cost a derivation of that epoch's key, every later one nothing.
  constexpr int kRepeats = 10;
  before = work_of(*service_);
  for (std::uint8_t bit : {0x01, 0x02}) expect_refused(forge(19, bit).get(), "epoch low bits");
  const HsmWork first = work_of(*service_);
  EXPECT_LE(first.ticket_signs - before.ticket_signs, 2u);
  for (int i = 1; i < kRepeats; ++i)
    for (std::uint8_t bit : {0x01, 0x02}) expect_refused(forge(19, bit).get(), "epoch low bits, again");
  EXPECT_EQ(work_of(*service_).ticket_signs, first.ticket_signs) << "repeated forgeries cost HSM calls";
  EXPECT_EQ(work_of(*service_).c_sign, first.c_sign);
  EXPECT_EQ(used(name, TicketOutcome::kMacFailure) + used(name, TicketOutcome::kBadEpoch) +
                used(name, TicketOutcome::kExpired),
            3u + 2u * kRepeats);
  EXPECT_EQ(stats().resumed, 0u);
  // The untouched ticket still resumes.
  EXPECT_TRUE(resume(session.get()).reused);
}

TEST_P(EpochTicketsTest, AnEpochThisProcessDoesNotHoldCostsOneHsmCallThenIsCached) {
  auto first = ticket();
  auto second = ticket();
  ASSERT_TRUE(first && second);
  const std::int64_t issued_in = current_epoch();
  EXPECT_EQ(epoch_field(first.get()), issued_in & 0xffffffff);
  // 20 s later a second server starts: it prepares the current and the next epoch only.
  move_clock_to(20);
  auto other = open_service();
  ASSERT_TRUE(epoch_keys_ready(*other));
  ASSERT_EQ(other->deriver().epoch_keys().find(name_of(first.get()), issued_in), nullptr);
  auto other_server = test::make_server_ctx();
  install(other_server.get(), other);
  auto resume_on_other = [&](SSL_SESSION* s) {
    test::SessionPtr copy(SSL_SESSION_dup(s));
    return test::handshake(other_server.get(), client_.get(), copy.get());
  };
  const HsmWork before = work_of(*other);
  const auto derived_before = other->ticket_counters()[TicketEvent::kEpochKeysDerived];
  Handshake a = resume_on_other(first.get());
  ASSERT_TRUE(a.ok) << a.error;
  EXPECT_TRUE(a.reused);
  const HsmWork after_first = work_of(*other);
  EXPECT_EQ(after_first.ticket_signs - before.ticket_signs, 1u);
  EXPECT_EQ(after_first.c_sign - before.c_sign, 1u);
  EXPECT_EQ(other->ticket_counters()[TicketEvent::kEpochKeysDerived] - derived_before, 1u);
  Handshake b = resume_on_other(second.get());
  ASSERT_TRUE(b.ok) << b.error;
  EXPECT_TRUE(b.reused);
  EXPECT_EQ(work_of(*other).ticket_signs, after_first.ticket_signs) << "the epoch key was not cached";
  EXPECT_EQ(work_of(*other).c_sign, after_first.c_sign);
  EXPECT_NE(other->deriver().epoch_keys().find(name_of(first.get()), issued_in), nullptr);
}

}  // namespace
}  // namespace keysvc::openssl
