/*
 * upstream_persist.c — Paho's user persistence hooks over one SQLite table
 * (see upstream_persist.h for why it is a file and connection of its own).
 * Part of the Paho transport (the hooks, declared in upstream_paho_int.h)
 * and of the session manager (open, close, count, discard, the inbox).
 *
 * Table records(session, key, value): Paho's key ("c-12", "s-3", ...) within
 * a session's name, and the record as Paho handed it (its buffers joined).
 * Buffers handed back to Paho (pget, pkeys) are allocated with
 * MQTTAsync_malloc: Paho frees them with its own tracking allocator, which
 * leaks (and complains about) memory it did not allocate itself.
 *
 * Every hook takes the mutex for its whole statement, so the connection is
 * used by one thread at a time; statements are prepared once.
 */
#include "upstream_persist.h"

#include "mqrouter.h"
#include "upstream_paho_int.h"

#include <MQTTAsync.h>
#include <sqlite3.h>
#include <uv.h>

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCHEMA_VERSION 2
#define BUSY_TIMEOUT_MS 5000

enum {
    ST_PUT,
    ST_GET,
    ST_REMOVE,
    ST_KEYS,
    ST_CLEAR,
    ST_CONTAINS,
    ST_COUNT,
    ST_INBOX_PUT,
    ST_INBOX_DELETE,
    ST_INBOX_LOAD,
    ST_INBOX_CLEAR,
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_N_
};

static const char *const statement_sql[ST_N_] = {
    [ST_PUT] = "INSERT OR REPLACE INTO records(session, key, value) VALUES (?1, ?2, ?3)",
    [ST_GET] = "SELECT value FROM records WHERE session = ?1 AND key = ?2",
    [ST_REMOVE] = "DELETE FROM records WHERE session = ?1 AND key = ?2",
    [ST_KEYS] = "SELECT key FROM records WHERE session = ?1",
    [ST_CLEAR] = "DELETE FROM records WHERE session = ?1",
    [ST_CONTAINS] = "SELECT 1 FROM records WHERE session = ?1 AND key = ?2",
    [ST_COUNT] = "SELECT (SELECT count(*) FROM records WHERE session = ?1)"
                 " + (SELECT count(*) FROM inbox WHERE session = ?1)",
    [ST_INBOX_PUT] = "INSERT OR REPLACE INTO inbox(session, seq, qos, retain, expiry_s, arrived_ms,"
                     " topic_len, payload_len, props_len, data)"
                     " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    [ST_INBOX_DELETE] = "DELETE FROM inbox WHERE session = ?1 AND seq = ?2",
    [ST_INBOX_LOAD] = "SELECT seq, qos, retain, expiry_s, arrived_ms, topic_len, payload_len,"
                      " props_len, data FROM inbox WHERE session = ?1 AND seq >= ?2"
                      " ORDER BY seq LIMIT ?3",
    [ST_INBOX_CLEAR] = "DELETE FROM inbox WHERE session = ?1",
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
};

/* Deletes wait in memory until the next write commits them in its
 * transaction (see "deferred deletes" below). */
#define PEND_BUCKETS 1024u
#define PEND_MAX 4096u
#define PEND_FLUSH_MS 200

enum { PEND_RECORD, PEND_INBOX };

typedef struct pend pend_t;
struct pend {
    pend_t *next;
    uint32_t hash;
    int kind;
    uint64_t seq;    /* PEND_INBOX */
    const char *key; /* PEND_RECORD: inside text[], after the name */
    char text[];     /* session name, NUL, key, NUL */
};

struct mqr_upstream_persist {
    uv_mutex_t lock;
    sqlite3 *db;
    sqlite3_stmt *st[ST_N_];
    mqr_upstream_persist_stats_t stats;
    pend_t *pend[PEND_BUCKETS];
    size_t npend;
    uv_timer_t flush_timer; /* loop thread: commits removals left pending when idle */
    bool timer_open;
};

static int pend_flush(mqr_upstream_persist_t *p, const char *name);

