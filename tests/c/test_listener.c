/*
 * test_listener.c — the embedded MQTT server, spoken to over real loopback
 * sockets.
 *
 * Each test runs a real engine (listener on a free port, store in a fresh
 * temporary directory) on its own loop, and plays clients with raw TCP
 * sockets whose packets are built and read with the codec. Every wait drives
 * the loop with uv_run(UV_RUN_NOWAIT) under a deadline, so a broken server
 * fails a test instead of hanging it.
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

static void test_connect_v4(void **state)
{
    client_t *c = cl_open();
    send_connect(c, MQR_MQTT_V311, "dev-1", true, 30);
    cl_expect(c, MQR_MQTT_CONNACK);
    static const uint8_t ok[4] = {0x20, 0x02, 0x00, 0x00};
    assert_int_equal(c->pkt_len, 4);
    assert_memory_equal(c->pkt, ok, 4);
    assert_int_equal(stats()->clients_current, 1);
    assert_int_equal(stats()->connections_total, 1);
    ping(c);
    cl_free(c);
}

static void test_connect_v5_assigned_id(void **state)
{
    client_t *c = cl_open();
    send_connect(c, MQR_MQTT_V5, "", true, 30);
    mqr_mqtt_connack_t a = expect_connack(c);
    assert_int_equal(a.reason, 0);
    assert_non_null(a.assigned_client_id.p);
    assert_true(a.assigned_client_id.len > 0);
    assert_int_equal(a.receive_max, 1024);
    assert_int_equal(a.max_packet_size, 1024 * 1024);
    assert_int_equal(a.topic_alias_max, 32);
    /* the assigned id is a real client id: a second client taking it over
     * closes the first */
    char id[64];
    snprintf(id, sizeof id, "%.*s", (int)a.assigned_client_id.len, a.assigned_client_id.p);
    client_t *d = client(MQR_MQTT_V5, id);
    assert_int_equal(expect_disconnect(c), MQR_MQTT_RC_SESSION_TAKEN_OVER);
    cl_expect_closed(c, WAIT_MS);
    ping(d);
    cl_free(c);
    cl_free(d);
}

static void test_connect_v4_empty_id(void **state)
{
    /* accepted with clean session ... */
    client_t *c = cl_open();
    send_connect(c, MQR_MQTT_V311, "", true, 30);
    assert_int_equal(expect_connack(c).reason, 0);
    ping(c);
    /* ... refused without (3.1.1 §3.1.3.1: 0x02 identifier rejected) */
    client_t *d = cl_open();
    send_connect(d, MQR_MQTT_V311, "", false, 30);
    assert_int_equal(expect_connack(d).reason, MQR_MQTT_V3_ID_REJECTED);
    cl_expect_closed(d, WAIT_MS);
    cl_free(c);
    cl_free(d);
}

static void test_bad_protocol_level(void **state)
{
    /* "MQTT" level 3: 3.1.1 CONNACK 0x01 */
    client_t *c = cl_open();
    static const uint8_t v3[] = {0x10, 0x0E, 0x00, 0x04, 'M',  'Q',  'T', 'T',
                                 0x03, 0x02, 0x00, 0x3C, 0x00, 0x02, 'i', 'd'};
    cl_send(c, v3, sizeof v3);
    c->version = MQR_MQTT_V311;
    cl_expect(c, MQR_MQTT_CONNACK);
    static const uint8_t refused[4] = {0x20, 0x02, 0x00, 0x01};
    assert_memory_equal(c->pkt, refused, 4);
    cl_expect_closed(c, WAIT_MS);
    cl_free(c);

    /* level 6: a 5.0 CONNACK 0x84 */
    c = cl_open();
    static const uint8_t v6[] = {0x10, 0x0F, 0x00, 0x04, 'M',  'Q',  'T', 'T', 0x06,
                                 0x02, 0x00, 0x3C, 0x00, 0x00, 0x02, 'i', 'd'};
    cl_send(c, v6, sizeof v6);
    c->version = MQR_MQTT_V5;
    assert_int_equal(expect_connack(c).reason, MQR_MQTT_RC_UNSUPPORTED_VERSION);
    cl_expect_closed(c, WAIT_MS);
    cl_free(c);

    /* not MQTT at all: closed without an answer */
    c = cl_open();
    static const uint8_t junk[] = {0x10, 0x0E, 0x00, 0x04, 'H',  'T',  'T', 'P',
                                   0x04, 0x02, 0x00, 0x3C, 0x00, 0x02, 'i', 'd'};
    cl_send(c, junk, sizeof junk);
    assert_int_equal(cl_next(c, WAIT_MS), -1);
    cl_free(c);
    assert_int_equal(stats()->clients_current, 0);
    assert_int_equal(stats()->connects_refused, 3);
}

