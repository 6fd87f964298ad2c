/*
 * test_upstream_native.c — upstream sessions on the "native" transport
 * (core/mqttc under the session seam) against a real Mosquitto.
 *
 * Like test_upstream.c: each test starts /usr/sbin/mosquitto on a free
 * loopback port (broker_harness.h), runs a real engine on its own loop and
 * talks to the broker with mosquitto_pub / mosquitto_sub; the fixture is
 * upstream_harness.h's, where every wait has a deadline. What is
 * native-only is checked here: acknowledgement after routing, buffering in
 * the transport, the refusals at configuration.
 */
#include "upstream.h"

#include "mqrouter_auth.h"

/* ctx_t's own fields: the broker's URI (broker_cfg), captured error logs. */
#define UP_CTX_LOCAL                                                                               \
    char uri[64];                                                                                  \
    char errors[2048];
#include "upstream_harness.h"

static mqr_upstream_config_t native_cfg(const char *name, const char *uri)
{
    mqr_upstream_config_t cfg = {
        .name = name,
        .uri = uri,
        .clean_start = 1,
        .transport = "native",
        .retry_initial_s = 1,
        .retry_max_s = 1,
    };
    return cfg;
}

/* Starts c->broker; the configuration of a native session to it. */
static mqr_upstream_config_t broker_cfg(ctx_t *c, const char *name)
{
    broker_start(&c->broker);
    snprintf(c->uri, sizeof c->uri, "tcp://127.0.0.1:%d", c->broker.port);
    return native_cfg(name, c->uri);
}

/* The same for a v5 session the broker keeps for client_id (clean_start 0,
 * session expiry 60 s). */
static mqr_upstream_config_t resumable_cfg(ctx_t *c, const char *name, const char *client_id)
{
    mqr_upstream_config_t cfg = broker_cfg(c, name);
    cfg.client_id = client_id;
    cfg.clean_start = 0;
    cfg.mqtt_version = 5;
    cfg.session_expiry_s = 60;
    return cfg;
}

static mqr_upstream_t *session(ctx_t *c, const char *name, const char *transport, int version)
{
    char uri[64];
    snprintf(uri, sizeof uri, "tcp://127.0.0.1:%d", c->broker.port);
    mqr_upstream_config_t cfg = native_cfg(name, uri);
    cfg.transport = transport;
    cfg.mqtt_version = version;
    return session_cfg(c, &cfg);
}

/* ---- tests -------------------------------------------------------------- */

/* Connects (3.1.1 and 5.0), becomes ready, receives through the router
 * what mosquitto_pub sends, with the v5 properties that travel. */
static void test_connect_receive(void **state)
{
    ctx_t *c = *state;
    broker_start(&c->broker);
    mqr_upstream_t *u = session(c, "n1", "native", 5);
    assert_int_equal(mqr__upstream_subscribe(u, "up/#", 1), 0);
    mqr_csub_t *cs = NULL;
    assert_int_equal(mqr_subscribe(c->e, "up/#", on_msg, c, &cs), 0);
    wait_state(c, MQR_UPSTREAM_CONNECTED, 5000);
    if (!run_until(c, is_ready, u, 5000)) fail_msg("not ready");
    mqr_upstream_status_t st;
    mqr__upstream_status(u, &st);
    assert_non_null(strstr(st.broker, "127.0.0.1"));
    pub_until_received(c, "-t up/x -m hello -q 1 -V mqttv5 -D publish user-property k v");
    assert_string_equal(c->msgs[0].payload, "hello");
    /* QoS 2: released after routing, delivered once */
    int n = c->nmsgs;
    assert_int_equal(sh("mosquitto_pub -p %d -t up/two -m twice -q 2", c->broker.port), 0);
    int want = n + 1;
    if (!run_until(c, got_msgs, &want, 5000)) fail_msg("QoS 2 message did not arrive");
    run_for(c, 300);
    assert_int_equal(c->nmsgs, n + 1);
    assert_string_equal(c->msgs[n].payload, "twice");

    mqr_upstream_t *u4 = session(c, "n4", "native", 4);
    assert_int_equal(mqr__upstream_subscribe(u4, "v4/#", 0), 0);
    if (!run_until(c, is_ready, u4, 5000)) fail_msg("3.1.1 session not ready");
    mqr_csub_t *cs4 = NULL;
    assert_int_equal(mqr_subscribe(c->e, "v4/#", on_msg, c, &cs4), 0);
    pub_until_received(c, "-t v4/y -m four -q 0");
    assert_string_equal(c->msgs[c->nmsgs - 1].payload, "four");
    mqr_unsubscribe(c->e, cs);
    mqr_unsubscribe(c->e, cs4);
}

