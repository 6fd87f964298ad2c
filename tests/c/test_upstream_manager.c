/*
 * test_upstream_manager.c — the session manager against real Mosquitto
 * brokers: failover across broker URIs, max reconnect attempts, lifecycle
 * events in order, waiting for ready (also on a peer that never answers),
 * publish completion, topic prefix, status counters, subscription options.
 *
 * Same fixture as test_upstream.c (upstream_harness.h): brokers on free
 * loopback ports, killed in the teardown and through PR_SET_PDEATHSIG;
 * every wait has a deadline.
 */
#include "upstream.h"

/* ---- the engine side ---------------------------------------------------- */

typedef struct {
    mqr_upstream_event_type_t type;
    mqr_upstream_state_t old_state, new_state;
    unsigned attempt;
    char name[32];
    char reason[128];
    uint64_t time_ms;
} got_ev_t;

/* ctx_t's own fields: the manager's events, what on_done and on_ready heard. */
#define UP_CTX_LOCAL                                                                               \
    got_ev_t evs[128];                                                                             \
    int nevs;                                                                                      \
    int done_calls, done_status, done_reason;                                                      \
    int ready_calls, ready_status;
#include "upstream_harness.h"

static void on_event(void *arg, const mqr_upstream_event_t *ev)
{
    ctx_t *c = arg;
    if (c->nevs >= 128) return;
    got_ev_t *g = &c->evs[c->nevs++];
    g->type = ev->type;
    g->old_state = ev->old_state;
    g->new_state = ev->new_state;
    g->attempt = ev->attempt;
    g->time_ms = ev->time_ms;
    snprintf(g->name, sizeof g->name, "%s", ev->name);
    snprintf(g->reason, sizeof g->reason, "%s", ev->reason ? ev->reason : "");
}

static bool seen_event(ctx_t *c, mqr_upstream_event_type_t type, const char *name, int nth)
{
    int n = 0;
    for (int i = 0; i < c->nevs; i++)
        if (c->evs[i].type == type && (!name || strcmp(c->evs[i].name, name) == 0) && ++n >= nth)
            return true;
    return false;
}

typedef struct {
    mqr_upstream_event_type_t type;
    int nth;
} ev_want_t;

static bool got_event(void *arg, const void *want)
{
    const ev_want_t *w = want;
    return seen_event(arg, w->type, NULL, w->nth);
}

static bool got_flag(void *arg, const void *want)
{
    return *(const int *)want > 0;
}

static void wait_event(ctx_t *c, mqr_upstream_event_type_t type, int nth, int timeout_ms)
{
    ev_want_t w = {type, nth};
    if (!run_until(c, got_event, &w, timeout_ms))
        fail_msg("%s #%d not seen within %d ms (%d events, last %s: %s)",
                 mqr__upstream_event_name(type), nth, timeout_ms, c->nevs,
                 c->nevs ? mqr__upstream_event_name(c->evs[c->nevs - 1].type) : "-",
                 c->nevs ? c->evs[c->nevs - 1].reason : "");
}

static mqr_upstream_t *open_session(ctx_t *c, mqr_upstream_config_t *cfg)
{
    mqr_upstream_t *u = NULL;
    int rc = mqr__upstream_new(c->e, cfg, &u);
    if (rc != 0) fail_msg("mqr__upstream_new: %s", mqr_strerror(rc));
    return u;
}

static int setup_observed(void **state)
{
    if (ctx_setup(state, MQR_LOG_WARN) != 0) return -1;
    ctx_t *c = *state;
    if (mqr__upstream_observe(c->e, on_event, c) != 0) return -1;
    return 0;
}

static int teardown_observed(void **state)
{
    ctx_t *c = *state;
    mqr__upstream_unobserve(c->e, on_event, c);
    return teardown(state);
}

/* ---- tests -------------------------------------------------------------- */

/* (1) The first URI has nobody listening: Paho fails over to the second;
 * status names the URI in use. */
