/*
 * test_mqttc.c — the loop's own MQTT client (core/mqttc/) against a real
 * Mosquitto (3.1.1 and 5.0: round trips at QoS 0/1/2, the in-flight window,
 * the server's limits, keep-alive, a refused CONNECT, the broker killed
 * mid-stream) and against a scripted server in this process, which sends
 * packets split across writes and shows when the client acknowledges.
 *
 * Every wait runs the loop until a condition or a deadline; every test ends
 * with all handles closed and uv_loop_close() == 0.
 */
#include "mqttc.h"

#include "broker_harness.h"

#include <uv.h>

/* ---- the client side ------------------------------------------------------ */

typedef struct {
    char topic[64];
    char payload[64];
    int qos;
    uint32_t ack_id;
} got_t;

typedef struct {
    uint64_t token;
    int status;
    int reason;
} done_t;

typedef struct {
    uv_loop_t loop;
    uv_timer_t wake; /* keeps UV_RUN_ONCE from blocking past a deadline */
    broker_t broker;
    mqr_mqttc_t *c;
    int connected;
    int closed;
    int closed_err;
    int closed_reason;
    char closed_why[160];
    got_t got[256];
    int ngot;
    bool ack_now;     /* acknowledge in the message callback */
    bool free_in_msg; /* free the client in the message callback */
    done_t done[512];
    int ndone;
    size_t max_inflight_seen;
    /* the scripted server */
    uv_tcp_t srv;
    uv_tcp_t srv_conn;
    bool srv_open, srv_conn_open;
    uint8_t srv_in[4096];
    size_t srv_in_len;
} ctx_t;

static void on_connected(void *ud, const mqr_mqtt_connack_t *ack)
{
    ((ctx_t *)ud)->connected++;
}

static void on_closed(void *ud, int err, int reason, const char *why)
{
    ctx_t *t = ud;
    t->closed++;
    t->closed_err = err;
    t->closed_reason = reason;
    snprintf(t->closed_why, sizeof t->closed_why, "%s", why ? why : "");
}

static void on_message(void *ud, const mqr_mqtt_publish_t *p, uint32_t ack_id)
{
    ctx_t *t = ud;
    assert_true(t->ngot < 256);
    got_t *g = &t->got[t->ngot++];
    snprintf(g->topic, sizeof g->topic, "%.*s", (int)p->topic.len, p->topic.p);
    snprintf(g->payload, sizeof g->payload, "%.*s", (int)p->payload.len,
             (const char *)p->payload.p);
    g->qos = p->qos;
    g->ack_id = ack_id;
    if (t->ack_now && ack_id) assert_int_equal(mqr__mqttc_ack(t->c, ack_id), 0);
    if (t->free_in_msg) {
        mqr__mqttc_free(t->c);
        t->c = NULL;
    }
}

static void on_done(void *ud, uint64_t token, int status, int reason)
{
    ctx_t *t = ud;
    assert_true(t->ndone < 512);
    t->done[t->ndone++] = (done_t){token, status, reason};
    size_t n = t->c ? mqr__mqttc_inflight(t->c) : 0;
    if (n > t->max_inflight_seen) t->max_inflight_seen = n;
}

static const mqr_mqttc_cbs_t cbs = {on_connected, on_closed, on_message, on_done, NULL};

static void on_wake(uv_timer_t *h) {}

/* Runs the loop until pred(t) or timeout_ms; true when pred held. */
static bool run_until(ctx_t *t, bool (*pred)(ctx_t *), int timeout_ms)
{
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        if (pred && pred(t)) return true;
        if (now_ms() >= deadline) return false;
        uv_run(&t->loop, UV_RUN_ONCE);
    }
}

static bool is_connected(ctx_t *t)
{
    return t->connected > 0;
}
static bool is_closed(ctx_t *t)
{
    return t->closed > 0;
}

static int want_n;
static bool got_n(ctx_t *t)
{
    return t->ngot >= want_n;
}
static bool done_n(ctx_t *t)
{
    return t->ndone >= want_n;
}

static int setup(void **state)
{
    ctx_t *t = calloc(1, sizeof *t);
    if (!t || uv_loop_init(&t->loop)) return -1;
    uv_timer_init(&t->loop, &t->wake);
    uv_timer_start(&t->wake, on_wake, 5, 5);
    *state = t;
    return 0;
}

static void on_srv_closed(uv_handle_t *h) {}

static int teardown(void **state)
{
    ctx_t *t = *state;
    mqr__mqttc_free(t->c);
    t->c = NULL;
    if (t->srv_conn_open) uv_close((uv_handle_t *)&t->srv_conn, on_srv_closed);
    if (t->srv_open) uv_close((uv_handle_t *)&t->srv, on_srv_closed);
    uv_close((uv_handle_t *)&t->wake, NULL);
    uv_run(&t->loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&t->loop);
    broker_cleanup(&t->broker);
    free(t);
    assert_int_equal(rc, 0);
    return 0;
}

static void opts_init(mqr_mqttc_options_t *o, int version, const char *id)
{
    memset(o, 0, sizeof *o);
    o->version = version;
    o->client_id = id;
    o->clean_start = true;
    o->keepalive_s = 30;
    o->connect_timeout_ms = 5000;
}

static struct sockaddr_in addr_of(int port)
{
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", port, &a);
    return a;
}

static void client_connect(ctx_t *t, const mqr_mqttc_options_t *o, int port)
{
    assert_int_equal(mqr__mqttc_new(&t->loop, o, &cbs, t, &t->c), 0);
    struct sockaddr_in a = addr_of(port);
    assert_int_equal(mqr__mqttc_connect(t->c, (const struct sockaddr *)&a), 0);
}

static void connect_ok(ctx_t *t, int version, const char *id)
{
    mqr_mqttc_options_t o;
    opts_init(&o, version, id);
    client_connect(t, &o, t->broker.port);
    if (!run_until(t, is_connected, 5000)) fail_msg("not connected: %s", t->closed_why);
}

/* Mosquitto with extra lines in its configuration (NULL: none), and a
 * client of version connected to it as id. */
static void broker_connect(ctx_t *t, const char *extra, int version, const char *id)
{
    if (extra) snprintf(t->broker.extra, sizeof t->broker.extra, "%s", extra);
    broker_start(&t->broker);
    connect_ok(t, version, id);
}

