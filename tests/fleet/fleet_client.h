// The fleet tests' TLS client over TCP (one connection, one HTTP request to a
// keysvc-tls-server of the Fleet, fleet_harness.h), and EpochTally: what the rotation
// test's clients see of the epoch tier with a short epoch.
#pragma once

#include <openssl/ssl.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "fleet_harness.h"
#include "tls_pair.h"

namespace keysvc::fleet {

// ---- a TLS client over TCP ----

// A client context that collects its tickets (tls_pair.h; certificate not verified:
// identity is not what is tested).
test::SslCtxPtr make_client_ctx(test::TlsVersion v);

// The ticket's key name (its first 16 bytes) in hex, or "" if it is too short.
std::string key_name_of(const SSL_SESSION* s);

struct Connection {
  bool ok = false;      // handshake done, request sent, whole response read
  bool reused = false;  // the server resumed the offered session
  std::vector<test::SessionPtr> tickets;  // sessions carrying the tickets received, in order
  std::string error;
  // The first ticket received, or nullptr.
  SSL_SESSION* first() const { return tickets.empty() ? nullptr : tickets.front().get(); }
};

// One connection to 127.0.0.1:port: handshake (offering `resume`), one HTTP request,
// the whole response (so TLS 1.3 tickets, sent after the handshake, arrive), shutdown.
Connection connect_once(SSL_CTX* ctx, int port, SSL_SESSION* resume);

// ---- epochs: what the clients see of the epoch tier with a short epoch ----

// Epochs in the tickets of the rotation test, and tickets of an earlier epoch presented
// to another server. Thread-safe; read the public figures after the clients stopped.
class EpochTally {
 public:
  // The tickets of `c`, asked for at Unix time `sent` and received at `received`: each
  // must name an epoch in between (the fleet's clock_skew is 0).
  void issued(const Connection& c, std::int64_t sent, std::int64_t received, std::int64_t epoch_seconds);

  // Presents the ticket kept from an earlier epoch (if any, younger than `max_age`) to a
  // server other than its issuer, then keeps one of `c`'s (from `issuer`).
  void present_older(SSL_CTX* ctx, Fleet& fleet, std::size_t issuer, const Connection& c, std::int64_t epoch_seconds,
                     std::chrono::seconds max_age, std::mt19937& rng);

  // Derives, through the token, the epoch key of each (generation, epoch) seen whose
  // generation is still there, and registers it for the suite's secret scan
  // (known_secrets.h): the servers' logs must not hold it. Returns how many.
  std::size_t register_epoch_keys(const std::string& config_path);

  // The figures and the first failures, indented lines for the test's summary.
  std::string describe() const;

  std::set<std::pair<std::string, std::int64_t>> seen;
  std::uint64_t wrong_epoch = 0, older_resumed = 0, older_failed = 0;

 private:
  struct Kept {
    test::SessionPtr ticket;
    std::size_t issuer;
    std::int64_t epoch;
    Clock::time_point at;
  };
  mutable std::mutex mutex_;
  std::optional<Kept> kept_;
  std::vector<std::string> failures_;
};

}  // namespace keysvc::fleet
