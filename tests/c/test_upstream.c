/*
 * test_upstream.c — upstream sessions against a real Mosquitto.
 *
 * Each test starts /usr/sbin/mosquitto on a free loopback port, runs a real
 * engine (no listener, in-memory store) on its own loop and talks to the
 * broker with mosquitto_pub / mosquitto_sub. Every wait drives the loop with
 * a deadline, so a broken session fails the test instead of hanging it; the
 * broker is killed in the teardown (also after a failure) and, through
 * PR_SET_PDEATHSIG, if this process dies.
 */
#include "upstream_harness.h"

/* Sessions take the engine's default transport: ctest runs this file on
 * each (tests/CMakeLists.txt sets MQROUTER_UPSTREAM_TRANSPORT); the tests
 * of Paho's threads name "paho". */

static mqr_upstream_t *session(ctx_t *c, const char *name, int port, int version, int max_buffered)
{
    char uri[64];
    snprintf(uri, sizeof uri, "tcp://127.0.0.1:%d", port);
    mqr_upstream_config_t cfg = {
        .name = name,
        .uri = uri,
        .clean_start = 1,
        .mqtt_version = version,
        .max_buffered = max_buffered,
        .transport = NULL, /* the engine's default */
    };
    return session_cfg(c, &cfg);
}

/* ---- tests -------------------------------------------------------------- */

/* (1) A message published to the broker arrives through the router with
 * origin "session"; subscriptions are counted per filter. */
static void test_receive(void **state)
{
    ctx_t *c = *state;
    broker_start(&c->broker);
    mqr_upstream_t *u = session(c, "up1", c->broker.port, 0, 0);
    assert_int_equal(mqr__upstream_state(u), MQR_UPSTREAM_CONNECTING);
    assert_ptr_equal(mqr__upstream_find(c->e, "up1"), u);
    assert_string_equal(mqr__upstream_name(u), "up1");
    assert_int_equal(mqr__upstream_subscribe(u, "up/#", 1), 0);
    assert_int_equal(mqr__upstream_subscribe(u, "up/#", 1), 0); /* a second route */
    assert_int_equal(mqr__upstream_subscribe(u, "bad/#/x", 1), MQR_ETOPIC);
    assert_int_equal(mqr__upstream_subscribe(u, "up/#", 3), MQR_EQOS);
    mqr_csub_t *cs = NULL;
    assert_int_equal(mqr_subscribe(c->e, "up/#", on_msg, c, &cs), 0);

    wait_state(c, MQR_UPSTREAM_CONNECTED, 5000);
    assert_int_equal(c->nstates, 1);
    pub_until_received(c, "-t up/x -m hello -q 1");
    got_msg_t *g = &c->msgs[0];
    assert_string_equal(g->topic, "up/x");
    assert_string_equal(g->payload, "hello");
    assert_int_equal(g->qos, 1);
    assert_int_equal(g->retain, 0);
    assert_string_equal(g->kind, "session");
    assert_string_equal(g->origin_name, "up1");
    assert_ptr_equal(g->origin_conn, u);
    assert_int_equal(g->props_len, 0); /* 3.1.1 session */

    /* One of two routes leaves: still subscribed. */
    assert_int_equal(mqr__upstream_unsubscribe(u, "up/#"), 0);
    int n = c->nmsgs;
    pub_until_received(c, "-t up/y -m again -q 1");
    assert_string_equal(c->msgs[n].payload, "again");
    /* The last one leaves: the broker stops sending. */
    assert_int_equal(mqr__upstream_unsubscribe(u, "up/#"), 0);
    assert_int_equal(mqr__upstream_unsubscribe(u, "up/#"), MQR_ENOENT);
    run_for(c, 300); /* let the UNSUBSCRIBE reach the broker */
    n = c->nmsgs;
    assert_int_equal(sh("mosquitto_pub -p %d -t up/z -m gone -q 1", c->broker.port), 0);
    run_for(c, 500);
    assert_int_equal(c->nmsgs, n);
    mqr_unsubscribe(c->e, cs);
}