/* A publish from the engine reaches a mosquitto_sub; a waited-for one is
 * answered once the broker completed it. */
static int cb_status = 1;
static void on_done(void *arg, int status, int reason)
{
    (void)arg;
    (void)reason;
    cb_status = status;
}

static bool cb_answered(void *arg, const void *want)
{
    (void)arg;
    (void)want;
    return cb_status != 1;
}

/* Publishes topic/payload at qos through u with a waiter and fails the
 * test unless the waiter hears success within 5 s (what). */
static void publish_acked(ctx_t *c, mqr_upstream_t *u, const char *topic, const char *payload,
                          int qos, const char *what)
{
    mqr_msg_t *m = make_msg(topic, payload, qos, false);
    cb_status = 1;
    assert_int_equal(mqr__upstream_publish_cb(u, m, on_done, NULL), 0);
    mqr_msg_unref(m);
    if (!run_until(c, cb_answered, NULL, 5000)) fail_msg("%s: not answered", what);
    assert_int_equal(cb_status, 0);
}

static void test_publish(void **state)
{
    ctx_t *c = *state;
    broker_start(&c->broker);
    mqr_upstream_t *u = session(c, "n2", "native", 5);
    wait_state(c, MQR_UPSTREAM_CONNECTED, 5000);
    sub_proc_t s;
    sub_start(&s, "stdbuf -oL mosquitto_sub -p %d -t 'out/#' -q 1 -C 2 -W 5 -v -d 2>&1",
              c->broker.port);
    if (!sub_wait(c, &s, "SUBACK", 5000)) fail_msg("mosquitto_sub did not subscribe: %s", s.out);
    mqr_msg_t *m = make_msg("out/a", "world", 1, false);
    assert_int_equal(mqr__upstream_publish(u, m), 0);
    mqr_msg_unref(m);
    publish_acked(c, u, "out/b", "waited", 2, "QoS 2 publish");
    bool ok = sub_wait(c, &s, "out/b waited", 5000);
    int rc = sub_finish(&s);
    if (!ok || !strstr(s.out, "out/a world")) fail_msg("mosquitto_sub missed some: %s", s.out);
    assert_int_equal(rc, 0);
    mqr_upstream_status_t st;
    mqr__upstream_status(u, &st);
    assert_int_equal(st.delivered, 2);
}

/* Connected, QoS 1 publishes beyond the broker's window wait in the client,
 * at most max_buffered of them: then MQR_EFULL until the broker caught up. */
static void test_window_backpressure(void **state)
{
    ctx_t *c = *state;
    mqr_upstream_config_t cfg = broker_cfg(c, "bp");
    cfg.mqtt_version = 5;
    cfg.max_buffered = 3;
    mqr_upstream_t *u = session_cfg(c, &cfg);
    wait_state(c, MQR_UPSTREAM_CONNECTED, 5000);
    int accepted = 0, full = 0;
    for (int i = 0; i < 200; i++) { /* one loop turn: no PUBACK meanwhile */
        mqr_msg_t *m = make_msg("bp/x", "p", 1, false);
        int rc = mqr__upstream_publish(u, m);
        mqr_msg_unref(m);
        if (rc == 0)
            accepted++;
        else if (rc == MQR_EFULL)
            full++;
        else
            fail_msg("publish %d: %s", i, mqr_strerror(rc));
    }
    print_message("accepted %d (window + 3), refused %d\n", accepted, full);
    assert_true(accepted > 3 && accepted < 200);
    assert_int_equal(accepted + full, 200);
    mqr_upstream_status_t st;
    mqr__upstream_status(u, &st);
    assert_int_equal(st.publish_full, (uint64_t)full);
    run_for(c, 500); /* the broker acknowledges */
    mqr_msg_t *m = make_msg("bp/x", "later", 1, false);
    assert_int_equal(mqr__upstream_publish(u, m), 0);
    mqr_msg_unref(m);
}

