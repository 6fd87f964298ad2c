/*
 * test_sink_pg.c — the PostgreSQL sink (core/sink/pg.c) against a real
 * PostgreSQL 15 started once for the whole program (pg_harness.h): $n
 * parameters and NULLs, batched inserts, outcomes by SQLSTATE, one bad row
 * in a batch, the server killed and restarted, a wrong password kept out of
 * what is shown, bounds, timeouts and close with requests in flight. Each
 * test runs its own loop and ends with uv_loop_close() == 0.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "pg.h"
#include "pg_harness.h"

#include <uv.h>

static pg_cluster_t cluster;

static int group_setup(void **state)
{
    (void)state;
    return pg_cluster_start(&cluster);
}

static int group_teardown(void **state)
{
    (void)state;
    pg_cluster_cleanup(&cluster);
    return 0;
}

/* ---- driving the loop ---------------------------------------------------- */

static void guard_cb(uv_timer_t *t)
{
    (void)t;
}

/* Runs loop until pred(arg) holds or timeout_ms passes; true when it held.
 * A 5 ms guard timer bounds each turn. */
static bool run_until(uv_loop_t *loop, bool (*pred)(void *arg), void *arg, int timeout_ms)
{
    uv_timer_t guard;
    uv_timer_init(loop, &guard);
    uv_timer_start(&guard, guard_cb, 5, 5);
    uint64_t deadline = pgh_now_ms() + (uint64_t)timeout_ms;
    bool held = false;
    while (!(held = pred(arg)) && pgh_now_ms() < deadline)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&guard, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return held;
}

static void pg_new_ok(uv_loop_t *loop, mqr_pg_opts_t *o, mqr_pg_t **p, const char *password)
{
    static char ci[256];
    pg_conninfo(&cluster, ci, sizeof ci, password);
    o->conninfo = ci;
    char *err = NULL;
    int rc = mqr__pg_new(loop, o, p, &err);
    if (rc != 0) fail_msg("mqr__pg_new: %d %s", rc, err ? err : "");
    free(err);
}