static mqr_mqtt_publish_t pub(const char *topic, const char *payload, int qos)
{
    mqr_mqtt_publish_t p;
    memset(&p, 0, sizeof p);
    p.topic = (mqr_mqtt_str_t){topic, (uint16_t)strlen(topic)};
    p.payload = (mqr_mqtt_bin_t){(const uint8_t *)payload, (uint32_t)strlen(payload)};
    p.qos = (uint8_t)qos;
    return p;
}

static void subscribe(ctx_t *t, const char *filter, int qos, uint64_t token)
{
    mqr_mqtt_sub_entry_t e = {.filter = {filter, (uint16_t)strlen(filter)}, .qos = (uint8_t)qos};
    int before = t->ndone;
    assert_int_equal(mqr__mqttc_subscribe(t->c, &e, 1, NULL, 0, token), 0);
    want_n = before + 1;
    assert_true(run_until(t, done_n, 5000));
    assert_int_equal(t->done[before].token, token);
    assert_int_equal(t->done[before].status, 0);
    assert_int_equal(t->done[before].reason, qos); /* granted */
}

static const done_t *done_of(ctx_t *t, uint64_t token)
{
    for (int i = 0; i < t->ndone; i++)
        if (t->done[i].token == token) return &t->done[i];
    return NULL;
}

/* ---- against Mosquitto ---------------------------------------------------- */

/* Publishes QoS 0, 1, 2 to itself through a QoS 2 subscription: each
 * arrives once at its QoS, each publish is done() with status 0; the QoS 1
 * and 2 messages are acknowledged in the callback. Then unsubscribes. */
static void roundtrip(void **state, int version)
{
    ctx_t *t = *state;
    broker_connect(t, NULL, version, version == 5 ? "rt5" : "rt4");
    subscribe(t, "rt/#", 2, 100);
    t->ack_now = true;
    for (int q = 0; q <= 2; q++) {
        char topic[16], payload[16];
        snprintf(topic, sizeof topic, "rt/%d", q);
        snprintf(payload, sizeof payload, "m%d", q);
        mqr_mqtt_publish_t p = pub(topic, payload, q);
        assert_int_equal(mqr__mqttc_publish(t->c, &p, 10 + (uint64_t)q), 0);
    }
    want_n = 3;
    assert_true(run_until(t, got_n, 5000));
    want_n = 4; /* SUBACK + 3 publishes */
    assert_true(run_until(t, done_n, 5000));
    for (int q = 0; q <= 2; q++) {
        const done_t *d = done_of(t, 10 + (uint64_t)q);
        assert_non_null(d);
        assert_int_equal(d->status, 0);
        char payload[16];
        snprintf(payload, sizeof payload, "m%d", q);
        bool found = false;
        for (int i = 0; i < t->ngot; i++) {
            if (strcmp(t->got[i].payload, payload) != 0) continue;
            assert_false(found); /* once */
            found = true;
            assert_int_equal(t->got[i].qos, q);
            assert_true(q == 0 ? t->got[i].ack_id == 0 : t->got[i].ack_id != 0);
        }
        assert_true(found);
    }
    /* an ack_id twice: the second finds nothing waiting */
    assert_int_equal(mqr__mqttc_ack(t->c, t->got[1].ack_id ? t->got[1].ack_id : t->got[2].ack_id),
                     MQR_ENOENT);
    mqr_mqtt_str_t f = {"rt/#", 4};
    assert_int_equal(mqr__mqttc_unsubscribe(t->c, &f, 1, NULL, 0, 200), 0);
    want_n = 5;
    assert_true(run_until(t, done_n, 5000));
    assert_int_equal(done_of(t, 200)->status, 0);
    /* no longer subscribed: nothing comes back */
    mqr_mqtt_publish_t p = pub("rt/x", "after", 1);
    assert_int_equal(mqr__mqttc_publish(t->c, &p, 300), 0);
    want_n = 6;
    assert_true(run_until(t, done_n, 5000));
    run_until(t, NULL, 100);
    assert_int_equal(t->ngot, 3);
    assert_int_equal(mqr__mqttc_inflight(t->c), 0);
    /* a clean DISCONNECT: closed(0) once */
    mqr__mqttc_disconnect(t->c, 0);
    assert_true(run_until(t, is_closed, 5000));
    assert_int_equal(t->closed_err, 0);
    run_until(t, NULL, 50);
    assert_int_equal(t->closed, 1);
    assert_int_equal(mqr__mqttc_publish(t->c, &p, 301), MQR_ENOTCONN);
}

static void test_roundtrip_v311(void **state)
{
    roundtrip(state, MQR_MQTT_V311);
}
static void test_roundtrip_v5(void **state)
{
    roundtrip(state, MQR_MQTT_V5);
}

/* The server's v5 Receive Maximum (Mosquitto's max_inflight_messages) is
 * the window: 60 QoS 1 and 2 publishes at once never have more than 3 in
 * flight, the rest wait and go in order. Its other limits refuse a publish
 * at the call: Maximum QoS, Retain Available, Maximum Packet Size. */
static void test_window_and_limits_v5(void **state)
{
    ctx_t *t = *state;
    broker_connect(t, "max_inflight_messages 3\nmax_packet_size 200\nretain_available false\n",
                   MQR_MQTT_V5, "win5");
    assert_int_equal(mqr__mqttc_window(t->c), 3);
    subscribe(t, "w/#", 1, 1);
    t->ack_now = true;
    t->ndone = 0;
    for (int i = 0; i < 60; i++) {
        char payload[16];
        snprintf(payload, sizeof payload, "%d", i);
        mqr_mqtt_publish_t p = pub("w/x", payload, 1 + i % 2);
        assert_int_equal(mqr__mqttc_publish(t->c, &p, 1000 + (uint64_t)i), 0);
        assert_true(mqr__mqttc_inflight(t->c) <= 3);
    }
    assert_int_equal(mqr__mqttc_inflight(t->c), 3);
    assert_int_equal(mqr__mqttc_waiting(t->c), 57);
    assert_false(mqr__mqttc_writable(t->c, 1));
    want_n = 60;
    assert_true(run_until(t, done_n, 10000));
    assert_true(run_until(t, got_n, 10000));
    assert_true(t->max_inflight_seen <= 3);
    /* each once; QoS 1 ones in call order (a QoS 2 message goes on at the
     * broker's PUBREL, so the two kinds may interleave differently) */
    int seen[60] = {0}, last_even = -2;
    for (int i = 0; i < 60; i++) {
        assert_int_equal(t->done[i].status, 0);
        seen[t->done[i].token - 1000]++;
        int k = atoi(t->got[i].payload);
        assert_true(k >= 0 && k < 60);
        if (k % 2 == 0) {
            assert_true(k > last_even);
            last_even = k;
        }
    }
    for (int i = 0; i < 60; i++)
        assert_int_equal(seen[i], 1);
    assert_int_equal(t->ngot, 60);
    assert_true(mqr__mqttc_writable(t->c, 1));

    mqr_mqtt_publish_t p = pub("w/x", "r", 1);
    p.retain = true;
    assert_int_equal(mqr__mqttc_publish(t->c, &p, 9), MQR_EINVAL);
    char big[300];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    p = pub("w/x", big, 0);
    assert_int_equal(mqr__mqttc_publish(t->c, &p, 9), MQR_ETOOLARGE);
    assert_int_equal(t->closed, 0);
}

