/*
 * test_sink_capi.c — the sinks from a C host (mqrouter_sinks.h) on a real
 * engine: a file written and flushed, a real redis-server's XADD and INCR,
 * a throw-away PostgreSQL's INSERT and SELECT, an HTTP request refused;
 * options checked, names unique, and the engine's stop answering what is
 * still waiting with MQR_ECLOSED.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "mqrouter.h"
#include "engine.h"
#include "mqrouter_sinks.h"
#include "sink.h"

#include "pg_harness.h"
#include "redis_harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

_Static_assert(MQR_SINK_RESULT_OK == (int)MQR_SINK_OK &&
                   MQR_SINK_RESULT_RETRY == (int)MQR_SINK_RETRY &&
                   MQR_SINK_RESULT_PERMANENT == (int)MQR_SINK_PERMANENT,
               "public and internal outcomes agree");

typedef struct {
    int calls, outcome, err, status, rows, redis_type;
    long long integer;
    char text[256], value[64], sqlstate[6];
} got_t;

static void on_done(void *arg, const mqr_sink_result_t *r)
{
    got_t *g = arg;
    g->calls++;
    g->outcome = r->outcome;
    g->err = r->err;
    g->status = r->status;
    g->rows = r->rows;
    g->redis_type = r->redis_type;
    g->integer = r->integer;
    snprintf(g->sqlstate, sizeof g->sqlstate, "%s", r->sqlstate ? r->sqlstate : "");
    if (r->text) snprintf(g->text, sizeof g->text, "%.*s", (int)r->text_len, r->text);
    if (r->rows > 0 && r->values[0]) snprintf(g->value, sizeof g->value, "%s", r->values[0]);
}

static mqr_engine_t *engine(void)
{
    mqr_engine_options_t o;
    mqr_engine_options_init(&o);
    o.listen_port = -1;
    o.data_dir = "";
    o.log_level = MQR_LOG_WARN;
    mqr_engine_t *e;
    assert_int_equal(mqr_engine_new(&e, &o, NULL, NULL), 0);
    return e;
}

static void run_until(mqr_engine_t *e, const int *n, int want)
{
    uint64_t end = uv_hrtime() + 10000000000ull;
    while (*n < want && uv_hrtime() < end)
        uv_run(mqr_engine_loop(e), UV_RUN_ONCE);
    assert_int_equal(*n, want);
}

static void test_file_and_http(void **state)
{
    (void)state;
    char dir[] = "/tmp/mqr-capi-XXXXXX", path[64], popt[80];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/out.jsonl", dir);
    snprintf(popt, sizeof popt, "path=%s", path);
    mqr_engine_t *e = engine();
    mqr_sink_client_t *f, *h, *dup;
    const char *fo[] = {popt, "name=audit", "fsync=batch", NULL};
    char *err = NULL;
    assert_int_equal(mqr_sink_open(e, "file", fo, &f, &err), 0);
    assert_int_equal(mqr_sink_open(e, "file", fo, &dup, NULL), MQR_EEXIST);
    got_t g = {0};
    assert_int_equal(mqr_sink_file_write(f, "{\"a\":1}", 7, NULL, NULL), 0);
    assert_int_equal(mqr_sink_file_write(f, "{\"b\":2}", 7, on_done, &g), 0);
    assert_int_equal(mqr_sink_file_write(f, "two\nlines", 9, on_done, &g), MQR_EINVAL);
    assert_int_equal(mqr_sink_file_flush(f, on_done, &g), 0);
    assert_int_equal(g.calls, 0); /* never inside the call */
    run_until(e, &g.calls, 2);
    assert_int_equal(g.outcome, MQR_SINK_RESULT_OK);
    FILE *fp = fopen(path, "r");
    char buf[64] = "";
    assert_int_equal(fread(buf, 1, sizeof buf - 1, fp), 16);
    fclose(fp);
    assert_string_equal(buf, "{\"a\":1}\n{\"b\":2}\n");

    const char *ho[] = {"name=hooks", "timeout_ms=2000", NULL};
    assert_int_equal(mqr_sink_open(e, "http", ho, &h, NULL), 0);
    const char *hdrs[] = {"Content-Type: application/json", NULL};
    got_t hg = {0};
    assert_int_equal(
        mqr_sink_http_request(h, "POST", "http://127.0.0.1:1/x", hdrs, "{}", 2, on_done, &hg), 0);
    assert_int_equal(mqr_sink_http_request(h, "POST", "ftp://x/", NULL, NULL, 0, on_done, &hg),
                     MQR_EINVAL);
    run_until(e, &hg.calls, 1);
    assert_int_equal(hg.outcome, MQR_SINK_RESULT_RETRY);
    assert_int_equal(hg.err, UV_ECONNREFUSED);
    assert_int_equal(hg.status, 0);
    /* the engine lists both */
    assert_non_null(mqr__sinks_find(mqr__engine_sinks(e), "audit"));
    assert_non_null(mqr__sinks_find(mqr__engine_sinks(e), "hooks"));
    mqr_sink_close(h);
    assert_null(mqr__sinks_find(mqr__engine_sinks(e), "hooks"));
    mqr_engine_free(e); /* closes the file sink */
    char cmd[96];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_bad_options(void **state)
{
    (void)state;
    mqr_engine_t *e = engine();
    mqr_sink_client_t *c;
    char *err = NULL;
    const char *o1[] = {"colour=red", NULL};
    assert_int_equal(mqr_sink_open(e, "http", o1, &c, &err), MQR_EINVAL);
    assert_string_equal(err, "unknown option 'colour'");
    free(err);
    assert_int_equal(mqr_sink_open(e, "smtp", NULL, &c, &err), MQR_EINVAL);
    assert_non_null(strstr(err, "unknown kind 'smtp'"));
    free(err);
    assert_int_equal(mqr_sink_open(e, "pg", NULL, &c, &err), MQR_EINVAL);
    assert_string_equal(err, "option conninfo is required");
    free(err);
    const char *o2[] = {"conninfo=host=x password=s3cret nonsense=1", NULL};
    assert_int_equal(mqr_sink_open(e, "pg", o2, &c, &err), MQR_EINVAL);
    assert_null(strstr(err, "s3cret"));
    free(err);
    const char *o3[] = {"port=abc", NULL};
    assert_int_equal(mqr_sink_open(e, "redis", o3, &c, &err), MQR_EINVAL);
    free(err);
    mqr_engine_free(e);
}