/* Closes p, runs the loop dry and closes it: nothing may be left open. */
static void finish(uv_loop_t *loop, mqr_pg_t *p)
{
    if (p) mqr__pg_close(p);
    assert_int_equal(uv_run(loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(loop), 0);
}

static bool is_up(void *arg)
{
    return mqr__pg_sink(arg)->up;
}

/* ---- recording answers --------------------------------------------------- */

#define MAXREQ 2048

typedef struct {
    int calls;
    mqr_pg_result_t r; /* scalar fields of the last answer */
    char reason[512];
    char v[4][64]; /* first row of a query result, "<NULL>" for NULL */
    int nulls;
} answer_t;

static answer_t ans[MAXREQ];
static int answered;

static void reset_answers(void)
{
    memset(ans, 0, sizeof ans);
    answered = 0;
}

static void on_done(void *arg, const mqr_pg_result_t *r)
{
    answer_t *a = arg;
    a->calls++;
    answered++;
    a->r = *r;
    a->r.names = NULL;
    a->r.values = NULL;
    a->r.reason = NULL;
    snprintf(a->reason, sizeof a->reason, "%s", r->reason ? r->reason : "");
    for (int j = 0; j < r->cols && j < 4 && r->rows > 0; j++) {
        if (!r->values[j]) a->nulls++;
        snprintf(a->v[j], sizeof a->v[j], "%s", r->values[j] ? r->values[j] : "<NULL>");
    }
}

static int want_answers;
static bool enough_answers(void *arg)
{
    (void)arg;
    return answered >= want_answers;
}

static void wait_answers(uv_loop_t *loop, int n, int timeout_ms)
{
    want_answers = n;
    if (!run_until(loop, enough_answers, NULL, timeout_ms))
        fail_msg("%d answers of %d after %d ms", answered, n, timeout_ms);
}

static void query_ok(mqr_pg_t *p, const char *sql, int n, const char *const *v, answer_t *a)
{
    char why[128] = "";
    int rc = mqr__pg_query(p, sql, n, v, NULL, on_done, a, why, sizeof why);
    if (rc != 0) fail_msg("query %s: %d %s", sql, rc, why);
}

/* ---- cases ---------------------------------------------------------------- */

static void test_query_params(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    reset_answers();
    mqr_pg_opts_t o = {.name = "db"};
    mqr_pg_t *p;
    pg_new_ok(&loop, &o, &p, NULL);
    mqr_sink_t *s = mqr__pg_sink(p);
    assert_string_equal(s->kind, "pg");
    assert_string_equal(s->name, "db");
    assert_null(strstr(s->target, PG_PASSWORD));
    assert_non_null(strstr(s->target, "password=***"));

    /* nothing is answered inside the call, even to a request that fails */
    const char *v[] = {"it's \"quoted\" \\ $1", NULL, "41"};
    query_ok(p, "SELECT $1::text AS a, $2::text AS b, $3::int + 1 AS c", 3, v, &ans[0]);
    assert_int_equal(answered, 0);
    wait_answers(&loop, 1, 5000);
    answer_t *a = &ans[0];
    assert_int_equal(a->calls, 1);
    assert_int_equal(a->r.outcome, MQR_SINK_OK);
    assert_int_equal(a->r.err, 0);
    assert_int_equal(a->r.rows, 1);
    assert_int_equal(a->r.cols, 3);
    assert_string_equal(a->v[0], v[0]);
    assert_string_equal(a->v[1], "<NULL>");
    assert_int_equal(a->nulls, 1);
    assert_string_equal(a->v[2], "42");
    assert_true(a->r.seconds > 0);
    assert_true(s->up);
    assert_int_equal(s->ok, 1);
    assert_int_equal(s->in_flight, 0);

    /* several rows, column names, a value with explicit length */
    const char *w[] = {"abcdef"};
    size_t len[] = {3};
    assert_int_equal(mqr__pg_query(p, "SELECT g AS n, $1::text AS s FROM generate_series(1, 5) g",
                                   1, w, len, on_done, &ans[1], NULL, 0),
                     0);
    wait_answers(&loop, 2, 5000);
    assert_int_equal(ans[1].r.rows, 5);
    assert_string_equal(ans[1].v[1], "abc");

    /* 4 MB out (more than the socket takes at once: PQflush comes back for
     * the rest when writable) and 4 MB back */
    size_t big = 4u << 20;
    char *huge = malloc(big + 1);
    assert_non_null(huge);
    memset(huge, 'x', big);
    huge[big] = '\0';
    const char *hv[] = {huge};
    query_ok(p, "SELECT length($1), md5($1) = md5(repeat('x', 4194304)), repeat('y', 4194304)", 1,
             hv, &ans[3]);
    free(huge); /* copied at the call */
    wait_answers(&loop, 3, 10000);
    assert_int_equal(ans[3].r.outcome, MQR_SINK_OK);
    assert_string_equal(ans[3].v[0], "4194304");
    assert_string_equal(ans[3].v[1], "t");
    assert_int_equal(strspn(ans[3].v[2], "y"), sizeof ans[3].v[2] - 1); /* truncated copy */

    /* refused at the call: the callback never fires */
    char why[128] = "";
    assert_int_equal(mqr__pg_query(p, "", 0, NULL, NULL, on_done, &ans[2], why, sizeof why),
                     MQR_EINVAL);
    assert_true(why[0]);
    size_t bad_len[] = {3};
    const char *nul[] = {"a\0b"};
    assert_int_equal(
        mqr__pg_query(p, "SELECT $1", 1, nul, bad_len, on_done, &ans[2], why, sizeof why),
        MQR_EINVAL);
    finish(&loop, p);
    assert_int_equal(ans[2].calls, 0);
}

static void test_insert_batched(void **state)
{
    (void)state;
    assert_int_equal(pg_exec(&cluster,
                             "DROP TABLE IF EXISTS \"odd \"\"name\"; "
                             "CREATE TABLE \"odd \"\"name\" (id int PRIMARY KEY, "
                             "\"v al\" double precision, note text)",
                             NULL, 0),
                     0);
    uv_loop_t loop;
    uv_loop_init(&loop);
    reset_answers();
    mqr_pg_opts_t o = {.batch_rows = 1000, .batch_ms = 20};
    mqr_pg_t *p;
    pg_new_ok(&loop, &o, &p, NULL);

    /* invalid rows are refused at the call */
    const char *cols[] = {"id", "v al", "note"};
    const char *one[] = {"1", "1", "x"};
    char why[128];
    assert_int_equal(mqr__pg_insert(p, "t", 0, cols, one, on_done, &ans[0], why, sizeof why),
                     MQR_EINVAL);
    assert_int_equal(mqr__pg_insert(p, "t", 1601, cols, one, on_done, &ans[0], why, sizeof why),
                     MQR_EINVAL);
    assert_int_equal(mqr__pg_insert(p, "", 3, cols, one, on_done, &ans[0], why, sizeof why),
                     MQR_EINVAL);
    const char *empty_col[] = {"id", "", "note"};
    assert_int_equal(mqr__pg_insert(p, "t", 3, empty_col, one, on_done, &ans[0], why, sizeof why),
                     MQR_EINVAL);

    enum { N = 1000 };
    for (int i = 0; i < N; i++) {
        char id[16], val[32];
        snprintf(id, sizeof id, "%d", i + 1);
        snprintf(val, sizeof val, "%d.5", i);
        const char *row[] = {id, val, i % 2 ? "it's" : NULL};
        int rc = mqr__pg_insert(p, "odd \"name", 3, cols, row, on_done, &ans[i], why, sizeof why);
        if (rc != 0) fail_msg("insert %d: %d %s", i, rc, why);
    }
    assert_int_equal(answered, 0);
    wait_answers(&loop, N, 8000);
    for (int i = 0; i < N; i++) {
        assert_int_equal(ans[i].calls, 1);
        if (ans[i].r.outcome != MQR_SINK_OK) fail_msg("row %d: %s", i, ans[i].reason);
        assert_true(ans[i].r.batch >= 1);
    }
    mqr_pg_stats_t st;
    mqr__pg_stats(p, &st);
    /* all 1000 fit in one batch; allow a split by the window on a slow box */
    assert_true(st.batches >= 1 && st.batches <= 10);
    assert_int_equal(st.batch_rows, N);
    assert_true(st.statements <= 10);
    assert_int_equal(ans[0].r.affected, (uint64_t)ans[0].r.batch);
    assert_int_equal(mqr__pg_sink(p)->ok, N);
    finish(&loop, p);

    char out[64];
    assert_int_equal(pg_exec(&cluster,
                             "SELECT count(*) || ' ' || sum(id) || ' ' || sum(\"v al\") || ' ' || "
                             "count(note) FROM \"odd \"\"name\"",
                             out, sizeof out),
                     0);
    /* sum(id) = 500500; sum(v) = sum(i) + 0.5 N = 499500 + 500 */
    assert_string_equal(out, "1000 500500 500000 500");
}

static void test_bad_row_in_batch(void **state)
{
    (void)state;
    assert_int_equal(pg_exec(&cluster,
                             "DROP TABLE IF EXISTS uniq; CREATE TABLE uniq (id int PRIMARY KEY, "
                             "v int CHECK (v >= 0))",
                             NULL, 0),
                     0);
    uv_loop_t loop;
    uv_loop_init(&loop);
    reset_answers();
    mqr_pg_opts_t o = {.batch_rows = 100, .batch_ms = 50};
    mqr_pg_t *p;
    pg_new_ok(&loop, &o, &p, NULL);
    assert_true(run_until(&loop, is_up, p, 5000));

    /* ten rows in one batch: row 5 repeats id 3, row 8 has a bad number */
    const char *cols[] = {"id", "v"};
    const char *ids[] = {"1", "2", "3", "4", "5", "3", "6", "7", "8", "9"};
    for (int i = 0; i < 10; i++) {
        const char *row[] = {ids[i], i == 8 ? "x1" : "7"};
        assert_int_equal(mqr__pg_insert(p, "uniq", 2, cols, row, on_done, &ans[i], NULL, 0), 0);
    }
    wait_answers(&loop, 10, 5000);
    /* rows run alone go on both connections: either copy of id 3 may come
     * first, the other fails */
    int dup = ans[2].r.outcome == MQR_SINK_OK ? 5 : 2;
    for (int i = 0; i < 10; i++) {
        assert_int_equal(ans[i].calls, 1);
        assert_true(ans[i].r.batch == 1 || ans[i].r.batch == 10);
        if (i == dup) {
            assert_int_equal(ans[i].r.outcome, MQR_SINK_PERMANENT);
            assert_string_equal(ans[i].r.sqlstate, "23505");
            assert_string_equal(ans[i].reason,
                                "ERROR 23505: duplicate key value violates unique constraint "
                                "\"uniq_pkey\" (Key (id)=(3) already exists.)");
        } else if (i == 8) {
            assert_int_equal(ans[i].r.outcome, MQR_SINK_PERMANENT);
            assert_string_equal(ans[i].r.sqlstate, "22P02");
        } else {
            if (ans[i].r.outcome != MQR_SINK_OK) fail_msg("row %d: %s", i, ans[i].reason);
            assert_int_equal(ans[i].r.batch, 1);
        }
    }
    mqr_pg_stats_t st;
    mqr__pg_stats(p, &st);
    assert_int_equal(st.row_retries, 10);
    mqr_sink_t *s = mqr__pg_sink(p);
    assert_int_equal(s->ok, 8);
    assert_int_equal(s->failed, 2);
    assert_int_equal(s->errors[MQR_SINK_ERR_REQUEST], 2);
    finish(&loop, p);
    char out[32];
    assert_int_equal(pg_exec(&cluster, "SELECT count(*) FROM uniq", out, sizeof out), 0);
    assert_string_equal(out, "8");
}

/* 70 columns x 1000 rows is more than 65535 parameters: two statements.
 * "schema.table" quotes each part. A batch for a table that does not exist
 * fails every row at once (42P01), without running rows alone. */
static void test_insert_limits(void **state)
{
    (void)state;
    enum { NC = 70, N = 1000 };
    char ddl[2048] = "DROP TABLE IF EXISTS wide; CREATE TABLE public.wide (";
    static char names[NC][8];
    const char *cols[NC], *vals[NC];
    for (int i = 0; i < NC; i++) {
        snprintf(names[i], sizeof names[i], "c%d", i);
        cols[i] = names[i];
        snprintf(ddl + strlen(ddl), sizeof ddl - strlen(ddl), "%sc%d int", i ? ", " : "", i);
    }
    strcat(ddl, ")");
    assert_int_equal(pg_exec(&cluster, ddl, NULL, 0), 0);
    uv_loop_t loop;
    uv_loop_init(&loop);
    reset_answers();
    mqr_pg_opts_t o = {.batch_rows = 1000, .batch_ms = 50};
    mqr_pg_t *p;
    pg_new_ok(&loop, &o, &p, NULL);
    assert_true(run_until(&loop, is_up, p, 5000));
    for (int i = 0; i < N; i++) {
        char v[16];
        snprintf(v, sizeof v, "%d", i);
        for (int j = 0; j < NC; j++)
            vals[j] = v;
        assert_int_equal(
            mqr__pg_insert(p, "public.wide", NC, cols, vals, on_done, &ans[i], NULL, 0), 0);
    }
    wait_answers(&loop, N, 8000);
    for (int i = 0; i < N; i++)
        if (ans[i].r.outcome != MQR_SINK_OK) fail_msg("row %d: %s", i, ans[i].reason);
    mqr_pg_stats_t st;
    mqr__pg_stats(p, &st);
    assert_int_equal(st.statements, 2); /* 936 rows (65520 parameters), then 64 */
    assert_int_equal(ans[0].r.batch, 65535 / NC);
    assert_int_equal(ans[N - 1].r.batch, N - 65535 / NC);

    const char *c1[] = {"a"}, *v1[] = {"1"};
    for (int i = 0; i < 3; i++)
        assert_int_equal(
            mqr__pg_insert(p, "public.no_such", 1, c1, v1, on_done, &ans[N + i], NULL, 0), 0);
    wait_answers(&loop, N + 3, 5000);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(ans[N + i].r.outcome, MQR_SINK_PERMANENT);
        assert_string_equal(ans[N + i].r.sqlstate, "42P01");
        assert_int_equal(ans[N + i].r.batch, 3);
        assert_string_equal(ans[N + i].reason,
                            "ERROR 42P01: relation \"public.no_such\" does not exist");
    }
    mqr__pg_stats(p, &st);
    assert_int_equal(st.row_retries, 0);
    assert_int_equal(st.statements, 3);
    finish(&loop, p);
    char out[32];
    assert_int_equal(
        pg_exec(&cluster, "SELECT count(*) || ' ' || sum(c69) FROM wide", out, sizeof out), 0);
    assert_string_equal(out, "1000 499500");
}

