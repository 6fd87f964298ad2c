/*
 * test_codec.c — the MQTT codec against the 3.1.1 and 5.0 specifications.
 *
 * Round trips for every packet type in both versions (encode, frame, decode,
 * compare fields, re-encode byte for byte), every property type, and the
 * refusals a receiver owes: bad lengths, truncation at every byte, bad UTF-8,
 * wildcards, reserved bits, bad flags, misplaced or repeated properties.
 * Every packet under test is decoded from a heap copy of exactly its size, so
 * under ASan any read past its end fails the test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define V4 MQR_MQTT_V311
#define V5 MQR_MQTT_V5
#define FC MQR_MQTT_FROM_CLIENT
#define FS MQR_MQTT_FROM_SERVER

/* ---- helpers ------------------------------------------------------------- */

/* The heap copy the last decode read from; views in g_pk point into it. */
static uint8_t *g_buf;
static size_t g_len;
static mqr_mqtt_packet_t g_pk;

static const uint8_t *exact(const uint8_t *src, size_t n)
{
    free(g_buf);
    g_buf = malloc(n ? n : 1);
    assert_non_null(g_buf);
    if (n) memcpy(g_buf, src, n);
    g_len = n;
    return g_buf;
}

static size_t mk(uint8_t *out, uint8_t first, const uint8_t *body, size_t n)
{
    out[0] = first;
    size_t h = 1 + mqr__mqtt_varint_write(out + 1, (uint32_t)n);
    if (n) memcpy(out + h, body, n);
    return h + n;
}

/* Decodes first byte + minimal Remaining Length + body into g_pk. */
static int dec(int version, mqr_mqtt_dir_t dir, uint8_t first, const uint8_t *body, size_t n)
{
    static uint8_t tmp[4096];
    assert_true(n + 5 <= sizeof tmp);
    size_t len = mk(tmp, first, body, n);
    const uint8_t *p = exact(tmp, len);
    return mqr__mqtt_decode(p, len, version, dir, &g_pk);
}

static int dec_raw(int version, mqr_mqtt_dir_t dir, const uint8_t *pkt, size_t n)
{
    const uint8_t *p = exact(pkt, n);
    return mqr__mqtt_decode(p, n, version, dir, &g_pk);
}

#define B(...) (const uint8_t[]){__VA_ARGS__}, sizeof((const uint8_t[]){__VA_ARGS__})

static void assert_view(const void *p, size_t n, const char *want)
{
    assert_non_null(p);
    assert_int_equal(n, strlen(want));
    assert_memory_equal(p, want, n);
}
#define ASSERT_STR(v, want) assert_view((v).p, (v).len, want)

/* Sizes with buf NULL, refuses a buffer one byte short without touching it,
 * then encodes for real and checks the sizes agree and the result frames. */
#define ENCODE(out, lenvar, fn, ...)                                                               \
    do {                                                                                           \
        size_t need_ = 0;                                                                          \
        assert_int_equal(fn(__VA_ARGS__, NULL, 0, &need_), 0);                                     \
        assert_true(need_ >= 2 && need_ <= sizeof(out));                                           \
        memset(out, 0xEE, sizeof(out));                                                            \
        assert_int_equal(fn(__VA_ARGS__, out, need_ - 1, &lenvar), MQR_ETOOLARGE);                 \
        assert_int_equal((out)[0], 0xEE);                                                          \
        assert_int_equal(fn(__VA_ARGS__, out, sizeof(out), &lenvar), 0);                           \
        assert_int_equal(lenvar, need_);                                                           \
        mqr_mqtt_frame_t fr_;                                                                      \
        assert_int_equal(mqr__mqtt_frame(out, lenvar, 0, 5, &fr_), 0);                             \
        assert_int_equal(fr_.total, lenvar);                                                       \
    } while (0)

/* Every valid packet the round trips produce, for the truncation test. */
typedef struct {
    char name[40];
    int version;
    mqr_mqtt_dir_t dir;
    bool strict; /* no shorter body may decode */
    size_t len;
    uint8_t bytes[1024];
} sample_t;

static sample_t g_samples[64];
static size_t g_nsamples;

static void add_sample(const char *name, int version, mqr_mqtt_dir_t dir, bool strict,
                       const uint8_t *b, size_t n)
{
    assert_true(g_nsamples < sizeof g_samples / sizeof g_samples[0]);
    assert_true(n <= sizeof g_samples[0].bytes);
    sample_t *s = &g_samples[g_nsamples++];
    snprintf(s->name, sizeof s->name, "%s", name);
    s->version = version;
    s->dir = dir;
    s->strict = strict;
    s->len = n;
    memcpy(s->bytes, b, n);
}

/* Decodes encoded bytes from an exact copy, checks the re-encoding is
 * byte-identical (the caller passes its encoder via the switch below). */
static void decode_ok(int version, mqr_mqtt_dir_t dir, const uint8_t *b, size_t n)
{
    int rc = dec_raw(version, dir, b, n);
    if (rc) fail_msg("decode failed: %s", mqr_err_name(rc));
}

static void reencode_same(int version, const uint8_t *want, size_t n)
{
    uint8_t out[2048];
    size_t len = 0;
    int rc = MQR_EINVAL;
    mqr_mqtt_packet_t *p = &g_pk;
    mqr_mqtt_sub_entry_t ents[16];
    mqr_mqtt_str_t filters[16];
    mqr_mqtt_list_iter_t it;
    size_t k = 0;
    switch (p->type) {
    case MQR_MQTT_CONNECT:
        rc = mqr__mqtt_encode_connect(&p->u.connect, out, sizeof out, &len);
        break;
    case MQR_MQTT_CONNACK:
        rc = mqr__mqtt_encode_connack(&p->u.connack, version, out, sizeof out, &len);
        break;
    case MQR_MQTT_PUBLISH:
        rc = mqr__mqtt_encode_publish(&p->u.publish, version, out, sizeof out, &len);
        break;
    case MQR_MQTT_PUBACK:
    case MQR_MQTT_PUBREC:
    case MQR_MQTT_PUBREL:
    case MQR_MQTT_PUBCOMP:
        rc = mqr__mqtt_encode_ack(&p->u.ack, version, out, sizeof out, &len);
        break;
    case MQR_MQTT_SUBSCRIBE:
        mqr__mqtt_sub_iter(&it, &p->u.subscribe, version);
        while (k < 16 && mqr__mqtt_sub_next(&it, &ents[k]))
            k++;
        assert_int_equal(k, p->u.subscribe.count);
        rc = mqr__mqtt_encode_subscribe(&p->u.subscribe, ents, k, version, out, sizeof out, &len);
        break;
    case MQR_MQTT_SUBACK:
        rc = mqr__mqtt_encode_suback(&p->u.suback, version, out, sizeof out, &len);
        break;
    case MQR_MQTT_UNSUBSCRIBE:
        mqr__mqtt_unsub_iter(&it, &p->u.unsubscribe, version);
        while (k < 16 && mqr__mqtt_unsub_next(&it, &filters[k]))
            k++;
        assert_int_equal(k, p->u.unsubscribe.count);
        rc = mqr__mqtt_encode_unsubscribe(&p->u.unsubscribe, filters, k, version, out, sizeof out,
                                          &len);
        break;
    case MQR_MQTT_UNSUBACK:
        rc = mqr__mqtt_encode_unsuback(&p->u.unsuback, version, out, sizeof out, &len);
        break;
    case MQR_MQTT_PINGREQ:
    case MQR_MQTT_PINGRESP:
        rc = mqr__mqtt_encode_ping(p->type, out, sizeof out, &len);
        break;
    case MQR_MQTT_DISCONNECT:
        rc = mqr__mqtt_encode_disconnect(&p->u.disconnect, version, out, sizeof out, &len);
        break;
    case MQR_MQTT_AUTH:
        rc = mqr__mqtt_encode_auth(&p->u.auth, version, out, sizeof out, &len);
        break;
    }
    assert_int_equal(rc, 0);
    assert_int_equal(len, n);
    assert_memory_equal(out, want, n);
}

/* encoded -> sample table, exact-copy decode, byte-identical re-encode */
static void roundtrip(const char *name, int version, mqr_mqtt_dir_t dir, bool strict,
                      const uint8_t *b, size_t n)
{
    add_sample(name, version, dir, strict, b, n);
    decode_ok(version, dir, b, n);
    reencode_same(version, b, n);
}

static size_t finish(mqr_mqtt_pbuild_t *b)
{
    size_t n;
    assert_int_equal(mqr__mqtt_pb_finish(b, &n), 0);
    return n;
}

static int teardown_all(void **state)
{
    (void)state;
    free(g_buf);
    g_buf = NULL;
    return 0;
}

/* ---- varints and framing --------------------------------------------------- */

static void test_varint(void **state)
{
    (void)state;
    static const uint32_t vals[] = {0, 1, 127, 128, 16383, 16384, 2097151, 2097152, 268435455};
    static const size_t sizes[] = {1, 1, 1, 2, 2, 3, 3, 4, 4};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        uint8_t b[4];
        size_t n = mqr__mqtt_varint_write(b, vals[i]);
        assert_int_equal(n, sizes[i]);
        assert_int_equal(mqr__mqtt_varint_size(vals[i]), sizes[i]);
        uint32_t v;
        size_t used;
        assert_int_equal(mqr__mqtt_varint_read(b, n, &v, &used), 0);
        assert_int_equal(v, vals[i]);
        assert_int_equal(used, n);
        if (n > 1) assert_int_equal(mqr__mqtt_varint_read(b, n - 1, &v, &used), MQR_EINCOMPLETE);
    }
    /* the spec's examples: 321 = C1 02 */
    uint8_t b[4];
    assert_int_equal(mqr__mqtt_varint_write(b, 321), 2);
    assert_int_equal(b[0], 0xC1);
    assert_int_equal(b[1], 0x02);
    uint32_t v;
    size_t used;
    const uint8_t five[] = {0xFF, 0xFF, 0xFF, 0xFF, 0x01};
    assert_int_equal(mqr__mqtt_varint_read(five, 5, &v, &used), MQR_EMALFORMED);
    /* known to be bad from four bytes on */
    assert_int_equal(mqr__mqtt_varint_read(five, 4, &v, &used), MQR_EMALFORMED);
}

static void test_frame(void **state)
{
    (void)state;
    mqr_mqtt_frame_t f;
    /* PUBLISH QoS 1, topic "a", id 1, payload "xyz": 2+1+2+3 = 8 */
    const uint8_t pkt[] = {0x32, 0x08, 0x00, 0x01, 'a', 0x00, 0x01, 'x', 'y', 'z', 0xC0, 0x00};
    for (size_t k = 0; k < 10; k++) {
        const uint8_t *p = exact(pkt, k);
        assert_int_equal(mqr__mqtt_frame(p, k, 0, 5, &f), MQR_EINCOMPLETE);
    }
    /* a following packet's bytes do not matter */
    const uint8_t *p = exact(pkt, sizeof pkt);
    assert_int_equal(mqr__mqtt_frame(p, sizeof pkt, 0, 4, &f), 0);
    assert_int_equal(f.type, MQR_MQTT_PUBLISH);
    assert_int_equal(f.flags, 0x2);
    assert_int_equal(f.hdr_len, 2);
    assert_int_equal(f.remaining, 8);
    assert_int_equal(f.total, 10);

    /* 5-byte Remaining Length: malformed as soon as the 4th byte is seen */
    const uint8_t bad[] = {0x30, 0x80, 0x80, 0x80, 0x80, 0x01};
    p = exact(bad, sizeof bad);
    assert_int_equal(mqr__mqtt_frame(p, sizeof bad, 0, 4, &f), MQR_EMALFORMED);
    p = exact(bad, 5);
    assert_int_equal(mqr__mqtt_frame(p, 5, 0, 4, &f), MQR_EMALFORMED);
    p = exact(bad, 4);
    assert_int_equal(mqr__mqtt_frame(p, 4, 0, 4, &f), MQR_EINCOMPLETE);

    /* too large: known from the header alone, before the body arrives */
    const uint8_t big[] = {0x30, 0xFF, 0x7F}; /* rl 16383 */
    p = exact(big, sizeof big);
    assert_int_equal(mqr__mqtt_frame(p, sizeof big, 1000, 4, &f), MQR_ETOOLARGE);
    assert_int_equal(mqr__mqtt_frame(p, sizeof big, 16386, 4, &f), MQR_EINCOMPLETE);
    assert_int_equal(mqr__mqtt_frame(p, sizeof big, 16385, 4, &f), MQR_ETOOLARGE);
    const uint8_t max[] = {0x30, 0xFF, 0xFF, 0xFF, 0x7F};
    p = exact(max, sizeof max);
    assert_int_equal(mqr__mqtt_frame(p, sizeof max, 0, 4, &f), MQR_EINCOMPLETE);

    /* non-minimal Remaining Length (0 as 80 00): 5.0 refuses, 3.1.1 accepts */
    const uint8_t nonmin[] = {0xC0, 0x80, 0x00};
    p = exact(nonmin, sizeof nonmin);
    assert_int_equal(mqr__mqtt_frame(p, sizeof nonmin, 0, 5, &f), MQR_EMALFORMED);
    assert_int_equal(mqr__mqtt_frame(p, sizeof nonmin, 0, 4, &f), 0);
    assert_int_equal(f.total, 3);
    assert_int_equal(mqr__mqtt_frame(p, sizeof nonmin, 0, 0, &f), 0);
    assert_int_equal(mqr__mqtt_decode_ping(p, 3, V4), 0);
    assert_int_equal(mqr__mqtt_decode_ping(p, 3, V5), MQR_EMALFORMED);
    assert_int_equal(dec_raw(V5, FC, nonmin, 3), MQR_EMALFORMED);
    assert_int_equal(dec_raw(V4, FC, nonmin, 3), 0);
}

