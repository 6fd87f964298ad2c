/*
 * store.c — one SQLite database per engine: schema migrations, the
 * statements prepared once with the connection (store_int.h), group commit
 * and the meta table. The retained rows are store_retain.c's; the other
 * table families have a file each (store_*.c).
 *
 * Writes never commit on their own. The first write of a loop turn opens a
 * transaction; a uv_prepare_t owned by the store commits it once per turn.
 * Prepare callbacks run after the turn's timers and right before the loop
 * blocks for I/O, so whatever a callback wrote (timers of this turn, I/O,
 * check and close callbacks of the previous one) is committed before the loop
 * can sleep, and a burst of writes costs one fsync. A check handle would run
 * after the poll instead, leaving timer writes uncommitted while the loop
 * sleeps. The handle is unref'd while idle and ref'd while a transaction or a
 * waiter is pending, so uv_run() cannot return with writes still open.
 *
 * This file must not interpret what it stores, and must not block outside
 * SQLite calls.
 */
#include "store.h"
#include "store_int.h"

#include "errmsg.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#define DEFAULT_BUSY_TIMEOUT_MS 5000u

/* Adding schema version N is one entry here, at index N - 1. Never edit a
 * step that has shipped: files in the field already ran it. */
static const mqr_store_migration_t migrations[] = {
    {1, "CREATE TABLE retained ("
        "  topic TEXT PRIMARY KEY NOT NULL,"
        "  payload BLOB NOT NULL,"
        "  qos INT NOT NULL DEFAULT 0,"
        "  props BLOB,"
        "  created_ms INT NOT NULL,"
        "  expiry_s INT NOT NULL DEFAULT 0"
        ");"
        "CREATE TABLE meta ("
        "  key TEXT PRIMARY KEY NOT NULL,"
        "  value"
        ");"},
    /* persistent listener sessions (core/store/store_client_sessions.c): the session,
     * its subscriptions, its outbound QoS 1/2 messages (queued: pid 0, or
     * in flight) and its inbound QoS 2 packet ids awaiting PUBREL */
    {2, "CREATE TABLE sessions ("
        "  client_id TEXT PRIMARY KEY NOT NULL,"
        "  version INT NOT NULL,"
        "  expiry_s INT NOT NULL,"
        "  disconnected_ms INT NOT NULL DEFAULT 0"
        ");"
        "CREATE TABLE session_subs ("
        "  client_id TEXT NOT NULL REFERENCES sessions(client_id) ON DELETE CASCADE,"
        "  filter TEXT NOT NULL,"
        "  qos INT NOT NULL,"
        "  flags INT NOT NULL,"
        "  sub_id INT NOT NULL DEFAULT 0,"
        "  PRIMARY KEY(client_id, filter)"
        ") WITHOUT ROWID;"
        "CREATE TABLE session_msgs ("
        "  client_id TEXT NOT NULL REFERENCES sessions(client_id) ON DELETE CASCADE,"
        "  seq INT NOT NULL,"
        "  pid INT NOT NULL DEFAULT 0,"
        "  state INT NOT NULL DEFAULT 0,"
        "  qos INT NOT NULL,"
        "  retain INT NOT NULL DEFAULT 0,"
        "  sub_id INT NOT NULL DEFAULT 0,"
        "  topic TEXT NOT NULL,"
        "  payload BLOB,"
        "  props BLOB,"
        "  created_ms INT NOT NULL,"
        "  expiry_s INT NOT NULL DEFAULT 0,"
        "  PRIMARY KEY(client_id, seq)"
        ") WITHOUT ROWID;"
        "CREATE TABLE session_qos2 ("
        "  client_id TEXT NOT NULL REFERENCES sessions(client_id) ON DELETE CASCADE,"
        "  pid INT NOT NULL,"
        "  PRIMARY KEY(client_id, pid)"
        ") WITHOUT ROWID;"},
    /* listener credentials (core/store/store_auth.c): SCRAM-SHA-256 keys derived
     * from the password with PBKDF2-HMAC-SHA256 (salt, iterations); the
     * password and SaltedPassword itself are never stored */
    {3, "CREATE TABLE credentials ("
        "  username TEXT PRIMARY KEY NOT NULL,"
        "  salt BLOB NOT NULL,"
        "  iterations INT NOT NULL,"
        "  stored_key BLOB NOT NULL,"
        "  server_key BLOB NOT NULL,"
        "  created_ms INT NOT NULL DEFAULT 0"
        ");"},
    /* durable queues (core/store/store_queue.c): one row per queue name (qid, and
     * next_id, a high-water mark so ids are never given twice), its entries
     * not yet acknowledged or removed, and its dead letters */
    {4, "CREATE TABLE queues ("
        "  qid INTEGER PRIMARY KEY,"
        "  name TEXT UNIQUE NOT NULL,"
        "  next_id INT NOT NULL DEFAULT 1"
        ");"
        "CREATE TABLE queue_msgs ("
        "  qid INT NOT NULL,"
        "  id INT NOT NULL,"
        "  priority INT NOT NULL,"
        "  expires_ms INT NOT NULL DEFAULT 0,"
        "  attempts INT NOT NULL DEFAULT 0,"
        "  qos INT NOT NULL DEFAULT 0,"
        "  retain INT NOT NULL DEFAULT 0,"
        "  topic TEXT NOT NULL,"
        "  payload BLOB,"
        "  props BLOB,"
        "  created_ms INT NOT NULL,"
        "  expiry_s INT NOT NULL DEFAULT 0,"
        "  PRIMARY KEY(qid, id)"
        ") WITHOUT ROWID;"
        "CREATE TABLE queue_dead ("
        "  qid INT NOT NULL,"
        "  id INT NOT NULL,"
        "  priority INT NOT NULL,"
        "  reason INT NOT NULL,"
        "  attempts INT NOT NULL,"
        "  dead_ms INT NOT NULL,"
        "  qos INT NOT NULL DEFAULT 0,"
        "  retain INT NOT NULL DEFAULT 0,"
        "  topic TEXT NOT NULL,"
        "  payload BLOB,"
        "  props BLOB,"
        "  created_ms INT NOT NULL,"
        "  expiry_s INT NOT NULL DEFAULT 0,"
        "  PRIMARY KEY(qid, id)"
        ") WITHOUT ROWID;"},
    /* the Lua key-value store's persistent entries (core/store/store_kv.c,
     * bindings/l_kv.c): the value as bytes, json = 1 when it is JSON text */
    {5, "CREATE TABLE kv ("
        "  key TEXT PRIMARY KEY NOT NULL,"
        "  value BLOB NOT NULL,"
        "  json INT NOT NULL DEFAULT 0,"
        "  updated_ms INT NOT NULL DEFAULT 0"
        ");"},
    /* the device registry (core/store/store_registry.c): one row per (tenant, id),
     * status and counters written lazily (registry.h); and the tenant of a
     * listener user ('' = none) */
    {6, "CREATE TABLE devices ("
        "  tenant TEXT NOT NULL DEFAULT '',"
        "  id TEXT NOT NULL,"
        "  name TEXT NOT NULL DEFAULT '',"
        "  type TEXT NOT NULL DEFAULT '',"
        "  metadata TEXT NOT NULL DEFAULT '{}',"
        "  status INT NOT NULL DEFAULT 0,"
        "  status_ms INT NOT NULL DEFAULT 0,"
        "  created_ms INT NOT NULL DEFAULT 0,"
        "  last_seen_ms INT NOT NULL DEFAULT 0,"
        "  msgs_in INT NOT NULL DEFAULT 0,"
        "  msgs_out INT NOT NULL DEFAULT 0,"
        "  bytes_in INT NOT NULL DEFAULT 0,"
        "  bytes_out INT NOT NULL DEFAULT 0,"
        "  PRIMARY KEY(tenant, id)"
        ") WITHOUT ROWID;"
        "ALTER TABLE credentials ADD COLUMN tenant TEXT NOT NULL DEFAULT '';"},
    /* what persistent upstream sessions on the native transport owe their
     * brokers (core/store/store_outbox.c): QoS 1/2 publishes not completed
     * yet, in order; topic as sent (the session's remote name) */
    {7, "CREATE TABLE upstream_outbox ("
        "  seq INTEGER PRIMARY KEY,"
        "  session TEXT NOT NULL,"
        "  topic TEXT NOT NULL,"
        "  payload BLOB NOT NULL,"
        "  props BLOB,"
        "  qos INT NOT NULL,"
        "  retain INT NOT NULL,"
        "  expiry_s INT NOT NULL DEFAULT 0,"
        "  stored_ms INT NOT NULL"
        ");"
        "CREATE INDEX upstream_outbox_session ON upstream_outbox(session, seq);"},
};

