/*
 * l_kv.c — the key-value store rules share across reloads: `mq.kv` (raw:
 * string keys to byte-string values, each maybe marked JSON text) under the
 * Lua module `mqrouter.kv`, which encodes and decodes.
 *
 * The table belongs to the script host, not to a Lua state, so a reload
 * finds what the old rules left. Entries set with persist go to the
 * engine's SQLite store as well (core/store/store_kv.c) and are loaded back the
 * first time a script of a new engine touches the store. Must not: keep a
 * Lua value, or hold more than MAX_ENTRIES entries.
 */
#include "script.h"

#include "store_kv.h"

#include <stdlib.h>
#include <string.h>

#define MAX_ENTRIES 1000000u
#define MAX_KEY 1024u
#define MAX_VALUE (16u << 20)

typedef struct kv_entry kv_entry_t;
struct kv_entry {
    kv_entry_t *next;
    char *key; /* NUL-terminated copy; klen bytes */
    size_t klen;
    char *value;
    size_t vlen;
    bool json;
    bool persist;
};

struct l_kv {
    kv_entry_t **buckets;
    size_t nbuckets;
    size_t count;
};

static size_t hash(const char *k, size_t n)
{
    size_t x = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        x ^= (unsigned char)k[i];
        x *= 1099511628211ull;
    }
    return x;
}

static kv_entry_t **slot(struct l_kv *kv, const char *k, size_t n)
{
    kv_entry_t **p = &kv->buckets[hash(k, n) & (kv->nbuckets - 1)];
    while (*p && ((*p)->klen != n || memcmp((*p)->key, k, n) != 0))
        p = &(*p)->next;
    return p;
}

static void grow(struct l_kv *kv)
{
    size_t nb = kv->nbuckets * 2;
    kv_entry_t **b = calloc(nb, sizeof *b);
    if (!b) return; /* longer chains, still correct */
    for (size_t i = 0; i < kv->nbuckets; i++) {
        for (kv_entry_t *e = kv->buckets[i], *next; e; e = next) {
            next = e->next;
            kv_entry_t **head = &b[hash(e->key, e->klen) & (nb - 1)];
            e->next = *head;
            *head = e;
        }
    }
    free(kv->buckets);
    kv->buckets = b;
    kv->nbuckets = nb;
}

static void entry_free(kv_entry_t *e)
{
    free(e->key);
    free(e->value);
    free(e);
}

/* Sets k to v in memory only. Returns 0 or MQR_ENOMEM / MQR_EFULL. */
static int put(struct l_kv *kv, const char *k, size_t kl, const char *v, size_t vl, bool json,
               bool persist)
{
    kv_entry_t **p = slot(kv, k, kl);
    char *copy = malloc(vl + 1);
    if (!copy) return MQR_ENOMEM;
    memcpy(copy, v, vl);
    copy[vl] = '\0';
    if (*p) {
        free((*p)->value);
        (*p)->value = copy;
        (*p)->vlen = vl;
        (*p)->json = json;
        (*p)->persist = persist;
        return 0;
    }
    if (kv->count >= MAX_ENTRIES) {
        free(copy);
        return MQR_EFULL;
    }
    kv_entry_t *e = calloc(1, sizeof *e);
    char *kc = malloc(kl + 1);
    if (!e || !kc) {
        free(e);
        free(kc);
        free(copy);
        return MQR_ENOMEM;
    }
    memcpy(kc, k, kl);
    kc[kl] = '\0';
    *e = (kv_entry_t){
        .key = kc, .klen = kl, .value = copy, .vlen = vl, .json = json, .persist = persist};
    e->next = *p;
    *p = e;
    if (++kv->count > kv->nbuckets) grow(kv);
    return 0;
}

static int load_one(void *arg, const char *k, size_t kl, const char *v, size_t vl, int json)
{
    return put(arg, k, kl, v, vl, json != 0, true);
}

/* The host's store, created (and loaded from SQLite) on first use. */
static struct l_kv *kv_of(lua_State *L)
{
    mqr_script_t *h = mqr__state_of(L)->host;
    if (h->kv) return h->kv;
    struct l_kv *kv = calloc(1, sizeof *kv);
    if (kv) kv->buckets = calloc(64, sizeof *kv->buckets);
    if (!kv || !kv->buckets) {
        free(kv);
        luaL_error(L, "out of memory");
        return NULL;
    }
    kv->nbuckets = 64;
    h->kv = kv;
    if (mqr__engine_store(h->e)) {
        int rc = mqr__store_kv_load(mqr__engine_store(h->e), load_one, kv);
        if (rc < 0)
            MQR_LOG_W("rules", "kv: cannot load stored entries: %s (%s)", mqr_strerror(rc),
                      mqr__store_last_error(mqr__engine_store(h->e)));
    }
    return kv;
}

