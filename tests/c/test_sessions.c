/*
 * test_sessions.c — persistent sessions and no loss at QoS 1/2 in the
 * embedded listener, over real loopback sockets.
 *
 * The same harness as test_listener.c (a real engine on its own loop with a
 * store in a fresh directory, clients played with raw sockets and the
 * codec): session present, subscriptions and queued messages kept across
 * reconnects and restarts, redelivery with DUP, QoS 2 exactly once across a
 * reconnect both ways, expiry, will delay, and backpressure instead of
 * drops.
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

/* ---- session helpers ------------------------------------------------------ */

/* A CONNECT with v5 Session Expiry Interval (expiry >= 0; -1 = absent) and
 * a will with a Will Delay Interval (will_delay > 0). */
static mqr_mqtt_connack_t sconnect(client_t *c, int version, const char *id, bool clean,
                                   long expiry, const char *will_topic, uint32_t will_delay)
{
    c->version = version;
    mqr_mqtt_connect_t k;
    memset(&k, 0, sizeof k);
    k.version = (uint8_t)version;
    k.clean_start = clean;
    k.keep_alive = 60;
    uint8_t props[16], wprops[16];
    size_t plen = 0, wplen = 0;
    mqr_mqtt_pbuild_t b;
    if (version == MQR_MQTT_V5 && expiry >= 0) {
        mqr__mqtt_pb_init(&b, props, sizeof props);
        mqr__mqtt_pb_u32(&b, MQR_MQTT_PROP_SESSION_EXPIRY, (uint32_t)expiry);
        assert_int_equal(mqr__mqtt_pb_finish(&b, &plen), 0);
        k.props.p = props;
        k.props.len = (uint32_t)plen;
    }
    k.client_id.p = id;
    k.client_id.len = (uint16_t)strlen(id);
    if (will_topic) {
        k.has_will = true;
        k.will_topic.p = will_topic;
        k.will_topic.len = (uint16_t)strlen(will_topic);
        k.will_payload.p = (const uint8_t *)"gone";
        k.will_payload.len = 4;
        if (will_delay) {
            mqr__mqtt_pb_init(&b, wprops, sizeof wprops);
            mqr__mqtt_pb_u32(&b, MQR_MQTT_PROP_WILL_DELAY, will_delay);
            assert_int_equal(mqr__mqtt_pb_finish(&b, &wplen), 0);
            k.will_props.p = wprops;
            k.will_props.len = (uint32_t)wplen;
        }
    }
    uint8_t buf[512];
    size_t n;
    assert_int_equal(mqr__mqtt_encode_connect(&k, buf, sizeof buf, &n), 0);
    cl_send(c, buf, n);
    mqr_mqtt_connack_t a = expect_connack(c);
    assert_int_equal(a.reason, 0);
    return a;
}

/* A v4 client with Clean Session 0 (or 1); returns it and its Session
 * Present flag. */
static client_t *pclient(int version, const char *id, bool clean, bool *present)
{
    client_t *c = cl_open();
    mqr_mqtt_connack_t a =
        sconnect(c, version, id, clean, version == MQR_MQTT_V5 ? 3600 : -1, NULL, 0);
    if (present) *present = a.session_present;
    return c;
}

/* Sends DISCONNECT and closes the socket once the server has seen it. */
static void cl_disconnect(client_t *c)
{
    static const uint8_t d[2] = {0xE0, 0x00};
    cl_send(c, d, 2);
    cl_expect_closed(c, WAIT_MS);
    cl_free(c);
    run_for(20);
}

/* Drops the socket without DISCONNECT. */
static void cl_drop(client_t *c)
{
    close(c->fd);
    c->fd = -1;
    free(c->buf);
    free(c);
    run_for(50);
}

static void wait_for(bool (*cond)(void), int ms)
{
    uint64_t end = now_ms() + (uint64_t)ms;
    while (!cond() && now_ms() < end) {
        turn();
        sleep_us(500);
    }
}

static bool one_offline(void)
{
    return stats()->sessions_offline == 1;
}

static void engine_restart(void)
{
    mqr_engine_free(F.e);
    F.e = NULL;
    engine_start();
}

/* ---- session present, subscriptions ---------------------------------------- */