/* SQLSTATEs raised on purpose, and real errors, to their outcomes. */
static void test_outcomes(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    reset_answers();
    mqr_pg_opts_t o = {0};
    mqr_pg_t *p;
    pg_new_ok(&loop, &o, &p, NULL);
    static const struct {
        const char *sql;
        const char *state;
        mqr_sink_outcome_t outcome;
        mqr_sink_err_kind_t kind;
    } cases[] = {
        {"SELEC 1", "42601", MQR_SINK_PERMANENT, MQR_SINK_ERR_REQUEST},
        {"SELECT * FROM no_such_table", "42P01", MQR_SINK_PERMANENT, MQR_SINK_ERR_REQUEST},
        {"SELECT 1/0", "22012", MQR_SINK_PERMANENT, MQR_SINK_ERR_REQUEST},
        {"DO $$BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '40001'; END$$", "40001", MQR_SINK_RETRY,
         MQR_SINK_ERR_SERVER},
        {"DO $$BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '40P01'; END$$", "40P01", MQR_SINK_RETRY,
         MQR_SINK_ERR_SERVER},
        {"DO $$BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '55P03'; END$$", "55P03", MQR_SINK_RETRY,
         MQR_SINK_ERR_SERVER},
        {"DO $$BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '53300'; END$$", "53300", MQR_SINK_RETRY,
         MQR_SINK_ERR_SERVER},
        {"DO $$BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '57P03'; END$$", "57P03", MQR_SINK_RETRY,
         MQR_SINK_ERR_SERVER},
        {"DO $$BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '23503'; END$$", "23503",
         MQR_SINK_PERMANENT, MQR_SINK_ERR_REQUEST},
        {"DO $$BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '28P01'; END$$", "28P01",
         MQR_SINK_PERMANENT, MQR_SINK_ERR_REQUEST},
        /* two statements in one: refused by the extended protocol */
        {"SELECT 1; SELECT 2", "42601", MQR_SINK_PERMANENT, MQR_SINK_ERR_REQUEST},
    };
    int n = (int)(sizeof cases / sizeof cases[0]);
    for (int i = 0; i < n; i++)
        query_ok(p, cases[i].sql, 0, NULL, &ans[i]);
    wait_answers(&loop, n, 5000);
    mqr_sink_t *s = mqr__pg_sink(p);
    for (int i = 0; i < n; i++) {
        assert_int_equal(ans[i].calls, 1);
        if (strcmp(ans[i].r.sqlstate, cases[i].state) != 0 || ans[i].r.outcome != cases[i].outcome)
            fail_msg("%s: %s outcome %d (%s)", cases[i].sql, ans[i].r.sqlstate, ans[i].r.outcome,
                     ans[i].reason);
        assert_true(ans[i].reason[0]);
        assert_int_equal(ans[i].r.err, cases[i].outcome == MQR_SINK_RETRY ? UV_EAGAIN : MQR_EINVAL);
    }
    assert_int_equal(s->errors[MQR_SINK_ERR_REQUEST], 6);
    assert_int_equal(s->errors[MQR_SINK_ERR_SERVER], 5);
    assert_int_equal(s->failed, 6);
    assert_int_equal(s->retried, 5);
    assert_true(s->last_error[0]);
    /* COPY cannot go through: PERMANENT, and its connection is replaced */
    query_ok(p, "COPY (SELECT 1) TO STDOUT", 0, NULL, &ans[n]);
    wait_answers(&loop, n + 1, 5000);
    assert_int_equal(ans[n].r.outcome, MQR_SINK_PERMANENT);
    assert_int_equal(ans[n].r.err, MQR_EINVAL);
    assert_non_null(strstr(ans[n].reason, "COPY"));
    /* the connections survived all that (the COPY one was replaced) */
    query_ok(p, "SELECT 1", 0, NULL, &ans[n + 1]);
    wait_answers(&loop, n + 2, 5000);
    assert_int_equal(ans[n + 1].r.outcome, MQR_SINK_OK);
    finish(&loop, p);
}