/* Maximum QoS 1: a QoS 2 publish is refused at the call, not downgraded. */
static void test_max_qos_v5(void **state)
{
    ctx_t *t = *state;
    broker_connect(t, "max_qos 1\n", MQR_MQTT_V5, "mq5");
    mqr_mqtt_publish_t p = pub("q/x", "2", 2);
    assert_int_equal(mqr__mqttc_publish(t->c, &p, 1), MQR_EQOS);
    p.qos = 1;
    assert_int_equal(mqr__mqttc_publish(t->c, &p, 2), 0);
    want_n = 1;
    assert_true(run_until(t, done_n, 5000));
    assert_int_equal(t->done[0].token, 2);
    assert_int_equal(t->done[0].status, 0);
}

/* Keep-alive 1 s, nothing to say for 4 s: PINGREQs keep Mosquitto (which
 * drops a client after 1.5 keep-alives of silence) from closing us. */
static void test_keepalive_pings(void **state)
{
    ctx_t *t = *state;
    broker_start(&t->broker);
    mqr_mqttc_options_t o;
    opts_init(&o, MQR_MQTT_V311, "ka");
    o.keepalive_s = 1;
    client_connect(t, &o, t->broker.port);
    assert_true(run_until(t, is_connected, 5000));
    assert_false(run_until(t, is_closed, 4000));
    subscribe(t, "ka/#", 0, 5);
}

static void refused(void **state, int version, int want_reason)
{
    ctx_t *t = *state;
    snprintf(t->broker.extra, sizeof t->broker.extra, "allow_anonymous false\n");
    /* the harness writes allow_anonymous true first; the last one wins */
    broker_start(&t->broker);
    mqr_mqttc_options_t o;
    opts_init(&o, version, "nobody");
    client_connect(t, &o, t->broker.port);
    assert_true(run_until(t, is_closed, 5000));
    assert_int_equal(t->connected, 0);
    assert_int_equal(t->closed_err, MQR_EUPSTREAM);
    assert_int_equal(t->closed_reason, want_reason);
    assert_non_null(strstr(t->closed_why, "CONNACK refused"));
}

static void test_refused_v311(void **state)
{
    refused(state, MQR_MQTT_V311, MQR_MQTT_V3_NOT_AUTHORIZED);
}
static void test_refused_v5(void **state)
{
    refused(state, MQR_MQTT_V5, MQR_MQTT_RC_NOT_AUTHORIZED);
}

/* Nobody listens: closed() with the TCP error, once. */
static void test_connect_refused(void **state)
{
    ctx_t *t = *state;
    mqr_mqttc_options_t o;
    opts_init(&o, MQR_MQTT_V311, "none");
    client_connect(t, &o, free_port());
    assert_true(run_until(t, is_closed, 5000));
    assert_int_equal(t->closed_err, UV_ECONNREFUSED);
    run_until(t, NULL, 50);
    assert_int_equal(t->closed, 1);
}

/* The broker is killed while QoS 1 publishes are in flight: closed() once
 * with an error, and every publish done() first, failed with that error or
 * acknowledged before. */
static void test_broker_killed(void **state)
{
    ctx_t *t = *state;
    broker_connect(t, "max_inflight_messages 10\n", MQR_MQTT_V5, "kill");
    for (int i = 0; i < 200; i++) {
        mqr_mqtt_publish_t p = pub("k/x", "payload", 1);
        assert_int_equal(mqr__mqttc_publish(t->c, &p, 1 + (uint64_t)i), 0);
    }
    want_n = 5;
    run_until(t, done_n, 5000);
    broker_stop(&t->broker);
    assert_true(run_until(t, is_closed, 5000));
    assert_true(t->closed_err == UV_EOF || t->closed_err == UV_ECONNRESET);
    assert_int_equal(t->ndone, 200);
    for (int i = 0; i < 200; i++)
        assert_true(t->done[i].status == 0 || t->done[i].status == t->closed_err);
    run_until(t, NULL, 50);
    assert_int_equal(t->closed, 1);
}

/* Freed inside its own message callback with QoS 1 publishes in flight:
 * no callback after that (done() neither), nothing leaks (ASan). */
static void test_free_in_callback(void **state)
{
    ctx_t *t = *state;
    broker_connect(t, NULL, MQR_MQTT_V5, "freecb");
    subscribe(t, "f/#", 1, 1);
    t->free_in_msg = true;
    for (int i = 0; i < 20; i++) {
        mqr_mqtt_publish_t p = pub("f/x", "bye", 1);
        assert_int_equal(mqr__mqttc_publish(t->c, &p, 10 + (uint64_t)i), 0);
    }
    int before = t->ndone;
    want_n = 1;
    assert_true(run_until(t, got_n, 5000));
    assert_null(t->c);
    run_until(t, NULL, 200);
    assert_int_equal(t->ngot, 1);
    assert_int_equal(t->closed, 0);
    assert_true(t->ndone - before < 20); /* some were acknowledged before, none after */
}

/* Our own DISCONNECT with publishes in flight fails them with MQR_ECLOSED
 * first, then closed(0). */