/* ---- properties ------------------------------------------------------------ */

/* One value of every property, in a table so builder, iterator and
 * validator are checked against the same facts. */
static const mqr_mqtt_prop_t all_props[] = {
    {.id = 0x01, .type = MQR_MQTT_PT_BYTE, .num = 1},
    {.id = 0x02, .type = MQR_MQTT_PT_U32, .num = 0xDEADBEEF},
    {.id = 0x03, .type = MQR_MQTT_PT_STRING, .len = 4, .data = (const uint8_t *)"text"},
    {.id = 0x08, .type = MQR_MQTT_PT_STRING, .len = 5, .data = (const uint8_t *)"reply"},
    {.id = 0x09, .type = MQR_MQTT_PT_BINARY, .len = 3, .data = (const uint8_t *)"\x00\xFF\x01"},
    {.id = 0x0B, .type = MQR_MQTT_PT_VARINT, .num = 268435455},
    {.id = 0x11, .type = MQR_MQTT_PT_U32, .num = 4294967295u},
    {.id = 0x12, .type = MQR_MQTT_PT_STRING, .len = 3, .data = (const uint8_t *)"cid"},
    {.id = 0x13, .type = MQR_MQTT_PT_U16, .num = 65535},
    {.id = 0x15, .type = MQR_MQTT_PT_STRING, .len = 5, .data = (const uint8_t *)"PLAIN"},
    {.id = 0x16, .type = MQR_MQTT_PT_BINARY, .len = 0, .data = (const uint8_t *)""},
    {.id = 0x17, .type = MQR_MQTT_PT_BYTE, .num = 0},
    {.id = 0x18, .type = MQR_MQTT_PT_U32, .num = 30},
    {.id = 0x19, .type = MQR_MQTT_PT_BYTE, .num = 1},
    {.id = 0x1A, .type = MQR_MQTT_PT_STRING, .len = 4, .data = (const uint8_t *)"resp"},
    {.id = 0x1C, .type = MQR_MQTT_PT_STRING, .len = 6, .data = (const uint8_t *)"host:1"},
    {.id = 0x1F, .type = MQR_MQTT_PT_STRING, .len = 6, .data = (const uint8_t *)"because"},
    {.id = 0x21, .type = MQR_MQTT_PT_U16, .num = 1},
    {.id = 0x22, .type = MQR_MQTT_PT_U16, .num = 300},
    {.id = 0x23, .type = MQR_MQTT_PT_U16, .num = 7},
    {.id = 0x24, .type = MQR_MQTT_PT_BYTE, .num = 1},
    {.id = 0x25, .type = MQR_MQTT_PT_BYTE, .num = 0},
    {.id = 0x26,
     .type = MQR_MQTT_PT_PAIR,
     .len = 4,
     .data = (const uint8_t *)"name",
     .value_len = 5,
     .value = (const uint8_t *)"value"},
    {.id = 0x27, .type = MQR_MQTT_PT_U32, .num = 128},
    {.id = 0x28, .type = MQR_MQTT_PT_BYTE, .num = 0},
    {.id = 0x29, .type = MQR_MQTT_PT_BYTE, .num = 1},
    {.id = 0x2A, .type = MQR_MQTT_PT_BYTE, .num = 0},
};
#define N_ALL_PROPS (sizeof all_props / sizeof all_props[0])

static void test_props_all_types(void **state)
{
    (void)state;
    uint8_t buf[512];
    mqr_mqtt_pbuild_t b;
    mqr__mqtt_pb_init(&b, NULL, 0);
    for (size_t i = 0; i < N_ALL_PROPS; i++)
        mqr__mqtt_pb_add(&b, &all_props[i]);
    size_t need;
    assert_int_equal(mqr__mqtt_pb_finish(&b, &need), MQR_ETOOLARGE);
    mqr__mqtt_pb_init(&b, buf, need);
    for (size_t i = 0; i < N_ALL_PROPS; i++)
        mqr__mqtt_pb_add(&b, &all_props[i]);
    size_t n = finish(&b);
    assert_int_equal(n, need);

    const uint8_t *props = exact(buf, n);
    mqr_mqtt_prop_iter_t it;
    mqr__mqtt_props_iter(&it, props, n);
    mqr_mqtt_prop_t p;
    size_t i = 0;
    while (mqr__mqtt_props_next(&it, &p) == 1) {
        const mqr_mqtt_prop_t *w = &all_props[i++];
        assert_int_equal(p.id, w->id);
        assert_int_equal(p.type, w->type);
        assert_int_equal(p.num, w->num);
        assert_int_equal(p.len, w->len);
        if (w->len) assert_memory_equal(p.data, w->data, w->len);
        assert_int_equal(p.value_len, w->value_len);
        if (w->value_len) assert_memory_equal(p.value, w->value, w->value_len);
    }
    assert_int_equal(i, N_ALL_PROPS);
    assert_int_equal(mqr__mqtt_props_next(&it, &p), 0);

    /* each one alone is valid where the spec allows it, malformed elsewhere */
    static const struct {
        uint8_t id;
        uint32_t where;
    } allowed[] = {
        {0x01, 1u << 3 | 1u << 16},
        {0x02, 1u << 3 | 1u << 16},
        {0x03, 1u << 3 | 1u << 16},
        {0x08, 1u << 3 | 1u << 16},
        {0x09, 1u << 3 | 1u << 16},
        {0x0B, 1u << 3 | 1u << 8},
        {0x11, 1u << 1 | 1u << 2 | 1u << 14},
        {0x12, 1u << 2},
        {0x13, 1u << 2},
        {0x15, 1u << 1 | 1u << 2 | 1u << 15},
        {0x16, 0}, /* needs a method alongside: checked below */
        {0x17, 1u << 1},
        {0x18, 1u << 16},
        {0x19, 1u << 1},
        {0x1A, 1u << 2},
        {0x1C, 1u << 2 | 1u << 14},
        {0x1F, 0xFFFFu & ~(1u << 1 | 1u << 3 | 1u << 8 | 1u << 10 | 1u << 12 | 1u << 13 | 1u)},
        {0x21, 1u << 1 | 1u << 2},
        {0x22, 1u << 1 | 1u << 2},
        {0x23, 1u << 3},
        {0x24, 1u << 2},
        {0x25, 1u << 2},
        {0x26, 0x1FFFEu},
        {0x27, 1u << 1 | 1u << 2},
        {0x28, 1u << 2},
        {0x29, 1u << 2},
        {0x2A, 1u << 2},
    };
    for (size_t k = 0; k < N_ALL_PROPS; k++) {
        assert_int_equal(allowed[k].id, all_props[k].id);
        uint8_t one[64];
        mqr__mqtt_pb_init(&b, one, sizeof one);
        mqr__mqtt_pb_add(&b, &all_props[k]);
        size_t on = finish(&b);
        /* from a server, but Session Expiry may not come from one in DISCONNECT */
        mqr_mqtt_dir_t dir = all_props[k].id == MQR_MQTT_PROP_SESSION_EXPIRY ? FC : FS;
        for (int ctx = 1; ctx <= MQR_MQTT_CTX_WILL; ctx++) {
            int rc = mqr__mqtt_props_validate(one, on, ctx, dir);
            bool ok = (allowed[k].where >> ctx) & 1;
            if (ok != (rc == 0)) fail_msg("prop 0x%02x ctx %d: rc %d", allowed[k].id, ctx, rc);
            if (!ok && all_props[k].id != 0x16) assert_int_equal(rc, MQR_EMALFORMED);
        }
    }
}

static void test_props_builder_errors(void **state)
{
    (void)state;
    uint8_t buf[8];
    mqr_mqtt_pbuild_t b;
    size_t n;
    mqr__mqtt_pb_init(&b, buf, sizeof buf);
    mqr__mqtt_pb_u16(&b, MQR_MQTT_PROP_MESSAGE_EXPIRY, 1); /* is a u32 */
    assert_int_equal(mqr__mqtt_pb_finish(&b, &n), MQR_EINVAL);
    mqr__mqtt_pb_init(&b, buf, sizeof buf);
    mqr__mqtt_pb_byte(&b, 0x04, 1); /* no such property */
    assert_int_equal(mqr__mqtt_pb_finish(&b, &n), MQR_EINVAL);
    mqr__mqtt_pb_init(&b, buf, sizeof buf);
    mqr__mqtt_pb_varint(&b, MQR_MQTT_PROP_SUBSCRIPTION_ID, 268435456);
    assert_int_equal(mqr__mqtt_pb_finish(&b, &n), MQR_EINVAL);
    mqr__mqtt_pb_init(&b, buf, sizeof buf);
    mqr__mqtt_pb_u32(&b, MQR_MQTT_PROP_MESSAGE_EXPIRY, 1); /* 5 bytes */
    mqr__mqtt_pb_u32(&b, MQR_MQTT_PROP_SESSION_EXPIRY, 1); /* 10 > 8 */
    mqr__mqtt_pb_byte(&b, MQR_MQTT_PROP_MAX_QOS, 1);
    assert_int_equal(mqr__mqtt_pb_finish(&b, &n), MQR_ETOOLARGE);
    assert_int_equal(n, 12); /* what it would have needed */
}

/* Raw property bytes checked in a context; the helper keeps tests short. */
static int pv(int ctx, mqr_mqtt_dir_t dir, const uint8_t *p, size_t n)
{
    const uint8_t *c = exact(p, n);
    return mqr__mqtt_props_validate(c, n, ctx, dir);
}