static void test_session_present(void **state)
{
    bool present = true;
    client_t *c = pclient(MQR_MQTT_V311, "sp", false, &present);
    assert_false(present); /* nothing to resume yet */
    cl_disconnect(c);
    assert_int_equal(stats()->sessions_offline, 1);
    c = pclient(MQR_MQTT_V311, "sp", false, &present);
    assert_true(present);
    assert_int_equal(stats()->sessions_offline, 0);
    ping(c);
    cl_disconnect(c);
    /* clean session 1 ends it, and is not kept itself */
    c = pclient(MQR_MQTT_V311, "sp", true, &present);
    assert_false(present);
    cl_disconnect(c);
    assert_int_equal(stats()->sessions_offline, 0);
    c = pclient(MQR_MQTT_V311, "sp", false, &present);
    assert_false(present);
    cl_disconnect(c);

    /* v5: expiry 0 ends with the connection; Clean Start 0 with expiry > 0
     * keeps it, and the server does not overrule the expiry in CONNACK */
    c = cl_open();
    mqr_mqtt_connack_t a = sconnect(c, MQR_MQTT_V5, "sp5", false, 0, NULL, 0);
    assert_false(a.session_present);
    cl_disconnect(c);
    c = cl_open();
    a = sconnect(c, MQR_MQTT_V5, "sp5", false, 60, NULL, 0);
    assert_false(a.session_present);
    assert_false(a.has_session_expiry);
    cl_disconnect(c);
    c = cl_open();
    a = sconnect(c, MQR_MQTT_V5, "sp5", false, 60, NULL, 0);
    assert_true(a.session_present);
    cl_disconnect(c);
    c = cl_open();
    a = sconnect(c, MQR_MQTT_V5, "sp5", true, 60, NULL, 0);
    assert_false(a.session_present);
    cl_free(c);
}

static void test_subscriptions_kept(void **state)
{
    client_t *s = pclient(MQR_MQTT_V5, "keeper", false, NULL);
    send_subscribe_full(s, 3, "k/#", 1, false, false, 0, 42);
    cl_expect(s, MQR_MQTT_SUBACK);
    cl_disconnect(s);
    bool present = false;
    s = pclient(MQR_MQTT_V5, "keeper", false, &present);
    assert_true(present);
    client_t *p = client(MQR_MQTT_V311, "kp");
    send_publish(p, "k/1", "hello", 1, false, 9);
    expect_ack(p, MQR_MQTT_PUBACK, 9);
    mqr_mqtt_publish_t m = expect_publish(s, "k/1", "hello");
    assert_int_equal(m.qos, 1);
    assert_false(m.dup);
    /* the subscription identifier came back with it */
    assert_int_equal(m.sub_id_count, 1);
    assert_int_equal(m.sub_id, 42);
    send_ack(s, MQR_MQTT_PUBACK, m.packet_id);
    cl_free(s);
    cl_free(p);
}

/* ---- offline queue, redelivery ------------------------------------------------ */

static void test_offline_queue(void **state)
{
    client_t *s = pclient(MQR_MQTT_V311, "away", false, NULL);
    subscribe(s, "q/#", 2);
    cl_drop(s);
    wait_for(one_offline, WAIT_MS);
    assert_int_equal(stats()->sessions_offline, 1);
    client_t *p = client(MQR_MQTT_V311, "qp");
    send_publish(p, "q/a", "one", 1, false, 1);
    expect_ack(p, MQR_MQTT_PUBACK, 1);
    send_publish(p, "q/a", "zero", 0, false, 0); /* QoS 0 is not queued */
    send_publish(p, "q/a", "two", 2, false, 2);
    expect_ack(p, MQR_MQTT_PUBREC, 2);
    send_publish(p, "q/b", "three", 1, false, 3);
    expect_ack(p, MQR_MQTT_PUBACK, 3);
    bool present = false;
    s = pclient(MQR_MQTT_V311, "away", false, &present);
    assert_true(present);
    mqr_mqtt_publish_t m = expect_publish(s, "q/a", "one");
    assert_int_equal(m.qos, 1);
    assert_false(m.dup); /* queued, never sent before */
    mqr_mqtt_publish_t m2 = expect_publish(s, "q/a", "two");
    assert_int_equal(m2.qos, 2);
    mqr_mqtt_publish_t m3 = expect_publish(s, "q/b", "three");
    send_ack(s, MQR_MQTT_PUBACK, m.packet_id);
    send_ack(s, MQR_MQTT_PUBREC, m2.packet_id);
    expect_ack(s, MQR_MQTT_PUBREL, m2.packet_id);
    send_ack(s, MQR_MQTT_PUBCOMP, m2.packet_id);
    send_ack(s, MQR_MQTT_PUBACK, m3.packet_id);
    cl_expect_nothing(s, QUIET_MS);
    cl_free(s);
    cl_free(p);
}

