/*
 * test_store.c — the store against real SQLite files in a fresh temporary
 * directory, on a real libuv loop.
 *
 * Durability claims are checked from outside the store: a second SQLite
 * connection reads what is committed, a fault-injecting VFS makes a commit
 * fail, and a forked child is killed with SIGKILL after it was told its
 * writes were durable. Tests must not share files, and each ends with
 * uv_loop_close() == 0.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmpdir[64];

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/mqr-store-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    return nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* A file name for one test; static buffers rotate so two can coexist. */
static const char *tmp_path(const char *name)
{
    static char bufs[4][256];
    static int next;
    char *p = bufs[next++ % 4];
    snprintf(p, sizeof bufs[0], "%s/%s", tmpdir, name);
    return p;
}

static bool file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static unsigned char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* ---- an independent connection: what is really committed -------------- */

static sqlite3 *peer_open(const char *path)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL),
                     SQLITE_OK);
    return db;
}

static long long peer_int(const char *path, const char *sql)
{
    sqlite3 *db = peer_open(path);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    long long v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static void peer_text(const char *path, const char *sql, char *out, size_t outlen)
{
    sqlite3 *db = peer_open(path);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    snprintf(out, outlen, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static void peer_exec(const char *path, const char *sql)
{
    sqlite3 *db = peer_open(path);
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    if (rc != SQLITE_OK) fail_msg("peer_exec: %s", err);
    sqlite3_close(db);
}

static long long committed_rows(const char *path)
{
    return peer_int(path, "SELECT count(*) FROM retained");
}

/* ---- helpers ---------------------------------------------------------- */

static mqr_msg_t *msg_make(const char *topic, const void *payload, size_t len, int qos)
{
    mqr_msg_init_t in = {
        .topic = topic,
        .topic_len = strlen(topic),
        .payload = payload,
        .payload_len = len,
        .qos = qos,
        .retain = true,
        .origin = MQR_ORIGIN_C,
    };
    mqr_msg_t *m = mqr__msg_new(&in);
    assert_non_null(m);
    return m;
}

static void put(mqr_store_t *s, const char *topic, const char *payload)
{
    mqr_msg_t *m = msg_make(topic, payload, strlen(payload), 1);
    assert_int_equal(mqr__store_retain_set(s, m), 0);
    mqr_msg_unref(m);
}

static mqr_store_t *store_open(uv_loop_t *loop, const char *path)
{
    mqr_store_t *s = NULL;
    char *errmsg = NULL;
    int err = mqr__store_open(&s, loop, path, NULL, &errmsg);
    if (err) fail_msg("open %s: %s: %s", path, mqr_err_name(err), errmsg);
    assert_null(errmsg);
    assert_non_null(s);
    return s;
}

/* Closes the store and lets the loop release its handle. */
static void store_close(uv_loop_t *loop, mqr_store_t *s)
{
    mqr__store_close(s);
    assert_int_equal(uv_run(loop, UV_RUN_DEFAULT), 0);
}

typedef struct {
    mqr_msg_t *msgs[256];
    size_t n;
    int stop_after; /* 0 = never */
} bag_t;

static int collect(void *arg, mqr_msg_t *m)
{
    bag_t *b = arg;
    assert_true(b->n < 256);
    b->msgs[b->n++] = m;
    return b->stop_after && (int)b->n == b->stop_after ? 7 : 0;
}

static void bag_free(bag_t *b)
{
    for (size_t i = 0; i < b->n; i++)
        mqr_msg_unref(b->msgs[i]);
    b->n = 0;
}

static uint64_t stat_commits(mqr_store_t *s)
{
    mqr_store_stats_t st;
    mqr__store_stats(s, &st);
    return st.commits;
}

/* ---- open, reopen, retained round trip -------------------------------- */

static void test_reopen_keeps_retained(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    /* Parent directories do not exist yet: open must create them. */
    const char *path = tmp_path("nested/deeper/mqrouter.db");
    assert_false(file_exists(tmp_path("nested")));
    mqr_store_t *s = store_open(&loop, path);

    static const unsigned char bin[] = {'a', 0, 'b', 0, 0, 0xff, 'c'};
    static const uint8_t props[] = {0x01, 0x00, 0x03, 0x00, 0x00, 0x02, 0xfe};
    mqr_msg_init_t in = {
        .topic = "dev/1/state",
        .topic_len = 11,
        .payload = bin,
        .payload_len = sizeof bin,
        .props = props,
        .props_len = sizeof props,
        .qos = 2,
        .retain = true,
        .origin = MQR_ORIGIN_LISTENER,
        .origin_name = "client-a",
        .expiry_s = 86400,
        .created_ms = mqr__now_ms() - 5000,
    };
    mqr_msg_t *m1 = mqr__msg_new(&in);
    assert_non_null(m1);
    assert_int_equal(mqr__store_retain_set(s, m1), 0);
    put(s, "dev/0/state", "zero");
    put(s, "dev/2/state", "first");
    put(s, "dev/2/state", "second"); /* replaces */

    store_close(&loop, s); /* close commits */
    assert_int_equal(committed_rows(path), 3);

    s = store_open(&loop, path);
    size_t count = 0;
    assert_int_equal(mqr__store_retain_count(s, &count), 0);
    assert_int_equal(count, 3);

    bag_t bag = {0};
    assert_int_equal(mqr__store_retain_load(s, collect, &bag), 0);
    assert_int_equal(bag.n, 3);
    /* topic order */
    assert_string_equal(bag.msgs[0]->topic, "dev/0/state");
    assert_string_equal(bag.msgs[1]->topic, "dev/1/state");
    assert_string_equal(bag.msgs[2]->topic, "dev/2/state");

    mqr_msg_t *r = bag.msgs[1];
    assert_int_equal(r->topic_len, 11);
    assert_int_equal(r->payload_len, sizeof bin);
    assert_memory_equal(r->payload, bin, sizeof bin);
    assert_int_equal(r->props_len, sizeof props);
    assert_memory_equal(r->props, props, sizeof props);
    assert_int_equal(r->qos, 2);
    assert_true(r->retain);
    assert_int_equal(r->origin, MQR_ORIGIN_STORE);
    assert_string_equal(mqr_msg_origin_kind(r), "store");
    assert_int_equal(r->expiry_s, 86400);
    assert_int_equal(r->created_ms, m1->created_ms);

    assert_int_equal(bag.msgs[2]->payload_len, 6);
    assert_memory_equal(bag.msgs[2]->payload, "second", 6);
    assert_int_equal(bag.msgs[0]->props_len, 0);
    assert_int_equal(bag.msgs[0]->qos, 1);
    assert_int_equal(bag.msgs[0]->expiry_s, 0);
    bag_free(&bag);

    /* A callback's non-zero return stops the load and comes back. */
    bag.stop_after = 2;
    assert_int_equal(mqr__store_retain_load(s, collect, &bag), 7);
    assert_int_equal(bag.n, 2);
    bag_free(&bag);

    mqr_msg_unref(m1);
    store_close(&loop, s);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_pragmas(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    const char *path = tmp_path("pragmas.db");
    mqr_store_t *s = store_open(&loop, path);
    char mode[16];
    peer_text(path, "PRAGMA journal_mode", mode, sizeof mode);
    assert_string_equal(mode, "wal");
    store_close(&loop, s);

    /* The in-memory database is usable as a store too. */
    s = store_open(&loop, ":memory:");
    put(s, "a", "1");
    assert_int_equal(mqr__store_flush(s), 0);
    size_t n = 0;
    assert_int_equal(mqr__store_retain_count(s, &n), 0);
    assert_int_equal(n, 1);
    store_close(&loop, s);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_empty_payload_deletes(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    const char *path = tmp_path("delete.db");
    mqr_store_t *s = store_open(&loop, path);
    put(s, "a/b", "kept");
    put(s, "a/c", "gone");
    put(s, "a/d", "deleted directly");
    assert_int_equal(mqr__store_flush(s), 0);
    assert_int_equal(committed_rows(path), 3);

    mqr_msg_t *empty = msg_make("a/c", "", 0, 0);
    assert_int_equal(mqr__store_retain_set(s, empty), 0);
    mqr_msg_unref(empty);
    assert_int_equal(mqr__store_retain_delete(s, "a/d", 3), 0);
    assert_int_equal(mqr__store_retain_delete(s, "no/such", 7), 0);
    size_t n = 0;
    assert_int_equal(mqr__store_retain_count(s, &n), 0);
    assert_int_equal(n, 1);
    store_close(&loop, s);

    s = store_open(&loop, path);
    bag_t bag = {0};
    assert_int_equal(mqr__store_retain_load(s, collect, &bag), 0);
    assert_int_equal(bag.n, 1);
    assert_string_equal(bag.msgs[0]->topic, "a/b");
    bag_free(&bag);

    assert_int_equal(mqr__store_retain_set(s, NULL), MQR_EINVAL);
    assert_int_equal(mqr__store_retain_delete(s, "", 0), MQR_EINVAL);
    store_close(&loop, s);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_expired_skipped_and_deleted(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    const char *path = tmp_path("expiry.db");
    mqr_store_t *s = store_open(&loop, path);
    uint64_t now = mqr__now_ms();
    mqr_msg_init_t in = {.topic = "old",
                         .topic_len = 3,
                         .payload = "x",
                         .payload_len = 1,
                         .expiry_s = 5,
                         .created_ms = now - 10000};
    mqr_msg_t *old = mqr__msg_new(&in);
    in.topic = "new";
    in.created_ms = now - 1000;
    mqr_msg_t *fresh = mqr__msg_new(&in);
    assert_int_equal(mqr__store_retain_set(s, old), 0);
    assert_int_equal(mqr__store_retain_set(s, fresh), 0);
    put(s, "forever", "y");
    mqr_msg_unref(old);
    mqr_msg_unref(fresh);
    assert_int_equal(mqr__store_flush(s), 0);
    assert_int_equal(committed_rows(path), 3);

    size_t n = 0;
    assert_int_equal(mqr__store_retain_count(s, &n), 0);
    assert_int_equal(n, 2);
    bag_t bag = {0};
    assert_int_equal(mqr__store_retain_load(s, collect, &bag), 0);
    assert_int_equal(bag.n, 2);
    assert_string_equal(bag.msgs[0]->topic, "forever");
    assert_string_equal(bag.msgs[1]->topic, "new");
    assert_int_equal(bag.msgs[1]->expiry_s, 5);
    bag_free(&bag);
    /* the expired row is deleted, through the normal group commit */
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(committed_rows(path), 2);
    assert_int_equal(peer_int(path, "SELECT count(*) FROM retained WHERE topic = 'old'"), 0);
    store_close(&loop, s);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_meta(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    const char *path = tmp_path("meta.db");
    mqr_store_t *s = store_open(&loop, path);
    char *v = (char *)"untouched";
    assert_int_equal(mqr__store_meta_get(s, "instance_id", &v), MQR_ENOENT);
    assert_null(v);
    assert_int_equal(mqr__store_meta_set(s, "instance_id", "a1b2"), 0);
    assert_int_equal(mqr__store_meta_set(s, "instance_id", "c3d4"), 0);
    assert_int_equal(mqr__store_meta_set(s, "other", "x"), 0);
    assert_int_equal(mqr__store_meta_set(s, "other", NULL), 0);
    assert_int_equal(mqr__store_meta_get(s, "instance_id", &v), 0);
    assert_string_equal(v, "c3d4");
    free(v);
    store_close(&loop, s);

    s = store_open(&loop, path);
    assert_int_equal(mqr__store_meta_get(s, "instance_id", &v), 0);
    assert_string_equal(v, "c3d4");
    free(v);
    assert_int_equal(mqr__store_meta_get(s, "other", &v), MQR_ENOENT);
    store_close(&loop, s);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- schema and migrations -------------------------------------------- */

static void test_migrate_empty_file(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    const char *path = tmp_path("empty.db");
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fclose(f);

    size_t latest = 0;
    mqr__store_migrations(&latest);
    assert_true(latest >= 1);
    mqr_store_t *s = store_open(&loop, path);
    assert_int_equal(peer_int(path, "PRAGMA user_version"), (long long)latest);
    assert_int_equal(peer_int(path, "SELECT count(*) FROM sqlite_schema WHERE type = 'table'"
                                    " AND name IN ('retained', 'meta')"),
                     2);
    store_close(&loop, s);

    /* Reopening an up-to-date file runs no migration: no commit at open. */
    s = store_open(&loop, path);
    assert_int_equal(stat_commits(s), 0);
    store_close(&loop, s);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void expect_columns(sqlite3 *db, const char *table, const char *const *names, int n)
{
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA table_info(%s)", table);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    int i = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        assert_true(i < n);
        assert_string_equal((const char *)sqlite3_column_text(st, 1), names[i]);
        i++;
    }
    assert_int_equal(i, n);
    sqlite3_finalize(st);
}

static int db_version(sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return v;
}

static void test_migrate_step_by_step(void **state)
{
    (void)state;
    const char *path = tmp_path("steps.db");
    sqlite3 *db = peer_open(path);
    size_t n = 0;
    const mqr_store_migration_t *steps = mqr__store_migrations(&n);
    assert_int_equal(db_version(db), 0);
    char *errmsg = NULL;
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(steps[i].version, (int)i + 1);
        assert_non_null(steps[i].sql);
        assert_int_equal(mqr__store_migrate(db, (int)i + 1, &errmsg), 0);
        assert_null(errmsg);
        assert_int_equal(db_version(db), (int)i + 1);
        if (i == 0) {
            static const char *const retained[] = {"topic", "payload",    "qos",
                                                   "props", "created_ms", "expiry_s"};
            static const char *const meta[] = {"key", "value"};
            expect_columns(db, "retained", retained, 6);
            expect_columns(db, "meta", meta, 2);
        }
    }
    /* Going back or past the end is not a migration. */
    assert_int_equal(mqr__store_migrate(db, 0, NULL), 0);
    assert_int_equal(db_version(db), (int)n);
    assert_int_equal(mqr__store_migrate(db, (int)n + 1, &errmsg), MQR_EINVAL);
    assert_non_null(errmsg);
    free(errmsg);
    sqlite3_close(db);

    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    mqr_store_t *s = store_open(&loop, path);
    put(s, "x", "y");
    store_close(&loop, s);
    assert_int_equal(committed_rows(path), 1);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_open_handmade_v1(void **state)
{
    (void)state;
    const char *path = tmp_path("v1.db");
    /* Exactly the version 1 layout, written without the store. */
    peer_exec(path, "CREATE TABLE retained(topic TEXT PRIMARY KEY, payload BLOB, qos INT,"
                    " props BLOB, created_ms INT, expiry_s INT);"
                    "CREATE TABLE meta(key TEXT PRIMARY KEY, value);"
                    "INSERT INTO retained VALUES('old/topic', x'00ff00', 1, x'0100', 1000, 0);"
                    "INSERT INTO meta VALUES('instance_id', 'from-v1');"
                    "PRAGMA user_version = 1;");
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    mqr_store_t *s = store_open(&loop, path);
    size_t latest = 0;
    mqr__store_migrations(&latest);
    assert_int_equal(peer_int(path, "PRAGMA user_version"), (long long)latest);

    bag_t bag = {0};
    assert_int_equal(mqr__store_retain_load(s, collect, &bag), 0);
    assert_int_equal(bag.n, 1);
    assert_string_equal(bag.msgs[0]->topic, "old/topic");
    assert_int_equal(bag.msgs[0]->payload_len, 3);
    assert_memory_equal(bag.msgs[0]->payload, "\0\xff\0", 3);
    assert_int_equal(bag.msgs[0]->props_len, 2);
    assert_int_equal(bag.msgs[0]->created_ms, 1000);
    bag_free(&bag);
    char *v = NULL;
    assert_int_equal(mqr__store_meta_get(s, "instance_id", &v), 0);
    assert_string_equal(v, "from-v1");
    free(v);
    store_close(&loop, s);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_newer_schema_refused(void **state)
{
    (void)state;
    const char *path = tmp_path("future.db");
    peer_exec(path, "CREATE TABLE future(x); INSERT INTO future VALUES(42);"
                    "PRAGMA user_version = 99;");
    size_t before_len = 0;
    unsigned char *before = read_file(path, &before_len);

    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    mqr_store_t *s = (mqr_store_t *)&loop; /* must be overwritten */
    char *errmsg = NULL;
    assert_int_equal(mqr__store_open(&s, &loop, path, NULL, &errmsg), MQR_ESCHEMA);
    assert_null(s);
    assert_non_null(errmsg);
    assert_non_null(strstr(errmsg, path));
    assert_non_null(strstr(errmsg, "99"));
    free(errmsg);

    size_t after_len = 0;
    unsigned char *after = read_file(path, &after_len);
    assert_int_equal(after_len, before_len);
    assert_memory_equal(after, before, before_len);
    free(before);
    free(after);
    char side[300];
    snprintf(side, sizeof side, "%s-wal", path);
    assert_false(file_exists(side));
    assert_int_equal(peer_int(path, "PRAGMA user_version"), 99);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_open_errors(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    mqr_store_t *s = NULL;
    char *errmsg = NULL;

    const char *junk = tmp_path("junk.db");
    FILE *f = fopen(junk, "wb");
    assert_non_null(f);
    for (int i = 0; i < 200; i++)
        fputs("this is not an SQLite database. ", f);
    fclose(f);
    assert_int_equal(mqr__store_open(&s, &loop, junk, NULL, &errmsg), MQR_ESTORE);
    assert_null(s);
    assert_non_null(errmsg);
    assert_non_null(strstr(errmsg, junk));
    assert_non_null(strstr(errmsg, "not a database"));
    free(errmsg);

    /* A parent "directory" that is a regular file. */
    char below[300];
    snprintf(below, sizeof below, "%s/sub/x.db", junk);
    assert_int_equal(mqr__store_open(&s, &loop, below, NULL, &errmsg), MQR_ESTORE);
    assert_non_null(errmsg);
    assert_non_null(strstr(errmsg, below));
    free(errmsg);

    assert_int_equal(mqr__store_open(&s, &loop, "", NULL, &errmsg), MQR_EINVAL);
    free(errmsg);
    assert_int_equal(mqr__store_open(&s, &loop, junk, NULL, NULL), MQR_ESTORE);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- group commit and the durability barrier -------------------------- */

typedef struct {
    mqr_store_t *s;
    const char *path;
    uint64_t commits_at_start;
    int turns;
    int fired[8];
    int statuses[8];
    int nfired;
    uint64_t commits_seen[8];
    long long rows_seen[8];
} gc_t;

static void on_durable(void *arg, int status)
{
    gc_t *g = arg;
    assert_true(g->nfired < 8);
    g->statuses[g->nfired] = status;
    g->commits_seen[g->nfired] = stat_commits(g->s);
    g->rows_seen[g->nfired] = committed_rows(g->path);
    g->nfired++;
}

static void one_turn_writes(uv_timer_t *t)
{
    gc_t *g = t->data;
    char topic[32];
    for (int i = 0; i < 10; i++) {
        snprintf(topic, sizeof topic, "gc/%d", i);
        put(g->s, topic, "payload");
    }
    /* Ten writes, all still in one open transaction: nobody else sees them. */
    assert_int_equal(stat_commits(g->s), g->commits_at_start);
    assert_int_equal(committed_rows(g->path), 0);
    assert_int_equal(mqr__store_after_commit(g->s, on_durable, g), 0);
    assert_int_equal(g->nfired, 0);
    uv_close((uv_handle_t *)t, NULL);
}

static void test_group_commit_one_transaction(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    const char *path = tmp_path("group.db");
    gc_t g = {.path = path};
    g.s = store_open(&loop, path);
    g.commits_at_start = stat_commits(g.s);

    /* An idle store does not keep the loop alive. */
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);

    uv_timer_t t;
    uv_timer_init(&loop, &t);
    t.data = &g;
    uv_timer_start(&t, one_turn_writes, 0, 0);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(g.nfired, 1);
    assert_int_equal(g.statuses[0], 0);
    assert_int_equal(g.commits_seen[0], g.commits_at_start + 1);
    assert_int_equal(g.rows_seen[0], 10);
    mqr_store_stats_t st;
    mqr__store_stats(g.s, &st);
    assert_int_equal(st.commits, g.commits_at_start + 1);
    assert_int_equal(st.writes, 10);
    assert_int_equal(st.commit_failures, 0);

    /* Writes made outside uv_run are committed by the next uv_run, even
     * with no other handle on the loop. */
    put(g.s, "outside", "x");
    assert_int_equal(committed_rows(path), 10);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(committed_rows(path), 11);
    assert_int_equal(stat_commits(g.s), g.commits_at_start + 2);

    store_close(&loop, g.s);
    assert_int_equal(uv_loop_close(&loop), 0);
}

typedef struct {
    mqr_store_t *s;
    int ticks;
} tick_t;

static void tick_writes(uv_timer_t *t)
{
    tick_t *k = t->data;
    char topic[32];
    for (int i = 0; i < 3; i++) {
        snprintf(topic, sizeof topic, "tick/%d/%d", k->ticks, i);
        put(k->s, topic, "v");
    }
    if (++k->ticks == 4) uv_close((uv_handle_t *)t, NULL);
}

static void test_group_commit_per_turn(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    const char *path = tmp_path("turns.db");
    tick_t k = {.s = store_open(&loop, path)};
    uint64_t c0 = stat_commits(k.s);
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    t.data = &k;
    uv_timer_start(&t, tick_writes, 1, 1);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    /* four turns of three writes: four transactions, not twelve */
    assert_int_equal(stat_commits(k.s), c0 + 4);
    assert_int_equal(committed_rows(path), 12);
    store_close(&loop, k.s);
    assert_int_equal(uv_loop_close(&loop), 0);
}

typedef struct {
    mqr_store_t *s;
    const char *path;
    int order[8];
    int status[8];
    long long rows[8];
    int n;
} ord_t;

typedef struct {
    ord_t *o;
    int id;
} ord_arg_t;

static void on_ordered(void *arg, int status)
{
    ord_arg_t *a = arg;
    ord_t *o = a->o;
    o->order[o->n] = a->id;
    o->status[o->n] = status;
    o->rows[o->n] = o->path ? committed_rows(o->path) : -1;
    o->n++;
}

static void test_after_commit_order(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    const char *path = tmp_path("order.db");
    ord_t o = {.path = path};
    o.s = store_open(&loop, path);
    ord_arg_t a[4] = {{&o, 1}, {&o, 2}, {&o, 3}, {&o, 4}};

    /* With nothing pending the callback still waits for a commit point. */
    assert_int_equal(mqr__store_after_commit(o.s, on_ordered, &a[0]), 0);
    assert_int_equal(o.n, 0);
    put(o.s, "o/1", "1");
    assert_int_equal(mqr__store_after_commit(o.s, on_ordered, &a[1]), 0);
    put(o.s, "o/2", "2");
    assert_int_equal(mqr__store_after_commit(o.s, on_ordered, &a[2]), 0);
    assert_int_equal(o.n, 0);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(o.n, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(o.order[i], i + 1);
        assert_int_equal(o.status[i], 0);
        assert_int_equal(o.rows[i], 2); /* already committed when called */
    }

    /* Nothing pending, loop run: fires with 0, not synchronously. */
    o.n = 0;
    assert_int_equal(mqr__store_after_commit(o.s, on_ordered, &a[3]), 0);
    assert_int_equal(o.n, 0);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(o.n, 1);
    assert_int_equal(o.status[0], 0);

    /* flush commits now and calls the waiters inside it */
    o.n = 0;
    put(o.s, "o/3", "3");
    assert_int_equal(mqr__store_after_commit(o.s, on_ordered, &a[0]), 0);
    assert_int_equal(mqr__store_flush(o.s), 0);
    assert_int_equal(o.n, 1);
    assert_int_equal(o.rows[0], 3);

    /* close commits and calls the waiters; afterwards none are accepted */
    o.n = 0;
    put(o.s, "o/4", "4");
    assert_int_equal(mqr__store_after_commit(o.s, on_ordered, &a[1]), 0);
    mqr__store_close(o.s);
    assert_int_equal(o.n, 1);
    assert_int_equal(o.status[0], 0);
    assert_int_equal(o.rows[0], 4);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(committed_rows(path), 4);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- fault injection: a VFS whose WAL writes fail on demand ------------ */

typedef struct {
    sqlite3_file base;
    sqlite3_file *real; /* the real VFS's file, right behind this struct */
    int wal;
} shim_file_t;

static sqlite3_vfs *real_vfs;
static sqlite3_vfs shim_vfs;
static int fail_wal_writes;
static int failed_wal_writes;

#define REAL(f) (((shim_file_t *)(f))->real)

static int sh_close(sqlite3_file *f)
{
    return REAL(f)->pMethods->xClose(REAL(f));
}
static int sh_read(sqlite3_file *f, void *b, int n, sqlite3_int64 o)
{
    return REAL(f)->pMethods->xRead(REAL(f), b, n, o);
}
static int sh_write(sqlite3_file *f, const void *b, int n, sqlite3_int64 o)
{
    if (((shim_file_t *)f)->wal && fail_wal_writes) {
        failed_wal_writes++;
        return SQLITE_IOERR_WRITE;
    }
    return REAL(f)->pMethods->xWrite(REAL(f), b, n, o);
}
static int sh_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    return REAL(f)->pMethods->xTruncate(REAL(f), size);
}
static int sh_sync(sqlite3_file *f, int flags)
{
    return REAL(f)->pMethods->xSync(REAL(f), flags);
}
static int sh_size(sqlite3_file *f, sqlite3_int64 *size)
{
    return REAL(f)->pMethods->xFileSize(REAL(f), size);
}
static int sh_lock(sqlite3_file *f, int l)
{
    return REAL(f)->pMethods->xLock(REAL(f), l);
}
static int sh_unlock(sqlite3_file *f, int l)
{
    return REAL(f)->pMethods->xUnlock(REAL(f), l);
}
static int sh_reserved(sqlite3_file *f, int *out)
{
    return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}
static int sh_fcntl(sqlite3_file *f, int op, void *arg)
{
    return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}
static int sh_sector(sqlite3_file *f)
{
    return REAL(f)->pMethods->xSectorSize(REAL(f));
}
static int sh_devchar(sqlite3_file *f)
{
    return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}
static int sh_shmmap(sqlite3_file *f, int pg, int sz, int ext, void volatile **pp)
{
    return REAL(f)->pMethods->xShmMap(REAL(f), pg, sz, ext, pp);
}
static int sh_shmlock(sqlite3_file *f, int off, int n, int flags)
{
    return REAL(f)->pMethods->xShmLock(REAL(f), off, n, flags);
}
static void sh_shmbarrier(sqlite3_file *f)
{
    REAL(f)->pMethods->xShmBarrier(REAL(f));
}
static int sh_shmunmap(sqlite3_file *f, int del)
{
    return REAL(f)->pMethods->xShmUnmap(REAL(f), del);
}
static int sh_fetch(sqlite3_file *f, sqlite3_int64 o, int n, void **pp)
{
    return REAL(f)->pMethods->xFetch(REAL(f), o, n, pp);
}
static int sh_unfetch(sqlite3_file *f, sqlite3_int64 o, void *p)
{
    return REAL(f)->pMethods->xUnfetch(REAL(f), o, p);
}

static const sqlite3_io_methods shim_io = {
    3,          sh_close,      sh_read,     sh_write, sh_truncate, sh_sync,    sh_size,
    sh_lock,    sh_unlock,     sh_reserved, sh_fcntl, sh_sector,   sh_devchar, sh_shmmap,
    sh_shmlock, sh_shmbarrier, sh_shmunmap, sh_fetch, sh_unfetch,
};

static int sh_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *f, int flags,
                   int *outflags)
{
    (void)vfs;
    shim_file_t *sf = (shim_file_t *)f;
    sf->real = (sqlite3_file *)(sf + 1);
    memset(sf->real, 0, (size_t)real_vfs->szOsFile);
    sf->wal = (flags & SQLITE_OPEN_WAL) != 0;
    int rc = real_vfs->xOpen(real_vfs, name, sf->real, flags, outflags);
    sf->base.pMethods = sf->real->pMethods ? &shim_io : NULL;
    return rc;
}

static void shim_install(void)
{
    real_vfs = sqlite3_vfs_find(NULL);
    assert_non_null(real_vfs);
    shim_vfs = *real_vfs; /* the real one ignores which vfs pointer it gets */
    shim_vfs.zName = "mqr-test-faulty";
    shim_vfs.pNext = NULL;
    shim_vfs.szOsFile = (int)sizeof(shim_file_t) + real_vfs->szOsFile;
    shim_vfs.xOpen = sh_open;
    assert_int_equal(sqlite3_vfs_register(&shim_vfs, 1), SQLITE_OK);
}

static void shim_remove(void)
{
    assert_int_equal(sqlite3_vfs_unregister(&shim_vfs), SQLITE_OK);
    assert_ptr_equal(sqlite3_vfs_find(NULL), real_vfs);
}

static void test_commit_failure_reaches_waiters(void **state)
{
    (void)state;
    const char *path = tmp_path("faulty.db");
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    shim_install();
    ord_t o = {.path = NULL};
    o.s = store_open(&loop, path);
    ord_arg_t a[3] = {{&o, 1}, {&o, 2}, {&o, 3}};

    put(o.s, "safe/1", "committed before the fault");
    assert_int_equal(mqr__store_flush(o.s), 0);
    assert_string_equal(mqr__store_last_error(o.s), "");

    fail_wal_writes = 1;
    put(o.s, "lost/1", "a");
    assert_int_equal(mqr__store_after_commit(o.s, on_ordered, &a[0]), 0);
    put(o.s, "lost/2", "b");
    assert_int_equal(mqr__store_after_commit(o.s, on_ordered, &a[1]), 0);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    fail_wal_writes = 0;
    assert_true(failed_wal_writes > 0);

    assert_int_equal(o.n, 2);
    assert_int_equal(o.order[0], 1);
    assert_int_equal(o.order[1], 2);
    assert_int_equal(o.status[0], MQR_ESTORE);
    assert_int_equal(o.status[1], MQR_ESTORE);
    mqr_store_stats_t st;
    mqr__store_stats(o.s, &st);
    assert_int_equal(st.commit_failures, 1);
    const char *text = mqr__store_last_error(o.s);
    assert_non_null(strstr(text, path));
    assert_non_null(strstr(text, "commit"));
    assert_non_null(strstr(text, "I/O"));

    /* The store goes on working once the disk does. */
    o.n = 0;
    put(o.s, "safe/2", "after the fault");
    assert_int_equal(mqr__store_after_commit(o.s, on_ordered, &a[2]), 0);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(o.n, 1);
    assert_int_equal(o.status[0], 0);
    store_close(&loop, o.s);
    shim_remove();

    assert_int_equal(committed_rows(path), 2);
    assert_int_equal(peer_int(path, "SELECT count(*) FROM retained WHERE topic LIKE 'safe/%'"), 2);
    char ok[16];
    peer_text(path, "PRAGMA integrity_check", ok, sizeof ok);
    assert_string_equal(ok, "ok");
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* A write that fails badly enough for SQLite to roll back the whole
 * transaction takes the turn's earlier writes with it: their waiters must
 * hear an error, not 0. A payload larger than the page cache makes SQLite
 * spill pages into the WAL mid-transaction, where the fault hits. */
static void test_rolled_back_turn_reaches_waiters(void **state)
{
    (void)state;
    const char *path = tmp_path("spill.db");
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    shim_install();
    ord_t o = {.path = NULL};
    o.s = store_open(&loop, path);
    ord_arg_t a = {&o, 1};
    put(o.s, "safe", "kept");
    assert_int_equal(mqr__store_flush(o.s), 0);

    put(o.s, "early", "lost with the turn");
    assert_int_equal(mqr__store_after_commit(o.s, on_ordered, &a), 0);
    size_t big_len = 8u << 20;
    char *big = calloc(1, big_len);
    assert_non_null(big);
    mqr_msg_t *m = msg_make("big", big, big_len, 0);
    free(big);
    fail_wal_writes = 1;
    assert_int_equal(mqr__store_retain_set(o.s, m), MQR_ESTORE);
    fail_wal_writes = 0;
    mqr_msg_unref(m);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(o.n, 1);
    assert_int_equal(o.status[0], MQR_ESTORE);

    store_close(&loop, o.s);
    shim_remove();
    assert_int_equal(committed_rows(path), 1);
    assert_int_equal(peer_int(path, "SELECT count(*) FROM retained WHERE topic = 'safe'"), 1);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_write_fails_while_locked(void **state)
{
    (void)state;
    const char *path = tmp_path("locked.db");
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    mqr_store_options_t opts;
    mqr__store_options_init(&opts);
    opts.busy_timeout_ms = 50;
    mqr_store_t *s = NULL;
    assert_int_equal(mqr__store_open(&s, &loop, path, &opts, NULL), 0);
    put(s, "before", "kept");
    assert_int_equal(mqr__store_flush(s), 0);

    /* Another process holds the write lock longer than our busy timeout. */
    sqlite3 *other = peer_open(path);
    assert_int_equal(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    mqr_msg_t *m = msg_make("during", "x", 1, 1);
    assert_int_equal(mqr__store_retain_set(s, m), MQR_ESTORE);
    assert_non_null(strstr(mqr__store_last_error(s), "locked"));
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(other);

    assert_int_equal(mqr__store_retain_set(s, m), 0);
    mqr_msg_unref(m);
    store_close(&loop, s);
    assert_int_equal(committed_rows(path), 2);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- kill -9 after the barrier ---------------------------------------- */

#define CRASH_N 200
#define CRASH_PER_TURN 25

typedef struct {
    mqr_store_t *s;
    int fd;
    int written;
    int tail;
} crash_t;

static void crash_durable(void *arg, int status)
{
    crash_t *c = arg;
    const char *line = status == 0 ? "committed\n" : "failed\n";
    if (write(c->fd, line, strlen(line)) < 0) _exit(3);
}

static void crash_idle(uv_idle_t *h)
{
    crash_t *c = h->data;
    char topic[32], payload[48];
    if (c->written < CRASH_N) {
        for (int i = 0; i < CRASH_PER_TURN; i++, c->written++) {
            snprintf(topic, sizeof topic, "crash/%03d", c->written);
            snprintf(payload, sizeof payload, "value-%d", c->written);
            put(c->s, topic, payload);
        }
        if (c->written == CRASH_N && mqr__store_after_commit(c->s, crash_durable, c) != 0) _exit(4);
        return;
    }
    /* Keep writing so the kill lands in the middle of later transactions. */
    snprintf(topic, sizeof topic, "tail/%d", c->tail++ % 1000);
    put(c->s, topic, "tail");
}

static void crash_child(const char *path, int fd)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    crash_t c = {.fd = fd};
    if (mqr__store_open(&c.s, &loop, path, NULL, NULL) != 0) _exit(2);
    uv_idle_t idle;
    uv_idle_init(&loop, &idle);
    idle.data = &c;
    uv_idle_start(&idle, crash_idle);
    uv_run(&loop, UV_RUN_DEFAULT);
    _exit(5);
}

static void test_kill9_keeps_committed(void **state)
{
    (void)state;
    const char *path = tmp_path("crash.db");
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(pfd[0]);
        crash_child(path, pfd[1]);
    }
    close(pfd[1]);
    char line[32] = "";
    size_t got = 0;
    while (got < sizeof line - 1 && !strchr(line, '\n')) {
        struct pollfd p = {.fd = pfd[0], .events = POLLIN};
        if (poll(&p, 1, 30000) <= 0) break;
        ssize_t n = read(pfd[0], line + got, sizeof line - 1 - got);
        if (n <= 0) break;
        got += (size_t)n;
        line[got] = '\0';
    }
    close(pfd[0]);
    /* At once: an acknowledgement sent before the commit would lose rows. */
    kill(pid, SIGKILL);
    int wstatus = 0;
    assert_int_equal(waitpid(pid, &wstatus, 0), pid);
    assert_string_equal(line, "committed\n");
    assert_true(WIFSIGNALED(wstatus));
    assert_int_equal(WTERMSIG(wstatus), SIGKILL);

    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    mqr_store_t *s = store_open(&loop, path);
    bag_t bag = {0};
    assert_int_equal(mqr__store_retain_load(s, collect, &bag), 0);
    int found = 0;
    for (size_t i = 0; i < bag.n; i++) {
        int k = -1;
        if (sscanf(bag.msgs[i]->topic, "crash/%d", &k) != 1) continue;
        char expect[48];
        snprintf(expect, sizeof expect, "value-%d", k);
        assert_int_equal(bag.msgs[i]->payload_len, strlen(expect));
        assert_memory_equal(bag.msgs[i]->payload, expect, strlen(expect));
        assert_int_equal(k, found); /* topic order: crash/000, crash/001, ... */
        found++;
    }
    bag_free(&bag);
    assert_int_equal(found, CRASH_N);
    store_close(&loop, s);
    char ok[16];
    peer_text(path, "PRAGMA integrity_check", ok, sizeof ok);
    assert_string_equal(ok, "ok");
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reopen_keeps_retained),
        cmocka_unit_test(test_pragmas),
        cmocka_unit_test(test_empty_payload_deletes),
        cmocka_unit_test(test_expired_skipped_and_deleted),
        cmocka_unit_test(test_meta),
        cmocka_unit_test(test_migrate_empty_file),
        cmocka_unit_test(test_migrate_step_by_step),
        cmocka_unit_test(test_open_handmade_v1),
        cmocka_unit_test(test_newer_schema_refused),
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_group_commit_one_transaction),
        cmocka_unit_test(test_group_commit_per_turn),
        cmocka_unit_test(test_after_commit_order),
        cmocka_unit_test(test_commit_failure_reaches_waiters),
        cmocka_unit_test(test_rolled_back_turn_reaches_waiters),
        cmocka_unit_test(test_write_fails_while_locked),
        cmocka_unit_test(test_kill9_keeps_committed),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
