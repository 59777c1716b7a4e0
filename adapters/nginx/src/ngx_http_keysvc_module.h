/* ngx_http_keysvc_module: keysvc's HSM-backed TLS session tickets in nginx.
 *
 *   load_module /path/ngx_http_keysvc_module.so;
 *   http {
 *       keysvc_config  /etc/keysvc/keysvc.toml;   # http or server
 *       keysvc_tickets on;                        # http or server
 *       server { listen 443 ssl; ... }
 *   }
 *
 * The master reads the configuration: it collects the SSL_CTX of every TLS server whose
 * merged keysvc_tickets is on and preloads each distinct keysvc_config (the TOML file
 * and the PIN, read as root like ssl_password_file; ngx_http_keysvc_module.c). Each
 * worker inherits those in memory, opens the PKCS#11 module, its sessions and the keysvc
 * service itself after the fork (as the unprivileged `user`, never reading the PIN
 * file), and installs the ticket callbacks on those SSL_CTXs (ngx_http_keysvc_worker.c).
 * docs/NGINX.md has the details. */
#ifndef NGX_HTTP_KEYSVC_MODULE_H_INCLUDED
#define NGX_HTTP_KEYSVC_MODULE_H_INCLUDED

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "keysvc/openssl/keysvc_openssl.h"

/* One TLS server context keysvc goes on, found while reading the configuration. */
typedef struct {
    SSL_CTX    *ssl_ctx;
    ngx_str_t   config;  /* absolute path of its keysvc TOML file, NUL-terminated */
    ngx_str_t   name;    /* the server's first server_name, for log lines */
} ngx_http_keysvc_server_t;

/* One distinct keysvc_config, read by the master (keysvc_preload). */
typedef struct {
    ngx_str_t          config;     /* absolute path, NUL-terminated */
    keysvc_preloaded  *preloaded;  /* freed (PIN wiped) with the cycle's pool */
} ngx_http_keysvc_preload_t;

typedef struct {
    ngx_array_t  servers;   /* of ngx_http_keysvc_server_t */
    ngx_array_t  preloads;  /* of ngx_http_keysvc_preload_t */
} ngx_http_keysvc_main_conf_t;

extern ngx_module_t  ngx_http_keysvc_module;

/* init_process: opens one keysvc service per preloaded keysvc_config in this worker and
 * installs the callbacks. Never fails the worker: a service that cannot be opened (the
 * HSM is down) leaves its servers without tickets (full handshakes) and is retried. */
ngx_int_t ngx_http_keysvc_init_process(ngx_cycle_t *cycle);

/* exit_process: logs each server's ticket counters and drops this worker's references
 * to its services (the SSL_CTXs hold theirs until nginx frees them). */
void ngx_http_keysvc_exit_process(ngx_cycle_t *cycle);

#endif /* NGX_HTTP_KEYSVC_MODULE_H_INCLUDED */