/* QoS 1 from the broker: the native session acknowledges after routing,
 * so none counts as unprotected (Paho's session counts each one). */
static void test_ack_after_routing_counts(void **state)
{
    ctx_t *c = *state;
    broker_start(&c->broker);
    mqr_upstream_t *n = session(c, "nat", "native", 4);
    mqr_upstream_t *p = session(c, "pah", "paho", 4);
    assert_int_equal(mqr__upstream_subscribe(n, "q1/#", 1), 0);
    assert_int_equal(mqr__upstream_subscribe(p, "q1/#", 1), 0);
    mqr_csub_t *cs = NULL;
    assert_int_equal(mqr_subscribe(c->e, "q1/#", on_msg, c, &cs), 0);
    if (!run_until(c, is_ready, n, 5000)) fail_msg("native not ready");
    if (!run_until(c, is_ready, p, 5000)) fail_msg("paho not ready");
    int want = 2;
    assert_int_equal(sh("mosquitto_pub -p %d -t q1/x -m one -q 1", c->broker.port), 0);
    if (!run_until(c, got_msgs, &want, 5000)) fail_msg("got %d of 2", c->nmsgs);
    mqr_upstream_status_t sn, sp;
    mqr__upstream_status(n, &sn);
    mqr__upstream_status(p, &sp);
    assert_int_equal(sn.messages_received, 1);
    assert_int_equal(sn.messages_unprotected, 0);
    assert_int_equal(sp.messages_received, 1);
    assert_int_equal(sp.messages_unprotected, 1);
    mqr_unsubscribe(c->e, cs);
}

/* A QoS 1 message whose routing closed the session was never acknowledged:
 * the broker keeps it for the client's session and sends it again to the
 * next session of the same client id. */
static void test_ack_after_routing_redelivered(void **state)
{
    ctx_t *c = *state;
    mqr_upstream_config_t cfg = resumable_cfg(c, "keep", "native-keep");
    mqr_upstream_t *u = session_cfg(c, &cfg);
    assert_int_equal(mqr__upstream_subscribe(u, "keep/#", 1), 0);
    mqr_csub_t *cs = NULL;
    assert_int_equal(mqr_subscribe(c->e, "keep/#", on_msg, c, &cs), 0);
    if (!run_until(c, is_ready, u, 5000)) fail_msg("not ready");
    c->close_on_msg = u;
    pub_until_received(c, "-t keep/x -m once -q 1");
    assert_null(c->close_on_msg);
    run_for(c, 300); /* the DISCONNECT goes out */
    int before = c->nmsgs;
    mqr_upstream_t *u2 = session_cfg(c, &cfg);
    assert_int_equal(mqr__upstream_subscribe(u2, "keep/#", 1), 0);
    int want = before + 1;
    if (!run_until(c, got_msgs, &want, 5000))
        fail_msg("the unacknowledged message did not come again");
    assert_string_equal(c->msgs[before].payload, "once");
    /* This time it was acknowledged: a third session gets nothing. */
    run_for(c, 300);
    mqr__upstream_close(u2);
    run_for(c, 300);
    int after = c->nmsgs;
    mqr_upstream_t *u3 = session_cfg(c, &cfg);
    assert_int_equal(mqr__upstream_subscribe(u3, "keep/#", 1), 0);
    if (!run_until(c, is_ready, u3, 5000)) fail_msg("third not ready");
    run_for(c, 500);
    assert_int_equal(c->nmsgs, after);
    mqr_unsubscribe(c->e, cs);
}

