#include "fleet_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <sstream>

#include "keysvc/config.h"
#include "keysvc/derivation.h"
#include "keysvc/key_name.h"
#include "keysvc/ticket_rules.h"
#include "keysvc/token_store.h"
#include "known_secrets.h"
#include "test_token.h"

namespace keysvc::fleet {
namespace {

using keysvc::test::openssl_errors;
using keysvc::test::SessionPtr;
using keysvc::test::SslCtxPtr;
using keysvc::test::ticket_of;
using keysvc::test::TlsVersion;

constexpr int kIoTimeoutSeconds = 15;  // per socket read/write/connect
constexpr char kRequest[] = "GET / HTTP/1.0\r\n\r\n";
constexpr char kBody[] = "hello from keysvc-tls-server";

// The epoch a ticket's IV names: its bytes 16..19, after the key name (derivation.h).
std::int64_t epoch_field(const SSL_SESSION* s) {
  auto t = ticket_of(s);
  if (t.size() < 32) return -1;
  return (std::int64_t{t[16]} << 24) | (std::int64_t{t[17]} << 16) | (std::int64_t{t[18]} << 8) | t[19];
}

}  // namespace

// ---- a TLS client over TCP ----

SslCtxPtr make_client_ctx(TlsVersion v) {
  return keysvc::test::make_client_ctx(v == TlsVersion::kTls13 ? TLS1_3_VERSION : TLS1_2_VERSION);
}

std::string key_name_of(const SSL_SESSION* s) {
  auto t = ticket_of(s);
  if (t.size() < keysvc::kKeyNameBytes) return "";
  keysvc::KeyName name{};
  std::copy_n(t.begin(), name.size(), name.begin());
  return keysvc::to_hex(name);
}

Connection connect_once(SSL_CTX* ctx, int port, SSL_SESSION* resume) {
  Connection c;
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    c.error = std::string("socket: ") + std::strerror(errno);
    return c;
  }
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};
  timeval tv{kIoTimeoutSeconds, 0};  // bounds connect, every read and every write
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  // The TLS 1.2 client's second flight goes out in several writes; with Nagle on, the
  // last waits for the server's delayed ACK (40 ms), which cut the TLS 1.2 runs to a
  // tenth of the TLS 1.3 runs' handshakes (curl sets TCP_NODELAY by default too).
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    c.error = std::string("connect: ") + std::strerror(errno);
    return c;
  }
  std::unique_ptr<SSL, decltype(&SSL_free)> ssl(SSL_new(ctx), SSL_free);
  if (!ssl || SSL_set_fd(ssl.get(), fd) != 1) {
    c.error = "SSL_new/SSL_set_fd: " + openssl_errors();
    return c;
  }
  SSL_set_tlsext_host_name(ssl.get(), "localhost");
  keysvc::test::collect_tickets(ssl.get(), &c.tickets);
  // Offer a copy, never `resume` itself: when a TLS 1.2 server renews the ticket on
  // resumption, OpenSSL's client removes the offered session from the client cache
  // (SSL_SESS_CACHE_CLIENT), which marks that very object not resumable, and the
  // caller offers the same ticket to the next server (it would then send no ticket).
  if (resume != nullptr) {
    SessionPtr copy(SSL_SESSION_dup(resume));
    if (!copy || SSL_set_session(ssl.get(), copy.get()) != 1) {
      c.error = "SSL_SESSION_dup/SSL_set_session: " + openssl_errors();
      return c;
    }
  }
  auto fail = [&](const std::string& what) {
    c.error = what + " (errno " + std::strerror(errno) + "): " + openssl_errors();
    keysvc::test::collect_tickets(ssl.get(), nullptr);
    return std::move(c);
  };

  if (SSL_connect(ssl.get()) != 1) return fail("handshake");
  const int len = static_cast<int>(sizeof kRequest - 1);
  if (SSL_write(ssl.get(), kRequest, len) != len) return fail("write");
  std::string response;
  char buf[4096];
  for (;;) {
    int n = SSL_read(ssl.get(), buf, sizeof buf);
    if (n > 0) {
      response.append(buf, static_cast<std::size_t>(n));
      continue;
    }
    if (SSL_get_error(ssl.get(), n) == SSL_ERROR_ZERO_RETURN) break;
    return fail("read after " + std::to_string(response.size()) + " byte(s)");
  }
  if (response.find(kBody) == std::string::npos) return fail("unexpected response: " + response);

  // A TLS 1.2 client does not report a ticket renewed on resumption through the
  // new-session callback: take it from the connection's session if it is new.
  if (SSL_SESSION* current = SSL_get1_session(ssl.get())) {
    SessionPtr owned(current);
    auto bytes = ticket_of(current);
    bool known = bytes.empty() || (resume != nullptr && ticket_of(resume) == bytes);
    for (auto& t : c.tickets) known = known || ticket_of(t.get()) == bytes;
    if (!known) c.tickets.push_back(std::move(owned));
  }
  c.reused = SSL_session_reused(ssl.get()) == 1;
  SSL_shutdown(ssl.get());  // our close_notify; the server closes after its own
  keysvc::test::collect_tickets(ssl.get(), nullptr);
  c.ok = true;
  return c;
}