static void test_inflight_redelivered_dup(void **state)
{
    client_t *s = pclient(MQR_MQTT_V311, "dupper", false, NULL);
    subscribe(s, "d", 1);
    client_t *p = client(MQR_MQTT_V311, "dp");
    send_publish(p, "d", "m1", 1, false, 1);
    expect_ack(p, MQR_MQTT_PUBACK, 1);
    send_publish(p, "d", "m2", 1, false, 2);
    expect_ack(p, MQR_MQTT_PUBACK, 2);
    mqr_mqtt_publish_t m1 = expect_publish(s, "d", "m1");
    mqr_mqtt_publish_t m2 = expect_publish(s, "d", "m2");
    send_ack(s, MQR_MQTT_PUBACK, m1.packet_id); /* m1 done, m2 not */
    send_publish(p, "d", "m3", 1, false, 3);
    expect_ack(p, MQR_MQTT_PUBACK, 3);
    mqr_mqtt_publish_t m3 = expect_publish(s, "d", "m3");
    uint16_t id2 = m2.packet_id, id3 = m3.packet_id;
    cl_drop(s);
    wait_for(one_offline, WAIT_MS);
    send_publish(p, "d", "m4", 1, false, 4); /* queued while away */
    expect_ack(p, MQR_MQTT_PUBACK, 4);
    s = pclient(MQR_MQTT_V311, "dupper", false, NULL);
    /* in order, same ids, DUP set; then the new one */
    mqr_mqtt_publish_t r = expect_publish(s, "d", "m2");
    assert_true(r.dup);
    assert_int_equal(r.packet_id, id2);
    r = expect_publish(s, "d", "m3");
    assert_true(r.dup);
    assert_int_equal(r.packet_id, id3);
    r = expect_publish(s, "d", "m4");
    assert_false(r.dup);
    assert_int_not_equal(r.packet_id, id2);
    assert_int_not_equal(r.packet_id, id3);
    send_ack(s, MQR_MQTT_PUBACK, id2);
    send_ack(s, MQR_MQTT_PUBACK, id3);
    send_ack(s, MQR_MQTT_PUBACK, r.packet_id);
    cl_expect_nothing(s, QUIET_MS);
    assert_int_equal(stats()->unknown_acks, 0);
    cl_free(s);
    cl_free(p);
}

static void test_takeover_keeps_session(void **state)
{
    client_t *w = client(MQR_MQTT_V311, "tk-watch");
    subscribe(w, "tk/will", 0);
    client_t *a = cl_open();
    sconnect(a, MQR_MQTT_V5, "tk", false, 60, "tk/will", 5);
    subscribe(a, "tk/data", 1);
    client_t *p = client(MQR_MQTT_V311, "tk-pub");
    send_publish(p, "tk/data", "first", 1, false, 1);
    expect_ack(p, MQR_MQTT_PUBACK, 1);
    mqr_mqtt_publish_t m = expect_publish(a, "tk/data", "first"); /* not acknowledged */
    /* the same client id again, the old connection still open */
    client_t *b = cl_open();
    mqr_mqtt_connack_t k = sconnect(b, MQR_MQTT_V5, "tk", false, 60, NULL, 0);
    assert_true(k.session_present);
    assert_int_equal(expect_disconnect(a), MQR_MQTT_RC_SESSION_TAKEN_OVER);
    mqr_mqtt_publish_t r = expect_publish(b, "tk/data", "first");
    assert_true(r.dup);
    assert_int_equal(r.packet_id, m.packet_id);
    send_ack(b, MQR_MQTT_PUBACK, r.packet_id);
    send_publish(p, "tk/data", "second", 1, false, 2);
    expect_ack(p, MQR_MQTT_PUBACK, 2);
    r = expect_publish(b, "tk/data", "second");
    send_ack(b, MQR_MQTT_PUBACK, r.packet_id);
    /* the will waited for its delay and the session came back in time */
    cl_expect_nothing(w, QUIET_MS);
    assert_int_equal(stats()->takeovers, 1);
    assert_int_equal(stats()->sessions_offline, 0);

    /* Clean Start 1 takes over and ends the old session */
    client_t *c = cl_open();
    k = sconnect(c, MQR_MQTT_V5, "tk", true, 60, NULL, 0);
    assert_false(k.session_present);
    expect_disconnect(b);
    send_publish(p, "tk/data", "third", 1, false, 3);
    expect_ack(p, MQR_MQTT_PUBACK, 3);
    cl_expect_nothing(c, QUIET_MS);
    cl_free(a);
    cl_free(b);
    cl_free(c);
    cl_free(p);
    cl_free(w);
}

