/* mod_keysvc's check_config hook (see mod_keysvc.h). It runs in the parent after the
 * configuration is read and the virtual hosts merged, also for `apachectl configtest`
 * (which runs no post_config, hence no mod_ssl hook): the refusals are made from the
 * configuration tree, and the keysvc TOML files and their PINs are read here, as the user
 * httpd starts as (root), the way mod_ssl reads its keys. Children inherit them. */
#include "mod_keysvc.h"

#include <http_log.h>
#include <apr_strings.h>
#include <util_cfgtree.h>

APLOG_USE_MODULE(keysvc);

/* The mod_ssl ticket settings that apply to one server, found in the configuration tree
 * (which holds only active directives: <IfModule> and friends are already resolved). A
 * <VirtualHost> section is the server whose definition starts at its file and line; a
 * directive outside every <VirtualHost> is the main server's, which virtual hosts
 * inherit. */
typedef struct {
    const ap_directive_t  *ticket_key_file;  /* SSLSessionTicketKeyFile in effect */
    const ap_directive_t  *tickets_own;      /* last SSLSessionTickets of the server itself */
    const ap_directive_t  *tickets_main;     /* last SSLSessionTickets of the main server */
} keysvc_ssl_ticket_settings;

static int
keysvc_is_section_of(const ap_directive_t *d, server_rec *s)
{
    return s->is_virtual && s->defn_name != NULL && d->filename != NULL
           && strcmp(d->filename, s->defn_name) == 0 && (unsigned) d->line_num == s->defn_line_number;
}

static void
keysvc_scan_tree(const ap_directive_t *d, server_rec *s, int in_vhost, int in_own_vhost,
                 keysvc_ssl_ticket_settings *found)
{
    for (; d != NULL; d = d->next) {
        if (strcasecmp(d->directive, "<VirtualHost") == 0) {
            keysvc_scan_tree(d->first_child, s, 1, keysvc_is_section_of(d, s), found);
            continue;
        }
        if (d->first_child != NULL) {
            keysvc_scan_tree(d->first_child, s, in_vhost, in_own_vhost, found);
            continue;
        }
        if (in_vhost && !in_own_vhost) {
            continue;
        }
        if (strcasecmp(d->directive, "SSLSessionTicketKeyFile") == 0) {
            found->ticket_key_file = d;
        } else if (strcasecmp(d->directive, "SSLSessionTickets") == 0) {
            if (in_vhost) {
                found->tickets_own = d;
            } else {
                found->tickets_main = d;
            }
        }
    }
}

static int
keysvc_refuse(server_rec *s, const char *why)
{
    char  label[KEYSVC_LABEL_LEN];

    ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, NULL, "mod_keysvc: %s in server %s", why,
                 keysvc_server_label(label, sizeof(label), s));
    return !OK;
}

/* Refuses KeysvcTickets on together with mod_ssl settings that would take the tickets
 * away from keysvc: a ticket key file (mod_ssl's callback and keysvc's cannot both be
 * the SSL_CTX's), or no tickets at all (SSL_OP_NO_TICKET: TLS 1.2 sends none and TLS 1.3
 * switches to stateful tickets that never reach keysvc). */
static int
keysvc_check_server(server_rec *s, apr_pool_t *p, keysvc_server_conf *conf)
{
    keysvc_ssl_ticket_settings  found = { NULL, NULL, NULL };
    const ap_directive_t       *tickets;

    if (conf->config == NULL) {
        return keysvc_refuse(s, "\"KeysvcTickets on\" needs \"KeysvcConfig\"");
    }

    keysvc_scan_tree(ap_conftree, s, 0, 0, &found);

    if (found.ticket_key_file != NULL) {
        return keysvc_refuse(s, apr_psprintf(p, "\"KeysvcTickets on\" and \"SSLSessionTicketKeyFile\" (%s:%d): "
                                                "keysvc replaces mod_ssl's ticket keys, remove one of them",
                                                found.ticket_key_file->filename, found.ticket_key_file->line_num));
    }

    tickets = found.tickets_own != NULL ? found.tickets_own : found.tickets_main;
    if (tickets != NULL && tickets->args != NULL && strcasecmp(tickets->args, "off") == 0) {
        return keysvc_refuse(s, apr_psprintf(p, "\"KeysvcTickets on\" and \"SSLSessionTickets off\" (%s:%d)",
                                                tickets->filename, tickets->line_num));
    }

    return OK;
}

static apr_status_t
keysvc_free_preloaded(void *data)
{
    keysvc_preloaded_free(data);
    return APR_SUCCESS;
}

/* The preloaded configuration for `path`, read now if this cycle has not read it yet. */
static int
keysvc_preload_once(server_rec *s, apr_pool_t *pconf, const char *path)
{
    char                    err[512];
    int                     i;
    keysvc_apache_service  *svc = (keysvc_apache_service *) keysvc_apache.services->elts;

    for (i = 0; i < keysvc_apache.services->nelts; i++) {
        if (strcmp(svc[i].path, path) == 0) {
            return OK;
        }
    }

    svc = apr_array_push(keysvc_apache.services);
    svc->path = path;
    svc->service = NULL;
    svc->preloaded = keysvc_preload(path, err, sizeof(err));
    if (svc->preloaded == NULL) {
        keysvc_apache.services->nelts--;
        return keysvc_refuse(s, apr_psprintf(pconf, "KeysvcConfig \"%s\": %s", path, err));
    }
    apr_pool_cleanup_register(pconf, svc->preloaded, keysvc_free_preloaded, apr_pool_cleanup_null);
    return OK;
}

int
keysvc_check_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *base)
{
    server_rec          *s;
    keysvc_server_conf  *conf;

    (void) plog;
    (void) ptemp;

    for (s = base; s != NULL; s = s->next) {
        conf = keysvc_server_config(s);
        if (conf->tickets != 1) {
            continue;
        }
        if (keysvc_check_server(s, pconf, conf) != OK || keysvc_preload_once(s, pconf, conf->config) != OK) {
            return !OK;
        }
    }

    return OK;
}
