/* keysvc for C servers on OpenSSL 3: the C face of ticket_adapter.h.
 *
 *   char err[256];
 *   keysvc_service *svc = keysvc_service_open("/etc/keysvc/keysvc.toml", err, sizeof err);
 *   if (svc == NULL) { fprintf(stderr, "%s\n", err); exit(1); }
 *   if (!keysvc_ssl_ctx_install(ctx, svc, NULL, NULL, err, sizeof err)) { ... }
 *   ...
 *   keysvc_service_free(svc);  // SSL_CTXs using it keep it alive until they are freed
 *
 * Every function returns an error message (one line, no secrets) in err when it fails.
 */
#ifndef KEYSVC_OPENSSL_KEYSVC_OPENSSL_H
#define KEYSVC_OPENSSL_KEYSVC_OPENSSL_H

#include <openssl/ssl.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct keysvc_service keysvc_service;

/* Opens the service described by a keysvc TOML file. NULL on failure. */
keysvc_service *keysvc_service_open(const char *config_path, char *err, size_t err_len);

/* Drops the caller's reference. NULL is accepted. */
void keysvc_service_free(keysvc_service *service);

/* Installs the ticket callbacks on ctx (see ticket_adapter.h). libctx and propq are
 * those ctx was created with (NULL for SSL_CTX_new). Returns 1 on success, 0 on
 * failure. */
int keysvc_ssl_ctx_install(SSL_CTX *ctx, keysvc_service *service, OSSL_LIB_CTX *libctx, const char *propq,
                           char *err, size_t err_len);

#ifdef __cplusplus
}
#endif

#endif /* KEYSVC_OPENSSL_KEYSVC_OPENSSL_H */