static void test_failover(void **state)
{
    ctx_t *c = *state;
    broker_start(&c->broker);
    char dead[64], live[64];
    snprintf(dead, sizeof dead, "tcp://127.0.0.1:%d", free_port());
    snprintf(live, sizeof live, "tcp://127.0.0.1:%d", c->broker.port);
    const char *uris[] = {dead, live};
    mqr_upstream_config_t cfg = {.name = "fo", .uris = uris, .n_uris = 2, .clean_start = 1};
    mqr_upstream_t *u = open_session(c, &cfg);
    wait_event(c, MQR_UPEV_READY, 1, 8000);
    run_for(c, 50);
    mqr_upstream_status_t st;
    mqr__upstream_status(u, &st);
    assert_int_equal(st.state, MQR_UPSTREAM_CONNECTED);
    assert_true(st.ready);
    assert_string_equal(st.broker, live);
    assert_true(st.connected_since_ms > 0);
    assert_int_equal(st.connects, 1);
}

/* (2) Nobody listens: after max_reconnects failed attempts the session
 * stops trying and is "failed". */
static void test_max_reconnects(void **state)
{
    ctx_t *c = *state;
    char dead[64];
    snprintf(dead, sizeof dead, "tcp://127.0.0.1:%d", free_port());
    mqr_upstream_config_t cfg = {.name = "mr",
                                 .uri = dead,
                                 .clean_start = 1,
                                 .retry_initial_s = 1,
                                 .retry_max_s = 1,
                                 .max_reconnects = 3};
    mqr_upstream_t *u = open_session(c, &cfg);
    wait_event(c, MQR_UPEV_FAILED, 1, 15000);
    assert_int_equal(mqr__upstream_state(u), MQR_UPSTREAM_FAILED);
    assert_true(seen_event(c, MQR_UPEV_RECONNECTING, "mr", 2));
    /* attempts 2 and 3 were announced, 4 never */
    unsigned max_attempt = 0;
    for (int i = 0; i < c->nevs; i++)
        if (c->evs[i].type == MQR_UPEV_RECONNECTING && c->evs[i].attempt > max_attempt)
            max_attempt = c->evs[i].attempt;
    assert_int_equal(max_attempt, 3);
    mqr_upstream_status_t st;
    mqr__upstream_status(u, &st);
    assert_int_equal(st.connect_failures, 3);
    assert_false(st.auto_reconnect);
    assert_true(st.last_error[0] != '\0');
    assert_true(st.last_error_at_ms > 0);
    run_for(c, 2500); /* it really stopped */
    mqr__upstream_status(u, &st);
    assert_int_equal(st.connect_failures, 3);
    assert_int_equal(st.state, MQR_UPSTREAM_FAILED);
}

