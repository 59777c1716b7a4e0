/* An out-of-tree C server built against the installed keysvc with pkg-config
 * (cc main.c $(pkg-config --cflags --libs keysvc)): opens the service from a keysvc
 * TOML file, installs the ticket callbacks, and runs in-memory TLS 1.3 handshakes
 * over a BIO pair: one full handshake that yields a ticket, then one resumption.
 * Prints "full=1 resumed=1" and exits 0, or one error line and exits 1.
 *
 *   usage: consumer_c KEYSVC_TOML
 */
#include <keysvc/openssl/keysvc_openssl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>

static int fail(const char *what) {
  fprintf(stderr, "consumer_c: %s\n", what);
  ERR_print_errors_fp(stderr);
  return 1;
}

static SSL_CTX *server_ctx(void) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  X509 *cert = X509_new();
  if (ctx == NULL || key == NULL || cert == NULL) return NULL;
  ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert), -60);
  X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
  X509_set_pubkey(cert, key);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(cert), "CN", MBSTRING_ASC, (const unsigned char *)"localhost",
                             -1, -1, 0);
  X509_set_issuer_name(cert, X509_get_subject_name(cert));
  if (X509_sign(cert, key, EVP_sha256()) <= 0 || SSL_CTX_use_certificate(ctx, cert) != 1 ||
      SSL_CTX_use_PrivateKey(ctx, key) != 1)
    return NULL;
  X509_free(cert);
  EVP_PKEY_free(key);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  return ctx;
}

/* The newest session the client received a ticket for (TLS 1.3 tickets arrive after
 * the handshake; OpenSSL hands them to the new-session callback). */
static SSL_SESSION *g_newest;

static int on_new_session(SSL *ssl, SSL_SESSION *session) {
  (void)ssl;
  SSL_SESSION_free(g_newest);
  g_newest = session;
  return 1; /* we keep the reference */
}

/* One handshake, offering `resume` if not NULL; the server then sends a byte so the
 * client reads the TLS 1.3 tickets. Returns the client's session (with its ticket) or
 * NULL (no ticket); *reused tells whether the server resumed. */
static SSL_SESSION *handshake(SSL_CTX *server, SSL_CTX *client, SSL_SESSION *resume, int *reused) {
  SSL *s = SSL_new(server), *c = SSL_new(client);
  BIO *cb = NULL, *sb = NULL;
  SSL_SESSION *out = NULL;
  char byte;
  int i, done_c = 0, done_s = 0;
  if (s == NULL || c == NULL || BIO_new_bio_pair(&cb, 0, &sb, 0) != 1) return NULL;
  SSL_set_bio(c, cb, cb);
  SSL_set_bio(s, sb, sb);
  SSL_set_connect_state(c);
  SSL_set_accept_state(s);
  if (resume != NULL) SSL_set_session(c, resume);
  for (i = 0; i < 64 && !(done_c && done_s); ++i) {
    if (!done_c) done_c = SSL_do_handshake(c) == 1;
    if (!done_s) done_s = SSL_do_handshake(s) == 1;
  }
  if (done_c && done_s && SSL_write(s, "x", 1) == 1 && SSL_read(c, &byte, 1) == 1 && g_newest != NULL) {
    *reused = SSL_session_reused(c);
    out = g_newest;
    g_newest = NULL;
  }
  /* A client SSL freed without close_notify marks its session not resumable. */
  SSL_shutdown(c);
  SSL_shutdown(s);
  SSL_free(c);
  SSL_free(s);
  return out;
}

int main(int argc, char **argv) {
  char err[256];
  keysvc_service *svc;
  SSL_CTX *server, *client;
  SSL_SESSION *first, *second;
  int reused_first = -1, reused_second = -1;

  if (argc != 2) return fail("usage: consumer_c KEYSVC_TOML");
  svc = keysvc_service_open(argv[1], err, sizeof err);
  if (svc == NULL) return fail(err);
  server = server_ctx();
  client = SSL_CTX_new(TLS_client_method());
  if (server == NULL || client == NULL) return fail("SSL_CTX setup");
  SSL_CTX_set_min_proto_version(client, TLS1_3_VERSION);
  SSL_CTX_set_session_cache_mode(client, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(client, on_new_session);
  if (!keysvc_ssl_ctx_install(server, svc, NULL, NULL, err, sizeof err)) return fail(err);
  keysvc_service_free(svc); /* the SSL_CTX keeps it */

  first = handshake(server, client, NULL, &reused_first);
  if (first == NULL || reused_first || !SSL_SESSION_is_resumable(first)) return fail("no ticket from a full handshake");
  second = handshake(server, client, first, &reused_second);
  if (second == NULL || !reused_second) return fail("the keysvc ticket did not resume");
  printf("full=1 resumed=1\n");
  SSL_SESSION_free(first);
  SSL_SESSION_free(second);
  SSL_CTX_free(client);
  SSL_CTX_free(server);
  return 0;
}
