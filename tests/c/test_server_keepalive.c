/*
 * test_server_keepalive.c — a listener with max_keepalive tells a v5 client
 * asking for more (or for none) the limit as Server Keep Alive, enforces it,
 * and leaves a client within the limit and 3.1.1 clients alone.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "engine.h"
#include "listener.h"
#include "codec.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct {
    mqr_engine_t *e;
    mqr_listener_t *l;
    int port;
} fixture_t;

static int setup(void **state)
{
    static fixture_t f;
    mqr_engine_options_t o;
    mqr_engine_options_init(&o);
    o.listen_port = -1;
    o.data_dir = "";
    o.log_level = MQR_LOG_ERROR;
    assert_int_equal(mqr_engine_new(&f.e, &o, NULL, NULL), 0);
    mqr_listener_options_t lo;
    mqr__listener_options_init(&lo);
    lo.max_keepalive = 2;
    int rc = -1;
    for (int port = 28000 + (getpid() % 1000) * 7, i = 0; i < 50 && rc < 0; i++, port++) {
        rc = mqr__listener_start_opts(f.e, "127.0.0.1", port, &lo, &f.l);
        f.port = port;
    }
    assert_int_equal(rc, 0);
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    mqr__listener_close(f->l);
    mqr_engine_free(f->e);
    return 0;
}

static int dial(fixture_t *f)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)f->port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int rc = connect(s, (struct sockaddr *)&a, sizeof a);
    assert_true(rc == 0 || errno == EINPROGRESS);
    return s;
}

/* Runs the loop until a whole packet arrived on s or ms passed; returns its
 * length in buf, 0 on EOF, -1 on timeout. */
static ssize_t read_packet(fixture_t *f, int s, uint8_t *buf, size_t cap, int ms)
{
    size_t have = 0;
    for (int i = 0; i < ms; i++) {
        uv_run(mqr_engine_loop(f->e), UV_RUN_NOWAIT);
        ssize_t n = recv(s, buf + have, cap - have, MSG_DONTWAIT);
        if (n == 0) return 0;
        if (n > 0) have += (size_t)n;
        mqr_mqtt_frame_t fr;
        if (have && mqr__mqtt_frame(buf, have, 0, 5, &fr) == 0) return (ssize_t)fr.total;
        usleep(1000);
    }
    return -1;
}

static void send_connect(fixture_t *f, int s, int version, uint16_t keep_alive)
{
    mqr_mqtt_connect_t c;
    memset(&c, 0, sizeof c);
    c.version = (uint8_t)version;
    c.clean_start = true;
    c.keep_alive = keep_alive;
    c.client_id.p = "ka";
    c.client_id.len = 2;
    uint8_t buf[128];
    size_t len;
    assert_int_equal(mqr__mqtt_encode_connect(&c, buf, sizeof buf, &len), 0);
    for (int i = 0; i < 100; i++) {
        uv_run(mqr_engine_loop(f->e), UV_RUN_NOWAIT);
        if (send(s, buf, len, MSG_NOSIGNAL) == (ssize_t)len) return;
        usleep(1000);
    }
    fail_msg("could not send CONNECT");
}

static void connack(fixture_t *f, int s, int version, mqr_mqtt_connack_t *a)
{
    uint8_t buf[256];
    ssize_t n = read_packet(f, s, buf, sizeof buf, 2000);
    assert_true(n > 0);
    assert_int_equal(mqr__mqtt_decode_connack(buf, (size_t)n, version, a), 0);
    assert_int_equal(a->reason, 0);
}

static void test_v5_over_limit_told(void **state)
{
    fixture_t *f = *state;
    int s = dial(f);
    send_connect(f, s, 5, 600);
    mqr_mqtt_connack_t a;
    connack(f, s, 5, &a);
    assert_true(a.has_server_keep_alive);
    assert_int_equal(a.server_keep_alive, 2);
    /* enforced: silent for 1.5 x 2 s and the server closes */
    uint8_t buf[64];
    ssize_t n = read_packet(f, s, buf, sizeof buf, 4500);
    assert_true(n >= 0); /* DISCONNECT 0x8D or EOF, not a timeout */
    close(s);
}

static void test_v5_zero_told(void **state)
{
    fixture_t *f = *state;
    int s = dial(f);
    send_connect(f, s, 5, 0);
    mqr_mqtt_connack_t a;
    connack(f, s, 5, &a);
    assert_true(a.has_server_keep_alive);
    assert_int_equal(a.server_keep_alive, 2);
    close(s);
}

static void test_v5_within_and_v311_untouched(void **state)
{
    fixture_t *f = *state;
    int s = dial(f);
    send_connect(f, s, 5, 1);
    mqr_mqtt_connack_t a;
    connack(f, s, 5, &a);
    assert_false(a.has_server_keep_alive);
    close(s);
    s = dial(f);
    send_connect(f, s, 4, 600);
    connack(f, s, 4, &a);
    assert_false(a.has_server_keep_alive);
    close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v5_over_limit_told),
        cmocka_unit_test(test_v5_zero_told),
        cmocka_unit_test(test_v5_within_and_v311_untouched),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