#define LATEST_VERSION ((int)(sizeof migrations / sizeof migrations[0]))

/* Prepared once with the connection (store_int.h names them). Expiry as
 * MQTT defines it: 0 never expires; the same test is written in C in
 * store_retain.c's load: keep them in step. */
static const char *const statement_sql[ST_COUNT_] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_RETAIN_PUT] = "INSERT INTO retained(topic, payload, qos, props, created_ms, expiry_s)"
                      " VALUES(?1, ?2, ?3, ?4, ?5, ?6)"
                      " ON CONFLICT(topic) DO UPDATE SET payload = excluded.payload,"
                      " qos = excluded.qos, props = excluded.props,"
                      " created_ms = excluded.created_ms, expiry_s = excluded.expiry_s",
    [ST_RETAIN_DEL] = "DELETE FROM retained WHERE topic = ?1",
    [ST_RETAIN_LOAD] = "SELECT topic, payload, qos, props, created_ms, expiry_s"
                       " FROM retained ORDER BY topic",
    [ST_RETAIN_EXPIRE] = "DELETE FROM retained"
                         " WHERE expiry_s > 0 AND created_ms + expiry_s * 1000 < ?1",
    [ST_RETAIN_COUNT] = "SELECT count(*) FROM retained"
                        " WHERE expiry_s <= 0 OR created_ms + expiry_s * 1000 >= ?1",
    [ST_META_GET] = "SELECT value FROM meta WHERE key = ?1",
    [ST_META_PUT] = "INSERT INTO meta(key, value) VALUES(?1, ?2)"
                    " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    [ST_META_DEL] = "DELETE FROM meta WHERE key = ?1",
};

