/* mod_keysvc (see mod_keysvc.h): the module record, the two directives and their
 * per-server merge, and the hook registrations. */
#include "mod_keysvc.h"

#include <http_log.h>
#include <apr_optional_hooks.h>
#include <apr_strings.h>

#include "mod_ssl_init_server.h"

keysvc_apache_state keysvc_apache;

static const char *
keysvc_set_tickets(cmd_parms *cmd, void *dconf, int on)
{
    keysvc_server_conf  *conf = ap_get_module_config(cmd->server->module_config, &keysvc_module);

    (void) dconf;
    conf->tickets = on ? 1 : 0;
    return NULL;
}

/* KeysvcConfig PATH: relative paths are relative to ServerRoot, as for mod_ssl's files. */
static const char *
keysvc_set_config(cmd_parms *cmd, void *dconf, const char *path)
{
    keysvc_server_conf  *conf = ap_get_module_config(cmd->server->module_config, &keysvc_module);

    (void) dconf;
    if (conf->config != NULL) {
        return "KeysvcConfig: duplicate in this server";
    }
    if (path[0] == '\0') {
        return "KeysvcConfig needs the path of a keysvc TOML file";
    }
    conf->config = ap_server_root_relative(cmd->pool, path);
    if (conf->config == NULL) {
        return apr_pstrcat(cmd->pool, "KeysvcConfig: invalid path ", path, NULL);
    }
    return NULL;
}

static const command_rec keysvc_commands[] = {
    AP_INIT_FLAG("KeysvcTickets", keysvc_set_tickets, NULL, RSRC_CONF,
                 "on: keysvc issues and opens this server's TLS session tickets (default off)"),
    AP_INIT_TAKE1("KeysvcConfig", keysvc_set_config, NULL, RSRC_CONF,
                  "the keysvc TOML file (relative to ServerRoot)"),
    { NULL }
};

static void *
keysvc_create_server_conf(apr_pool_t *p, server_rec *s)
{
    keysvc_server_conf  *conf = apr_pcalloc(p, sizeof(*conf));

    (void) s;
    conf->tickets = -1;
    return conf;
}

/* A virtual host takes the main server's values for what it does not set itself. */
static void *
keysvc_merge_server_conf(apr_pool_t *p, void *base_conf, void *vhost_conf)
{
    keysvc_server_conf  *base = base_conf, *vhost = vhost_conf;
    keysvc_server_conf  *merged = apr_pcalloc(p, sizeof(*merged));

    merged->tickets = vhost->tickets != -1 ? vhost->tickets : base->tickets;
    merged->config = vhost->config != NULL ? vhost->config : base->config;
    return merged;
}

keysvc_server_conf *
keysvc_server_config(server_rec *s)
{
    return ap_get_module_config(s->module_config, &keysvc_module);
}

const char *
keysvc_server_label(char *buf, size_t len, server_rec *s)
{
    unsigned  port = s->port != 0 ? s->port : s->addrs != NULL ? s->addrs->host_port : 0;

    apr_snprintf(buf, len, "%s:%u (%s:%u)", s->server_hostname ? s->server_hostname : "", port,
                 s->defn_name ? s->defn_name : "", s->defn_line_number);
    return buf;
}

/* Each configuration cycle starts with empty lists, in the configuration pool. */
static int
keysvc_pre_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp)
{
    (void) plog;
    (void) ptemp;
    keysvc_apache.services = apr_array_make(pconf, 1, sizeof(keysvc_apache_service));
    keysvc_apache.ctxs = apr_array_make(pconf, 4, sizeof(keysvc_apache_ctx));
    return OK;
}

static void
keysvc_register_hooks(apr_pool_t *p)
{
    (void) p;
    ap_hook_pre_config(keysvc_pre_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_check_config(keysvc_check_config, NULL, NULL, APR_HOOK_MIDDLE);
    APR_OPTIONAL_HOOK(ssl, init_server, keysvc_ssl_init_server, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(keysvc_child_init, NULL, NULL, APR_HOOK_MIDDLE);
}

AP_DECLARE_MODULE(keysvc) KEYSVC_EXPORTED = {
    STANDARD20_MODULE_STUFF,
    NULL,                       /* per-directory config: none */
    NULL,
    keysvc_create_server_conf,
    keysvc_merge_server_conf,
    keysvc_commands,
    keysvc_register_hooks
};