/* Counts the server's backends running exactly sql. */
static int running(const char *sql)
{
    char q[256], out[16];
    snprintf(q, sizeof q,
             "SELECT count(*) FROM pg_stat_activity WHERE query = '%s' AND state = 'active'", sql);
    return pg_exec(&cluster, q, out, sizeof out) == 0 ? atoi(out) : -1;
}

static bool never(void *arg)
{
    (void)arg;
    return false;
}

/* Until n connections run sql on the server (5 s). */
static bool wait_running(uv_loop_t *loop, const char *sql, int n)
{
    uint64_t deadline = pgh_now_ms() + 5000;
    while (pgh_now_ms() < deadline) {
        if (running(sql) >= n) return true;
        run_until(loop, never, NULL, 20);
    }
    return false;
}

static bool all_connected(void *arg)
{
    mqr_pg_stats_t st;
    mqr__pg_stats(arg, &st);
    return st.connects >= 2;
}

/* A real deadlock between the pool's two connections: one statement wins,
 * the other fails RETRY with 40P01 (deadlock_timeout is 100 ms here). */
static void test_deadlock_is_retry(void **state)
{
    (void)state;
    assert_int_equal(pg_exec(&cluster,
                             "DROP TABLE IF EXISTS locks; CREATE TABLE locks (id int PRIMARY KEY, "
                             "v int); INSERT INTO locks VALUES (1, 0), (2, 0)",
                             NULL, 0),
                     0);
    uv_loop_t loop;
    uv_loop_init(&loop);
    reset_answers();
    mqr_pg_opts_t o = {.connections = 2};
    mqr_pg_t *p;
    pg_new_ok(&loop, &o, &p, NULL);
    assert_true(run_until(&loop, all_connected, p, 5000));
    query_ok(p,
             "DO $$BEGIN UPDATE locks SET v = 1 WHERE id = 1; PERFORM pg_sleep(0.2); "
             "UPDATE locks SET v = 1 WHERE id = 2; END$$",
             0, NULL, &ans[0]);
    query_ok(p,
             "DO $$BEGIN UPDATE locks SET v = 2 WHERE id = 2; PERFORM pg_sleep(0.2); "
             "UPDATE locks SET v = 2 WHERE id = 1; END$$",
             0, NULL, &ans[1]);
    wait_answers(&loop, 2, 5000);
    int lost = ans[0].r.outcome == MQR_SINK_OK ? 1 : 0;
    assert_int_equal(ans[1 - lost].r.outcome, MQR_SINK_OK);
    assert_int_equal(ans[lost].r.outcome, MQR_SINK_RETRY);
    assert_string_equal(ans[lost].r.sqlstate, "40P01");
    assert_int_equal(ans[lost].r.err, UV_EAGAIN);
    assert_int_equal(mqr__pg_sink(p)->errors[MQR_SINK_ERR_SERVER], 1);
    finish(&loop, p);
}