static void test_props_rejects(void **state)
{
    (void)state;
    const int PUB = MQR_MQTT_PUBLISH, CON = MQR_MQTT_CONNECT, ACK = MQR_MQTT_CONNACK;
    /* unknown identifiers, including a multi-byte (varint) one */
    assert_int_equal(pv(PUB, FC, B(0x00, 0x01)), MQR_EMALFORMED);
    assert_int_equal(pv(PUB, FC, B(0x04, 0x01)), MQR_EMALFORMED);
    assert_int_equal(pv(PUB, FC, B(0x7F, 0x01)), MQR_EMALFORMED);
    assert_int_equal(pv(PUB, FC, B(0x81, 0x00, 0x01)), MQR_EMALFORMED); /* 0x01 non-minimal */
    /* misplaced */
    assert_int_equal(pv(CON, FC, B(0x23, 0x00, 0x01)), MQR_EMALFORMED); /* Topic Alias */
    assert_int_equal(pv(PUB, FC, B(0x11, 0, 0, 0, 1)), MQR_EMALFORMED); /* Session Expiry */
    assert_int_equal(pv(MQR_MQTT_CTX_WILL, FC, B(0x23, 0x00, 0x01)), MQR_EMALFORMED);
    assert_int_equal(pv(MQR_MQTT_PUBACK, FC, B(0x26, 0, 1, 'k', 0, 0, 0x03, 0, 0)), MQR_EMALFORMED);
    /* duplicates: protocol error, except User Property */
    assert_int_equal(pv(PUB, FC, B(0x01, 0, 0x01, 1)), MQR_EPROTOCOL);
    assert_int_equal(pv(PUB, FC, B(0x26, 0, 1, 'a', 0, 0, 0x26, 0, 1, 'a', 0, 0)), 0);
    /* Subscription Identifier: never from a client in PUBLISH, may repeat
     * from a server, once in SUBSCRIBE, never 0, minimal varint */
    assert_int_equal(pv(PUB, FC, B(0x0B, 0x01)), MQR_EPROTOCOL);
    assert_int_equal(pv(PUB, FS, B(0x0B, 0x01, 0x0B, 0x02)), 0);
    assert_int_equal(pv(MQR_MQTT_SUBSCRIBE, FC, B(0x0B, 0x01, 0x0B, 0x02)), MQR_EPROTOCOL);
    assert_int_equal(pv(MQR_MQTT_SUBSCRIBE, FC, B(0x0B, 0x00)), MQR_EPROTOCOL);
    assert_int_equal(pv(MQR_MQTT_SUBSCRIBE, FC, B(0x0B, 0x81, 0x00)), MQR_EMALFORMED);
    assert_int_equal(pv(MQR_MQTT_SUBSCRIBE, FC, B(0x0B, 0x80, 0x80, 0x80, 0x80, 0x01)),
                     MQR_EMALFORMED);
    /* values the spec calls protocol errors */
    assert_int_equal(pv(CON, FC, B(0x21, 0, 0)), MQR_EPROTOCOL);       /* Receive Maximum 0 */
    assert_int_equal(pv(CON, FC, B(0x27, 0, 0, 0, 0)), MQR_EPROTOCOL); /* Max Packet Size 0 */
    assert_int_equal(pv(CON, FC, B(0x17, 2)), MQR_EPROTOCOL);
    assert_int_equal(pv(CON, FC, B(0x19, 2)), MQR_EPROTOCOL);
    assert_int_equal(pv(PUB, FC, B(0x23, 0, 0)), MQR_EPROTOCOL); /* Topic Alias 0 */
    assert_int_equal(pv(PUB, FC, B(0x01, 2)), MQR_EPROTOCOL);
    assert_int_equal(pv(ACK, FS, B(0x24, 2)), MQR_EPROTOCOL); /* Maximum QoS 2 */
    assert_int_equal(pv(ACK, FS, B(0x25, 2)), MQR_EPROTOCOL);
    assert_int_equal(pv(PUB, FC, B(0x08, 0, 3, 'a', '/', '#')), MQR_EPROTOCOL);
    assert_int_equal(pv(PUB, FC, B(0x08, 0, 0)), MQR_EPROTOCOL);
    assert_int_equal(pv(CON, FC, B(0x16, 0, 1, 'x')), MQR_EPROTOCOL); /* data, no method */
    assert_int_equal(pv(CON, FC, B(0x15, 0, 1, 'm', 0x16, 0, 1, 'x')), 0);
    assert_int_equal(pv(MQR_MQTT_DISCONNECT, FS, B(0x11, 0, 0, 0, 1)), MQR_EPROTOCOL);
    assert_int_equal(pv(MQR_MQTT_DISCONNECT, FC, B(0x11, 0, 0, 0, 1)), 0);
    /* strings: bad UTF-8, NUL, in single strings and in either half of a pair */
    assert_int_equal(pv(PUB, FC, B(0x03, 0, 2, 0xC0, 0x80)), MQR_EUTF8);
    assert_int_equal(pv(PUB, FC, B(0x03, 0, 1, 0x00)), MQR_EUTF8);
    assert_int_equal(pv(PUB, FC, B(0x08, 0, 1, 0xFF)), MQR_EUTF8);
    assert_int_equal(pv(PUB, FC, B(0x26, 0, 1, 0x00, 0, 0)), MQR_EUTF8);
    assert_int_equal(pv(PUB, FC, B(0x26, 0, 0, 0, 2, 0xED, 0xA0)), MQR_EUTF8);
    /* binary may hold anything */
    assert_int_equal(pv(PUB, FC, B(0x09, 0, 2, 0x00, 0xFF)), 0);

    /* truncation at every byte of a property list holding every type */
    const uint8_t full[] = {0x01, 1,   0x02, 0, 0, 0,    9,    0x23, 0, 5,   0x03, 0, 2,
                            'a',  'b', 0x09, 0, 1, 0xAA, 0x26, 0,    1, 'k', 0,    1, 'v'};
    assert_int_equal(pv(PUB, FC, full, sizeof full), 0);
    static const size_t boundaries[] = {0, 2, 7, 10, 15, 19};
    for (size_t k = 0; k < sizeof full; k++) {
        int rc = pv(PUB, FC, full, k);
        bool at_boundary = false;
        for (size_t j = 0; j < sizeof boundaries / sizeof boundaries[0]; j++)
            at_boundary |= boundaries[j] == k;
        if (at_boundary)
            assert_int_equal(rc, 0);
        else
            assert_int_equal(rc, MQR_EMALFORMED);
    }
    /* the iterator stops for good after an error */
    mqr_mqtt_prop_iter_t it;
    mqr_mqtt_prop_t p;
    const uint8_t *c = exact(full, 5);
    mqr__mqtt_props_iter(&it, c, 5);
    assert_int_equal(mqr__mqtt_props_next(&it, &p), 1);
    assert_int_equal(mqr__mqtt_props_next(&it, &p), MQR_EMALFORMED);
    assert_int_equal(mqr__mqtt_props_next(&it, &p), 0);
    mqr__mqtt_props_iter(&it, NULL, 0);
    assert_int_equal(mqr__mqtt_props_next(&it, &p), 0);
}

static void test_props_strip(void **state)
{
    (void)state;
    uint8_t buf[128];
    mqr_mqtt_pbuild_t b;
    mqr__mqtt_pb_init(&b, buf, sizeof buf);
    mqr__mqtt_pb_u16(&b, MQR_MQTT_PROP_TOPIC_ALIAS, 3);
    mqr__mqtt_pb_user(&b, "a", 1, "1", 1);
    mqr__mqtt_pb_varint(&b, MQR_MQTT_PROP_SUBSCRIPTION_ID, 200);
    mqr__mqtt_pb_u32(&b, MQR_MQTT_PROP_WILL_DELAY, 5);
    mqr__mqtt_pb_string(&b, MQR_MQTT_PROP_CONTENT_TYPE, "t", 1);
    size_t n = finish(&b);
    uint8_t want[64];
    mqr__mqtt_pb_init(&b, want, sizeof want);
    mqr__mqtt_pb_user(&b, "a", 1, "1", 1);
    mqr__mqtt_pb_string(&b, MQR_MQTT_PROP_CONTENT_TYPE, "t", 1);
    size_t wn = finish(&b);
    uint8_t out[128];
    assert_int_equal(mqr__mqtt_props_strip(buf, n, out), wn);
    assert_memory_equal(out, want, wn);
    /* in place */
    assert_int_equal(mqr__mqtt_props_strip(buf, n, buf), wn);
    assert_memory_equal(buf, want, wn);
    /* nothing to strip: unchanged */
    assert_int_equal(mqr__mqtt_props_strip(want, wn, out), wn);
    assert_memory_equal(out, want, wn);
}

/* ---- round trips ------------------------------------------------------------ */

static void test_rt_connect(void **state)
{
    (void)state;
    uint8_t out[1024];
    size_t n;
    /* 3.1.1 with will, username and password */
    mqr_mqtt_connect_t c = {.version = V4,
                            .clean_start = true,
                            .keep_alive = 60,
                            .client_id = {"dev-1", 5},
                            .has_will = true,
                            .will_qos = 2,
                            .will_retain = true,
                            .will_topic = {"dev/1/status", 12},
                            .will_payload = {(const uint8_t *)"off\0line", 8},
                            .has_username = true,
                            .username = {"user", 4},
                            .has_password = true,
                            .password = {(const uint8_t *)"\x00pw", 3}};
    ENCODE(out, n, mqr__mqtt_encode_connect, &c);
    assert_int_equal(out[0], 0x10);
    assert_memory_equal(out + 2, "\x00\x04MQTT\x04", 7);
    assert_int_equal(out[9], 0x02 | 0x04 | 0x10 | 0x20 | 0x40 | 0x80);
    roundtrip("connect v4 full", V4, FC, true, out, n);
    mqr_mqtt_connect_t *d = &g_pk.u.connect;
    assert_int_equal(g_pk.type, MQR_MQTT_CONNECT);
    assert_int_equal(d->version, V4);
    assert_int_equal(d->protocol_level, 4);
    assert_true(d->clean_start);
    assert_int_equal(d->keep_alive, 60);
    ASSERT_STR(d->client_id, "dev-1");
    assert_true(d->has_will);
    assert_int_equal(d->will_qos, 2);
    assert_true(d->will_retain);
    ASSERT_STR(d->will_topic, "dev/1/status");
    assert_int_equal(d->will_payload.len, 8);
    assert_memory_equal(d->will_payload.p, "off\0line", 8);
    assert_true(d->has_username && d->has_password);
    ASSERT_STR(d->username, "user");
    assert_int_equal(d->password.len, 3);
    assert_int_equal(d->receive_max, 65535);
    assert_int_equal(d->request_problem_info, 1);
    assert_null(d->props.p);

    /* 3.1.1 minimal: empty client id with clean session is fine */
    mqr_mqtt_connect_t m = {.version = V4, .clean_start = true};
    ENCODE(out, n, mqr__mqtt_encode_connect, &m);
    assert_int_equal(n, 14);
    roundtrip("connect v4 min", V4, FC, true, out, n);
    assert_int_equal(g_pk.u.connect.client_id.len, 0);
    assert_false(g_pk.u.connect.has_will);

    /* 5.0 with every CONNECT property and every will property */
    uint8_t props[256], wprops[256];
    mqr_mqtt_pbuild_t b;
    mqr__mqtt_pb_init(&b, props, sizeof props);
    mqr__mqtt_pb_u32(&b, MQR_MQTT_PROP_SESSION_EXPIRY, 3600);
    mqr__mqtt_pb_u16(&b, MQR_MQTT_PROP_RECEIVE_MAX, 20);
    mqr__mqtt_pb_u32(&b, MQR_MQTT_PROP_MAX_PACKET_SIZE, 65536);
    mqr__mqtt_pb_u16(&b, MQR_MQTT_PROP_TOPIC_ALIAS_MAX, 10);
    mqr__mqtt_pb_byte(&b, MQR_MQTT_PROP_REQUEST_RESPONSE_INFO, 1);
    mqr__mqtt_pb_byte(&b, MQR_MQTT_PROP_REQUEST_PROBLEM_INFO, 0);
    mqr__mqtt_pb_string(&b, MQR_MQTT_PROP_AUTH_METHOD, "SCRAM-SHA-1", 11);
    mqr__mqtt_pb_binary(&b, MQR_MQTT_PROP_AUTH_DATA, "\x01\x00\x02", 3);
    mqr__mqtt_pb_user(&b, "k", 1, "v1", 2);
    mqr__mqtt_pb_user(&b, "k", 1, "v2", 2);
    size_t pn = finish(&b);
    mqr__mqtt_pb_init(&b, wprops, sizeof wprops);
    mqr__mqtt_pb_u32(&b, MQR_MQTT_PROP_WILL_DELAY, 30);
    mqr__mqtt_pb_byte(&b, MQR_MQTT_PROP_PAYLOAD_FORMAT, 1);
    mqr__mqtt_pb_u32(&b, MQR_MQTT_PROP_MESSAGE_EXPIRY, 120);
    mqr__mqtt_pb_string(&b, MQR_MQTT_PROP_CONTENT_TYPE, "text/plain", 10);
    mqr__mqtt_pb_string(&b, MQR_MQTT_PROP_RESPONSE_TOPIC, "r/1", 3);
    mqr__mqtt_pb_binary(&b, MQR_MQTT_PROP_CORRELATION_DATA, "id", 2);
    mqr__mqtt_pb_user(&b, "w", 1, "x", 1);
    size_t wn = finish(&b);
    mqr_mqtt_connect_t c5 = {.version = V5,
                             .keep_alive = 30,
                             .props = {props, (uint32_t)pn},
                             .client_id = {"", 0},
                             .has_will = true,
                             .will_qos = 1,
                             .will_props = {wprops, (uint32_t)wn},
                             .will_topic = {"w/t", 3},
                             .will_payload = {(const uint8_t *)"bye", 3},
                             .has_password = true, /* allowed without username in 5.0 */
                             .password = {(const uint8_t *)"pw", 2}};
    ENCODE(out, n, mqr__mqtt_encode_connect, &c5);
    roundtrip("connect v5 full", V5, FC, true, out, n);
    d = &g_pk.u.connect;
    assert_int_equal(d->version, V5);
    assert_false(d->clean_start);
    assert_int_equal(d->session_expiry, 3600);
    assert_int_equal(d->receive_max, 20);
    assert_int_equal(d->max_packet_size, 65536);
    assert_int_equal(d->topic_alias_max, 10);
    assert_int_equal(d->request_response_info, 1);
    assert_int_equal(d->request_problem_info, 0);
    ASSERT_STR(d->auth_method, "SCRAM-SHA-1");
    assert_int_equal(d->auth_data.len, 3);
    assert_int_equal(d->props.len, pn);
    assert_memory_equal(d->props.p, props, pn);
    assert_int_equal(d->will_delay, 30);
    assert_true(d->will_has_expiry);
    assert_int_equal(d->will_expiry, 120);
    assert_int_equal(d->will_payload_format, 1);
    assert_int_equal(d->will_props.len, wn);
    assert_false(d->has_username);
    assert_true(d->has_password);
    assert_int_equal(d->client_id.len, 0);
    assert_non_null(d->client_id.p); /* present, empty */
    assert_null(d->username.p);

    /* will props stripped for the will message: no Will Delay Interval */
    uint8_t fwd[256];
    size_t fn = mqr__mqtt_props_strip(d->will_props.p, d->will_props.len, fwd);
    assert_int_equal(fn, wn - 5);
    assert_int_equal(mqr__mqtt_props_validate(fwd, fn, MQR_MQTT_PUBLISH, FC), 0);

    /* 5.0 minimal */
    mqr_mqtt_connect_t m5 = {.version = V5, .clean_start = true, .client_id = {"c", 1}};
    ENCODE(out, n, mqr__mqtt_encode_connect, &m5);
    roundtrip("connect v5 min", V5, FC, true, out, n);
    assert_int_equal(g_pk.u.connect.receive_max, 65535);
    assert_int_equal(g_pk.u.connect.max_packet_size, 0);
}