/* ---- QoS 2 exactly once across a reconnect --------------------------------------- */

static void test_qos2_inbound_across_reconnect(void **state)
{
    client_t *s = client(MQR_MQTT_V311, "watch2");
    subscribe(s, "x", 2);
    client_t *p = pclient(MQR_MQTT_V311, "pub2", false, NULL);
    send_publish(p, "x", "once", 2, false, 77);
    expect_ack(p, MQR_MQTT_PUBREC, 77);
    mqr_mqtt_publish_t m = expect_publish(s, "x", "once");
    send_ack(s, MQR_MQTT_PUBREC, m.packet_id);
    expect_ack(s, MQR_MQTT_PUBREL, m.packet_id);
    send_ack(s, MQR_MQTT_PUBCOMP, m.packet_id);
    /* the PUBREC is lost with the connection: the client sends again */
    cl_drop(p);
    wait_for(one_offline, WAIT_MS);
    bool present = false;
    p = pclient(MQR_MQTT_V311, "pub2", false, &present);
    assert_true(present);
    send_publish_full(p, "x", "once", 4, 2, false, 77, true, NULL, 0);
    expect_ack(p, MQR_MQTT_PUBREC, 77);
    cl_expect_nothing(s, QUIET_MS); /* not routed again */
    send_ack(p, MQR_MQTT_PUBREL, 77);
    mqr_mqtt_ack_t a = expect_ack(p, MQR_MQTT_PUBCOMP, 77);
    assert_int_equal(a.reason, 0);
    /* the id is free again: a new message with it is a new message */
    send_publish(p, "x", "again", 2, false, 77);
    expect_ack(p, MQR_MQTT_PUBREC, 77);
    expect_publish(s, "x", "again");
    cl_free(s);
    cl_free(p);
}

static void test_qos2_outbound_pubrel_resent(void **state)
{
    client_t *s = pclient(MQR_MQTT_V5, "recv2", false, NULL);
    subscribe(s, "y", 2);
    client_t *p = client(MQR_MQTT_V311, "py");
    send_publish(p, "y", "exactly", 2, false, 5);
    expect_ack(p, MQR_MQTT_PUBREC, 5);
    mqr_mqtt_publish_t m = expect_publish(s, "y", "exactly");
    send_ack(s, MQR_MQTT_PUBREC, m.packet_id);
    expect_ack(s, MQR_MQTT_PUBREL, m.packet_id);
    cl_drop(s); /* before PUBCOMP */
    wait_for(one_offline, WAIT_MS);
    s = pclient(MQR_MQTT_V5, "recv2", false, NULL);
    expect_ack(s, MQR_MQTT_PUBREL, m.packet_id); /* PUBREL again, no PUBLISH */
    send_ack(s, MQR_MQTT_PUBCOMP, m.packet_id);
    cl_expect_nothing(s, QUIET_MS);
    assert_int_equal(stats()->unknown_acks, 0);
    cl_free(s);
    cl_free(p);
}

/* ---- expiry, will delay -------------------------------------------------------------- */

static bool one_expired(void)
{
    return stats()->sessions_expired == 1;
}

static void test_session_expiry(void **state)
{
    client_t *s = cl_open();
    sconnect(s, MQR_MQTT_V5, "brief", false, 1, NULL, 0);
    subscribe(s, "e", 1);
    cl_disconnect(s);
    assert_int_equal(stats()->sessions_offline, 1);
    client_t *p = client(MQR_MQTT_V311, "ep");
    send_publish(p, "e", "kept", 1, false, 1);
    expect_ack(p, MQR_MQTT_PUBACK, 1);
    wait_for(one_expired, 3000);
    assert_int_equal(stats()->sessions_expired, 1);
    assert_int_equal(stats()->sessions_offline, 0);
    s = cl_open();
    mqr_mqtt_connack_t a = sconnect(s, MQR_MQTT_V5, "brief", false, 60, NULL, 0);
    assert_false(a.session_present);
    send_publish(p, "e", "gone", 1, false, 2);
    expect_ack(p, MQR_MQTT_PUBACK, 2);
    cl_expect_nothing(s, QUIET_MS); /* its subscription went with it */
    cl_free(s);
    cl_free(p);
    /* and the store forgot it too */
    engine_restart();
    assert_int_equal(stats()->sessions_offline, 1); /* "brief" again, from the last connect */
}

