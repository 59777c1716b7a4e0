/* What the nginx module needs from keysvc beyond the C API in keysvc_openssl.h: a check
 * of a keysvc TOML file that touches no token (nginx reads its configuration in the
 * master, which must never open the PKCS#11 module), and the ticket counters of one
 * SSL_CTX as a log line. Plain C declarations: the module itself is C. */
#ifndef KEYSVC_NGINX_KEYSVC_BRIDGE_H
#define KEYSVC_NGINX_KEYSVC_BRIDGE_H

#include <openssl/ssl.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Parses and validates the keysvc configuration at `path` (keysvc::Config::load_file)
 * without loading the PKCS#11 module or reading the PIN. Returns 1 if it is valid; 0
 * with a one-line reason ("FILE:LINE: ...") in err otherwise. */
int keysvc_nginx_check_config(const char *path, char *err, size_t err_len);

/* Writes "issued=N resumed=N renewed=N issue_failed=N unknown_key=N retired_key=N
 * hsm_error=N rejected=N" for the keysvc callbacks on ctx (all zero if keysvc is not
 * installed there) into out. */
void keysvc_nginx_counters(const SSL_CTX *ctx, char *out, size_t out_len);

#ifdef __cplusplus
}
#endif

#endif /* KEYSVC_NGINX_KEYSVC_BRIDGE_H */