static void test_first_packet_not_connect(void **state)
{
    client_t *c = cl_open();
    static const uint8_t pingreq[2] = {0xC0, 0x00};
    cl_send(c, pingreq, 2);
    assert_int_equal(cl_next(c, WAIT_MS), -1); /* closed, nothing sent */
    cl_free(c);
    assert_int_equal(stats()->connections_current, 0);
}

static void test_second_connect(void **state)
{
    client_t *c = client(MQR_MQTT_V5, "twice");
    send_connect(c, MQR_MQTT_V5, "twice", true, 30);
    assert_int_equal(expect_disconnect(c), MQR_MQTT_RC_PROTOCOL_ERROR);
    cl_expect_closed(c, WAIT_MS);
    cl_free(c);

    c = client(MQR_MQTT_V311, "twice4");
    send_connect(c, MQR_MQTT_V311, "twice4", true, 30);
    assert_int_equal(cl_next(c, WAIT_MS), -1); /* 3.1.1: just closed */
    cl_free(c);
}

static void test_takeover_v4(void **state)
{
    client_t *a = client(MQR_MQTT_V311, "same");
    subscribe(a, "t/a", 0);
    client_t *b = client(MQR_MQTT_V311, "same");
    assert_int_equal(cl_next(a, WAIT_MS), -1); /* closed, no DISCONNECT in 3.1.1 */
    assert_int_equal(stats()->takeovers, 1);
    /* a's subscription went with it */
    client_t *p = client(MQR_MQTT_V311, "pub");
    subscribe(b, "t/#", 0);
    send_publish(p, "t/a", "x", 0, false, 0);
    expect_publish(b, "t/a", "x");
    cl_free(a);
    cl_free(b);
    cl_free(p);
}

/* ---- publish / subscribe --------------------------------------------------- */

static void test_pubsub_qos0_qos1(void **state)
{
    client_t *s = client(MQR_MQTT_V311, "sub");
    subscribe(s, "a/b", 1);
    client_t *p = client(MQR_MQTT_V5, "pub");

    send_publish(p, "a/b", "zero", 0, false, 0);
    mqr_mqtt_publish_t m = expect_publish(s, "a/b", "zero");
    assert_int_equal(m.qos, 0);
    assert_false(m.retain);

    send_publish(p, "a/b", "one", 1, false, 42);
    mqr_mqtt_ack_t a = expect_ack(p, MQR_MQTT_PUBACK, 42);
    assert_int_equal(a.reason, 0);
    m = expect_publish(s, "a/b", "one");
    assert_int_equal(m.qos, 1);
    assert_true(m.packet_id != 0);
    send_ack(s, MQR_MQTT_PUBACK, m.packet_id);

    /* QoS 1 published to a QoS 0 subscription arrives at QoS 0 */
    client_t *z = client(MQR_MQTT_V311, "sub0");
    subscribe(z, "a/b", 0);
    send_publish(p, "a/b", "down", 1, false, 43);
    expect_ack(p, MQR_MQTT_PUBACK, 43);
    assert_int_equal(expect_publish(z, "a/b", "down").qos, 0);
    assert_int_equal(expect_publish(s, "a/b", "down").qos, 1);
    assert_true(stats()->msgs_in >= 3);
    cl_free(s);
    cl_free(p);
    cl_free(z);
}

static void test_qos1_window_and_queue(void **state)
{
    /* v5 Receive Maximum 2: only two unacknowledged at a time */
    client_t *s = cl_open();
    uint8_t props[8];
    size_t plen;
    mqr_mqtt_pbuild_t b;
    mqr__mqtt_pb_init(&b, props, sizeof props);
    mqr__mqtt_pb_u16(&b, MQR_MQTT_PROP_RECEIVE_MAX, 2);
    assert_int_equal(mqr__mqtt_pb_finish(&b, &plen), 0);
    send_connect_full(s, MQR_MQTT_V5, "slow", true, 60, props, plen, NULL, NULL);
    assert_int_equal(expect_connack(s).reason, 0);
    subscribe(s, "q", 1);
    client_t *p = client(MQR_MQTT_V311, "fast");
    for (int i = 0; i < 5; i++) {
        char pl[8];
        snprintf(pl, sizeof pl, "m%d", i);
        send_publish(p, "q", pl, 1, false, (uint16_t)(i + 1));
        expect_ack(p, MQR_MQTT_PUBACK, (uint16_t)(i + 1));
    }
    mqr_mqtt_publish_t m0 = expect_publish(s, "q", "m0");
    mqr_mqtt_publish_t m1 = expect_publish(s, "q", "m1");
    assert_int_not_equal(m0.packet_id, m1.packet_id);
    cl_expect_nothing(s, QUIET_MS);
    send_ack(s, MQR_MQTT_PUBACK, m0.packet_id);
    mqr_mqtt_publish_t m2 = expect_publish(s, "q", "m2");
    cl_expect_nothing(s, QUIET_MS);
    send_ack(s, MQR_MQTT_PUBACK, m1.packet_id);
    send_ack(s, MQR_MQTT_PUBACK, m2.packet_id);
    expect_publish(s, "q", "m3");
    expect_publish(s, "q", "m4");
    cl_free(s);
    cl_free(p);
}

