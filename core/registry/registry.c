/*
 * registry.c — the device registry: devices in a hash table by (tenant,
 * id), a sorted index rebuilt on demand for paginated lists, status driven
 * by the listener's connections, counters flushed lazily to the store.
 *
 * The index (an array of pointers sorted by key) is rebuilt only by a list
 * after devices were added or removed, so bulk registration costs O(1) per
 * device and a list O(log n) to find its cursor. A device removed while a
 * connection holds it is detached (r = NULL) and freed with the last
 * reference. Must not: know about sockets or MQTT (the listener calls in),
 * or Lua (the bindings observe through a function pointer).
 */
#include "registry.h"

#include "listener.h"
#include "mqrouter_auth.h"
#include "topic.h"
#include "utf8.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* registry_topics.c */
void mqr__topics_free(mqr_registry_t *r);

struct mqr_registry {
    /* first: registry_topics.c reads it through a cast on the hot path
     * (a pointer to a struct is a pointer to its first member) */
    struct mqr_topics *topics;
    mqr_registry_deps_t deps; /* what it was opened with */
    mqr_device_t **buckets;
    size_t cap, count;
    mqr_device_t **index; /* sorted by (tenant, id); valid when !index_stale */
    size_t index_len;
    bool index_stale;
    mqr_device_t *dirty; /* counters moved since the last flush */
    uv_timer_t timer;
    bool timer_on, timer_closing;
    uint64_t online;
    uint64_t flushes;
    mqr_device_observer_fn observer;
    void *observer_ud;
    mqr_device_mapper_fn mapper;
    void *mapper_ud;
};
_Static_assert(offsetof(struct mqr_registry, topics) == 0, "topics first");

/* registry_topics.c reaches its table through these */
const mqr_registry_deps_t *mqr__registry_deps(const mqr_registry_t *r);
const mqr_registry_deps_t *mqr__registry_deps(const mqr_registry_t *r)
{
    return &r->deps;
}

struct mqr_topics **mqr__registry_topics_slot(mqr_registry_t *r);
struct mqr_topics **mqr__registry_topics_slot(mqr_registry_t *r)
{
    return &r->topics;
}

static uint32_t key_hash(const char *tenant, const char *id)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const char *p = tenant; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    h = (h ^ 0xFFu) * 16777619u; /* separator: no tenant/id pair aliases another */
    for (const char *p = id; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    return h;
}

static int key_cmp(const char *ta, const char *ia, const char *tb, const char *ib)
{
    int c = strcmp(ta, tb);
    return c ? c : strcmp(ia, ib);
}

static const char *norm_tenant(const char *t)
{
    return t ? t : "";
}