/* A session loses its connection with a QoS 1 publish not acknowledged
 * (the broker is stopped: keep-alive ends it). Resumable (clean_start = 0):
 * the broker keeps the session, the next connection resends the publish
 * (DUP). Clean: the next connection sends it again as a new publish. Its
 * waiter hears of it then, either way: nothing accepted is dropped. */
static void resume_inflight(ctx_t *c, bool clean)
{
    mqr_upstream_config_t cfg = resumable_cfg(c, "res", "native-resume");
    cfg.clean_start = clean;
    cfg.keepalive_s = 1;
    mqr_upstream_t *u = session_cfg(c, &cfg);
    wait_state(c, MQR_UPSTREAM_CONNECTED, 5000);
    sub_proc_t s;
    sub_start(&s, "stdbuf -oL mosquitto_sub -p %d -t 'res/#' -q 1 -C 1 -W 30 -v -d 2>&1",
              c->broker.port);
    if (!sub_wait(c, &s, "SUBACK", 5000)) fail_msg("mosquitto_sub did not subscribe: %s", s.out);

    assert_int_equal(kill(c->broker.pid, SIGSTOP), 0);
    mqr_msg_t *m = make_msg("res/a", "resent", 1, false);
    cb_status = 1;
    assert_int_equal(mqr__upstream_publish_cb(u, m, on_done, NULL), 0);
    mqr_msg_unref(m);
    wait_state(c, MQR_UPSTREAM_DISCONNECTED, 5000);
    assert_int_equal(cb_status, 1); /* held, not failed */
    mqr_upstream_status_t st;
    mqr__upstream_status(u, &st);
    assert_int_equal(st.inflight, 1);
    assert_int_equal(kill(c->broker.pid, SIGCONT), 0);
    wait_state(c, MQR_UPSTREAM_CONNECTED, 20000);
    if (!run_until(c, cb_answered, NULL, 5000)) fail_msg("the resent publish was not answered");
    assert_int_equal(cb_status, 0);
    bool ok = sub_wait(c, &s, "res/a resent", 5000);
    sub_finish(&s);
    if (!ok) fail_msg("mosquitto_sub did not get it: %s", s.out);
}

static void test_resume_inflight(void **state)
{
    resume_inflight(*state, false);
}

static void test_clean_keeps_inflight(void **state)
{
    resume_inflight(*state, true);
}

/* Another client takes the client id over: the session hears why (a v5
 * DISCONNECT 0x8E where the broker sends one; Mosquitto 2.0.11 just closes
 * the socket) and reconnects. */
static void test_server_disconnect(void **state)
{
    ctx_t *c = *state;
    mqr_upstream_config_t cfg = broker_cfg(c, "sd");
    cfg.mqtt_version = 5;
    cfg.client_id = "native-taken";
    session_cfg(c, &cfg);
    wait_state(c, MQR_UPSTREAM_CONNECTED, 5000);
    sub_proc_t s;
    sub_start(&s, "mosquitto_sub -p %d -i native-taken -V mqttv5 -t 'sd/#' -W 1 2>&1",
              c->broker.port);
    wait_state(c, MQR_UPSTREAM_DISCONNECTED, 5000);
    if (!strstr(c->reason, "broker sent DISCONNECT: session taken over") &&
        !strstr(c->reason, "server closed the connection"))
        fail_msg("reason: '%s'", c->reason);
    sub_finish(&s);
    wait_state(c, MQR_UPSTREAM_CONNECTED, 10000);
}

/* Failover: the first URI refuses, the second broker takes the session. */
static void test_failover(void **state)
{
    ctx_t *c = *state;
    broker_start(&c->broker);
    char bad[64], good[64];
    snprintf(bad, sizeof bad, "tcp://127.0.0.1:%d", free_port());
    snprintf(good, sizeof good, "mqtt://localhost:%d", c->broker.port);
    const char *uris[] = {bad, good};
    mqr_upstream_config_t cfg = native_cfg("fo", NULL);
    cfg.uris = uris;
    cfg.n_uris = 2;
    mqr_upstream_t *u = session_cfg(c, &cfg);
    wait_state(c, MQR_UPSTREAM_CONNECTED, 5000);
    mqr_upstream_status_t st;
    mqr__upstream_status(u, &st);
    assert_string_equal(st.broker, good);
}