static void test_rt_connack(void **state)
{
    (void)state;
    uint8_t out[512];
    size_t n;
    mqr_mqtt_connack_t c = {.session_present = true};
    ENCODE(out, n, mqr__mqtt_encode_connack, &c, V4);
    assert_int_equal(n, 4);
    assert_memory_equal(out, "\x20\x02\x01\x00", 4);
    roundtrip("connack v4", V4, FS, true, out, n);
    assert_true(g_pk.u.connack.session_present);

    mqr_mqtt_connack_t r = {.reason = MQR_MQTT_V3_NOT_AUTHORIZED};
    ENCODE(out, n, mqr__mqtt_encode_connack, &r, V4);
    roundtrip("connack v4 refused", V4, FS, true, out, n);
    assert_int_equal(g_pk.u.connack.reason, 5);

    uint8_t props[256];
    mqr_mqtt_pbuild_t b;
    mqr__mqtt_pb_init(&b, props, sizeof props);
    mqr__mqtt_pb_u32(&b, MQR_MQTT_PROP_SESSION_EXPIRY, 0);
    mqr__mqtt_pb_u16(&b, MQR_MQTT_PROP_RECEIVE_MAX, 100);
    mqr__mqtt_pb_byte(&b, MQR_MQTT_PROP_MAX_QOS, 1);
    mqr__mqtt_pb_byte(&b, MQR_MQTT_PROP_RETAIN_AVAILABLE, 0);
    mqr__mqtt_pb_u32(&b, MQR_MQTT_PROP_MAX_PACKET_SIZE, 1024);
    mqr__mqtt_pb_string(&b, MQR_MQTT_PROP_ASSIGNED_CLIENT_ID, "auto-1", 6);
    mqr__mqtt_pb_u16(&b, MQR_MQTT_PROP_TOPIC_ALIAS_MAX, 16);
    mqr__mqtt_pb_string(&b, MQR_MQTT_PROP_REASON_STRING, "ok", 2);
    mqr__mqtt_pb_user(&b, "a", 1, "b", 1);
    mqr__mqtt_pb_byte(&b, MQR_MQTT_PROP_WILDCARD_SUB_AVAILABLE, 0);
    mqr__mqtt_pb_byte(&b, MQR_MQTT_PROP_SUB_ID_AVAILABLE, 0);
    mqr__mqtt_pb_byte(&b, MQR_MQTT_PROP_SHARED_SUB_AVAILABLE, 0);
    mqr__mqtt_pb_u16(&b, MQR_MQTT_PROP_SERVER_KEEP_ALIVE, 15);
    mqr__mqtt_pb_string(&b, MQR_MQTT_PROP_RESPONSE_INFO, "ri", 2);
    mqr__mqtt_pb_string(&b, MQR_MQTT_PROP_SERVER_REFERENCE, "srv", 3);
    mqr__mqtt_pb_string(&b, MQR_MQTT_PROP_AUTH_METHOD, "m", 1);
    mqr__mqtt_pb_binary(&b, MQR_MQTT_PROP_AUTH_DATA, "d", 1);
    size_t pn = finish(&b);
    mqr_mqtt_connack_t c5 = {.reason = 0, .props = {props, (uint32_t)pn}};
    ENCODE(out, n, mqr__mqtt_encode_connack, &c5, V5);
    roundtrip("connack v5 full", V5, FS, false, out, n);
    mqr_mqtt_connack_t *d = &g_pk.u.connack;
    assert_true(d->has_session_expiry);
    assert_int_equal(d->session_expiry, 0);
    assert_int_equal(d->receive_max, 100);
    assert_int_equal(d->max_qos, 1);
    assert_int_equal(d->retain_available, 0);
    assert_int_equal(d->max_packet_size, 1024);
    ASSERT_STR(d->assigned_client_id, "auto-1");
    assert_int_equal(d->topic_alias_max, 16);
    ASSERT_STR(d->reason_string, "ok");
    assert_int_equal(d->wildcard_sub_available, 0);
    assert_int_equal(d->sub_id_available, 0);
    assert_int_equal(d->shared_sub_available, 0);
    assert_true(d->has_server_keep_alive);
    assert_int_equal(d->server_keep_alive, 15);
    ASSERT_STR(d->response_info, "ri");
    ASSERT_STR(d->server_reference, "srv");
    ASSERT_STR(d->auth_method, "m");

    mqr_mqtt_connack_t e5 = {.reason = MQR_MQTT_RC_UNSUPPORTED_VERSION};
    ENCODE(out, n, mqr__mqtt_encode_connack, &e5, V5);
    assert_memory_equal(out, "\x20\x03\x00\x84\x00", 5);
    roundtrip("connack v5 refused", V5, FS, false, out, n);
    assert_int_equal(g_pk.u.connack.max_qos, 2);
    assert_int_equal(g_pk.u.connack.receive_max, 65535);

    /* a 5.0 client reading a 3.1.1 server's refusal */
    assert_int_equal(dec(V5, FS, 0x20, B(0x00, 0x01)), 0);
    assert_int_equal(g_pk.u.connack.reason, 1);
}

static void test_rt_publish(void **state)
{
    (void)state;
    uint8_t out[1024];
    size_t n;
    for (int qos = 0; qos <= 2; qos++) {
        mqr_mqtt_publish_t p = {.qos = (uint8_t)qos,
                                .dup = qos > 0,
                                .retain = qos == 1,
                                .packet_id = qos ? 0x1234 : 0,
                                .topic = {"sensors/t1", 10},
                                .payload = {(const uint8_t *)"21.5", 4}};
        ENCODE(out, n, mqr__mqtt_encode_publish, &p, V4);
        assert_int_equal(out[0], 0x30 | (qos ? 0x08 : 0) | qos << 1 | (qos == 1));
        char name[32];
        snprintf(name, sizeof name, "publish v4 qos%d", qos);
        roundtrip(name, V4, FC, false, out, n);
        mqr_mqtt_publish_t *d = &g_pk.u.publish;
        assert_int_equal(d->qos, qos);
        assert_int_equal(d->dup, qos > 0);
        assert_int_equal(d->retain, qos == 1);
        assert_int_equal(d->packet_id, qos ? 0x1234 : 0);
        ASSERT_STR(d->topic, "sensors/t1");
        ASSERT_STR(d->payload, "21.5");
        /* payload is the tail of the packet, not a copy */
        assert_ptr_equal(d->payload.p + d->payload.len, g_buf + g_len);
    }

    /* empty payload */
    mqr_mqtt_publish_t e = {.topic = {"a", 1}};
    ENCODE(out, n, mqr__mqtt_encode_publish, &e, V5);
    assert_memory_equal(out,
                        "\x30\x04\x00\x01"
                        "a\x00",
                        6);
    roundtrip("publish v5 empty", V5, FC, false, out, n);
    assert_int_equal(g_pk.u.publish.payload.len, 0);

    /* 5.0 from a client: every PUBLISH property */
    uint8_t props[256];
    mqr_mqtt_pbuild_t b;
    mqr__mqtt_pb_init(&b, props, sizeof props);
    mqr__mqtt_pb_byte(&b, MQR_MQTT_PROP_PAYLOAD_FORMAT, 1);
    mqr__mqtt_pb_u32(&b, MQR_MQTT_PROP_MESSAGE_EXPIRY, 600);
    mqr__mqtt_pb_u16(&b, MQR_MQTT_PROP_TOPIC_ALIAS, 4);
    mqr__mqtt_pb_string(&b, MQR_MQTT_PROP_RESPONSE_TOPIC, "resp/x", 6);
    mqr__mqtt_pb_binary(&b, MQR_MQTT_PROP_CORRELATION_DATA, "\x00\x01", 2);
    mqr__mqtt_pb_user(&b, "u", 1, "1", 1);
    mqr__mqtt_pb_string(&b, MQR_MQTT_PROP_CONTENT_TYPE, "application/json", 16);
    size_t pn = finish(&b);
    mqr_mqtt_publish_t p5 = {.qos = 1,
                             .packet_id = 7,
                             .topic = {"a/b", 3},
                             .props = {props, (uint32_t)pn},
                             .payload = {(const uint8_t *)"{}", 2}};
    ENCODE(out, n, mqr__mqtt_encode_publish, &p5, V5);
    roundtrip("publish v5 props", V5, FC, false, out, n);
    mqr_mqtt_publish_t *d = &g_pk.u.publish;
    assert_int_equal(d->topic_alias, 4);
    assert_true(d->has_expiry);
    assert_int_equal(d->expiry, 600);
    assert_int_equal(d->payload_format, 1);
    ASSERT_STR(d->response_topic, "resp/x");
    ASSERT_STR(d->content_type, "application/json");
    assert_int_equal(d->correlation_data.len, 2);
    assert_int_equal(d->sub_id_count, 0);
    assert_int_equal(d->props.len, pn);
    assert_int_equal(d->add_topic_alias, 0);
    assert_null(d->add_sub_ids);

    /* forward: strip the alias, add this hop's alias and subscription ids */
    uint8_t stored[256];
    size_t sn = mqr__mqtt_props_strip(d->props.p, d->props.len, stored);
    assert_int_equal(sn, pn - 3);
    static const uint32_t ids[] = {1, 300, 268435455};
    mqr_mqtt_publish_t f = {.qos = 2,
                            .packet_id = 9,
                            .topic = {"a/b", 3},
                            .props = {stored, (uint32_t)sn},
                            .payload = {(const uint8_t *)"{}", 2},
                            .add_topic_alias = 2,
                            .add_sub_ids = ids,
                            .n_add_sub_ids = 3};
    ENCODE(out, n, mqr__mqtt_encode_publish, &f, V5);
    size_t total, head;
    assert_int_equal(mqr__mqtt_publish_size(&f, V5, &total, &head), 0);
    assert_int_equal(total, n);
    assert_int_equal(head + 2, n);
    uint8_t hb[256];
    size_t hn;
    assert_int_equal(mqr__mqtt_encode_publish_head(&f, V5, hb, head - 1, &hn), MQR_ETOOLARGE);
    assert_int_equal(mqr__mqtt_encode_publish_head(&f, V5, hb, sizeof hb, &hn), 0);
    assert_int_equal(hn, head);
    assert_memory_equal(hb, out, head); /* head + payload iovec == whole packet */
    add_sample("publish v5 to client", V5, FS, false, out, n);
    decode_ok(V5, FS, out, n);
    d = &g_pk.u.publish;
    assert_int_equal(d->sub_id_count, 3);
    assert_int_equal(d->sub_id, 1);
    assert_int_equal(d->topic_alias, 2);
    ASSERT_STR(d->content_type, "application/json");
    /* the same packet from a client is a protocol error */
    assert_int_equal(dec_raw(V5, FC, out, n), MQR_EPROTOCOL);

    /* 5.0: empty topic with an alias */
    mqr_mqtt_publish_t a = {.topic = {"", 0}, .add_topic_alias = 4};
    ENCODE(out, n, mqr__mqtt_encode_publish, &a, V5);
    add_sample("publish v5 alias only", V5, FC, false, out, n);
    decode_ok(V5, FC, out, n);
    assert_int_equal(g_pk.u.publish.topic.len, 0);
    assert_int_equal(g_pk.u.publish.topic_alias, 4);

    /* encoder refusals */
    mqr_mqtt_publish_t bad = {.qos = 1, .topic = {"a", 1}};
    assert_int_equal(mqr__mqtt_encode_publish(&bad, V4, out, sizeof out, &n), MQR_EINVAL);
    bad.qos = 3;
    bad.packet_id = 1;
    assert_int_equal(mqr__mqtt_encode_publish(&bad, V4, out, sizeof out, &n), MQR_EINVAL);
    bad.qos = 0;
    assert_int_equal(mqr__mqtt_encode_publish(&bad, 3, out, sizeof out, &n), MQR_EINVAL);
    static const uint32_t zero_id[] = {0};
    mqr_mqtt_publish_t z = {.topic = {"a", 1}, .add_sub_ids = zero_id, .n_add_sub_ids = 1};
    assert_int_equal(mqr__mqtt_encode_publish(&z, V5, out, sizeof out, &n), MQR_EINVAL);
    /* 3.1.1 ignores the v5-only fields */
    assert_int_equal(mqr__mqtt_encode_publish(&z, V4, out, sizeof out, &n), 0);
    assert_int_equal(n, 5);
    mqr_mqtt_publish_t huge = {.topic = {"a", 1}, .payload = {(const uint8_t *)"", 268435453}};
    assert_int_equal(mqr__mqtt_publish_size(&huge, V4, &total, &head), MQR_EINVAL);
    huge.payload.len = 268435452;
    assert_int_equal(mqr__mqtt_publish_size(&huge, V4, &total, &head), 0);
    assert_int_equal(total, MQR_MQTT_MAX_PACKET);
    assert_int_equal(head, 8);
}

