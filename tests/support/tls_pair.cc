#include "tls_pair.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <stdexcept>

namespace keysvc::test {

std::string openssl_errors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    out += (out.empty() ? "" : "; ") + std::string(buf);
  }
  return out;
}

namespace {

std::string ssl_errors() { return openssl_errors(); }

void require(bool ok, const char* what) {
  if (!ok) throw std::runtime_error(std::string(what) + ": " + ssl_errors());
}

// Each client SSL_CTX collects its tickets here (ex_data would do too; one test
// thread drives one handshake at a time per client context).
int collected_index() {
  static int idx = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return idx;
}

int on_new_session(SSL* ssl, SSL_SESSION* session) {
  auto* sink = static_cast<std::vector<SessionPtr>*>(SSL_get_ex_data(ssl, collected_index()));
  if (sink == nullptr || !SSL_SESSION_has_ticket(session)) return 0;
  sink->emplace_back(session);  // we take the reference OpenSSL hands us
  return 1;
}

}  // namespace

SslCtxPtr make_server_ctx(OSSL_LIB_CTX* libctx, const char* propq) {
  SslCtxPtr ctx(SSL_CTX_new_ex(libctx, propq, TLS_server_method()));
  require(ctx != nullptr, "SSL_CTX_new_ex");
  EVP_PKEY* key = EVP_PKEY_Q_keygen(libctx, propq, "EC", "P-256");
  require(key != nullptr, "EC keygen");
  X509* cert = X509_new_ex(libctx, propq);
  require(cert != nullptr, "X509_new");
  ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert), 86400);
  X509_set_pubkey(cert, key);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("localhost"), -1, -1, 0);
  X509_set_issuer_name(cert, name);
  require(X509_sign(cert, key, EVP_sha256()) > 0, "X509_sign");
  require(SSL_CTX_use_certificate(ctx.get(), cert) == 1, "use_certificate");
  require(SSL_CTX_use_PrivateKey(ctx.get(), key) == 1, "use_PrivateKey");
  X509_free(cert);
  EVP_PKEY_free(key);
  // Server-side session cache off: resumption must come from the ticket alone.
  SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_OFF);
  return ctx;
}

SslCtxPtr make_client_ctx(int version) {
  SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()));
  require(ctx != nullptr, "SSL_CTX_new");
  SSL_CTX_set_min_proto_version(ctx.get(), version);
  SSL_CTX_set_max_proto_version(ctx.get(), version);
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);
  SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(ctx.get(), on_new_session);
  return ctx;
}

void collect_tickets(SSL* client, std::vector<SessionPtr>* sink) { SSL_set_ex_data(client, collected_index(), sink); }

Connection::Connection(SSL_CTX* server_ctx, SSL_CTX* client_ctx, SSL_SESSION* resume)
    : server_(SSL_new(server_ctx)), client_(SSL_new(client_ctx)), offered_(resume) {
  Handshake& h = result_;
  if (server_ == nullptr || client_ == nullptr) {
    h.error = "SSL_new: " + ssl_errors();
    return;
  }
  BIO *client_bio = nullptr, *server_bio = nullptr;
  BIO_new_bio_pair(&client_bio, 0, &server_bio, 0);
  SSL_set_bio(client_, client_bio, client_bio);
  SSL_set_bio(server_, server_bio, server_bio);
  SSL_set_connect_state(client_);
  SSL_set_accept_state(server_);
  SSL_set_ex_data(client_, collected_index(), &h.tickets);
  if (resume != nullptr) SSL_set_session(client_, resume);

  auto pending = [](SSL* s, int rc) {
    int e = SSL_get_error(s, rc);
    return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE;
  };
  bool client_done = false, server_done = false;
  for (int round = 0; round < 50 && !(client_done && server_done); ++round) {
    if (!client_done) {
      int rc = SSL_do_handshake(client_);
      if (rc == 1) client_done = true;
      else if (!pending(client_, rc)) {
        h.error = "client handshake: " + ssl_errors();
        return;
      }
    }
    if (!server_done) {
      int rc = SSL_do_handshake(server_);
      if (rc == 1) server_done = true;
      else if (!pending(server_, rc)) {
        h.error = "server handshake: " + ssl_errors();
        return;
      }
    }
  }
  if (!(client_done && server_done)) {
    h.error = "handshake did not finish";
    return;
  }
  h.reused = SSL_session_reused(server_) == 1;
  h.version = SSL_version(server_);
  h.ok = exchange();
}

Connection::~Connection() {
  SSL_free(client_);
  SSL_free(server_);
}