/* (2) mqr__upstream_publish() reaches a subscriber of the broker. */
static void test_publish(void **state)
{
    ctx_t *c = *state;
    broker_start(&c->broker);
    mqr_upstream_t *u = session(c, "up2", c->broker.port, 0, 0);
    wait_state(c, MQR_UPSTREAM_CONNECTED, 5000);

    sub_proc_t s;
    sub_start(&s, "stdbuf -oL mosquitto_sub -p %d -t 'out/#' -q 1 -C 1 -W 5 -v -d 2>&1",
              c->broker.port);
    if (!sub_wait(c, &s, "SUBACK", 5000)) fail_msg("mosquitto_sub did not subscribe: %s", s.out);
    mqr_msg_t *m = make_msg("out/a", "world", 1, false);
    assert_int_equal(mqr__upstream_publish(u, m), 0);
    mqr_msg_unref(m);
    bool ok = sub_wait(c, &s, "out/a world", 5000);
    int rc = sub_finish(&s);
    if (!ok) fail_msg("mosquitto_sub did not get the message: %s", s.out);
    assert_int_equal(rc, 0);
}

static bool all_lines(const sub_proc_t *s)
{
    return strstr(s->out, "out/buf/1 m1") && strstr(s->out, "out/buf/2 m2") &&
           strstr(s->out, "out/buf/3 m3");
}

/* (3) The broker dies: DISCONNECTED; publishes are buffered up to
 * max_buffered, then MQR_EFULL; the broker comes back on the same port:
 * CONNECTED, subscriptions restored, buffered messages delivered. */
static void test_reconnect(void **state)
{
    ctx_t *c = *state;
    broker_start(&c->broker);
    mqr_upstream_t *u = session(c, "up3", c->broker.port, 0, 3);
    assert_int_equal(mqr__upstream_subscribe(u, "up/#", 1), 0);
    mqr_csub_t *cs = NULL;
    assert_int_equal(mqr_subscribe(c->e, "up/#", on_msg, c, &cs), 0);
    wait_state(c, MQR_UPSTREAM_CONNECTED, 5000);
    pub_until_received(c, "-t up/x -m before -q 1");

    broker_stop(&c->broker);
    wait_state(c, MQR_UPSTREAM_DISCONNECTED, 5000);
    assert_non_null(strstr(c->reason, "reconnecting"));
    /* Retained, so they can be checked after the fact on the new broker. */
    const char *payloads[] = {"m1", "m2", "m3"};
    for (int i = 0; i < 3; i++) {
        char topic[32];
        snprintf(topic, sizeof topic, "out/buf/%d", i + 1);
        mqr_msg_t *m = make_msg(topic, payloads[i], 1, true);
        assert_int_equal(mqr__upstream_publish(u, m), 0);
        mqr_msg_unref(m);
    }
    mqr_msg_t *extra = make_msg("out/buf/4", "m4", 1, true);
    assert_int_equal(mqr__upstream_publish(u, extra), MQR_EFULL); /* max_buffered = 3 */
    mqr_msg_unref(extra);
    mqr_upstream_status_t st;
    mqr__upstream_status(u, &st);
    assert_int_equal(st.inflight, 3); /* the buffered ones count as not completed */
    run_for(c, 200);
    assert_int_equal(mqr__upstream_state(u), MQR_UPSTREAM_DISCONNECTED);

    uint64_t t0 = now_ms();
    broker_start(&c->broker); /* same port */
    wait_state(c, MQR_UPSTREAM_CONNECTED, 20000);
    print_message("reconnected %llu ms after the broker restarted\n",
                  (unsigned long long)(now_ms() - t0));
    assert_int_equal(c->nstates, 3);
    assert_int_equal(c->states[0], MQR_UPSTREAM_CONNECTED);
    assert_int_equal(c->states[1], MQR_UPSTREAM_DISCONNECTED);
    assert_int_equal(c->states[2], MQR_UPSTREAM_CONNECTED);
    assert_string_equal(c->reason, "reconnected");

    int n = c->nmsgs;
    pub_until_received(c, "-t up/x -m after -q 1");
    assert_string_equal(c->msgs[n].payload, "after");

    /* -C 3: exits once it has all three (as retained or live messages). */
    sub_proc_t s;
    sub_start(&s, "mosquitto_sub -p %d -t 'out/buf/#' -C 3 -W 5 -v", c->broker.port);
    int rc = sub_finish(&s);
    if (!all_lines(&s)) fail_msg("buffered messages missing after reconnect: '%s'", s.out);
    assert_int_equal(rc, 0);
    mqr_unsubscribe(c->e, cs);
}

