// Fork safety (keysvc/src/fork_hooks.cc): a prefork server opens keysvc (service + OpenSSL
// adapter) on a real SoftHSM token, then forks workers, as nginx does. Every worker
// issues and resumes tickets through the HSM, resumes tickets issued by another worker,
// and never issues with the same pre-derived keys (IVs) as another worker; the parent
// keeps working after the fork.
#include <gtest/gtest.h>
#include <openssl/ssl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "keysvc/token_gateway.h"
#include "keysvc/audit_key.h"
#include "keysvc/audit_verify.h"
#include "keysvc/derivation.h"
#include "keysvc/epoch_keys.h"
#include "keysvc/key_deriver.h"
#include "keysvc/openssl/ticket_adapter.h"
#include "keysvc/ticket_rules.h"
#include "known_secrets.h"
#include "process.h"
#include "test_token.h"
#include "tls_pair.h"

#if defined(__SANITIZE_THREAD__)
// ThreadSanitizer cannot follow fork() in a multi-threaded process: the child runs with
// every check off, and by default dies when it starts a thread. Our parent is
// multi-threaded at the fork by design: the HSM guard's workers stay up, idle (the
// contract is that nobody uses the service while forking), and the child leaks them
// (fork_hooks.cc). die_after_fork=0 lets the children serve, unchecked by TSan, so the
// test still checks every worker's results; the parent, and the fork hooks' stop and
// restart of the background threads in it, stay checked. TSAN_OPTIONS still wins.
extern "C" const char* __tsan_default_options() { return "die_after_fork=0"; }
#endif

namespace keysvc {
namespace {

namespace fs = std::filesystem;
constexpr int kWorkers = 3;

// Written whole, then renamed into place: a reader never sees half a file.
void write_file_atomically(const std::string& path, const std::string& bytes) {
  {
    std::ofstream out(path + ".tmp", std::ios::binary | std::ios::trunc);
    out << bytes;
  }
  fs::rename(path + ".tmp", path);
}

std::string serialize(SSL_SESSION* s) {
  int n = i2d_SSL_SESSION(s, nullptr);
  std::string out(static_cast<std::size_t>(n), '\0');
  auto* p = reinterpret_cast<unsigned char*>(out.data());
  i2d_SSL_SESSION(s, &p);
  return out;
}

test::SessionPtr deserialize(const std::string& bytes) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  return test::SessionPtr(d2i_SSL_SESSION(nullptr, &p, static_cast<long>(bytes.size())));
}

std::string hex_of(const std::vector<std::uint8_t>& bytes, std::size_t from, std::size_t n) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (std::size_t i = from; i < from + n && i < bytes.size(); ++i) {
    s += digits[bytes[i] >> 4];
    s += digits[bytes[i] & 15];
  }
  return s;
}

class ForkHooksTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    test::TestToken::get().clear();
    dir_ = test::TestToken::get().dir() + "/fork-" + std::to_string(GetParam());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    // The strict tier: its issue pool of pre-derived keys (the epoch tier has none; its
    // epoch keys and fork: ForkHooksEpochKeys below).
    Config config = test::strict(test::TestToken::get().config());
    config.tickets.issue_pool = 16;  // pre-derived keys exist at fork time: each child must drop them
    service_ = TicketKeyService::open(config);
    server_ = test::make_server_ctx();
    openssl::install(server_.get(), service_);
    // Let the refiller fill the pool, so the fork copies a full one.
    for (int i = 0; i < 200 && service_->counters().hsm_calls < 32; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }

  // One worker: a full handshake (its ticket and ticket IV go to files), then a
  // resumption with the ticket of worker (i + 1) % kWorkers. Returns the exit code:
  // 0 ok, 10+ which step failed.
  int worker(int i) {
    auto client = test::make_client_ctx(GetParam());
    // Each child re-initialises SoftHSM and logs in at the same moment as its siblings,
    // reading the token's files while another process may be updating them: now and then
    // (under ASan) a child's module then answers CKR_GENERAL_ERROR or
    // CKR_USER_PIN_NOT_INITIALIZED until it is initialised again, which keysvc does
    // (TokenGateway: a broken login restarts the module). Handshakes meanwhile go on
    // without tickets; the worker tries for up to 2 s.
    test::Handshake full;
    for (int attempt = 0; attempt < 20 && (!full.ok || full.last() == nullptr); ++attempt) {
      if (attempt > 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
      full = test::handshake(server_.get(), client.get());
    }
    if (!full.ok || full.last() == nullptr) return 10;
    std::string ivs;
    for (const auto& t : full.tickets) ivs += hex_of(test::ticket_of(t.get()), 16, 16) + "\n";
    write_file_atomically(path("ivs", i), ivs);
    write_file_atomically(path("session", i), serialize(full.last()));
    // A ticket of this worker resumes here.
    test::Handshake own = test::handshake(server_.get(), client.get(), full.last());
    if (!own.ok || !own.reused) return 11;
    // ... and one of another worker.
    std::string other = path("session", (i + 1) % kWorkers);
    for (int k = 0; k < 3000 && !fs::exists(other); ++k) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    auto session = deserialize(test::read_file(other));
    if (!session) return 12;
    test::Handshake cross = test::handshake(server_.get(), client.get(), session.get());
    if (!cross.ok || !cross.reused) return 13;
    // The HSM path works through the child's own sessions and guard, and the token
    // can be rescanned.
    if (service_->counters().opened < 2) return 14;
    try {
      service_->reload();
    } catch (...) {
      return 15;
    }
    return 0;
  }

  std::string path(const char* what, int i) const { return dir_ + "/" + what + "-" + std::to_string(i); }

  std::string dir_;
  std::shared_ptr<TicketKeyService> service_;
  test::SslCtxPtr server_;
};