/* The context Paho hands every hook (through popen's handle). */
typedef struct {
    mqr_upstream_persist_t *p;
    char name[];
} session_ctx_t;

static char *errtext(const char *path, const char *what, sqlite3 *db)
{
    const char *why = db ? sqlite3_errmsg(db) : "out of memory";
    size_t n = strlen(path) + strlen(what) + strlen(why) + 32;
    char *t = malloc(n);
    if (t) snprintf(t, n, "upstream store %s: %s: %s", path, what, why);
    return t;
}

static int exec(sqlite3 *db, const char *sql)
{
    return sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : MQR_ESTORE;
}

static int user_version(sqlite3 *db, int *out)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL);
    if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) *out = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_OK ? 0 : MQR_ESTORE;
}

static int setup(mqr_upstream_persist_t *p, const char *path, char **errmsg)
{
    sqlite3_extended_result_codes(p->db, 1);
    sqlite3_busy_timeout(p->db, BUSY_TIMEOUT_MS);
    int version = 0;
    if (user_version(p->db, &version) < 0) {
        *errmsg = errtext(path, "cannot read schema version", p->db);
        return MQR_ESTORE;
    }
    if (version > SCHEMA_VERSION) {
        char why[96];
        snprintf(why, sizeof why, "schema version %d is newer than this program's %d", version,
                 SCHEMA_VERSION);
        *errmsg = errtext(path, why, NULL);
        return MQR_ESCHEMA;
    }
    if (exec(p->db, "PRAGMA journal_mode = WAL") < 0 ||
        exec(p->db, "PRAGMA synchronous = NORMAL") < 0 ||
        exec(p->db, "PRAGMA locking_mode = EXCLUSIVE") < 0) {
        *errmsg = errtext(path, "cannot set journal mode", p->db);
        return MQR_ESTORE;
    }
    if (version < 1 &&
        (exec(p->db, "BEGIN IMMEDIATE") < 0 || exec(p->db, "CREATE TABLE records ("
                                                           "  session TEXT NOT NULL,"
                                                           "  key TEXT NOT NULL,"
                                                           "  value BLOB NOT NULL,"
                                                           "  PRIMARY KEY(session, key)"
                                                           ") WITHOUT ROWID;"
                                                           "PRAGMA user_version = 1;"
                                                           "COMMIT") < 0)) {
        *errmsg = errtext(path, "cannot create the schema", p->db);
        exec(p->db, "ROLLBACK");
        return MQR_ESTORE;
    }
    /* 2: messages that arrived from the broker and are not routed yet */
    if (version < 2 &&
        (exec(p->db, "BEGIN IMMEDIATE") < 0 || exec(p->db, "CREATE TABLE inbox ("
                                                           "  session TEXT NOT NULL,"
                                                           "  seq INT NOT NULL,"
                                                           "  qos INT NOT NULL,"
                                                           "  retain INT NOT NULL,"
                                                           "  expiry_s INT NOT NULL,"
                                                           "  arrived_ms INT NOT NULL,"
                                                           "  topic_len INT NOT NULL,"
                                                           "  payload_len INT NOT NULL,"
                                                           "  props_len INT NOT NULL,"
                                                           "  data BLOB NOT NULL,"
                                                           "  PRIMARY KEY(session, seq)"
                                                           ") WITHOUT ROWID;"
                                                           "PRAGMA user_version = 2;"
                                                           "COMMIT") < 0)) {
        *errmsg = errtext(path, "cannot add the inbox", p->db);
        exec(p->db, "ROLLBACK");
        return MQR_ESTORE;
    }
    for (int i = 0; i < ST_N_; i++)
        if (sqlite3_prepare_v3(p->db, statement_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &p->st[i],
                               NULL) != SQLITE_OK) {
            *errmsg = errtext(path, "cannot prepare a statement", p->db);
            return MQR_ESTORE;
        }
    return 0;
}

static void on_flush_timer(uv_timer_t *t)
{
    mqr_upstream_persist_t *p = t->data;
    uv_mutex_lock(&p->lock);
    pend_flush(p, NULL);
    uv_mutex_unlock(&p->lock);
}

