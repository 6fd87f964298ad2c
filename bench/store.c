/*
 * bench/store.c — retained-message writes per second through the store:
 * group commit (a burst of writes per loop turn, one transaction per turn)
 * against one transaction per write (a flush after every write), under
 * synchronous FULL and NORMAL. Prints figures; it is not a test and asserts
 * nothing about them.
 *
 * usage: bench_store [dir] [writes-per-turn] [seconds-per-case]
 * The database lives in a fresh directory under dir (default "."), removed
 * afterwards: point dir at the disk you care about, not at a tmpfs.
 */
#include "store.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    mqr_store_t *s;
    uv_idle_t idle;
    int per_turn;
    int per_write; /* flush after every write */
    uint64_t deadline_ns;
    uint64_t writes;
    int failed;
    char payload[64];
} run_t;

static void on_idle(uv_idle_t *h)
{
    run_t *r = h->data;
    char topic[32];
    for (int i = 0; i < r->per_turn; i++) {
        snprintf(topic, sizeof topic, "bench/dev/%d", (int)(r->writes % 1000));
        mqr_msg_init_t in = {.topic = topic,
                             .topic_len = strlen(topic),
                             .payload = r->payload,
                             .payload_len = sizeof r->payload,
                             .qos = 1,
                             .retain = true,
                             .origin = MQR_ORIGIN_C};
        mqr_msg_t *m = mqr__msg_new(&in);
        if (!m || mqr__store_retain_set(r->s, m) != 0) r->failed = 1;
        mqr_msg_unref(m);
        if (r->per_write && mqr__store_flush(r->s) != 0) r->failed = 1;
        r->writes++;
    }
    if (r->failed || uv_hrtime() >= r->deadline_ns) uv_idle_stop(h);
}

static int run_case(const char *dir, int sync, int per_write, int per_turn, double seconds)
{
    char path[4200];
    static int n;
    snprintf(path, sizeof path, "%s/case%d.db", dir, n++);
    uv_loop_t loop;
    uv_loop_init(&loop);
    mqr_store_options_t opts;
    mqr__store_options_init(&opts);
    opts.synchronous = sync;
    run_t r = {.per_turn = per_turn, .per_write = per_write};
    memset(r.payload, 'x', sizeof r.payload);
    char *errmsg = NULL;
    if (mqr__store_open(&r.s, &loop, path, &opts, &errmsg) != 0) {
        fprintf(stderr, "bench_store: %s\n", errmsg);
        free(errmsg);
        return 1;
    }
    mqr_store_stats_t before;
    mqr__store_stats(r.s, &before);
    uv_idle_init(&loop, &r.idle);
    r.idle.data = &r;
    uint64_t start = uv_hrtime();
    r.deadline_ns = start + (uint64_t)(seconds * 1e9);
    uv_idle_start(&r.idle, on_idle);
    uv_run(&loop, UV_RUN_DEFAULT); /* returns once the last turn is committed */
    uint64_t elapsed = uv_hrtime() - start;
    mqr_store_stats_t after;
    mqr__store_stats(r.s, &after);
    uv_close((uv_handle_t *)&r.idle, NULL);
    mqr__store_close(r.s);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    if (r.failed) {
        fprintf(stderr, "bench_store: a write failed\n");
        return 1;
    }
    double secs = (double)elapsed / 1e9;
    printf("%-6s %-26s %10.0f writes/s  (%llu writes, %llu commits, %.2f s)\n",
           sync == MQR_STORE_SYNC_FULL ? "FULL" : "NORMAL",
           per_write ? "one transaction per write" : "group commit", (double)r.writes / secs,
           (unsigned long long)r.writes, (unsigned long long)(after.commits - before.commits),
           secs);
    return 0;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int main(int argc, char **argv)
{
    const char *base = argc > 1 ? argv[1] : ".";
    int per_turn = argc > 2 ? atoi(argv[2]) : 100;
    double seconds = argc > 3 ? atof(argv[3]) : 2.0;
    if (per_turn < 1 || seconds <= 0) {
        fprintf(stderr, "usage: %s [dir] [writes-per-turn] [seconds-per-case]\n", argv[0]);
        return 2;
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/mqr-bench-store-XXXXXX", base);
    if (!mkdtemp(dir)) {
        perror(dir);
        return 1;
    }
    printf("store: retained writes, 64-byte payloads, 1000 topics, %d writes per loop turn, "
           "SQLite %s, in %s\n",
           per_turn, sqlite3_libversion(), dir);
    int err = 0;
    for (int sync = MQR_STORE_SYNC_FULL; sync <= MQR_STORE_SYNC_NORMAL && !err; sync++) {
        err = run_case(dir, sync, 0, per_turn, seconds);
        if (!err) err = run_case(dir, sync, 1, per_turn, seconds);
    }
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return err;
}