// ---- epochs ----

void EpochTally::issued(const Connection& c, std::int64_t sent, std::int64_t received, std::int64_t epoch_seconds) {
  const std::int64_t lo = keysvc::epoch_of(sent, epoch_seconds), hi = keysvc::epoch_of(received, epoch_seconds);
  std::lock_guard lock(mutex_);
  for (const auto& t : c.tickets) {
    const std::int64_t e = epoch_field(t.get());
    if (e < (lo & 0xffffffff) || e > (hi & 0xffffffff)) ++wrong_epoch;
    seen.emplace(key_name_of(t.get()), e);
  }
}

void EpochTally::present_older(SSL_CTX* ctx, Fleet& fleet, std::size_t issuer, const Connection& c,
                               std::int64_t epoch_seconds, std::chrono::seconds max_age, std::mt19937& rng) {
  std::optional<Kept> older;
  {
    std::lock_guard lock(mutex_);
    if (kept_ && kept_->epoch < (keysvc::epoch_of(unix_now(), epoch_seconds) & 0xffffffff)) older.swap(kept_);
  }
  if (older && Clock::now() - older->at < max_age) {
    const std::size_t target = (older->issuer + 1 + rng() % (fleet.size() - 1)) % fleet.size();
    Connection again = connect_once(ctx, fleet[target].port(), older->ticket.get());
    std::lock_guard lock(mutex_);
    if (again.ok && again.reused) {
      ++older_resumed;
    } else {
      ++older_failed;
      if (failures_.size() < 5)
        failures_.push_back("epoch " + std::to_string(older->epoch) + " ticket of " + fleet[older->issuer].name() +
                            " on " + fleet[target].name() + ": " + (again.ok ? "full handshake" : again.error));
    }
  }
  std::lock_guard lock(mutex_);
  if (!kept_ && c.first() != nullptr)
    kept_ = Kept{SessionPtr(SSL_SESSION_dup(c.tickets.back().get())), issuer, epoch_field(c.tickets.back().get()),
                 Clock::now()};
}

std::size_t EpochTally::register_epoch_keys(const std::string& config_path) {
  auto pool = keysvc::test::open_pool(keysvc::Config::load_file(config_path));
  return pool->run([&](keysvc::hsm::Session& session) {
    const keysvc::KeyRing ring = keysvc::token_store::load(session);
    std::size_t n = 0;
    for (const auto& [name, epoch] : seen) {
      for (const auto& g : ring.generations()) {
        if (keysvc::to_hex(g.name) != name || !g.epoch_tier() || !g.usable()) continue;
        keysvc::EpochKey key;
        keysvc::derive_epoch_key(session, g, epoch, key);
        keysvc::test::remember_epoch_key(key.span());
        ++n;
      }
    }
    return n;
  });
}

std::string EpochTally::describe() const {
  std::ostringstream out;
  out << "  epochs: " << seen.size() << " (generation, epoch) pairs in tickets, " << wrong_epoch
      << " ticket(s) naming another epoch than the one they were issued in; tickets of an earlier epoch on another "
      << "server: " << older_resumed << " resumed, " << older_failed << " failed\n";
  for (const auto& f : failures_) out << "  EARLIER-EPOCH FAILURE: " << f << "\n";
  return out.str();
}

}  // namespace keysvc::fleet