bool mqr__tenant_valid(const char *t, size_t len)
{
    if (!t || len == 0 || len > MQR_TENANT_MAX) return false;
    for (size_t i = 0; i < len; i++) {
        char ch = t[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-'))
            return false;
    }
    return true;
}

const char *mqr__device_status_name(int status)
{
    switch (status) {
    case MQR_DEVICE_ONLINE:
        return "online";
    case MQR_DEVICE_OFFLINE:
        return "offline";
    default:
        return "unknown";
    }
}

int mqr__device_status_parse(const char *s)
{
    if (!s) return -1;
    if (strcmp(s, "unknown") == 0) return MQR_DEVICE_UNKNOWN;
    if (strcmp(s, "online") == 0) return MQR_DEVICE_ONLINE;
    if (strcmp(s, "offline") == 0) return MQR_DEVICE_OFFLINE;
    return -1;
}

/* ---- devices in memory --------------------------------------------------- */

static void info_of(const mqr_device_t *d, mqr_device_info_t *o)
{
    *o = (mqr_device_info_t){
        .tenant = d->tenant,
        .id = d->id,
        .name = d->name,
        .type = d->type,
        .metadata = d->metadata,
        .status = d->status,
        .status_ms = d->status_ms,
        .created_ms = d->created_ms,
        .last_seen_ms = d->last_seen_ms,
        .msgs_in = d->msgs_in,
        .msgs_out = d->msgs_out,
        .bytes_in = d->bytes_in,
        .bytes_out = d->bytes_out,
    };
}

static void device_free(mqr_device_t *d)
{
    free(d->tenant);
    free(d->id);
    free(d->name);
    free(d->type);
    free(d->metadata);
    free(d);
}

static void device_unref(mqr_device_t *d)
{
    if (--d->refs == 0) device_free(d);
}

static mqr_device_t *find(const mqr_registry_t *r, const char *tenant, const char *id)
{
    if (!r->cap) return NULL;
    uint32_t h = key_hash(tenant, id);
    for (mqr_device_t *d = r->buckets[h & (r->cap - 1)]; d; d = d->next)
        if (d->hash == h && strcmp(d->id, id) == 0 && strcmp(d->tenant, tenant) == 0) return d;
    return NULL;
}

static int grow(mqr_registry_t *r)
{
    if (r->count < r->cap) return 0;
    size_t cap = r->cap ? r->cap * 2 : 64;
    mqr_device_t **b = calloc(cap, sizeof *b);
    if (!b) return MQR_ENOMEM;
    for (size_t i = 0; i < r->cap; i++) {
        mqr_device_t *d = r->buckets[i];
        while (d) {
            mqr_device_t *next = d->next;
            d->next = b[d->hash & (cap - 1)];
            b[d->hash & (cap - 1)] = d;
            d = next;
        }
    }
    free(r->buckets);
    r->buckets = b;
    r->cap = cap;
    return 0;
}

static void insert(mqr_registry_t *r, mqr_device_t *d)
{
    size_t i = d->hash & (r->cap - 1);
    d->next = r->buckets[i];
    r->buckets[i] = d;
    r->count++;
    r->index_stale = true;
}

static void unlink_dev(mqr_registry_t *r, mqr_device_t *d)
{
    for (mqr_device_t **pp = &r->buckets[d->hash & (r->cap - 1)]; *pp; pp = &(*pp)->next) {
        if (*pp == d) {
            *pp = d->next;
            break;
        }
    }
    if (d->dirty) {
        for (mqr_device_t **pp = &r->dirty; *pp; pp = &(*pp)->dirty_next) {
            if (*pp == d) {
                *pp = d->dirty_next;
                break;
            }
        }
        d->dirty = false;
    }
    r->count--;
    r->index_stale = true;
}

static mqr_device_t *device_new(const char *tenant, const char *id, const char *name,
                                const char *type, const char *meta)
{
    mqr_device_t *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    d->tenant = strdup(tenant);
    d->id = strdup(id);
    d->name = strdup(name);
    d->type = strdup(type);
    d->metadata = strdup(meta);
    if (!d->tenant || !d->id || !d->name || !d->type || !d->metadata) {
        device_free(d);
        return NULL;
    }
    d->hash = key_hash(tenant, id);
    d->refs = 1;
    return d;
}

void mqr__device_mark(mqr_device_t *d)
{
    mqr_registry_t *r = d->r;
    if (!r) {
        d->dirty = true; /* detached: nothing to flush into, never listed */
        return;
    }
    d->dirty = true;
    d->dirty_next = r->dirty;
    r->dirty = d;
}

static void notify(mqr_registry_t *r, mqr_device_t *d, int old, const char *why)
{
    if (!r->observer || old == d->status) return;
    mqr_device_info_t info;
    info_of(d, &info);
    r->observer(r->observer_ud, &info, old, why ? why : "");
}

/* A status change: written at once (with the counters), then observers. */
static void set_status(mqr_registry_t *r, mqr_device_t *d, int status, const char *why)
{
    int old = d->status;
    if (old == status) return;
    if (old == MQR_DEVICE_ONLINE) r->online--;
    if (status == MQR_DEVICE_ONLINE) r->online++;
    d->status = (uint8_t)status;
    d->status_ms = mqr__now_ms();
    if (mqr__store_device_counters(r->deps.store, d) < 0)
        MQR_LOG_W("registry", "device %s%s%s: status not stored: %s", d->tenant,
                  d->tenant[0] ? "/" : "", d->id, mqr__store_last_error(r->deps.store));
    notify(r, d, old, why);
}

/* ---- lifecycle ------------------------------------------------------------- */

static int load_one(void *arg, const mqr_device_info_t *in)
{
    mqr_registry_t *r = arg;
    if (grow(r) < 0) return MQR_ENOMEM;
    mqr_device_t *d = device_new(in->tenant, in->id, in->name, in->type, in->metadata);
    if (!d) return MQR_ENOMEM;
    d->r = r;
    d->status =
        (uint8_t)(in->status == MQR_DEVICE_UNKNOWN ? MQR_DEVICE_UNKNOWN : MQR_DEVICE_OFFLINE);
    d->status_ms = in->status_ms;
    d->created_ms = in->created_ms;
    d->last_seen_ms = in->last_seen_ms;
    d->msgs_in = in->msgs_in;
    d->msgs_out = in->msgs_out;
    d->bytes_in = in->bytes_in;
    d->bytes_out = in->bytes_out;
    if (in->status == MQR_DEVICE_ONLINE) {
        /* it was online when the engine stopped (or crashed): nobody is
         * connected now */
        d->status_ms = mqr__now_ms();
        mqr__device_mark(d);
    }
    insert(r, d);
    return 0;
}

static void on_flush_timer(uv_timer_t *t)
{
    mqr__registry_flush(t->data);
}

int mqr__registry_open(const mqr_registry_deps_t *deps, mqr_registry_t **out)
{
    *out = NULL;
    mqr_registry_t *r = calloc(1, sizeof *r);
    if (!r) return MQR_ENOMEM;
    r->deps = *deps;
    *out = r; /* the caller closes it on failure too */
    mqr__topics_set_max(r, 0);
    int rc = deps->store ? mqr__store_devices_load(deps->store, load_one, r) : 0;
    if (rc < 0) return rc;
    uv_timer_init(deps->loop, &r->timer);
    r->timer.data = r;
    uv_timer_start(&r->timer, on_flush_timer, MQR_REGISTRY_FLUSH_MS, MQR_REGISTRY_FLUSH_MS);
    uv_unref((uv_handle_t *)&r->timer); /* never keeps the loop alive */
    r->timer_on = true;
    return 0;
}

void mqr__registry_flush(mqr_registry_t *r)
{
    if (!r) return;
    mqr_device_t *d = r->dirty;
    r->dirty = NULL;
    while (d) {
        mqr_device_t *next = d->dirty_next;
        d->dirty = false;
        d->dirty_next = NULL;
        if (r->deps.store && mqr__store_device_counters(r->deps.store, d) == 0) r->flushes++;
        d = next;
    }
}

static void on_timer_closed(uv_handle_t *h)
{
    mqr_registry_t *r = h->data;
    r->timer_closing = false;
}

void mqr__registry_stop(mqr_registry_t *r)
{
    if (!r) return;
    mqr__registry_flush(r);
    if (r->timer_on) {
        r->timer_on = false;
        r->timer_closing = true;
        uv_close((uv_handle_t *)&r->timer, on_timer_closed);
    }
}

void mqr__registry_close(mqr_registry_t *r)
{
    if (!r) return;
    mqr__registry_stop(r);
    if (r->timer_closing) {
        /* the engine runs the loop before this (mqr_engine_free); when it
         * did not, run it once so the handle is not left pointing at us */
        uv_run(r->deps.loop, UV_RUN_NOWAIT);
    }
    for (size_t i = 0; i < r->cap; i++) {
        mqr_device_t *d = r->buckets[i];
        while (d) {
            mqr_device_t *next = d->next;
            d->r = NULL;
            device_unref(d);
            d = next;
        }
    }
    free(r->buckets);
    free(r->index);
    mqr__topics_free(r);
    free(r);
}

void mqr__topics_stats(mqr_registry_t *r, mqr_registry_stats_t *out);

void mqr__registry_stats(const mqr_registry_t *r, mqr_registry_stats_t *out)
{
    memset(out, 0, sizeof *out);
    if (!r) return;
    out->devices = r->count;
    out->online = r->online;
    out->flushes = r->flushes;
    mqr__topics_stats((mqr_registry_t *)r, out);
}

void mqr__registry_set_observer(mqr_registry_t *r, mqr_device_observer_fn fn, void *ud)
{
    r->observer = fn;
    r->observer_ud = ud;
}

void mqr__registry_set_mapper(mqr_registry_t *r, mqr_device_mapper_fn fn, void *ud)
{
    r->mapper = fn;
    r->mapper_ud = ud;
}

/* ---- the API --------------------------------------------------------------- */

static int fail(const char **why, const char *text)
{
    if (why) *why = text;
    return MQR_EINVAL;
}

static bool text_ok(const char *s, size_t max)
{
    size_t n = strlen(s);
    return n <= max && mqr__utf8_valid(s, n);
}

int mqr__device_register(mqr_registry_t *r, const mqr_device_spec_t *spec, bool *created,
                         const char **why)
{
    if (why) *why = NULL;
    if (!r || !spec) return MQR_EINVAL;
    const char *tenant = norm_tenant(spec->tenant);
    const char *name = spec->name ? spec->name : "";
    const char *type = spec->type ? spec->type : "";
    const char *meta = spec->metadata ? spec->metadata : "{}";
    if (tenant[0] && !mqr__tenant_valid(tenant, strlen(tenant)))
        return fail(why, "tenant must be 1 to 64 characters of A-Z a-z 0-9 _ -");
    if (!spec->id || !spec->id[0]) return fail(why, "id is empty");
    if (!text_ok(spec->id, MQR_DEVICE_ID_MAX)) return fail(why, "id too long or not UTF-8");
    if (!text_ok(name, MQR_DEVICE_NAME_MAX)) return fail(why, "name too long or not UTF-8");
    if (!text_ok(type, MQR_DEVICE_NAME_MAX)) return fail(why, "type too long or not UTF-8");
    size_t mlen = strlen(meta);
    if (mlen > MQR_DEVICE_META_MAX) return fail(why, "metadata too long");
    if (!mqr__json_valid(meta, mlen)) return fail(why, "metadata is not valid JSON");

    mqr_device_t *d = find(r, tenant, spec->id);
    if (d) {
        char *n = strdup(name), *t = strdup(type), *m = strdup(meta);
        if (!n || !t || !m) {
            free(n);
            free(t);
            free(m);
            return MQR_ENOMEM;
        }
        free(d->name);
        free(d->type);
        free(d->metadata);
        d->name = n;
        d->type = t;
        d->metadata = m;
        if (created) *created = false;
        return mqr__store_device_put(r->deps.store, d);
    }
    if (grow(r) < 0) return MQR_ENOMEM;
    d = device_new(tenant, spec->id, name, type, meta);
    if (!d) return MQR_ENOMEM;
    d->r = r;
    d->created_ms = mqr__now_ms();
    int rc = mqr__store_device_put(r->deps.store, d);
    if (rc < 0) {
        device_free(d);
        return rc;
    }
    insert(r, d);
    if (created) *created = true;
    /* its client may be connected already */
    mqr__listener_device_attach(r->deps.listeners, tenant, d->id);
    return 0;
}

int mqr__device_unregister(mqr_registry_t *r, const char *tenant, const char *id)
{
    if (!r || !id) return MQR_EINVAL;
    mqr_device_t *d = find(r, norm_tenant(tenant), id);
    if (!d) return MQR_ENOENT;
    unlink_dev(r, d);
    if (d->status == MQR_DEVICE_ONLINE) r->online--;
    int rc = mqr__store_device_delete(r->deps.store, d->tenant, d->id);
    d->r = NULL;
    device_unref(d);
    return rc;
}

int mqr__device_get(mqr_registry_t *r, const char *tenant, const char *id, mqr_device_info_t *out)
{
    if (!r || !id || !out) return MQR_EINVAL;
    mqr_device_t *d = find(r, norm_tenant(tenant), id);
    if (!d) return MQR_ENOENT;
    info_of(d, out);
    return 0;
}

int mqr__device_set_status(mqr_registry_t *r, const char *tenant, const char *id, int status)
{
    if (!r || !id) return MQR_EINVAL;
    if (status < MQR_DEVICE_UNKNOWN || status > MQR_DEVICE_OFFLINE) return MQR_EINVAL;
    mqr_device_t *d = find(r, norm_tenant(tenant), id);
    if (!d) return MQR_ENOENT;
    set_status(r, d, status, "set by hand");
    return 0;
}

static int index_cmp(const void *a, const void *b)
{
    const mqr_device_t *x = *(mqr_device_t *const *)a, *y = *(mqr_device_t *const *)b;
    return key_cmp(x->tenant, x->id, y->tenant, y->id);
}

static int index_build(mqr_registry_t *r)
{
    if (!r->index_stale && r->index_len == r->count) return 0;
    mqr_device_t **ix = realloc(r->index, (r->count ? r->count : 1) * sizeof *ix);
    if (!ix) return MQR_ENOMEM;
    r->index = ix;
    size_t n = 0;
    for (size_t i = 0; i < r->cap; i++)
        for (mqr_device_t *d = r->buckets[i]; d; d = d->next)
            ix[n++] = d;
    qsort(ix, n, sizeof *ix, index_cmp);
    r->index_len = n;
    r->index_stale = false;
    return 0;
}

/* First index position whose key is after (tenant, id). */
static size_t index_after(const mqr_registry_t *r, const char *tenant, const char *id)
{
    size_t lo = 0, hi = r->index_len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const mqr_device_t *d = r->index[mid];
        if (key_cmp(d->tenant, d->id, tenant, id) <= 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

int mqr__device_list(mqr_registry_t *r, const mqr_device_query_t *q, mqr_device_fn cb, void *arg,
                     char *next, size_t next_cap)
{
    /* next may be the cursor's own buffer: written at the end only */
    if (!r || !q || !cb) return MQR_EINVAL;
    if (q->limit > MQR_REGISTRY_LIMIT_MAX) return MQR_EINVAL;
    if (q->status < -1 || q->status > MQR_DEVICE_OFFLINE) return MQR_EINVAL;
    unsigned limit = q->limit ? q->limit : MQR_REGISTRY_LIMIT_DEFAULT;
    if (q->tenant && q->tenant[0] && !mqr__tenant_valid(q->tenant, strlen(q->tenant)))
        return MQR_EINVAL;
    int rc = index_build(r);
    if (rc < 0) return rc;
    size_t pos = 0;
    if (q->cursor && q->cursor[0]) {
        const char *slash = strchr(q->cursor, '/');
        size_t tlen = slash ? (size_t)(slash - q->cursor) : 0;
        if (!slash || (tlen && !mqr__tenant_valid(q->cursor, tlen)) || !slash[1]) return MQR_EINVAL;
        char tenant[MQR_TENANT_MAX + 1];
        memcpy(tenant, q->cursor, tlen);
        tenant[tlen] = '\0';
        pos = index_after(r, tenant, slash + 1);
    } else if (q->tenant) {
        pos = index_after(r, q->tenant, ""); /* ids are never empty: the tenant's first */
    }
    int n = 0;
    const mqr_device_t *last = NULL;
    bool more = false;
    for (; pos < r->index_len; pos++) {
        const mqr_device_t *d = r->index[pos];
        if (q->tenant) {
            int c = strcmp(d->tenant, q->tenant);
            if (c > 0) break; /* sorted by tenant first */
            if (c < 0) continue;
        }
        if (q->prefix && !starts_with(d->id, q->prefix)) continue;
        if (q->type && strcmp(d->type, q->type) != 0) continue;
        if (q->status >= 0 && d->status != q->status) continue;
        if ((unsigned)n == limit) {
            more = true;
            break;
        }
        mqr_device_info_t info;
        info_of(d, &info);
        last = d;
        n++;
        if (cb(arg, &info) != 0) {
            more = pos + 1 < r->index_len;
            break;
        }
    }
    if (next && next_cap) {
        if (more && last)
            snprintf(next, next_cap, "%s/%s", last->tenant, last->id);
        else
            next[0] = '\0';
    }
    return n;
}

/* ---- the listener's side ------------------------------------------------------ */

mqr_device_t *mqr__registry_conn_online(mqr_registry_t *r, const char *tenant,
                                        const char *client_id)
{
    if (!r || !r->count) return NULL;
    tenant = norm_tenant(tenant);
    const char *id = client_id;
    char mapped[MQR_DEVICE_ID_MAX + 1];
    if (r->mapper) {
        if (!r->mapper(r->mapper_ud, tenant, client_id, mapped, sizeof mapped)) return NULL;
        mapped[sizeof mapped - 1] = '\0';
        id = mapped;
    }
    mqr_device_t *d = find(r, tenant, id);
    if (!d) return NULL;
    d->refs++;
    d->conns++;
    d->last_seen_ms = mqr__now_ms();
    set_status(r, d, MQR_DEVICE_ONLINE, "connected");
    return d;
}

void mqr__registry_conn_offline(mqr_registry_t *r, mqr_device_t *d, const char *why)
{
    if (!d) return;
    if (d->conns) d->conns--;
    if (d->r && d->conns == 0) {
        d->last_seen_ms = mqr__now_ms();
        set_status(d->r, d, MQR_DEVICE_OFFLINE, why);
    }
    device_unref(d);
}

/* ---- JSON syntax ------------------------------------------------------------------ */

typedef struct {
    const char *p, *end;
    int depth;
} json_t;

static void ws(json_t *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static bool lit(json_t *j, const char *w)
{
    size_t n = strlen(w);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, w, n) != 0) return false;
    j->p += n;
    return true;
}

static bool digits(json_t *j)
{
    const char *s = j->p;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
        j->p++;
    return j->p > s;
}

static bool number(json_t *j)
{
    if (j->p < j->end && *j->p == '-') j->p++;
    if (j->p < j->end && *j->p == '0')
        j->p++;
    else if (!digits(j))
        return false;
    if (j->p < j->end && *j->p == '.') {
        j->p++;
        if (!digits(j)) return false;
    }
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-')) j->p++;
        if (!digits(j)) return false;
    }
    return true;
}

static bool hex4(json_t *j)
{
    for (int i = 0; i < 4; i++, j->p++) {
        if (j->p >= j->end) return false;
        char ch = *j->p;
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F')))
            return false;
    }
    return true;
}

static bool string(json_t *j)
{
    if (j->p >= j->end || *j->p != '"') return false;
    const char *start = ++j->p;
    while (j->p < j->end) {
        unsigned char ch = (unsigned char)*j->p;
        if (ch == '"') {
            bool ok = mqr__utf8_valid(start, (size_t)(j->p - start));
            j->p++;
            return ok;
        }
        if (ch < 0x20) return false;
        if (ch == '\\') {
            j->p++;
            if (j->p >= j->end) return false;
            char e = *j->p;
            if (e == 'u') {
                j->p++;
                if (!hex4(j)) return false;
                continue;
            }
            if (!strchr("\"\\/bfnrt", e)) return false;
        }
        j->p++;
    }
    return false;
}

static bool value(json_t *j);

static bool members(json_t *j, char close, bool object)
{
    if (++j->depth > 64) return false;
    j->p++;
    ws(j);
    if (j->p < j->end && *j->p == close) {
        j->p++;
        j->depth--;
        return true;
    }
    for (;;) {
        ws(j);
        if (object) {
            if (!string(j)) return false;
            ws(j);
            if (j->p >= j->end || *j->p != ':') return false;
            j->p++;
        }
        if (!value(j)) return false;
        ws(j);
        if (j->p >= j->end) return false;
        if (*j->p == ',') {
            j->p++;
            continue;
        }
        if (*j->p != close) return false;
        j->p++;
        j->depth--;
        return true;
    }
}

static bool value(json_t *j)
{
    ws(j);
    if (j->p >= j->end) return false;
    switch (*j->p) {
    case '{':
        return members(j, '}', true);
    case '[':
        return members(j, ']', false);
    case '"':
        return string(j);
    case 't':
        return lit(j, "true");
    case 'f':
        return lit(j, "false");
    case 'n':
        return lit(j, "null");
    default:
        return number(j);
    }
}

bool mqr__json_valid(const char *s, size_t len)
{
    if (!s) return false;
    json_t j = {.p = s, .end = s + len};
    if (!value(&j)) return false;
    ws(&j);
    return j.p == j.end;
}
