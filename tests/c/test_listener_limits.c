/*
 * test_listener_limits.c — the listener's limits and its $SYS topics:
 * max_qos, max_connections (refusing CONNACKs), connect_rate,
 * publish_rate (backpressure, nothing lost), packet ids not in use, and
 * $SYS/broker/... statistics.
 *
 * Same approach as test_listener.c (whose raw-socket client harness this
 * repeats, so each file stays one self-contained cmocka executable): a real
 * engine on its own loop, a second listener with the options under test,
 * raw TCP clients whose packets the codec builds and reads. Every wait has a
 * deadline.
 */
#include "listener.h"
#include "listener.h"
#include "codec.h"
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <setjmp.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "listener_harness.h"

/* ---- CONNECT / CONNACK ---------------------------------------------------- */

/* ---- a listener with options ----------------------------------------------- */

/* Starts a second listener with o and points new clients at it. */
static mqr_listener_t *extra_listener(const mqr_listener_options_t *o)
{
    mqr_listener_t *l;
    int port = free_port();
    assert_int_equal(mqr__listener_start_opts(F.e, "127.0.0.1", port, o, &l), 0);
    F.extra = l;
    F.port = port;
    return l;
}

static client_t *connect_with_will(int version, const char *id, int will_qos)
{
    client_t *c = cl_open();
    c->version = version;
    mqr_mqtt_connect_t k;
    memset(&k, 0, sizeof k);
    k.version = (uint8_t)version;
    k.clean_start = true;
    k.keep_alive = 60;
    k.client_id.p = id;
    k.client_id.len = (uint16_t)strlen(id);
    k.has_will = true;
    k.will_qos = (uint8_t)will_qos;
    k.will_topic.p = "will/t";
    k.will_topic.len = 6;
    k.will_payload.p = (const uint8_t *)"gone";
    k.will_payload.len = 4;
    uint8_t buf[256];
    size_t n;
    assert_int_equal(mqr__mqtt_encode_connect(&k, buf, sizeof buf, &n), 0);
    cl_send(c, buf, n);
    return c;
}

/* ---- max_qos ------------------------------------------------------------------ */

static void test_max_qos(void **state)
{
    mqr_listener_options_t o;
    mqr__listener_options_init(&o);
    o.max_qos = 1;
    mqr_listener_t *l = extra_listener(&o);

    /* v5 is told, and SUBSCRIBE gets at most 1 */
    client_t *s = cl_open();
    send_connect(s, MQR_MQTT_V5, "sub", true, 60);
    mqr_mqtt_connack_t a = expect_connack(s);
    assert_int_equal(a.reason, 0);
    assert_int_equal(a.max_qos, 1);
    send_subscribe_full(s, 7, "q/#", 2, false, false, 0, 0);
    cl_expect(s, MQR_MQTT_SUBACK);
    mqr_mqtt_suback_t sa;
    assert_int_equal(mqr__mqtt_decode_suback(s->pkt, s->pkt_len, s->version, &sa), 0);
    assert_int_equal(sa.codes[0], 1);

    /* 3.1.1: a QoS 2 PUBLISH completes its own flow and is routed at QoS 1 */
    client_t *p4 = client(MQR_MQTT_V311, "p4");
    send_publish(p4, "q/a", "two", 2, false, 5);
    expect_ack(p4, MQR_MQTT_PUBREC, 5);
    mqr_mqtt_publish_t m = expect_publish(s, "q/a", "two");
    assert_int_equal(m.qos, 1);
    send_ack(s, MQR_MQTT_PUBACK, m.packet_id);
    send_ack(p4, MQR_MQTT_PUBREL, 5);
    expect_ack(p4, MQR_MQTT_PUBCOMP, 5);
    assert_int_equal(mqr__listener_stats(l)->qos_exceeded, 1);

    /* v5: a QoS 2 PUBLISH is a protocol error 0x9B */
    client_t *p5 = client(MQR_MQTT_V5, "p5");
    send_publish(p5, "q/b", "two", 2, false, 6);
    assert_int_equal(expect_disconnect(p5), MQR_MQTT_RC_QOS_NOT_SUPPORTED);
    cl_expect_closed(p5, WAIT_MS);
    cl_expect_nothing(s, QUIET_MS);
    assert_int_equal(mqr__listener_stats(l)->qos_exceeded, 2);

    /* a v5 will above it is refused at CONNECT */
    client_t *w = connect_with_will(MQR_MQTT_V5, "w5", 2);
    assert_int_equal(expect_connack(w).reason, MQR_MQTT_RC_QOS_NOT_SUPPORTED);
    cl_expect_closed(w, WAIT_MS);
    /* QoS 1 is fine */
    client_t *w1 = connect_with_will(MQR_MQTT_V5, "w1", 1);
    assert_int_equal(expect_connack(w1).reason, 0);

    cl_free(s);
    cl_free(p4);
    cl_free(p5);
    cl_free(w);
    cl_free(w1);
}

