/*
 * listener_harness.h — what the listener's C tests share: a real engine with
 * its listener on a free loopback port and a store in a fresh temporary
 * directory, driven with uv_run(UV_RUN_NOWAIT) under deadlines, and raw TCP
 * clients whose packets are built and read with the codec.
 *
 * Included once by each test executable (test_listener.c, test_sessions.c,
 * test_listener_limits.c); everything is static, so each test program has
 * its own fixture. Functions are inline only so that a test need not use
 * all of them.
 */
#ifndef MQR_LISTENER_HARNESS_H
#define MQR_LISTENER_HARNESS_H

#include "listener.h"
#include "loopback.h"
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

#define WAIT_MS 2000 /* for something that should happen */
#define QUIET_MS 150 /* for something that should not */

/* ---- time, loop, fixture ------------------------------------------------ */

static inline uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static inline void sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

typedef struct {
    mqr_engine_t *e;
    mqr_listener_t *main;  /* the engine's own listener (listen_port) */
    mqr_listener_t *extra; /* a second listener a test started */
    char dir[64];
    int port;
} fixture_t;

static fixture_t F;

static inline int free_port(void)
{
    int port = lb_free_port();
    assert_true(port > 0);
    return port;
}

static inline void engine_start(void)
{
    mqr_engine_options_t o;
    mqr_engine_options_init(&o);
    o.listen_host = "127.0.0.1";
    o.listen_port = F.port;
    o.data_dir = F.dir;
    o.log_level = getenv("MQR_TEST_DEBUG") ? MQR_LOG_DEBUG : MQR_LOG_WARN;
    char *err = NULL;
    int rc = mqr_engine_new(&F.e, &o, NULL, &err);
    if (rc < 0) fail_msg("engine: %s", err ? err : mqr_strerror(rc));
    F.main = mqr__engine_listeners(F.e)->first; /* the only one yet */
    assert_non_null(F.main);
    assert_int_equal(mqr__listener_port(F.main), F.port);
}

static inline int setup(void **state)
{
    snprintf(F.dir, sizeof F.dir, "/tmp/mqr-listener-XXXXXX");
    if (!mkdtemp(F.dir)) return -1;
    F.port = free_port();
    engine_start();
    return 0;
}

static inline int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static inline int teardown(void **state)
{
    mqr__listener_close(F.extra); /* else it keeps the loop alive */
    F.extra = NULL;
    if (F.e) mqr_engine_free(F.e);
    F.e = NULL;
    F.main = NULL;
    nftw(F.dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static inline void turn(void)
{
    uv_run(mqr_engine_loop(F.e), UV_RUN_NOWAIT);
}

/* Runs the loop for ms. */
static inline void run_for(int ms)
{
    uint64_t end = now_ms() + (uint64_t)ms;
    while (now_ms() < end) {
        turn();
        sleep_us(500);
    }
}

static inline const mqr_listener_stats_t *stats(void)
{
    return mqr__listener_stats(F.main);
}

/* ---- a raw client ------------------------------------------------------- */

typedef struct {
    int fd;
    int version;
    bool closed;
    uint8_t *buf; /* received, not yet taken */
    size_t len;
    uint8_t pkt[70000]; /* the last packet taken */
    size_t pkt_len;
} client_t;

/* rcvbuf > 0 sets SO_RCVBUF before connecting (after, the kernel may wait
 * a zero-window probe timeout before it reopens the window). */
static inline client_t *cl_open_rcvbuf(int rcvbuf)
{
    client_t *c = calloc(1, sizeof *c);
    assert_non_null(c);
    c->buf = malloc(1 << 20);
    assert_non_null(c->buf);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(c->fd >= 0);
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (rcvbuf > 0) setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)F.port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(c->fd, (struct sockaddr *)&a, sizeof a), 0);
    fcntl(c->fd, F_SETFL, O_NONBLOCK);
    return c;
}

static inline client_t *cl_open(void)
{
    return cl_open_rcvbuf(0);
}

static inline void cl_free(client_t *c)
{
    if (!c) return;
    close(c->fd);
    free(c->buf);
    free(c);
}

static inline void cl_send(client_t *c, const void *data, size_t n)
{
    const uint8_t *p = data;
    uint64_t end = now_ms() + WAIT_MS;
    while (n) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno != EAGAIN) fail_msg("send: %s", strerror(errno));
        if (now_ms() > end) fail_msg("send: stuck");
        turn();
    }
    turn();
}

/* Reads what the socket has; false once it is closed. */
static inline bool cl_fill(client_t *c)
{
    for (;;) {
        if (c->len == 1 << 20) return true;
        ssize_t r = recv(c->fd, c->buf + c->len, (1 << 20) - c->len, 0);
        if (r > 0) {
            c->len += (size_t)r;
            continue;
        }
        if (r == 0 || (errno != EAGAIN && errno != EINTR)) c->closed = true;
        return !c->closed;
    }
}