static void test_disconnect_pending(void **state)
{
    ctx_t *t = *state;
    broker_connect(t, NULL, MQR_MQTT_V5, "leaving");
    for (int i = 0; i < 5; i++) {
        mqr_mqtt_publish_t p = pub("d/x", "late", 1);
        assert_int_equal(mqr__mqttc_publish(t->c, &p, 1 + (uint64_t)i), 0);
    }
    mqr__mqttc_disconnect(t->c, 0); /* before any PUBACK can arrive */
    assert_true(run_until(t, is_closed, 5000));
    assert_int_equal(t->closed_err, 0);
    assert_int_equal(t->ndone, 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(t->done[i].status, MQR_ECLOSED);
}

/* ---- against a scripted server -------------------------------------------- */

static void srv_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    ctx_t *t = h->data;
    *buf = uv_buf_init((char *)t->srv_in + t->srv_in_len,
                       (unsigned)(sizeof t->srv_in - t->srv_in_len));
}

static void srv_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    ctx_t *t = s->data;
    if (n > 0) t->srv_in_len += (size_t)n;
}

static void srv_accept(uv_stream_t *s, int status)
{
    ctx_t *t = s->data;
    assert_int_equal(status, 0);
    uv_tcp_init(&t->loop, &t->srv_conn);
    t->srv_conn.data = t;
    t->srv_conn_open = true;
    assert_int_equal(uv_accept(s, (uv_stream_t *)&t->srv_conn), 0);
    uv_read_start((uv_stream_t *)&t->srv_conn, srv_alloc, srv_read);
}

static int srv_start(ctx_t *t)
{
    struct sockaddr_in a = addr_of(0);
    uv_tcp_init(&t->loop, &t->srv);
    t->srv.data = t;
    t->srv_open = true;
    assert_int_equal(uv_tcp_bind(&t->srv, (const struct sockaddr *)&a, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&t->srv, 8, srv_accept), 0);
    int len = sizeof a;
    uv_tcp_getsockname(&t->srv, (struct sockaddr *)&a, &len);
    return ntohs(a.sin_port);
}

/* Sends bytes in pieces, running the loop between them so that each piece
 * is its own read on the client's side. */
static void srv_send(ctx_t *t, const uint8_t *p, size_t n, size_t piece)
{
    for (size_t off = 0; off < n; off += piece) {
        size_t k = n - off < piece ? n - off : piece;
        uv_buf_t b = uv_buf_init((char *)p + off, (unsigned)k);
        assert_int_equal(uv_try_write((uv_stream_t *)&t->srv_conn, &b, 1), (int)k);
        run_until(t, NULL, 20);
    }
}

static const uint8_t *srv_needle;
static size_t srv_needle_len;
static bool srv_has(ctx_t *t)
{
    for (size_t i = 0; i + srv_needle_len <= t->srv_in_len; i++)
        if (memcmp(t->srv_in + i, srv_needle, srv_needle_len) == 0) return true;
    return false;
}

static bool srv_wait(ctx_t *t, const uint8_t *needle, size_t n, int timeout_ms)
{
    srv_needle = needle;
    srv_needle_len = n;
    return run_until(t, srv_has, timeout_ms);
}

static size_t publish_bytes_v(uint8_t *buf, size_t cap, int qos, uint16_t id, bool dup, int version)
{
    mqr_mqtt_publish_t p = pub("s/t", "split-payload", qos);
    p.packet_id = id;
    p.dup = dup;
    size_t len;
    assert_int_equal(mqr__mqtt_encode_publish(&p, version, buf, cap, &len), 0);
    return len;
}

static size_t publish_bytes(uint8_t *buf, size_t cap, int qos, uint16_t id, bool dup)
{
    return publish_bytes_v(buf, cap, qos, id, dup, MQR_MQTT_V311);
}

static bool srv_connected(ctx_t *t)
{
    return t->srv_conn_open && t->srv_in_len >= 2;
}

/* CONNACK and PUBLISH split across reads; an incoming QoS 1 message is
 * acknowledged only when the caller says so; a QoS 2 message is delivered
 * once though sent three times, its PUBREC goes on ack and again for a
 * late duplicate, PUBREL gets PUBCOMP; keep-alive without PINGRESP closes
 * with UV_ETIMEDOUT. */
static void test_scripted_server(void **state)
{
    ctx_t *t = *state;
    int port = srv_start(t);
    mqr_mqttc_options_t o;
    opts_init(&o, MQR_MQTT_V311, "scripted");
    o.keepalive_s = 1;
    o.receive_max = 1; /* not sent in 3.1.1, not enforced either */
    client_connect(t, &o, port);
    assert_true(run_until(t, srv_connected, 5000));
    assert_true(srv_wait(t, (const uint8_t *)"\x00\x04MQTT\x04", 7, 2000));

    static const uint8_t connack[] = {0x20, 0x02, 0x00, 0x00};
    srv_send(t, connack, 1, 1);
    run_until(t, NULL, 50);
    assert_int_equal(t->connected, 0); /* half a CONNACK is not one */
    srv_send(t, connack + 1, 3, 3);
    assert_true(run_until(t, is_connected, 2000));

    uint8_t pkt[64];
    size_t n = publish_bytes(pkt, sizeof pkt, 1, 7, false);
    srv_send(t, pkt, n, 3); /* in pieces of 3 bytes */
    want_n = 1;
    assert_true(run_until(t, got_n, 2000));
    assert_string_equal(t->got[0].payload, "split-payload");
    assert_int_equal(t->got[0].qos, 1);
    static const uint8_t puback[] = {0x40, 0x02, 0x00, 0x07};
    assert_false(srv_wait(t, puback, 4, 200)); /* not before routing */
    assert_int_equal(mqr__mqttc_ack(t->c, t->got[0].ack_id), 0);
    assert_true(srv_wait(t, puback, 4, 2000));

    n = publish_bytes(pkt, sizeof pkt, 2, 9, false);
    srv_send(t, pkt, n, n);
    n = publish_bytes(pkt, sizeof pkt, 2, 9, true);
    srv_send(t, pkt, n, n);
    want_n = 2;
    assert_true(run_until(t, got_n, 2000));
    run_until(t, NULL, 100);
    assert_int_equal(t->ngot, 2);
    static const uint8_t pubrec[] = {0x50, 0x02, 0x00, 0x09};
    assert_false(srv_wait(t, pubrec, 4, 100));
    assert_int_equal(mqr__mqttc_ack(t->c, t->got[1].ack_id), 0);
    assert_true(srv_wait(t, pubrec, 4, 2000));
    t->srv_in_len = 0;
    srv_send(t, pkt, n, n); /* the DUP again, after PUBREC: PUBREC again */
    assert_true(srv_wait(t, pubrec, 4, 2000));
    assert_int_equal(t->ngot, 2);
    static const uint8_t pubrel[] = {0x62, 0x02, 0x00, 0x09};
    static const uint8_t pubcomp[] = {0x70, 0x02, 0x00, 0x09};
    srv_send(t, pubrel, 4, 2);
    assert_true(srv_wait(t, pubcomp, 4, 2000));
    assert_int_equal(mqr__mqttc_ack(t->c, t->got[1].ack_id), MQR_ENOENT);

    /* 3.1.1 has no Receive Maximum: many unacknowledged are fine */
    for (uint16_t id = 20; id < 30; id++) {
        n = publish_bytes(pkt, sizeof pkt, 1, id, false);
        srv_send(t, pkt, n, n);
    }
    want_n = 12;
    assert_true(run_until(t, got_n, 2000));
    assert_int_equal(t->closed, 0);

    static const uint8_t pingreq[] = {0xC0, 0x00};
    assert_true(srv_wait(t, pingreq, 2, 3000));
    assert_true(run_until(t, is_closed, 3000));
    assert_int_equal(t->closed_err, UV_ETIMEDOUT);
}