static void free_persist(mqr_upstream_persist_t *p)
{
    for (unsigned b = 0; b < PEND_BUCKETS; b++)
        for (pend_t *x = p->pend[b], *next; x; x = next) {
            next = x->next;
            free(x);
        }
    uv_mutex_destroy(&p->lock);
    free(p);
}

static void on_timer_closed(uv_handle_t *h)
{
    free_persist(h->data);
}

int mqr__upstream_persist_open(uv_loop_t *loop, const char *path, mqr_upstream_persist_t **out,
                               char **errmsg)
{
    *out = NULL;
    *errmsg = NULL;
    mqr_upstream_persist_t *p = calloc(1, sizeof *p);
    if (!p) return MQR_ENOMEM;
    uv_mutex_init(&p->lock);
    /* FULLMUTEX is not needed (our mutex serialises), NOMUTEX skips
     * SQLite's own locking. */
    int rc = sqlite3_open_v2(
        path, &p->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    int err = 0;
    if (!p->db) {
        err = MQR_ENOMEM;
    } else if (rc != SQLITE_OK) {
        *errmsg = errtext(path, "cannot open", p->db);
        err = MQR_ESTORE;
    } else {
        err = setup(p, path, errmsg);
    }
    if (err) {
        mqr__upstream_persist_close(p);
        return err;
    }
    uv_timer_init(loop, &p->flush_timer); /* cannot fail */
    p->flush_timer.data = p;
    p->timer_open = true;
    uv_timer_start(&p->flush_timer, on_flush_timer, PEND_FLUSH_MS, PEND_FLUSH_MS);
    uv_unref((uv_handle_t *)&p->flush_timer);
    *out = p;
    return 0;
}

void mqr__upstream_persist_close(mqr_upstream_persist_t *p)
{
    if (!p) return;
    if (p->db && p->st[ST_N_ - 1]) pend_flush(p, NULL);
    for (int i = 0; i < ST_N_; i++)
        sqlite3_finalize(p->st[i]);
    if (p->db) sqlite3_close_v2(p->db);
    p->db = NULL;
    if (p->timer_open) /* the memory goes with the handle */
        uv_close((uv_handle_t *)&p->flush_timer, on_timer_closed);
    else
        free_persist(p);
}

/* ---- deferred deletes ----------------------------------------------------
 * A message costs Paho four writes: its command record, its in-flight
 * record, and the removal of each; an inbox message two. Each write is a
 * commit. Removals need not be durable at once — a removal lost in a crash
 * only makes a message be sent (or routed) once more, which QoS 1 allows,
 * while QoS 2 resends are answered from the broker's state — so they wait
 * here and go into the transaction of the next write (or of a flush, at
 * PEND_MAX, a read of keys, a close). That halves the commits per message.
 * A write or a read of a key cancels or hides its pending removal first.
 * Under the lock. */

static uint32_t pend_hash(int kind, const char *name, const char *key, uint64_t seq)
{
    uint32_t h = 2166136261u ^ (uint32_t)kind;
    for (const char *c = name; *c; c++)
        h = (h ^ (uint8_t)*c) * 16777619u;
    h = (h ^ 0xff) * 16777619u;
    if (key)
        for (const char *c = key; *c; c++)
            h = (h ^ (uint8_t)*c) * 16777619u;
    return h ^ (uint32_t)seq ^ (uint32_t)(seq >> 32);
}

static pend_t **pend_find(mqr_upstream_persist_t *p, int kind, const char *name, const char *key,
                          uint64_t seq, uint32_t h)
{
    pend_t **pp = &p->pend[h % PEND_BUCKETS];
    for (; *pp; pp = &(*pp)->next) {
        pend_t *x = *pp;
        if (x->hash == h && x->kind == kind && x->seq == seq && strcmp(x->text, name) == 0 &&
            (!key || strcmp(x->key, key) == 0))
            break;
    }
    return pp;
}

/* Forgets a pending removal; true if there was one. */
static bool pend_take(mqr_upstream_persist_t *p, int kind, const char *name, const char *key,
                      uint64_t seq)
{
    pend_t **pp = pend_find(p, kind, name, key, seq, pend_hash(kind, name, key, seq));
    pend_t *x = *pp;
    if (!x) return false;
    *pp = x->next;
    free(x);
    p->npend--;
    return true;
}

static bool pend_has(mqr_upstream_persist_t *p, int kind, const char *name, const char *key,
                     uint64_t seq)
{
    return *pend_find(p, kind, name, key, seq, pend_hash(kind, name, key, seq)) != NULL;
}

static int pend_add(mqr_upstream_persist_t *p, int kind, const char *name, const char *key,
                    uint64_t seq)
{
    uint32_t h = pend_hash(kind, name, key, seq);
    if (*pend_find(p, kind, name, key, seq, h)) return 0;
    size_t nl = strlen(name) + 1, kl = key ? strlen(key) + 1 : 1;
    pend_t *x = malloc(sizeof *x + nl + kl);
    if (!x) return MQR_ENOMEM;
    x->hash = h;
    x->kind = kind;
    x->seq = seq;
    memcpy(x->text, name, nl);
    memcpy(x->text + nl, key ? key : "", kl);
    x->key = x->text + nl;
    x->next = p->pend[h % PEND_BUCKETS];
    p->pend[h % PEND_BUCKETS] = x;
    p->npend++;
    return 0;
}

static int step_reset(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : MQR_ESTORE;
}

/* Runs the pending removals (of session name only, or all with NULL) inside
 * the caller's transaction and forgets them. */
static int pend_apply(mqr_upstream_persist_t *p, const char *name)
{
    int rc = 0;
    for (unsigned b = 0; b < PEND_BUCKETS; b++) {
        for (pend_t **pp = &p->pend[b]; *pp;) {
            pend_t *x = *pp;
            if (name && strcmp(x->text, name) != 0) {
                pp = &x->next;
                continue;
            }
            sqlite3_stmt *st = p->st[x->kind == PEND_INBOX ? ST_INBOX_DELETE : ST_REMOVE];
            sqlite3_bind_text(st, 1, x->text, -1, SQLITE_STATIC);
            if (x->kind == PEND_INBOX)
                sqlite3_bind_int64(st, 2, (sqlite3_int64)x->seq);
            else
                sqlite3_bind_text(st, 2, x->key, -1, SQLITE_STATIC);
            if (step_reset(st) < 0) rc = MQR_ESTORE;
            *pp = x->next;
            free(x);
            p->npend--;
            p->stats.removes++;
        }
    }
    return rc;
}

static int tx_begin(mqr_upstream_persist_t *p)
{
    return step_reset(p->st[ST_BEGIN]);
}

static int tx_end(mqr_upstream_persist_t *p, int rc)
{
    if (rc == 0 && step_reset(p->st[ST_COMMIT]) == 0) return 0;
    step_reset(p->st[ST_ROLLBACK]);
    p->stats.failures++;
    return MQR_ESTORE;
}

/* Commits the pending removals of session name (NULL: all). */
static int pend_flush(mqr_upstream_persist_t *p, const char *name)
{
    if (!p->npend) return 0;
    int rc = tx_begin(p);
    if (rc == 0) rc = pend_apply(p, name);
    return tx_end(p, rc);
}

/* ---- the hooks (any thread) -------------------------------------------- */

/* Locks, binds the session (and key) to statement i. */
static sqlite3_stmt *begin(session_ctx_t *c, int i, const char *key)
{
    uv_mutex_lock(&c->p->lock);
    sqlite3_stmt *st = c->p->st[i];
    sqlite3_bind_text(st, 1, c->name, -1, SQLITE_STATIC);
    if (key) sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
    return st;
}

/* Resets st, unlocks; a failure is counted unless it is an answer
 * ("no such key"). */
static int end(session_ctx_t *c, sqlite3_stmt *st, int rc, bool answer)
{
    if (rc < 0 && !answer) c->p->stats.failures++;
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    uv_mutex_unlock(&c->p->lock);
    return rc;
}

static int p_open(void **handle, const char *client_id, const char *server_uri, void *context)
{
    (void)client_id;
    (void)server_uri;
    *handle = context;
    return 0;
}

static int p_close(void *handle)
{
    session_ctx_t *c = handle;
    uv_mutex_lock(&c->p->lock);
    int rc = pend_flush(c->p, c->name);
    uv_mutex_unlock(&c->p->lock);
    return rc == 0 ? 0 : MQTTCLIENT_PERSISTENCE_ERROR;
}

static int p_put(void *handle, char *key, int bufcount, char *buffers[], int buflens[])
{
    session_ctx_t *c = handle;
    size_t total = 0;
    for (int i = 0; i < bufcount; i++)
        total += (size_t)buflens[i];
    char *blob = malloc(total ? total : 1);
    if (!blob) return MQTTCLIENT_PERSISTENCE_ERROR;
    size_t off = 0;
    for (int i = 0; i < bufcount; i++) {
        if (buflens[i] > 0) memcpy(blob + off, buffers[i], (size_t)buflens[i]);
        off += (size_t)buflens[i];
    }
    mqr_upstream_persist_t *p = c->p;
    uv_mutex_lock(&p->lock);
    pend_take(p, PEND_RECORD, c->name, key, 0);
    int rc = tx_begin(p);
    if (rc == 0) pend_apply(p, NULL); /* a failed delete only costs a duplicate */
    if (rc == 0) {
        sqlite3_stmt *st = p->st[ST_PUT];
        sqlite3_bind_text(st, 1, c->name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 3, blob, (int)total, SQLITE_STATIC);
        rc = step_reset(st);
    }
    rc = tx_end(p, rc);
    if (rc == 0) p->stats.puts++;
    uv_mutex_unlock(&p->lock);
    free(blob);
    return rc == 0 ? 0 : MQTTCLIENT_PERSISTENCE_ERROR;
}

static int p_get(void *handle, char *key, char **buffer, int *buflen)
{
    session_ctx_t *c = handle;
    sqlite3_stmt *st = begin(c, ST_GET, key);
    int rc = MQTTCLIENT_PERSISTENCE_ERROR;
    int step = pend_has(c->p, PEND_RECORD, c->name, key, 0) ? SQLITE_DONE : sqlite3_step(st);
    if (step == SQLITE_ROW) {
        int n = sqlite3_column_bytes(st, 0);
        const void *v = sqlite3_column_blob(st, 0);
        char *b = MQTTAsync_malloc(n ? (size_t)n : 1);
        if (b) {
            if (n) memcpy(b, v, (size_t)n);
            *buffer = b;
            *buflen = n;
            rc = 0;
        }
    }
    return end(c, st, rc, step == SQLITE_DONE);
}

static int p_remove(void *handle, char *key)
{
    session_ctx_t *c = handle;
    mqr_upstream_persist_t *p = c->p;
    uv_mutex_lock(&p->lock);
    int rc = pend_add(p, PEND_RECORD, c->name, key, 0);
    if (rc == 0 && p->npend >= PEND_MAX) rc = pend_flush(p, NULL);
    if (rc < 0) p->stats.failures++;
    uv_mutex_unlock(&p->lock);
    return rc == 0 ? 0 : MQTTCLIENT_PERSISTENCE_ERROR;
}

static int p_keys(void *handle, char ***keys, int *nkeys)
{
    session_ctx_t *c = handle;
    *keys = NULL;
    *nkeys = 0;
    sqlite3_stmt *st = begin(c, ST_KEYS, NULL);
    pend_flush(c->p, c->name); /* the keys Paho sees are the ones left */
    char **list = NULL;
    int n = 0, cap = 0, rc = 0, step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == cap) {
            int ncap = cap ? cap * 2 : 64;
            char **bigger = MQTTAsync_malloc((size_t)ncap * sizeof *bigger);
            if (!bigger) {
                rc = MQTTCLIENT_PERSISTENCE_ERROR;
                break;
            }
            if (n) memcpy(bigger, list, (size_t)n * sizeof *list);
            MQTTAsync_free(list);
            list = bigger;
            cap = ncap;
        }
        const char *k = (const char *)sqlite3_column_text(st, 0);
        size_t len = strlen(k ? k : "");
        if (!(list[n] = MQTTAsync_malloc(len + 1))) {
            rc = MQTTCLIENT_PERSISTENCE_ERROR;
            break;
        }
        memcpy(list[n++], k ? k : "", len + 1);
    }
    if (rc == 0 && step != SQLITE_DONE) rc = MQTTCLIENT_PERSISTENCE_ERROR;
    if (rc < 0) {
        for (int i = 0; i < n; i++)
            MQTTAsync_free(list[i]);
        MQTTAsync_free(list);
    } else {
        *keys = list;
        *nkeys = n;
    }
    return end(c, st, rc, false);
}

