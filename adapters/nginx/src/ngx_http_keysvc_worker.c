/* The worker side of ngx_http_keysvc_module (see ngx_http_keysvc_module.h). nginx forks
 * its workers after reading the configuration, so the PKCS#11 module, its sessions and
 * keysvc's background threads are made here, in each worker, never in the master: a
 * PKCS#11 module must not be used across fork(), and the master never handshakes. The
 * worker runs as nginx's `user` by now; the PIN comes from the configuration the master
 * preloaded (ngx_http_keysvc_module.c). */
#include "ngx_http_keysvc_module.h"

#include "keysvc/webserver/module_support.h"

/* The first retry after a failed open comes after this long; each further failure
 * doubles the wait, up to the maximum. */
#define NGX_HTTP_KEYSVC_RETRY_FIRST  1000
#define NGX_HTTP_KEYSVC_RETRY_MAX    60000

/* One keysvc service per distinct keysvc_config, in this worker. */
typedef struct {
    ngx_http_keysvc_preload_t  *preload;
    keysvc_service             *service;  /* NULL until opened */
} ngx_http_keysvc_service_t;

static ngx_array_t  *ngx_http_keysvc_services;  /* of ngx_http_keysvc_service_t */
static ngx_event_t   ngx_http_keysvc_retry_event;
static ngx_msec_t    ngx_http_keysvc_retry_delay;

/* Until its service is open, a server issues no tickets and accepts none: full
 * handshakes. Never OpenSSL's own in-memory ticket keys in between. */
static void
ngx_http_keysvc_tickets_off(SSL_CTX *ctx)
{
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_num_tickets(ctx, 0);
}

static void
ngx_http_keysvc_install(ngx_cycle_t *cycle, ngx_http_keysvc_service_t *svc)
{
    char                          err[512];
    ngx_uint_t                    i;
    ngx_http_keysvc_server_t     *servers;
    ngx_http_keysvc_main_conf_t  *kmcf;

    kmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_keysvc_module);
    servers = kmcf->servers.elts;

    for (i = 0; i < kmcf->servers.nelts; i++) {
        if (servers[i].config.len != svc->preload->config.len
            || ngx_strncmp(servers[i].config.data, svc->preload->config.data, svc->preload->config.len) != 0)
        {
            continue;
        }

        SSL_CTX_clear_options(servers[i].ssl_ctx, SSL_OP_NO_TICKET);

        if (!keysvc_ssl_ctx_install(servers[i].ssl_ctx, svc->service, NULL, NULL, err, sizeof(err))) {
            ngx_http_keysvc_tickets_off(servers[i].ssl_ctx);
            ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                          "keysvc: cannot install tickets on server \"%V\": %s; no tickets there",
                          &servers[i].name, err);
            continue;
        }

        ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0, "keysvc: tickets on for server \"%V\" from \"%V\"",
                      &servers[i].name, &svc->preload->config);
    }
}

/* Opens every service not open yet. Returns how many are still closed. */
static ngx_uint_t
ngx_http_keysvc_open_pending(ngx_cycle_t *cycle)
{
    char                        err[512];
    ngx_uint_t                  i, pending;
    ngx_http_keysvc_service_t  *svc;

    svc = ngx_http_keysvc_services->elts;
    pending = 0;

    for (i = 0; i < ngx_http_keysvc_services->nelts; i++) {
        if (svc[i].service != NULL) {
            continue;
        }

        svc[i].service = keysvc_webserver_open(svc[i].preload->preloaded, (const char *) svc[i].preload->config.data,
                                               err, sizeof(err));

        if (svc[i].service == NULL) {
            pending++;
            ngx_log_error(NGX_LOG_ERR, cycle->log, 0,
                          "keysvc: cannot open \"%V\": %s; full handshakes without tickets, "
                          "retrying in %M ms", &svc[i].preload->config, err, ngx_http_keysvc_retry_delay);
            continue;
        }

        ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0, "keysvc: opened \"%V\" in worker %P",
                      &svc[i].preload->config, ngx_pid);
        ngx_http_keysvc_install(cycle, &svc[i]);
    }

    return pending;
}