/* A server that accepts TCP and says nothing: the connect timeout. */
static void test_connect_timeout(void **state)
{
    ctx_t *t = *state;
    int port = srv_start(t);
    mqr_mqttc_options_t o;
    opts_init(&o, MQR_MQTT_V5, "slow");
    o.connect_timeout_ms = 300;
    client_connect(t, &o, port);
    assert_true(run_until(t, is_closed, 3000));
    assert_int_equal(t->closed_err, UV_ETIMEDOUT);
    assert_int_equal(t->connected, 0);
}

static const uint8_t connack_v5[] = {0x20, 0x03, 0x00, 0x00, 0x00};

/* A v5 client (options o) on the scripted server, connected by connack
 * sent in pieces of piece bytes; what the server got so far is dropped.
 * Returns the server's port. */
static int scripted_v5_by(ctx_t *t, mqr_mqttc_options_t *o, const uint8_t *connack, size_t n,
                          size_t piece)
{
    int port = srv_start(t);
    client_connect(t, o, port);
    assert_true(srv_wait(t, (const uint8_t *)"\x00\x04MQTT\x05", 7, 2000));
    srv_send(t, connack, n, piece);
    assert_true(run_until(t, is_connected, 2000));
    t->srv_in_len = 0;
    return port;
}

/* The same with a plain CONNACK in one piece; o may set limits. */
static int scripted_v5(ctx_t *t, mqr_mqttc_options_t *o)
{
    return scripted_v5_by(t, o, connack_v5, sizeof connack_v5, sizeof connack_v5);
}

/* 5.0: the server's DISCONNECT (0x8B, shutting down) ends the connection
 * with its reason. */
static void test_scripted_disconnect_v5(void **state)
{
    ctx_t *t = *state;
    mqr_mqttc_options_t o;
    opts_init(&o, MQR_MQTT_V5, "scripted5");
    scripted_v5_by(t, &o, connack_v5, sizeof connack_v5, 2);
    static const uint8_t disconnect[] = {0xE0, 0x01, 0x8B};
    srv_send(t, disconnect, sizeof disconnect, 1);
    assert_true(run_until(t, is_closed, 2000));
    assert_int_equal(t->closed_err, MQR_EUPSTREAM);
    assert_int_equal(t->closed_reason, MQR_MQTT_RC_SERVER_SHUTTING_DOWN);
}

/* 5.0 §4.11: a server that sends us elsewhere (DISCONNECT 0x9C, Use
 * another server) names where; the close's words carry it. */
static void test_scripted_server_reference_v5(void **state)
{
    ctx_t *t = *state;
    mqr_mqttc_options_t o;
    opts_init(&o, MQR_MQTT_V5, "moved");
    scripted_v5(t, &o);
    static const uint8_t disconnect[] = {0xE0, 0x0F, 0x9C, 0x0D, 0x1C, 0x00, 0x0A, 'o', 't',
                                         'h',  'e',  'r',  ':',  '1',  '8',  '8',  '3'};
    srv_send(t, disconnect, sizeof disconnect, sizeof disconnect);
    assert_true(run_until(t, is_closed, 2000));
    assert_int_equal(t->closed_err, MQR_EUPSTREAM);
    assert_int_equal(t->closed_reason, 0x9C);
    if (!strstr(t->closed_why, "(server reference: other:1883)"))
        fail_msg("closed_why: '%s'", t->closed_why);
}

/* Our Maximum Packet Size: a bigger packet closes with MQR_ETOOLARGE and
 * DISCONNECT 0x95 (5.0 §3.1.2.11.4), as soon as its header is in. */
static void test_scripted_too_large_v5(void **state)
{
    ctx_t *t = *state;
    mqr_mqttc_options_t o;
    opts_init(&o, MQR_MQTT_V5, "small");
    o.max_packet_size = 16;
    scripted_v5(t, &o);
    uint8_t pkt[64];
    size_t n = publish_bytes_v(pkt, sizeof pkt, 0, 0, false, MQR_MQTT_V5);
    assert_true(n > 16);
    srv_send(t, pkt, 2, 2);
    assert_true(run_until(t, is_closed, 2000));
    assert_int_equal(t->closed_err, MQR_ETOOLARGE);
    assert_int_equal(t->ngot, 0);
    static const uint8_t disconnect[] = {0xE0, 0x01, 0x95};
    assert_true(srv_wait(t, disconnect, 3, 2000));
}

/* Our Receive Maximum 1: a second QoS 1 message while the first is not
 * acknowledged is a protocol error, DISCONNECT 0x93 (5.0 §3.3.4). */
