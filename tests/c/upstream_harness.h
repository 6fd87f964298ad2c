/*
 * upstream_harness.h — the fixture the upstream-session C tests share: a
 * ctx_t holding the brokers (broker_harness.h), the engine, the states the
 * session observer heard and the messages a local subscriber got; the
 * callbacks that fill it; the waits that drive the engine's loop (until a
 * state, a count of messages, a line of a mosquitto_sub, a ready session);
 * and setup / teardown for cmocka.
 *
 * Every wait has a deadline: it drives the loop until its condition holds
 * or the time is up, so a broken session fails its test instead of
 * hanging it. Nothing here starts a broker by itself; the teardown kills
 * whatever the test started.
 *
 * A file that needs more in its ctx_t defines UP_CTX_LOCAL (member
 * declarations) before including this header: a macro rather than a
 * struct that embeds this one, so that every test keeps writing c->e and
 * c->evs alike. What only one file uses stays in that file. Functions are
 * static inline so that a test need not use all of them.
 */
#ifndef MQR_UPSTREAM_HARNESS_H
#define MQR_UPSTREAM_HARNESS_H

#include "upstream.h"

#include "broker_harness.h"

/* What on_msg keeps of a routed message. */
typedef struct {
    char topic[128];
    char payload[256];
    size_t payload_len;
    int qos;
    int retain;
    char kind[16];
    char origin_name[64];
    const void *origin_conn;
    uint8_t props[256];
    size_t props_len;
    uint32_t expiry_s;
} got_msg_t;

#ifndef UP_CTX_LOCAL
#define UP_CTX_LOCAL
#endif

typedef struct {
    broker_t broker;
    broker_t broker2;                /* for a test that needs a second broker */
    mqr_engine_t *e;                 /* NULL once a test freed it itself */
    mqr_upstream_state_t states[32]; /* what on_state heard, in order */
    int nstates;
    char reason[256];             /* the reason of the last state */
    got_msg_t msgs[32];           /* the first 32 messages on_msg got */
    int nmsgs;                    /* every message on_msg got */
    mqr_upstream_t *close_on_msg; /* on_msg closes it (once), while routing */
    UP_CTX_LOCAL
} ctx_t;

/* ---- callbacks ------------------------------------------------------------ */

/* A session observer (mqr__upstream_set_observer) with a ctx_t as arg. */
static inline void on_state(void *arg, mqr_upstream_t *u, mqr_upstream_state_t st,
                            const char *reason)
{
    ctx_t *c = arg;
    (void)u;
    if (c->nstates < 32) c->states[c->nstates++] = st;
    snprintf(c->reason, sizeof c->reason, "%s", reason ? reason : "");
}

/* A local subscriber (mqr_subscribe) with a ctx_t as arg. */
static inline void on_msg(void *arg, mqr_msg_t *msg)
{
    ctx_t *c = arg;
    if (c->nmsgs < 32) {
        got_msg_t *g = &c->msgs[c->nmsgs];
        size_t len;
        const char *t = mqr_msg_topic(msg, &len);
        snprintf(g->topic, sizeof g->topic, "%.*s", (int)len, t);
        const void *p = mqr_msg_payload(msg, &len);
        g->payload_len = len;
        snprintf(g->payload, sizeof g->payload, "%.*s", (int)len, (const char *)p);
        g->qos = mqr_msg_qos(msg);
        g->retain = mqr_msg_retain(msg);
        snprintf(g->kind, sizeof g->kind, "%s", mqr_msg_origin_kind(msg));
        snprintf(g->origin_name, sizeof g->origin_name, "%s", mqr_msg_origin_name(msg));
        g->origin_conn = msg->origin_conn;
        g->props_len = msg->props_len < sizeof g->props ? msg->props_len : sizeof g->props;
        memcpy(g->props, msg->props, g->props_len);
        g->expiry_s = msg->expiry_s;
    }
    c->nmsgs++;
    if (c->close_on_msg) {
        mqr_upstream_t *u = c->close_on_msg;
        c->close_on_msg = NULL;
        mqr__upstream_close(u);
    }
}

/* ---- conditions for run_until --------------------------------------------- */

static inline mqr_upstream_state_t last_state(ctx_t *c)
{
    return c->nstates ? c->states[c->nstates - 1] : MQR_UPSTREAM_CONNECTING;
}

/* want: a mqr_upstream_state_t, the last one on_state heard. */
static inline bool reached_state(void *arg, const void *want)
{
    return last_state(arg) == *(const mqr_upstream_state_t *)want;
}