typedef struct {
    void (*cb)(void *arg, int status);
    void *arg;
} waiter_t;

struct mqr_store {
    uv_prepare_t prepare; /* data = the store */
    sqlite3 *db;
    char *path;
    char *last_error; /* NULL = none */
    bool in_txn;
    bool armed; /* prepare handle ref'd: something waits for a commit point */
    bool closing;
    int batch_error; /* SQLite dropped this turn's transaction before its commit */
    waiter_t *waiters;
    size_t nwaiters, cap;
    mqr_store_stats_t stats;
    sqlite3_stmt *st[ST_COUNT_];
};

/* ---- error text ------------------------------------------------------- */

static void set_error(mqr_store_t *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *text = mqr__vstrfmt(fmt, ap);
    va_end(ap);
    free(s->last_error);
    s->last_error = text;
}

/* Records what failed, in SQLite's words, and returns MQR_ESTORE. */
static int sql_fail(mqr_store_t *s, const char *what)
{
    set_error(s, "store %s: %s: %s (SQLite code %d)", s->path, what, sqlite3_errmsg(s->db),
              sqlite3_extended_errcode(s->db));
    return MQR_ESTORE;
}

static void give_errmsg(char **errmsg, const char *text)
{
    if (errmsg) *errmsg = strdup(text ? text : "out of memory");
}

const char *mqr__store_last_error(const mqr_store_t *s)
{
    if (!s->last_error) return "";
    return s->last_error;
}

void mqr__store_stats(const mqr_store_t *s, mqr_store_stats_t *out)
{
    *out = s->stats;
}

/* ---- schema ----------------------------------------------------------- */

const mqr_store_migration_t *mqr__store_migrations(size_t *count)
{
    *count = (size_t)LATEST_VERSION;
    return migrations;
}

