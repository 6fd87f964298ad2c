/*
 * queue_durable.c — throughput of durable queues on a real SQLite file with
 * synchronous = FULL (the store's default): every loop turn's writes are one
 * transaction and one WAL fsync (group commit).
 *
 *   bench_queue_durable [messages] [directory]
 *
 * Cases: durable publish -> consume -> ack (a publisher bursting 1024
 * messages per loop turn, a consumer acking by its return value; timed until
 * the last ack is committed), and durable publish alone (timed until the last
 * publish is committed). Each prints msg/s, the store's commits and writes,
 * and the messages per commit, then a RESULT line. The directory (default: a new one under /tmp)
 * must be on the disk you mean to measure; the file is removed afterwards.
 * Not a test: it only checks that every message arrived.
 */
#include "engine.h"
#include "mqrouter.h"
#include "queue.h"
#include "store.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define BURST 1024

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct {
    mqr_engine_t *e;
    mqr_queue_t *q;
    long n, published, consumed;
    bool consume;
    bool done;
    double t_end;
} run_t;

static mqr_msg_t *build(long i)
{
    char topic[32], payload[64];
    int tl = snprintf(topic, sizeof topic, "bench/durable/%ld", i % 100);
    memset(payload, 'x', sizeof payload);
    snprintf(payload, sizeof payload, "%ld", i);
    mqr_msg_init_t in = {.topic = topic,
                         .topic_len = (size_t)tl,
                         .payload = payload,
                         .payload_len = sizeof payload,
                         .qos = 1,
                         .origin = MQR_ORIGIN_C};
    return mqr__msg_new(&in);
}

static void on_final_commit(void *arg, int status)
{
    run_t *r = arg;
    if (status < 0) {
        fprintf(stderr, "commit failed: %s\n", mqr__store_last_error(mqr__engine_store(r->e)));
        exit(1);
    }
    r->t_end = now_s();
    r->done = true;
    uv_stop(mqr_engine_loop(r->e));
}

static void finish(run_t *r)
{
    if (mqr__store_after_commit(mqr__engine_store(r->e), on_final_commit, r) < 0) exit(1);
}

static int on_msg(void *arg, mqr_queue_t *q, const mqr_queue_delivery_t *d)
{
    run_t *r = arg;
    /* the ack is written right after this returns, in this loop turn: the
     * waiter registered now covers it */
    if (++r->consumed == r->n) finish(r);
    return MQR_QUEUE_ACK;
}

static void on_idle(uv_idle_t *h)
{
    run_t *r = h->data;
    for (int i = 0; i < BURST && r->published < r->n; i++) {
        mqr_msg_t *m = build(r->published);
        if (!m || mqr__queue_publish(r->q, m, NULL, NULL) < 0) {
            fprintf(stderr, "publish failed\n");
            exit(1);
        }
        mqr_msg_unref(m);
        r->published++;
    }
    if (r->published == r->n) {
        uv_idle_stop(h);
        if (!r->consume) finish(r);
    }
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void run_case(const char *dir, const char *label, long n, bool consume)
{
    char sub[512];
    snprintf(sub, sizeof sub, "%s/%s", dir, consume ? "pca" : "pub");
    mqr_engine_options_t o;
    mqr_engine_options_init(&o);
    o.listen_port = -1;
    o.data_dir = sub;
    o.log_level = MQR_LOG_WARN;
    run_t r = {.n = n, .consume = consume};
    char *err = NULL;
    if (mqr_engine_new(&r.e, &o, NULL, &err) < 0) {
        fprintf(stderr, "engine: %s\n", err);
        exit(1);
    }
    mqr_queues_options_t qo = {.max_bytes = (size_t)2 << 30};
    if (mqr__queues_init(r.e, &qo) < 0) exit(1);
    mqr_queue_config_t c;
    mqr__queue_config_init(&c);
    c.name = "bench";
    c.durable = true;
    c.max_messages = (size_t)n + 1;
    c.max_bytes = (size_t)1 << 30;
    if (mqr__queue_new(r.e, &c, &r.q) < 0) exit(1);
    if (consume && mqr__queue_consume(r.q, on_msg, &r, 0, NULL) < 0) exit(1);
    uv_loop_t *loop = mqr_engine_loop(r.e);
    mqr__store_flush(mqr__engine_store(r.e)); /* the queue's name row */
    mqr_store_stats_t s0, s1;
    mqr__store_stats(mqr__engine_store(r.e), &s0);
    uv_idle_t idle;
    uv_idle_init(loop, &idle);
    idle.data = &r;
    double t0 = now_s();
    uv_idle_start(&idle, on_idle);
    while (!r.done)
        uv_run(loop, UV_RUN_ONCE);
    mqr__store_stats(mqr__engine_store(r.e), &s1);
    double dt = r.t_end - t0;
    unsigned long long commits = s1.commits - s0.commits;
    printf("%-44s %8.0f msg/s  (%ld in %.3f s, %llu commits, %.0f msg/commit, %llu writes)\n",
           label, (double)n / dt, n, dt, commits, commits ? (double)n / (double)commits : 0.0,
           (unsigned long long)(s1.writes - s0.writes));
    printf("RESULT bench=queue_durable case=\"%s\" per_s=%.0f messages=%ld commits=%llu "
           "writes=%llu\n",
           label, (double)n / dt, n, commits, (unsigned long long)(s1.writes - s0.writes));
    if (consume && r.consumed != n) {
        fprintf(stderr, "consumed %ld of %ld\n", r.consumed, n);
        exit(1);
    }
    uv_close((uv_handle_t *)&idle, NULL);
    mqr_engine_free(r.e);
    nftw(sub, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 200000;
    if (n <= 0) n = 200000;
    char tmp[] = "/tmp/mqr-bench-qdur-XXXXXX";
    const char *dir = argc > 2 ? argv[2] : NULL;
    if (!dir) {
        if (!mkdtemp(tmp)) {
            perror("mkdtemp");
            return 1;
        }
        dir = tmp;
    }
    mqr_log_set_level(MQR_LOG_WARN);
    printf("durable queue, SQLite synchronous=FULL, WAL, group commit per loop turn; "
           "64 B payloads, %d per burst; store in %s\n",
           BURST, dir);
    run_case(dir, "durable publish -> consume -> ack", n, true);
    run_case(dir, "durable publish alone (until committed)", n, false);
    if (dir == tmp) rmdir(tmp);
    return 0;
}