static void test_will_delay(void **state)
{
    client_t *w = client(MQR_MQTT_V311, "watcher");
    subscribe(w, "will/#", 0);
    /* dropped: the will waits for its delay */
    client_t *c = cl_open();
    sconnect(c, MQR_MQTT_V5, "willer", false, 60, "will/a", 1);
    uint64_t t0 = now_ms();
    cl_drop(c);
    cl_expect_nothing(w, 400);
    expect_publish(w, "will/a", "gone");
    assert_true(now_ms() - t0 >= 900);

    /* back in time: never published */
    c = cl_open();
    sconnect(c, MQR_MQTT_V5, "willer2", false, 60, "will/b", 1);
    cl_drop(c);
    run_for(300);
    c = cl_open();
    assert_true(sconnect(c, MQR_MQTT_V5, "willer2", false, 60, NULL, 0).session_present);
    cl_expect_nothing(w, 1500);

    /* the session ends first (expiry 1 s < delay 30 s): published then */
    client_t *d = cl_open();
    sconnect(d, MQR_MQTT_V5, "willer3", false, 1, "will/c", 30);
    cl_drop(d);
    expect_publish(w, "will/c", "gone");
    cl_free(c);
    cl_free(w);
}

/* ---- restart ------------------------------------------------------------------ */

static void test_restart_restores(void **state)
{
    client_t *s = pclient(MQR_MQTT_V311, "durable", false, NULL);
    subscribe(s, "r/#", 1);
    client_t *p = client(MQR_MQTT_V311, "rp");
    send_publish(p, "r/1", "a", 1, false, 1);
    expect_ack(p, MQR_MQTT_PUBACK, 1);
    mqr_mqtt_publish_t m = expect_publish(s, "r/1", "a"); /* in flight, unacked */
    cl_drop(s);
    wait_for(one_offline, WAIT_MS);
    send_publish(p, "r/2", "b", 1, false, 2);
    expect_ack(p, MQR_MQTT_PUBACK, 2);
    cl_free(p);
    engine_restart();
    assert_int_equal(stats()->sessions_offline, 1);
    bool present = false;
    s = pclient(MQR_MQTT_V311, "durable", false, &present);
    assert_true(present);
    mqr_mqtt_publish_t r = expect_publish(s, "r/1", "a");
    assert_true(r.dup);
    assert_int_equal(r.packet_id, m.packet_id);
    mqr_mqtt_publish_t r2 = expect_publish(s, "r/2", "b");
    send_ack(s, MQR_MQTT_PUBACK, r.packet_id);
    send_ack(s, MQR_MQTT_PUBACK, r2.packet_id);
    /* the subscription came back too */
    p = client(MQR_MQTT_V311, "rp");
    send_publish(p, "r/3", "c", 1, false, 3);
    expect_ack(p, MQR_MQTT_PUBACK, 3);
    r = expect_publish(s, "r/3", "c");
    send_ack(s, MQR_MQTT_PUBACK, r.packet_id);
    cl_free(s);
    cl_free(p);
    /* acknowledged messages are gone from the store */
    run_for(50);
    engine_restart();
    s = pclient(MQR_MQTT_V311, "durable", false, &present);
    assert_true(present);
    cl_expect_nothing(s, QUIET_MS);
    cl_free(s);
}

static void test_restart_keeps_subscription_options(void **state)
{
    client_t *s = pclient(MQR_MQTT_V5, "opts", false, NULL);
    send_subscribe_full(s, 3, "o/#", 1, true, true, 2, 9); /* no local, RAP, RH 2, id 9 */
    cl_expect(s, MQR_MQTT_SUBACK);
    send_subscribe_full(s, 4, "$share/g/sh/#", 2, false, false, 0, 0);
    cl_expect(s, MQR_MQTT_SUBACK);
    cl_disconnect(s);
    engine_restart();
    s = pclient(MQR_MQTT_V5, "opts", false, NULL);
    client_t *p = client(MQR_MQTT_V311, "optpub");
    send_publish(p, "o/1", "kept", 1, true, 1);
    expect_ack(p, MQR_MQTT_PUBACK, 1);
    mqr_mqtt_publish_t m = expect_publish(s, "o/1", "kept");
    assert_int_equal(m.sub_id_count, 1);
    assert_int_equal(m.sub_id, 9);
    assert_true(m.retain); /* retain as published came back too */
    assert_int_equal(m.qos, 1);
    send_ack(s, MQR_MQTT_PUBACK, m.packet_id);
    send_publish(p, "sh/x", "shared", 2, false, 2);
    expect_ack(p, MQR_MQTT_PUBREC, 2);
    m = expect_publish(s, "sh/x", "shared");
    assert_int_equal(m.qos, 2);
    /* no local: its own publish does not come back */
    send_publish(s, "o/2", "mine", 0, false, 0);
    cl_expect_nothing(s, QUIET_MS);
    cl_free(s);
    cl_free(p);
}