static const char *db_name(sqlite3 *db)
{
    const char *name = sqlite3_db_filename(db, "main");
    return name && *name ? name : ":memory:";
}

static int read_version(sqlite3 *db, int *version)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            *version = sqlite3_column_int(st, 0);
            rc = SQLITE_OK;
        }
    }
    sqlite3_finalize(st);
    return rc;
}

/* Text for a migration failure; the caller frees it. */
static char *migrate_error(sqlite3 *db, const char *what, int version)
{
    return mqr__strfmt("store %s: %s (schema version %d): %s (SQLite code %d)", db_name(db), what,
                       version, sqlite3_errmsg(db), sqlite3_extended_errcode(db));
}

static char *newer_error(sqlite3 *db, int version)
{
    return mqr__strfmt("store %s: schema version %d is newer than this program knows (%d); "
                       "use a newer mqrouter or another file",
                       db_name(db), version, LATEST_VERSION);
}

/* One step, one transaction: either the schema and its version number move
 * together or neither does. The version is read again under the write lock
 * so two processes opening the same old file cannot both run a step. */
static int migrate_step(sqlite3 *db, int target, int *cur, char **text)
{
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        *text = migrate_error(db, "cannot start migration", *cur);
        return MQR_ESTORE;
    }
    int v = 0;
    if (read_version(db, &v) != SQLITE_OK) {
        *text = migrate_error(db, "cannot read schema version", *cur);
        goto rollback;
    }
    if (v > LATEST_VERSION) {
        *text = newer_error(db, v);
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return MQR_ESCHEMA;
    }
    if (v < target) {
        const mqr_store_migration_t *m = &migrations[v];
        assert(m->version == v + 1);
        if (sqlite3_exec(db, m->sql, NULL, NULL, NULL) != SQLITE_OK) {
            *text = migrate_error(db, "migration failed", m->version);
            goto rollback;
        }
        char bump[48];
        snprintf(bump, sizeof bump, "PRAGMA user_version = %d", m->version);
        if (sqlite3_exec(db, bump, NULL, NULL, NULL) != SQLITE_OK) {
            *text = migrate_error(db, "cannot record schema version", m->version);
            goto rollback;
        }
        v = m->version;
    }
    if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        *text = migrate_error(db, "cannot commit migration", v);
        goto rollback;
    }
    *cur = v;
    return 0;

rollback:
    if (!sqlite3_get_autocommit(db)) sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return MQR_ESTORE;
}

/* Like mqr__store_migrate() but hands back the error text as is. */
static int migrate(sqlite3 *db, int target, char **text)
{
    *text = NULL;
    if (target < 0 || target > LATEST_VERSION) return MQR_EINVAL;
    int cur = 0;
    if (read_version(db, &cur) != SQLITE_OK) {
        *text = migrate_error(db, "cannot read schema version", 0);
        return MQR_ESTORE;
    }
    if (cur > LATEST_VERSION) {
        *text = newer_error(db, cur);
        return MQR_ESCHEMA;
    }
    while (cur < target) {
        int err = migrate_step(db, target, &cur, text);
        if (err) return err;
    }
    return 0;
}

int mqr__store_migrate(sqlite3 *db, int target, char **errmsg)
{
    if (errmsg) *errmsg = NULL;
    if (!db) return MQR_EINVAL;
    char *text = NULL;
    int err = migrate(db, target, &text);
    if (err == MQR_EINVAL && !text) {
        if (errmsg) *errmsg = strdup("store: migration target out of range");
        return err;
    }
    if (errmsg)
        *errmsg = text;
    else
        free(text);
    return err;
}

/* ---- group commit ----------------------------------------------------- */

static void arm(mqr_store_t *s)
{
    if (s->armed || s->closing) return;
    uv_ref((uv_handle_t *)&s->prepare);
    s->armed = true;
}

static void disarm_if_idle(mqr_store_t *s)
{
    if (!s->armed || s->in_txn || s->nwaiters || s->batch_error) return;
    uv_unref((uv_handle_t *)&s->prepare);
    s->armed = false;
}

