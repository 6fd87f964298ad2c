/*
 * test_sink_redis.c — the Redis sink (core/sink/redis.c) against a real
 * redis-server from Debian on a free loopback port: binary-safe round
 * trips, streams, error replies and their classification, 10 000
 * pipelined commands in order, the bounds, the server killed and
 * restarted, a slow server and the late replies after a timeout, AUTH
 * right and wrong (no password in anything shown), and close with
 * commands in flight. Waits run the loop until a condition or a deadline.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>
#include <uv.h>

#include "redis.h"
#include "redis_harness.h"

/* ---- fixture: a loop, a server, a client ------------------------------- */

typedef struct {
    uv_loop_t loop;
    uv_timer_t tick; /* wakes UV_RUN_ONCE so that deadlines are checked */
    redis_srv_t srv;
    mqr_redis_t *r;
    int ups, downs;
    char down_reason[256];
} fx_t;

static void on_tick(uv_timer_t *t)
{
    (void)t;
}

static void on_state(void *arg, mqr_sink_t *s, bool up, const char *reason)
{
    fx_t *f = arg;
    (void)s;
    if (up) {
        f->ups++;
    } else {
        f->downs++;
        snprintf(f->down_reason, sizeof f->down_reason, "%s", reason ? reason : "");
    }
}

/* Runs the loop until pred(arg) or timeout_ms; true when pred held. */
static bool run_until(fx_t *f, bool (*pred)(void *), void *arg, int timeout_ms)
{
    uint64_t deadline = rh_now_ms() + (uint64_t)timeout_ms;
    while (!pred(arg)) {
        if (rh_now_ms() >= deadline) return false;
        uv_run(&f->loop, UV_RUN_ONCE);
    }
    return true;
}

static bool is_up(void *arg)
{
    fx_t *f = arg;
    return f->r && mqr__redis_sink(f->r)->up;
}

static void srv_start(fx_t *f)
{
    char err[256];
    if (redis_srv_start(&f->srv, err, sizeof err) != 0) fail_msg("%s", err);
}

static void client_new(fx_t *f, mqr_redis_opts_t *o)
{
    char *err = NULL;
    if (!o->port) o->port = f->srv.port;
    if (!o->backoff_max_ms) o->backoff_max_ms = 400;
    int rc = mqr__redis_new(&f->loop, o, &f->r, &err);
    if (rc != 0) fail_msg("mqr__redis_new: %d %s", rc, err ? err : "");
    mqr_sink_t *s = mqr__redis_sink(f->r);
    s->on_state = on_state;
    s->state_arg = f;
}

static void client_up(fx_t *f, mqr_redis_opts_t *o)
{
    client_new(f, o);
    assert_true(run_until(f, is_up, f, 3000));
}

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    uv_timer_init(&f->loop, &f->tick);
    uv_timer_start(&f->tick, on_tick, 10, 10);
    *state = f;
    return 0;
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