static void test_rt_acks(void **state)
{
    (void)state;
    uint8_t out[256];
    size_t n;
    uint8_t props[64];
    mqr_mqtt_pbuild_t b;
    mqr__mqtt_pb_init(&b, props, sizeof props);
    mqr__mqtt_pb_string(&b, MQR_MQTT_PROP_REASON_STRING, "nope", 4);
    mqr__mqtt_pb_user(&b, "k", 1, "v", 1);
    size_t pn = finish(&b);
    for (int t = MQR_MQTT_PUBACK; t <= MQR_MQTT_PUBCOMP; t++) {
        uint8_t flags = t == MQR_MQTT_PUBREL ? 0x2 : 0;
        uint8_t fail_rc = t <= MQR_MQTT_PUBREC ? 0x87 : 0x92;
        char name[40];
        mqr_mqtt_ack_t a = {.type = (uint8_t)t, .packet_id = 0xBEEF};
        ENCODE(out, n, mqr__mqtt_encode_ack, &a, V4);
        assert_int_equal(n, 4);
        assert_int_equal(out[0], t << 4 | flags);
        snprintf(name, sizeof name, "ack %d v4", t);
        roundtrip(name, V4, FC, true, out, n);
        assert_int_equal(g_pk.u.ack.type, t);
        assert_int_equal(g_pk.u.ack.packet_id, 0xBEEF);

        /* 5.0 short forms */
        ENCODE(out, n, mqr__mqtt_encode_ack, &a, V5);
        assert_int_equal(n, 4);
        snprintf(name, sizeof name, "ack %d v5 short", t);
        roundtrip(name, V5, FS, false, out, n);
        a.reason = fail_rc;
        ENCODE(out, n, mqr__mqtt_encode_ack, &a, V5);
        assert_int_equal(n, 5);
        snprintf(name, sizeof name, "ack %d v5 reason", t);
        roundtrip(name, V5, FS, false, out, n);
        assert_int_equal(g_pk.u.ack.reason, fail_rc);
        a.props.p = props;
        a.props.len = (uint32_t)pn;
        ENCODE(out, n, mqr__mqtt_encode_ack, &a, V5);
        snprintf(name, sizeof name, "ack %d v5 full", t);
        roundtrip(name, V5, FS, false, out, n);
        ASSERT_STR(g_pk.u.ack.reason_string, "nope");
        assert_int_equal(g_pk.u.ack.props.len, pn);
        /* reason 0 with a property length of 0 (Remaining Length 4) */
        assert_int_equal(dec(V5, FC, (uint8_t)(t << 4 | flags), B(0, 1, 0, 0)), 0);
        assert_int_equal(g_pk.u.ack.reason, 0);
        /* 3.1.1 has no reason byte */
        assert_int_equal(dec(V4, FC, (uint8_t)(t << 4 | flags), B(0, 1, 0)), MQR_EMALFORMED);
        /* a reason code this packet cannot carry */
        assert_int_equal(dec(V5, FC, (uint8_t)(t << 4 | flags), B(0, 1, 0x81)), MQR_EPROTOCOL);
        /* id 0, wrong flags */
        assert_int_equal(dec(V5, FC, (uint8_t)(t << 4 | flags), B(0, 0)), MQR_EPROTOCOL);
        assert_int_equal(dec(V4, FC, (uint8_t)(t << 4 | (flags ^ 0x2)), B(0, 1)), MQR_EMALFORMED);
    }
    mqr_mqtt_ack_t bad = {.type = MQR_MQTT_PUBACK};
    assert_int_equal(mqr__mqtt_encode_ack(&bad, V4, out, sizeof out, &n), MQR_EINVAL);
    bad.packet_id = 1;
    bad.type = MQR_MQTT_SUBACK;
    assert_int_equal(mqr__mqtt_encode_ack(&bad, V4, out, sizeof out, &n), MQR_EINVAL);
}

static void test_rt_subscribe(void **state)
{
    (void)state;
    uint8_t out[512];
    size_t n;
    mqr_mqtt_sub_entry_t ents[] = {
        {.filter = {"a/+/c", 5}, .qos = 1},
        {.filter = {"#", 1},
         .qos = 2,
         .no_local = true,
         .retain_as_published = true,
         .retain_handling = 2},
        {.filter = {"$share/g1/x/#", 13}, .qos = 0, .retain_handling = 1},
    };
    mqr_mqtt_subscribe_t s = {.packet_id = 10};
    ENCODE(out, n, mqr__mqtt_encode_subscribe, &s, ents, 3, V4);
    assert_int_equal(out[0], 0x82);
    roundtrip("subscribe v4", V4, FC, false, out, n);
    assert_int_equal(g_pk.u.subscribe.count, 3);
    mqr_mqtt_list_iter_t it;
    mqr_mqtt_sub_entry_t e;
    mqr__mqtt_sub_iter(&it, &g_pk.u.subscribe, V4);
    assert_true(mqr__mqtt_sub_next(&it, &e));
    ASSERT_STR(e.filter, "a/+/c");
    assert_int_equal(e.qos, 1);
    assert_true(mqr__mqtt_sub_next(&it, &e));
    assert_int_equal(e.qos, 2);
    assert_false(e.no_local); /* 3.1.1 has no such option */
    assert_int_equal(e.options, 2);
    assert_true(mqr__mqtt_sub_next(&it, &e));
    assert_false(e.shared); /* just a filter in 3.1.1 */
    assert_false(mqr__mqtt_sub_next(&it, &e));

    uint8_t props[32];
    mqr_mqtt_pbuild_t b;
    mqr__mqtt_pb_init(&b, props, sizeof props);
    mqr__mqtt_pb_varint(&b, MQR_MQTT_PROP_SUBSCRIPTION_ID, 16384);
    mqr__mqtt_pb_user(&b, "k", 1, "v", 1);
    size_t pn = finish(&b);
    s.props.p = props;
    s.props.len = (uint32_t)pn;
    ENCODE(out, n, mqr__mqtt_encode_subscribe, &s, ents, 3, V5);
    roundtrip("subscribe v5", V5, FC, false, out, n);
    assert_int_equal(g_pk.u.subscribe.sub_id, 16384);
    assert_int_equal(g_pk.u.subscribe.packet_id, 10);
    mqr__mqtt_sub_iter(&it, &g_pk.u.subscribe, V5);
    assert_true(mqr__mqtt_sub_next(&it, &e));
    assert_true(mqr__mqtt_sub_next(&it, &e));
    ASSERT_STR(e.filter, "#");
    assert_int_equal(e.options, 0x02 | 0x04 | 0x08 | 0x20);
    assert_true(e.no_local && e.retain_as_published);
    assert_int_equal(e.retain_handling, 2);
    assert_true(mqr__mqtt_sub_next(&it, &e));
    assert_true(e.shared);
    assert_int_equal(e.retain_handling, 1);
    assert_false(mqr__mqtt_sub_next(&it, &e));

    /* SUBACK */
    const uint8_t codes4[] = {0x00, 0x01, 0x02, 0x80};
    mqr_mqtt_suback_t sa = {.packet_id = 10, .codes = codes4, .count = 4};
    ENCODE(out, n, mqr__mqtt_encode_suback, &sa, V4);
    roundtrip("suback v4", V4, FS, false, out, n);
    assert_int_equal(g_pk.u.suback.count, 4);
    assert_memory_equal(g_pk.u.suback.codes, codes4, 4);
    const uint8_t codes5[] = {0x01, 0x8F, 0xA2};
    mqr__mqtt_pb_init(&b, props, sizeof props);
    mqr__mqtt_pb_string(&b, MQR_MQTT_PROP_REASON_STRING, "r", 1);
    pn = finish(&b);
    mqr_mqtt_suback_t sa5 = {
        .packet_id = 10, .props = {props, (uint32_t)pn}, .codes = codes5, .count = 3};
    ENCODE(out, n, mqr__mqtt_encode_suback, &sa5, V5);
    roundtrip("suback v5", V5, FS, false, out, n);
    ASSERT_STR(g_pk.u.suback.reason_string, "r");
    /* 5.0 codes are not 3.1.1 codes */
    assert_int_equal(dec(V4, FS, 0x90, B(0, 1, 0x8F)), MQR_EPROTOCOL);
    assert_int_equal(dec(V5, FS, 0x90, B(0, 1, 0, 0x03)), MQR_EPROTOCOL);
    assert_int_equal(dec(V4, FS, 0x90, B(0, 1)), MQR_EPROTOCOL); /* no codes */

    /* UNSUBSCRIBE / UNSUBACK */
    const mqr_mqtt_str_t filters[] = {{"a/+", 3}, {"$share/g/#", 10}};
    mqr_mqtt_unsubscribe_t u = {.packet_id = 11};
    ENCODE(out, n, mqr__mqtt_encode_unsubscribe, &u, filters, 2, V4);
    assert_int_equal(out[0], 0xA2);
    roundtrip("unsubscribe v4", V4, FC, false, out, n);
    assert_int_equal(g_pk.u.unsubscribe.count, 2);
    mqr__mqtt_pb_init(&b, props, sizeof props);
    mqr__mqtt_pb_user(&b, "k", 1, "v", 1);
    pn = finish(&b);
    u.props.p = props;
    u.props.len = (uint32_t)pn;
    ENCODE(out, n, mqr__mqtt_encode_unsubscribe, &u, filters, 2, V5);
    roundtrip("unsubscribe v5", V5, FC, false, out, n);
    mqr_mqtt_str_t f;
    mqr__mqtt_unsub_iter(&it, &g_pk.u.unsubscribe, V5);
    assert_true(mqr__mqtt_unsub_next(&it, &f));
    ASSERT_STR(f, "a/+");
    assert_true(mqr__mqtt_unsub_next(&it, &f));
    ASSERT_STR(f, "$share/g/#");
    assert_false(mqr__mqtt_unsub_next(&it, &f));

    mqr_mqtt_unsuback_t ua = {.packet_id = 11};
    ENCODE(out, n, mqr__mqtt_encode_unsuback, &ua, V4);
    assert_int_equal(n, 4);
    roundtrip("unsuback v4", V4, FS, true, out, n);
    const uint8_t ucodes[] = {0x00, 0x11};
    mqr_mqtt_unsuback_t ua5 = {.packet_id = 11, .codes = ucodes, .count = 2};
    ENCODE(out, n, mqr__mqtt_encode_unsuback, &ua5, V5);
    roundtrip("unsuback v5", V5, FS, false, out, n);
    assert_int_equal(g_pk.u.unsuback.count, 2);
    assert_int_equal(g_pk.u.unsuback.codes[1], 0x11);
    assert_int_equal(dec(V5, FS, 0xB0, B(0, 1, 0, 0x01)), MQR_EPROTOCOL);
    assert_int_equal(dec(V5, FS, 0xB0, B(0, 1, 0)), MQR_EPROTOCOL);

    /* encoder refusals: empty lists, QoS 3, Retain Handling 3 */
    assert_int_equal(mqr__mqtt_encode_subscribe(&s, ents, 0, V5, out, sizeof out, &n), MQR_EINVAL);
    mqr_mqtt_sub_entry_t q3 = {.filter = {"a", 1}, .qos = 3};
    assert_int_equal(mqr__mqtt_encode_subscribe(&s, &q3, 1, V5, out, sizeof out, &n), MQR_EINVAL);
    q3.qos = 0;
    q3.retain_handling = 3;
    assert_int_equal(mqr__mqtt_encode_subscribe(&s, &q3, 1, V5, out, sizeof out, &n), MQR_EINVAL);
    assert_int_equal(mqr__mqtt_encode_unsubscribe(&u, filters, 0, V5, out, sizeof out, &n),
                     MQR_EINVAL);
}