static void test_max_qos_zero(void **state)
{
    mqr_listener_options_t o;
    mqr__listener_options_init(&o);
    o.max_qos = -1; /* QoS 0 only */
    extra_listener(&o);
    client_t *s = cl_open();
    send_connect(s, MQR_MQTT_V5, "sub", true, 60);
    mqr_mqtt_connack_t a = expect_connack(s);
    assert_int_equal(a.max_qos, 0);
    send_subscribe_full(s, 7, "z", 1, false, false, 0, 0);
    cl_expect(s, MQR_MQTT_SUBACK);
    mqr_mqtt_suback_t sa;
    assert_int_equal(mqr__mqtt_decode_suback(s->pkt, s->pkt_len, s->version, &sa), 0);
    assert_int_equal(sa.codes[0], 0);
    client_t *p = client(MQR_MQTT_V5, "p");
    send_publish(p, "z", "one", 1, false, 1);
    assert_int_equal(expect_disconnect(p), MQR_MQTT_RC_QOS_NOT_SUPPORTED);
    cl_free(s);
    cl_free(p);
}

/* ---- max_connections ---------------------------------------------------------- */

static void test_max_connections(void **state)
{
    mqr_listener_options_t o;
    mqr__listener_options_init(&o);
    o.max_connections = 2;
    mqr_listener_t *l = extra_listener(&o);
    client_t *a = client(MQR_MQTT_V5, "a");
    client_t *b = client(MQR_MQTT_V311, "b");
    /* beyond: v5 hears Quota exceeded, 3.1.1 Server unavailable */
    client_t *c5 = cl_open();
    send_connect(c5, MQR_MQTT_V5, "c5", true, 60);
    assert_int_equal(expect_connack(c5).reason, MQR_MQTT_RC_QUOTA_EXCEEDED);
    cl_expect_closed(c5, WAIT_MS);
    client_t *c4 = cl_open();
    send_connect(c4, MQR_MQTT_V311, "c4", true, 60);
    assert_int_equal(expect_connack(c4).reason, 3);
    cl_expect_closed(c4, WAIT_MS);
    assert_int_equal(mqr__listener_stats(l)->connects_over_limit, 2);
    assert_int_equal(mqr__listener_stats(l)->clients_current, 2);

    /* past the slack, sockets close at accept */
    enum { N = MQR_LSN_OVER_SLACK + 4 };
    client_t *x[N];
    for (int i = 0; i < N; i++)
        x[i] = cl_open();
    run_for(100);
    int closed = 0;
    for (int i = 0; i < N; i++)
        if (cl_next(x[i], 1) == -1) closed++;
    assert_int_equal(closed, N - MQR_LSN_OVER_SLACK);
    /* the slack ones wait at most MQR_LSN_OVER_WAIT_MS for a CONNECT */
    for (int i = 0; i < N; i++)
        cl_expect_closed(x[i], (int)MQR_LSN_OVER_WAIT_MS + 1000);
    assert_int_equal(mqr__listener_stats(l)->connects_over_limit, 2 + N);
    /* the clients in place are untouched */
    ping(a);
    ping(b);
    for (int i = 0; i < N; i++)
        cl_free(x[i]);
    cl_free(a);
    cl_free(b);
    cl_free(c5);
    cl_free(c4);
}

/* ---- connect_rate ------------------------------------------------------------- */

static void test_connect_rate(void **state)
{
    mqr_listener_options_t o;
    mqr__listener_options_init(&o);
    o.connect_rate = 4;
    o.connect_burst = 5;
    mqr_listener_t *l = extra_listener(&o);
    client_t *x[10];
    for (int i = 0; i < 10; i++)
        x[i] = cl_open();
    run_for(100);
    int closed = 0;
    for (int i = 0; i < 10; i++)
        if (cl_next(x[i], 1) == -1) closed++;
    /* 5 take the burst's tokens, 5 are closed; fewer if the loop was slow
     * to accept them (4 tokens a second come back meanwhile) */
    assert_in_range(closed, 2, 5);
    assert_int_equal(mqr__listener_stats(l)->connects_rate_limited, (uint64_t)closed);
    /* a second later the bucket has tokens again */
    run_for(600);
    client_t *ok = client(MQR_MQTT_V311, "later");
    ping(ok);
    cl_free(ok);
    for (int i = 0; i < 10; i++)
        cl_free(x[i]);
}

