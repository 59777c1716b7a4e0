/* mod_ssl's ssl_init_server hook, declared as in httpd 2.4's mod_ssl_openssl.h, which
 * Debian's apache2-dev does not install. mod_ssl runs it (an optional hook: no link
 * dependency on mod_ssl) in post_config for every SSL-enabled server, after it has
 * configured the server's SSL_CTX, ticket key file and SSL_OP_NO_TICKET included. */
#ifndef MOD_SSL_INIT_SERVER_H
#define MOD_SSL_INIT_SERVER_H

#include <httpd.h>
#include <mod_ssl.h>
#include <openssl/ssl.h>

/* @param s        SSL-enabled [virtual] server
 * @param p        pconf pool
 * @param is_proxy 1 for the server's backend (proxy) context, 0 for client connections
 * @param ctx      the server's SSL_CTX */
APR_DECLARE_EXTERNAL_HOOK(ssl, SSL, int, init_server,
                          (server_rec *s, apr_pool_t *p, int is_proxy, SSL_CTX *ctx))

#endif /* MOD_SSL_INIT_SERVER_H */