static void test_rt_small(void **state)
{
    (void)state;
    uint8_t out[256];
    size_t n;
    ENCODE(out, n, mqr__mqtt_encode_ping, MQR_MQTT_PINGREQ);
    assert_memory_equal(out, "\xC0\x00", 2);
    roundtrip("pingreq", V4, FC, true, out, n);
    roundtrip("pingreq v5", V5, FC, true, out, n);
    ENCODE(out, n, mqr__mqtt_encode_ping, MQR_MQTT_PINGRESP);
    assert_memory_equal(out, "\xD0\x00", 2);
    roundtrip("pingresp", V4, FS, true, out, n);
    assert_int_equal(mqr__mqtt_encode_ping(MQR_MQTT_PUBACK, out, sizeof out, &n), MQR_EINVAL);
    assert_int_equal(dec(V4, FC, 0xC0, B(0)), MQR_EMALFORMED);
    assert_int_equal(dec(V4, FC, 0xC1, NULL, 0), MQR_EMALFORMED);

    mqr_mqtt_disconnect_t d = {0};
    ENCODE(out, n, mqr__mqtt_encode_disconnect, &d, V4);
    assert_memory_equal(out, "\xE0\x00", 2);
    roundtrip("disconnect v4", V4, FC, true, out, n);
    ENCODE(out, n, mqr__mqtt_encode_disconnect, &d, V5);
    assert_int_equal(n, 2);
    roundtrip("disconnect v5 short", V5, FC, true, out, n);
    d.reason = MQR_MQTT_RC_DISCONNECT_WITH_WILL;
    ENCODE(out, n, mqr__mqtt_encode_disconnect, &d, V5);
    assert_memory_equal(out, "\xE0\x01\x04", 3);
    roundtrip("disconnect v5 reason", V5, FC, false, out, n);
    assert_int_equal(g_pk.u.disconnect.reason, 4);
    uint8_t props[64];
    mqr_mqtt_pbuild_t b;
    mqr__mqtt_pb_init(&b, props, sizeof props);
    mqr__mqtt_pb_u32(&b, MQR_MQTT_PROP_SESSION_EXPIRY, 10);
    mqr__mqtt_pb_string(&b, MQR_MQTT_PROP_REASON_STRING, "bye", 3);
    mqr__mqtt_pb_user(&b, "k", 1, "v", 1);
    d.props.p = props;
    d.props.len = (uint32_t)finish(&b);
    d.reason = 0;
    ENCODE(out, n, mqr__mqtt_encode_disconnect, &d, V5);
    roundtrip("disconnect v5 client", V5, FC, false, out, n);
    assert_true(g_pk.u.disconnect.has_session_expiry);
    assert_int_equal(g_pk.u.disconnect.session_expiry, 10);
    ASSERT_STR(g_pk.u.disconnect.reason_string, "bye");
    /* a server must not send Session Expiry Interval */
    assert_int_equal(dec_raw(V5, FS, out, n), MQR_EPROTOCOL);
    mqr__mqtt_pb_init(&b, props, sizeof props);
    mqr__mqtt_pb_string(&b, MQR_MQTT_PROP_SERVER_REFERENCE, "other:1883", 10);
    d.props.len = (uint32_t)finish(&b);
    d.reason = MQR_MQTT_RC_SERVER_MOVED;
    ENCODE(out, n, mqr__mqtt_encode_disconnect, &d, V5);
    roundtrip("disconnect v5 server", V5, FS, false, out, n);
    ASSERT_STR(g_pk.u.disconnect.server_reference, "other:1883");
    assert_int_equal(dec(V4, FC, 0xE0, B(0)), MQR_EMALFORMED);
    assert_int_equal(dec(V5, FC, 0xE0, B(0x05)), MQR_EPROTOCOL); /* not a DISCONNECT reason */
    assert_int_equal(dec(V5, FC, 0xE2, NULL, 0), MQR_EMALFORMED);

    mqr_mqtt_auth_t a = {0};
    ENCODE(out, n, mqr__mqtt_encode_auth, &a, V5);
    assert_memory_equal(out, "\xF0\x00", 2);
    roundtrip("auth v5 short", V5, FS, true, out, n);
    mqr__mqtt_pb_init(&b, props, sizeof props);
    mqr__mqtt_pb_string(&b, MQR_MQTT_PROP_AUTH_METHOD, "SCRAM-SHA-1", 11);
    mqr__mqtt_pb_binary(&b, MQR_MQTT_PROP_AUTH_DATA, "\x01\x02", 2);
    mqr__mqtt_pb_string(&b, MQR_MQTT_PROP_REASON_STRING, "more", 4);
    a.props.p = props;
    a.props.len = (uint32_t)finish(&b);
    a.reason = MQR_MQTT_RC_CONTINUE_AUTH;
    ENCODE(out, n, mqr__mqtt_encode_auth, &a, V5);
    roundtrip("auth v5 continue", V5, FC, false, out, n);
    ASSERT_STR(g_pk.u.auth.auth_method, "SCRAM-SHA-1");
    assert_int_equal(g_pk.u.auth.auth_data.len, 2);
    assert_int_equal(g_pk.u.auth.reason, 0x18);
    assert_int_equal(mqr__mqtt_encode_auth(&a, V4, out, sizeof out, &n), MQR_EINVAL);
    assert_int_equal(dec_raw(V4, FC, out, n), MQR_EMALFORMED);      /* reserved type in 3.1.1 */
    assert_int_equal(dec(V5, FC, 0xF0, B(0x18, 0)), MQR_EPROTOCOL); /* no method */
    assert_int_equal(dec(V5, FC, 0xF0, B(0x00)), MQR_EPROTOCOL);
    assert_int_equal(dec(V5, FC, 0xF0, B(0x00, 3, 0x15, 0, 0)), 0);
    assert_int_equal(dec(V5, FC, 0xF0, B(0x01, 0)), MQR_EPROTOCOL); /* bad reason */
}

/* ---- refusals ----------------------------------------------------------------- */

static void test_connect_rejects(void **state)
{
    (void)state;
    int ver;
    uint8_t code;
    mqr_mqtt_connect_t *c = &g_pk.u.connect;
#define CONNECT_HDR(level, flags) 0, 4, 'M', 'Q', 'T', 'T', level, flags, 0, 60
    /* baseline: valid */
    assert_int_equal(dec(V4, FC, 0x10, B(CONNECT_HDR(4, 0x02), 0, 1, 'c')), 0);
    assert_int_equal(dec(V4, FC, 0x10, B(CONNECT_HDR(5, 0x02), 0, 0, 1, 'c')), 0);
    /* fixed header flags */
    assert_int_equal(dec(V4, FC, 0x11, B(CONNECT_HDR(4, 0x02), 0, 1, 'c')), MQR_EMALFORMED);
    /* reserved connect flag */
    assert_int_equal(dec(V4, FC, 0x10, B(CONNECT_HDR(4, 0x03), 0, 1, 'c')), MQR_EMALFORMED);
    assert_int_equal(dec(V4, FC, 0x10, B(CONNECT_HDR(5, 0x03), 0, 0, 1, 'c')), MQR_EMALFORMED);
    assert_true(mqr__mqtt_connect_refusal(MQR_EMALFORMED, c, &ver, &code));
    assert_int_equal(ver, 5);
    assert_int_equal(code, 0x81);
    /* will QoS or retain without will; will QoS 3 */
    assert_int_equal(dec(V4, FC, 0x10, B(CONNECT_HDR(4, 0x0A), 0, 1, 'c')), MQR_EMALFORMED);
    assert_false(mqr__mqtt_connect_refusal(MQR_EMALFORMED, c, &ver, &code)); /* 3.1.1: close */
    assert_int_equal(dec(V4, FC, 0x10, B(CONNECT_HDR(4, 0x22), 0, 1, 'c')), MQR_EMALFORMED);
    assert_int_equal(dec(V4, FC, 0x10, B(CONNECT_HDR(4, 0x1E), 0, 1, 'c', 0, 1, 't', 0, 0)),
                     MQR_EMALFORMED);
    /* 3.1.1 password without username; fine in 5.0 */
    assert_int_equal(dec(V4, FC, 0x10, B(CONNECT_HDR(4, 0x42), 0, 1, 'c', 0, 1, 'p')),
                     MQR_EPROTOCOL);
    assert_int_equal(dec(V4, FC, 0x10, B(CONNECT_HDR(5, 0x42), 0, 0, 1, 'c', 0, 1, 'p')), 0);
    /* bad UTF-8 / NUL in client id and username; binary password may hold any byte */
    assert_int_equal(dec(V4, FC, 0x10, B(CONNECT_HDR(4, 0x02), 0, 2, 0xC0, 0xAF)), MQR_EUTF8);
    assert_int_equal(dec(V4, FC, 0x10, B(CONNECT_HDR(4, 0x02), 0, 2, 'a', 0x00)), MQR_EUTF8);
    assert_int_equal(dec(V4, FC, 0x10, B(CONNECT_HDR(4, 0xC2), 0, 1, 'c', 0, 1, 0x00, 0, 1, 0x00)),
                     MQR_EUTF8);
    assert_int_equal(dec(V4, FC, 0x10, B(CONNECT_HDR(4, 0xC2), 0, 1, 'c', 0, 1, 'u', 0, 1, 0x00)),
                     0);
    /* will topic with a wildcard, or empty */
    assert_int_equal(dec(V4, FC, 0x10, B(CONNECT_HDR(4, 0x06), 0, 1, 'c', 0, 1, '#', 0, 0)),
                     MQR_ETOPIC);
    assert_int_equal(dec(V4, FC, 0x10, B(CONNECT_HDR(4, 0x06), 0, 1, 'c', 0, 0, 0, 0)), MQR_ETOPIC);
    assert_int_equal(dec(V5, FC, 0x10, B(CONNECT_HDR(5, 0x06), 0, 0, 1, 'c', 0, 0, 1, '+', 0, 0)),
                     MQR_ETOPIC);
    assert_true(mqr__mqtt_connect_refusal(MQR_ETOPIC, c, &ver, &code));
    assert_int_equal(code, 0x90);
    /* trailing garbage */
    assert_int_equal(dec(V4, FC, 0x10, B(CONNECT_HDR(4, 0x02), 0, 1, 'c', 0)), MQR_EMALFORMED);
    /* misplaced and duplicate properties in CONNECT and will properties */
    assert_int_equal(dec(V5, FC, 0x10, B(CONNECT_HDR(5, 0x02), 3, 0x23, 0, 1, 0, 1, 'c')),
                     MQR_EMALFORMED);
    assert_int_equal(
        dec(V5, FC, 0x10, B(CONNECT_HDR(5, 0x02), 6, 0x21, 0, 1, 0x21, 0, 1, 0, 1, 'c')),
        MQR_EPROTOCOL);
    assert_true(mqr__mqtt_connect_refusal(MQR_EPROTOCOL, c, &ver, &code));
    assert_int_equal(code, 0x82);
    assert_int_equal(
        dec(V5, FC, 0x10, B(CONNECT_HDR(5, 0x06), 0, 0, 1, 'c', 2, 0x17, 1, 0, 1, 't', 0, 0)),
        MQR_EMALFORMED); /* Request Problem Information is no will property */
    /* property length longer than the packet */
    assert_int_equal(dec(V5, FC, 0x10, B(CONNECT_HDR(5, 0x02), 9, 0x21, 0, 1)), MQR_EMALFORMED);

    /* unknown protocol level: 3.1.1-style 0x01 below 5, 5.0-style 0x84 above */
    assert_int_equal(dec(V4, FC, 0x10, B(CONNECT_HDR(3, 0x02), 0, 1, 'c')), MQR_EPROTOCOL);
    assert_true(c->version_unsupported);
    assert_int_equal(c->protocol_level, 3);
    assert_true(mqr__mqtt_connect_refusal(MQR_EPROTOCOL, c, &ver, &code));
    assert_int_equal(ver, 4);
    assert_int_equal(code, MQR_MQTT_V3_BAD_PROTOCOL_VERSION);
    assert_int_equal(dec(V4, FC, 0x10, B(CONNECT_HDR(6, 0x02), 0, 1, 'c')), MQR_EPROTOCOL);
    assert_true(c->version_unsupported);
    assert_true(mqr__mqtt_connect_refusal(MQR_EPROTOCOL, c, &ver, &code));
    assert_int_equal(ver, 5);
    assert_int_equal(code, MQR_MQTT_RC_UNSUPPORTED_VERSION);
    /* MQTT 3.1 */
    assert_int_equal(
        dec(V4, FC, 0x10, B(0, 6, 'M', 'Q', 'I', 's', 'd', 'p', 3, 0x02, 0, 60, 0, 1, 'c')),
        MQR_EPROTOCOL);
    assert_true(mqr__mqtt_connect_refusal(MQR_EPROTOCOL, c, &ver, &code));
    assert_int_equal(ver, 4);
    assert_int_equal(code, 1);
    /* not MQTT at all: close without a word */
    assert_int_equal(dec(V4, FC, 0x10, B(0, 4, 'H', 'T', 'T', 'P', 4, 0x02, 0, 60, 0, 1, 'c')),
                     MQR_EPROTOCOL);
    assert_false(c->version_unsupported);
    assert_false(mqr__mqtt_connect_refusal(MQR_EPROTOCOL, c, &ver, &code));
    /* 3.1.1 empty client id needs clean session: 0x02 */
    assert_int_equal(dec(V4, FC, 0x10, B(CONNECT_HDR(4, 0x00), 0, 0)), MQR_EPROTOCOL);
    assert_true(c->client_id_rejected);
    assert_true(mqr__mqtt_connect_refusal(MQR_EPROTOCOL, c, &ver, &code));
    assert_int_equal(ver, 4);
    assert_int_equal(code, MQR_MQTT_V3_ID_REJECTED);
    assert_int_equal(dec(V5, FC, 0x10, B(CONNECT_HDR(5, 0x00), 0, 0, 0)), 0); /* 5.0 assigns */
    /* too short to know the version */
    assert_int_equal(dec(V4, FC, 0x10, B(0, 4, 'M', 'Q')), MQR_EMALFORMED);
    assert_false(mqr__mqtt_connect_refusal(MQR_EMALFORMED, c, &ver, &code));

    /* a 5.0 CONNECT must use a minimal Remaining Length; 3.1.1 may not */
    const uint8_t body4[] = {CONNECT_HDR(4, 0x02), 0, 1, 'c'};
    const uint8_t body5[] = {CONNECT_HDR(5, 0x02), 0, 0, 1, 'c'};
    uint8_t pkt[32];
    pkt[0] = 0x10;
    pkt[1] = 0x80 | sizeof body4;
    pkt[2] = 0x00;
    memcpy(pkt + 3, body4, sizeof body4);
    assert_int_equal(dec_raw(V4, FC, pkt, 3 + sizeof body4), 0);
    pkt[1] = 0x80 | sizeof body5;
    memcpy(pkt + 3, body5, sizeof body5);
    assert_int_equal(dec_raw(V4, FC, pkt, 3 + sizeof body5), MQR_EMALFORMED);
    assert_int_equal(c->version, 5);
    /* 5-byte Remaining Length */
    const uint8_t five[] = {0x10, 0x80, 0x80, 0x80, 0x80, 0x01, 0};
    assert_int_equal(dec_raw(V4, FC, five, sizeof five), MQR_EMALFORMED);
#undef CONNECT_HDR
}