static void test_scripted_receive_max_v5(void **state)
{
    ctx_t *t = *state;
    mqr_mqttc_options_t o;
    opts_init(&o, MQR_MQTT_V5, "one");
    o.receive_max = 1;
    scripted_v5(t, &o);
    uint8_t pkt[64];
    size_t n = publish_bytes_v(pkt, sizeof pkt, 1, 1, false, MQR_MQTT_V5);
    srv_send(t, pkt, n, n);
    want_n = 1;
    assert_true(run_until(t, got_n, 2000));
    n = publish_bytes_v(pkt, sizeof pkt, 1, 2, false, MQR_MQTT_V5);
    srv_send(t, pkt, n, n);
    assert_true(run_until(t, is_closed, 2000));
    assert_int_equal(t->closed_err, MQR_EPROTOCOL);
    assert_int_equal(t->ngot, 1);
    static const uint8_t disconnect[] = {0xE0, 0x01, 0x93};
    assert_true(srv_wait(t, disconnect, 3, 2000));
}

/* The server's Topic Alias Maximum 2: the first QoS 0 PUBLISH of a topic
 * sets an alias (topic and property), later ones carry the alias alone; a
 * third topic goes out in full; QoS 1 never uses one (it may be resent on
 * another connection). */
static void test_scripted_topic_alias_out_v5(void **state)
{
    ctx_t *t = *state;
    mqr_mqttc_options_t o;
    opts_init(&o, MQR_MQTT_V5, "alias");
    static const uint8_t connack[] = {0x20, 0x06, 0x00, 0x00, 0x03, 0x22, 0x00, 0x02};
    scripted_v5_by(t, &o, connack, sizeof connack, sizeof connack);
    static const struct {
        const char *topic, *payload;
        int qos;
    } sent[] = {{"a/b", "p1", 0}, {"a/b", "p2", 0}, {"c/d", "p3", 0},
                {"e/f", "p4", 0}, {"a/b", "p5", 0}, {"a/b", "p6", 1}};
    for (size_t i = 0; i < sizeof sent / sizeof sent[0]; i++) {
        mqr_mqtt_publish_t p = pub(sent[i].topic, sent[i].payload, sent[i].qos);
        assert_int_equal(mqr__mqttc_publish(t->c, &p, 0), 0);
    }
    static const uint8_t want[] = {
        0x30, 0x0B, 0x00, 0x03, 'a',  '/',  'b',  0x03, 0x23, 0x00, 0x01, 'p', '1', /* sets 1 */
        0x30, 0x08, 0x00, 0x00, 0x03, 0x23, 0x00, 0x01, 'p',  '2',                  /* uses 1 */
        0x30, 0x0B, 0x00, 0x03, 'c',  '/',  'd',  0x03, 0x23, 0x00, 0x02, 'p', '3', /* sets 2 */
        0x30, 0x08, 0x00, 0x03, 'e',  '/',  'f',  0x00, 'p',  '4',                  /* none left */
        0x30, 0x08, 0x00, 0x00, 0x03, 0x23, 0x00, 0x01, 'p',  '5',                  /* uses 1 */
        0x32, 0x0A, 0x00, 0x03, 'a',  '/',  'b',  0x00, 0x01, 0x00, 'p',  '6', /* QoS 1: full */
    };
    if (!srv_wait(t, want, sizeof want, 2000)) {
        char hex[3 * sizeof t->srv_in + 1] = "";
        for (size_t i = 0; i < t->srv_in_len && i < 200; i++)
            snprintf(hex + 3 * i, 4, "%02x ", t->srv_in[i]);
        fail_msg("the server got: %s", hex);
    }
}

/* The packet ids of the PUBLISH packets (of qos) the scripted server got. */
static int srv_publish_ids(ctx_t *t, int qos, uint16_t *ids, int max)
{
    int n = 0;
    mqr_mqtt_frame_t f;
    for (size_t off = 0;
         mqr__mqtt_frame(t->srv_in + off, t->srv_in_len - off, 0, MQR_MQTT_V5, &f) == 0;
         off += f.total) {
        mqr_mqtt_publish_t p;
        if (f.type != MQR_MQTT_PUBLISH) continue;
        assert_int_equal(mqr__mqtt_decode_publish(t->srv_in + off, f.total, MQR_MQTT_V5,
                                                  MQR_MQTT_FROM_CLIENT, &p),
                         0);
        if (p.qos == qos && n < max) ids[n++] = p.packet_id;
    }
    return n;
}

static int want_ids;
static bool srv_has_ids(ctx_t *t)
{
    uint16_t ids[16];
    return srv_publish_ids(t, 1, ids, 16) + srv_publish_ids(t, 2, ids, 16) >= want_ids;
}

/* The server's Receive Maximum 2 from CONNACK: two QoS 1 publishes out,
 * the others wait; a PUBACK frees its id for the next publish (reused);
 * PUBACK 0x10 is a success, 0x97 a failure with its reason; QoS 2:
 * PUBREC -> PUBREL -> PUBCOMP, and PUBREC 0x87 ends it as a failure. */