static bool has_failed(void *arg, const void *want)
{
    (void)arg;
    return mqr__upstream_state((mqr_upstream_t *)want) == MQR_UPSTREAM_FAILED;
}

/* Nothing listening, and a name that does not resolve: failed attempts
 * counted, the session gives up after max_reconnects (the observer hears
 * of states up to CLOSED only: the status says FAILED). */
static void test_connect_fails(void **state)
{
    ctx_t *c = *state;
    char uri[64];
    snprintf(uri, sizeof uri, "tcp://127.0.0.1:%d", free_port());
    mqr_upstream_config_t cfg = native_cfg("down", uri);
    cfg.max_reconnects = 2;
    mqr_upstream_t *u = session_cfg(c, &cfg);
    if (!run_until(c, has_failed, u, 10000)) fail_msg("did not give up");
    mqr_upstream_status_t st;
    mqr__upstream_status(u, &st);
    assert_int_equal(st.connect_failures, 2);
    assert_non_null(strstr(st.last_error, "refused"));
    mqr__upstream_close(u);
    cfg = native_cfg("noname", "tcp://no-such-host.invalid:1883");
    cfg.max_reconnects = 1;
    u = session_cfg(c, &cfg);
    if (!run_until(c, has_failed, u, 20000)) fail_msg("did not give up on a bad name");
    mqr__upstream_status(u, &st);
    assert_non_null(strstr(st.last_error, "resolve"));
}

/* ws://: the session reaches the engine's own WebSocket listener (this
 * Mosquitto has no WebSocket support); a QoS 1 publish is completed and a
 * local subscriber sees what the listener routed. */
static void test_websocket(void **state)
{
    ctx_t *c = *state;
    mqr_listen_options_t lo;
    mqr_listen_options_init(&lo);
    lo.type = MQR_LISTEN_WS;
    lo.host = "127.0.0.1";
    lo.port = free_port();
    mqr_listener_t *l = NULL;
    char *err = NULL;
    if (mqr_engine_listen(c->e, &lo, &l, &err) < 0) fail_msg("listen: %s", err);
    mqr_csub_t *cs = NULL;
    assert_int_equal(mqr_subscribe(c->e, "wsout/#", on_msg, c, &cs), 0);
    char uri[64];
    snprintf(uri, sizeof uri, "ws://127.0.0.1:%d/mqtt", mqr_listener_port(l));
    mqr_upstream_config_t cfg = native_cfg("ws", uri);
    cfg.mqtt_version = 5;
    mqr_upstream_t *u = session_cfg(c, &cfg);
    wait_state(c, MQR_UPSTREAM_CONNECTED, 5000);
    publish_acked(c, u, "wsout/a", "over-ws", 1, "QoS 1 publish over ws");
    int want = 1;
    if (!run_until(c, got_msgs, &want, 5000)) fail_msg("the listener did not route it");
    assert_string_equal(c->msgs[0].payload, "over-ws");
    mqr_unsubscribe(c->e, cs);
}

static bool has_failures(void *arg, const void *want)
{
    (void)arg;
    mqr_upstream_status_t st;
    mqr__upstream_status((mqr_upstream_t *)want, &st);
    return st.connect_failures >= 1;
}

/* SCRAM-SHA-256 (MQTT 5 enhanced authentication) against the engine's own
 * listener: the right password connects, a wrong one is refused; Paho
 * cannot do it and says so. */