/* ---- publish_rate ---------------------------------------------------------- */

static void test_publish_rate_backpressure(void **state)
{
    mqr_listener_options_t o;
    mqr__listener_options_init(&o);
    o.publish_rate = 40;
    o.publish_burst = 10;
    mqr_listener_t *l = extra_listener(&o);
    client_t *s = client(MQR_MQTT_V311, "sub");
    subscribe(s, "r", 0);
    client_t *p = client(MQR_MQTT_V5, "fast");
    /* 50 publishes at once, then a ping behind them */
    uint64_t t0 = now_ms();
    uint8_t buf[50 * 16 + 2];
    size_t off = 0;
    for (int i = 0; i < 50; i++) {
        mqr_mqtt_publish_t m;
        memset(&m, 0, sizeof m);
        m.topic.p = "r";
        m.topic.len = 1;
        m.payload.p = &buf[0]; /* any byte */
        m.payload.len = 1;
        size_t n;
        uint8_t pkt[16];
        assert_int_equal(mqr__mqtt_encode_publish(&m, p->version, pkt, sizeof pkt, &n), 0);
        memcpy(buf + off, pkt, n);
        off += n;
    }
    buf[off++] = 0xC0;
    buf[off++] = 0x00;
    cl_send(p, buf, off);
    /* all 50 arrive, none lost, but paced: 10 at once, then 40/s */
    int got = 0;
    uint64_t end = now_ms() + 4000;
    while (got < 50 && now_ms() < end)
        if (cl_next(s, 50) == 1 && pkt_type(s) == MQR_MQTT_PUBLISH) got++;
    uint64_t took = now_ms() - t0;
    assert_int_equal(got, 50);
    if (took < 800)
        fail_msg("50 publishes at 40/s (burst 10) took only %llu ms", (unsigned long long)took);
    cl_expect(p, MQR_MQTT_PINGRESP); /* the connection is fine */
    assert_true(mqr__listener_stats(l)->publish_throttled >= 1);
    assert_int_equal(mqr__listener_stats(l)->msgs_in, 50);
    cl_free(s);
    cl_free(p);
}

/* ---- packet ids not in use, oversized input ------------------------------------ */

static void test_unknown_packet_ids(void **state)
{
    client_t *c = client(MQR_MQTT_V5, "odd");
    uint64_t before = stats()->unknown_acks;
    send_ack(c, MQR_MQTT_PUBREL, 77);
    assert_int_equal(expect_ack(c, MQR_MQTT_PUBCOMP, 77).reason, MQR_MQTT_RC_PACKET_ID_NOT_FOUND);
    send_ack(c, MQR_MQTT_PUBREC, 78);
    assert_int_equal(expect_ack(c, MQR_MQTT_PUBREL, 78).reason, MQR_MQTT_RC_PACKET_ID_NOT_FOUND);
    send_ack(c, MQR_MQTT_PUBACK, 79); /* nothing to answer */
    send_ack(c, MQR_MQTT_PUBCOMP, 80);
    ping(c);
    assert_int_equal(stats()->unknown_acks - before, 4);
    cl_free(c);
}

static void test_too_large_counted(void **state)
{
    mqr_listener_options_t o;
    mqr__listener_options_init(&o);
    o.max_packet_size = 256;
    mqr_listener_t *l = extra_listener(&o);
    client_t *c = client(MQR_MQTT_V5, "big");
    char pl[400];
    memset(pl, 'x', sizeof pl);
    send_publish_full(c, "t", pl, sizeof pl, 0, false, 0, false, NULL, 0);
    assert_int_equal(expect_disconnect(c), MQR_MQTT_RC_PACKET_TOO_LARGE);
    assert_int_equal(mqr__listener_stats(l)->too_large_in, 1);
    cl_free(c);
}

/* ---- $SYS ------------------------------------------------------------------ */

/* Reads PUBLISH packets for ms; counts those whose topic starts with $SYS/
 * and returns the payload of want (if given) in out. */