/* (3) connect -> broker killed -> broker back: the documented order. */
static void test_event_order(void **state)
{
    ctx_t *c = *state;
    broker_start(&c->broker);
    char uri[64];
    snprintf(uri, sizeof uri, "tcp://127.0.0.1:%d", c->broker.port);
    mqr_upstream_config_t cfg = {
        .name = "eo", .uri = uri, .clean_start = 1, .retry_initial_s = 1, .retry_max_s = 1};
    mqr_upstream_t *u = open_session(c, &cfg);
    assert_int_equal(mqr__upstream_subscribe(u, "t/#", 1), 0);
    assert_int_equal(mqr__upstream_subscribe(u, "s/#", 0), 0);
    wait_event(c, MQR_UPEV_READY, 1, 5000);
    broker_stop(&c->broker);
    wait_event(c, MQR_UPEV_RECONNECTING, 1, 5000);
    run_for(c, 1500); /* at least one failed attempt */
    broker_start(&c->broker);
    wait_event(c, MQR_UPEV_READY, 2, 10000);
    mqr__upstream_close(u);

    /* The sequence without repeated reconnect attempts. */
    const mqr_upstream_event_type_t want[] = {
        MQR_UPEV_ADDED,        MQR_UPEV_CONNECTING,   MQR_UPEV_STATE_CHANGED,
        MQR_UPEV_CONNECTED,    MQR_UPEV_READY,        MQR_UPEV_STATE_CHANGED,
        MQR_UPEV_DISCONNECTED, MQR_UPEV_RECONNECTING, MQR_UPEV_STATE_CHANGED,
        MQR_UPEV_CONNECTED,    MQR_UPEV_READY,        MQR_UPEV_STATE_CHANGED,
        MQR_UPEV_REMOVED,
    };
    const mqr_upstream_state_t olds[] = {MQR_UPSTREAM_CONNECTING, MQR_UPSTREAM_CONNECTED,
                                         MQR_UPSTREAM_DISCONNECTED, MQR_UPSTREAM_CONNECTED};
    const mqr_upstream_state_t news[] = {MQR_UPSTREAM_CONNECTED, MQR_UPSTREAM_DISCONNECTED,
                                         MQR_UPSTREAM_CONNECTED, MQR_UPSTREAM_CLOSED};
    size_t n = 0, sc = 0;
    unsigned last_attempt = 0;
    uint64_t last_time = 0;
    for (int i = 0; i < c->nevs; i++) {
        got_ev_t *g = &c->evs[i];
        assert_string_equal(g->name, "eo");
        assert_true(g->time_ms >= last_time);
        last_time = g->time_ms;
        if (g->type == MQR_UPEV_RECONNECTING) {
            assert_int_equal(g->attempt, last_attempt + 1);
            last_attempt = g->attempt;
            if (g->attempt > 1) continue;
        }
        if (n >= sizeof want / sizeof want[0])
            fail_msg("extra event %s", mqr__upstream_event_name(g->type));
        if (g->type != want[n])
            fail_msg("event %zu: %s, wanted %s", n, mqr__upstream_event_name(g->type),
                     mqr__upstream_event_name(want[n]));
        if (g->type == MQR_UPEV_STATE_CHANGED) {
            assert_int_equal(g->old_state, olds[sc]);
            assert_int_equal(g->new_state, news[sc]);
            sc++;
        }
        if (g->type == MQR_UPEV_DISCONNECTED) assert_true(g->reason[0] != '\0');
        n++;
    }
    assert_int_equal(n, sizeof want / sizeof want[0]);
    assert_true(last_attempt >= 2);
}

static void on_ready(void *arg, int status)
{
    ctx_t *c = arg;
    c->ready_calls++;
    c->ready_status = status;
}

/* (4) wait_ready: a peer that accepts and never answers times out; a real
 * broker answers; "all" waits for every session. */
