/*
 * test_sink.c — the part every egress client shares (core/sink/sink.c):
 * bounds on in-flight and waiting requests, outcomes and their counters,
 * up/down changes told once, and secrets kept out of the shown target.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "sink.h"

static void test_bounds(void **state)
{
    (void)state;
    mqr_sink_t s;
    mqr__sink_init(&s, "file", "audit", "/tmp/x", 2, 1);
    bool waits;
    assert_int_equal(mqr__sink_admit(&s, &waits), 0);
    assert_false(waits);
    assert_int_equal(mqr__sink_admit(&s, &waits), 0);
    assert_false(waits);
    assert_int_equal(mqr__sink_admit(&s, &waits), 0);
    assert_true(waits);
    assert_int_equal(mqr__sink_admit(&s, &waits), MQR_EFULL);
    assert_int_equal(s.errors[MQR_SINK_ERR_FULL], 1);
    assert_int_equal(s.requests, 3);
    assert_int_equal(s.in_flight, 2);
    assert_int_equal(s.queued, 1);

    mqr__sink_done(&s, false, 1000, MQR_SINK_OK, MQR_SINK_ERR_OTHER, NULL);
    mqr__sink_start_waiting(&s);
    assert_int_equal(s.in_flight, 2);
    assert_int_equal(s.queued, 0);
    mqr__sink_done(&s, false, 2000000, MQR_SINK_RETRY, MQR_SINK_ERR_TIMEOUT, "ETIMEDOUT: 2 s");
    mqr__sink_done(&s, false, 3000, MQR_SINK_PERMANENT, MQR_SINK_ERR_REQUEST, "HTTP 400");
    assert_int_equal(s.in_flight, 0);
    assert_int_equal(s.ok, 1);
    assert_int_equal(s.retried, 1);
    assert_int_equal(s.failed, 1);
    assert_int_equal(s.errors[MQR_SINK_ERR_TIMEOUT], 1);
    assert_int_equal(s.errors[MQR_SINK_ERR_REQUEST], 1);
    assert_int_equal(s.latency.count, 3);
    assert_string_equal(s.last_error, "HTTP 400");
    assert_string_equal(mqr__sink_err_kind_name(MQR_SINK_ERR_CONNECT), "connect");
}

static int changes;
static bool last_up;
static void on_state(void *arg, mqr_sink_t *s, bool up, const char *reason)
{
    (void)arg;
    (void)s;
    (void)reason;
    changes++;
    last_up = up;
}

static void test_up_down_told_once(void **state)
{
    (void)state;
    mqr_sink_t s;
    mqr__sink_init(&s, "redis", "r", "redis://127.0.0.1:6379", 1, 0);
    s.on_state = on_state;
    changes = 0;
    mqr__sink_set_up(&s, true, NULL);
    mqr__sink_set_up(&s, true, NULL);
    assert_int_equal(changes, 1);
    assert_true(last_up);
    mqr__sink_set_up(&s, false, "ECONNREFUSED");
    mqr__sink_set_up(&s, false, "ECONNREFUSED");
    assert_int_equal(changes, 2);
    assert_false(last_up);
    assert_string_equal(s.last_error, "ECONNREFUSED");
}

static void redacts(const char *in, const char *want)
{
    char out[256];
    mqr__sink_redact(in, out, sizeof out);
    if (strcmp(out, want) != 0) fail_msg("redact(%s) = %s, want %s", in, out, want);
}

static void test_redact(void **state)
{
    (void)state;
    redacts("https://hooks.example.com/a?b=1", "https://hooks.example.com/a?b=1");
    redacts("https://bob:s3cret@hooks.example.com/a", "https://bob:***@hooks.example.com/a");
    redacts("https://bob@hooks.example.com/a", "https://bob@hooks.example.com/a");
    redacts("postgresql://app:pw@127.0.0.1:5432/db", "postgresql://app:***@127.0.0.1:5432/db");
    redacts("postgresql://app@h/db?password=pw&sslmode=require",
            "postgresql://app@h/db?password=***&sslmode=require");
    redacts("host=127.0.0.1 user=app password=pw dbname=x",
            "host=127.0.0.1 user=app password=*** dbname=x");
    redacts("password='a b\\' c' host=h", "password=*** host=h");
    redacts("user=app oldpassword=x", "user=app oldpassword=x");
    redacts("redis://:pw@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0");
    /* an @ after the path is not credentials */
    redacts("http://h/p?to=a:b@c", "http://h/p?to=a:b@c");
    char small[8];
    mqr__sink_redact("https://u:p@h", small, sizeof small);
    assert_int_equal(strlen(small), 7);
}

static void test_list(void **state)
{
    (void)state;
    mqr_sinks_t l = {0};
    mqr_sink_t a, b, c;
    mqr__sink_init(&a, "file", "a", "", 1, 0);
    mqr__sink_init(&b, "file", "b", "", 1, 0);
    mqr__sink_init(&c, "file", "c", "", 1, 0);
    mqr__sinks_add(&l, &a);
    mqr__sinks_add(&l, &b);
    mqr__sinks_add(&l, &c);
    assert_ptr_equal(mqr__sinks_find(&l, "b"), &b);
    mqr__sinks_remove(&l, &b);
    assert_null(mqr__sinks_find(&l, "b"));
    mqr__sinks_remove(&l, &b); /* twice: no harm */
    assert_int_equal(l.count, 2);
    mqr__sinks_remove(&l, &c);
    mqr__sinks_remove(&l, &a);
    assert_null(l.head);
    assert_int_equal(l.count, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_up_down_told_once),
        cmocka_unit_test(test_redact),
        cmocka_unit_test(test_list),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