bool Connection::exchange() {
  char buf[16];
  if (SSL_write(server_, "ping", 4) != 4 || SSL_read(client_, buf, sizeof buf) != 4 ||
      SSL_write(client_, "pong", 4) != 4 || SSL_read(server_, buf, sizeof buf) != 4) {
    result_.error = "application data: " + ssl_errors();
    return false;
  }
  return true;
}

Handshake Connection::finish() {
  if (result_.ok) {
    // A TLS 1.2 client does not report a ticket renewed on resumption through the
    // new-session callback; take it from the connection's session.
    if (SSL_SESSION* current = SSL_get1_session(client_)) {
      SessionPtr owned(current);
      auto bytes = ticket_of(current);
      bool known = offered_ != nullptr && ticket_of(offered_) == bytes;
      for (auto& t : result_.tickets) known = known || ticket_of(t.get()) == bytes;
      if (!known && !bytes.empty()) result_.tickets.push_back(std::move(owned));
    }
    SSL_shutdown(client_);
    SSL_shutdown(server_);
  }
  SSL_set_ex_data(client_, collected_index(), nullptr);
  return std::move(result_);
}

Handshake handshake(SSL_CTX* server_ctx, SSL_CTX* client_ctx, SSL_SESSION* resume) {
  return Connection(server_ctx, client_ctx, resume).finish();
}

std::vector<std::uint8_t> ticket_of(const SSL_SESSION* session) {
  const unsigned char* tick = nullptr;
  std::size_t len = 0;
  SSL_SESSION_get0_ticket(session, &tick, &len);
  return {tick, tick + len};
}

namespace {

// Minimal DER helpers to rewrite one field of an encoded SSL_SESSION.
std::size_t read_len(const std::vector<std::uint8_t>& d, std::size_t& i) {
  std::size_t len = d.at(i++);
  if (len & 0x80) {
    int n = len & 0x7f;
    len = 0;
    while (n--) len = len << 8 | d.at(i++);
  }
  return len;
}

void put_len(std::vector<std::uint8_t>& out, std::size_t len) {
  if (len < 0x80) {
    out.push_back(static_cast<std::uint8_t>(len));
    return;
  }
  std::vector<std::uint8_t> bytes;
  for (; len; len >>= 8) bytes.insert(bytes.begin(), static_cast<std::uint8_t>(len));
  out.push_back(static_cast<std::uint8_t>(0x80 | bytes.size()));
  out.insert(out.end(), bytes.begin(), bytes.end());
}

void put_tlv(std::vector<std::uint8_t>& out, std::uint8_t tag, const std::vector<std::uint8_t>& value) {
  out.push_back(tag);
  put_len(out, value.size());
  out.insert(out.end(), value.begin(), value.end());
}

}  // namespace

SessionPtr with_ticket(const SSL_SESSION* session, const std::vector<std::uint8_t>& ticket) {
  int n = i2d_SSL_SESSION(const_cast<SSL_SESSION*>(session), nullptr);
  std::vector<std::uint8_t> der(static_cast<std::size_t>(n));
  unsigned char* p = der.data();
  i2d_SSL_SESSION(const_cast<SSL_SESSION*>(session), &p);

  // SSL_SESSION ::= SEQUENCE { ..., [10] EXPLICIT OCTET STRING ticket, ... }
  std::size_t i = 0;
  if (der.at(i++) != 0x30) throw std::runtime_error("session DER is not a SEQUENCE");
  std::size_t end = read_len(der, i);
  end += i;
  std::vector<std::uint8_t> body;
  bool replaced = false;
  while (i < end) {
    std::size_t start = i;
    std::uint8_t tag = der.at(i++);
    std::size_t len = read_len(der, i);
    if (tag == 0xaa) {  // [10] constructed
      std::vector<std::uint8_t> inner;
      put_tlv(inner, 0x04, ticket);
      put_tlv(body, 0xaa, inner);
      replaced = true;
    } else {
      body.insert(body.end(), der.begin() + static_cast<long>(start), der.begin() + static_cast<long>(i + len));
    }
    i += len;
  }
  if (!replaced) throw std::runtime_error("session has no ticket field");
  std::vector<std::uint8_t> out;
  put_tlv(out, 0x30, body);
  const unsigned char* q = out.data();
  SessionPtr copy(d2i_SSL_SESSION(nullptr, &q, static_cast<long>(out.size())));
  if (!copy) throw std::runtime_error("re-encoded session does not parse");
  return copy;
}

}  // namespace keysvc::test