static void test_scram(void **state)
{
    ctx_t *c = *state;
    mqr_engine_free(c->e);
    char dir[] = "/tmp/mqr-native-scram-XXXXXX";
    assert_non_null(mkdtemp(dir));
    int port = free_port();
    mqr_engine_options_t o;
    mqr_engine_options_init(&o);
    o.listen_host = "127.0.0.1";
    o.listen_port = port;
    o.data_dir = dir;
    c->e = NULL;
    assert_int_equal(mqr_engine_new(&c->e, &o, NULL, NULL), 0);
    assert_int_equal(mqr_user_add(c->e, "alice", "s3cret", 4096), 0);
    char uri[64];
    snprintf(uri, sizeof uri, "tcp://127.0.0.1:%d", port);
    mqr_upstream_config_t cfg = native_cfg("scram", uri);
    cfg.mqtt_version = 5;
    cfg.persist = -1;
    cfg.username = "alice";
    cfg.password = "s3cret";
    cfg.auth_method = "SCRAM-SHA-256";
    mqr_upstream_t *u = session_cfg(c, &cfg);
    wait_state(c, MQR_UPSTREAM_CONNECTED, 10000);
    publish_acked(c, u, "scram/a", "proved", 1, "QoS 1 publish after SCRAM");

    cfg.name = "scram-bad";
    cfg.password = "wrong";
    mqr_upstream_t *bad = NULL;
    assert_int_equal(mqr__upstream_new(c->e, &cfg, &bad), 0);
    if (!run_until(c, has_failures, bad, 10000)) fail_msg("a wrong password was not refused");
    mqr_upstream_status_t st;
    mqr__upstream_status(bad, &st);
    assert_int_equal(st.connects, 0);
    print_message("wrong password: %s\n", st.last_error);

    mqr_upstream_t *x = NULL;
    cfg.name = "scram-paho";
    cfg.transport = "paho";
    assert_int_equal(mqr__upstream_new(c->e, &cfg, &x), MQR_EINVAL);
    cfg.transport = "native";
    cfg.mqtt_version = 4;
    assert_int_equal(mqr__upstream_new(c->e, &cfg, &x), MQR_EINVAL);
    assert_null(x);
    mqr_engine_free(c->e);
    c->e = NULL;
    sh("rm -rf %s", dir);
}

static void capture(void *arg, int level, const char *module, const char *msg)
{
    ctx_t *c = arg;
    (void)module;
    if (level > MQR_LOG_ERROR) return;
    size_t n = strlen(c->errors);
    snprintf(c->errors + n, sizeof c->errors - n, "%s\n", msg);
}

/* A broker URI the transport cannot use is refused, and so is a transport
 * nobody knows; both say why. */
static void test_refused(void **state)
{
    ctx_t *c = *state;
    mqr_engine_free(c->e);
    char dir[] = "/tmp/mqr-native-XXXXXX";
    assert_non_null(mkdtemp(dir));
    mqr_engine_options_t o;
    mqr_engine_options_init(&o);
    o.listen_port = -1;
    o.data_dir = dir;
    c->e = NULL;
    assert_int_equal(mqr_engine_new(&c->e, &o, NULL, NULL), 0);
    mqr_log_set_sink(capture, c);
    mqr_upstream_config_t cfg = native_cfg("p", "tcp://127.0.0.1:1");
    mqr_upstream_t *u = NULL;
    const char *bad[] = {"bogus://127.0.0.1:1", "tcp://:1883", "tcp://host:99999", "tcp://h:1x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cfg.uri = bad[i];
        assert_int_equal(mqr__upstream_new(c->e, &cfg, &u), MQR_EINVAL);
        assert_null(u);
    }
    assert_non_null(strstr(c->errors, "bad broker URI 'tcp://h:1x'"));
    cfg.uri = "tcp://127.0.0.1:1";
    cfg.transport = "pigeon";
    assert_int_equal(mqr__upstream_new(c->e, &cfg, &u), MQR_EINVAL);
    assert_null(u);
    assert_non_null(strstr(c->errors, "'native', 'paho'"));
    mqr_log_set_sink(NULL, NULL);
    assert_null(mqr__engine_upstreams(c->e)->first);
    mqr_engine_free(c->e);
    c->e = NULL;
    sh("rm -rf %s", dir);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const char *only = getenv("MQR_TEST_FILTER");
    if (only) cmocka_set_test_filter(only);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_connect_receive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_publish, setup, teardown),
        cmocka_unit_test_setup_teardown(test_window_backpressure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ack_after_routing_counts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ack_after_routing_redelivered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_inflight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clean_keeps_inflight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_disconnect, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failover, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_websocket, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scram, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