static void test_redis_and_pg(void **state)
{
    (void)state;
    redis_srv_t rs = {0};
    char rerr[256];
    assert_int_equal(redis_srv_start(&rs, rerr, sizeof rerr), 0);
    pg_cluster_t pg;
    assert_int_equal(pg_cluster_start(&pg), 0);
    assert_int_equal(pg_exec(&pg, "CREATE TABLE t (k text, v int)", NULL, 0), 0);
    mqr_engine_t *e = engine();

    char port[32], ci[256], ciopt[300];
    snprintf(port, sizeof port, "port=%d", rs.port);
    const char *ro[] = {port, NULL};
    mqr_sink_client_t *r, *p;
    assert_int_equal(mqr_sink_open(e, "redis", ro, &r, NULL), 0);
    const char *incr[] = {"INCRBY", "n", "5"};
    got_t g = {0};
    assert_int_equal(mqr_sink_redis_command(r, 3, incr, NULL, on_done, &g), 0);
    run_until(e, &g.calls, 1);
    assert_int_equal(g.outcome, MQR_SINK_RESULT_OK);
    assert_int_equal(g.redis_type, 3);
    assert_int_equal(g.integer, 5);
    const char *bad[] = {"LPUSH", "n", "x"}; /* n is not a list */
    assert_int_equal(mqr_sink_redis_command(r, 3, bad, NULL, on_done, &g), 0);
    run_until(e, &g.calls, 2);
    assert_int_equal(g.outcome, MQR_SINK_RESULT_PERMANENT);

    pg_conninfo(&pg, ci, sizeof ci, NULL);
    snprintf(ciopt, sizeof ciopt, "conninfo=%s", ci);
    const char *po[] = {ciopt, "name=db", NULL};
    assert_int_equal(mqr_sink_open(e, "pg", po, &p, NULL), 0);
    const char *cols[] = {"k", "v"}, *row1[] = {"a", "1"}, *row2[] = {"b", "2"};
    got_t pg1 = {0};
    assert_int_equal(mqr_sink_pg_insert(p, "t", 2, cols, row1, on_done, &pg1), 0);
    assert_int_equal(mqr_sink_pg_insert(p, "t", 2, cols, row2, on_done, &pg1), 0);
    run_until(e, &pg1.calls, 2);
    assert_int_equal(pg1.outcome, MQR_SINK_RESULT_OK);
    got_t q = {0};
    const char *params[] = {"a"};
    assert_int_equal(
        mqr_sink_pg_query(p, "SELECT sum(v) FROM t WHERE k >= $1", 1, params, on_done, &q), 0);
    run_until(e, &q.calls, 1);
    assert_int_equal(q.rows, 1);
    assert_string_equal(q.value, "3");
    got_t q2 = {0};
    assert_int_equal(mqr_sink_pg_query(p, "SELEC 1", 0, NULL, on_done, &q2), 0);
    run_until(e, &q2.calls, 1);
    assert_int_equal(q2.outcome, MQR_SINK_RESULT_PERMANENT);
    assert_string_equal(q2.sqlstate, "42601");

    /* the engine's stop answers what still waits: ECLOSED, once */
    got_t w = {0};
    assert_int_equal(mqr_sink_pg_query(p, "SELECT pg_sleep(5)", 0, NULL, on_done, &w), 0);
    mqr_engine_stop(e);
    assert_int_equal(w.calls, 1);
    assert_int_equal(w.err, MQR_ECLOSED);
    mqr_engine_free(e);
    pg_cluster_cleanup(&pg);
    redis_srv_cleanup(&rs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_file_and_http),
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_redis_and_pg),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