TEST_P(ForkHooksTest, EveryWorkerResumesTicketsOfAnotherWorker) {
  std::vector<pid_t> children;
  for (int i = 0; i < kWorkers; ++i) {
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) _exit(worker(i));  // no gtest or atexit work in the child
    children.push_back(pid);
  }
  for (int i = 0; i < kWorkers; ++i) {
    const int code = test::wait_for_child(children[i], std::chrono::seconds(60));
    if (code == -1) {
      ADD_FAILURE() << "worker " << i << " hung";
      continue;
    }
    EXPECT_LT(code, 128) << "worker " << i << " died with signal " << code - 128;
    EXPECT_EQ(code, 0) << "worker " << i << " failed (10 full, 11 own ticket, 12 read, "
                       << "13 other worker's ticket, 14 counters, 15 reload)";
  }
  // No two workers issued a ticket with the same IV (the parent's pre-derived keys were
  // wiped in each child).
  std::set<std::string> ivs;
  std::size_t tickets = 0;
  for (int i = 0; i < kWorkers; ++i) {
    std::istringstream in(test::read_file(path("ivs", i)));
    for (std::string iv; std::getline(in, iv);) {
      ++tickets;
      EXPECT_TRUE(ivs.insert(iv).second) << "IV " << iv << " issued twice";
    }
  }
  EXPECT_GE(tickets, static_cast<std::size_t>(kWorkers));
  // The parent serves and resumes as before.
  auto client = test::make_client_ctx(GetParam());
  test::Handshake full = test::handshake(server_.get(), client.get());
  ASSERT_TRUE(full.ok) << full.error;
  ASSERT_NE(full.last(), nullptr);
  test::Handshake again = test::handshake(server_.get(), client.get(), full.last());
  EXPECT_TRUE(again.ok && again.reused) << again.error;
}