void mqr__lkv_free(mqr_script_t *h)
{
    struct l_kv *kv = h->kv;
    if (!kv) return;
    for (size_t i = 0; i < kv->nbuckets; i++)
        for (kv_entry_t *e = kv->buckets[i], *next; e; e = next) {
            next = e->next;
            entry_free(e);
        }
    free(kv->buckets);
    free(kv);
    h->kv = NULL;
}

static const char *check_key(lua_State *L, size_t *len)
{
    const char *k = luaL_checklstring(L, 1, len);
    if (*len == 0 || *len > MAX_KEY) luaL_argerror(L, 1, "key must be 1..1024 bytes");
    return k;
}

/* kv.get(key) -> value, is_json | nil */
static int l_kv_get(lua_State *L)
{
    size_t kl;
    const char *k = check_key(L, &kl);
    kv_entry_t *e = *slot(kv_of(L), k, kl);
    if (!e) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushlstring(L, e->value, e->vlen);
    lua_pushboolean(L, e->json);
    return 2;
}

/* kv.set(key, value [, json [, persist]]) -> true | nil, err, name */
static int l_kv_set(lua_State *L)
{
    size_t kl, vl;
    const char *k = check_key(L, &kl);
    const char *v = luaL_checklstring(L, 2, &vl);
    bool json = lua_toboolean(L, 3), persist = lua_toboolean(L, 4);
    if (vl > MAX_VALUE) return mqr__lua_fail(L, MQR_ETOOLARGE, "kv values are at most 16 MiB");
    struct l_kv *kv = kv_of(L);
    mqr_script_t *h = mqr__state_of(L)->host;
    kv_entry_t *old = *slot(kv, k, kl);
    bool was_persisted = old && old->persist;
    if (persist && mqr__engine_store(h->e)) {
        int rc = mqr__store_kv_put(mqr__engine_store(h->e), k, kl, v, vl, json);
        if (rc < 0) return mqr__lua_fail(L, rc, mqr__store_last_error(mqr__engine_store(h->e)));
    } else if (was_persisted && mqr__engine_store(h->e)) {
        mqr__store_kv_delete(mqr__engine_store(h->e), k, kl);
    }
    int rc = put(kv, k, kl, v, vl, json, persist);
    if (rc < 0) return mqr__lua_fail(L, rc, rc == MQR_EFULL ? "kv holds 1000000 entries" : NULL);
    lua_pushboolean(L, 1);
    return 1;
}

/* kv.delete(key) -> true when there was such a key, else false */
static int l_kv_delete(lua_State *L)
{
    size_t kl;
    const char *k = check_key(L, &kl);
    struct l_kv *kv = kv_of(L);
    kv_entry_t **p = slot(kv, k, kl), *e = *p;
    if (!e) {
        lua_pushboolean(L, 0);
        return 1;
    }
    mqr_script_t *h = mqr__state_of(L)->host;
    if (e->persist && mqr__engine_store(h->e)) mqr__store_kv_delete(mqr__engine_store(h->e), k, kl);
    *p = e->next;
    entry_free(e);
    kv->count--;
    lua_pushboolean(L, 1);
    return 1;
}

static int cmp_str(const void *a, const void *b)
{
    const kv_entry_t *x = *(kv_entry_t *const *)a, *y = *(kv_entry_t *const *)b;
    size_t n = x->klen < y->klen ? x->klen : y->klen;
    int c = memcmp(x->key, y->key, n);
    return c ? c : (x->klen > y->klen) - (x->klen < y->klen);
}

/* kv.keys([prefix]) -> sorted list of keys starting with prefix */
static int l_kv_keys(lua_State *L)
{
    size_t pl = 0;
    const char *prefix = luaL_optlstring(L, 1, "", &pl);
    struct l_kv *kv = kv_of(L);
    kv_entry_t **list = malloc((kv->count ? kv->count : 1) * sizeof *list);
    if (!list) return luaL_error(L, "out of memory");
    size_t n = 0;
    for (size_t i = 0; i < kv->nbuckets; i++)
        for (kv_entry_t *e = kv->buckets[i]; e; e = e->next)
            if (e->klen >= pl && memcmp(e->key, prefix, pl) == 0) list[n++] = e;
    qsort(list, n, sizeof *list, cmp_str);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_pushlstring(L, list[i]->key, list[i]->klen);
        lua_rawseti(L, -2, (int)i + 1);
    }
    free(list);
    return 1;
}

/* kv.count() -> number of entries */
static int l_kv_count(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)kv_of(L)->count);
    return 1;
}

void mqr__lkv_open(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"get", l_kv_get},   {"set", l_kv_set},     {"delete", l_kv_delete},
        {"keys", l_kv_keys}, {"count", l_kv_count}, {NULL, NULL},
    };
    lua_createtable(L, 0, 5);
    luaL_setfuncs(L, fns, 0);
    lua_setfield(L, -2, "kv");
}