static int collect_sys(client_t *c, int ms, const char *want, char *out, size_t cap)
{
    int n = 0;
    uint64_t end = now_ms() + (uint64_t)ms;
    while (now_ms() < end) {
        if (cl_next(c, 20) != 1 || pkt_type(c) != MQR_MQTT_PUBLISH) continue;
        mqr_mqtt_publish_t p;
        assert_int_equal(
            mqr__mqtt_decode_publish(c->pkt, c->pkt_len, c->version, MQR_MQTT_FROM_SERVER, &p), 0);
        if (p.topic.len >= 5 && memcmp(p.topic.p, "$SYS/", 5) == 0) n++;
        if (want && p.topic.len == strlen(want) && memcmp(p.topic.p, want, p.topic.len) == 0) {
            size_t k = p.payload.len < cap - 1 ? p.payload.len : cap - 1;
            memcpy(out, p.payload.p, k);
            out[k] = '\0';
        }
    }
    return n;
}

static void test_sys_topics(void **state)
{
    mqr_listener_options_t o;
    mqr__listener_options_init(&o);
    o.sys_interval_ms = 200;
    int main_port = F.port;
    extra_listener(&o);
    run_for(50);
    /* one client on the engine's other listener: the figures are the sums */
    int extra_port = F.port;
    F.port = main_port;
    client_t *other = client(MQR_MQTT_V311, "other");
    F.port = extra_port;
    client_t *all = client(MQR_MQTT_V311, "all");
    subscribe(all, "#", 0);
    client_t *plus = client(MQR_MQTT_V311, "plus");
    subscribe(plus, "+/broker/uptime", 0);
    client_t *sys = client(MQR_MQTT_V5, "sys");
    send_subscribe_full(sys, 7, "$SYS/#", 0, false, false, 0, 0);
    cl_expect(sys, MQR_MQTT_SUBACK);
    /* retained: the latest figures at once, with RETAIN set */
    cl_expect(sys, MQR_MQTT_PUBLISH);
    mqr_mqtt_publish_t p;
    assert_int_equal(
        mqr__mqtt_decode_publish(sys->pkt, sys->pkt_len, sys->version, MQR_MQTT_FROM_SERVER, &p),
        0);
    assert_true(p.retain);
    assert_memory_equal(p.topic.p, "$SYS/broker/", 12);

    char connected[32] = "";
    int n = collect_sys(sys, 700, "$SYS/broker/clients/connected", connected, sizeof connected);
    assert_true(n > 3);
    assert_string_equal(connected, "4");
    /* wildcards at the first level never match $ topics */
    assert_int_equal(collect_sys(all, QUIET_MS, NULL, NULL, 0), 0);
    assert_int_equal(collect_sys(plus, 10, NULL, NULL, 0), 0);

    /* a message through the listener shows in the counters */
    client_t *pub = client(MQR_MQTT_V311, "pub");
    send_publish(pub, "x", "hello", 0, false, 0);
    expect_publish(all, "x", "hello");
    char received[32] = "";
    collect_sys(sys, 700, "$SYS/broker/messages/received", received, sizeof received);
    assert_string_equal(received, "1");

    /* a new subscriber gets the version at once, retained */
    client_t *late = client(MQR_MQTT_V311, "late");
    send_subscribe_full(late, 7, "$SYS/broker/version", 0, false, false, 0, 0);
    cl_expect(late, MQR_MQTT_SUBACK);
    expect_publish(late, "$SYS/broker/version", "mqrouter version " MQR_VERSION_STRING);

    cl_free(other);
    cl_free(all);
    cl_free(plus);
    cl_free(sys);
    cl_free(pub);
    cl_free(late);
}

static int count_rows(const char *sql)
{
    sqlite3 *db;
    char path[128];
    snprintf(path, sizeof path, "%s/mqrouter.db", F.dir);
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

static void test_sys_not_stored(void **state)
{
    mqr_listener_options_t o;
    mqr__listener_options_init(&o);
    o.sys_interval_ms = 100;
    extra_listener(&o);
    run_for(300);
    assert_non_null(mqr__retain_get(mqr__engine_retain(F.e), "$SYS/broker/version", 19));
    assert_int_equal(mqr_publish(F.e, "keep/me", "x", 1, 0, 1), 0);
    run_for(50);
    mqr__listener_close(F.extra);
    F.extra = NULL;
    mqr_engine_free(F.e); /* flushes the store */
    F.e = NULL;
    assert_int_equal(count_rows("SELECT count(*) FROM retained WHERE topic = 'keep/me'"), 1);
    assert_int_equal(count_rows("SELECT count(*) FROM retained WHERE topic LIKE '$SYS/%'"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_max_qos, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_qos_zero, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_connections, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_rate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_publish_rate_backpressure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_packet_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_large_counted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sys_topics, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sys_not_stored, setup, teardown),
    };
    if (getenv("TEST_FILTER")) cmocka_set_test_filter(getenv("TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