static void test_scripted_outbound_v5(void **state)
{
    ctx_t *t = *state;
    mqr_mqttc_options_t o;
    opts_init(&o, MQR_MQTT_V5, "out5");
    static const uint8_t connack[] = {0x20, 0x06, 0x00, 0x00, 0x03, 0x21, 0x00, 0x02};
    scripted_v5_by(t, &o, connack, sizeof connack, sizeof connack);
    assert_int_equal(mqr__mqttc_window(t->c), 2);

    for (int i = 0; i < 3; i++) {
        mqr_mqtt_publish_t p = pub("o/x", "one", 1);
        assert_int_equal(mqr__mqttc_publish(t->c, &p, 1 + (uint64_t)i), 0);
    }
    mqr_mqtt_publish_t p2 = pub("o/y", "two", 2);
    assert_int_equal(mqr__mqttc_publish(t->c, &p2, 4), 0);
    assert_int_equal(mqr__mqttc_publish(t->c, &p2, 5), 0);
    want_ids = 2;
    assert_true(run_until(t, srv_has_ids, 2000));
    run_until(t, NULL, 100);
    uint16_t ids[16];
    assert_int_equal(srv_publish_ids(t, 1, ids, 16), 2);
    assert_int_not_equal(ids[0], ids[1]);
    assert_int_equal(mqr__mqttc_waiting(t->c), 3);
    uint16_t first = ids[0], second = ids[1];

    /* PUBACK 0x10 for the first: done ok, its id goes to the third */
    uint8_t ack[] = {0x40, 0x03, (uint8_t)(first >> 8), (uint8_t)first, 0x10};
    t->srv_in_len = 0;
    srv_send(t, ack, sizeof ack, sizeof ack);
    want_n = 1;
    assert_true(run_until(t, done_n, 2000));
    assert_int_equal(t->done[0].token, 1);
    assert_int_equal(t->done[0].status, 0);
    assert_int_equal(t->done[0].reason, 0x10);
    want_ids = 1;
    assert_true(run_until(t, srv_has_ids, 2000));
    assert_int_equal(srv_publish_ids(t, 1, ids, 16), 1);
    assert_int_equal(ids[0], first); /* reused */

    /* PUBACK 0x97 for the second: a failure with its reason */
    uint8_t nack[] = {0x40, 0x03, (uint8_t)(second >> 8), (uint8_t)second, 0x97};
    t->srv_in_len = 0;
    srv_send(t, nack, sizeof nack, sizeof nack);
    want_n = 2;
    assert_true(run_until(t, done_n, 2000));
    assert_int_equal(t->done[1].token, 2);
    assert_int_equal(t->done[1].status, MQR_EUPSTREAM);
    assert_int_equal(t->done[1].reason, 0x97);

    /* the first QoS 2 is out now, with the second's id */
    want_ids = 1;
    assert_true(run_until(t, srv_has_ids, 2000));
    assert_int_equal(srv_publish_ids(t, 2, ids, 16), 1);
    uint16_t q2 = ids[0];
    assert_int_equal(q2, second);
    uint8_t rec[] = {0x50, 0x02, (uint8_t)(q2 >> 8), (uint8_t)q2};
    uint8_t rel[] = {0x62, 0x02, (uint8_t)(q2 >> 8), (uint8_t)q2};
    srv_send(t, rec, sizeof rec, sizeof rec);
    assert_true(srv_wait(t, rel, sizeof rel, 2000));
    assert_int_equal(t->ndone, 2); /* not before PUBCOMP */
    uint8_t comp[] = {0x70, 0x02, (uint8_t)(q2 >> 8), (uint8_t)q2};
    t->srv_in_len = 0;
    srv_send(t, comp, sizeof comp, sizeof comp);
    want_n = 3;
    assert_true(run_until(t, done_n, 2000));
    assert_int_equal(t->done[2].token, 4);
    assert_int_equal(t->done[2].status, 0);

    /* the last QoS 2 takes the freed id; PUBACK for the third, then
     * PUBREC 0x87 for the last */
    want_ids = 1;
    assert_true(run_until(t, srv_has_ids, 2000));
    assert_int_equal(srv_publish_ids(t, 2, ids, 16), 1);
    assert_int_equal(ids[0], q2);
    ack[4] = 0x00;
    srv_send(t, ack, sizeof ack, sizeof ack);
    uint8_t rec_no[] = {0x50, 0x03, (uint8_t)(ids[0] >> 8), (uint8_t)ids[0], 0x87};
    srv_send(t, rec_no, sizeof rec_no, sizeof rec_no);
    want_n = 5;
    assert_true(run_until(t, done_n, 2000));
    assert_int_equal(t->done[3].token, 3);
    assert_int_equal(t->done[3].status, 0);
    assert_int_equal(t->done[4].token, 5);
    assert_int_equal(t->done[4].status, MQR_EUPSTREAM);
    assert_int_equal(t->done[4].reason, 0x87);
    assert_int_equal(mqr__mqttc_inflight(t->c), 0);
    assert_int_equal(t->closed, 0);
}

static void test_bad_options(void **state)
{
    ctx_t *t = *state;
    mqr_mqttc_options_t o;
    opts_init(&o, 3, "x");
    assert_int_equal(mqr__mqttc_new(&t->loop, &o, &cbs, t, &t->c), MQR_EINVAL);
    opts_init(&o, MQR_MQTT_V5, "x");
    o.will_topic = "a/#";
    assert_int_equal(mqr__mqttc_new(&t->loop, &o, &cbs, t, &t->c), MQR_EINVAL);
    assert_null(t->c);
    opts_init(&o, MQR_MQTT_V5, "x");
    assert_int_equal(mqr__mqttc_new(&t->loop, &o, &cbs, t, &t->c), 0);
    mqr_mqtt_publish_t p = pub("a", "b", 0);
    assert_int_equal(mqr__mqttc_publish(t->c, &p, 1), MQR_ENOTCONN);
}

/* ---- session resume (keep_inflight) ------------------------------------- */

static bool srv_conn_gone;
static void on_srv_conn_closed(uv_handle_t *h)
{
    (void)h;
    srv_conn_gone = true;
}

static bool srv_conn_closed(ctx_t *t)
{
    (void)t;
    return srv_conn_gone;
}

/* The kinds and ids of the packets the scripted server got, in order. */
static int srv_packets(ctx_t *t, uint8_t *types, uint16_t *ids, bool *dups, int max)
{
    int n = 0;
    mqr_mqtt_frame_t f;
    for (size_t off = 0;
         n < max && mqr__mqtt_frame(t->srv_in + off, t->srv_in_len - off, 0, MQR_MQTT_V5, &f) == 0;
         off += f.total) {
        types[n] = (uint8_t)f.type;
        dups[n] = (t->srv_in[off] & 0x08) != 0;
        if (f.type == MQR_MQTT_PUBLISH) {
            mqr_mqtt_publish_t p;
            assert_int_equal(mqr__mqtt_decode_publish(t->srv_in + off, f.total, MQR_MQTT_V5,
                                                      MQR_MQTT_FROM_CLIENT, &p),
                             0);
            ids[n] = p.packet_id;
        } else {
            mqr_mqtt_ack_t a;
            ids[n] = mqr__mqtt_decode_ack(t->srv_in + off, f.total, MQR_MQTT_V5, &a) == 0
                         ? a.packet_id
                         : 0;
        }
        n++;
    }
    return n;
}

static int want_packets;
static bool srv_has_packets(ctx_t *t)
{
    uint8_t ty[16];
    uint16_t id[16];
    bool dup[16];
    return srv_packets(t, ty, id, dup, 16) >= want_packets;
}

