/*
 * device.c — what the listener tells the registry (a client that is a
 * registered device goes online at CONNACK and offline when its connection
 * ends), and tenants' mountpoints: a client whose user belongs to a tenant
 * has every topic it publishes, and every filter it subscribes to, put
 * under "<tenant>/", and the prefix taken off what it receives (send.c).
 *
 * The device is looked up once per connection, and the connection keeps a
 * reference: counting a message is then two additions (registry.h). Must
 * not: decide who may connect (handle_auth.c) or route anything.
 */
#include "listener_int.h"

#include "auth.h"
#include "registry.h"

#include <stdlib.h>
#include <string.h>

int mqr__listener_tenant_connect(mqr_lconn_t *c)
{
    const char *user = mqr__listener_auth_user(c);
    if (!user || !mqr__listener_auth_verified(c) || !c->l->all->store) return 0;
    char *tenant = NULL;
    int rc = mqr__store_cred_tenant_get(c->l->all->store, user, &tenant);
    if (rc == MQR_ENOENT) return 0; /* a user only the hook knows */
    if (rc < 0) return rc;
    size_t n = strlen(tenant);
    if (n && mqr__tenant_valid(tenant, n)) {
        free(c->mount);
        c->mount = malloc(n + 2);
        if (!c->mount) {
            free(tenant);
            return MQR_ENOMEM;
        }
        memcpy(c->mount, tenant, n);
        c->mount[n] = '/';
        c->mount[n + 1] = '\0';
        c->mount_len = (uint16_t)(n + 1);
    }
    free(tenant);
    return 0;
}

/* c's tenant as a string ("" for none), into buf. */
static const char *tenant_of(const mqr_lconn_t *c, char buf[MQR_TENANT_MAX + 1])
{
    if (!c->mount) return "";
    memcpy(buf, c->mount, c->mount_len - 1u);
    buf[c->mount_len - 1u] = '\0';
    return buf;
}

void mqr__listener_device_online(mqr_lconn_t *c)
{
    mqr_registry_t *r = c->l->all->registry;
    if (!r || c->device || !c->client_id) return;
    char tb[MQR_TENANT_MAX + 1];
    c->device = mqr__registry_conn_online(r, tenant_of(c, tb), c->client_id);
}

void mqr__listener_device_offline(mqr_lconn_t *c, const char *why)
{
    mqr_device_t *d = c->device;
    if (!d) return;
    c->device = NULL;
    mqr__registry_conn_offline(c->l->all->registry, d, why);
}

void mqr__listener_device_attach(mqr_listeners_t *all, const char *tenant, const char *id)
{
    if (!all->registry) return;
    for (mqr_listener_t *l = all->first; l; l = l->e_next) {
        mqr_lconn_t *c = mqr__listener_id_find(l, id, strlen(id));
        if (!c || c->state != MQR_LCONN_ACTIVE || c->device) continue;
        char tb[MQR_TENANT_MAX + 1];
        if (strcmp(tenant_of(c, tb), tenant) != 0) continue;
        mqr__listener_device_online(c);
    }
}

const char *mqr__listener_mount(const mqr_lconn_t *c, const char *t, size_t len, bool filter,
                                char *buf, size_t cap, char **heap, size_t *out_len)
{
    *heap = NULL;
    size_t keep = 0; /* bytes that stay in front of the mountpoint */
    if (filter) {
        if (len >= 5 && memcmp(t, "$SYS/", 5) == 0) {
            *out_len = len; /* the broker's statistics are everyone's */
            return t;
        }
        if (len > 7 && memcmp(t, "$share/", 7) == 0) {
            const char *slash = memchr(t + 7, '/', len - 7);
            if (slash) keep = (size_t)(slash - t) + 1;
        }
    }
    size_t n = len + c->mount_len;
    char *out = buf;
    if (n > cap) {
        out = malloc(n);
        if (!out) return NULL;
        *heap = out;
    }
    memcpy(out, t, keep);
    memcpy(out + keep, c->mount, c->mount_len);
    memcpy(out + keep + c->mount_len, t + keep, len - keep);
    *out_len = n;
    return out;
}