static void test_wildcards(void **state)
{
    client_t *s = client(MQR_MQTT_V311, "wild");
    subscribe(s, "a/+/c", 0);
    subscribe(s, "x/#", 0);
    client_t *p = client(MQR_MQTT_V311, "pub");
    send_publish(p, "a/b/d", "no", 0, false, 0);
    send_publish(p, "$SYS/x", "no", 0, false, 0);
    send_publish(p, "a/b/c", "yes1", 0, false, 0);
    send_publish(p, "x", "yes2", 0, false, 0); /* "x/#" matches its parent */
    send_publish(p, "x/y/z", "yes3", 0, false, 0);
    expect_publish(s, "a/b/c", "yes1");
    expect_publish(s, "x", "yes2");
    expect_publish(s, "x/y/z", "yes3");
    cl_expect_nothing(s, QUIET_MS);

    /* 4.7.2: wildcards at the first level do not match "$" topics */
    client_t *all = client(MQR_MQTT_V5, "all");
    subscribe(all, "#", 0);
    subscribe(all, "+/x", 0);
    send_publish(p, "$SYS/x", "no", 0, false, 0);
    send_publish(p, "m/x", "one copy", 0, false, 0);
    expect_publish(all, "m/x", "one copy"); /* both filters match: one copy (deliver.c) */
    cl_expect_nothing(all, QUIET_MS);
    cl_free(all);
    cl_free(s);
    cl_free(p);
}

static uint32_t expiry_of(const mqr_mqtt_publish_t *m)
{
    assert_true(m->has_expiry);
    return m->expiry;
}

static void test_message_expiry(void **state)
{
    client_t *p = client(MQR_MQTT_V5, "pub");
    uint8_t props[8];
    size_t plen;
    mqr_mqtt_pbuild_t b;
    mqr__mqtt_pb_init(&b, props, sizeof props);
    mqr__mqtt_pb_u32(&b, MQR_MQTT_PROP_MESSAGE_EXPIRY, 10);
    assert_int_equal(mqr__mqtt_pb_finish(&b, &plen), 0);
    send_publish_full(p, "ex/long", "ten", 3, 1, true, 1, false, props, plen);
    expect_ack(p, MQR_MQTT_PUBACK, 1);
    mqr__mqtt_pb_init(&b, props, sizeof props);
    mqr__mqtt_pb_u32(&b, MQR_MQTT_PROP_MESSAGE_EXPIRY, 1);
    assert_int_equal(mqr__mqtt_pb_finish(&b, &plen), 0);
    send_publish_full(p, "ex/short", "one", 3, 1, true, 2, false, props, plen);
    expect_ack(p, MQR_MQTT_PUBACK, 2);

    /* straight away: the expiry goes out as received */
    client_t *s = client(MQR_MQTT_V5, "early");
    subscribe(s, "ex/long", 0);
    mqr_mqtt_publish_t m = expect_publish(s, "ex/long", "ten");
    assert_int_equal(expiry_of(&m), 10);

    /* 1.2 s later: what is left of it (5.0 §3.3.2.3.3), and the 1 s one is
     * gone */
    run_for(1200);
    client_t *t = client(MQR_MQTT_V5, "late");
    subscribe(t, "ex/#", 0);
    m = expect_publish(t, "ex/long", "ten");
    assert_in_range(expiry_of(&m), 1, 9); /* 9 unless this machine stalled */
    cl_expect_nothing(t, QUIET_MS);
    cl_free(p);
    cl_free(s);
    cl_free(t);
}

static void test_retained(void **state)
{
    client_t *p = client(MQR_MQTT_V311, "pub");
    send_publish(p, "r/1", "kept", 1, true, 1);
    expect_ack(p, MQR_MQTT_PUBACK, 1);
    send_publish(p, "r/2", "also", 0, true, 0);
    turn();

    client_t *s = client(MQR_MQTT_V311, "sub");
    subscribe(s, "r/1", 1);
    mqr_mqtt_publish_t m = expect_publish(s, "r/1", "kept");
    assert_true(m.retain);
    assert_int_equal(m.qos, 1);
    send_ack(s, MQR_MQTT_PUBACK, m.packet_id);
    /* live traffic on the same topic goes out with RETAIN 0 */
    send_publish(p, "r/1", "live", 0, true, 0);
    m = expect_publish(s, "r/1", "live");
    assert_false(m.retain);

    /* an empty retained publish clears it */
    send_publish(p, "r/1", "", 0, true, 0);
    expect_publish(s, "r/1", ""); /* forwarded as a normal message */
    client_t *t = client(MQR_MQTT_V311, "late");
    subscribe(t, "r/1", 0);
    send_publish(p, "r/1", "marker", 0, false, 0);
    m = expect_publish(t, "r/1", "marker"); /* the first thing it gets */
    assert_false(m.retain);
    cl_free(p);
    cl_free(s);
    cl_free(t);
}