/* (3b) drop_oldest: a full buffer drops its oldest message instead of
 * refusing the new one; counted; the three newest reach the broker. */
static void test_drop_oldest(void **state)
{
    ctx_t *c = *state;
    int port = free_port(); /* the broker starts later, on this port */
    char uri[64];
    snprintf(uri, sizeof uri, "tcp://127.0.0.1:%d", port);
    mqr_upstream_config_t cfg = {
        .name = "full",
        .uri = uri,
        .clean_start = 1,
        .max_buffered = 3,
        .drop_oldest = 1,
        .retry_initial_s = 1,
        .retry_max_s = 1,
        .transport = NULL, /* the engine's default */
    };
    mqr_upstream_t *u = NULL;
    assert_int_equal(mqr__upstream_new(c->e, &cfg, &u), 0);
    mqr__upstream_set_observer(u, on_state, c);
    const char *payloads[] = {"m1", "m2", "m3", "m4", "m5"};
    for (int i = 0; i < 5; i++) {
        char topic[32];
        snprintf(topic, sizeof topic, "out/drop/%d", i + 1);
        mqr_msg_t *m = make_msg(topic, payloads[i], 1, true);
        assert_int_equal(mqr__upstream_publish(u, m), 0); /* never EFULL */
        mqr_msg_unref(m);
    }
    mqr_upstream_status_t st;
    mqr__upstream_status(u, &st);
    assert_int_equal(st.publish_dropped, 2);
    assert_int_equal(st.publish_full, 0);

    c->broker.port = port;
    broker_start(&c->broker);
    wait_state(c, MQR_UPSTREAM_CONNECTED, 20000);
    sub_proc_t s;
    sub_start(&s, "mosquitto_sub -p %d -t 'out/drop/#' -C 3 -W 5 -v", port);
    int rc = sub_finish(&s);
    assert_int_equal(rc, 0);
    if (!strstr(s.out, "out/drop/3 m3") || !strstr(s.out, "out/drop/4 m4") ||
        !strstr(s.out, "out/drop/5 m5") || strstr(s.out, "out/drop/1") ||
        strstr(s.out, "out/drop/2"))
        fail_msg("the three newest should have been kept: '%s'", s.out);
}

/* (4) Closing while connecting to a dead port. ASan checks that nothing
 * leaks or is used after free. (Nothing is published here: Paho 1.3.12 leaks
 * publishes still buffered when a client is destroyed, its issue #1474.) */
static void test_close_connecting(void **state)
{
    ctx_t *c = *state;
    int port = free_port(); /* nobody listens */
    mqr_upstream_t *u = session(c, "dead", port, 0, 0);
    assert_int_equal(mqr__upstream_subscribe(u, "a/#", 0), 0);
    run_for(c, 300); /* at least one failed attempt */
    assert_int_equal(mqr__upstream_state(u), MQR_UPSTREAM_CONNECTING);
    assert_int_equal(c->nstates, 0);

    mqr_upstream_config_t dup = {.name = "dead", .uri = "tcp://127.0.0.1:1"};
    mqr_upstream_t *u2 = NULL;
    assert_int_equal(mqr__upstream_new(c->e, &dup, &u2), MQR_EEXIST);
    assert_null(u2);

    mqr__upstream_close(u);
    assert_int_equal(mqr__upstream_state(u), MQR_UPSTREAM_CLOSED);
    assert_null(mqr__upstream_find(c->e, "dead"));
    mqr_msg_t *m = make_msg("out/x", "p", 1, false);
    assert_int_equal(mqr__upstream_publish(u, m), MQR_ECLOSED);
    mqr_msg_unref(m);
    assert_int_equal(mqr__upstream_subscribe(u, "b/#", 0), MQR_ECLOSED);
    mqr__upstream_close(u);          /* idempotent */
    assert_int_equal(c->nstates, 0); /* close itself is not observed */

    /* The name is free again while the old session finishes closing. */
    mqr_upstream_t *u3 = session(c, "dead", port, 0, 0);
    /* And one closed before Paho could do anything at all. */
    mqr__upstream_close(u3);
    mqr_upstream_t *u4 = session(c, "dead2", port, 5, 0);
    (void)u4; /* left for mqr_engine_free() to close */
    uint64_t t0 = now_ms();
    mqr_engine_free(c->e);
    c->e = NULL;
    print_message("engine freed with 3 closing sessions in %llu ms\n",
                  (unsigned long long)(now_ms() - t0));
}