/* Takes the next whole packet into c->pkt: 1, or 0 after ms without one, or
 * -1 when the connection closed first. */
static inline int cl_next(client_t *c, int ms)
{
    uint64_t end = now_ms() + (uint64_t)ms;
    for (;;) {
        mqr_mqtt_frame_t f;
        if (mqr__mqtt_frame(c->buf, c->len, 0, 0, &f) == 0) {
            assert_true(f.total <= sizeof c->pkt);
            memcpy(c->pkt, c->buf, f.total);
            c->pkt_len = f.total;
            memmove(c->buf, c->buf + f.total, c->len - f.total);
            c->len -= f.total;
            return 1;
        }
        if (c->closed) return -1;
        if (now_ms() >= end) return 0;
        turn();
        cl_fill(c);
        if (c->len == 0 && !c->closed) sleep_us(200);
    }
}

static inline int pkt_type(const client_t *c)
{
    return c->pkt[0] >> 4;
}

static inline void cl_expect(client_t *c, int type)
{
    int r = cl_next(c, WAIT_MS);
    if (r == 0) fail_msg("no %s within %d ms", mqr__listener_type_name(type), WAIT_MS);
    if (r < 0) fail_msg("connection closed, expected %s", mqr__listener_type_name(type));
    if (pkt_type(c) != type)
        fail_msg("got %s, expected %s", mqr__listener_type_name(pkt_type(c)),
                 mqr__listener_type_name(type));
}

static inline void cl_expect_nothing(client_t *c, int ms)
{
    int r = cl_next(c, ms);
    if (r == 1) fail_msg("unexpected %s", mqr__listener_type_name(pkt_type(c)));
    assert_false(c->closed);
}

/* The connection must close (packets before the close are skipped). */
static inline void cl_expect_closed(client_t *c, int ms)
{
    int r;
    while ((r = cl_next(c, ms)) == 1) {
    }
    if (r == 0) fail_msg("connection still open after %d ms", ms);
}

/* ---- packets ------------------------------------------------------------- */

static inline void send_connect_full(client_t *c, int version, const char *id, bool clean,
                                     uint16_t ka, const uint8_t *props, size_t plen,
                                     const char *will_topic, const char *will_payload)
{
    c->version = version;
    mqr_mqtt_connect_t k;
    memset(&k, 0, sizeof k);
    k.version = (uint8_t)version;
    k.clean_start = clean;
    k.keep_alive = ka;
    k.props.p = props;
    k.props.len = (uint32_t)plen;
    k.client_id.p = id;
    k.client_id.len = (uint16_t)strlen(id);
    if (will_topic) {
        k.has_will = true;
        k.will_topic.p = will_topic;
        k.will_topic.len = (uint16_t)strlen(will_topic);
        k.will_payload.p = (const uint8_t *)will_payload;
        k.will_payload.len = (uint32_t)strlen(will_payload);
    }
    uint8_t buf[1024];
    size_t n;
    assert_int_equal(mqr__mqtt_encode_connect(&k, buf, sizeof buf, &n), 0);
    cl_send(c, buf, n);
}

static inline void send_connect(client_t *c, int version, const char *id, bool clean, uint16_t ka)
{
    send_connect_full(c, version, id, clean, ka, NULL, 0, NULL, NULL);
}

static inline mqr_mqtt_connack_t expect_connack(client_t *c)
{
    cl_expect(c, MQR_MQTT_CONNACK);
    mqr_mqtt_connack_t a;
    assert_int_equal(mqr__mqtt_decode_connack(c->pkt, c->pkt_len, c->version, &a), 0);
    return a;
}

/* A connected client. */
static inline client_t *client(int version, const char *id)
{
    client_t *c = cl_open();
    send_connect(c, version, id, true, 60);
    mqr_mqtt_connack_t a = expect_connack(c);
    assert_int_equal(a.reason, 0);
    assert_false(a.session_present);
    return c;
}

static inline void send_publish_full(client_t *c, const char *topic, const void *payload,
                                     size_t len, int qos, bool retain, uint16_t pid, bool dup,
                                     const uint8_t *props, size_t plen)
{
    mqr_mqtt_publish_t p;
    memset(&p, 0, sizeof p);
    p.topic.p = topic;
    p.topic.len = (uint16_t)strlen(topic);
    p.payload.p = payload;
    p.payload.len = (uint32_t)len;
    p.qos = (uint8_t)qos;
    p.retain = retain;
    p.dup = dup;
    p.packet_id = pid;
    p.props.p = props;
    p.props.len = (uint32_t)plen;
    static uint8_t buf[80000];
    size_t n;
    assert_int_equal(mqr__mqtt_encode_publish(&p, c->version, buf, sizeof buf, &n), 0);
    cl_send(c, buf, n);
}