static int states_up, states_down;
static void on_state(void *arg, mqr_sink_t *s, bool up, const char *reason)
{
    (void)arg;
    (void)s;
    (void)reason;
    if (up)
        states_up++;
    else
        states_down++;
}

static bool is_down(void *arg)
{
    return !mqr__pg_sink(arg)->up;
}

static void test_server_killed_and_restarted(void **state)
{
    (void)state;
    /* committed before the crash: the cluster runs with synchronous_commit off */
    assert_int_equal(pg_exec(&cluster,
                             "SET synchronous_commit = on; DROP TABLE IF EXISTS after; "
                             "CREATE TABLE after (n int)",
                             NULL, 0),
                     0);
    uv_loop_t loop;
    uv_loop_init(&loop);
    reset_answers();
    states_up = states_down = 0;
    mqr_pg_opts_t o = {.connections = 2, .backoff_min_ms = 20, .backoff_max_ms = 200};
    mqr_pg_t *p;
    pg_new_ok(&loop, &o, &p, NULL);
    mqr_sink_t *s = mqr__pg_sink(p);
    s->on_state = on_state;
    assert_true(run_until(&loop, is_up, p, 5000));
    assert_int_equal(states_up, 1);

    /* both connections busy with a long statement, then kill -9 */
    assert_true(run_until(&loop, all_connected, p, 5000));
    query_ok(p, "SELECT pg_sleep(31)", 0, NULL, &ans[0]);
    query_ok(p, "SELECT pg_sleep(31)", 0, NULL, &ans[1]);
    assert_true(wait_running(&loop, "SELECT pg_sleep(31)", 2));
    assert_int_equal(answered, 0);
    pg_cluster_kill(&cluster);
    wait_answers(&loop, 2, 5000);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(ans[i].calls, 1);
        assert_int_equal(ans[i].r.outcome, MQR_SINK_RETRY);
        assert_int_equal(ans[i].r.err, UV_ECONNRESET);
    }
    assert_int_equal(s->errors[MQR_SINK_ERR_CONNECT], 2);
    assert_true(run_until(&loop, is_down, p, 2000));
    assert_int_equal(states_down, 1);

    /* requests made while it is down wait, and go once it is back */
    for (int i = 0; i < 20; i++) {
        char n[8];
        snprintf(n, sizeof n, "%d", i);
        const char *col[] = {"n"}, *val[] = {n};
        assert_int_equal(mqr__pg_insert(p, "after", 1, col, val, on_done, &ans[2 + i], NULL, 0), 0);
    }
    assert_false(run_until(&loop, is_up, p, 200)); /* still down: reconnects fail */
    assert_int_equal(answered, 2);
    assert_int_equal(pg_cluster_run(&cluster), 0);
    wait_answers(&loop, 22, 8000);
    for (int i = 2; i < 22; i++) {
        assert_int_equal(ans[i].calls, 1);
        if (ans[i].r.outcome != MQR_SINK_OK) fail_msg("row %d: %s", i, ans[i].reason);
    }
    assert_true(s->up);
    assert_int_equal(states_up, 2);
    assert_true(s->reconnects >= 2);
    query_ok(p, "SELECT count(*) FROM after", 0, NULL, &ans[22]);
    wait_answers(&loop, 23, 5000);
    assert_string_equal(ans[22].v[0], "20");
    finish(&loop, p);
}

