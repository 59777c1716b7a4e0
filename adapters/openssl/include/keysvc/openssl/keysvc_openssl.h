/* keysvc for C servers on OpenSSL 3: the C face of ticket_adapter.h.
 *
 *   char err[256];
 *   keysvc_service *svc = keysvc_service_open("/etc/keysvc/keysvc.toml", err, sizeof err);
 *   if (svc == NULL) { fprintf(stderr, "%s\n", err); exit(1); }
 *   if (!keysvc_ssl_ctx_install(ctx, svc, NULL, NULL, err, sizeof err)) { ... }
 *   ...
 *   keysvc_service_free(svc);  // SSL_CTXs using it keep it alive until they are freed
 *   ...
 *   keysvc_service_stop(svc);  // at process exit, if SSL_CTXs using it are never freed
 *
 * Prefork servers (nginx, Apache httpd) whose master runs as root and whose workers run
 * as an unprivileged user read the configuration and the PIN in the master, the way
 * nginx reads ssl_password_file, and open the token in each worker after the fork:
 *
 *   // master, at configuration time (the PIN file may be readable by root only)
 *   keysvc_preloaded *pre = keysvc_preload("/etc/keysvc/keysvc.toml", err, sizeof err);
 *   // ... fork(); setuid(worker user) ...
 *   // worker: never reads the PIN file; the PIN comes from `pre`
 *   keysvc_service *svc = keysvc_service_open_preloaded(pre, err, sizeof err);
 *
 * Every function returns an error message (one line, no secrets) in err when it fails.
 * No function leaves anything on the calling thread's OpenSSL error queue: what keysvc
 * and the libraries it loads put there during the call is removed before it returns
 * (servers such as nginx log anything left there as a stale error).
 */
#ifndef KEYSVC_OPENSSL_KEYSVC_OPENSSL_H
#define KEYSVC_OPENSSL_KEYSVC_OPENSSL_H

#include <openssl/ssl.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct keysvc_service keysvc_service;
typedef struct keysvc_preloaded keysvc_preloaded;

/* Opens the service described by a keysvc TOML file. NULL on failure. */
keysvc_service *keysvc_service_open(const char *config_path, char *err, size_t err_len);

/* Drops the caller's reference. NULL is accepted. */
void keysvc_service_free(keysvc_service *service);

/* At process exit, before keysvc_service_free(): stops the service's background thread
 * (token rescans, rotation, audit seals) and writes the final audit records, so that
 * nothing of keysvc runs on while the process's exit handlers (OpenSSL's, the PKCS#11
 * module's static destructors) free what it uses. SSL_CTXs still holding the service
 * keep issuing and opening tickets from its last key ring. NULL is accepted. */
void keysvc_service_stop(keysvc_service *service);

/* Reads and checks the keysvc TOML file at config_path and reads the PIN from the
 * source it names (hsm.pin, or the token URI's pin-source / pin-value), as the calling
 * process: nothing else. It loads no PKCS#11 module and touches no token, so it is safe
 * in a process that forks afterwards. The handle holds the parsed configuration and the
 * PIN; a forked child inherits both in memory. NULL on failure (bad configuration, no
 * PIN source, PIN file unreadable or empty). */
keysvc_preloaded *keysvc_preload(const char *config_path, char *err, size_t err_len);

/* keysvc_service_open() from a preloaded configuration: the PIN is the one read by
 * keysvc_preload(), its source is not read again. May be called several times (again
 * after a failure, in each forked worker). NULL on failure. */
keysvc_service *keysvc_service_open_preloaded(const keysvc_preloaded *preloaded, char *err, size_t err_len);

/* Wipes the PIN from memory and frees the handle. Services opened from it stay open.
 * NULL is accepted. */
void keysvc_preloaded_free(keysvc_preloaded *preloaded);

/* Installs the ticket callbacks on ctx (see ticket_adapter.h). libctx and propq are
 * those ctx was created with (NULL for SSL_CTX_new). Returns 1 on success, 0 on
 * failure. */
int keysvc_ssl_ctx_install(SSL_CTX *ctx, keysvc_service *service, OSSL_LIB_CTX *libctx, const char *propq,
                           char *err, size_t err_len);

#ifdef __cplusplus
}
#endif

#endif /* KEYSVC_OPENSSL_KEYSVC_OPENSSL_H */
