/*
 * sink_pg.c — rows per second through the PostgreSQL sink (core/sink/pg.c):
 * a throw-away PostgreSQL 15 cluster (tests/c/pg_harness.h: fsync, full
 * page writes and synchronous commit off), a readings(device text, ts
 * timestamptz, value double precision) table, and N single-row
 * mqr__pg_insert() calls kept at the sink's bounds (in flight + waiting)
 * from the done callbacks, on one loop in this thread; then rows/10 queries
 * "SELECT $1::int" the same way (one statement per round trip).
 *
 *   bench_sink_pg [rows=1000000] [connections=2] [batch_rows=1000] [batch_ms=5]
 *
 * Prints one line for people and one starting with RESULT for scripts, and
 * checks count(*) at the end. Not a test. The server shares the machine's
 * cores with this process: on 2 cores both compete.
 */
#include "../tests/c/pg_harness.h"
#include "rules_load.h"
#include "pg.h"

#include <uv.h>

typedef struct {
    mqr_pg_t *p;
    long n, submitted, done, failed;
    uint64_t cap; /* in flight + waiting: what the sink takes */
    char last_error[256];
} run_t;

static void on_row(void *arg, const mqr_pg_result_t *r);
static void on_query(void *arg, const mqr_pg_result_t *r);

/* Submits rows until the bounds or N are reached. */
static void pump(run_t *run)
{
    static const char *const cols[] = {"device", "ts", "value"};
    while (run->submitted < run->n && (uint64_t)(run->submitted - run->done) < run->cap) {
        long i = run->submitted;
        char device[16], ts[48], value[32];
        snprintf(device, sizeof device, "dev-%ld", i % 1000);
        snprintf(ts, sizeof ts, "2026-12-07 %02ld:%02ld:%02ld.%03ld+00", (i / 3600000) % 24,
                 (i / 60000) % 60, (i / 1000) % 60, i % 1000);
        snprintf(value, sizeof value, "%ld.%02ld", i % 100, i % 97);
        const char *row[] = {device, ts, value};
        char why[128];
        int rc = mqr__pg_insert(run->p, "readings", 3, cols, row, on_row, run, why, sizeof why);
        if (rc == MQR_EFULL) break;
        if (rc != 0) {
            fprintf(stderr, "insert: %d %s\n", rc, why);
            exit(1);
        }
        run->submitted++;
    }
}

/* Submits queries "SELECT $1::int" until the bounds or N are reached. */
static void pump_queries(run_t *run)
{
    while (run->submitted < run->n && (uint64_t)(run->submitted - run->done) < run->cap) {
        char v[24];
        snprintf(v, sizeof v, "%ld", run->submitted);
        const char *params[] = {v};
        int rc = mqr__pg_query(run->p, "SELECT $1::int", 1, params, NULL, on_query, run, NULL, 0);
        if (rc != 0) {
            fprintf(stderr, "query: %d\n", rc);
            exit(1);
        }
        run->submitted++;
    }
}

static void on_query(void *arg, const mqr_pg_result_t *r)
{
    run_t *run = arg;
    run->done++;
    if (r->outcome != MQR_SINK_OK || r->rows != 1) run->failed++;
    pump_queries(run);
}

static void on_row(void *arg, const mqr_pg_result_t *r)
{
    run_t *run = arg;
    run->done++;
    if (r->outcome != MQR_SINK_OK) {
        run->failed++;
        snprintf(run->last_error, sizeof run->last_error, "%s", r->reason ? r->reason : "?");
    }
    pump(run);
}

/* The upper bound (ms) of the bucket where fraction q of the answers fall. */
static double hist_quantile_ms(const mqr_admin_hist_t *h, double q)
{
    static const double le[] = {0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000};
    uint64_t want = (uint64_t)((double)h->count * q), seen = 0;
    for (int i = 0; i < MQR_ADMIN_LAT_NBOUNDS; i++) {
        seen += h->bucket[i];
        if (seen >= want) return le[i];
    }
    return -1; /* above 1 s */
}