static int p_clear(void *handle)
{
    session_ctx_t *c = handle;
    sqlite3_stmt *st = begin(c, ST_CLEAR, NULL);
    pend_flush(c->p, c->name);
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : MQTTCLIENT_PERSISTENCE_ERROR;
    return end(c, st, rc, false);
}

static int p_contains(void *handle, char *key)
{
    session_ctx_t *c = handle;
    sqlite3_stmt *st = begin(c, ST_CONTAINS, key);
    int step = pend_has(c->p, PEND_RECORD, c->name, key, 0) ? SQLITE_DONE : sqlite3_step(st);
    int rc = step == SQLITE_ROW ? 0 : MQTTCLIENT_PERSISTENCE_ERROR;
    return end(c, st, rc, step == SQLITE_DONE);
}

/* ---- for the session (loop thread) ------------------------------------- */

static session_ctx_t *ctx_new(mqr_upstream_persist_t *p, const char *name)
{
    size_t n = strlen(name) + 1;
    session_ctx_t *c = malloc(sizeof *c + n);
    if (!c) return NULL;
    c->p = p;
    memcpy(c->name, name, n);
    return c;
}

int mqr__upstream_persist_hooks(mqr_upstream_persist_t *p, const char *name,
                                MQTTClient_persistence *out)
{
    memset(out, 0, sizeof *out);
    session_ctx_t *c = ctx_new(p, name);
    if (!c) return MQR_ENOMEM;
    out->context = c;
    out->popen = p_open;
    out->pclose = p_close;
    out->pput = p_put;
    out->pget = p_get;
    out->premove = p_remove;
    out->pkeys = p_keys;
    out->pclear = p_clear;
    out->pcontainskey = p_contains;
    return 0;
}