static int step_done(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc;
}

static void fire_waiters(mqr_store_t *s, int status)
{
    if (!s->nwaiters) return;
    /* Detach first: a callback may register the next waiter or flush. */
    waiter_t *w = s->waiters;
    size_t n = s->nwaiters, cap = s->cap;
    s->waiters = NULL;
    s->nwaiters = s->cap = 0;
    for (size_t i = 0; i < n; i++)
        w[i].cb(w[i].arg, status);
    if (!s->waiters) {
        s->waiters = w;
        s->cap = cap;
    } else {
        free(w);
    }
}

/* The one place a transaction ends. Whatever happens, the transaction is
 * closed afterwards and every waiter learns the outcome. */
static int commit_point(mqr_store_t *s)
{
    int status = 0;
    if (s->in_txn) {
        s->in_txn = false;
        if (step_done(s->st[ST_COMMIT]) != SQLITE_DONE) {
            status = sql_fail(s, "commit failed, this turn's writes are lost");
            /* SQLite may leave the transaction open after a failed COMMIT;
             * retrying would reorder it against the next turn's writes. */
            if (!sqlite3_get_autocommit(s->db)) step_done(s->st[ST_ROLLBACK]);
        }
    }
    if (s->batch_error) {
        if (!status) status = s->batch_error;
        s->batch_error = 0;
    }
    if (status) s->stats.commit_failures++;
    fire_waiters(s, status);
    disarm_if_idle(s);
    return status;
}

static void on_prepare(uv_prepare_t *h)
{
    mqr_store_t *s = h->data;
    if (s->in_txn || s->nwaiters || s->batch_error) commit_point(s);
}

static int on_commit_hook(void *arg)
{
    mqr_store_t *s = arg;
    s->stats.commits++;
    return 0; /* 0 lets the commit go ahead */
}

int mqr__store_flush(mqr_store_t *s)
{
    if (!s) return MQR_EINVAL;
    if (s->closing) return MQR_ECLOSED;
    return commit_point(s);
}

int mqr__store_after_commit(mqr_store_t *s, void (*cb)(void *arg, int status), void *arg)
{
    if (!s || !cb) return MQR_EINVAL;
    if (s->closing) return MQR_ECLOSED;
    if (s->nwaiters == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        waiter_t *w = realloc(s->waiters, cap * sizeof *w);
        if (!w) return MQR_ENOMEM;
        s->waiters = w;
        s->cap = cap;
    }
    s->waiters[s->nwaiters++] = (waiter_t){cb, arg};
    arm(s);
    return 0;
}

/* Runs one bound write statement inside the turn's transaction, then drops
 * the bindings (they may point at the caller's buffers). */
static int run_write(mqr_store_t *s, sqlite3_stmt *st, const char *what)
{
    int err = 0;
    if (!s->in_txn) {
        if (step_done(s->st[ST_BEGIN]) != SQLITE_DONE) {
            err = sql_fail(s, "cannot begin transaction");
            goto out;
        }
        s->in_txn = true;
        arm(s);
    }
    if (sqlite3_step(st) == SQLITE_DONE)
        s->stats.writes++;
    else
        err = sql_fail(s, what);
    if (s->in_txn && sqlite3_get_autocommit(s->db)) {
        /* On I/O, full-disk and out-of-memory errors SQLite rolls back the
         * whole transaction, earlier writes of this turn included: their
         * waiters must hear about it at the commit point. */
        s->in_txn = false;
        s->batch_error = MQR_ESTORE;
    }
out:
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return err;
}

static int bind_fail(mqr_store_t *s, sqlite3_stmt *st, const char *what)
{
    int err = sql_fail(s, what);
    sqlite3_clear_bindings(st);
    return err;
}

sqlite3 *mqr__store_db(mqr_store_t *s)
{
    return s && !s->closing ? s->db : NULL;
}

sqlite3_stmt *mqr__store_prepare(mqr_store_t *s, const char *sql)
{
    sqlite3 *db = mqr__store_db(s);
    sqlite3_stmt *st = NULL;
    if (!db || sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        sqlite3_finalize(st);
        return NULL;
    }
    return st;
}