/* ---- limits: offline bound, backpressure, stuck subscriber ---------------------------- */

static void extra_listener_rm(unsigned max_queued, unsigned max_inflight, unsigned stuck_ms,
                              unsigned receive_max)
{
    mqr_listener_options_t o;
    mqr__listener_options_init(&o);
    o.receive_max = receive_max;
    o.max_queued = max_queued;
    o.max_inflight = max_inflight;
    o.stuck_timeout_ms = stuck_ms;
    int port = free_port();
    assert_int_equal(mqr__listener_start_opts(F.e, "127.0.0.1", port, &o, &F.extra), 0);
    F.port = port; /* cl_open connects here from now on */
}

static void extra_listener(unsigned max_queued, unsigned max_inflight, unsigned stuck_ms)
{
    extra_listener_rm(max_queued, max_inflight, stuck_ms, 0);
}

static const mqr_listener_stats_t *xstats(void)
{
    return mqr__listener_stats(F.extra);
}

static void test_offline_queue_bound(void **state)
{
    extra_listener(5, 0, 0);
    client_t *s = pclient(MQR_MQTT_V311, "bounded", false, NULL);
    subscribe(s, "b", 1);
    cl_disconnect(s);
    client_t *p = client(MQR_MQTT_V311, "bp");
    for (int i = 0; i < 8; i++) {
        char pl[8];
        snprintf(pl, sizeof pl, "m%d", i);
        send_publish(p, "b", pl, 1, false, (uint16_t)(i + 1));
        expect_ack(p, MQR_MQTT_PUBACK, (uint16_t)(i + 1));
    }
    assert_int_equal(xstats()->offline_dropped, 3);
    s = pclient(MQR_MQTT_V311, "bounded", false, NULL);
    for (int i = 0; i < 5; i++) { /* the oldest five: newer ones were dropped */
        char pl[8];
        snprintf(pl, sizeof pl, "m%d", i);
        mqr_mqtt_publish_t m = expect_publish(s, "b", pl);
        send_ack(s, MQR_MQTT_PUBACK, m.packet_id);
    }
    cl_expect_nothing(s, QUIET_MS);
    cl_free(s);
    cl_free(p);
}

static bool one_v311_expired(void)
{
    return xstats()->sessions_expired_v311 == 1;
}

/* A 3.1.1 session has no expiry of its own; v311_session_expiry_s gives it
 * one, counted from the disconnection, and only on the listener that sets
 * it: the main listener (no limit) keeps its 3.1.1 session meanwhile. */
static void test_v311_session_expiry(void **state)
{
    client_t *k = pclient(MQR_MQTT_V311, "forever311", false, NULL);
    subscribe(k, "v3/#", 1);
    cl_disconnect(k);
    assert_int_equal(stats()->sessions_offline, 1);

    mqr_listener_options_t o;
    mqr__listener_options_init(&o);
    o.v311_session_expiry_s = 1;
    int port = free_port();
    assert_int_equal(mqr__listener_start_opts(F.e, "127.0.0.1", port, &o, &F.extra), 0);
    F.port = port;
    client_t *s = pclient(MQR_MQTT_V311, "brief311", false, NULL);
    subscribe(s, "v3/#", 1);
    cl_disconnect(s);
    assert_int_equal(xstats()->sessions_offline, 1);
    client_t *p = client(MQR_MQTT_V311, "v3pub");
    send_publish(p, "v3/a", "queued", 1, false, 1);
    expect_ack(p, MQR_MQTT_PUBACK, 1);
    uint64_t left = now_ms();
    wait_for(one_v311_expired, 4000);
    assert_int_equal(xstats()->sessions_expired_v311, 1);
    assert_int_equal(xstats()->sessions_expired, 1);
    assert_int_equal(xstats()->sessions_offline, 0);
    assert_true(now_ms() - left >= 800); /* not before its second (less the time to publish) */
    assert_int_equal(stats()->sessions_offline, 1); /* the unlimited listener's one stays */
    assert_int_equal(stats()->sessions_expired, 0);

    /* its subscription and queued message went with it */
    bool present = true;
    s = pclient(MQR_MQTT_V311, "brief311", false, &present);
    assert_false(present);
    cl_expect_nothing(s, QUIET_MS);
    send_publish(p, "v3/b", "after", 0, false, 0);
    cl_expect_nothing(s, QUIET_MS);
    cl_free(s);

    /* the other one got the message queued while it was away */
    k = pclient(MQR_MQTT_V311, "forever311", false, &present);
    assert_true(present);
    mqr_mqtt_publish_t m = expect_publish(k, "v3/a", "queued");
    send_ack(k, MQR_MQTT_PUBACK, m.packet_id);
    cl_free(k);
    cl_free(p);
}

