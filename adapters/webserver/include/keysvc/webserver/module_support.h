/* What keysvc's web server modules (adapters/nginx, adapters/apache) share beyond the C
 * API in keysvc_openssl.h: opening a service in a freshly forked worker, and the ticket
 * counters of one SSL_CTX as a log line. Plain C declarations: both modules are C. */
#ifndef KEYSVC_WEBSERVER_MODULE_SUPPORT_H
#define KEYSVC_WEBSERVER_MODULE_SUPPORT_H

#include <openssl/ssl.h>
#include <stddef.h>

#include "keysvc/openssl/keysvc_openssl.h"

#ifdef __cplusplus
extern "C" {
#endif

/* keysvc_service_open_preloaded() for a web server worker, with two precautions:
 *
 *   - keysvc starts threads (ring refresher, issue pool refiller) when it opens; they are
 *     started with every signal blocked, so the server's signals (nginx's SIGQUIT,
 *     httpd's SIGTERM, ...) keep going to its own threads;
 *   - processes open one at a time: an exclusive flock on lock_path (the keysvc config
 *     file) is held while opening, when the worker can open that file. SoftHSM 2.6 reads
 *     its token files while C_Initialize scans them, and a scan that meets another
 *     process logging in can miss the token ("tokens present: none") or fail
 *     C_GetTokenInfo; workers starting together hit this often enough that taking turns
 *     is the cure. Without read access to lock_path the worker opens without the lock.
 *     The wait for the lock is bounded (KEYSVC_WEBSERVER_LOCK_WAIT_MS): whoever can read
 *     the file can hold the lock, and a worker must never hang on a stuck or hostile
 *     holder; past the bound it opens without the lock.
 *
 * Returns NULL with a one-line reason in err if the service does not open. */
keysvc_service *keysvc_webserver_open(const keysvc_preloaded *preloaded, const char *lock_path, char *err,
                                      size_t err_len);

/* How long keysvc_webserver_open() waits for the lock. Each worker holds it for one open
 * (loading the ring, logging in); workers queued behind one another wait their turns
 * within it, and one stuck behind a holder that never lets go starts anyway. */
#define KEYSVC_WEBSERVER_LOCK_WAIT_MS 10000L

/* keysvc_webserver_open() with its own bound on the lock wait; *lock_held (if not NULL)
 * is 1 if the lock was had, 0 if the worker opened without it. */
keysvc_service *keysvc_webserver_open_within(const keysvc_preloaded *preloaded, const char *lock_path,
                                             long max_lock_wait_ms, int *lock_held, char *err, size_t err_len);

/* Writes "issued=N resumed=N renewed=N issue_failed=N unknown_key=N retired_key=N
 * hsm_error=N rejected=N" for the keysvc callbacks on ctx (all zero if keysvc is not
 * installed there) into out. */
void keysvc_webserver_counters(const SSL_CTX *ctx, char *out, size_t out_len);

#ifdef __cplusplus
}
#endif

#endif /* KEYSVC_WEBSERVER_MODULE_SUPPORT_H */
