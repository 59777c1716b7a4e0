/* The configuration side of ngx_http_keysvc_module (see ngx_http_keysvc_module.h): the
 * two directives, their server <- http merge, the checks against nginx's own ticket
 * directives, the list of SSL_CTXs the workers install keysvc on, and the preloaded
 * keysvc configurations (TOML and PIN). Runs in the master (and in `nginx -t`), as root
 * when nginx starts as root: nothing here loads the PKCS#11 module or touches the token. */
#include "ngx_http_keysvc_module.h"

#include <ngx_http_ssl_module.h>


typedef struct {
    ngx_flag_t  tickets;
    ngx_str_t   config;
} ngx_http_keysvc_srv_conf_t;

static char *ngx_http_keysvc_set_config(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static void *ngx_http_keysvc_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_keysvc_create_srv_conf(ngx_conf_t *cf);
static char *ngx_http_keysvc_merge_srv_conf(ngx_conf_t *cf, void *parent, void *child);
static ngx_int_t ngx_http_keysvc_postconfiguration(ngx_conf_t *cf);

static ngx_command_t ngx_http_keysvc_commands[] = {

    { ngx_string("keysvc_tickets"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_SRV_CONF_OFFSET,
      offsetof(ngx_http_keysvc_srv_conf_t, tickets),
      NULL },

    { ngx_string("keysvc_config"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_CONF_TAKE1,
      ngx_http_keysvc_set_config,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};

static ngx_http_module_t ngx_http_keysvc_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_keysvc_postconfiguration,     /* postconfiguration */
    ngx_http_keysvc_create_main_conf,      /* create main configuration */
    NULL,                                  /* init main configuration */
    ngx_http_keysvc_create_srv_conf,       /* create server configuration */
    ngx_http_keysvc_merge_srv_conf,        /* merge server configuration */
    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};

ngx_module_t ngx_http_keysvc_module = {
    NGX_MODULE_V1,
    &ngx_http_keysvc_module_ctx,           /* module context */
    ngx_http_keysvc_commands,              /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_keysvc_init_process,          /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_keysvc_exit_process,          /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};

/* keysvc_config PATH: relative paths are relative to nginx's configuration prefix, as
 * for nginx's own file directives. Only the path is kept here; the file is checked in
 * postconfiguration, once for every server that uses it. */
static char *
ngx_http_keysvc_set_config(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_keysvc_srv_conf_t  *kscf = conf;
    ngx_str_t                   *value, path;

    (void) cmd;

    if (kscf->config.data != NULL) {
        return "is duplicate";
    }

    value = cf->args->elts;
    path = value[1];

    if (path.len == 0) {
        return "needs the path of a keysvc TOML file";
    }

    if (ngx_conf_full_name(cf->cycle, &path, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    /* keysvc takes a C string: keep our own NUL-terminated copy. */
    kscf->config.data = ngx_pnalloc(cf->pool, path.len + 1);
    if (kscf->config.data == NULL) {
        return NGX_CONF_ERROR;
    }
    ngx_memcpy(kscf->config.data, path.data, path.len);
    kscf->config.data[path.len] = '\0';
    kscf->config.len = path.len;

    return NGX_CONF_OK;
}

static void *
ngx_http_keysvc_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_keysvc_main_conf_t  *kmcf;

    kmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_keysvc_main_conf_t));
    if (kmcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&kmcf->servers, cf->pool, 4, sizeof(ngx_http_keysvc_server_t)) != NGX_OK
        || ngx_array_init(&kmcf->preloads, cf->pool, 1, sizeof(ngx_http_keysvc_preload_t)) != NGX_OK)
    {
        return NULL;
    }

    return kmcf;
}

static void *
ngx_http_keysvc_create_srv_conf(ngx_conf_t *cf)
{
    ngx_http_keysvc_srv_conf_t  *kscf;

    /* ngx_pcalloc leaves config = { 0, NULL }: unset. */
    kscf = ngx_pcalloc(cf->pool, sizeof(ngx_http_keysvc_srv_conf_t));
    if (kscf == NULL) {
        return NULL;
    }

    kscf->tickets = NGX_CONF_UNSET;

    return kscf;
}

static char *
ngx_http_keysvc_merge_srv_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_keysvc_srv_conf_t  *prev = parent;
    ngx_http_keysvc_srv_conf_t  *conf = child;

    (void) cf;

    ngx_conf_merge_value(conf->tickets, prev->tickets, 0);

    if (conf->config.data == NULL) {
        conf->config = prev->config;
    }

    return NGX_CONF_OK;
}

/* Refuses keysvc_tickets on together with nginx settings that would take the tickets
 * away from keysvc's callback: nginx's own ticket keys (the callback would silently
 * win over them), no tickets at all, TLS 1.3 early data (OpenSSL then issues
 * stateful tickets without asking any callback), or a session cache (session IDs). */