static bool error_says_password(void *arg)
{
    return strstr(mqr__pg_sink(arg)->last_error, "password authentication failed") != NULL;
}

static void test_wrong_password(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    reset_answers();
    const char *bad = "Wr0ng-Secret";
    mqr_pg_opts_t o = {.timeout_ms = 400, .backoff_min_ms = 50, .backoff_max_ms = 100};
    mqr_pg_t *p;
    pg_new_ok(&loop, &o, &p, bad);
    mqr_sink_t *s = mqr__pg_sink(p);
    query_ok(p, "SELECT 1", 0, NULL, &ans[0]);
    if (!run_until(&loop, error_says_password, p, 5000)) fail_msg("last_error: %s", s->last_error);
    assert_false(s->up);
    print_message("wrong password: %s\n", s->last_error);
    assert_null(strstr(s->last_error, bad));
    assert_null(strstr(s->target, bad));
    /* the request waits for a connection, then gives up: RETRY timeout */
    wait_answers(&loop, 1, 3000);
    assert_int_equal(ans[0].r.outcome, MQR_SINK_RETRY);
    assert_int_equal(ans[0].r.err, UV_ETIMEDOUT);
    assert_null(strstr(ans[0].reason, bad));
    assert_true(s->reconnects >= 1);
    finish(&loop, p);
}

static const char *want_error;
static bool error_says_wanted(void *arg)
{
    return strstr(mqr__pg_sink(arg)->last_error, want_error) != NULL;
}

static mqr_pg_t *pg_new_at(uv_loop_t *loop, const char *hosts)
{
    char ci[512];
    snprintf(ci, sizeof ci,
             "host=%s port=%d dbname=postgres user=" PG_USER " password=" PG_PASSWORD, hosts,
             cluster.port);
    mqr_pg_opts_t o = {
        .conninfo = ci, .timeout_ms = 2000, .backoff_min_ms = 50, .backoff_max_ms = 100};
    mqr_pg_t *p = NULL;
    char *err = NULL;
    if (mqr__pg_new(loop, &o, &p, &err) != 0) fail_msg("mqr__pg_new: %s", err ? err : "");
    return p;
}

