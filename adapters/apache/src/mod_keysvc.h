/* mod_keysvc: keysvc's HSM-backed TLS session tickets in Apache httpd 2.4 (mod_ssl).
 *
 *   LoadModule keysvc_module /usr/lib/apache2/modules/mod_keysvc.so
 *   KeysvcConfig /etc/keysvc/keysvc.toml        # server config or <VirtualHost>
 *   <VirtualHost *:443>
 *       SSLEngine on
 *       KeysvcTickets on                        # per virtual host, default off
 *   </VirtualHost>
 *
 * The parent process (root) reads the configuration: it refuses mod_ssl ticket settings
 * that conflict with keysvc, and preloads each distinct KeysvcConfig (the TOML file and
 * the PIN; mod_keysvc_config.c). mod_ssl hands every TLS server's SSL_CTX to its
 * ssl_init_server hook, where the SSL_CTXs of servers with KeysvcTickets on are
 * collected. Each child process, after the fork and after it has switched to the User,
 * opens the token with the inherited PIN and installs the ticket callbacks on its copy
 * of those SSL_CTXs (mod_keysvc_child.c). docs/APACHE.md has the details. */
#ifndef MOD_KEYSVC_H
#define MOD_KEYSVC_H

#include <httpd.h>
#include <http_config.h>
#include <apr_tables.h>

#include <openssl/ssl.h>

#include "keysvc/openssl/keysvc_openssl.h"

/* Per-server configuration. */
typedef struct {
    int          tickets;  /* KeysvcTickets: -1 unset, 0 off, 1 on */
    const char  *config;   /* KeysvcConfig, absolute; NULL if unset */
} keysvc_server_conf;

/* One distinct KeysvcConfig: preloaded in the parent, opened in each child. */
typedef struct {
    const char        *path;
    keysvc_preloaded  *preloaded;  /* freed (PIN wiped) with the configuration pool */
    keysvc_service    *service;    /* child only; NULL until opened */
} keysvc_apache_service;

/* One TLS server's SSL_CTX that keysvc's callbacks go on. */
typedef struct {
    server_rec             *server;
    SSL_CTX                *ctx;
    keysvc_apache_service  *service;
} keysvc_apache_ctx;

/* The state of one configuration cycle, in the configuration pool: made in
 * pre_config, inherited by the children. */
typedef struct {
    apr_array_header_t  *services;  /* of keysvc_apache_service */
    apr_array_header_t  *ctxs;      /* of keysvc_apache_ctx */
} keysvc_apache_state;

/* The one symbol the module exports (it is built with hidden visibility). */
#define KEYSVC_EXPORTED __attribute__((visibility("default")))
extern module AP_MODULE_DECLARE_DATA keysvc_module KEYSVC_EXPORTED;
extern keysvc_apache_state keysvc_apache;

/* The server's merged configuration. */
keysvc_server_conf *keysvc_server_config(server_rec *s);

/* Writes "host:port (file:line)" for log lines into buf (no pool: the child's retry
 * thread uses it too). Returns buf. */
#define KEYSVC_LABEL_LEN 512
const char *keysvc_server_label(char *buf, size_t len, server_rec *s);

/* check_config hook (parent, and `apachectl configtest`): refuses conflicting settings
 * with one line and preloads every KeysvcConfig in use. */
int keysvc_check_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *s);

/* mod_ssl's ssl_init_server hook (parent, post_config): collects the SSL_CTX of each
 * TLS server with KeysvcTickets on, tickets off until a child opens the token. */
int keysvc_ssl_init_server(server_rec *s, apr_pool_t *p, int is_proxy, SSL_CTX *ctx);

/* child_init hook: opens the services in this child and installs the callbacks. */
void keysvc_child_init(apr_pool_t *pchild, server_rec *s);

#endif /* MOD_KEYSVC_H */
