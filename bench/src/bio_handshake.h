// One TLS handshake between a server SSL_CTX and a client SSL_CTX over a memory BIO
// pair, with the server's side timed on its own: per-thread CPU time
// (CLOCK_THREAD_CPUTIME_ID) and wall time around every server-side SSL call (SSL_new,
// each SSL_do_handshake step, the first SSL_write, SSL_free). The client's calls are
// timed separately. Both sides run on the calling thread, alternately.
#pragma once

#include <openssl/ssl.h>

#include <cstdint>
#include <memory>
#include <string>

#include "tls_pair.h"

namespace keysvc::bench {

using SslCtxPtr = test::SslCtxPtr;
using SessionPtr = test::SessionPtr;

// A self-signed EC P-256 certificate and key, shared by every server context.
struct ServerIdentity {
  EVP_PKEY* key = nullptr;
  X509* cert = nullptr;
  ServerIdentity();
  ~ServerIdentity();
  ServerIdentity(const ServerIdentity&) = delete;
  ServerIdentity& operator=(const ServerIdentity&) = delete;
};

// A TLS 1.2-1.3 server context with `id`, no server-side session cache (resumption
// only through tickets), OpenSSL's defaults otherwise (2 TLS 1.3 tickets).
SslCtxPtr make_server_ctx(const ServerIdentity& id);
// A client context pinned to one version (TLS1_2_VERSION / TLS1_3_VERSION) that
// counts the session tickets it receives (HandshakeTiming::tickets).
SslCtxPtr make_client_ctx(int version);

struct HandshakeTiming {
  bool ok = false;
  bool reused = false;
  std::string error;
  std::int64_t server_cpu_ns = 0;   // server thread CPU time
  std::int64_t server_wall_ns = 0;  // server wall time (includes waits for the HSM)
  std::int64_t client_wall_ns = 0;
  int tickets = 0;     // session tickets the client received
  SessionPtr session;  // the client's session afterwards, if asked for
};

// Runs one handshake, offering `resume` if not null, then one application record
// server -> client (so the client processes TLS 1.3 tickets).
HandshakeTiming timed_handshake(SSL_CTX* server, SSL_CTX* client, SSL_SESSION* resume, bool keep_session);

}  // namespace keysvc::bench
