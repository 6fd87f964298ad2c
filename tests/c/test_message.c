/*
 * test_message.c — messages: one allocation holding every part, reference
 * counting, and the limits MQTT puts on sizes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "message.h"

#include <stdlib.h>
#include <string.h>

static mqr_msg_t *make(const char *topic, const void *payload, size_t plen)
{
    mqr_msg_init_t in = {
        .topic = topic,
        .topic_len = strlen(topic),
        .payload = payload,
        .payload_len = plen,
        .qos = 1,
        .retain = true,
        .origin = MQR_ORIGIN_LISTENER,
        .origin_name = "client-7",
    };
    return mqr__msg_new(&in);
}

static void test_fields_are_copied(void **state)
{
    char topic[] = "a/b/c";
    char payload[] = {'x', '\0', 'y'};
    mqr_msg_t *m = make(topic, payload, sizeof payload);
    assert_non_null(m);
    topic[0] = 'z';
    payload[0] = 'z';
    size_t len;
    assert_string_equal(mqr_msg_topic(m, &len), "a/b/c");
    assert_int_equal(len, 5);
    const char *p = mqr_msg_payload(m, &len);
    assert_int_equal(len, 3);
    assert_memory_equal(p, "x\0y", 3);
    assert_int_equal(p[3], '\0'); /* a NUL follows for convenience */
    assert_int_equal(mqr_msg_qos(m), 1);
    assert_true(mqr_msg_retain(m));
    assert_string_equal(mqr_msg_origin_kind(m), "listener");
    assert_string_equal(mqr_msg_origin_name(m), "client-7");
    assert_true(m->created_ms > 0);
    mqr_msg_unref(m);
}

static void test_refcount(void **state)
{
    mqr_msg_t *m = make("t", "p", 1);
    assert_int_equal(m->refs, 1);
    mqr_msg_ref(m);
    mqr_msg_ref(m);
    assert_int_equal(m->refs, 3);
    mqr_msg_unref(m);
    mqr_msg_unref(m);
    assert_int_equal(m->refs, 1);
    assert_string_equal(m->topic, "t"); /* still alive: ASan would tell */
    mqr_msg_unref(m);                   /* freed: LSan would report a leak otherwise */
    mqr_msg_unref(NULL);                /* harmless */
}

static void test_limits(void **state)
{
    size_t big = 65536;
    char *topic = malloc(big + 1);
    memset(topic, 'a', big);
    topic[big] = '\0';
    mqr_msg_init_t in = {.topic = topic, .topic_len = big};
    assert_null(mqr__msg_new(&in));
    in.topic_len = 65535;
    mqr_msg_t *m = mqr__msg_new(&in);
    assert_non_null(m);
    assert_int_equal(m->topic_len, 65535);
    mqr_msg_unref(m);
    in.topic_len = 1;
    in.payload = "";
    in.payload_len = 268435456u;
    assert_null(mqr__msg_new(&in));
    free(topic);
}

static void test_props_and_empty(void **state)
{
    const uint8_t props[] = {0x03, 0x00, 0x02, 'h', 'i'};
    mqr_msg_init_t in = {.topic = "x", .topic_len = 1, .props = props, .props_len = sizeof props};
    mqr_msg_t *m = mqr__msg_new(&in);
    assert_int_equal(m->payload_len, 0);
    assert_int_equal(m->props_len, sizeof props);
    assert_memory_equal(m->props, props, sizeof props);
    assert_string_equal(mqr_msg_origin_name(m), "");
    mqr_msg_unref(m);
}

/* Small messages come from the thread's pool of blocks and go back to it;
 * big ones are plain allocations. Without AddressSanitizer a freed small
 * block is the next small message's of the same size class; with it there
 * is no pool (a freed message stays poisoned), which the class alone
 * shows. */
static void test_small_blocks_are_reused(void **state)
{
    (void)state;
    char big[1024];
    memset(big, 'b', sizeof big);
    mqr_msg_t *m = make("t/small", "x", 1);
    mqr_msg_t *b = make("t/big", big, sizeof big);
    assert_int_not_equal(m->size_class, 0);
    assert_int_equal(b->size_class, 0);
    void *first = m;
    unsigned m_class = m->size_class;
    mqr_msg_unref(m);
    mqr_msg_unref(b);
    mqr_msg_t *again = make("t/smal2", "y", 1); /* the same size */
    assert_int_equal(again->size_class, m_class);
    assert_string_equal(again->topic, "t/smal2");
    assert_memory_equal(again->payload, "y", 1);
#if !defined(__SANITIZE_ADDRESS__)
    assert_ptr_equal(again, first);
#else
    (void)first;
#endif
    mqr_msg_unref(again);
    /* every size around the classes' edges fits its block (AddressSanitizer
     * sees an overflow; the pool is off there, the block sizes are not) */
    for (size_t n = 0; n <= 300; n++) {
        char p[300];
        memset(p, (int)('a' + n % 26), n);
        mqr_msg_t *x = make("t", p, n);
        assert_non_null(x);
        assert_memory_equal(x->payload, p, n);
        assert_int_equal(x->payload[n], '\0');
        mqr_msg_unref(x);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fields_are_copied),
        cmocka_unit_test(test_refcount),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_props_and_empty),
        cmocka_unit_test(test_small_blocks_are_reused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