static void
ngx_http_keysvc_retry(ngx_event_t *ev)
{
    if (ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    ngx_http_keysvc_retry_delay = ngx_min(ngx_http_keysvc_retry_delay * 2, NGX_HTTP_KEYSVC_RETRY_MAX);

    if (ngx_http_keysvc_open_pending((ngx_cycle_t *) ngx_cycle) > 0) {
        ngx_add_timer(ev, ngx_http_keysvc_retry_delay);
    }
}

ngx_int_t
ngx_http_keysvc_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                    i;
    ngx_http_keysvc_server_t     *servers;
    ngx_http_keysvc_preload_t    *preloads;
    ngx_http_keysvc_service_t    *svc;
    ngx_http_keysvc_main_conf_t  *kmcf;

    kmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_keysvc_module);
    if (kmcf == NULL || kmcf->servers.nelts == 0) {
        return NGX_OK;
    }

    servers = kmcf->servers.elts;
    for (i = 0; i < kmcf->servers.nelts; i++) {
        ngx_http_keysvc_tickets_off(servers[i].ssl_ctx);
    }

    ngx_http_keysvc_services = ngx_array_create(cycle->pool, kmcf->preloads.nelts,
                                                sizeof(ngx_http_keysvc_service_t));
    if (ngx_http_keysvc_services == NULL) {
        return NGX_ERROR;
    }

    preloads = kmcf->preloads.elts;
    for (i = 0; i < kmcf->preloads.nelts; i++) {
        svc = ngx_array_push(ngx_http_keysvc_services);
        if (svc == NULL) {
            return NGX_ERROR;
        }
        svc->preload = &preloads[i];
        svc->service = NULL;
    }

    ngx_http_keysvc_retry_delay = NGX_HTTP_KEYSVC_RETRY_FIRST;

    if (ngx_http_keysvc_open_pending(cycle) > 0) {
        /* Cancelable: a worker shutting down gracefully does not wait for it. */
        ngx_memzero(&ngx_http_keysvc_retry_event, sizeof(ngx_event_t));
        ngx_http_keysvc_retry_event.handler = ngx_http_keysvc_retry;
        ngx_http_keysvc_retry_event.log = cycle->log;
        ngx_http_keysvc_retry_event.data = ngx_http_keysvc_services;
        ngx_http_keysvc_retry_event.cancelable = 1;
        ngx_add_timer(&ngx_http_keysvc_retry_event, ngx_http_keysvc_retry_delay);
    }

    return NGX_OK;
}

void
ngx_http_keysvc_exit_process(ngx_cycle_t *cycle)
{
    char                          counters[256];
    ngx_uint_t                    i;
    ngx_http_keysvc_server_t     *servers;
    ngx_http_keysvc_service_t    *svc;
    ngx_http_keysvc_main_conf_t  *kmcf;

    if (ngx_http_keysvc_services == NULL) {
        return;
    }

    kmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_keysvc_module);
    servers = kmcf->servers.elts;

    for (i = 0; i < kmcf->servers.nelts; i++) {
        keysvc_webserver_counters(servers[i].ssl_ctx, counters, sizeof(counters));
        ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0, "keysvc: server \"%V\" worker %P tickets: %s",
                      &servers[i].name, ngx_pid, counters);
    }

    svc = ngx_http_keysvc_services->elts;
    /* The SSL_CTXs keep the services: their threads are stopped now, before exit() runs
     * OpenSSL's and the PKCS#11 module's exit handlers. */
    for (i = 0; i < ngx_http_keysvc_services->nelts; i++) {
        keysvc_service_stop(svc[i].service);
        keysvc_service_free(svc[i].service);
        svc[i].service = NULL;
    }

    ngx_http_keysvc_services = NULL;
}