// The epoch tier and fork (issue 13): a child never holds the parent's epoch keys. The
// key objects it inherited read as zeros (secure memory is wiped on fork), its cache
// starts empty, and it derives its own keys in the token (the same bytes: the same
// generation and epoch) to resume the parent's tickets.
TEST(ForkHooksEpochKeys, AChildNeverHoldsTheParentsEpochKeysAndDerivesItsOwn) {
  test::TestToken::get().clear();
  auto service = TicketKeyService::open(test::TestToken::get().config());  // the default: the epoch tier
  auto server = test::make_server_ctx();
  openssl::install(server.get(), service);
  auto client = test::make_client_ctx(TLS1_3_VERSION);
  test::Handshake full = test::handshake(server.get(), client.get());
  ASSERT_TRUE(full.ok) << full.error;
  ASSERT_NE(full.last(), nullptr);
  const auto ticket = test::ticket_of(full.last());
  KeyName name{};
  std::copy(ticket.begin(), ticket.begin() + 16, name.begin());
  Iv iv{};
  std::copy(ticket.begin() + 16, ticket.begin() + 32, iv.begin());
  const std::int64_t epoch = epoch_of_iv(iv, epoch_of(service->unix_now(), service->ring()->find(name)->epoch_seconds));
  EpochKeyCache::Key parents = service->deriver().epoch_keys().find(name, epoch);
  ASSERT_NE(parents, nullptr) << "the parent holds the key of the epoch it issued under";
  std::array<std::uint8_t, kEpochKeyBytes> value{};
  std::copy(parents->span().begin(), parents->span().end(), value.begin());
  test::remember_epoch_key(value);
  const auto derived_at_fork = service->ticket_counters()[TicketEvent::kEpochKeysDerived];

  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {  // no gtest or atexit work in the child
    auto is_zero = [](const EpochKey& k) {
      return std::all_of(k.span().begin(), k.span().end(), [](std::uint8_t b) { return b == 0; });
    };
    if (!is_zero(*parents)) _exit(20);
    if (service->deriver().epoch_keys().find(name, epoch) == parents) _exit(21);
    test::Handshake resumed = test::handshake(server.get(), client.get(), full.last());
    if (!resumed.ok || !resumed.reused) _exit(23);
    EpochKeyCache::Key own = service->deriver().epoch_keys().find(name, epoch);
    if (!own || own == parents) _exit(24);
    if (!std::equal(value.begin(), value.end(), own->span().begin())) _exit(25);
    if (service->ticket_counters()[TicketEvent::kEpochKeysDerived] <= derived_at_fork) _exit(26);
    _exit(0);
  }
  EXPECT_EQ(test::wait_for_child(pid, std::chrono::seconds(30)), 0)
      << "-1 hung, 20 inherited key not wiped, 21 inherited cache, 23 no resumption, 24 no key of its own, "
         "25 another key, 26 nothing derived";
  // The parent keeps its key and serves.
  EXPECT_TRUE(std::equal(value.begin(), value.end(), parents->span().begin()));
  test::Handshake again = test::handshake(server.get(), client.get(), full.last());
  EXPECT_TRUE(again.ok && again.reused) << again.error;
}

// [audit] and fork: the trail (its file's hash chain, its writer threads) is the
// parent's. A child must neither append to that chain nor, at exit, close a trail whose
// threads do not exist in it; the parent's log stays intact and verifiable.
TEST(ForkHooksAudit, AChildLeavesTheParentsTrailAloneAndExitsCleanly) {
#if defined(__SANITIZE_THREAD__)
  // With the audit trail's writer threads in the parent, the child's new threads made
  // ThreadSanitizer stop the child ("dup thread with used id", exit 66): its fork
  // support ends there, whatever die_after_fork says. The normal and ASan runs cover it.
  GTEST_SKIP() << "ThreadSanitizer cannot follow this child (multi-threaded fork)";
#endif
  test::TestToken::get().clear();
  const std::string dir = test::TestToken::get().dir() + "/fork-audit";
  fs::remove_all(dir);
  fs::create_directories(dir);
  Config config = test::TestToken::get().config();
  config.audit.path = dir + "/audit.jsonl";
  auto service = TicketKeyService::open(config);
  auto server = test::make_server_ctx();
  openssl::install(server.get(), service);

  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {  // a worker: serves, then shuts keysvc down as a server would at exit
    auto client = test::make_client_ctx(TLS1_3_VERSION);
    const bool served = test::handshake(server.get(), client.get()).ok;
    server.reset();
    service.reset();
    _exit(served ? 0 : 10);
  }
  const int code = test::wait_for_child(pid, std::chrono::seconds(30));
  ASSERT_NE(code, -1) << "the child hung shutting keysvc down";
  ASSERT_LT(code, 128) << "the child died with signal " << code - 128;
  EXPECT_EQ(code, 0) << "10: the child could not serve";

  auto client = test::make_client_ctx(TLS1_3_VERSION);
  EXPECT_TRUE(test::handshake(server.get(), client.get()).ok);
  server.reset();
  service.reset();  // the parent's final usage record and seal
  auto gateway = TokenGateway::open(config);
  audit::VerifyResult r = audit::verify({config.audit.path}, audit::token_keyed_hmac(*gateway));
  EXPECT_TRUE(r.ok) << r.detail;
}

INSTANTIATE_TEST_SUITE_P(Versions, ForkHooksTest, ::testing::Values(TLS1_2_VERSION, TLS1_3_VERSION),
                         [](const auto& p) { return p.param == TLS1_3_VERSION ? "tls13" : "tls12"; });

}  // namespace
}  // namespace keysvc