static void test_publish_rejects(void **state)
{
    (void)state;
    /* QoS 3 */
    assert_int_equal(dec(V4, FC, 0x36, B(0, 1, 'a', 0, 1)), MQR_EMALFORMED);
    assert_int_equal(dec(V5, FC, 0x36, B(0, 1, 'a', 0, 1, 0)), MQR_EMALFORMED);
    /* packet id 0 with QoS > 0 */
    assert_int_equal(dec(V4, FC, 0x32, B(0, 1, 'a', 0, 0)), MQR_EPROTOCOL);
    assert_int_equal(dec(V5, FC, 0x34, B(0, 1, 'a', 0, 0, 0)), MQR_EPROTOCOL);
    /* wildcards in a topic name */
    assert_int_equal(dec(V4, FC, 0x30, B(0, 3, 'a', '/', '+')), MQR_ETOPIC);
    assert_int_equal(dec(V5, FC, 0x30, B(0, 1, '#', 0)), MQR_ETOPIC);
    assert_int_equal(mqr__mqtt_reason_for_error(MQR_ETOPIC, MQR_MQTT_PUBLISH), 0x90);
    /* bad UTF-8: overlong, surrogate, NUL, truncated sequence */
    assert_int_equal(dec(V4, FC, 0x30, B(0, 2, 0xC0, 0x80)), MQR_EUTF8);
    assert_int_equal(dec(V4, FC, 0x30, B(0, 3, 0xED, 0xA0, 0x80)), MQR_EUTF8);
    assert_int_equal(dec(V4, FC, 0x30, B(0, 3, 'a', 0x00, 'b')), MQR_EUTF8);
    assert_int_equal(dec(V4, FC, 0x30, B(0, 2, 'a', 0xE2)), MQR_EUTF8);
    assert_int_equal(dec(V4, FC, 0x30, B(0, 3, 0xE2, 0x82, 0xAC)), 0); /* U+20AC is fine */
    /* empty topic: 3.1.1 never, 5.0 only with an alias */
    assert_int_equal(dec(V4, FC, 0x30, B(0, 0, 'x')), MQR_ETOPIC);
    assert_int_equal(dec(V5, FC, 0x30, B(0, 0, 0, 'x')), MQR_EPROTOCOL);
    assert_int_equal(dec(V5, FC, 0x30, B(0, 0, 3, 0x23, 0, 1, 'x')), 0);
    assert_int_equal(g_pk.u.publish.topic_alias, 1);
    /* topic length past the end */
    assert_int_equal(dec(V4, FC, 0x30, B(0, 5, 'a')), MQR_EMALFORMED);
    /* properties: truncated, misplaced, duplicate, Subscription Identifier
     * from a client, non-minimal property length */
    assert_int_equal(dec(V5, FC, 0x30, B(0, 1, 'a', 5, 0x02, 0, 0)), MQR_EMALFORMED);
    assert_int_equal(dec(V5, FC, 0x30, B(0, 1, 'a', 3, 0x21, 0, 1)), MQR_EMALFORMED);
    assert_int_equal(dec(V5, FC, 0x30, B(0, 1, 'a', 6, 0x23, 0, 1, 0x23, 0, 2)), MQR_EPROTOCOL);
    assert_int_equal(dec(V5, FC, 0x30, B(0, 1, 'a', 2, 0x0B, 1)), MQR_EPROTOCOL);
    assert_int_equal(dec(V5, FS, 0x30, B(0, 1, 'a', 2, 0x0B, 1)), 0);
    assert_int_equal(dec(V5, FC, 0x30, B(0, 1, 'a', 0x80, 0x00)), MQR_EMALFORMED);
    assert_int_equal(dec(V5, FC, 0x30, B(0, 1, 'a')), MQR_EMALFORMED); /* no property length */
    /* a packet whose length disagrees with its Remaining Length */
    const uint8_t pkt[] = {0x30, 0x05, 0, 1, 'a', 'x', 'y'};
    assert_int_equal(dec_raw(V4, FC, pkt, 6), MQR_EMALFORMED);
    assert_int_equal(dec_raw(V4, FC, pkt, 7), 0);
    /* DUP with QoS 0 is the sender's mistake; it does not hurt decoding */
    assert_int_equal(dec(V4, FC, 0x38, B(0, 1, 'a')), 0);
}

static void test_subscribe_rejects(void **state)
{
    (void)state;
    /* fixed header flags must be 0010 */
    assert_int_equal(dec(V4, FC, 0x80, B(0, 1, 0, 1, 'a', 0)), MQR_EMALFORMED);
    assert_int_equal(dec(V4, FC, 0x83, B(0, 1, 0, 1, 'a', 0)), MQR_EMALFORMED);
    assert_int_equal(dec(V4, FC, 0xA0, B(0, 1, 0, 1, 'a')), MQR_EMALFORMED);
    /* packet id 0, empty list */
    assert_int_equal(dec(V4, FC, 0x82, B(0, 0, 0, 1, 'a', 0)), MQR_EPROTOCOL);
    assert_int_equal(dec(V4, FC, 0x82, B(0, 1)), MQR_EPROTOCOL);
    assert_int_equal(dec(V5, FC, 0x82, B(0, 1, 0)), MQR_EPROTOCOL);
    assert_int_equal(dec(V4, FC, 0xA2, B(0, 0, 0, 1, 'a')), MQR_EPROTOCOL);
    assert_int_equal(dec(V4, FC, 0xA2, B(0, 1)), MQR_EPROTOCOL);
    assert_int_equal(dec(V5, FC, 0xA2, B(0, 1, 0)), MQR_EPROTOCOL);
    /* options: 3.1.1 reserved bits and QoS 3 are malformed */
    assert_int_equal(dec(V4, FC, 0x82, B(0, 1, 0, 1, 'a', 0x04)), MQR_EMALFORMED);
    assert_int_equal(dec(V4, FC, 0x82, B(0, 1, 0, 1, 'a', 0x80)), MQR_EMALFORMED);
    assert_int_equal(dec(V4, FC, 0x82, B(0, 1, 0, 1, 'a', 0x03)), MQR_EMALFORMED);
    /* 5.0: reserved bits malformed; QoS 3, Retain Handling 3 protocol errors */
    assert_int_equal(dec(V5, FC, 0x82, B(0, 1, 0, 0, 1, 'a', 0x40)), MQR_EMALFORMED);
    assert_int_equal(dec(V5, FC, 0x82, B(0, 1, 0, 0, 1, 'a', 0x80)), MQR_EMALFORMED);
    assert_int_equal(dec(V5, FC, 0x82, B(0, 1, 0, 0, 1, 'a', 0x03)), MQR_EPROTOCOL);
    assert_int_equal(dec(V5, FC, 0x82, B(0, 1, 0, 0, 1, 'a', 0x30)), MQR_EPROTOCOL);
    assert_int_equal(dec(V5, FC, 0x82, B(0, 1, 0, 0, 1, 'a', 0x2E)), 0);
    /* missing options byte */
    assert_int_equal(dec(V4, FC, 0x82, B(0, 1, 0, 1, 'a')), MQR_EMALFORMED);
}