void mqr__upstream_persist_release(MQTTClient_persistence *hooks)
{
    if (!hooks) return;
    free(hooks->context);
    hooks->context = NULL;
}

int mqr__upstream_persist_discard(mqr_upstream_persist_t *p, const char *name)
{
    session_ctx_t *c = ctx_new(p, name);
    if (!c) return MQR_ENOMEM;
    int rc = p_clear(c) == 0 ? 0 : MQR_ESTORE;
    sqlite3_stmt *st = begin(c, ST_INBOX_CLEAR, NULL);
    pend_flush(p, name);
    int irc = sqlite3_step(st) == SQLITE_DONE ? 0 : MQR_ESTORE;
    end(c, st, irc, false);
    free(c);
    return rc < 0 ? rc : irc;
}

/* ---- the inbox ---------------------------------------------------------- */

int mqr__upstream_inbox_put(mqr_upstream_persist_t *p, const char *name,
                            const mqr_upstream_inbox_rec_t *r)
{
    uv_mutex_lock(&p->lock);
    pend_take(p, PEND_INBOX, name, NULL, r->seq);
    int rc = tx_begin(p);
    if (rc == 0) pend_apply(p, NULL);
    sqlite3_stmt *st = p->st[ST_INBOX_PUT];
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)r->seq);
    sqlite3_bind_int(st, 3, r->qos);
    sqlite3_bind_int(st, 4, r->retain);
    sqlite3_bind_int64(st, 5, r->expiry_s);
    sqlite3_bind_int64(st, 6, (sqlite3_int64)r->arrived_ms);
    sqlite3_bind_int64(st, 7, (sqlite3_int64)r->topic_len);
    sqlite3_bind_int64(st, 8, (sqlite3_int64)r->payload_len);
    sqlite3_bind_int64(st, 9, (sqlite3_int64)r->props_len);
    sqlite3_bind_blob(st, 10, r->data, (int)r->data_len, SQLITE_STATIC);
    if (rc == 0)
        rc = step_reset(st);
    else
        sqlite3_clear_bindings(st);
    rc = tx_end(p, rc);
    uv_mutex_unlock(&p->lock);
    return rc;
}