/* The PUBACK of a retained QoS 1 message means it is on disk: another
 * SQLite connection sees it the moment the PUBACK arrives. */
static void test_retained_puback_after_commit(void **state)
{
    client_t *p = client(MQR_MQTT_V5, "pub");
    send_publish(p, "durable/t", "payload", 1, true, 9);
    /* wait for the PUBACK without letting the loop run further than needed */
    int r = cl_next(p, WAIT_MS);
    assert_int_equal(r, 1);
    assert_int_equal(pkt_type(p), MQR_MQTT_PUBACK);
    char path[128];
    snprintf(path, sizeof path, "%s/mqrouter.db", F.dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT count(*) FROM retained WHERE topic = 'durable/t'",
                                        -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 1);
    sqlite3_finalize(st);
    sqlite3_close(db);
    cl_free(p);
}

static void test_unsubscribe(void **state)
{
    client_t *s = client(MQR_MQTT_V5, "sub");
    subscribe(s, "u/1", 0);
    subscribe(s, "u/2", 0);
    client_t *p = client(MQR_MQTT_V311, "pub");
    send_publish(p, "u/1", "before", 0, false, 0);
    expect_publish(s, "u/1", "before");

    mqr_mqtt_unsubscribe_t u;
    memset(&u, 0, sizeof u);
    u.packet_id = 3;
    mqr_mqtt_str_t f[2] = {{"u/1", 3}, {"nope", 4}};
    uint8_t buf[64];
    size_t n;
    assert_int_equal(mqr__mqtt_encode_unsubscribe(&u, f, 2, s->version, buf, sizeof buf, &n), 0);
    cl_send(s, buf, n);
    cl_expect(s, MQR_MQTT_UNSUBACK);
    mqr_mqtt_unsuback_t ua;
    assert_int_equal(mqr__mqtt_decode_unsuback(s->pkt, s->pkt_len, s->version, &ua), 0);
    assert_int_equal(ua.packet_id, 3);
    assert_int_equal(ua.count, 2);
    assert_int_equal(ua.codes[0], MQR_MQTT_RC_SUCCESS);
    assert_int_equal(ua.codes[1], MQR_MQTT_RC_NO_SUBSCRIPTION_EXISTED);

    send_publish(p, "u/1", "after", 0, false, 0);
    send_publish(p, "u/2", "marker", 0, false, 0);
    expect_publish(s, "u/2", "marker"); /* and not "after" before it */
    cl_expect_nothing(s, QUIET_MS);
    cl_free(s);
    cl_free(p);
}

static void test_qos2_inbound_exactly_once(void **state)
{
    client_t *s = client(MQR_MQTT_V311, "sub");
    subscribe(s, "e", 2);
    client_t *p = client(MQR_MQTT_V5, "pub");
    send_publish(p, "e", "once", 2, false, 5);
    expect_ack(p, MQR_MQTT_PUBREC, 5);
    /* a resend (our PUBREC "lost") is acknowledged again, not routed again */
    send_publish_full(p, "e", "once", 4, 2, false, 5, true, NULL, 0);
    expect_ack(p, MQR_MQTT_PUBREC, 5);
    send_ack(p, MQR_MQTT_PUBREL, 5);
    assert_int_equal(expect_ack(p, MQR_MQTT_PUBCOMP, 5).reason, 0);
    /* the id is free again: the same id is a new message */
    send_publish(p, "e", "twice", 2, false, 5);
    expect_ack(p, MQR_MQTT_PUBREC, 5);
    send_ack(p, MQR_MQTT_PUBREL, 5);
    expect_ack(p, MQR_MQTT_PUBCOMP, 5);
    /* PUBREL for an id we do not hold */
    send_ack(p, MQR_MQTT_PUBREL, 77);
    assert_int_equal(expect_ack(p, MQR_MQTT_PUBCOMP, 77).reason, MQR_MQTT_RC_PACKET_ID_NOT_FOUND);

    /* outbound QoS 2 flow to the subscriber: both fit in the window */
    mqr_mqtt_publish_t m1 = expect_publish(s, "e", "once");
    mqr_mqtt_publish_t m2 = expect_publish(s, "e", "twice");
    assert_int_equal(m1.qos, 2);
    assert_int_equal(m2.qos, 2);
    cl_expect_nothing(s, QUIET_MS);
    send_ack(s, MQR_MQTT_PUBREC, m1.packet_id);
    expect_ack(s, MQR_MQTT_PUBREL, m1.packet_id);
    send_ack(s, MQR_MQTT_PUBREC, m2.packet_id);
    expect_ack(s, MQR_MQTT_PUBREL, m2.packet_id);
    send_ack(s, MQR_MQTT_PUBCOMP, m2.packet_id); /* out of order is fine */
    send_ack(s, MQR_MQTT_PUBCOMP, m1.packet_id);
    cl_expect_nothing(s, QUIET_MS);
    mqr_listener_conn_info_t sc;
    assert_int_equal(mqr__listener_conn_info(F.main, "sub", &sc), 0);
    assert_true(sc.has_qos);
    assert_int_equal(sc.inflight, 0);
    cl_free(s);
    cl_free(p);
}