/* want: an int, how many messages on_msg got at least. */
static inline bool got_msgs(void *arg, const void *want)
{
    return ((ctx_t *)arg)->nmsgs >= *(const int *)want;
}

/* want: the session, connected. */
static inline bool is_connected(void *arg, const void *want)
{
    (void)arg;
    return mqr__upstream_state(want) == MQR_UPSTREAM_CONNECTED;
}

/* want: the session, connected and its subscriptions acknowledged. */
static inline bool is_ready(void *arg, const void *want)
{
    (void)arg;
    mqr_upstream_status_t st;
    mqr__upstream_status((mqr_upstream_t *)want, &st);
    return st.ready;
}

/* ---- waits ----------------------------------------------------------------- */

/* Drives the loop until pred(c, want) holds (pred NULL: never) or
 * timeout_ms passes; true when pred held. */
static inline bool run_until(ctx_t *c, bool (*pred)(void *, const void *), const void *want,
                             int timeout_ms)
{
    return engine_run_until(c->e, pred, c, want, timeout_ms);
}

static inline void run_for(ctx_t *c, int ms)
{
    run_until(c, NULL, NULL, ms);
}

/* Fails the test unless on_state hears st within timeout_ms. */
static inline void wait_state(ctx_t *c, mqr_upstream_state_t st, int timeout_ms)
{
    if (!run_until(c, reached_state, &st, timeout_ms))
        fail_msg("state %d not reached within %d ms (last %d: %s)", (int)st, timeout_ms,
                 (int)last_state(c), c->reason);
}

/* Publishes with mosquitto_pub to c->broker until a message reaches the
 * engine. The session subscribes when its connect is drained, and its
 * SUBACK is not observable, so the first publish may beat the SUBSCRIBE to
 * the broker: retrying is what makes this deterministic. Returns the
 * attempts used; fails the test after 8 of 750 ms each. */
static inline int pub_until_received(ctx_t *c, const char *args)
{
    int want = c->nmsgs + 1;
    for (int attempt = 1; attempt <= 8; attempt++) {
        assert_int_equal(sh("mosquitto_pub -p %d %s", c->broker.port, args), 0);
        if (run_until(c, got_msgs, &want, 750)) return attempt;
    }
    fail_msg("nothing arrived for: mosquitto_pub %s", args);
    return 0;
}

/* Drives the loop until s has printed needle or timeout_ms passes; true
 * when it has. */
static inline bool sub_wait(ctx_t *c, sub_proc_t *s, const char *needle, int timeout_ms)
{
    uv_loop_t *loop = mqr_engine_loop(c->e);
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        uv_run(loop, UV_RUN_NOWAIT);
        if (sub_has(s, needle)) return true;
        if (now_ms() >= deadline) return false;
        sleep_ms(2);
    }
}

/* ---- sessions and messages ------------------------------------------------- */

/* A session made from cfg (the test fails otherwise), observed by
 * on_state; the engine owns it. */
static inline mqr_upstream_t *session_cfg(ctx_t *c, const mqr_upstream_config_t *cfg)
{
    mqr_upstream_t *u = NULL;
    assert_int_equal(mqr__upstream_new(c->e, cfg, &u), 0);
    assert_non_null(u);
    mqr__upstream_set_observer(u, on_state, c);
    return u;
}

/* A message from C; the caller owns the reference. */
static inline mqr_msg_t *make_msg(const char *topic, const char *payload, int qos, bool retain)
{
    mqr_msg_init_t in = {
        .topic = topic,
        .topic_len = strlen(topic),
        .payload = payload,
        .payload_len = strlen(payload),
        .qos = qos,
        .retain = retain,
        .origin = MQR_ORIGIN_C,
    };
    mqr_msg_t *m = mqr__msg_new(&in);
    assert_non_null(m);
    return m;
}

/* ---- setup and teardown ----------------------------------------------------- */

/* A zeroed ctx_t with an engine (no listener, no data directory) logging
 * at log_level, in *state. */
static inline int ctx_setup(void **state, int log_level)
{
    ctx_t *c = calloc(1, sizeof *c);
    if (!c) return -1;
    if (!(c->e = test_engine_new(log_level))) {
        free(c);
        return -1;
    }
    *state = c;
    return 0;
}

static inline int setup(void **state)
{
    return ctx_setup(state, MQR_LOG_INFO);
}

/* Frees the engine (which closes the sessions and runs the loop until they
 * are gone), kills the brokers and removes their files. */
static inline int teardown(void **state)
{
    ctx_t *c = *state;
    if (c->e) mqr_engine_free(c->e);
    broker_cleanup(&c->broker);
    broker_cleanup(&c->broker2);
    free(c);
    return 0;
}

#endif