int mqr__upstream_inbox_delete(mqr_upstream_persist_t *p, const char *name, uint64_t seq)
{
    uv_mutex_lock(&p->lock);
    int rc = pend_add(p, PEND_INBOX, name, NULL, seq);
    if (rc == 0 && p->npend >= PEND_MAX) rc = pend_flush(p, NULL);
    if (rc < 0) p->stats.failures++;
    uv_mutex_unlock(&p->lock);
    return rc;
}

int mqr__upstream_inbox_load(mqr_upstream_persist_t *p, const char *name,
                             int (*cb)(void *arg, const mqr_upstream_inbox_rec_t *r), void *arg)
{
    return mqr__upstream_inbox_load_from(p, name, 0, -1, cb, arg);
}

int mqr__upstream_inbox_load_from(mqr_upstream_persist_t *p, const char *name, uint64_t from,
                                  int64_t max,
                                  int (*cb)(void *arg, const mqr_upstream_inbox_rec_t *r),
                                  void *arg)
{
    uv_mutex_lock(&p->lock);
    pend_flush(p, name);
    sqlite3_stmt *st = p->st[ST_INBOX_LOAD];
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)from);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)max); /* < 0: no limit (SQLite's LIMIT -1) */
    int rc = 0, step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        mqr_upstream_inbox_rec_t r = {
            .seq = (uint64_t)sqlite3_column_int64(st, 0),
            .qos = (uint8_t)sqlite3_column_int(st, 1),
            .retain = sqlite3_column_int(st, 2) != 0,
            .expiry_s = (uint32_t)sqlite3_column_int64(st, 3),
            .arrived_ms = (uint64_t)sqlite3_column_int64(st, 4),
            .topic_len = (size_t)sqlite3_column_int64(st, 5),
            .payload_len = (size_t)sqlite3_column_int64(st, 6),
            .props_len = (size_t)sqlite3_column_int64(st, 7),
            .data = sqlite3_column_blob(st, 8),
            .data_len = (size_t)sqlite3_column_bytes(st, 8),
        };
        /* a record whose parts do not add up is skipped, not trusted */
        if (r.topic_len + 1 + r.payload_len + r.props_len != r.data_len) continue;
        if ((rc = cb(arg, &r)) != 0) break;
    }
    if (rc == 0 && step != SQLITE_DONE) rc = MQR_ESTORE;
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    uv_mutex_unlock(&p->lock);
    return rc;
}

int64_t mqr__upstream_persist_count(mqr_upstream_persist_t *p, const char *name)
{
    uv_mutex_lock(&p->lock);
    pend_flush(p, name);
    sqlite3_stmt *st = p->st[ST_COUNT];
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    int64_t n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : MQR_ESTORE;
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    uv_mutex_unlock(&p->lock);
    return n;
}

void mqr__upstream_persist_stats(mqr_upstream_persist_t *p, mqr_upstream_persist_stats_t *out)
{
    uv_mutex_lock(&p->lock);
    *out = p->stats;
    uv_mutex_unlock(&p->lock);
}