/* A persistent session's connection ends with QoS 1 "a", QoS 2 "b" (after
 * PUBREC) and QoS 1 "c" unfinished: nothing is failed; the next client
 * takes them over and, on a CONNACK with Session Present, sends PUBLISH a
 * (DUP, same id), PUBREL b, PUBLISH c (DUP) in that order, before
 * connected(); the server's answers finish them with their tokens. Without
 * Session Present, b is done (the server had it) and a and c go out again
 * as new publishes, without DUP. */
static void resume(void **state, bool present)
{
    ctx_t *t = *state;
    mqr_mqttc_options_t o;
    opts_init(&o, MQR_MQTT_V5, "resume");
    o.clean_start = false;
    o.session_expiry_s = 600;
    o.keep_inflight = true;
    int port = scripted_v5(t, &o);
    mqr_mqtt_publish_t a = pub("r/a", "a", 1), b = pub("r/b", "b", 2), c = pub("r/c", "c", 1);
    assert_int_equal(mqr__mqttc_publish(t->c, &a, 1), 0);
    assert_int_equal(mqr__mqttc_publish(t->c, &b, 2), 0);
    assert_int_equal(mqr__mqttc_publish(t->c, &c, 3), 0);
    want_packets = 3;
    assert_true(run_until(t, srv_has_packets, 2000));
    uint8_t ty[16];
    uint16_t id[16];
    bool dup[16];
    assert_int_equal(srv_packets(t, ty, id, dup, 16), 3);
    uint16_t ida = id[0], idb = id[1], idc = id[2];
    uint8_t pubrec[] = {0x50, 0x02, (uint8_t)(idb >> 8), (uint8_t)idb};
    srv_send(t, pubrec, sizeof pubrec, sizeof pubrec);
    want_packets = 4; /* our PUBREL */
    assert_true(run_until(t, srv_has_packets, 2000));

    /* the server goes away: nothing is failed, everything is held */
    srv_conn_gone = false;
    uv_close((uv_handle_t *)&t->srv_conn, on_srv_conn_closed);
    t->srv_conn_open = false;
    assert_true(run_until(t, srv_conn_closed, 2000));
    assert_true(run_until(t, is_closed, 2000));
    assert_int_equal(t->ndone, 0);
    mqr_mqttc_t *old = t->c;
    t->c = NULL;
    mqr_mqttc_t *next;
    assert_int_equal(mqr__mqttc_new(&t->loop, &o, &cbs, t, &next), 0);
    assert_int_equal(mqr__mqttc_resume(next, next), MQR_EINVAL);
    assert_int_equal(mqr__mqttc_resume(next, old), 0);
    mqr__mqttc_free(old);
    t->c = next;
    t->connected = t->closed = 0;
    t->srv_in_len = 0;
    struct sockaddr_in sa = addr_of(port);
    assert_int_equal(mqr__mqttc_connect(next, (const struct sockaddr *)&sa), 0);
    assert_true(srv_wait(t, (const uint8_t *)"\x00\x04MQTT\x05", 7, 2000));
    t->srv_in_len = 0;
    static const uint8_t connack_sp[] = {0x20, 0x03, 0x01, 0x00, 0x00};
    srv_send(t, present ? connack_sp : connack_v5, sizeof connack_v5, sizeof connack_v5);
    assert_true(run_until(t, is_connected, 2000));
    if (present) {
        want_packets = 3;
        assert_true(run_until(t, srv_has_packets, 2000));
        assert_int_equal(srv_packets(t, ty, id, dup, 16), 3);
        assert_int_equal(ty[0], MQR_MQTT_PUBLISH);
        assert_int_equal(id[0], ida);
        assert_true(dup[0]);
        assert_int_equal(ty[1], MQR_MQTT_PUBREL);
        assert_int_equal(id[1], idb);
        assert_int_equal(ty[2], MQR_MQTT_PUBLISH);
        assert_int_equal(id[2], idc);
        assert_true(dup[2]);
        uint8_t answers[] = {0x40, 0x02, (uint8_t)(ida >> 8), (uint8_t)ida,
                             0x70, 0x02, (uint8_t)(idb >> 8), (uint8_t)idb,
                             0x40, 0x02, (uint8_t)(idc >> 8), (uint8_t)idc};
        srv_send(t, answers, sizeof answers, sizeof answers);
        want_n = 3;
        assert_true(run_until(t, done_n, 2000));
    } else {
        want_n = 1; /* b: the server had it */
        assert_true(run_until(t, done_n, 2000));
        assert_int_equal(t->done[0].token, 2);
        assert_int_equal(t->done[0].status, 0);
        want_packets = 2;
        assert_true(run_until(t, srv_has_packets, 2000));
        assert_int_equal(srv_packets(t, ty, id, dup, 16), 2);
        assert_int_equal(ty[0], MQR_MQTT_PUBLISH);
        assert_false(dup[0]);
        assert_int_equal(ty[1], MQR_MQTT_PUBLISH);
        assert_false(dup[1]);
        uint8_t answers[] = {0x40, 0x02, (uint8_t)(id[0] >> 8), (uint8_t)id[0],
                             0x40, 0x02, (uint8_t)(id[1] >> 8), (uint8_t)id[1]};
        srv_send(t, answers, sizeof answers, sizeof answers);
        want_n = 3;
        assert_true(run_until(t, done_n, 2000));
    }
    for (uint64_t tok = 1; tok <= 3; tok++) {
        const done_t *d = done_of(t, tok);
        assert_non_null(d);
        assert_int_equal(d->status, 0);
    }
    assert_int_equal(mqr__mqttc_inflight(t->c), 0);
}

static void test_resume_session_present(void **state)
{
    resume(state, true);
}

static void test_resume_session_lost(void **state)
{
    resume(state, false);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bad_options, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scripted_server, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_roundtrip_v311, setup, teardown),
        cmocka_unit_test_setup_teardown(test_roundtrip_v5, setup, teardown),
        cmocka_unit_test_setup_teardown(test_window_and_limits_v5, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_qos_v5, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_v311, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_v5, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keepalive_pings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_broker_killed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_in_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_disconnect_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scripted_disconnect_v5, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scripted_too_large_v5, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scripted_outbound_v5, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scripted_receive_max_v5, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scripted_topic_alias_out_v5, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scripted_server_reference_v5, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_session_present, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_session_lost, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