int mqr__store_prepare_error(mqr_store_t *s)
{
    return mqr__store_db(s) ? MQR_ESTORE : MQR_ECLOSED;
}

int mqr__store_write(mqr_store_t *s, sqlite3_stmt *st, const char *what)
{
    if (!s || !st) return MQR_EINVAL;
    if (s->closing) {
        sqlite3_clear_bindings(st);
        return MQR_ECLOSED;
    }
    return run_write(s, st, what);
}

int mqr__store_fail(mqr_store_t *s, sqlite3_stmt *st, const char *what)
{
    if (!st) return sql_fail(s, what);
    return bind_fail(s, st, what);
}

sqlite3_stmt *mqr__store_stmt(mqr_store_t *s, int which)
{
    return s->st[which];
}

/* ---- meta ------------------------------------------------------------- */

int mqr__store_meta_set(mqr_store_t *s, const char *key, const char *value)
{
    if (!s || !key) return MQR_EINVAL;
    if (s->closing) return MQR_ECLOSED;
    sqlite3_stmt *st = s->st[value ? ST_META_PUT : ST_META_DEL];
    int rc = sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK && value) rc = sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
    if (rc != SQLITE_OK) return bind_fail(s, st, "cannot bind meta value");
    return run_write(s, st, "cannot write meta value");
}

int mqr__store_meta_get(mqr_store_t *s, const char *key, char **value)
{
    if (!s || !key || !value) return MQR_EINVAL;
    if (s->closing) return MQR_ECLOSED;
    *value = NULL;
    sqlite3_stmt *st = s->st[ST_META_GET];
    if (sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC) != SQLITE_OK)
        return bind_fail(s, st, "cannot bind meta key");
    int err = MQR_ENOENT;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const unsigned char *text = sqlite3_column_text(st, 0);
        if (text) {
            size_t n = (size_t)sqlite3_column_bytes(st, 0);
            *value = malloc(n + 1);
            if (*value) {
                memcpy(*value, text, n + 1);
                err = 0;
            } else {
                err = MQR_ENOMEM;
            }
        }
    } else if (rc != SQLITE_DONE) {
        err = sql_fail(s, "cannot read meta value");
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return err;
}

/* ---- open and close --------------------------------------------------- */

void mqr__store_options_init(mqr_store_options_t *opts)
{
    opts->synchronous = MQR_STORE_SYNC_FULL;
    opts->busy_timeout_ms = DEFAULT_BUSY_TIMEOUT_MS;
}

/* mkdir -p of path's directory part. */
static int make_parents(mqr_store_t *s)
{
    char *dir = strdup(s->path);
    if (!dir) return MQR_ENOMEM;
    char *slash = strrchr(dir, '/');
    int err = 0;
    if (slash && slash != dir) {
        *slash = '\0';
        for (char *p = dir + 1; !err; p++) {
            bool end = *p == '\0';
            if (*p != '/' && !end) continue;
            *p = '\0';
            if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
                set_error(s, "store %s: cannot create directory %s: %s", s->path, dir,
                          strerror(errno));
                err = MQR_ESTORE;
            }
            if (end) break;
            *p = '/';
        }
    }
    free(dir);
    return err;
}

static int pragma_text(mqr_store_t *s, const char *sql, char *out, size_t outlen)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && out) {
        const unsigned char *t = sqlite3_column_text(st, 0);
        snprintf(out, outlen, "%s", t ? (const char *)t : "");
    }
    if (rc == SQLITE_ROW) rc = SQLITE_DONE;
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : sql_fail(s, sql);
}