static void test_v5_subscription_options(void **state)
{
    client_t *p = client(MQR_MQTT_V5, "me");
    send_publish(p, "o/r", "retained", 0, true, 0);
    client_t *s = client(MQR_MQTT_V5, "opts");

    /* retain handling 2: no retained message at subscribe */
    send_subscribe_full(s, 1, "o/r", 0, false, true, 2, 11);
    cl_expect(s, MQR_MQTT_SUBACK);
    /* retain as published: live retained message keeps RETAIN; the
     * subscription id comes back */
    send_publish(p, "o/r", "again", 0, true, 0);
    mqr_mqtt_publish_t m = expect_publish(s, "o/r", "again");
    assert_true(m.retain);
    assert_int_equal(m.sub_id_count, 1);
    assert_int_equal(m.sub_id, 11);

    /* retain handling 1: retained only if the subscription is new */
    send_subscribe_full(s, 2, "o/+", 0, false, false, 1, 0);
    cl_expect(s, MQR_MQTT_SUBACK);
    m = expect_publish(s, "o/r", "again");
    assert_true(m.retain);
    assert_int_equal(m.sub_id_count, 0);
    send_subscribe_full(s, 3, "o/+", 0, false, false, 1, 0);
    cl_expect(s, MQR_MQTT_SUBACK);
    cl_expect_nothing(s, QUIET_MS);

    /* no local: its own messages do not come back */
    send_subscribe_full(p, 4, "o/self", 0, true, false, 0, 0);
    cl_expect(p, MQR_MQTT_SUBACK);
    send_subscribe_full(p, 5, "o/other", 0, false, false, 0, 0);
    cl_expect(p, MQR_MQTT_SUBACK);
    send_publish(p, "o/self", "mine", 0, false, 0);
    send_publish(p, "o/other", "marker", 0, false, 0);
    expect_publish(p, "o/other", "marker");
    cl_expect_nothing(p, QUIET_MS);
    cl_free(s);
    cl_free(p);
}

static void test_overlapping_subscriptions(void **state)
{
    /* one copy for both subscriptions, at the higher QoS, with both ids in
     * subscription order (5.0 §3.3.4) */
    client_t *s = client(MQR_MQTT_V5, "over");
    send_subscribe_full(s, 1, "ov/#", 0, false, false, 0, 1);
    cl_expect(s, MQR_MQTT_SUBACK);
    send_subscribe_full(s, 2, "ov/x", 1, false, false, 0, 2);
    cl_expect(s, MQR_MQTT_SUBACK);
    client_t *p = client(MQR_MQTT_V311, "pub");
    send_publish(p, "ov/x", "m", 1, false, 1);
    expect_ack(p, MQR_MQTT_PUBACK, 1);
    mqr_mqtt_publish_t a = expect_publish(s, "ov/x", "m");
    assert_int_equal(a.qos, 1);
    assert_int_equal(a.sub_id_count, 2);
    assert_int_equal(a.sub_id, 1);
    cl_expect_nothing(s, QUIET_MS);
    cl_free(s);
    cl_free(p);
}

static void test_shared_subscription(void **state)
{
    client_t *a = client(MQR_MQTT_V5, "worker-a");
    client_t *b = client(MQR_MQTT_V5, "worker-b");
    subscribe(a, "$share/g/jobs/+", 0);
    subscribe(b, "$share/g/jobs/+", 0);
    client_t *p = client(MQR_MQTT_V311, "pub");
    for (int i = 0; i < 10; i++)
        send_publish(p, "jobs/x", "j", 0, false, 0);
    int na = 0, nb = 0;
    while (cl_next(a, QUIET_MS) == 1)
        na++;
    while (cl_next(b, QUIET_MS) == 1)
        nb++;
    assert_int_equal(na + nb, 10);
    assert_true(na > 0 && nb > 0);
    cl_free(a);
    cl_free(b);
    cl_free(p);
}

