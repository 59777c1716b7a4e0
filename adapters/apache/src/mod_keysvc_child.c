/* mod_keysvc's SSL_CTX collection (parent) and per-child open (see mod_keysvc.h).
 *
 * httpd reads its configuration in the parent, where mod_ssl makes every server's
 * SSL_CTX, then forks the children. A PKCS#11 module must not be used across fork(), so
 * the token is opened in each child (child_init runs after the child has switched to
 * User/Group and before its worker threads start), with the PIN the parent preloaded.
 * Until a child's service is open, its servers issue no tickets and accept none (full
 * handshakes), never OpenSSL's own in-memory keys. A child whose open fails retries from
 * a thread of its own, 1 s, 2 s, 4 s ... up to 60 s apart. */
#include "mod_keysvc.h"

#include <http_log.h>
#include <apr_strings.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include "keysvc/webserver/module_support.h"

APLOG_USE_MODULE(keysvc);

#define KEYSVC_RETRY_FIRST_MS  1000
#define KEYSVC_RETRY_MAX_MS    60000

static void
keysvc_tickets_off(SSL_CTX *ctx)
{
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_num_tickets(ctx, 0);
}

int
keysvc_ssl_init_server(server_rec *s, apr_pool_t *p, int is_proxy, SSL_CTX *ctx)
{
    (void) p;

    int                     i;
    char                    label[KEYSVC_LABEL_LEN];
    keysvc_server_conf     *conf = keysvc_server_config(s);
    keysvc_apache_ctx      *entry;
    keysvc_apache_service  *svc;

    if (is_proxy || conf->tickets != 1 || ctx == NULL) {
        return OK;
    }

    /* check_config refused SSLSessionTickets off already; this is what mod_ssl made of it. */
    if (SSL_CTX_get_options(ctx) & SSL_OP_NO_TICKET) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, 0, s, "mod_keysvc: \"KeysvcTickets on\" in server %s, but its "
                     "SSL_CTX has session tickets off", keysvc_server_label(label, sizeof(label), s));
        return HTTP_INTERNAL_SERVER_ERROR;
    }

    svc = (keysvc_apache_service *) keysvc_apache.services->elts;
    for (i = 0; i < keysvc_apache.services->nelts && strcmp(svc[i].path, conf->config) != 0; i++) {
    }
    if (i == keysvc_apache.services->nelts) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, 0, s, "mod_keysvc: KeysvcConfig \"%s\" of server %s was not read",
                     conf->config, keysvc_server_label(label, sizeof(label), s));
        return HTTP_INTERNAL_SERVER_ERROR;
    }

    /* SSLSessionCache is global (Debian's ssl.conf sets one) and would resume TLS 1.2
     * sessions by ID, past keysvc's revocation and max_session_age: off in this server's
     * SSL_CTX only (mod_ssl set its cache up before this hook). nginx refuses its
     * per-server ssl_session_cache instead. */
    if ((SSL_CTX_get_session_cache_mode(ctx) & SSL_SESS_CACHE_SERVER) || SSL_CTX_sess_get_get_cb(ctx) != NULL) {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
        SSL_CTX_sess_set_new_cb(ctx, NULL);
        SSL_CTX_sess_set_get_cb(ctx, NULL);
        SSL_CTX_sess_set_remove_cb(ctx, NULL);
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s, "mod_keysvc: mod_ssl's session cache (SSLSessionCache) is off "
                     "in server %s: session IDs would resume past keysvc's revocation and max_session_age",
                     keysvc_server_label(label, sizeof(label), s));
    }

    entry = apr_array_push(keysvc_apache.ctxs);
    entry->server = s;
    entry->ctx = ctx;
    entry->service = &svc[i];
    keysvc_tickets_off(ctx);
    return OK;
}

/* ---- in the child ---- */

typedef struct {
    server_rec       *server;
    pthread_t         retry_thread;
    int               retry_running;
    int               stopping;
    pthread_mutex_t   mutex;
    pthread_cond_t    wake;
} keysvc_child_state;

static keysvc_child_state keysvc_child;

/* Turns tickets on for every SSL_CTX of `svc`: the callbacks first, then the options.
 * In child_init no other thread runs yet. A later call (the retry thread) meets
 * handshakes in progress: connections made before it copied SSL_OP_NO_TICKET and zero
 * tickets from the SSL_CTX and never call the callbacks; the options and ticket count
 * words, written last, are what new connections read. */
static void
keysvc_install(keysvc_apache_service *svc)
{
    char                err[512], label[KEYSVC_LABEL_LEN];
    int                 i;
    keysvc_apache_ctx  *ctxs = (keysvc_apache_ctx *) keysvc_apache.ctxs->elts;

    for (i = 0; i < keysvc_apache.ctxs->nelts; i++) {
        if (ctxs[i].service != svc) {
            continue;
        }
        if (!keysvc_ssl_ctx_install(ctxs[i].ctx, svc->service, NULL, NULL, err, sizeof(err))) {
            keysvc_tickets_off(ctxs[i].ctx);
            ap_log_error(APLOG_MARK, APLOG_ALERT, 0, ctxs[i].server, "keysvc: cannot install tickets on server %s: "
                         "%s; no tickets there", keysvc_server_label(label, sizeof(label), ctxs[i].server), err);
            continue;
        }
        SSL_CTX_clear_options(ctxs[i].ctx, SSL_OP_NO_TICKET);
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, ctxs[i].server, "keysvc: tickets on for server %s from \"%s\"",
                     keysvc_server_label(label, sizeof(label), ctxs[i].server), svc->path);
    }
}