/* Everything after the file is open and before the loop handle exists. */
static int setup(mqr_store_t *s, const mqr_store_options_t *opts, bool memory)
{
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_timeout(s->db, (int)opts->busy_timeout_ms);

    /* Refuse a newer file before anything below writes to it: switching the
     * journal mode alone rewrites the header. */
    int version = 0;
    if (read_version(s->db, &version) != SQLITE_OK)
        return sql_fail(s, "cannot read schema version");
    if (version > LATEST_VERSION) {
        free(s->last_error);
        s->last_error = newer_error(s->db, version);
        return MQR_ESCHEMA;
    }

    char mode[16] = "";
    int err = pragma_text(s, "PRAGMA journal_mode = WAL", mode, sizeof mode);
    if (err) return err;
    if (strcmp(mode, memory ? "memory" : "wal") != 0) {
        set_error(s, "store %s: cannot switch to WAL mode (journal mode is %s)", s->path, mode);
        return MQR_ESTORE;
    }
    err = pragma_text(s,
                      opts->synchronous == MQR_STORE_SYNC_NORMAL ? "PRAGMA synchronous = NORMAL"
                                                                 : "PRAGMA synchronous = FULL",
                      NULL, 0);
    if (!err) err = pragma_text(s, "PRAGMA foreign_keys = ON", NULL, 0);
    if (err) return err;

    char *text = NULL;
    err = migrate(s->db, LATEST_VERSION, &text);
    if (err) {
        free(s->last_error);
        s->last_error = text;
        return err;
    }

    for (int i = 0; i < ST_COUNT_; i++) {
        if (sqlite3_prepare_v3(s->db, statement_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i],
                               NULL) != SQLITE_OK)
            return sql_fail(s, "cannot prepare statement");
    }
    sqlite3_commit_hook(s->db, on_commit_hook, s);
    return 0;
}

static void free_store(mqr_store_t *s)
{
    for (int i = 0; i < ST_COUNT_; i++)
        sqlite3_finalize(s->st[i]);
    if (s->db) sqlite3_close_v2(s->db);
    free(s->waiters);
    free(s->last_error);
    free(s->path);
    free(s);
}

int mqr__store_open(mqr_store_t **out, uv_loop_t *loop, const char *path,
                    const mqr_store_options_t *opts, char **errmsg)
{
    if (errmsg) *errmsg = NULL;
    if (out) *out = NULL;
    if (!out || !loop || !path || !*path) {
        give_errmsg(errmsg, "store: missing loop or path");
        return MQR_EINVAL;
    }
    mqr_store_options_t defaults;
    mqr__store_options_init(&defaults);
    if (!opts) opts = &defaults;
    if (opts->busy_timeout_ms == 0 || opts->busy_timeout_ms > INT32_MAX) {
        defaults.synchronous = opts->synchronous;
        opts = &defaults;
    }

    mqr_store_t *s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(path))) {
        free(s);
        give_errmsg(errmsg, NULL);
        return MQR_ENOMEM;
    }
    bool memory = strcmp(path, ":memory:") == 0;
    int err = memory ? 0 : make_parents(s);
    if (!err) {
        /* NOMUTEX: only the loop thread uses this connection. */
        int rc = sqlite3_open_v2(
            path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
        if (!s->db)
            err = MQR_ENOMEM;
        else if (rc != SQLITE_OK)
            err = sql_fail(s, "cannot open database");
        else
            err = setup(s, opts, memory);
    }
    if (err) {
        give_errmsg(errmsg, err == MQR_ENOMEM ? NULL : mqr__store_last_error(s));
        free_store(s);
        return err;
    }

    uv_prepare_init(loop, &s->prepare);
    s->prepare.data = s;
    uv_prepare_start(&s->prepare, on_prepare);
    uv_unref((uv_handle_t *)&s->prepare);
    *out = s;
    return 0;
}

static void on_close(uv_handle_t *h)
{
    free_store(h->data);
}

void mqr__store_close(mqr_store_t *s)
{
    if (!s || s->closing) return;
    s->closing = true; /* from here on waiters and writes are refused */
    commit_point(s);
    for (int i = 0; i < ST_COUNT_; i++) {
        sqlite3_finalize(s->st[i]);
        s->st[i] = NULL;
    }
    sqlite3_close_v2(s->db);
    s->db = NULL;
    uv_prepare_stop(&s->prepare);
    uv_close((uv_handle_t *)&s->prepare, on_close);
}