static inline void send_publish(client_t *c, const char *topic, const char *payload, int qos,
                                bool retain, uint16_t pid)
{
    send_publish_full(c, topic, payload, strlen(payload), qos, retain, pid, false, NULL, 0);
}

static inline void send_ack(client_t *c, int type, uint16_t pid)
{
    mqr_mqtt_ack_t a;
    memset(&a, 0, sizeof a);
    a.type = (uint8_t)type;
    a.packet_id = pid;
    uint8_t buf[16];
    size_t n;
    assert_int_equal(mqr__mqtt_encode_ack(&a, c->version, buf, sizeof buf, &n), 0);
    cl_send(c, buf, n);
}

static inline void send_subscribe_full(client_t *c, uint16_t pid, const char *filter, int qos,
                                       bool no_local, bool rap, int rh, uint32_t sub_id)
{
    mqr_mqtt_subscribe_t s;
    memset(&s, 0, sizeof s);
    s.packet_id = pid;
    uint8_t props[8];
    size_t plen = 0;
    if (sub_id) {
        mqr_mqtt_pbuild_t b;
        mqr__mqtt_pb_init(&b, props, sizeof props);
        mqr__mqtt_pb_varint(&b, MQR_MQTT_PROP_SUBSCRIPTION_ID, sub_id);
        assert_int_equal(mqr__mqtt_pb_finish(&b, &plen), 0);
        s.props.p = props;
        s.props.len = (uint32_t)plen;
    }
    mqr_mqtt_sub_entry_t e;
    memset(&e, 0, sizeof e);
    e.filter.p = filter;
    e.filter.len = (uint16_t)strlen(filter);
    e.qos = (uint8_t)qos;
    e.no_local = no_local;
    e.retain_as_published = rap;
    e.retain_handling = (uint8_t)rh;
    uint8_t buf[512];
    size_t n;
    assert_int_equal(mqr__mqtt_encode_subscribe(&s, &e, 1, c->version, buf, sizeof buf, &n), 0);
    cl_send(c, buf, n);
}

/* Subscribes and checks the SUBACK grants qos. */
static inline void subscribe(client_t *c, const char *filter, int qos)
{
    send_subscribe_full(c, 7, filter, qos, false, false, 0, 0);
    cl_expect(c, MQR_MQTT_SUBACK);
    mqr_mqtt_suback_t a;
    assert_int_equal(mqr__mqtt_decode_suback(c->pkt, c->pkt_len, c->version, &a), 0);
    assert_int_equal(a.packet_id, 7);
    assert_int_equal(a.count, 1);
    assert_int_equal(a.codes[0], qos);
}

static inline mqr_mqtt_publish_t expect_publish(client_t *c, const char *topic, const char *payload)
{
    cl_expect(c, MQR_MQTT_PUBLISH);
    mqr_mqtt_publish_t p;
    assert_int_equal(
        mqr__mqtt_decode_publish(c->pkt, c->pkt_len, c->version, MQR_MQTT_FROM_SERVER, &p), 0);
    if (topic) {
        assert_int_equal(p.topic.len, strlen(topic));
        assert_memory_equal(p.topic.p, topic, p.topic.len);
    }
    if (payload) {
        assert_int_equal(p.payload.len, strlen(payload));
        assert_memory_equal(p.payload.p, payload, p.payload.len);
    }
    return p;
}

static inline mqr_mqtt_ack_t expect_ack(client_t *c, int type, uint16_t pid)
{
    cl_expect(c, type);
    mqr_mqtt_ack_t a;
    assert_int_equal(mqr__mqtt_decode_ack(c->pkt, c->pkt_len, c->version, &a), 0);
    assert_int_equal(a.packet_id, pid);
    return a;
}

static inline uint8_t expect_disconnect(client_t *c)
{
    cl_expect(c, MQR_MQTT_DISCONNECT);
    mqr_mqtt_disconnect_t d;
    assert_int_equal(
        mqr__mqtt_decode_disconnect(c->pkt, c->pkt_len, c->version, MQR_MQTT_FROM_SERVER, &d), 0);
    return d.reason;
}

static inline void ping(client_t *c)
{
    static const uint8_t req[2] = {0xC0, 0x00};
    cl_send(c, req, 2);
    cl_expect(c, MQR_MQTT_PINGRESP);
    assert_int_equal(c->pkt_len, 2);
}

#endif