static void test_max_packet_size(void **state)
{
    client_t *s = cl_open();
    uint8_t props[8];
    size_t plen;
    mqr_mqtt_pbuild_t b;
    mqr__mqtt_pb_init(&b, props, sizeof props);
    mqr__mqtt_pb_u32(&b, MQR_MQTT_PROP_MAX_PACKET_SIZE, 64);
    assert_int_equal(mqr__mqtt_pb_finish(&b, &plen), 0);
    send_connect_full(s, MQR_MQTT_V5, "small", true, 60, props, plen, NULL, NULL);
    assert_int_equal(expect_connack(s).reason, 0);
    subscribe(s, "big", 0);
    client_t *p = client(MQR_MQTT_V311, "pub");
    char big[200];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    send_publish(p, "big", big, 0, false, 0);
    send_publish(p, "big", "small", 0, false, 0);
    expect_publish(s, "big", "small");
    assert_int_equal(stats()->dropped_too_large, 1);
    cl_free(s);
    cl_free(p);
}

static void test_topic_alias(void **state)
{
    client_t *s = client(MQR_MQTT_V311, "sub");
    subscribe(s, "al/#", 0);
    client_t *p = client(MQR_MQTT_V5, "aliaser");
    uint8_t props[8];
    size_t plen;
    mqr_mqtt_pbuild_t b;
    mqr__mqtt_pb_init(&b, props, sizeof props);
    mqr__mqtt_pb_u16(&b, MQR_MQTT_PROP_TOPIC_ALIAS, 3);
    assert_int_equal(mqr__mqtt_pb_finish(&b, &plen), 0);
    send_publish_full(p, "al/long/topic", "1", 1, 0, false, 0, false, props, plen);
    mqr_mqtt_publish_t m = expect_publish(s, "al/long/topic", "1");
    send_publish_full(p, "", "2", 1, 0, false, 0, false, props, plen);
    m = expect_publish(s, "al/long/topic", "2");
    assert_int_equal(m.topic_alias, 0);
    /* an alias above the maximum (32) is a protocol error 0x94 */
    mqr__mqtt_pb_init(&b, props, sizeof props);
    mqr__mqtt_pb_u16(&b, MQR_MQTT_PROP_TOPIC_ALIAS, 33);
    assert_int_equal(mqr__mqtt_pb_finish(&b, &plen), 0);
    send_publish_full(p, "al/x", "3", 1, 0, false, 0, false, props, plen);
    assert_int_equal(expect_disconnect(p), MQR_MQTT_RC_TOPIC_ALIAS_INVALID);
    cl_expect_closed(p, WAIT_MS);
    cl_free(s);
    cl_free(p);
}

/* ---- keep-alive, ping, disconnect, will ------------------------------------ */

static void test_ping(void **state)
{
    client_t *c = client(MQR_MQTT_V311, "pinger");
    ping(c);
    ping(c);
    cl_free(c);
}

static void test_keepalive_expiry(void **state)
{
    client_t *c5 = cl_open();
    send_connect(c5, MQR_MQTT_V5, "sleepy5", true, 1);
    assert_int_equal(expect_connack(c5).reason, 0);
    client_t *c4 = cl_open();
    send_connect(c4, MQR_MQTT_V311, "sleepy4", true, 1);
    assert_int_equal(expect_connack(c4).reason, 0);
    client_t *alive = cl_open();
    send_connect(alive, MQR_MQTT_V311, "awake", true, 1);
    assert_int_equal(expect_connack(alive).reason, 0);

    uint64_t t0 = now_ms();
    /* the awake one pings every 0.5 s and stays */
    uint64_t next_ping = t0 + 500;
    int r;
    while ((r = cl_next(c5, 50)) == 0 && now_ms() - t0 < 4000) {
        if (now_ms() >= next_ping) {
            ping(alive);
            next_ping = now_ms() + 500;
        }
    }
    assert_int_equal(r, 1);
    assert_int_equal(pkt_type(c5), MQR_MQTT_DISCONNECT);
    uint64_t dt = now_ms() - t0;
    assert_true(dt >= 1400); /* 1.5 x keep-alive, not before */
    assert_true(dt < 3000);
    mqr_mqtt_disconnect_t d;
    assert_int_equal(mqr__mqtt_decode_disconnect(c5->pkt, c5->pkt_len, 5, MQR_MQTT_FROM_SERVER, &d),
                     0);
    assert_int_equal(d.reason, MQR_MQTT_RC_KEEP_ALIVE_TIMEOUT);
    cl_expect_closed(c5, WAIT_MS);
    assert_int_equal(cl_next(c4, WAIT_MS), -1);
    ping(alive);
    assert_int_equal(stats()->keepalive_timeouts, 2);
    cl_free(c5);
    cl_free(c4);
    cl_free(alive);
}