static void test_wait_ready(void **state)
{
    ctx_t *c = *state;
    int quiet = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(quiet >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(quiet, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(quiet, 8), 0);
    socklen_t alen = sizeof a;
    assert_int_equal(getsockname(quiet, (struct sockaddr *)&a, &alen), 0);
    char quri[64], uri[64];
    snprintf(quri, sizeof quri, "tcp://127.0.0.1:%d", ntohs(a.sin_port));
    broker_start(&c->broker);
    snprintf(uri, sizeof uri, "tcp://127.0.0.1:%d", c->broker.port);

    mqr_upstream_config_t qc = {.name = "quiet", .uri = quri, .clean_start = 1};
    mqr_upstream_t *q = open_session(c, &qc);
    uint64_t t0 = now_ms();
    assert_int_equal(mqr__upstream_wait_ready(c->e, "quiet", 500, on_ready, c), 0);
    assert_int_equal(c->ready_calls, 0);
    assert_true(run_until(c, got_flag, &c->ready_calls, 5000));
    uint64_t took = now_ms() - t0;
    assert_int_equal(c->ready_status, UV_ETIMEDOUT);
    if (!(took >= 450 && took < 3000)) fail_msg("took %llu ms", (unsigned long long)took);
    assert_int_equal(mqr__upstream_state(q), MQR_UPSTREAM_CONNECTING);

    mqr_upstream_config_t oc = {.name = "ok", .uri = uri, .clean_start = 1};
    open_session(c, &oc);
    c->ready_calls = 0;
    assert_int_equal(mqr__upstream_wait_ready(c->e, "ok", 5000, on_ready, c), 0);
    assert_true(run_until(c, got_flag, &c->ready_calls, 6000));
    assert_int_equal(c->ready_status, 0);
    assert_int_equal(c->ready_calls, 1);

    /* all: "quiet" holds it up */
    c->ready_calls = 0;
    assert_int_equal(mqr__upstream_wait_ready(c->e, NULL, 300, on_ready, c), 0);
    assert_true(run_until(c, got_flag, &c->ready_calls, 3000));
    assert_int_equal(c->ready_status, UV_ETIMEDOUT);
    /* without it, all are ready: answered on the next loop turn, not inside */
    mqr__upstream_close(q);
    c->ready_calls = 0;
    assert_int_equal(mqr__upstream_wait_ready(c->e, NULL, 300, on_ready, c), 0);
    assert_int_equal(c->ready_calls, 0);
    assert_true(run_until(c, got_flag, &c->ready_calls, 3000));
    assert_int_equal(c->ready_status, 0);
    /* a wait still open when the engine closes its sessions ends ECLOSED */
    c->ready_calls = 0;
    assert_int_equal(mqr__upstream_wait_ready(c->e, "nobody", 60000, on_ready, c), 0);
    mqr__upstream_close_all(c->e);
    assert_int_equal(c->ready_calls, 1);
    assert_int_equal(c->ready_status, MQR_ECLOSED);
    close(quiet);
}

static void on_done(void *arg, int status, int reason)
{
    ctx_t *c = arg;
    c->done_calls++;
    c->done_status = status;
    c->done_reason = reason;
}

/* (5) Publish completion: QoS 1 PUBACK, QoS 2 PUBCOMP (3.1.1 and 5);
 * counters. */
static void test_publish_done(void **state)
{
    ctx_t *c = *state;
    broker_start(&c->broker);
    char uri[64];
    snprintf(uri, sizeof uri, "tcp://127.0.0.1:%d", c->broker.port);
    for (int version = 4; version <= 5; version++) {
        char name[16];
        snprintf(name, sizeof name, "pd%d", version);
        mqr_upstream_config_t cfg = {
            .name = name, .uri = uri, .clean_start = 1, .mqtt_version = version};
        mqr_upstream_t *u = open_session(c, &cfg);
        assert_int_equal(mqr__upstream_subscribe(u, "echo/#", 0), 0);
        mqr_csub_t *cs = NULL;
        c->nmsgs = 0;
        assert_int_equal(mqr_subscribe(c->e, "echo/#", on_msg, c, &cs), 0);
        wait_event(c, MQR_UPEV_READY, version - 3, 5000);
        for (int qos = 1; qos <= 2; qos++) {
            c->done_calls = 0;
            c->done_status = 1;
            mqr_msg_t *m = make_msg("echo/x", "12345", qos, false);
            assert_int_equal(mqr__upstream_publish_cb(u, m, on_done, c), 0);
            mqr_msg_unref(m);
            assert_int_equal(c->done_calls, 0);
            assert_true(run_until(c, got_flag, &c->done_calls, 5000));
            assert_int_equal(c->done_status, 0);
            assert_int_equal(c->done_calls, 1);
        }
        int two = 2;
        assert_true(run_until(c, got_msgs, &two, 3000)); /* and they came back */
        mqr_upstream_status_t st;
        mqr__upstream_status(u, &st);
        assert_int_equal(st.messages_sent, 2);
        assert_int_equal(st.bytes_sent, 10);
        assert_int_equal(st.messages_received, 2);
        assert_int_equal(st.bytes_received, 10);
        assert_int_equal(st.subscriptions, 1);
        assert_true(st.last_message_at_ms > 0);
        /* a publish whose session closes before its answer reached the loop
         * is answered ECLOSED, at once (connected, so Paho still sends it:
         * a publish buffered while disconnected would hit Paho's leak of
         * buffered messages at destroy, #1474) */
        c->done_calls = 0;
        mqr_msg_t *m = make_msg("echo/y", "z", 1, false);
        assert_int_equal(mqr__upstream_publish_cb(u, m, on_done, c), 0);
        mqr_msg_unref(m);
        mqr__upstream_close(u);
        assert_int_equal(c->done_calls, 1);
        assert_int_equal(c->done_status, MQR_ECLOSED);
        run_for(c, 100);
        assert_int_equal(c->done_calls, 1); /* and never again */
        mqr_unsubscribe(c->e, cs);
    }
}

/* (6) prefix: added on publish and subscribe, stripped on receive. */
static void test_prefix(void **state)
{
    ctx_t *c = *state;
    broker_start(&c->broker);
    char uri[64];
    snprintf(uri, sizeof uri, "tcp://127.0.0.1:%d", c->broker.port);
    mqr_upstream_config_t cfg = {.name = "px", .uri = uri, .clean_start = 1, .prefix = "edge-1/"};
    mqr_upstream_t *u = open_session(c, &cfg);
    assert_int_equal(mqr__upstream_subscribe(u, "in/#", 1), 0);
    mqr_csub_t *cs = NULL;
    assert_int_equal(mqr_subscribe(c->e, "#", on_msg, c, &cs), 0);
    wait_event(c, MQR_UPEV_READY, 1, 5000);
    /* receive: the broker's edge-1/in/a arrives as in/a; in/b (no prefix)
     * is not subscribed at all */
    assert_int_equal(sh("mosquitto_pub -p %d -t in/b -m nope -q 1", c->broker.port), 0);
    assert_int_equal(sh("mosquitto_pub -p %d -t edge-1/in/a -m yes -q 1", c->broker.port), 0);
    int one = 1;
    assert_true(run_until(c, got_msgs, &one, 5000));
    run_for(c, 200);
    assert_int_equal(c->nmsgs, 1);
    assert_string_equal(c->msgs[0].topic, "in/a");
    /* publish: out/x leaves as edge-1/out/x */
    sub_proc_t s;
    sub_start(&s, "stdbuf -oL mosquitto_sub -p %d -t '#' -q 1 -C 1 -W 5 -v -d 2>&1",
              c->broker.port);
    if (!sub_wait(c, &s, "SUBACK", 5000)) fail_msg("mosquitto_sub did not subscribe: %s", s.out);
    mqr_msg_t *m = make_msg("out/x", "hello", 1, false);
    assert_int_equal(mqr__upstream_publish(u, m), 0);
    mqr_msg_unref(m);
    bool ok = sub_wait(c, &s, "edge-1/out/x hello", 5000);
    sub_finish(&s);
    if (!ok) fail_msg("mosquitto_sub did not get edge-1/out/x: %s", s.out);
    mqr_unsubscribe(c->e, cs);
}

/* (7) v5 no-local: our own publish does not come back; others' do. */
static void test_no_local(void **state)
{
    ctx_t *c = *state;
    broker_start(&c->broker);
    char uri[64];
    snprintf(uri, sizeof uri, "tcp://127.0.0.1:%d", c->broker.port);
    mqr_upstream_config_t cfg = {.name = "nl", .uri = uri, .clean_start = 1, .mqtt_version = 5};
    mqr_upstream_t *u = open_session(c, &cfg);
    assert_int_equal(mqr__upstream_set_sub_options(u, "loop/#", true, false, -1), 0);
    assert_int_equal(mqr__upstream_subscribe(u, "loop/#", 1), 0);
    mqr_csub_t *cs = NULL;
    assert_int_equal(mqr_subscribe(c->e, "loop/#", on_msg, c, &cs), 0);
    wait_event(c, MQR_UPEV_READY, 1, 5000);
    mqr_msg_t *m = make_msg("loop/mine", "x", 1, false);
    c->done_calls = 0;
    assert_int_equal(mqr__upstream_publish_cb(u, m, on_done, c), 0);
    mqr_msg_unref(m);
    assert_true(run_until(c, got_flag, &c->done_calls, 5000));
    assert_int_equal(sh("mosquitto_pub -p %d -t loop/theirs -m y -q 1", c->broker.port), 0);
    int one = 1;
    assert_true(run_until(c, got_msgs, &one, 5000));
    run_for(c, 300);
    assert_int_equal(c->nmsgs, 1);
    assert_string_equal(c->msgs[0].topic, "loop/theirs");
    mqr_unsubscribe(c->e, cs);
}

/* (8) Bad configurations are refused and change nothing. */
static void test_bad_config(void **state)
{
    ctx_t *c = *state;
    mqr_upstream_t *u = NULL;
    const char *empty[] = {""};
    mqr_upstream_config_t cfg = {.name = "b", .uris = empty, .n_uris = 1};
    assert_int_equal(mqr__upstream_new(c->e, &cfg, &u), MQR_EINVAL);
    mqr_upstream_config_t cfg2 = {
        .name = "b", .uri = "tcp://127.0.0.1:1", .will_topic = "bad/#", .will_qos = 1};
    assert_int_equal(mqr__upstream_new(c->e, &cfg2, &u), MQR_EINVAL);
    mqr_upstream_config_t cfg3 = {.name = "b", .uri = "tcp://127.0.0.1:1", .max_reconnects = -1};
    assert_int_equal(mqr__upstream_new(c->e, &cfg3, &u), MQR_EINVAL);
    assert_null(mqr__upstream_first(c->e));
    assert_int_equal(c->nevs, 0);
}

/* (9) The manager's totals. */
static void test_manager_stats(void **state)
{
    ctx_t *c = *state;
    broker_start(&c->broker);
    broker_start(&c->broker2);
    char u1[64], u2[64];
    snprintf(u1, sizeof u1, "tcp://127.0.0.1:%d", c->broker.port);
    snprintf(u2, sizeof u2, "tcp://127.0.0.1:%d", c->broker2.port);
    mqr_upstream_config_t a = {.name = "a", .uri = u1, .clean_start = 1};
    mqr_upstream_config_t b = {.name = "b", .uri = u2, .clean_start = 1};
    mqr_upstream_t *ua = open_session(c, &a);
    mqr_upstream_t *ub = open_session(c, &b);
    assert_int_equal(mqr__upstream_wait_ready(c->e, NULL, 5000, on_ready, c), 0);
    assert_true(run_until(c, got_flag, &c->ready_calls, 6000));
    assert_int_equal(c->ready_status, 0);
    mqr_msg_t *m = make_msg("m/x", "abc", 0, false);
    assert_int_equal(mqr__upstream_publish(ua, m), 0);
    assert_int_equal(mqr__upstream_publish(ub, m), 0);
    assert_int_equal(mqr__upstream_publish(ub, m), 0);
    mqr_msg_unref(m);
    mqr_upstream_manager_stats_t ms;
    mqr__upstream_manager_stats(c->e, &ms);
    assert_int_equal(ms.sessions, 2);
    assert_int_equal(ms.connected, 2);
    assert_int_equal(ms.ready, 2);
    assert_int_equal(ms.failed, 0);
    assert_int_equal(ms.messages_sent, 3);
    assert_int_equal(ms.bytes_sent, 9);
    int n = 0;
    for (mqr_upstream_t *u = mqr__upstream_first(c->e); u; u = mqr__upstream_next(u))
        n++;
    assert_int_equal(n, 2);
}

/* Connected within limit_ms of its creation (CONNECTED's time minus
 * ADDED's, both taken by the engine); prints the figure. */
static void assert_connected_within(ctx_t *c, const char *name, uint64_t limit_ms)
{
    uint64_t added = 0, connected = 0;
    for (int j = 0; j < c->nevs; j++) {
        if (strcmp(c->evs[j].name, name) != 0) continue;
        if (c->evs[j].type == MQR_UPEV_ADDED) added = c->evs[j].time_ms;
        if (c->evs[j].type == MQR_UPEV_CONNECTED && !connected) connected = c->evs[j].time_ms;
    }
    assert_true(added > 0 && connected >= added);
    print_message("session %s connected %llu ms after creation\n", name,
                  (unsigned long long)(connected - added));
    if (connected - added > limit_ms)
        fail_msg("session %s took %llu ms to connect (limit %llu)", name,
                 (unsigned long long)(connected - added), (unsigned long long)limit_ms);
}

/* (10) Sessions to one broker connect as fast as the first, whether made
 * one after the other (the others connected and idle) or all at once.
 * Paho's receive thread sleeps in poll() up to a second on the sockets it
 * had, and a new socket's connect used to wait for two such sleeps: 1.2 to
 * 2 s (see nudge_connect in core/upstream/upstream.c). */
static void test_connect_latency(void **state)
{
    ctx_t *c = *state;
    broker_start(&c->broker);
    char uri[64];
    snprintf(uri, sizeof uri, "tcp://127.0.0.1:%d", c->broker.port);
    char names[10][16];
    for (int i = 0; i < 5; i++) { /* at once, none connected yet */
        snprintf(names[i], sizeof names[i], "all%d", i);
        mqr_upstream_config_t cfg = {.name = names[i], .uri = uri, .clean_start = 1};
        open_session(c, &cfg);
    }
    wait_event(c, MQR_UPEV_CONNECTED, 5, 5000);
    run_for(c, 300);               /* let Paho's threads settle into their idle wait */
    for (int i = 5; i < 10; i++) { /* one after the other, the others idle */
        snprintf(names[i], sizeof names[i], "one%d", i);
        mqr_upstream_config_t cfg = {.name = names[i], .uri = uri, .clean_start = 1};
        open_session(c, &cfg);
        wait_event(c, MQR_UPEV_CONNECTED, i + 1, 5000);
        run_for(c, 300);
    }
    for (int i = 0; i < 10; i++)
        assert_connected_within(c, names[i], 500);
}

static void count_added(void *arg, const mqr_upstream_event_t *ev)
{
    if (ev->type == MQR_UPEV_ADDED) ++*(int *)arg;
}

/* (11) Observers have no cap: 200 of them each see the event; the same
 * fn+arg twice is refused. */
static void test_many_observers(void **state)
{
    ctx_t *c = *state;
    enum { N = 200 };
    static int counts[N];
    memset(counts, 0, sizeof counts);
    for (int i = 0; i < N; i++)
        assert_int_equal(mqr__upstream_observe(c->e, count_added, &counts[i]), 0);
    assert_int_equal(mqr__upstream_observe(c->e, count_added, &counts[7]), MQR_EEXIST);
    char dead[64];
    snprintf(dead, sizeof dead, "tcp://127.0.0.1:%d", free_port());
    mqr_upstream_config_t cfg = {.name = "obs", .uri = dead, .clean_start = 1};
    open_session(c, &cfg);
    for (int i = 0; i < N; i++)
        if (counts[i] != 1) fail_msg("observer %d saw session_added %d times", i, counts[i]);
    for (int i = 0; i < N; i++)
        mqr__upstream_unobserve(c->e, count_added, &counts[i]);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const char *only = getenv("MQR_TEST_FILTER");
    if (only) cmocka_set_test_filter(only);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_failover, setup_observed, teardown_observed),
        cmocka_unit_test_setup_teardown(test_max_reconnects, setup_observed, teardown_observed),
        cmocka_unit_test_setup_teardown(test_event_order, setup_observed, teardown_observed),
        cmocka_unit_test_setup_teardown(test_wait_ready, setup_observed, teardown_observed),
        cmocka_unit_test_setup_teardown(test_publish_done, setup_observed, teardown_observed),
        cmocka_unit_test_setup_teardown(test_prefix, setup_observed, teardown_observed),
        cmocka_unit_test_setup_teardown(test_no_local, setup_observed, teardown_observed),
        cmocka_unit_test_setup_teardown(test_bad_config, setup_observed, teardown_observed),
        cmocka_unit_test_setup_teardown(test_manager_stats, setup_observed, teardown_observed),
        cmocka_unit_test_setup_teardown(test_connect_latency, setup_observed, teardown_observed),
        cmocka_unit_test_setup_teardown(test_many_observers, setup_observed, teardown_observed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