static mqr_listener_t *limited; /* test_v311_session_expiry_load's listener */

static bool limited_one_expired(void)
{
    return mqr__listener_stats(limited)->sessions_expired_v311 == 1;
}

/* At start-up the listener that loads the stored sessions applies its
 * limit from each one's stored disconnection: a 3.1.1 session away longer
 * is deleted at once, a younger one expires when its time is up. The
 * listener comes from the public mqr_engine_listen (the field at the end of
 * mqr_listen_options_t). */
static void test_v311_session_expiry_load(void **state)
{
    client_t *c = pclient(MQR_MQTT_V311, "old311", false, NULL);
    subscribe(c, "L/#", 1);
    cl_disconnect(c);
    uint64_t old_left = now_ms();
    run_for(1200); /* old311 must be away for more than the limit at the load */
    c = pclient(MQR_MQTT_V311, "new311", false, NULL);
    subscribe(c, "L/#", 1);
    cl_disconnect(c);
    assert_int_equal(stats()->sessions_offline, 2); /* no limit on this listener */

    mqr_engine_free(F.e);
    F.main = NULL;
    mqr_engine_options_t o;
    mqr_engine_options_init(&o);
    o.listen_port = -1; /* no listener but the one below: it loads the sessions */
    o.data_dir = F.dir;
    o.log_level = MQR_LOG_WARN;
    char *err = NULL;
    assert_int_equal(mqr_engine_new(&F.e, &o, NULL, &err), 0);
    mqr_listen_options_t lo;
    mqr_listen_options_init(&lo);
    lo.host = "127.0.0.1";
    lo.port = F.port;
    lo.v311_session_expiry_s = 1;
    limited = NULL;
    assert_int_equal(mqr_engine_listen(F.e, &lo, &limited, &err), 0);
    assert_true(now_ms() - old_left > 1000);
    /* old311 went at the load, new311 is kept for the rest of its second */
    assert_int_equal(mqr__listener_stats(limited)->sessions_offline, 1);
    wait_for(limited_one_expired, 3000);
    assert_int_equal(mqr__listener_stats(limited)->sessions_expired_v311, 1);
    assert_int_equal(mqr__listener_stats(limited)->sessions_offline, 0);
    bool present = true;
    c = pclient(MQR_MQTT_V311, "old311", false, &present);
    assert_false(present);
    cl_free(c);
    c = pclient(MQR_MQTT_V311, "new311", false, &present);
    assert_false(present);
    cl_free(c);
}

static void test_backpressure_no_loss(void **state)
{
    /* window 4, queue 10: 400 QoS 1 messages to a subscriber that does not
     * acknowledge yet; none may be dropped, the publisher is paused */
    extra_listener(10, 4, 0);
    client_t *s = client(MQR_MQTT_V311, "slowsub");
    subscribe(s, "bp", 1);
    client_t *p = client(MQR_MQTT_V311, "fastpub");
    enum { N = 400 };
    static uint8_t buf[N * 32];
    size_t len = 0;
    for (int i = 0; i < N; i++) {
        mqr_mqtt_publish_t m;
        memset(&m, 0, sizeof m);
        char pl[8];
        snprintf(pl, sizeof pl, "%05d", i);
        m.topic.p = "bp";
        m.topic.len = 2;
        m.payload.p = (const uint8_t *)pl;
        m.payload.len = 5;
        m.qos = 1;
        m.packet_id = (uint16_t)(i + 1);
        size_t n;
        assert_int_equal(mqr__mqtt_encode_publish(&m, MQR_MQTT_V311, buf + len, 32, &n), 0);
        len += n;
    }
    /* in pieces, so the server sees several reads */
    for (size_t off = 0; off < len; off += 512)
        cl_send(p, buf + off, len - off < 512 ? len - off : 512);
    run_for(200);
    assert_true(xstats()->publishers_paused > 0);
    int acks = 0;
    while (acks < 50 && cl_next(p, 0) == 1)
        acks++;
    assert_true(acks < N); /* not everything was taken while the queue is full */
    /* now the subscriber takes everything, in order */
    for (int i = 0; i < N; i++) {
        char pl[8];
        snprintf(pl, sizeof pl, "%05d", i);
        mqr_mqtt_publish_t m = expect_publish(s, "bp", pl);
        send_ack(s, MQR_MQTT_PUBACK, m.packet_id);
    }
    while (acks < N && cl_next(p, WAIT_MS) == 1)
        if (pkt_type(p) == MQR_MQTT_PUBACK) acks++;
    assert_int_equal(acks, N);
    assert_int_equal(xstats()->dropped, 0);
    cl_free(s);
    cl_free(p);
}