/* ---- from a rules route ---- */

/* Rows from a Lua route: db:send_insert (no wait) from a plain route, or,
 * through a durable queue (a SQLite file in a temp dir), mq.deliver in
 * batches of 256 messages, one db:insert of their rows waiting for the
 * commit before the acks. Ends when the rules
 * counted every row answered (sink counters, or the queue's acks). */
static int rules_case(pg_cluster_t *cluster, long n, bool queued)
{
    char ci[256], code[2048], dir[] = "/tmp/mqr-bench-pgq-XXXXXX";
    pg_conninfo(cluster, ci, sizeof ci, NULL);
    if (queued && !mkdtemp(dir)) return 1;
    snprintf(code, sizeof code,
             "local mq = require 'mqrouter'\n"
             "local db = mq.pg{ conninfo = %s%s%s, max_queued = 10000000, timeout = 60 }\n"
             "%s\n",
             "[[", ci, "]]",
             queued ? "local q = mq.queue('to-pg', { durable = true, max_messages = 10000000, "
                      "max_memory = 4000000000 })\n"
                      "mq.route('sensors/#', q)\n"
                      "mq.deliver(q, function(list)\n"
                      "  local rows = {}\n"
                      "  for i, msg in ipairs(list) do\n"
                      "    rows[i] = { device = msg.topic, value = tonumber(msg.payload) }\n"
                      "  end\n"
                      "  return db:insert('readings', rows)\n"
                      "end, { batch = 256, concurrency = 8 })\n"
                      "mq.every(0.01, function()\n"
                      "  local s = q:stats()\n"
                      "  if s.acked >= N then mq.publish('bench/done', tostring(s.acked)) end\n"
                      "end)"
                    : "mq.route('sensors/#', function(msg)\n"
                      "  assert(db:send_insert('readings', { device = msg.topic, value = "
                      "tonumber(msg.payload) }))\n"
                      "end)\n"
                      "mq.every(0.01, function()\n"
                      "  local s = db:stats()\n"
                      "  if s.ok + s.retried + s.failed >= N then mq.publish('bench/done', "
                      "tostring(s.ok)) end\n"
                      "end)");
    char full[2200];
    snprintf(full, sizeof full, "N = %ld\n%s", n, code);
    mqr_engine_t *e = rl_engine(full, queued ? dir : "");
    rl_result_t res;
    rl_run(e, n, queued ? 1 : 0, &res);
    mqr_engine_free(e);
    if (queued) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0) return 1;
    }
    long ok = atol(res.done);
    const char *label =
        queued ? "durable queue, mq.deliver insert, batch 256" : "route, send_insert";
    printf("%-34s %10.0f rows/s  %5.2f us engine cpu/row (%ld ok of %ld)\n", label, n / res.seconds,
           res.cpu / n * 1e6, ok, n);
    printf("RESULT bench=sink_pg case=\"%s\" rows=%ld ok=%ld rows_per_s=%.0f us_cpu_per_row=%.3f\n",
           label, n, ok, n / res.seconds, res.cpu / n * 1e6);
    return ok >= n ? 0 : 1;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    uint32_t conns = argc > 2 ? (uint32_t)atoi(argv[2]) : 2;
    uint32_t batch = argc > 3 ? (uint32_t)atoi(argv[3]) : 1000;
    uint32_t batch_ms = argc > 4 ? (uint32_t)atoi(argv[4]) : 5;
    pg_cluster_t cluster;
    if (pg_cluster_start(&cluster) != 0) {
        pg_cluster_cleanup(&cluster);
        return 1;
    }
    if (pg_exec(&cluster,
                "CREATE TABLE readings (device text, ts timestamptz, value double precision)", NULL,
                0) != 0) {
        pg_cluster_cleanup(&cluster);
        return 1;
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    char ci[256];
    pg_conninfo(&cluster, ci, sizeof ci, NULL);
    mqr_pg_opts_t o = {.conninfo = ci,
                       .connections = conns,
                       .batch_rows = batch,
                       .batch_ms = batch_ms,
                       .timeout_ms = 60000};
    run_t run = {.n = n};
    char *err = NULL;
    if (mqr__pg_new(&loop, &o, &run.p, &err) != 0) {
        fprintf(stderr, "pg: %s\n", err ? err : "?");
        free(err);
        pg_cluster_cleanup(&cluster);
        return 1;
    }
    mqr_sink_t *s = mqr__pg_sink(run.p);
    run.cap = (uint64_t)s->max_in_flight + s->max_queued;
    /* wait for the connections, so that connecting is not timed */
    mqr_pg_stats_t st;
    do {
        uv_run(&loop, UV_RUN_ONCE);
        mqr__pg_stats(run.p, &st);
    } while (st.connects < conns);

    struct timespec c0, c1;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
    uint64_t t0 = uv_hrtime();
    pump(&run);
    while (run.done < run.n)
        uv_run(&loop, UV_RUN_ONCE);
    double dt = (double)(uv_hrtime() - t0) / 1e9;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
    double cpu = (double)(c1.tv_sec - c0.tv_sec) + (double)(c1.tv_nsec - c0.tv_nsec) / 1e9;
    mqr__pg_stats(run.p, &st);
    double p50 = hist_quantile_ms(&s->latency, 0.5), p99 = hist_quantile_ms(&s->latency, 0.99);
    double mean_ms =
        s->latency.count ? (double)s->latency.sum_ns / (double)s->latency.count / 1e6 : 0;

    /* queries: one statement per round trip on each connection */
    run_t q = {.p = run.p, .n = n / 10, .cap = run.cap};
    t0 = uv_hrtime();
    pump_queries(&q);
    while (q.done < q.n)
        uv_run(&loop, UV_RUN_ONCE);
    double qdt = (double)(uv_hrtime() - t0) / 1e9;
    mqr__pg_close(run.p);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);

    char count[32] = "?";
    pg_exec(&cluster, "SELECT count(*) FROM readings", count, sizeof count);
    int rules_rc = rules_case(&cluster, n / 2, false);
    if (rules_rc == 0) rules_rc = rules_case(&cluster, n / 5, true);
    pg_cluster_cleanup(&cluster);

    printf("sink_pg: %ld rows in %.2f s = %.0f rows/s (%u connections, batches of up to %u rows, "
           "%llu statements, %ld failed%s%s), table holds %s rows, client CPU %.2f s, latency "
           "mean %.1f ms p50 <= %.1f ms p99 <= %.1f ms\n",
           n, dt, (double)n / dt, conns, batch, (unsigned long long)st.statements, run.failed,
           run.failed ? ": " : "", run.last_error, count, cpu, mean_ms, p50, p99);
    printf("RESULT bench=sink_pg case=\"insert\" rows=%ld connections=%u batch_rows=%u "
           "batch_ms=%u rows_per_s=%.0f statements=%llu failed=%ld table_rows=%s "
           "client_cpu_s=%.2f seconds=%.2f latency_mean_ms=%.1f latency_p50_le_ms=%.1f "
           "latency_p99_le_ms=%.1f\n",
           n, conns, batch, batch_ms, (double)n / dt, (unsigned long long)st.statements, run.failed,
           count, cpu, dt, mean_ms, p50, p99);
    printf("sink_pg: %ld queries SELECT $1::int in %.2f s = %.0f queries/s (%ld failed)\n", q.n,
           qdt, (double)q.n / qdt, q.failed);
    printf("RESULT bench=sink_pg case=\"query\" queries=%ld connections=%u queries_per_s=%.0f "
           "failed=%ld seconds=%.2f\n",
           q.n, conns, (double)q.n / qdt, q.failed, qdt);
    return run.failed || q.failed || atol(count) != n || rules_rc;
}