/* Host names are looked up off the loop (libpq's own lookup blocks): a
 * name connects, a name that does not resolve is skipped for the next
 * host as libpq would, and one alone is a named connect error. */
static void test_host_names(void **state)
{
    (void)state;
    static const char *const good[] = {"localhost", "no-such-host.invalid,localhost"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        uv_loop_t loop;
        uv_loop_init(&loop);
        reset_answers();
        mqr_pg_t *p = pg_new_at(&loop, good[i]);
        query_ok(p, "SELECT current_user", 0, NULL, &ans[0]);
        wait_answers(&loop, 1, 5000);
        if (ans[0].r.outcome != MQR_SINK_OK) fail_msg("host=%s: %s", good[i], ans[0].reason);
        assert_string_equal(ans[0].v[0], PG_USER);
        assert_true(mqr__pg_sink(p)->up);
        finish(&loop, p);
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    mqr_pg_t *p = pg_new_at(&loop, "no-such-host.invalid");
    want_error = "could not look up host \"no-such-host.invalid\"";
    if (!run_until(&loop, error_says_wanted, p, 5000))
        fail_msg("last_error: %s", mqr__pg_sink(p)->last_error);
    print_message("unknown host: %s\n", mqr__pg_sink(p)->last_error);
    assert_false(mqr__pg_sink(p)->up);
    finish(&loop, p);
}

static void test_bad_conninfo(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    static const char *const bad[] = {
        "host=127.0.0.1 password=hunter2secret bogus=1",
        "host=127.0.0.1 password='hunter2secret",
        "postgresql://u:hunter2secret@127.0.0.1:5432/db?nosuchoption=1",
        /* libpq quotes the bad token: here, the password */
        "postgresql://u:hunter2%zzsecret@127.0.0.1:5432/db",
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mqr_pg_opts_t o = {.conninfo = bad[i]};
        mqr_pg_t *p = (mqr_pg_t *)&o; /* must be reset to NULL */
        char *err = NULL;
        assert_int_equal(mqr__pg_new(&loop, &o, &p, &err), MQR_EINVAL);
        assert_null(p);
        assert_non_null(err);
        if (strstr(err, "hunter2")) fail_msg("the password shows: %s", err);
        print_message("bad conninfo: %s\n", err);
        free(err);
    }
    mqr_pg_opts_t o = {.conninfo = "host=127.0.0.1", .connections = 65};
    mqr_pg_t *p;
    assert_int_equal(mqr__pg_new(&loop, &o, &p, NULL), MQR_EINVAL);
    finish(&loop, NULL);
}

static void test_full(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    reset_answers();
    /* one slot (1 connection, 1 row a batch), 3 waiting */
    mqr_pg_opts_t o = {.connections = 1, .batch_rows = 1, .max_queued = 3};
    mqr_pg_t *p;
    pg_new_ok(&loop, &o, &p, NULL);
    mqr_sink_t *s = mqr__pg_sink(p);
    int admitted = 0, full = 0;
    for (int i = 0; i < 10; i++) {
        char n[8];
        snprintf(n, sizeof n, "%d", i);
        const char *v[] = {n};
        char why[128] = "";
        int rc = mqr__pg_query(p, "SELECT $1::int", 1, v, NULL, on_done, &ans[i], why, sizeof why);
        if (rc == 0)
            admitted++;
        else if (rc == MQR_EFULL && why[0])
            full++;
    }
    assert_int_equal(admitted, 4);
    assert_int_equal(full, 6);
    assert_int_equal(s->errors[MQR_SINK_ERR_FULL], 6);
    assert_int_equal(s->in_flight, 1);
    assert_int_equal(s->queued, 3);
    wait_answers(&loop, 4, 5000);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(ans[i].calls, i < 4 ? 1 : 0);
        if (i < 4) {
            char n[8];
            snprintf(n, sizeof n, "%d", i);
            assert_string_equal(ans[i].v[0], n);
        }
    }
    assert_int_equal(s->in_flight, 0);
    assert_int_equal(s->queued, 0);
    assert_int_equal(s->ok, 4);
    finish(&loop, p);
    assert_int_equal(answered, 4);
}

