#include "bio_handshake.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <time.h>

#include <stdexcept>

#include "tls_pair.h"

namespace keysvc::bench {

namespace {

std::string ssl_errors() {
  std::string out = test::openssl_errors();
  return out.empty() ? "no OpenSSL error" : out;
}

void require(bool ok, const char* what) {
  if (!ok) throw std::runtime_error(std::string(what) + ": " + ssl_errors());
}

std::int64_t ns(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// Accumulates CPU and wall time of the server-side calls made inside it.
class ServerTimer {
 public:
  explicit ServerTimer(HandshakeTiming& t) : t_(t), cpu0_(ns(CLOCK_THREAD_CPUTIME_ID)), wall0_(ns(CLOCK_MONOTONIC)) {}
  ~ServerTimer() {
    t_.server_wall_ns += ns(CLOCK_MONOTONIC) - wall0_;
    t_.server_cpu_ns += ns(CLOCK_THREAD_CPUTIME_ID) - cpu0_;
  }
  ServerTimer(const ServerTimer&) = delete;
  ServerTimer& operator=(const ServerTimer&) = delete;

 private:
  HandshakeTiming& t_;
  std::int64_t cpu0_, wall0_;
};

class ClientTimer {
 public:
  explicit ClientTimer(HandshakeTiming& t) : t_(t), wall0_(ns(CLOCK_MONOTONIC)) {}
  ~ClientTimer() { t_.client_wall_ns += ns(CLOCK_MONOTONIC) - wall0_; }
  ClientTimer(const ClientTimer&) = delete;
  ClientTimer& operator=(const ClientTimer&) = delete;

 private:
  HandshakeTiming& t_;
  std::int64_t wall0_;
};

// Tickets received by client connections on this thread (each thread runs one
// handshake at a time).
thread_local int t_tickets_received = 0;

int count_ticket(SSL*, SSL_SESSION* session) {
  if (SSL_SESSION_has_ticket(session)) ++t_tickets_received;
  return 0;  // not kept
}

bool pending(SSL* s, int rc) {
  int e = SSL_get_error(s, rc);
  return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE;
}

}  // namespace

ServerIdentity::ServerIdentity() {
  key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  require(key != nullptr, "EC keygen");
  cert = X509_new();
  require(cert != nullptr, "X509_new");
  ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert), 86400);
  X509_set_pubkey(cert, key);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("localhost"), -1, -1, 0);
  X509_set_issuer_name(cert, name);
  require(X509_sign(cert, key, EVP_sha256()) > 0, "X509_sign");
}

ServerIdentity::~ServerIdentity() {
  X509_free(cert);
  EVP_PKEY_free(key);
}

SslCtxPtr make_server_ctx(const ServerIdentity& id) {
  SslCtxPtr ctx(SSL_CTX_new(TLS_server_method()));
  require(ctx != nullptr, "SSL_CTX_new");
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(ctx.get(), TLS1_3_VERSION);
  require(SSL_CTX_use_certificate(ctx.get(), id.cert) == 1, "use_certificate");
  require(SSL_CTX_use_PrivateKey(ctx.get(), id.key) == 1, "use_PrivateKey");
  SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_OFF);
  static const unsigned char sid_ctx[] = "keysvc-bench";
  SSL_CTX_set_session_id_context(ctx.get(), sid_ctx, sizeof sid_ctx - 1);
  return ctx;
}

SslCtxPtr make_client_ctx(int version) {
  SslCtxPtr ctx = test::make_client_ctx(version);
  SSL_CTX_sess_set_new_cb(ctx.get(), count_ticket);  // count, instead of collecting sessions
  return ctx;
}

HandshakeTiming timed_handshake(SSL_CTX* server_ctx, SSL_CTX* client_ctx, SSL_SESSION* resume, bool keep_session) {
  HandshakeTiming t;
  const int tickets_before = t_tickets_received;
  SSL* client = nullptr;
  SSL* server = nullptr;
  {
    ClientTimer c(t);
    client = SSL_new(client_ctx);
    if (client != nullptr) {
      SSL_set_connect_state(client);
      // A TLS 1.3 client uses a session once (OpenSSL marks it not resumable after
      // the resumption): offer a fresh copy each time, the way a client with many
      // tickets from one server would present one of them.
      if (resume != nullptr) {
        SSL_SESSION* copy = SSL_SESSION_dup(resume);
        SSL_set_session(client, copy);
        SSL_SESSION_free(copy);
      }
    }
  }
  {
    ServerTimer s(t);
    server = SSL_new(server_ctx);
    if (server != nullptr) SSL_set_accept_state(server);
  }
  if (client == nullptr || server == nullptr) {
    t.error = "SSL_new: " + ssl_errors();
    SSL_free(client);
    SSL_free(server);
    return t;
  }
  BIO *client_bio = nullptr, *server_bio = nullptr;
  BIO_new_bio_pair(&client_bio, 0, &server_bio, 0);
  SSL_set_bio(client, client_bio, client_bio);
  SSL_set_bio(server, server_bio, server_bio);

  bool client_done = false, server_done = false;
  for (int round = 0; round < 50 && !(client_done && server_done) && t.error.empty(); ++round) {
    if (!client_done) {
      ClientTimer c(t);
      int rc = SSL_do_handshake(client);
      if (rc == 1) client_done = true;
      else if (!pending(client, rc)) t.error = "client handshake: " + ssl_errors();
    }
    if (!server_done && t.error.empty()) {
      ServerTimer s(t);
      int rc = SSL_do_handshake(server);
      if (rc == 1) server_done = true;
      else if (!pending(server, rc)) t.error = "server handshake: " + ssl_errors();
    }
  }
  if (t.error.empty() && !(client_done && server_done)) t.error = "handshake did not finish";
  if (t.error.empty()) {
    t.reused = SSL_session_reused(server) == 1;
    int written = 0;
    {
      ServerTimer s(t);
      written = SSL_write(server, "ping", 4);
    }
    char buf[16];
    int got = 0;
    {
      ClientTimer c(t);
      got = SSL_read(client, buf, sizeof buf);  // also processes TLS 1.3 tickets
    }
    if (written != 4 || got != 4) t.error = "application data: " + ssl_errors();
  }
  if (t.error.empty()) {
    t.ok = true;
    t.tickets = t_tickets_received - tickets_before;
    if (keep_session) t.session.reset(SSL_get1_session(client));
    // Clean close_notify both ways: an SSL freed without it marks its session
    // not resumable.
    {
      ClientTimer c(t);
      SSL_shutdown(client);
    }
    {
      ServerTimer s(t);
      SSL_shutdown(server);
    }
  }
  ERR_clear_error();
  {
    ClientTimer c(t);
    SSL_free(client);
  }
  {
    ServerTimer s(t);
    SSL_free(server);
  }
  return t;
}

}  // namespace keysvc::bench