static void close_on_connect(void *arg, mqr_upstream_t *u, mqr_upstream_state_t st,
                             const char *reason)
{
    on_state(arg, u, st, reason);
    if (st == MQR_UPSTREAM_CONNECTED) mqr__upstream_close(u);
}

/* An engine on the host's loop: an observer closes its session from inside
 * the connect event, and mqr_engine_free() returns only when every session
 * is gone, so the host can close its loop right after. */
static void test_host_loop(void **state)
{
    ctx_t *c = *state;
    mqr_engine_free(c->e);
    c->e = NULL;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    mqr_engine_options_t o;
    mqr_engine_options_init(&o);
    o.listen_port = -1;
    o.data_dir = "";
    assert_int_equal(mqr_engine_new(&c->e, &o, &loop, NULL), 0);
    assert_ptr_equal(mqr_engine_loop(c->e), &loop);
    broker_start(&c->broker);

    mqr_upstream_t *a = session(c, "a", c->broker.port, 0, 0);
    mqr__upstream_set_observer(a, close_on_connect, c);
    mqr_upstream_status_t ast;
    mqr__upstream_status(a, &ast);
    bool a_paho = strcmp(ast.transport, "paho") == 0; /* the engine's default or ours */
    assert_int_equal(mqr__upstream_subscribe(a, "up/#", 1), 0);
    mqr_upstream_t *b = session(c, "b", c->broker.port, 5, 0);
    mqr__upstream_set_observer(b, NULL, NULL);
    assert_int_equal(mqr__upstream_subscribe(b, "up/#", 1), 0);
    mqr_csub_t *cs = NULL;
    assert_int_equal(mqr_subscribe(c->e, "up/#", on_msg, c, &cs), 0);

    wait_state(c, MQR_UPSTREAM_CONNECTED, 5000);
    /* Still there while Paho's client is destroyed on a worker; a native
     * session is destroyed on the loop and freed within a turn or two (a
     * is not read then). */
    if (a_paho) assert_int_equal(mqr__upstream_state(a), MQR_UPSTREAM_CLOSED);
    assert_null(mqr__upstream_find(c->e, "a"));
    if (!run_until(c, is_connected, b, 5000)) fail_msg("session b did not connect");
    /* Only b routes now. */
    pub_until_received(c, "-t up/x -m via-b -q 1");
    assert_string_equal(c->msgs[0].origin_name, "b");
    mqr_unsubscribe(c->e, cs);

    uint64_t t0 = now_ms();
    mqr_engine_free(c->e);
    c->e = NULL;
    print_message("engine on a host loop freed in %llu ms\n", (unsigned long long)(now_ms() - t0));
    uv_run(&loop, UV_RUN_NOWAIT); /* close callbacks of handles closed last */
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* Bad configurations are refused and leave nothing behind. */
static void test_bad_config(void **state)
{
    ctx_t *c = *state;
    mqr_upstream_t *u = NULL;
    mqr_upstream_config_t cfg = {.name = "x", .uri = "tcp://127.0.0.1:1", .mqtt_version = 3};
    assert_int_equal(mqr__upstream_new(c->e, &cfg, &u), MQR_EINVAL);
    cfg.mqtt_version = 4;
    cfg.uri = "bogus://127.0.0.1:1";
    assert_int_equal(mqr__upstream_new(c->e, &cfg, &u), MQR_EINVAL);
    cfg.uri = NULL;
    assert_int_equal(mqr__upstream_new(c->e, &cfg, &u), MQR_EINVAL);
    cfg.uri = "tcp://127.0.0.1:1";
    cfg.transport = "carrier-pigeon"; /* "paho" and "native" there are */
    assert_int_equal(mqr__upstream_new(c->e, &cfg, &u), MQR_EINVAL);
    assert_null(u);
    assert_null(mqr__engine_upstreams(c->e)->first);
}

/* Raw v5 property bytes, as message.h keeps them. */
static size_t put_str(uint8_t *p, uint8_t id, const char *s)
{
    size_t n = strlen(s);
    p[0] = id;
    p[1] = (uint8_t)(n >> 8);
    p[2] = (uint8_t)n;
    memcpy(p + 3, s, n);
    return 3 + n;
}

static size_t put_pair(uint8_t *p, const char *k, const char *v)
{
    size_t n = put_str(p, 0x26, k);
    size_t m = strlen(v);
    p[n] = (uint8_t)(m >> 8);
    p[n + 1] = (uint8_t)m;
    memcpy(p + n + 2, v, m);
    return n + 2 + m;
}

static bool has_bytes(const uint8_t *hay, size_t n, const uint8_t *needle, size_t m)
{
    for (size_t i = 0; i + m <= n; i++)
        if (memcmp(hay + i, needle, m) == 0) return true;
    return false;
}

/* (5) MQTT 5: properties both ways, Message Expiry kept in them and as
 * expiry_s. */
static void test_v5_properties(void **state)
{
    ctx_t *c = *state;
    broker_start(&c->broker);
    mqr_upstream_t *u = session(c, "up5", c->broker.port, 5, 0);
    assert_int_equal(mqr__upstream_subscribe(u, "up/#", 1), 0);
    mqr_csub_t *cs = NULL;
    assert_int_equal(mqr_subscribe(c->e, "up/#", on_msg, c, &cs), 0);
    wait_state(c, MQR_UPSTREAM_CONNECTED, 5000);

    pub_until_received(c, "-V mqttv5 -t up/p -m x -q 1 -D publish user-property k v "
                          "-D publish content-type text/plain "
                          "-D publish message-expiry-interval 60");
    got_msg_t *g = &c->msgs[0];
    assert_string_equal(g->topic, "up/p");
    uint8_t want[64];
    size_t n = put_str(want, 0x03, "text/plain");
    assert_true(has_bytes(g->props, g->props_len, want, n));
    n = put_pair(want, "k", "v");
    assert_true(has_bytes(g->props, g->props_len, want, n));
    /* Message Expiry stays in the properties, as from a listener client,
     * with what the broker said is left (§3.3.2.3.3), and is expiry_s */
    assert_int_equal(g->props_len, 13 + 7 + 5); /* nothing else */
    const uint8_t *x = memchr(g->props, 0x02, g->props_len);
    assert_non_null(x);
    assert_true(x + 5 <= g->props + g->props_len);
    uint32_t left = (uint32_t)x[1] << 24 | (uint32_t)x[2] << 16 | (uint32_t)x[3] << 8 | x[4];
    assert_true(left >= 59 && left <= 60);
    assert_int_equal(g->expiry_s, left);

    sub_proc_t s;
    sub_start(&s,
              "stdbuf -oL mosquitto_sub -V mqttv5 -p %d -t 'out/#' -q 1 -C 1 -W 5 -d "
              "-F 'GOT %%t %%p ct=%%C up=%%P exp=%%E' 2>&1",
              c->broker.port);
    if (!sub_wait(c, &s, "SUBACK", 5000)) fail_msg("mosquitto_sub did not subscribe: %s", s.out);
    uint8_t props[64];
    size_t pl = put_str(props, 0x03, "application/json");
    pl += put_pair(props + pl, "a", "b");
    props[pl++] = 0x23; /* a Topic Alias must not be forwarded */
    props[pl++] = 0;
    props[pl++] = 7;
    mqr_msg_init_t in = {
        .topic = "out/v5",
        .topic_len = 6,
        .payload = "{}",
        .payload_len = 2,
        .props = props,
        .props_len = pl,
        .qos = 1,
        .origin = MQR_ORIGIN_C,
        .expiry_s = 100,
    };
    mqr_msg_t *m = mqr__msg_new(&in);
    assert_non_null(m);
    assert_int_equal(mqr__upstream_publish(u, m), 0);
    mqr_msg_unref(m);
    bool ok = sub_wait(c, &s, "GOT out/v5 {} ct=application/json up=a:b exp=", 5000);
    int rc = sub_finish(&s);
    if (!ok) fail_msg("v5 message not as expected: %s", s.out);
    assert_int_equal(rc, 0);
    const char *exp = strstr(s.out, "exp=");
    assert_non_null(exp);
    int e = atoi(exp + 4);
    assert_true(e > 90 && e <= 100);

    /* Properties a PUBLISH cannot carry: sent without them. */
    uint8_t bad[] = {0x11, 0, 0, 0, 1}; /* Session Expiry Interval */
    in.props = bad;
    in.props_len = sizeof bad;
    in.expiry_s = 0;
    m = mqr__msg_new(&in);
    assert_non_null(m);
    assert_int_equal(mqr__upstream_publish(u, m), 0);
    mqr_msg_unref(m);
    mqr_unsubscribe(c->e, cs);
}

/* An expired message is not forwarded. */
static void test_expired_not_sent(void **state)
{
    ctx_t *c = *state;
    broker_start(&c->broker);
    mqr_upstream_t *u = session(c, "upx", c->broker.port, 5, 0);
    wait_state(c, MQR_UPSTREAM_CONNECTED, 5000);
    sub_proc_t s;
    sub_start(&s, "stdbuf -oL mosquitto_sub -V mqttv5 -p %d -t 'out/#' -C 1 -W 2 -v -d 2>&1",
              c->broker.port);
    if (!sub_wait(c, &s, "SUBACK", 5000)) fail_msg("mosquitto_sub did not subscribe: %s", s.out);
    mqr_msg_init_t in = {
        .topic = "out/old",
        .topic_len = 7,
        .payload = "stale",
        .payload_len = 5,
        .qos = 1,
        .origin = MQR_ORIGIN_C,
        .expiry_s = 5,
        .created_ms = mqr__now_ms() - 10000,
    };
    mqr_msg_t *m = mqr__msg_new(&in);
    assert_non_null(m);
    assert_int_equal(mqr__upstream_publish(u, m), 0);
    mqr_msg_unref(m);
    m = make_msg("out/new", "fresh", 1, false);
    assert_int_equal(mqr__upstream_publish(u, m), 0);
    mqr_msg_unref(m);
    bool ok = sub_wait(c, &s, "out/new fresh", 5000);
    sub_finish(&s);
    if (!ok) fail_msg("fresh message missing: %s", s.out);
    assert_null(strstr(s.out, "stale"));
}

/* Warnings of the upstream module, captured with their time (the sink is
 * process-wide; these tests log from the loop thread only). */
static struct {
    char text[8][256];
    uint64_t at[8];
    int n;
} warns;

static void capture_warn(void *arg, int level, const char *component, const char *text)
{
    if (level != MQR_LOG_WARN || strcmp(component, "upstream") != 0) return;
    if (!strstr(text, "acknowledged") && !strstr(text, "not routed")) return;
    if (warns.n < 8) {
        snprintf(warns.text[warns.n], sizeof warns.text[0], "%s", text);
        warns.at[warns.n] = now_ms();
    }
    warns.n++;
}

/* The n-th (0-based) captured warning containing needle, or -1. */
static int warn_index(const char *needle, int nth)
{
    for (int i = 0; i < warns.n && i < 8; i++)
        if (strstr(warns.text[i], needle) && nth-- == 0) return i;
    return -1;
}

static bool warned(void *arg, const void *needle)
{
    return warn_index(needle, 0) >= 0;
}

/* Polls u's status without running the loop (the loop stays stalled) until
 * dropped + spilled reach n. */
static void wait_counted_stalled(mqr_upstream_t *u, uint64_t n)
{
    uint64_t deadline = now_ms() + 8000;
    mqr_upstream_status_t st;
    for (;;) {
        mqr__upstream_status(u, &st);
        if (st.messages_dropped + st.messages_spilled >= n) return;
        if (now_ms() >= deadline)
            fail_msg("only %llu dropped and %llu spilled of %llu",
                     (unsigned long long)st.messages_dropped,
                     (unsigned long long)st.messages_spilled, (unsigned long long)n);
        sleep_ms(5);
    }
}

/* 20 QoS 1 messages ("1" .. "20") from mosquitto_pub to a session whose
 * queue to the loop holds 5 (test knob), while the loop does not run: Paho
 * acknowledges all 20 to the broker. Returns the session. Always on Paho,
 * whatever the engine's default transport: what is tested is Paho's
 * threads receiving while the loop is stalled; the native client reads on
 * the loop and acknowledges only after routing, so nothing it received is
 * ever dropped after an acknowledgement (docs/upstream.md, Transports). */
static mqr_upstream_t *flood_stalled(ctx_t *c, const char *name, int persist)
{
    broker_start(&c->broker);
    char uri[64];
    snprintf(uri, sizeof uri, "tcp://127.0.0.1:%d", c->broker.port);
    mqr_upstream_config_t cfg = {
        .name = name, .uri = uri, .clean_start = 1, .persist = persist, .transport = "paho"};
    mqr_upstream_t *u = NULL;
    assert_int_equal(mqr__upstream_new(c->e, &cfg, &u), 0);
    mqr__upstream_set_inbound_limit(u, 5, 0);
    assert_int_equal(mqr__upstream_subscribe(u, "d/#", 1), 0);
    mqr_csub_t *cs = NULL;
    assert_int_equal(mqr_subscribe(c->e, "d/#", on_msg, c, &cs), 0);
    if (!engine_run_until(c->e, is_ready, c, u, 5000)) fail_msg("session not ready");
    /* the loop is not run from here until all 20 are counted */
    assert_int_equal(sh("seq 1 20 | mosquitto_pub -p %d -q 1 -t d/x -l", c->broker.port), 0);
    wait_counted_stalled(u, 15);
    sleep_ms(100); /* nothing more comes: checked below by exact counts */
    return u;
}

/* (7) A session without persistence whose queue to the loop is full drops
 * what Paho acknowledged: exactly the 15 beyond the limit, counted and
 * warned about; the 5 queued are routed, counted as acknowledged without a
 * stored copy. A second flood right after: its drops are warned about too,
 * but not within a second of the first warning (rate limit), and with the
 * running count. */
static void test_inbound_limit_drops(void **state)
{
    ctx_t *c = *state;
    memset(&warns, 0, sizeof warns);
    mqr_log_set_sink(capture_warn, NULL);
    mqr_upstream_t *u = flood_stalled(c, "lim", -1);
    int want = 5;
    if (!run_until(c, got_msgs, &want, 5000)) fail_msg("only %d routed", c->nmsgs);
    run_for(c, 200);
    assert_int_equal(c->nmsgs, 5);
    for (int i = 0; i < 5; i++) {
        char p[8];
        snprintf(p, sizeof p, "%d", i + 1);
        assert_string_equal(c->msgs[i].payload, p);
    }
    mqr_upstream_status_t st;
    mqr__upstream_status(u, &st);
    assert_int_equal(st.messages_received, 5);
    assert_int_equal(st.messages_dropped, 15);
    assert_int_equal(st.messages_unprotected, 5);
    assert_int_equal(st.messages_spilled, 0);
    int first = warn_index("dropped 15 received message(s) already acknowledged", 0);
    if (first < 0) fail_msg("no warning about the drops (%d captured)", warns.n);
    assert_true(strstr(warns.text[first], "15 in all") != NULL);
    assert_true(
        warn_index("5 QoS 1/2 message(s) acknowledged to the broker before being routed", 0) >= 0);

    /* the second flood, at once */
    assert_int_equal(sh("seq 21 40 | mosquitto_pub -p %d -q 1 -t d/x -l", c->broker.port), 0);
    wait_counted_stalled(u, 30);
    if (!run_until(c, warned, "30 in all", 3000))
        fail_msg("the second drops were never warned about");
    int second = warn_index("30 in all", 0);
    assert_true(strstr(warns.text[second], "dropped 15 received") != NULL);
    if (warns.at[second] - warns.at[first] < 990)
        fail_msg("two drop warnings %llu ms apart",
                 (unsigned long long)(warns.at[second] - warns.at[first]));
    assert_int_equal(warn_index("already acknowledged", 2), -1); /* two in all */
    mqr__upstream_status(u, &st);
    assert_int_equal(st.messages_dropped, 30);
    assert_int_equal(st.messages_received, 10);
    mqr_log_set_sink(NULL, NULL);
}

/* (8) A persistent session drops nothing after Paho's acknowledgement: the
 * 15 that found the queue full are kept in the inbox only and routed from
 * there, in order, once the loop runs; no inbox row is left. */
static void test_inbound_limit_spills(void **state)
{
    ctx_t *c = *state;
    char dir[] = "/tmp/mqr-up-spill-XXXXXX";
    assert_non_null(mkdtemp(dir));
    mqr_engine_free(c->e);
    mqr_engine_options_t o;
    mqr_engine_options_init(&o);
    o.listen_port = -1;
    o.data_dir = dir;
    o.log_level = MQR_LOG_WARN;
    char *err = NULL;
    c->e = NULL;
    if (mqr_engine_new(&c->e, &o, NULL, &err) != 0) fail_msg("engine: %s", err ? err : "?");
    mqr_upstream_t *u = flood_stalled(c, "spill", 1);
    int want = 20;
    if (!run_until(c, got_msgs, &want, 5000)) fail_msg("only %d routed", c->nmsgs);
    run_for(c, 200);
    assert_int_equal(c->nmsgs, 20);
    for (int i = 0; i < 20; i++) {
        char p[8];
        snprintf(p, sizeof p, "%d", i + 1);
        assert_string_equal(c->msgs[i].payload, p);
    }
    mqr_upstream_status_t st;
    mqr__upstream_status(u, &st);
    assert_true(st.persistent);
    assert_int_equal(st.messages_received, 20);
    assert_int_equal(st.messages_dropped, 0);
    assert_int_equal(st.messages_spilled, 15);
    assert_int_equal(st.messages_unprotected, 0);
    assert_int_equal(st.stored, 0);
    /* spilling ended: the next message takes the queue again */
    assert_int_equal(sh("mosquitto_pub -p %d -q 1 -t d/x -m 21", c->broker.port), 0);
    want = 21;
    if (!run_until(c, got_msgs, &want, 5000)) fail_msg("message 21 not routed");
    mqr__upstream_status(u, &st);
    assert_int_equal(st.messages_spilled, 15);
    mqr_engine_free(c->e);
    c->e = NULL;
    sh("rm -rf %s", dir);
}

/* (9) A received message routed to a queue that is full was acknowledged
 * to the broker all the same: the session counts it (the queue does too)
 * and warns. */
static void test_not_kept(void **state)
{
    ctx_t *c = *state;
    memset(&warns, 0, sizeof warns);
    mqr_log_set_sink(capture_warn, NULL);
    broker_start(&c->broker);
    mqr_queue_options_t qo;
    mqr_queue_options_init(&qo);
    qo.name = "one";
    qo.max_messages = 1;
    mqr_queue_t *q;
    assert_int_equal(mqr_queue_new(c->e, &qo, &q), 0);
    assert_int_equal(mqr_queue_bind(q, "k/#"), 0);
    mqr_upstream_t *u = session(c, "nk", c->broker.port, 0, 0);
    assert_int_equal(mqr__upstream_subscribe(u, "k/#", 1), 0);
    if (!engine_run_until(c->e, is_ready, c, u, 5000)) fail_msg("session not ready");
    assert_int_equal(sh("seq 1 3 | mosquitto_pub -p %d -q 1 -t k/x -l", c->broker.port), 0);
    mqr_upstream_status_t st;
    uint64_t deadline = now_ms() + 5000;
    do {
        run_for(c, 20);
        mqr__upstream_status(u, &st);
    } while (st.messages_received < 3 && now_ms() < deadline);
    assert_int_equal(st.messages_received, 3);
    assert_int_equal(st.messages_not_kept, 2);
    assert_int_equal(st.messages_refused, 0);
    if (!run_until(c, warned, "2 in all", 3000)) fail_msg("not warned (%d captured)", warns.n);
    mqr_log_set_sink(NULL, NULL);
}

/* (10) A session without persistence closed with received messages not
 * routed yet (the loop stalled): acknowledged, lost, and said so with the
 * number; the drops are reported at close too. */
static void test_close_unrouted(void **state)
{
    ctx_t *c = *state;
    memset(&warns, 0, sizeof warns);
    mqr_log_set_sink(capture_warn, NULL);
    mqr_upstream_t *u = flood_stalled(c, "cl", -1);
    mqr__upstream_close(u); /* the loop has not run since the flood */
    if (!run_until(c, warned, "closed with 5 received message(s) not routed yet", 5000))
        fail_msg("no warning about the 5 lost at close (%d captured)", warns.n);
    assert_true(warn_index("dropped 15 received message(s) already acknowledged", 0) >= 0);
    assert_int_equal(c->nmsgs, 0);
    mqr_log_set_sink(NULL, NULL);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const char *only = getenv("MQR_TEST_FILTER"); /* e.g. "test_reconnect" */
    if (only) cmocka_set_test_filter(only);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_receive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_publish, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reconnect, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drop_oldest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_connecting, setup, teardown),
        cmocka_unit_test_setup_teardown(test_host_loop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_config, setup, teardown),
        cmocka_unit_test_setup_teardown(test_v5_properties, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expired_not_sent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inbound_limit_drops, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inbound_limit_spills, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_unrouted, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