static void test_timeout_drops_connection(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    reset_answers();
    mqr_pg_opts_t o = {.connections = 1, .timeout_ms = 300, .backoff_min_ms = 10};
    mqr_pg_t *p;
    pg_new_ok(&loop, &o, &p, NULL);
    assert_true(run_until(&loop, is_up, p, 5000));
    uint64_t t0 = pgh_now_ms();
    query_ok(p, "SELECT pg_sleep(5)", 0, NULL, &ans[0]);
    wait_answers(&loop, 1, 3000);
    assert_int_equal(ans[0].r.outcome, MQR_SINK_RETRY);
    assert_int_equal(ans[0].r.err, UV_ETIMEDOUT);
    assert_true(pgh_now_ms() - t0 < 2000);
    mqr_sink_t *s = mqr__pg_sink(p);
    assert_int_equal(s->errors[MQR_SINK_ERR_TIMEOUT], 1);
    /* the next request goes on a new connection */
    query_ok(p, "SELECT 7", 0, NULL, &ans[1]);
    wait_answers(&loop, 2, 3000);
    assert_int_equal(ans[1].r.outcome, MQR_SINK_OK);
    assert_string_equal(ans[1].v[0], "7");
    mqr_pg_stats_t st;
    mqr__pg_stats(p, &st);
    if (s->reconnects != 1 || st.connects != 2)
        fail_msg("reconnects %d connects %d: %s", (int)s->reconnects, (int)st.connects,
                 s->last_error);
    finish(&loop, p);
}

static void test_close_with_requests_in_flight(void **state)
{
    (void)state;
    assert_int_equal(pg_exec(&cluster, "CREATE TABLE IF NOT EXISTS closing (n int)", NULL, 0), 0);
    uv_loop_t loop;
    uv_loop_init(&loop);
    reset_answers();
    mqr_pg_opts_t o = {.connections = 2, .batch_rows = 2, .batch_ms = 1000};
    mqr_pg_t *p;
    pg_new_ok(&loop, &o, &p, NULL);
    assert_true(run_until(&loop, is_up, p, 5000));
    assert_true(run_until(&loop, all_connected, p, 5000));
    query_ok(p, "SELECT pg_sleep(2.5)", 0, NULL, &ans[0]);
    query_ok(p, "SELECT pg_sleep(2.5)", 0, NULL, &ans[1]);
    assert_true(wait_running(&loop, "SELECT pg_sleep(2.5)", 2));
    /* a batch that fills (holds slots) and requests that wait */
    const char *col[] = {"n"}, *val[] = {"1"};
    for (int i = 2; i < 8; i++)
        assert_int_equal(mqr__pg_insert(p, "closing", 1, col, val, on_done, &ans[i], NULL, 0), 0);
    mqr_sink_t *s = mqr__pg_sink(p);
    assert_int_equal(s->in_flight, 4);
    assert_int_equal(s->queued, 4);
    assert_int_equal(answered, 0);
    mqr__pg_close(p);
    /* answered during the close, each once */
    assert_int_equal(answered, 8);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(ans[i].calls, 1);
        assert_int_equal(ans[i].r.outcome, MQR_SINK_RETRY);
        assert_int_equal(ans[i].r.err, MQR_ECLOSED);
    }
    finish(&loop, NULL);
    assert_int_equal(answered, 8);
}

/* A done callback closes the client; the other answers still come once. */
static mqr_pg_t *closer_p;
static void close_from_cb(void *arg, const mqr_pg_result_t *r)
{
    on_done(arg, r);
    char why[64];
    if (closer_p) {
        mqr_pg_t *p = closer_p;
        closer_p = NULL;
        mqr__pg_close(p);
        assert_int_equal(
            mqr__pg_query(p, "SELECT 1", 0, NULL, NULL, on_done, &ans[99], why, sizeof why),
            MQR_ECLOSED);
    }
}

static void test_close_from_callback(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    reset_answers();
    mqr_pg_opts_t o = {.connections = 1, .batch_rows = 1};
    mqr_pg_t *p;
    pg_new_ok(&loop, &o, &p, NULL);
    closer_p = p;
    assert_int_equal(mqr__pg_query(p, "SELECT 1", 0, NULL, NULL, close_from_cb, &ans[0], NULL, 0),
                     0);
    for (int i = 1; i < 5; i++)
        query_ok(p, "SELECT 2", 0, NULL, &ans[i]);
    wait_answers(&loop, 5, 5000);
    assert_int_equal(ans[0].r.outcome, MQR_SINK_OK);
    for (int i = 1; i < 5; i++) {
        assert_int_equal(ans[i].calls, 1);
        assert_int_equal(ans[i].r.err, MQR_ECLOSED);
    }
    assert_int_equal(ans[99].calls, 0);
    finish(&loop, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_query_params),
        cmocka_unit_test(test_insert_batched),
        cmocka_unit_test(test_bad_row_in_batch),
        cmocka_unit_test(test_insert_limits),
        cmocka_unit_test(test_outcomes),
        cmocka_unit_test(test_deadlock_is_retry),
        cmocka_unit_test(test_bad_conninfo),
        cmocka_unit_test(test_host_names),
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_timeout_drops_connection),
        cmocka_unit_test(test_close_with_requests_in_flight),
        cmocka_unit_test(test_close_from_callback),
        cmocka_unit_test(test_wrong_password),
        cmocka_unit_test(test_server_killed_and_restarted),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