static void test_stuck_subscriber_disconnected(void **state)
{
    extra_listener(10, 4, 500);
    client_t *s = pclient(MQR_MQTT_V5, "stuck", false, NULL);
    subscribe(s, "st", 1);
    client_t *p = client(MQR_MQTT_V311, "stpub");
    client_t *o = client(MQR_MQTT_V311, "other");
    subscribe(o, "other", 0);
    for (int i = 0; i < 40; i++)
        send_publish(p, "st", "x", 1, false, (uint16_t)(i + 1));
    run_for(100);
    assert_true(xstats()->publishers_paused > 0);
    /* it never acknowledges: closed with Quota exceeded ... */
    for (int i = 0; i < 4; i++) { /* the window it got */
        cl_expect(s, MQR_MQTT_PUBLISH);
    }
    assert_int_equal(expect_disconnect(s), MQR_MQTT_RC_QUOTA_EXCEEDED);
    assert_int_equal(xstats()->stuck_disconnects, 1);
    /* ... and the publisher goes on */
    send_publish(p, "other", "free", 0, false, 0);
    expect_publish(o, "other", "free");
    /* the session kept what it had queued */
    cl_free(s);
    s = pclient(MQR_MQTT_V5, "stuck", false, NULL);
    int got = 0;
    while (cl_next(s, QUIET_MS * 2) == 1) {
        if (pkt_type(s) != MQR_MQTT_PUBLISH) continue;
        mqr_mqtt_publish_t m;
        assert_int_equal(
            mqr__mqtt_decode_publish(s->pkt, s->pkt_len, s->version, MQR_MQTT_FROM_SERVER, &m), 0);
        send_ack(s, MQR_MQTT_PUBACK, m.packet_id);
        got++;
    }
    /* 4 in flight and the queue it had (the publisher's 15th message
     * overflowed it and paused the publisher); what came after the
     * disconnection met the offline bound of 10 and was dropped, counted */
    assert_int_equal(got, 15);
    assert_int_equal(got + xstats()->offline_dropped, 40);
    cl_free(s);
    cl_free(p);
    cl_free(o);
}

static void test_v4_acks_waiting_for_commit_pause(void **state)
{
    /* 3.1.1 clients were told no Receive Maximum: more QoS 1 publishes
     * waiting for the store's commit than it pauses the client's input
     * instead of closing it */
    extra_listener_rm(0, 0, 0, 4);
    client_t *p = client(MQR_MQTT_V311, "burst");
    enum { N = 40 };
    static uint8_t buf[N * 32];
    size_t len = 0;
    for (int i = 0; i < N; i++) {
        mqr_mqtt_publish_t m;
        memset(&m, 0, sizeof m);
        char t[16];
        snprintf(t, sizeof t, "ret/%d", i);
        m.topic.p = t;
        m.topic.len = (uint16_t)strlen(t);
        m.payload.p = (const uint8_t *)"v";
        m.payload.len = 1;
        m.qos = 1;
        m.retain = true; /* its PUBACK waits for the commit */
        m.packet_id = (uint16_t)(i + 1);
        size_t n;
        assert_int_equal(mqr__mqtt_encode_publish(&m, MQR_MQTT_V311, buf + len, 32, &n), 0);
        len += n;
    }
    cl_send(p, buf, len); /* one read: more than 4 wait at once */
    for (int i = 0; i < N; i++)
        expect_ack(p, MQR_MQTT_PUBACK, (uint16_t)(i + 1));
    assert_int_equal(xstats()->malformed, 0);
    ping(p); /* still connected, reading again */
    cl_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_session_present, setup, teardown),
        cmocka_unit_test_setup_teardown(test_subscriptions_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(test_offline_queue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inflight_redelivered_dup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_takeover_keeps_session, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qos2_inbound_across_reconnect, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qos2_outbound_pubrel_resent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_session_expiry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_will_delay, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_restores, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_keeps_subscription_options, setup, teardown),
        cmocka_unit_test_setup_teardown(test_offline_queue_bound, setup, teardown),
        cmocka_unit_test_setup_teardown(test_v311_session_expiry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_v311_session_expiry_load, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backpressure_no_loss, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stuck_subscriber_disconnected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_v4_acks_waiting_for_commit_pause, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