static void test_will(void **state)
{
    client_t *s = client(MQR_MQTT_V311, "watcher");
    subscribe(s, "will/#", 0);

    /* a normal DISCONNECT drops the will */
    client_t *a = cl_open();
    send_connect_full(a, MQR_MQTT_V311, "polite", true, 60, NULL, 0, "will/polite", "gone");
    assert_int_equal(expect_connack(a).reason, 0);
    static const uint8_t disc[2] = {0xE0, 0x00};
    cl_send(a, disc, 2);
    assert_int_equal(cl_next(a, WAIT_MS), -1);

    /* a dropped connection publishes it */
    client_t *b = cl_open();
    send_connect_full(b, MQR_MQTT_V311, "rude", true, 60, NULL, 0, "will/rude", "lost");
    assert_int_equal(expect_connack(b).reason, 0);
    close(b->fd);
    b->fd = -1;
    expect_publish(s, "will/rude", "lost");

    /* v5 DISCONNECT 0x04 asks for it */
    client_t *c = cl_open();
    send_connect_full(c, MQR_MQTT_V5, "asks", true, 60, NULL, 0, "will/asks", "please");
    assert_int_equal(expect_connack(c).reason, 0);
    static const uint8_t disc_will[3] = {0xE0, 0x01, 0x04};
    cl_send(c, disc_will, 3);
    expect_publish(s, "will/asks", "please");
    cl_expect_nothing(s, QUIET_MS);
    cl_free(a);
    free(b->buf);
    free(b);
    cl_free(c);
    cl_free(s);
}

/* ---- bad packets close only their connection -------------------------------- */

static void expect_only_this_closed(client_t *bad, uint8_t reason, client_t *other)
{
    if (bad->version == MQR_MQTT_V5) assert_int_equal(expect_disconnect(bad), reason);
    cl_expect_closed(bad, WAIT_MS);
    ping(other);
}

static void test_malformed_remaining_length(void **state)
{
    client_t *other = client(MQR_MQTT_V5, "bystander");
    client_t *bad = client(MQR_MQTT_V5, "bad-rl");
    static const uint8_t rl[] = {0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01};
    cl_send(bad, rl, sizeof rl);
    expect_only_this_closed(bad, MQR_MQTT_RC_MALFORMED, other);
    cl_free(bad);

    bad = client(MQR_MQTT_V311, "bad-rl4");
    cl_send(bad, rl, sizeof rl);
    assert_int_equal(cl_next(bad, WAIT_MS), -1);
    ping(other);
    cl_free(bad);
    assert_int_equal(stats()->malformed, 2);
    cl_free(other);
}

static void test_wildcard_in_publish_topic(void **state)
{
    client_t *other = client(MQR_MQTT_V311, "bystander");
    client_t *bad = client(MQR_MQTT_V5, "bad-topic");
    /* hand-made: the encoder would not stop us, but be explicit */
    static const uint8_t pub[] = {0x30, 0x07, 0x00, 0x03, 'a', '/', '+', 0x00, 'x'};
    cl_send(bad, pub, sizeof pub);
    expect_only_this_closed(bad, MQR_MQTT_RC_TOPIC_NAME_INVALID, other);
    cl_free(bad);
    cl_free(other);
}

static void test_bad_utf8(void **state)
{
    client_t *other = client(MQR_MQTT_V5, "bystander");
    client_t *bad = client(MQR_MQTT_V5, "bad-utf8");
    /* 0xC0 0x80 is an overlong NUL: not valid MQTT UTF-8 */
    static const uint8_t pub[] = {0x30, 0x07, 0x00, 0x03, 'a', 0xC0, 0x80, 0x00, 'x'};
    cl_send(bad, pub, sizeof pub);
    expect_only_this_closed(bad, MQR_MQTT_RC_MALFORMED, other);
    cl_free(bad);
    cl_free(other);
}

static void test_packet_too_large(void **state)
{
    client_t *other = client(MQR_MQTT_V5, "bystander");
    client_t *bad = client(MQR_MQTT_V5, "too-big");
    /* a header announcing 2 MiB is refused before the body arrives */
    static const uint8_t hdr[] = {0x30, 0x80, 0x80, 0x80, 0x01};
    cl_send(bad, hdr, sizeof hdr);
    expect_only_this_closed(bad, MQR_MQTT_RC_PACKET_TOO_LARGE, other);
    cl_free(bad);
    cl_free(other);
}

static void test_large_payload(void **state)
{
    /* bigger than the copy threshold and the shared read buffer's small-tail
     * path: read into the connection's own buffer, sent by reference */
    client_t *s = client(MQR_MQTT_V5, "bigsub");
    subscribe(s, "big/#", 0);
    client_t *p = client(MQR_MQTT_V5, "bigpub");
    size_t n = 60000;
    char *pl = malloc(n + 1);
    assert_non_null(pl);
    for (size_t i = 0; i < n; i++)
        pl[i] = (char)('a' + i % 26);
    pl[n] = '\0';
    send_publish(p, "big/one", pl, 0, false, 0);
    send_publish(p, "big/two", "small after", 0, false, 0);
    expect_publish(s, "big/one", pl);
    expect_publish(s, "big/two", "small after");
    free(pl);
    cl_free(s);
    cl_free(p);
}

/* ---- limits and shutdown ------------------------------------------------------- */

