/*
 * api_registry.c — the public device-registry API (mqrouter.h, "device
 * registry"): thin wrappers over core/registry/registry.h for C hosts.
 *
 * Public views are filled up to the size the host's struct has (ABI care,
 * like api_session.c); status travels as its name. Must not: keep state of
 * its own.
 */
#include "engine.h"
#include "registry.h"

#include <stdlib.h>
#include <string.h>

int mqr_device_register(mqr_engine_t *e, const char *tenant, const char *id, const char *name,
                        const char *type, const char *metadata_json, int *created, char **errmsg)
{
    if (errmsg) *errmsg = NULL;
    if (created) *created = 0;
    if (!e || !mqr__engine_registry(e) || !id) return MQR_EINVAL;
    mqr_device_spec_t spec = {
        .tenant = tenant ? tenant : "",
        .id = id,
        .name = name ? name : "",
        .type = type ? type : "",
        .metadata = metadata_json ? metadata_json : "{}",
    };
    bool was_created = false;
    const char *why = NULL;
    int rc = mqr__device_register(mqr__engine_registry(e), &spec, &was_created, &why);
    if (rc == MQR_EINVAL && why && errmsg) *errmsg = strdup(why);
    if (rc == 0 && created) *created = was_created;
    return rc;
}

int mqr_device_unregister(mqr_engine_t *e, const char *tenant, const char *id)
{
    if (!e || !mqr__engine_registry(e) || !id) return MQR_EINVAL;
    return mqr__device_unregister(mqr__engine_registry(e), tenant ? tenant : "", id);
}

int mqr_device_set_status(mqr_engine_t *e, const char *tenant, const char *id, const char *status)
{
    if (!e || !mqr__engine_registry(e) || !id || !status) return MQR_EINVAL;
    int st = mqr__device_status_parse(status);
    if (st < 0) return MQR_EINVAL;
    return mqr__device_set_status(mqr__engine_registry(e), tenant ? tenant : "", id, st);
}

/* Fills the public view from the registry's, up to out->size. */
static void view_fill(mqr_device_view_t *out, const mqr_device_info_t *d)
{
    mqr_device_view_t v = {
        .size = sizeof v,
        .tenant = d->tenant,
        .id = d->id,
        .name = d->name,
        .type = d->type,
        .metadata = d->metadata,
        .status = mqr__device_status_name(d->status),
        .status_ms = d->status_ms,
        .created_ms = d->created_ms,
        .last_seen_ms = d->last_seen_ms,
        .msgs_in = d->msgs_in,
        .msgs_out = d->msgs_out,
        .bytes_in = d->bytes_in,
        .bytes_out = d->bytes_out,
    };
    size_t n = out->size < sizeof v ? out->size : sizeof v;
    memcpy((char *)out + sizeof v.size, (const char *)&v + sizeof v.size, n - sizeof v.size);
}

int mqr_device_get(mqr_engine_t *e, const char *tenant, const char *id, mqr_device_view_t *out)
{
    if (!e || !mqr__engine_registry(e) || !id || !out || out->size < sizeof out->size)
        return MQR_EINVAL;
    mqr_device_info_t d;
    int rc = mqr__device_get(mqr__engine_registry(e), tenant ? tenant : "", id, &d);
    if (rc == 0) view_fill(out, &d);
    return rc;
}

typedef struct {
    mqr_device_view_fn fn;
    void *arg;
} list_ctx_t;

static int list_one(void *arg, const mqr_device_info_t *d)
{
    list_ctx_t *c = arg;
    mqr_device_view_t v;
    mqr_device_view_init(&v);
    view_fill(&v, d);
    return c->fn(c->arg, &v);
}

int mqr_device_list(mqr_engine_t *e, const char *tenant, const char *type, const char *status,
                    const char *prefix, unsigned limit, const char *cursor, mqr_device_view_fn fn,
                    void *arg, char *next, size_t next_cap)
{
    if (!e || !mqr__engine_registry(e) || !fn || (next && next_cap == 0)) return MQR_EINVAL;
    int st = -1;
    if (status && (st = mqr__device_status_parse(status)) < 0) return MQR_EINVAL;
    mqr_device_query_t q = {
        .tenant = tenant,
        .type = type,
        .status = st,
        .prefix = prefix,
        .limit = limit,
        .cursor = cursor,
    };
    char *buf = malloc(MQR_CURSOR_MAX);
    if (!buf) return MQR_ENOMEM;
    list_ctx_t c = {fn, arg};
    int rc = mqr__device_list(mqr__engine_registry(e), &q, list_one, &c, buf, MQR_CURSOR_MAX);
    if (rc >= 0 && next) {
        size_t len = strlen(buf);
        if (len >= next_cap)
            rc = MQR_ETOOLARGE;
        else
            memcpy(next, buf, len + 1);
    }
    free(buf);
    return rc;
}