static ngx_int_t
ngx_http_keysvc_check_server(ngx_conf_t *cf, ngx_http_keysvc_srv_conf_t *kscf, ngx_http_ssl_srv_conf_t *sscf,
    ngx_str_t *name)
{
    if (kscf->config.data == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"keysvc_tickets on\" in server \"%V\" needs \"keysvc_config\"", name);
        return NGX_ERROR;
    }

    if (sscf->session_ticket_keys != NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"keysvc_tickets on\" and \"ssl_session_ticket_key\" in server \"%V\": keysvc "
                           "replaces nginx's ticket keys, remove one of them", name);
        return NGX_ERROR;
    }

    if (!sscf->session_tickets) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"keysvc_tickets on\" and \"ssl_session_tickets off\" in server \"%V\"", name);
        return NGX_ERROR;
    }

    if (sscf->early_data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"keysvc_tickets on\" and \"ssl_early_data on\" in server \"%V\": with early data "
                           "OpenSSL issues TLS 1.3 tickets without keysvc", name);
        return NGX_ERROR;
    }

    /* A session cache resumes TLS 1.2 sessions by ID, past keysvc: revocation and
     * tickets.max_session_age would not apply to them. */
    if (sscf->shm_zone != NULL || sscf->builtin_session_cache >= 0
        || sscf->builtin_session_cache == NGX_SSL_DFLT_BUILTIN_SCACHE)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"keysvc_tickets on\" and \"ssl_session_cache\" in server \"%V\": session IDs would "
                           "resume past keysvc's revocation and max_session_age, use \"ssl_session_cache none\"",
                           name);
        return NGX_ERROR;
    }

    return NGX_OK;
}

static void
ngx_http_keysvc_free_preloaded(void *data)
{
    keysvc_preloaded_free(data);
}

/* Reads the keysvc TOML file at `config` and its PIN, once per distinct path: here, in
 * the master, as the user nginx started as (root), the way nginx reads
 * ssl_password_file. Workers inherit the result and never read the PIN file. The PIN is
 * wiped when the cycle's pool is destroyed (after a reload, once the old cycle ends). */
static ngx_int_t
ngx_http_keysvc_preload(ngx_conf_t *cf, ngx_http_keysvc_main_conf_t *kmcf, ngx_str_t *config)
{
    char                        err[512];
    ngx_uint_t                  i;
    ngx_pool_cleanup_t         *cln;
    ngx_http_keysvc_preload_t  *preload;

    preload = kmcf->preloads.elts;
    for (i = 0; i < kmcf->preloads.nelts; i++) {
        if (preload[i].config.len == config->len
            && ngx_strncmp(preload[i].config.data, config->data, config->len) == 0)
        {
            return NGX_OK;
        }
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    preload = ngx_array_push(&kmcf->preloads);
    if (cln == NULL || preload == NULL) {
        return NGX_ERROR;
    }

    preload->config = *config;
    preload->preloaded = keysvc_preload((const char *) config->data, err, sizeof(err));
    if (preload->preloaded == NULL) {
        kmcf->preloads.nelts--;
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "keysvc_config \"%V\": %s", config, err);
        return NGX_ERROR;
    }

    cln->handler = ngx_http_keysvc_free_preloaded;
    cln->data = preload->preloaded;

    return NGX_OK;
}

/* After every module has merged its server configurations, ngx_http_ssl_module has
 * made each TLS server's SSL_CTX: collect those with keysvc_tickets on. */
static ngx_int_t
ngx_http_keysvc_postconfiguration(ngx_conf_t *cf)
{
    ngx_uint_t                    s;
    ngx_str_t                     name;
    ngx_http_conf_ctx_t          *ctx;
    ngx_http_server_name_t       *names;
    ngx_http_ssl_srv_conf_t      *sscf;
    ngx_http_keysvc_server_t     *server;
    ngx_http_core_srv_conf_t    **cscfp;
    ngx_http_core_main_conf_t    *cmcf;
    ngx_http_keysvc_srv_conf_t   *kscf;
    ngx_http_keysvc_main_conf_t  *kmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);
    kmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_keysvc_module);
    cscfp = cmcf->servers.elts;

    for (s = 0; s < cmcf->servers.nelts; s++) {
        ctx = cscfp[s]->ctx;
        kscf = ctx->srv_conf[ngx_http_keysvc_module.ctx_index];
        sscf = ctx->srv_conf[ngx_http_ssl_module.ctx_index];

        /* A server without a certificate has no SSL_CTX: plain HTTP, nothing to do. */
        if (!kscf->tickets || sscf == NULL || sscf->ssl.ctx == NULL) {
            continue;
        }

        ngx_str_set(&name, "");
        if (cscfp[s]->server_names.nelts > 0) {
            names = cscfp[s]->server_names.elts;
            name = names[0].name;
        }

        if (ngx_http_keysvc_check_server(cf, kscf, sscf, &name) != NGX_OK
            || ngx_http_keysvc_preload(cf, kmcf, &kscf->config) != NGX_OK)
        {
            return NGX_ERROR;
        }

        server = ngx_array_push(&kmcf->servers);
        if (server == NULL) {
            return NGX_ERROR;
        }
        server->ssl_ctx = sscf->ssl.ctx;
        server->config = kscf->config;
        server->name = name;
    }

    return NGX_OK;
}