static void test_slow_subscriber_drops_qos0(void **state)
{
    /* a second listener with a tiny output bound on the same engine */
    mqr_listener_options_t o;
    mqr__listener_options_init(&o);
    o.max_out_bytes = 16 * 1024;
    mqr_listener_t *l;
    int port = free_port();
    assert_int_equal(mqr__listener_start_opts(F.e, "127.0.0.1", port, &o, &l), 0);
    F.extra = l;
    int saved = F.port;
    F.port = port;
    client_t *s = cl_open_rcvbuf(16 * 1024);
    send_connect(s, MQR_MQTT_V311, "slow", true, 60);
    assert_int_equal(expect_connack(s).reason, 0);
    subscribe(s, "flood", 0);
    F.port = saved;
    /* keep the kernel from absorbing the flood on the server side too */
    assert_int_equal(mqr__listener_conn_sndbuf(l, "slow", 4096), 0);
    client_t *p = client(MQR_MQTT_V311, "flooder");
    char pl[1000];
    memset(pl, 'f', sizeof pl - 1);
    pl[sizeof pl - 1] = '\0';
    /* the subscriber reads nothing meanwhile */
    for (int i = 0; i < 5000; i++)
        send_publish(p, "flood", pl, 0, false, 0);
    run_for(100);
    const mqr_listener_stats_t *st = mqr__listener_stats(l);
    assert_true(st->dropped > 0);
    /* memory stayed bounded: what waits is about the bound, not 5 MB */
    mqr_listener_conn_info_t sc;
    assert_int_equal(mqr__listener_conn_info(l, "slow", &sc), 0);
    assert_true(sc.out_bytes < o.max_out_bytes + 2048);
    /* and the subscriber still works once it reads */
    int got = 0;
    while (cl_next(s, 500) == 1)
        got++;
    assert_true(got > 0);
    if ((uint64_t)got + st->dropped != 5000) {
        mqr__listener_conn_info(l, "slow", &sc);
        fail_msg("got %d dropped %llu in %llu; out %zu writing %d segs %u locked %u/%zu paused %d",
                 got, (unsigned long long)st->dropped, (unsigned long long)stats()->msgs_in,
                 sc.out_bytes, sc.writing, sc.segments, sc.segments_locked, sc.locked_bytes,
                 sc.read_paused);
    }
    ping(s);
    cl_free(s);
    cl_free(p);
}

static void test_shutdown_disconnects_v5(void **state)
{
    client_t *c5 = client(MQR_MQTT_V5, "v5");
    client_t *c4 = client(MQR_MQTT_V311, "v4");
    mqr_engine_stop(F.e);
    turn();
    assert_int_equal(expect_disconnect(c5), MQR_MQTT_RC_SERVER_SHUTTING_DOWN);
    cl_expect_closed(c5, WAIT_MS);
    assert_int_equal(cl_next(c4, WAIT_MS), -1);
    cl_free(c5);
    cl_free(c4);
}

/* The listener survives a restart of the engine with its retained messages. */
static void test_retained_survives_restart(void **state)
{
    client_t *p = client(MQR_MQTT_V311, "pub");
    send_publish(p, "keep/me", "across", 1, true, 1);
    expect_ack(p, MQR_MQTT_PUBACK, 1);
    cl_free(p);
    mqr_engine_free(F.e);
    F.e = NULL;
    engine_start();
    client_t *s = client(MQR_MQTT_V5, "sub");
    subscribe(s, "keep/#", 0);
    mqr_mqtt_publish_t m = expect_publish(s, "keep/me", "across");
    assert_true(m.retain);
    cl_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_connect_v4, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_v5_assigned_id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_v4_empty_id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_protocol_level, setup, teardown),
        cmocka_unit_test_setup_teardown(test_first_packet_not_connect, setup, teardown),
        cmocka_unit_test_setup_teardown(test_second_connect, setup, teardown),
        cmocka_unit_test_setup_teardown(test_takeover_v4, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pubsub_qos0_qos1, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qos1_window_and_queue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wildcards, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retained, setup, teardown),
        cmocka_unit_test_setup_teardown(test_message_expiry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retained_puback_after_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unsubscribe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qos2_inbound_exactly_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_v5_subscription_options, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overlapping_subscriptions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shared_subscription, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_packet_size, setup, teardown),
        cmocka_unit_test_setup_teardown(test_topic_alias, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keepalive_expiry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_will, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_remaining_length, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wildcard_in_publish_topic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_utf8, setup, teardown),
        cmocka_unit_test_setup_teardown(test_packet_too_large, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_payload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slow_subscriber_drops_qos0, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_disconnects_v5, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retained_survives_restart, setup, teardown),
    };
    /* TEST_FILTER=test_will runs one test (a cmocka glob) */
    if (getenv("TEST_FILTER")) cmocka_set_test_filter(getenv("TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