/* True if some TLS server's SSL_CTX uses `svc`: a KeysvcConfig of servers without TLS
 * is read in the parent but never opened. */
static int
keysvc_service_used(const keysvc_apache_service *svc)
{
    int                 i;
    keysvc_apache_ctx  *ctxs = (keysvc_apache_ctx *) keysvc_apache.ctxs->elts;

    for (i = 0; i < keysvc_apache.ctxs->nelts; i++) {
        if (ctxs[i].service == svc) {
            return 1;
        }
    }
    return 0;
}

/* Opens every service in use not open yet. Returns how many are still closed. */
static int
keysvc_open_pending(unsigned retry_ms)
{
    char                    err[512];
    int                     i, pending = 0;
    keysvc_apache_service  *svc = (keysvc_apache_service *) keysvc_apache.services->elts;

    for (i = 0; i < keysvc_apache.services->nelts; i++) {
        if (svc[i].service != NULL || !keysvc_service_used(&svc[i])) {
            continue;
        }
        svc[i].service = keysvc_webserver_open(svc[i].preloaded, svc[i].path, err, sizeof(err));
        if (svc[i].service == NULL) {
            pending++;
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, keysvc_child.server, "keysvc: cannot open \"%s\": %s; full "
                         "handshakes without tickets, retrying in %u ms", svc[i].path, err, retry_ms);
            continue;
        }
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, keysvc_child.server, "keysvc: opened \"%s\" in child %ld",
                     svc[i].path, (long) getpid());
        keysvc_install(&svc[i]);
    }
    return pending;
}

static void *
keysvc_retry_main(void *arg)
{
    unsigned         delay = KEYSVC_RETRY_FIRST_MS;
    struct timespec  until;

    (void) arg;
    pthread_mutex_lock(&keysvc_child.mutex);
    for (;;) {
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += delay / 1000;
        until.tv_nsec += (long) (delay % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        while (!keysvc_child.stopping
               && pthread_cond_timedwait(&keysvc_child.wake, &keysvc_child.mutex, &until) != ETIMEDOUT) {
        }
        if (keysvc_child.stopping) {
            break;
        }
        delay = delay * 2 > KEYSVC_RETRY_MAX_MS ? KEYSVC_RETRY_MAX_MS : delay * 2;
        pthread_mutex_unlock(&keysvc_child.mutex);
        int pending = keysvc_open_pending(delay);
        pthread_mutex_lock(&keysvc_child.mutex);
        if (pending == 0) {
            break;
        }
    }
    pthread_mutex_unlock(&keysvc_child.mutex);
    return NULL;
}

/* The retry thread takes none of httpd's signals: they belong to the child's own threads. */
static void
keysvc_start_retry(void)
{
    sigset_t  all, saved;

    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &saved);
    keysvc_child.retry_running = pthread_create(&keysvc_child.retry_thread, NULL, keysvc_retry_main, NULL) == 0;
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    if (!keysvc_child.retry_running) {
        ap_log_error(APLOG_MARK, APLOG_ALERT, 0, keysvc_child.server,
                     "keysvc: cannot start the retry thread; no tickets in this child");
    }
}

/* At child exit: stop retrying, log each server's counters, stop and close the services
 * (the SSL_CTXs hold theirs until they are freed). */
static apr_status_t
keysvc_child_exit(void *data)
{
    char                    counters[256], label[KEYSVC_LABEL_LEN];
    int                     i;
    keysvc_apache_ctx      *ctxs = (keysvc_apache_ctx *) keysvc_apache.ctxs->elts;
    keysvc_apache_service  *svc = (keysvc_apache_service *) keysvc_apache.services->elts;

    (void) data;
    if (keysvc_child.retry_running) {
        pthread_mutex_lock(&keysvc_child.mutex);
        keysvc_child.stopping = 1;
        pthread_cond_signal(&keysvc_child.wake);
        pthread_mutex_unlock(&keysvc_child.mutex);
        pthread_join(keysvc_child.retry_thread, NULL);
        keysvc_child.retry_running = 0;
    }
    for (i = 0; i < keysvc_apache.ctxs->nelts; i++) {
        keysvc_webserver_counters(ctxs[i].ctx, counters, sizeof(counters));
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, ctxs[i].server, "keysvc: server %s child %ld tickets: %s",
                     keysvc_server_label(label, sizeof(label), ctxs[i].server), (long) getpid(), counters);
    }
    /* The SSL_CTXs (the parent's, never freed here) keep the services: their threads are
     * stopped now, before exit() runs OpenSSL's and the PKCS#11 module's exit handlers. */
    for (i = 0; i < keysvc_apache.services->nelts; i++) {
        keysvc_service_stop(svc[i].service);
        keysvc_service_free(svc[i].service);
        svc[i].service = NULL;
    }
    return APR_SUCCESS;
}

void
keysvc_child_init(apr_pool_t *pchild, server_rec *s)
{
    if (keysvc_apache.ctxs == NULL || keysvc_apache.ctxs->nelts == 0) {
        return;
    }
    keysvc_child.server = s;
    keysvc_child.stopping = 0;
    keysvc_child.retry_running = 0;
    pthread_mutex_init(&keysvc_child.mutex, NULL);
    pthread_cond_init(&keysvc_child.wake, NULL);
    apr_pool_cleanup_register(pchild, NULL, keysvc_child_exit, apr_pool_cleanup_null);

    if (keysvc_open_pending(KEYSVC_RETRY_FIRST_MS) > 0) {
        keysvc_start_retry();
    }
}
