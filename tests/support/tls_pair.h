// In-memory TLS handshakes between a server SSL_CTX and a client SSL_CTX over a BIO
// pair: real OpenSSL handshakes, no sockets.
#pragma once

#include <openssl/ssl.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "keysvc/openssl/ossl.h"

namespace keysvc::test {

using openssl::SslCtxPtr;
using SessionPtr = openssl::SslSessionPtr;

// Drains OpenSSL's error queue into one line ("; "-separated), for messages.
std::string openssl_errors();

// A server context with a fresh self-signed EC P-256 certificate, in `libctx`.
SslCtxPtr make_server_ctx(OSSL_LIB_CTX* libctx = nullptr, const char* propq = nullptr);
// A client context pinned to one protocol version (TLS1_2_VERSION or TLS1_3_VERSION)
// that collects every session ticket it receives.
SslCtxPtr make_client_ctx(int version);
// Where a client SSL of such a context puts the tickets it receives, for a connection not
// made by handshake() / Connection (e.g. over a socket); nullptr: nowhere (before `sink` dies).
void collect_tickets(SSL* client, std::vector<SessionPtr>* sink);

struct Handshake {
  bool ok = false;         // both sides completed and exchanged application data
  bool reused = false;     // the server resumed the offered session
  int version = 0;
  std::vector<SessionPtr> tickets;  // sessions carrying tickets the client received
  std::string error;       // what failed, if !ok
  // The last ticket received, or nullptr.
  SSL_SESSION* last() const { return tickets.empty() ? nullptr : tickets.back().get(); }
};

// An established connection over a BIO pair, kept open for post-handshake traffic.
class Connection {
 public:
  // Handshakes (offering `resume` if given) and exchanges a few bytes both ways so
  // TLS 1.3 tickets are processed. Check ok()/result().
  Connection(SSL_CTX* server, SSL_CTX* client, SSL_SESSION* resume = nullptr);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  SSL* server() const { return server_; }
  SSL* client() const { return client_; }
  // Sends a few bytes server -> client -> server; the client's read processes any
  // post-handshake message (new session tickets). False on failure (see result().error).
  bool exchange();
  // Shuts down both sides and returns what was seen.
  Handshake finish();
  Handshake& result() { return result_; }

 private:
  SSL* server_ = nullptr;
  SSL* client_ = nullptr;
  SSL_SESSION* offered_ = nullptr;
  Handshake result_;
};

// Runs one handshake (offering `resume` if given), exchanges a few bytes both ways so
// TLS 1.3 tickets are processed, and shuts both sides down.
Handshake handshake(SSL_CTX* server, SSL_CTX* client, SSL_SESSION* resume = nullptr);

// The ticket bytes of a client session.
std::vector<std::uint8_t> ticket_of(const SSL_SESSION* session);
// A copy of `session` whose ticket is replaced by `ticket` (any length, even empty).
SessionPtr with_ticket(const SSL_SESSION* session, const std::vector<std::uint8_t>& ticket);

}  // namespace keysvc::test