static int teardown(void **state)
{
    fx_t *f = *state;
    mqr__redis_close(f->r);
    f->r = NULL;
    uv_close((uv_handle_t *)&f->tick, NULL);
    /* every handle ours or hiredis' closes by itself: nothing left over */
    for (int i = 0; i < 100 && uv_loop_alive(&f->loop); i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    bool leftover = uv_loop_alive(&f->loop);
    uv_walk(&f->loop, close_walk, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&f->loop);
    redis_srv_cleanup(&f->srv);
    free(f);
    assert_false(leftover);
    assert_int_equal(rc, 0);
    return 0;
}

/* ---- results ------------------------------------------------------------- */

typedef struct {
    int calls;
    mqr_sink_outcome_t outcome;
    int err;
    char reason[256];
    bool has_reply;
    int type;
    long long integer;
    char str[256];
    size_t len;
    size_t elements;
    double seconds;
} res_t;

static void on_done(void *arg, const mqr_redis_result_t *r)
{
    res_t *x = arg;
    x->calls++;
    x->outcome = r->outcome;
    x->err = r->err;
    snprintf(x->reason, sizeof x->reason, "%s", r->reason ? r->reason : "");
    x->seconds = r->seconds;
    x->has_reply = r->reply != NULL;
    if (r->reply) {
        x->type = r->reply->type;
        x->integer = r->reply->integer;
        x->len = r->reply->len;
        x->elements = r->reply->elements;
        if (r->reply->str) memcpy(x->str, r->reply->str, r->reply->len < 255 ? r->reply->len : 255);
    }
}

static bool res_done(void *arg)
{
    return ((res_t *)arg)->calls > 0;
}

static int cmd(fx_t *f, res_t *x, int argc, const char *const *argv, const size_t *lens)
{
    memset(x, 0, sizeof *x);
    char why[128];
    return mqr__redis_command(f->r, argc, argv, lens, on_done, x, why, sizeof why);
}

/* Sends and waits for the answer (3 s). */
static void call(fx_t *f, res_t *x, int argc, const char *const *argv, const size_t *lens)
{
    assert_int_equal(cmd(f, x, argc, argv, lens), 0);
    assert_int_equal(x->calls, 0); /* never inside the call */
    assert_true(run_until(f, res_done, x, 3000));
    assert_int_equal(x->calls, 1);
}

#define ARGV(...) ((const char *const[]){__VA_ARGS__})
#define NARGS(...) ((int)(sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *)))
#define CALL(f, x, ...) call(f, x, NARGS(__VA_ARGS__), ARGV(__VA_ARGS__), NULL)

/* ---- the cases ------------------------------------------------------------- */

static void test_set_get_binary(void **state)
{
    fx_t *f = *state;
    srv_start(f);
    mqr_redis_opts_t o = {.name = "cache", .host = "localhost"}; /* resolved on the loop */
    client_up(f, &o);
    mqr_sink_t *s = mqr__redis_sink(f->r);
    char want[64];
    snprintf(want, sizeof want, "redis://localhost:%d/0", f->srv.port);
    assert_string_equal(s->target, want);
    assert_string_equal(s->name, "cache");
    assert_string_equal(s->kind, "redis");
    assert_int_equal(f->ups, 1);

    static const char value[] = {'a', '\0', 'b', '\xff', '\0', 'z'};
    const char *argv[] = {"SET", "bin\0key", value};
    size_t lens[] = {3, 7, sizeof value};
    res_t x;
    call(f, &x, 3, argv, lens);
    assert_int_equal(x.outcome, MQR_SINK_OK);
    assert_int_equal(x.type, MQR_REDIS_STATUS);
    assert_string_equal(x.str, "OK");
    assert_null(x.reason[0] ? x.reason : NULL);

    const char *get[] = {"GET", "bin\0key"};
    size_t glens[] = {3, 7};
    call(f, &x, 2, get, glens);
    assert_int_equal(x.outcome, MQR_SINK_OK);
    assert_int_equal(x.type, MQR_REDIS_STRING);
    assert_int_equal(x.len, sizeof value);
    assert_memory_equal(x.str, value, sizeof value);
    assert_true(x.seconds > 0 && x.seconds < 3);

    CALL(f, &x, "GET", "bin"); /* another key: the NUL counts */
    assert_int_equal(x.outcome, MQR_SINK_OK);
    assert_int_equal(x.type, MQR_REDIS_NIL);

    assert_int_equal(s->requests, 3);
    assert_int_equal(s->ok, 3);
    assert_int_equal(s->in_flight, 0);
    assert_int_equal(s->latency.count, 3);
}

typedef struct {
    int calls;
    bool shape_ok;
    char id[256];
} xrange_t;

static void on_xrange(void *arg, const mqr_redis_result_t *r)
{
    xrange_t *x = arg;
    x->calls++;
    const mqr_redis_reply_t *a = r->reply;
    /* [[id, [temp, 21.5, unit, C]]] */
    x->shape_ok = r->outcome == MQR_SINK_OK && a && a->type == MQR_REDIS_ARRAY &&
                  a->elements == 1 && a->element[0]->type == MQR_REDIS_ARRAY &&
                  a->element[0]->elements == 2;
    if (!x->shape_ok) return;
    const mqr_redis_reply_t *e = a->element[0];
    const mqr_redis_reply_t *fv = e->element[1];
    x->shape_ok = e->element[0]->type == MQR_REDIS_STRING &&
                  strcmp(e->element[0]->str, x->id) == 0 && fv->type == MQR_REDIS_ARRAY &&
                  fv->elements == 4 && strcmp(fv->element[0]->str, "temp") == 0 &&
                  strcmp(fv->element[1]->str, "21.5") == 0 &&
                  strcmp(fv->element[2]->str, "unit") == 0 && strcmp(fv->element[3]->str, "C") == 0;
}

static bool xrange_done(void *arg)
{
    return ((xrange_t *)arg)->calls > 0;
}

static void test_xadd_xrange(void **state)
{
    fx_t *f = *state;
    srv_start(f);
    mqr_redis_opts_t o = {0};
    client_up(f, &o);
    res_t x;
    CALL(f, &x, "XADD", "sensors", "*", "temp", "21.5", "unit", "C");
    assert_int_equal(x.outcome, MQR_SINK_OK);
    assert_int_equal(x.type, MQR_REDIS_STRING);
    assert_non_null(strchr(x.str, '-')); /* <ms>-<seq> */

    xrange_t xr = {0};
    snprintf(xr.id, sizeof xr.id, "%s", x.str);
    assert_int_equal(mqr__redis_command(f->r, 4, ARGV("XRANGE", "sensors", "-", "+"), NULL,
                                        on_xrange, &xr, NULL, 0),
                     0);
    assert_true(run_until(f, xrange_done, &xr, 3000));
    assert_int_equal(xr.calls, 1);
    assert_true(xr.shape_ok);
}

static void test_error_replies(void **state)
{
    fx_t *f = *state;
    srv_start(f);
    mqr_redis_opts_t o = {0};
    client_up(f, &o);
    mqr_sink_t *s = mqr__redis_sink(f->r);
    res_t x;
    CALL(f, &x, "SET", "k", "v");
    CALL(f, &x, "LPUSH", "k", "x");
    assert_int_equal(x.outcome, MQR_SINK_PERMANENT);
    assert_int_equal(x.err, MQR_EINVAL);
    assert_int_equal(x.type, MQR_REDIS_ERROR);
    assert_true(strncmp(x.reason, "WRONGTYPE", 9) == 0);
    assert_int_equal(s->errors[MQR_SINK_ERR_REQUEST], 1);
    assert_string_equal(s->last_error, x.reason);

    CALL(f, &x, "NOSUCHCOMMAND", "a");
    assert_int_equal(x.outcome, MQR_SINK_PERMANENT);
    assert_true(strncmp(x.reason, "ERR unknown command", 19) == 0);
    CALL(f, &x, "XGROUP", "CREATE", "st", "g", "$", "MKSTREAM");
    assert_int_equal(x.outcome, MQR_SINK_OK);
    CALL(f, &x, "XGROUP", "CREATE", "st", "g", "$"); /* BUSYGROUP is no BUSY */
    assert_int_equal(x.outcome, MQR_SINK_PERMANENT);
    assert_true(strncmp(x.reason, "BUSYGROUP", 9) == 0);

    /* a replica refuses writes for now: -READONLY is worth retrying */
    CALL(f, &x, "REPLICAOF", "127.0.0.1", "1");
    assert_int_equal(x.outcome, MQR_SINK_OK);
    CALL(f, &x, "SET", "k2", "v");
    assert_int_equal(x.outcome, MQR_SINK_RETRY);
    assert_int_equal(x.err, UV_EAGAIN);
    assert_true(strncmp(x.reason, "READONLY", 8) == 0);
    assert_int_equal(s->errors[MQR_SINK_ERR_SERVER], 1);
    CALL(f, &x, "REPLICAOF", "NO", "ONE");
    CALL(f, &x, "SET", "k2", "v");
    assert_int_equal(x.outcome, MQR_SINK_OK);

    /* refused calls: no callback, ever */
    char why[128] = "";
    assert_int_equal(mqr__redis_command(f->r, 0, ARGV("GET"), NULL, on_done, &x, why, sizeof why),
                     MQR_EINVAL);
    assert_int_equal(mqr__redis_command(f->r, 1, ARGV(""), NULL, on_done, &x, why, sizeof why),
                     MQR_EINVAL);
    assert_true(strstr(why, "empty") != NULL);
    assert_int_equal(
        mqr__redis_command(f->r, 2, ARGV("subscribe", "ch"), NULL, on_done, &x, why, sizeof why),
        MQR_EINVAL);
    assert_int_equal(mqr__redis_command(f->r, 3, ARGV("CLIENT", "reply", "OFF"), NULL, on_done, &x,
                                        why, sizeof why),
                     MQR_EINVAL);
    assert_int_equal(
        mqr__redis_command(f->r, 2, ARGV("SELECT", "2"), NULL, on_done, &x, why, sizeof why),
        MQR_EINVAL);
    assert_true(strstr(why, "db option") != NULL);
    x.calls = 0;
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(x.calls, 0);
    assert_int_equal(s->in_flight + s->queued, 0);
}

/* ---- pipelining and bounds ----------------------------------------------- */

typedef struct {
    int n, answered, in_order, ok;
    int *calls; /* per command */
    long long last;
} many_t;

typedef struct {
    many_t *m;
    int i;
} slot_t;

static void on_many(void *arg, const mqr_redis_result_t *r)
{
    slot_t *sl = arg;
    many_t *m = sl->m;
    m->calls[sl->i]++;
    m->answered++;
    if (r->outcome == MQR_SINK_OK) m->ok++;
    if (r->reply && r->reply->type == MQR_REDIS_INTEGER) {
        if (r->reply->integer == sl->i + 1 && r->reply->integer == m->last + 1) m->in_order++;
        m->last = r->reply->integer;
    }
}

static bool many_done(void *arg)
{
    many_t *m = arg;
    return m->answered >= m->n;
}

static void test_pipeline_10000(void **state)
{
    fx_t *f = *state;
    srv_start(f);
    mqr_redis_opts_t o = {0};
    client_up(f, &o);
    mqr_sink_t *s = mqr__redis_sink(f->r);
    enum { N = 10000 };
    many_t m = {.n = N, .calls = calloc(N, sizeof(int))};
    slot_t *slots = calloc(N, sizeof *slots);
    for (int i = 0; i < N; i++) {
        slots[i] = (slot_t){&m, i};
        assert_int_equal(
            mqr__redis_command(f->r, 2, ARGV("INCR", "counter"), NULL, on_many, &slots[i], NULL, 0),
            0);
    }
    assert_int_equal(s->in_flight, 1024); /* written without waiting for answers */
    assert_int_equal(s->queued, N - 1024);
    assert_int_equal(m.answered, 0);
    assert_true(run_until(f, many_done, &m, 8000));
    assert_int_equal(m.ok, N);
    assert_int_equal(m.in_order, N);
    for (int i = 0; i < N; i++)
        assert_int_equal(m.calls[i], 1);
    res_t x;
    CALL(f, &x, "GET", "counter");
    assert_string_equal(x.str, "10000");
    assert_int_equal(s->in_flight + s->queued, 0);
    free(m.calls);
    free(slots);
}

static void test_bounds_efull(void **state)
{
    fx_t *f = *state;
    srv_start(f);
    mqr_redis_opts_t o = {.max_in_flight = 4, .max_queued = 8};
    client_up(f, &o);
    mqr_sink_t *s = mqr__redis_sink(f->r);
    enum { N = 20 };
    int calls[N] = {0};
    many_t m = {.n = 12, .calls = calls};
    slot_t slots[N];
    int refused = 0;
    char why[128];
    for (int i = 0; i < N; i++) {
        slots[i] = (slot_t){&m, i};
        int rc = mqr__redis_command(f->r, 2, ARGV("INCR", "c"), NULL, on_many, &slots[i], why,
                                    sizeof why);
        if (rc == MQR_EFULL)
            refused++;
        else
            assert_int_equal(rc, 0);
    }
    assert_int_equal(refused, 8);
    assert_true(strstr(why, "too many") != NULL);
    assert_int_equal(s->errors[MQR_SINK_ERR_FULL], 8);
    assert_int_equal(s->in_flight, 4);
    assert_int_equal(s->queued, 8);
    assert_true(run_until(f, many_done, &m, 3000));
    uv_run(&f->loop, UV_RUN_NOWAIT);
    for (int i = 0; i < N; i++)
        assert_int_equal(calls[i], i < 12 ? 1 : 0);
    assert_int_equal(m.ok, 12);
    assert_int_equal(m.in_order, 12);
    assert_int_equal(s->requests, 12);
}

/* ---- the server goes away ------------------------------------------------- */

typedef struct {
    int calls, ok, retry_connect, eclosed;
    int err;
    char reason[256];
} tally_t;

static void on_tally(void *arg, const mqr_redis_result_t *r)
{
    tally_t *t = arg;
    t->calls++;
    if (r->outcome == MQR_SINK_OK) t->ok++;
    if (r->outcome == MQR_SINK_RETRY && r->err == UV_ECONNRESET) t->retry_connect++;
    if (r->outcome == MQR_SINK_RETRY && r->err == MQR_ECLOSED) t->eclosed++;
    t->err = r->err;
    snprintf(t->reason, sizeof t->reason, "%s", r->reason ? r->reason : "");
}

typedef struct {
    tally_t *t;
    int want;
} want_t;

static bool tally_reached(void *arg)
{
    want_t *w = arg;
    return w->t->calls >= w->want;
}

static bool is_down(void *arg)
{
    fx_t *f = arg;
    return f->downs > 0;
}

static void test_kill_restart(void **state)
{
    fx_t *f = *state;
    srv_start(f);
    mqr_redis_opts_t o = {.backoff_min_ms = 50, .backoff_max_ms = 200};
    client_up(f, &o);
    mqr_sink_t *s = mqr__redis_sink(f->r);

    /* in flight when it dies: a blocked BLPOP and commands behind it */
    tally_t t = {0};
    assert_int_equal(
        mqr__redis_command(f->r, 3, ARGV("BLPOP", "nothing", "5"), NULL, on_tally, &t, NULL, 0), 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(
            mqr__redis_command(f->r, 2, ARGV("INCR", "n"), NULL, on_tally, &t, NULL, 0), 0);
    assert_int_equal(s->in_flight, 6);
    for (int i = 0; i < 5; i++) /* let hiredis write them */
        uv_run(&f->loop, UV_RUN_NOWAIT);
    redis_srv_kill(&f->srv);
    want_t w = {&t, 6};
    if (!run_until(f, tally_reached, &w, 3000))
        fail_msg("calls %d up %d last_error %s in_flight %u", t.calls, s->up, s->last_error,
                 s->in_flight);
    assert_int_equal(t.calls, 6);
    assert_int_equal(t.retry_connect, 6);
    assert_int_equal(s->errors[MQR_SINK_ERR_CONNECT], 6);
    assert_true(run_until(f, is_down, f, 1000));
    assert_int_equal(f->downs, 1);
    assert_false(s->up);
    assert_true(f->down_reason[0] != '\0');

    /* issued while down: waits, then goes out after the reconnect */
    tally_t later = {0};
    assert_int_equal(
        mqr__redis_command(f->r, 3, ARGV("SET", "after", "yes"), NULL, on_tally, &later, NULL, 0),
        0);
    assert_int_equal(s->queued, 1);
    assert_int_equal(s->in_flight, 0);
    want_t w1 = {&later, 1};
    /* a few refused attempts first (backoff), then the server is back */
    assert_false(run_until(f, tally_reached, &w1, 300));
    assert_true(strstr(s->last_error, "refused") != NULL ||
                strstr(s->last_error, "Connection") != NULL);
    srv_start(f); /* same port */
    assert_true(run_until(f, tally_reached, &w1, 3000));
    assert_int_equal(later.ok, 1);
    assert_true(s->up);
    assert_int_equal(f->ups, 2);
    assert_int_equal(s->reconnects, 1);
    res_t x;
    CALL(f, &x, "GET", "after");
    assert_string_equal(x.str, "yes");
}

static void test_timeout_late_reply(void **state)
{
    fx_t *f = *state;
    srv_start(f);
    mqr_redis_opts_t o = {.timeout_ms = 300};
    client_up(f, &o);
    mqr_sink_t *s = mqr__redis_sink(f->r);
    res_t slow, behind;
    assert_int_equal(cmd(f, &slow, 3, ARGV("DEBUG", "SLEEP", "1"), NULL), 0);
    assert_int_equal(cmd(f, &behind, 2, ARGV("ECHO", "behind"), NULL), 0);
    uint64_t t0 = rh_now_ms();
    assert_true(run_until(f, res_done, &behind, 2000));
    assert_true(rh_now_ms() - t0 < 900); /* well before the server wakes */
    assert_int_equal(slow.calls, 1);
    assert_int_equal(slow.outcome, MQR_SINK_RETRY);
    assert_int_equal(slow.err, UV_ETIMEDOUT);
    assert_false(slow.has_reply);
    assert_true(strstr(slow.reason, "no reply within 300 ms") != NULL);
    assert_int_equal(behind.outcome, MQR_SINK_RETRY);
    assert_int_equal(s->errors[MQR_SINK_ERR_TIMEOUT], 2);
    assert_int_equal(s->in_flight, 0);

    /* Once it wakes, the late "+OK" and "behind" go to their tombstones:
     * each new command gets its own answer. Ask until one is in time. */
    res_t x = {0};
    char tag[16] = "";
    for (int i = 0; i < 20; i++) {
        snprintf(tag, sizeof tag, "n%d", i);
        assert_int_equal(cmd(f, &x, 2, ARGV("ECHO", tag), NULL), 0);
        assert_true(run_until(f, res_done, &x, 2000));
        if (x.outcome == MQR_SINK_OK) break;
    }
    assert_int_equal(x.outcome, MQR_SINK_OK);
    assert_string_equal(x.str, tag);
    CALL(f, &x, "ECHO", "again");
    assert_string_equal(x.str, "again");
    assert_true(s->up);
    assert_int_equal(slow.calls, 1);
    assert_int_equal(behind.calls, 1);
    assert_int_equal(f->downs, 0); /* a slow server is no broken connection */
}

/* A request that waited past its deadline fails from the waiting list: it
 * is not written just to be failed (when the one before it times out and
 * frees the slot in the same turn). */
static void test_waiting_expires_unsent(void **state)
{
    fx_t *f = *state;
    srv_start(f);
    mqr_redis_opts_t o = {.max_in_flight = 1, .timeout_ms = 300};
    client_up(f, &o);
    mqr_sink_t *s = mqr__redis_sink(f->r);
    res_t slow, w;
    assert_int_equal(cmd(f, &slow, 3, ARGV("DEBUG", "SLEEP", "1"), NULL), 0);
    assert_int_equal(cmd(f, &w, 2, ARGV("ECHO", "w"), NULL), 0);
    assert_int_equal(s->queued, 1);
    /* The loop thread stalls past both deadlines (an engine busy elsewhere):
     * both are due in the same timer pass, whatever ms each was given. */
    uint64_t until = rh_now_ms() + 400;
    while (rh_now_ms() < until) {
        struct timespec ts = {0, 5 * 1000000L};
        nanosleep(&ts, NULL);
    }
    assert_true(run_until(f, res_done, &w, 2000));
    assert_int_equal(slow.calls, 1);
    assert_true(strstr(slow.reason, "no reply within 300 ms") != NULL);
    assert_true(strstr(w.reason, "no slot within 300 ms") != NULL);
    assert_int_equal(s->in_flight + s->queued, 0);
    res_t x = {0};
    for (int i = 0; i < 20; i++) { /* until the server is awake */
        assert_int_equal(cmd(f, &x, 2, ARGV("ECHO", "x"), NULL), 0);
        assert_true(run_until(f, res_done, &x, 2000));
        if (x.outcome == MQR_SINK_OK) break;
    }
    assert_int_equal(x.outcome, MQR_SINK_OK);
    assert_string_equal(x.str, "x");
    /* its one slot timed out: the pipeline is full of the unanswered */
    assert_int_equal(f->downs, 1);
    assert_true(strstr(f->down_reason, "1 commands unanswered") != NULL);
}

static bool up_again(void *arg)
{
    fx_t *f = arg;
    return f->ups >= 2;
}

/* As many timed out as the pipeline holds: the connection is replaced. */
static void test_stuck_connection_replaced(void **state)
{
    fx_t *f = *state;
    srv_start(f);
    mqr_redis_opts_t o = {.max_in_flight = 2, .timeout_ms = 200, .backoff_min_ms = 20};
    client_up(f, &o);
    mqr_sink_t *s = mqr__redis_sink(f->r);
    res_t a, b;
    assert_int_equal(cmd(f, &a, 3, ARGV("DEBUG", "SLEEP", "1"), NULL), 0);
    assert_int_equal(cmd(f, &b, 2, ARGV("ECHO", "b"), NULL), 0);
    assert_true(run_until(f, is_down, f, 2000));
    assert_int_equal(a.err, UV_ETIMEDOUT);
    assert_int_equal(b.err, UV_ETIMEDOUT);
    assert_true(strstr(f->down_reason, "2 commands unanswered past 200 ms") != NULL);
    assert_true(run_until(f, up_again, f, 3000)); /* once the server is awake */
    assert_int_equal(s->reconnects, 1);
    res_t x;
    CALL(f, &x, "ECHO", "fresh");
    assert_string_equal(x.str, "fresh");
}

static bool error_has(void *arg)
{
    fx_t *f = arg;
    return strstr(mqr__redis_sink(f->r)->last_error, "no answer within 200 ms") != NULL;
}

/* A peer that takes the TCP connection and never answers PING. */
static void test_connect_timeout(void **state)
{
    fx_t *f = *state;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 8), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    mqr_redis_opts_t o = {.port = ntohs(a.sin_port), .connect_timeout_ms = 200};
    client_new(f, &o);
    bool seen = run_until(f, error_has, f, 2000);
    close(fd);
    assert_true(seen);
    assert_false(mqr__redis_sink(f->r)->up);
}

/* ---- AUTH -------------------------------------------------------------------- */

#define PW "s3cr3t-Pa55word"

static void test_auth_right(void **state)
{
    fx_t *f = *state;
    f->srv.password = PW;
    srv_start(f);
    mqr_redis_opts_t o = {.password = PW, .db = 3};
    client_up(f, &o);
    mqr_sink_t *s = mqr__redis_sink(f->r);
    assert_null(strstr(s->target, PW));
    char want[64];
    snprintf(want, sizeof want, "redis://127.0.0.1:%d/3", f->srv.port);
    assert_string_equal(s->target, want);
    res_t x;
    CALL(f, &x, "SET", "a", "1");
    assert_int_equal(x.outcome, MQR_SINK_OK);
    CALL(f, &x, "CLIENT", "INFO"); /* SELECT 3 went first */
    assert_true(strstr(x.str, " db=3 ") != NULL);
    /* the server quotes a bad command's arguments: the password goes */
    CALL(f, &x, "NOSUCHCOMMAND", "x" PW "y");
    assert_int_equal(x.outcome, MQR_SINK_PERMANENT);
    assert_null(strstr(x.reason, PW));
    assert_true(strstr(x.reason, "'x***y'") != NULL);
    assert_null(strstr(s->last_error, PW));
}

static bool has_last_error(void *arg)
{
    fx_t *f = arg;
    return strstr(mqr__redis_sink(f->r)->last_error, "AUTH") != NULL ||
           strstr(mqr__redis_sink(f->r)->last_error, "PING") != NULL;
}

static void test_auth_wrong(void **state)
{
    fx_t *f = *state;
    f->srv.password = PW;
    srv_start(f);
    const char *wrong = "Wr0ng-Secret-42";
    mqr_redis_opts_t o = {.password = wrong, .timeout_ms = 400};
    client_new(f, &o);
    mqr_sink_t *s = mqr__redis_sink(f->r);
    res_t x;
    assert_int_equal(cmd(f, &x, 3, ARGV("SET", "a", "1"), NULL), 0);
    assert_true(run_until(f, has_last_error, f, 2000));
    assert_true(strstr(s->last_error, "AUTH refused: WRONGPASS") != NULL);
    assert_true(run_until(f, res_done, &x, 2000));
    assert_int_equal(x.outcome, MQR_SINK_RETRY);
    assert_int_equal(x.err, UV_ETIMEDOUT);
    assert_true(strstr(x.reason, "not connected within 400 ms") != NULL);
    assert_true(strstr(x.reason, "WRONGPASS") != NULL);
    assert_false(s->up);
    assert_int_equal(f->ups, 0);
    const char *shown[] = {s->target, s->last_error, x.reason, f->down_reason};
    for (size_t i = 0; i < 4; i++) {
        assert_null(strstr(shown[i], wrong));
        assert_null(strstr(shown[i], PW));
    }
    mqr__redis_close(f->r);
    f->r = NULL;

    /* no password for a server that wants one: PING says NOAUTH */
    mqr_redis_opts_t o2 = {0};
    client_new(f, &o2);
    assert_true(run_until(f, has_last_error, f, 2000));
    assert_true(strstr(mqr__redis_sink(f->r)->last_error, "NOAUTH") != NULL);
    assert_false(mqr__redis_sink(f->r)->up);
}

/* ---- close -------------------------------------------------------------------- */

static void test_close_in_flight(void **state)
{
    fx_t *f = *state;
    srv_start(f);
    mqr_redis_opts_t o = {.max_in_flight = 4};
    client_up(f, &o);
    tally_t t = {0};
    assert_int_equal(
        mqr__redis_command(f->r, 3, ARGV("BLPOP", "nothing", "5"), NULL, on_tally, &t, NULL, 0), 0);
    for (int i = 0; i < 9; i++) /* 3 more in flight, 6 waiting */
        assert_int_equal(
            mqr__redis_command(f->r, 2, ARGV("INCR", "n"), NULL, on_tally, &t, NULL, 0), 0);
    for (int i = 0; i < 5; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(t.calls, 0); /* BLPOP holds the rest back */
    mqr__redis_close(f->r);
    assert_int_equal(t.calls, 10); /* during the close, each once */
    assert_int_equal(t.eclosed, 10);
    f->r = NULL; /* the teardown checks the loop empties */
    for (int i = 0; i < 10; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(t.calls, 10);
}

typedef struct {
    fx_t *f;
    tally_t t;
} closer_t;

static void on_close_first(void *arg, const mqr_redis_result_t *r)
{
    closer_t *c = arg;
    on_tally(&c->t, r);
    if (c->t.calls == 1) {
        mqr__redis_close(c->f->r);
        c->f->r = NULL;
    }
}

static void test_close_from_callback(void **state)
{
    fx_t *f = *state;
    srv_start(f);
    mqr_redis_opts_t o = {0};
    client_up(f, &o);
    closer_t c = {.f = f};
    for (int i = 0; i < 5; i++)
        assert_int_equal(
            mqr__redis_command(f->r, 2, ARGV("INCR", "n"), NULL, on_close_first, &c, NULL, 0), 0);
    want_t w = {&c.t, 5};
    assert_true(run_until(f, tally_reached, &w, 3000));
    for (int i = 0; i < 10; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(c.t.calls, 5);
    assert_int_equal(c.t.ok, 1);
    assert_int_equal(c.t.eclosed, 4);
}

static void test_no_server(void **state)
{
    fx_t *f = *state;
    mqr_redis_opts_t o = {.port = lb_free_port(), .timeout_ms = 300};
    client_new(f, &o);
    res_t x;
    assert_int_equal(cmd(f, &x, 2, ARGV("GET", "a"), NULL), 0);
    assert_true(run_until(f, res_done, &x, 2000));
    assert_int_equal(x.outcome, MQR_SINK_RETRY);
    assert_int_equal(x.err, UV_ETIMEDOUT);
    if (!strstr(x.reason, "refused")) fail_msg("reason: %s", x.reason);
    assert_false(mqr__redis_sink(f->r)->up);
    char *err = NULL;
    mqr_redis_t *bad = NULL;
    mqr_redis_opts_t b = {.port = 70000};
    assert_int_equal(mqr__redis_new(&f->loop, &b, &bad, &err), MQR_EINVAL);
    assert_non_null(err);
    free(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_set_get_binary, setup, teardown),
        cmocka_unit_test_setup_teardown(test_xadd_xrange, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_replies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipeline_10000, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bounds_efull, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout_late_reply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_waiting_expires_unsent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stuck_connection_replaced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_auth_right, setup, teardown),
        cmocka_unit_test_setup_teardown(test_auth_wrong, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_from_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_server, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