static void test_filters(void **state)
{
    (void)state;
    static const struct {
        const char *f;
        int v4, v5;
        bool shared;
    } cases[] = {
        {"a/b", 0, 0, false},
        {"+", 0, 0, false},
        {"#", 0, 0, false},
        {"+/+/#", 0, 0, false},
        {"/", 0, 0, false},
        {"a//b/+/", 0, 0, false},
        {"$SYS/#", 0, 0, false},
        {"", MQR_ETOPIC, MQR_ETOPIC, false},
        {"a/#/b", MQR_ETOPIC, MQR_ETOPIC, false},
        {"a#", MQR_ETOPIC, MQR_ETOPIC, false},
        {"a+/b", MQR_ETOPIC, MQR_ETOPIC, false},
        {"a/+b", MQR_ETOPIC, MQR_ETOPIC, false},
        {"##", MQR_ETOPIC, MQR_ETOPIC, false},
        {"$share/g/a/+", 0, 0, true},
        {"$share/g/#", 0, 0, true},
        {"$share/g/", 0, MQR_ETOPIC, false},
        {"$share/g", 0, MQR_ETOPIC, false},
        {"$share//a", 0, MQR_ETOPIC, false},
        {"$share/g+/a", MQR_ETOPIC, MQR_ETOPIC, false},
        {"$share/#/a", MQR_ETOPIC, MQR_ETOPIC, false},
        {"$share/g/a#", MQR_ETOPIC, MQR_ETOPIC, false},
        {"$shared/g/a", 0, 0, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bool shared;
        size_t n = strlen(cases[i].f);
        const char *s = (const char *)exact((const uint8_t *)cases[i].f, n);
        int r4 = mqr__mqtt_topic_filter_check(s, n, V4, &shared);
        if (r4 != cases[i].v4) fail_msg("v4 \"%s\": %d", cases[i].f, r4);
        assert_false(shared);
        int r5 = mqr__mqtt_topic_filter_check(s, n, V5, &shared);
        if (r5 != cases[i].v5) fail_msg("v5 \"%s\": %d", cases[i].f, r5);
        assert_int_equal(shared, cases[i].shared);
    }
    assert_int_equal(mqr__mqtt_topic_filter_check("a\xC0\x80", 3, V5, &(bool){0}), MQR_EUTF8);
    /* through the decoders: a bad filter is MQR_ETOPIC, answered with 0x8F */
    assert_int_equal(dec(V4, FC, 0x82, B(0, 1, 0, 3, 'a', '#', 'b', 0)), MQR_ETOPIC);
    assert_int_equal(mqr__mqtt_reason_for_error(MQR_ETOPIC, MQR_MQTT_SUBSCRIBE), 0x8F);
    assert_int_equal(dec(V5, FC, 0xA2, B(0, 1, 0, 0, 0)), MQR_ETOPIC);
    assert_int_equal(dec(V4, FC, 0x82, B(0, 1, 0, 1, 0x00, 0)), MQR_EUTF8);
    /* No Local with a shared subscription */
    assert_int_equal(
        dec(V5, FC, 0x82, B(0, 1, 0, 0, 10, '$', 's', 'h', 'a', 'r', 'e', '/', 'g', '/', 'a', 4)),
        MQR_EPROTOCOL);
    assert_int_equal(
        dec(V5, FC, 0x82, B(0, 1, 0, 0, 10, '$', 's', 'h', 'a', 'r', 'e', '/', 'g', '/', 'a', 0)),
        0);
    /* topic names */
    assert_int_equal(mqr__mqtt_topic_name_check("a/b", 3), 0);
    assert_int_equal(mqr__mqtt_topic_name_check("", 0), MQR_ETOPIC);
    assert_int_equal(mqr__mqtt_topic_name_check("a/+", 3), MQR_ETOPIC);
    assert_int_equal(mqr__mqtt_topic_name_check("\xFF", 1), MQR_EUTF8);
}

static void test_generic_decode(void **state)
{
    (void)state;
    /* reserved type 0; type 15 in 3.1.1 */
    assert_int_equal(dec(V4, FC, 0x00, NULL, 0), MQR_EMALFORMED);
    assert_int_equal(dec(V5, FC, 0x00, NULL, 0), MQR_EMALFORMED);
    assert_int_equal(dec(V4, FC, 0xF0, NULL, 0), MQR_EMALFORMED);
    assert_int_equal(dec(V5, FC, 0xF0, NULL, 0), 0);
    /* packets that never flow that way */
    assert_int_equal(dec(V4, FC, 0x20, B(0, 0)), MQR_EPROTOCOL);
    assert_int_equal(dec(V4, FS, 0x20, B(0, 0)), 0);
    assert_int_equal(dec(V4, FS, 0xC0, NULL, 0), MQR_EPROTOCOL);
    assert_int_equal(dec(V4, FC, 0xD0, NULL, 0), MQR_EPROTOCOL);
    assert_int_equal(dec(V4, FS, 0x82, B(0, 1, 0, 1, 'a', 0)), MQR_EPROTOCOL);
    assert_int_equal(dec(V4, FC, 0x90, B(0, 1, 0)), MQR_EPROTOCOL);
    assert_int_equal(dec(V4, FS, 0xA2, B(0, 1, 0, 1, 'a')), MQR_EPROTOCOL);
    assert_int_equal(dec(V4, FC, 0xB0, B(0, 1)), MQR_EPROTOCOL);
    assert_int_equal(dec(V4, FS, 0x10, B(0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 0, 0, 0)),
                     MQR_EPROTOCOL);
    /* no version yet: only CONNECT decodes */
    assert_int_equal(dec(0, FC, 0x10, B(0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 0, 0, 0)), 0);
    assert_int_equal(dec(0, FC, 0xC0, NULL, 0), MQR_EINVAL);
    /* per-type decoders refuse another type */
    const uint8_t ping[] = {0xC0, 0x00};
    mqr_mqtt_publish_t p;
    assert_int_equal(mqr__mqtt_decode_publish(exact(ping, 2), 2, V4, FC, &p), MQR_EINVAL);
    mqr_mqtt_ack_t a;
    assert_int_equal(mqr__mqtt_decode_ack(exact(ping, 2), 2, V4, &a), MQR_EINVAL);
    assert_int_equal(mqr__mqtt_decode(NULL, 0, V4, FC, &g_pk), MQR_EMALFORMED);
    /* CONNACK: reserved ack flags, session present with a refusal, bad codes */
    assert_int_equal(dec(V4, FS, 0x20, B(0x02, 0)), MQR_EMALFORMED);
    assert_int_equal(dec(V4, FS, 0x20, B(0x01, 0x05)), MQR_EPROTOCOL);
    assert_int_equal(dec(V4, FS, 0x20, B(0x00, 0x06)), MQR_EPROTOCOL);
    assert_int_equal(dec(V5, FS, 0x20, B(0x00, 0x10, 0)), MQR_EPROTOCOL);
    assert_int_equal(dec(V4, FS, 0x20, B(0x00, 0x00, 0x00)), MQR_EMALFORMED);
    assert_int_equal(dec(V5, FS, 0x20, B(0x00, 0x00, 3, 0x26, 0, 0)), MQR_EMALFORMED);
}

static void test_reason_mapping(void **state)
{
    (void)state;
    assert_int_equal(mqr__mqtt_reason_for_error(MQR_EMALFORMED, 3), 0x81);
    assert_int_equal(mqr__mqtt_reason_for_error(MQR_EUTF8, 3), 0x81);
    assert_int_equal(mqr__mqtt_reason_for_error(MQR_EPROTOCOL, 3), 0x82);
    assert_int_equal(mqr__mqtt_reason_for_error(MQR_ETOPIC, 3), 0x90);
    assert_int_equal(mqr__mqtt_reason_for_error(MQR_ETOPIC, 10), 0x8F);
    assert_int_equal(mqr__mqtt_reason_for_error(MQR_ETOOLARGE, 3), 0x95);
    assert_int_equal(mqr__mqtt_reason_for_error(MQR_EQOS, 3), 0x9B);
    assert_int_equal(mqr__mqtt_reason_for_error(MQR_ENOMEM, 3), 0x80);
    assert_int_equal(mqr__mqtt_connack_v3_code(0x00), 0);
    assert_int_equal(mqr__mqtt_connack_v3_code(0x84), 1);
    assert_int_equal(mqr__mqtt_connack_v3_code(0x85), 2);
    assert_int_equal(mqr__mqtt_connack_v3_code(0x88), 3);
    assert_int_equal(mqr__mqtt_connack_v3_code(0x86), 4);
    assert_int_equal(mqr__mqtt_connack_v3_code(0x87), 5);
    assert_int_equal(mqr__mqtt_connack_v3_code(0x95), 3);
    mqr_mqtt_connect_t c = {0};
    int ver;
    uint8_t code;
    assert_false(mqr__mqtt_connect_refusal(0, &c, &ver, &code));
    /* a v5 CONNECT too large for us: 0x95 */
    c.version = V5;
    assert_true(mqr__mqtt_connect_refusal(MQR_ETOOLARGE, &c, &ver, &code));
    assert_int_equal(code, 0x95);
}

/* Every view a successful decode returns lies inside the packet. */
static void assert_in(const void *p, size_t n)
{
    if (!p) return;
    const uint8_t *q = p;
    assert_true(q >= g_buf && q + n <= g_buf + g_len);
}

static void check_views(void)
{
    mqr_mqtt_packet_t *k = &g_pk;
    switch (k->type) {
    case MQR_MQTT_CONNECT:
        assert_in(k->u.connect.client_id.p, k->u.connect.client_id.len);
        assert_in(k->u.connect.props.p, k->u.connect.props.len);
        assert_in(k->u.connect.will_props.p, k->u.connect.will_props.len);
        assert_in(k->u.connect.will_topic.p, k->u.connect.will_topic.len);
        assert_in(k->u.connect.will_payload.p, k->u.connect.will_payload.len);
        assert_in(k->u.connect.username.p, k->u.connect.username.len);
        assert_in(k->u.connect.password.p, k->u.connect.password.len);
        assert_in(k->u.connect.auth_data.p, k->u.connect.auth_data.len);
        break;
    case MQR_MQTT_PUBLISH:
        assert_in(k->u.publish.topic.p, k->u.publish.topic.len);
        assert_in(k->u.publish.props.p, k->u.publish.props.len);
        assert_in(k->u.publish.payload.p, k->u.publish.payload.len);
        assert_ptr_equal(k->u.publish.payload.p + k->u.publish.payload.len, g_buf + g_len);
        break;
    case MQR_MQTT_SUBSCRIBE:
        assert_in(k->u.subscribe.list.p, k->u.subscribe.list.len);
        break;
    case MQR_MQTT_SUBACK:
        assert_in(k->u.suback.codes, k->u.suback.count);
        break;
    case MQR_MQTT_UNSUBSCRIBE:
        assert_in(k->u.unsubscribe.list.p, k->u.unsubscribe.list.len);
        break;
    case MQR_MQTT_UNSUBACK:
        assert_in(k->u.unsuback.codes, k->u.unsuback.count);
        break;
    default:
        break;
    }
}

/* Cut every sample at every byte. Unpatched, the header promises more than
 * is there: frame says incomplete, decode says malformed. Patched (the
 * Remaining Length rewritten to the shorter body), the field parsers meet
 * the end mid-field: they must refuse, or return views inside the bytes. */
static void test_truncation(void **state)
{
    g_nsamples = 0;
    test_rt_connect(state);
    test_rt_connack(state);
    test_rt_publish(state);
    test_rt_acks(state);
    test_rt_subscribe(state);
    test_rt_small(state);
    assert_true(g_nsamples >= 40);
    size_t cuts = 0, strict_checked = 0;
    for (size_t i = 0; i < g_nsamples; i++) {
        const sample_t *s = &g_samples[i];
        mqr_mqtt_frame_t f;
        assert_int_equal(mqr__mqtt_frame(s->bytes, s->len, 0, s->version, &f), 0);
        for (size_t k = 0; k < s->len; k++) {
            const uint8_t *p = exact(s->bytes, k);
            assert_int_equal(mqr__mqtt_frame(p, k, 0, s->version, &f), MQR_EINCOMPLETE);
            int rc = mqr__mqtt_decode(p, k, s->version, s->dir, &g_pk);
            if (rc == 0) fail_msg("%s: prefix %zu decoded", s->name, k);
            cuts++;
        }
        const uint8_t *body = s->bytes + f.hdr_len;
        for (size_t m = 0; m < f.remaining; m++) {
            int rc = dec(s->version, s->dir, s->bytes[0], body, m);
            if (rc == 0) {
                if (s->strict) fail_msg("%s: body cut to %zu decoded", s->name, m);
                check_views();
            } else {
                strict_checked++;
            }
            cuts++;
        }
    }
    print_message("truncation: %zu samples, %zu cuts, %zu refused\n", g_nsamples, cuts,
                  strict_checked);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_varint),
        cmocka_unit_test(test_frame),
        cmocka_unit_test(test_props_all_types),
        cmocka_unit_test(test_props_builder_errors),
        cmocka_unit_test(test_props_rejects),
        cmocka_unit_test(test_props_strip),
        cmocka_unit_test(test_rt_connect),
        cmocka_unit_test(test_rt_connack),
        cmocka_unit_test(test_rt_publish),
        cmocka_unit_test(test_rt_acks),
        cmocka_unit_test(test_rt_subscribe),
        cmocka_unit_test(test_rt_small),
        cmocka_unit_test(test_connect_rejects),
        cmocka_unit_test(test_publish_rejects),
        cmocka_unit_test(test_subscribe_rejects),
        cmocka_unit_test(test_filters),
        cmocka_unit_test(test_generic_decode),
        cmocka_unit_test(test_reason_mapping),
        cmocka_unit_test(test_truncation),
    };
    return cmocka_run_group_tests(tests, NULL, teardown_all);
}
