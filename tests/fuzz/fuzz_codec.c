/*
 * fuzz_codec.c — libFuzzer target for the MQTT codec (core/mqtt/).
 *
 * Feeds arbitrary bytes through what the listener does with a socket's
 * bytes (frame, decode, walk properties and lists) and checks what must hold
 * for anything the decoder accepts: its views stay inside the packet, it
 * re-encodes, the re-encoding decodes, and encoding that again gives the same
 * bytes. Also fuzzes the property validator, iterator and builder directly.
 * It must not depend on anything outside the codec (no libuv, no engine), so
 * it builds by hand, not by CMake.
 *
 * Input: byte 0 picks the mode (bit 0: protocol 3.1.1 or 5.0; bit 1: from
 * client or from server; bits 2-3: maximum packet size none/16/64/1024);
 * the rest is a byte stream of packets.
 *
 * Build and run (from the repository root; clang >= 14 with compiler-rt,
 * Debian: apt-get install -y clang libclang-rt-14-dev):
 *
 *   clang -g -O1 -std=c11 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined \
 *       -fno-sanitize-recover=undefined -Icore/include -Icore -Icore/base \
 *       tests/fuzz/fuzz_codec.c core/mqtt/codec.c core/mqtt/props.c \
 *       core/mqtt/decode.c core/mqtt/encode.c core/base/utf8.c -o build-codec/fuzz_codec
 *   mkdir -p build-codec/fuzz-corpus
 *   build-codec/fuzz_codec -max_total_time=300 -max_len=4096 \
 *       build-codec/fuzz-corpus tests/fuzz/corpus/codec
 *
 * The seed corpus in tests/fuzz/corpus/codec was written by this file built
 * with -DFUZZ_CODEC_SEEDS as an ordinary program (no -fsanitize=fuzzer):
 *
 *   clang -std=c11 -D_GNU_SOURCE -DFUZZ_CODEC_SEEDS -Icore/include -Icore -Icore/base \
 *       tests/fuzz/fuzz_codec.c core/mqtt/codec.c core/mqtt/props.c \
 *       core/mqtt/decode.c core/mqtt/encode.c core/base/utf8.c -o /tmp/seedgen
 *   /tmp/seedgen tests/fuzz/corpus/codec
 *
 * ctest replays that corpus on every build with this file linked to
 * replay_main.c (fuzz/codec_corpus): copy an input libFuzzer found crashing
 * into tests/fuzz/corpus/codec, fix the codec, and it stays tested.
 */
#include "codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static const uint8_t *g_lo, *g_hi;

static void in_packet(const void *p, size_t n)
{
    if (!p) return;
    const uint8_t *q = p;
    CHECK(q >= g_lo && q <= g_hi && n <= (size_t)(g_hi - q));
}

/* Walks props with the iterator and rebuilds them: valid property bytes are
 * canonical (one encoding per value), so the rebuild must match. */
static void props_rebuild(const uint8_t *props, size_t len)
{
    static uint8_t out[8192];
    if (len > sizeof out) return;
    mqr_mqtt_prop_iter_t it;
    mqr_mqtt_prop_t p;
    mqr_mqtt_pbuild_t b;
    mqr__mqtt_props_iter(&it, props, len);
    mqr__mqtt_pb_init(&b, out, sizeof out);
    int rc;
    while ((rc = mqr__mqtt_props_next(&it, &p)) > 0)
        mqr__mqtt_pb_add(&b, &p);
    if (rc < 0) return;
    size_t n;
    CHECK(mqr__mqtt_pb_finish(&b, &n) == 0);
    CHECK(n == len);
    CHECK(len == 0 || memcmp(out, props, len) == 0);
}

static void check_props(const mqr_mqtt_bin_t *props, int ctx, mqr_mqtt_dir_t dir)
{
    in_packet(props->p, props->len);
    CHECK(mqr__mqtt_props_validate(props->p, props->len, ctx, dir) == 0);
    props_rebuild(props->p, props->len);
    static uint8_t stripped[1 << 16];
    if (props->len <= sizeof stripped) {
        size_t n = mqr__mqtt_props_strip(props->p, props->len, stripped);
        CHECK(n <= props->len);
        /* what is left is fit to store and forward in any PUBLISH */
        if (ctx == MQR_MQTT_PUBLISH || ctx == MQR_MQTT_CTX_WILL)
            CHECK(mqr__mqtt_props_validate(stripped, n, MQR_MQTT_PUBLISH, MQR_MQTT_FROM_CLIENT) ==
                  0);
    }
}

/* Encodes a decoded packet; returns its length in out, 0 when not encodable. */
static size_t encode(const mqr_mqtt_packet_t *k, int version, uint8_t *out, size_t cap)
{
    static mqr_mqtt_sub_entry_t ents[4096];
    static mqr_mqtt_str_t filters[4096];
    mqr_mqtt_list_iter_t it;
    size_t n = 0, len = 0, sized = 0;
    int rc = MQR_EINVAL;
#define ENC(call_sized, call)                                                                      \
    do {                                                                                           \
        CHECK((call_sized) == 0);                                                                  \
        rc = (call);                                                                               \
    } while (0)
    switch (k->type) {
    case MQR_MQTT_CONNECT:
        ENC(mqr__mqtt_encode_connect(&k->u.connect, NULL, 0, &sized),
            mqr__mqtt_encode_connect(&k->u.connect, out, cap, &len));
        break;
    case MQR_MQTT_CONNACK:
        ENC(mqr__mqtt_encode_connack(&k->u.connack, version, NULL, 0, &sized),
            mqr__mqtt_encode_connack(&k->u.connack, version, out, cap, &len));
        break;
    case MQR_MQTT_PUBLISH: {
        const mqr_mqtt_publish_t *p = &k->u.publish;
        ENC(mqr__mqtt_encode_publish(p, version, NULL, 0, &sized),
            mqr__mqtt_encode_publish(p, version, out, cap, &len));
        size_t total, head, hn;
        CHECK(mqr__mqtt_publish_size(p, version, &total, &head) == 0);
        CHECK(total == sized && head + p->payload.len == total);
        static uint8_t hb[1 << 17];
        if (rc == 0 && head <= sizeof hb) {
            CHECK(mqr__mqtt_encode_publish_head(p, version, hb, sizeof hb, &hn) == 0);
            CHECK(hn == head && memcmp(hb, out, hn) == 0);
        }
        break;
    }
    case MQR_MQTT_PUBACK:
    case MQR_MQTT_PUBREC:
    case MQR_MQTT_PUBREL:
    case MQR_MQTT_PUBCOMP:
        ENC(mqr__mqtt_encode_ack(&k->u.ack, version, NULL, 0, &sized),
            mqr__mqtt_encode_ack(&k->u.ack, version, out, cap, &len));
        break;
    case MQR_MQTT_SUBSCRIBE:
        mqr__mqtt_sub_iter(&it, &k->u.subscribe, version);
        while (n < 4096 && mqr__mqtt_sub_next(&it, &ents[n])) {
            in_packet(ents[n].filter.p, ents[n].filter.len);
            n++;
        }
        if (n != k->u.subscribe.count) return 0; /* more entries than this buffer holds */
        ENC(mqr__mqtt_encode_subscribe(&k->u.subscribe, ents, n, version, NULL, 0, &sized),
            mqr__mqtt_encode_subscribe(&k->u.subscribe, ents, n, version, out, cap, &len));
        break;
    case MQR_MQTT_SUBACK:
        ENC(mqr__mqtt_encode_suback(&k->u.suback, version, NULL, 0, &sized),
            mqr__mqtt_encode_suback(&k->u.suback, version, out, cap, &len));
        break;
    case MQR_MQTT_UNSUBSCRIBE:
        mqr__mqtt_unsub_iter(&it, &k->u.unsubscribe, version);
        while (n < 4096 && mqr__mqtt_unsub_next(&it, &filters[n])) {
            in_packet(filters[n].p, filters[n].len);
            n++;
        }
        if (n != k->u.unsubscribe.count) return 0;
        ENC(mqr__mqtt_encode_unsubscribe(&k->u.unsubscribe, filters, n, version, NULL, 0, &sized),
            mqr__mqtt_encode_unsubscribe(&k->u.unsubscribe, filters, n, version, out, cap, &len));
        break;
    case MQR_MQTT_UNSUBACK:
        ENC(mqr__mqtt_encode_unsuback(&k->u.unsuback, version, NULL, 0, &sized),
            mqr__mqtt_encode_unsuback(&k->u.unsuback, version, out, cap, &len));
        break;
    case MQR_MQTT_PINGREQ:
    case MQR_MQTT_PINGRESP:
        ENC(mqr__mqtt_encode_ping(k->type, NULL, 0, &sized),
            mqr__mqtt_encode_ping(k->type, out, cap, &len));
        break;
    case MQR_MQTT_DISCONNECT:
        ENC(mqr__mqtt_encode_disconnect(&k->u.disconnect, version, NULL, 0, &sized),
            mqr__mqtt_encode_disconnect(&k->u.disconnect, version, out, cap, &len));
        break;
    case MQR_MQTT_AUTH:
        ENC(mqr__mqtt_encode_auth(&k->u.auth, version, NULL, 0, &sized),
            mqr__mqtt_encode_auth(&k->u.auth, version, out, cap, &len));
        break;
    default:
        CHECK(0);
    }
#undef ENC
    if (rc == MQR_ETOOLARGE) {
        CHECK(sized > cap);
        return 0;
    }
    CHECK(rc == 0);
    CHECK(len == sized);
    return len;
}

/* Views of an accepted packet lie inside it; its properties validate again. */
static void check_decoded(const mqr_mqtt_packet_t *k, int version, mqr_mqtt_dir_t dir)
{
    bool v5 = version == MQR_MQTT_V5;
    switch (k->type) {
    case MQR_MQTT_CONNECT: {
        const mqr_mqtt_connect_t *c = &k->u.connect;
        in_packet(c->client_id.p, c->client_id.len);
        in_packet(c->will_topic.p, c->will_topic.len);
        in_packet(c->will_payload.p, c->will_payload.len);
        in_packet(c->username.p, c->username.len);
        in_packet(c->password.p, c->password.len);
        in_packet(c->auth_method.p, c->auth_method.len);
        in_packet(c->auth_data.p, c->auth_data.len);
        if (c->version == MQR_MQTT_V5) {
            check_props(&c->props, MQR_MQTT_CONNECT, MQR_MQTT_FROM_CLIENT);
            if (c->has_will) check_props(&c->will_props, MQR_MQTT_CTX_WILL, MQR_MQTT_FROM_CLIENT);
        }
        break;
    }
    case MQR_MQTT_CONNACK:
        if (v5) check_props(&k->u.connack.props, MQR_MQTT_CONNACK, dir);
        break;
    case MQR_MQTT_PUBLISH: {
        const mqr_mqtt_publish_t *p = &k->u.publish;
        in_packet(p->topic.p, p->topic.len);
        in_packet(p->payload.p, p->payload.len);
        CHECK(p->payload.p + p->payload.len == g_hi);
        CHECK(p->qos <= 2 && (p->qos == 0 || p->packet_id != 0));
        if (v5) check_props(&p->props, MQR_MQTT_PUBLISH, dir);
        break;
    }
    case MQR_MQTT_PUBACK:
    case MQR_MQTT_PUBREC:
    case MQR_MQTT_PUBREL:
    case MQR_MQTT_PUBCOMP:
        if (v5) check_props(&k->u.ack.props, k->type, dir);
        break;
    case MQR_MQTT_SUBSCRIBE:
        CHECK(k->u.subscribe.count > 0);
        if (v5) check_props(&k->u.subscribe.props, MQR_MQTT_SUBSCRIBE, dir);
        break;
    case MQR_MQTT_SUBACK:
        in_packet(k->u.suback.codes, k->u.suback.count);
        if (v5) check_props(&k->u.suback.props, MQR_MQTT_SUBACK, dir);
        break;
    case MQR_MQTT_UNSUBSCRIBE:
        CHECK(k->u.unsubscribe.count > 0);
        if (v5) check_props(&k->u.unsubscribe.props, MQR_MQTT_UNSUBSCRIBE, dir);
        break;
    case MQR_MQTT_UNSUBACK:
        in_packet(k->u.unsuback.codes, k->u.unsuback.count);
        if (v5) check_props(&k->u.unsuback.props, MQR_MQTT_UNSUBACK, dir);
        break;
    case MQR_MQTT_DISCONNECT:
        if (v5) check_props(&k->u.disconnect.props, MQR_MQTT_DISCONNECT, dir);
        break;
    case MQR_MQTT_AUTH:
        check_props(&k->u.auth.props, MQR_MQTT_AUTH, dir);
        break;
    default:
        break;
    }
}

static void one_packet(const uint8_t *pkt, size_t len, int version, mqr_mqtt_dir_t dir)
{
    static mqr_mqtt_packet_t k, k2;
    static uint8_t enc1[1 << 17], enc2[1 << 17];
    g_lo = pkt;
    g_hi = pkt + len;
    int rc = mqr__mqtt_decode(pkt, len, version, dir, &k);
    if (rc) {
        CHECK(rc < 0);
        (void)mqr__mqtt_reason_for_error(rc, pkt[0] >> 4);
        if (k.type == MQR_MQTT_CONNECT && dir == MQR_MQTT_FROM_CLIENT) {
            int v = 0;
            uint8_t code = 0;
            if (mqr__mqtt_connect_refusal(rc, &k.u.connect, &v, &code))
                CHECK(v == MQR_MQTT_V311 || v == MQR_MQTT_V5);
        }
        return;
    }
    int ver = k.type == MQR_MQTT_CONNECT ? k.u.connect.version : version;
    check_decoded(&k, ver, dir);
    /* A 5.0 client accepts a 3.1.1-layout CONNACK (no properties), which
     * re-encodes as a different 5.0 packet: nothing to compare. */
    if (k.type == MQR_MQTT_CONNACK && ver == MQR_MQTT_V5 && !k.u.connack.props.p) return;

    size_t n1 = encode(&k, ver, enc1, sizeof enc1);
    if (!n1) return;
    const uint8_t *lo = g_lo, *hi = g_hi;
    g_lo = enc1;
    g_hi = enc1 + n1;
    mqr_mqtt_frame_t f;
    CHECK(mqr__mqtt_frame(enc1, n1, 0, MQR_MQTT_V5, &f) == 0 && f.total == n1);
    rc = mqr__mqtt_decode(enc1, n1, ver, dir, &k2);
    if (rc) {
        fprintf(stderr, "re-encoded packet type %d v%d refused: %d\n", k.type, ver, rc);
        CHECK(0);
    }
    CHECK(k2.type == k.type);
    size_t n2 = encode(&k2, ver, enc2, sizeof enc2);
    CHECK(n2 == n1 && memcmp(enc1, enc2, n1) == 0);
    g_lo = lo;
    g_hi = hi;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    uint8_t mode = data[0];
    int version = mode & 1 ? MQR_MQTT_V5 : MQR_MQTT_V311;
    mqr_mqtt_dir_t dir = mode & 2 ? MQR_MQTT_FROM_SERVER : MQR_MQTT_FROM_CLIENT;
    static const size_t max_sizes[] = {0, 16, 64, 1024};
    size_t max = max_sizes[(mode >> 2) & 3];
    data++;
    size--;

    /* the stream as a listener sees it: frame, decode, consume */
    size_t off = 0;
    while (off < size) {
        mqr_mqtt_frame_t f;
        int rc = mqr__mqtt_frame(data + off, size - off, max, version, &f);
        if (rc) {
            CHECK(rc == MQR_EINCOMPLETE || rc == MQR_EMALFORMED || rc == MQR_ETOOLARGE);
            /* an incomplete tail still goes to the decoder, which must
             * refuse it without reading past it */
            if (rc == MQR_EINCOMPLETE) {
                mqr_mqtt_packet_t k;
                CHECK(mqr__mqtt_decode(data + off, size - off, version, dir, &k) != 0);
            }
            break;
        }
        CHECK(f.total <= size - off && f.hdr_len >= 2 && f.hdr_len <= 5);
        CHECK(max == 0 || f.total <= max);
        one_packet(data + off, f.total, version, dir);
        off += f.total;
    }

    /* the same bytes as a property list, in every context */
    size_t plen = size < 512 ? size : 512;
    for (int ctx = 1; ctx <= MQR_MQTT_CTX_WILL; ctx++) {
        if (mqr__mqtt_props_validate(data, plen, ctx, dir) == 0) props_rebuild(data, plen);
    }
    return 0;
}

#ifdef FUZZ_CODEC_SEEDS
/* Writes one valid packet of every type, in both versions, as seeds. */
static const char *g_dir;
static int g_count;

static void seed(const char *name, uint8_t mode, const uint8_t *pkt, size_t len, bool single)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%02d-%s", g_dir, ++g_count, name);
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fputc(mode, f);
    fwrite(pkt, 1, len, f);
    fclose(f);
    /* every seed must pass the target itself */
    uint8_t buf[4096];
    buf[0] = mode;
    memcpy(buf + 1, pkt, len);
    LLVMFuzzerTestOneInput(buf, len + 1);
    if (!single) return;
    mqr_mqtt_packet_t k;
    int version = mode & 1 ? MQR_MQTT_V5 : MQR_MQTT_V311;
    int rc = mqr__mqtt_decode(pkt, len, version, mode & 2 ? MQR_MQTT_FROM_SERVER : 0, &k);
    if (rc) {
        fprintf(stderr, "seed %s does not decode: %d\n", name, rc);
        exit(1);
    }
}

#define SEED(name, mode, fn, ...)                                                                  \
    do {                                                                                           \
        uint8_t b_[2048];                                                                          \
        size_t n_;                                                                                 \
        CHECK(fn(__VA_ARGS__, b_, sizeof b_, &n_) == 0);                                           \
        seed(name, mode, b_, n_, true);                                                            \
    } while (0)

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s <corpus-dir>\n", argv[0]);
        return 2;
    }
    g_dir = argv[1];
    const uint8_t C4 = 0, C5 = 1, S4 = 2, S5 = 3; /* mode: version bit, direction bit */
    uint8_t props[512], wprops[256];
    mqr_mqtt_pbuild_t b;
    size_t pn, wn;

    mqr_mqtt_connect_t c4 = {.version = 4,
                             .clean_start = true,
                             .keep_alive = 60,
                             .client_id = {"dev-1", 5},
                             .has_will = true,
                             .will_qos = 1,
                             .will_retain = true,
                             .will_topic = {"dev/1/status", 12},
                             .will_payload = {(const uint8_t *)"offline", 7},
                             .has_username = true,
                             .username = {"user", 4},
                             .has_password = true,
                             .password = {(const uint8_t *)"pw", 2}};
    SEED("connect-v4", C4, mqr__mqtt_encode_connect, &c4);
    mqr__mqtt_pb_init(&b, props, sizeof props);
    mqr__mqtt_pb_u32(&b, MQR_MQTT_PROP_SESSION_EXPIRY, 3600);
    mqr__mqtt_pb_u16(&b, MQR_MQTT_PROP_RECEIVE_MAX, 20);
    mqr__mqtt_pb_u32(&b, MQR_MQTT_PROP_MAX_PACKET_SIZE, 65536);
    mqr__mqtt_pb_u16(&b, MQR_MQTT_PROP_TOPIC_ALIAS_MAX, 10);
    mqr__mqtt_pb_byte(&b, MQR_MQTT_PROP_REQUEST_RESPONSE_INFO, 1);
    mqr__mqtt_pb_byte(&b, MQR_MQTT_PROP_REQUEST_PROBLEM_INFO, 0);
    mqr__mqtt_pb_string(&b, MQR_MQTT_PROP_AUTH_METHOD, "SCRAM-SHA-1", 11);
    mqr__mqtt_pb_binary(&b, MQR_MQTT_PROP_AUTH_DATA, "\x01\x02", 2);
    mqr__mqtt_pb_user(&b, "k", 1, "v", 1);
    CHECK(mqr__mqtt_pb_finish(&b, &pn) == 0);
    mqr__mqtt_pb_init(&b, wprops, sizeof wprops);
    mqr__mqtt_pb_u32(&b, MQR_MQTT_PROP_WILL_DELAY, 30);
    mqr__mqtt_pb_byte(&b, MQR_MQTT_PROP_PAYLOAD_FORMAT, 1);
    mqr__mqtt_pb_u32(&b, MQR_MQTT_PROP_MESSAGE_EXPIRY, 120);
    mqr__mqtt_pb_string(&b, MQR_MQTT_PROP_CONTENT_TYPE, "text/plain", 10);
    mqr__mqtt_pb_string(&b, MQR_MQTT_PROP_RESPONSE_TOPIC, "r/1", 3);
    mqr__mqtt_pb_binary(&b, MQR_MQTT_PROP_CORRELATION_DATA, "id", 2);
    mqr__mqtt_pb_user(&b, "w", 1, "x", 1);
    CHECK(mqr__mqtt_pb_finish(&b, &wn) == 0);
    mqr_mqtt_connect_t c5 = c4;
    c5.version = 5;
    c5.props = (mqr_mqtt_bin_t){props, (uint32_t)pn};
    c5.will_props = (mqr_mqtt_bin_t){wprops, (uint32_t)wn};
    SEED("connect-v5", C5, mqr__mqtt_encode_connect, &c5);

    mqr_mqtt_connack_t ca = {.session_present = true};
    SEED("connack-v4", S4, mqr__mqtt_encode_connack, &ca, 4);
    mqr__mqtt_pb_init(&b, props, sizeof props);
    mqr__mqtt_pb_u16(&b, MQR_MQTT_PROP_RECEIVE_MAX, 100);
    mqr__mqtt_pb_byte(&b, MQR_MQTT_PROP_MAX_QOS, 1);
    mqr__mqtt_pb_byte(&b, MQR_MQTT_PROP_RETAIN_AVAILABLE, 0);
    mqr__mqtt_pb_u32(&b, MQR_MQTT_PROP_MAX_PACKET_SIZE, 1024);
    mqr__mqtt_pb_string(&b, MQR_MQTT_PROP_ASSIGNED_CLIENT_ID, "auto-1", 6);
    mqr__mqtt_pb_u16(&b, MQR_MQTT_PROP_TOPIC_ALIAS_MAX, 16);
    mqr__mqtt_pb_string(&b, MQR_MQTT_PROP_REASON_STRING, "ok", 2);
    mqr__mqtt_pb_byte(&b, MQR_MQTT_PROP_WILDCARD_SUB_AVAILABLE, 1);
    mqr__mqtt_pb_byte(&b, MQR_MQTT_PROP_SUB_ID_AVAILABLE, 1);
    mqr__mqtt_pb_byte(&b, MQR_MQTT_PROP_SHARED_SUB_AVAILABLE, 1);
    mqr__mqtt_pb_u16(&b, MQR_MQTT_PROP_SERVER_KEEP_ALIVE, 15);
    mqr__mqtt_pb_string(&b, MQR_MQTT_PROP_RESPONSE_INFO, "ri", 2);
    mqr__mqtt_pb_string(&b, MQR_MQTT_PROP_SERVER_REFERENCE, "srv", 3);
    CHECK(mqr__mqtt_pb_finish(&b, &pn) == 0);
    ca.props = (mqr_mqtt_bin_t){props, (uint32_t)pn};
    SEED("connack-v5", S5, mqr__mqtt_encode_connack, &ca, 5);

    mqr_mqtt_publish_t p = {.qos = 1,
                            .retain = true,
                            .packet_id = 7,
                            .topic = {"sensors/t1", 10},
                            .payload = {(const uint8_t *)"21.5", 4}};
    SEED("publish-v4", C4, mqr__mqtt_encode_publish, &p, 4);
    mqr__mqtt_pb_init(&b, props, sizeof props);
    mqr__mqtt_pb_byte(&b, MQR_MQTT_PROP_PAYLOAD_FORMAT, 1);
    mqr__mqtt_pb_u32(&b, MQR_MQTT_PROP_MESSAGE_EXPIRY, 600);
    mqr__mqtt_pb_u16(&b, MQR_MQTT_PROP_TOPIC_ALIAS, 4);
    mqr__mqtt_pb_string(&b, MQR_MQTT_PROP_RESPONSE_TOPIC, "resp/x", 6);
    mqr__mqtt_pb_binary(&b, MQR_MQTT_PROP_CORRELATION_DATA, "\x00\x01", 2);
    mqr__mqtt_pb_user(&b, "u", 1, "1", 1);
    mqr__mqtt_pb_string(&b, MQR_MQTT_PROP_CONTENT_TYPE, "application/json", 16);
    CHECK(mqr__mqtt_pb_finish(&b, &pn) == 0);
    p.qos = 2;
    p.props = (mqr_mqtt_bin_t){props, (uint32_t)pn};
    SEED("publish-v5", C5, mqr__mqtt_encode_publish, &p, 5);
    static const uint32_t ids[] = {1, 300};
    mqr_mqtt_publish_t ps = {.topic = {"", 0},
                             .add_topic_alias = 4,
                             .add_sub_ids = ids,
                             .n_add_sub_ids = 2,
                             .payload = {(const uint8_t *)"x", 1}};
    SEED("publish-v5-alias", S5, mqr__mqtt_encode_publish, &ps, 5);

    mqr__mqtt_pb_init(&b, props, sizeof props);
    mqr__mqtt_pb_string(&b, MQR_MQTT_PROP_REASON_STRING, "why", 3);
    mqr__mqtt_pb_user(&b, "k", 1, "v", 1);
    CHECK(mqr__mqtt_pb_finish(&b, &pn) == 0);
    static const char *ack_names[] = {"puback", "pubrec", "pubrel", "pubcomp"};
    for (int t = MQR_MQTT_PUBACK; t <= MQR_MQTT_PUBCOMP; t++) {
        char name[32];
        mqr_mqtt_ack_t a = {.type = (uint8_t)t, .packet_id = 7};
        snprintf(name, sizeof name, "%s-v4", ack_names[t - 4]);
        SEED(name, C4, mqr__mqtt_encode_ack, &a, 4);
        a.reason = t <= MQR_MQTT_PUBREC ? 0x10 : 0x92;
        a.props = (mqr_mqtt_bin_t){props, (uint32_t)pn};
        snprintf(name, sizeof name, "%s-v5", ack_names[t - 4]);
        SEED(name, S5, mqr__mqtt_encode_ack, &a, 5);
    }

    mqr_mqtt_sub_entry_t ents[] = {
        {.filter = {"a/+/c", 5}, .qos = 1},
        {.filter = {"#", 1},
         .qos = 2,
         .no_local = true,
         .retain_as_published = true,
         .retain_handling = 2},
        {.filter = {"$share/g/x/#", 12}, .qos = 0, .retain_handling = 1},
    };
    mqr_mqtt_subscribe_t s = {.packet_id = 10};
    SEED("subscribe-v4", C4, mqr__mqtt_encode_subscribe, &s, ents, 3, 4);
    mqr__mqtt_pb_init(&b, props, sizeof props);
    mqr__mqtt_pb_varint(&b, MQR_MQTT_PROP_SUBSCRIPTION_ID, 16384);
    mqr__mqtt_pb_user(&b, "k", 1, "v", 1);
    CHECK(mqr__mqtt_pb_finish(&b, &pn) == 0);
    s.props = (mqr_mqtt_bin_t){props, (uint32_t)pn};
    SEED("subscribe-v5", C5, mqr__mqtt_encode_subscribe, &s, ents, 3, 5);
    const uint8_t codes[] = {0x00, 0x01, 0x02, 0x80};
    mqr_mqtt_suback_t sa = {.packet_id = 10, .codes = codes, .count = 4};
    SEED("suback-v4", S4, mqr__mqtt_encode_suback, &sa, 4);
    SEED("suback-v5", S5, mqr__mqtt_encode_suback, &sa, 5);
    const mqr_mqtt_str_t filters[] = {{"a/+", 3}, {"$share/g/#", 10}};
    mqr_mqtt_unsubscribe_t u = {.packet_id = 11};
    SEED("unsubscribe-v4", C4, mqr__mqtt_encode_unsubscribe, &u, filters, 2, 4);
    SEED("unsubscribe-v5", C5, mqr__mqtt_encode_unsubscribe, &u, filters, 2, 5);
    const uint8_t ucodes[] = {0x00, 0x11};
    mqr_mqtt_unsuback_t ua = {.packet_id = 11, .codes = ucodes, .count = 2};
    SEED("unsuback-v4", S4, mqr__mqtt_encode_unsuback, &ua, 4);
    SEED("unsuback-v5", S5, mqr__mqtt_encode_unsuback, &ua, 5);

    SEED("pingreq", C4, mqr__mqtt_encode_ping, MQR_MQTT_PINGREQ);
    SEED("pingresp", S5, mqr__mqtt_encode_ping, MQR_MQTT_PINGRESP);

    mqr_mqtt_disconnect_t d = {0};
    SEED("disconnect-v4", C4, mqr__mqtt_encode_disconnect, &d, 4);
    mqr__mqtt_pb_init(&b, props, sizeof props);
    mqr__mqtt_pb_u32(&b, MQR_MQTT_PROP_SESSION_EXPIRY, 10);
    mqr__mqtt_pb_string(&b, MQR_MQTT_PROP_REASON_STRING, "bye", 3);
    CHECK(mqr__mqtt_pb_finish(&b, &pn) == 0);
    d.reason = MQR_MQTT_RC_DISCONNECT_WITH_WILL;
    d.props = (mqr_mqtt_bin_t){props, (uint32_t)pn};
    SEED("disconnect-v5", C5, mqr__mqtt_encode_disconnect, &d, 5);

    mqr__mqtt_pb_init(&b, props, sizeof props);
    mqr__mqtt_pb_string(&b, MQR_MQTT_PROP_AUTH_METHOD, "SCRAM-SHA-1", 11);
    mqr__mqtt_pb_binary(&b, MQR_MQTT_PROP_AUTH_DATA, "\x01\x02", 2);
    CHECK(mqr__mqtt_pb_finish(&b, &pn) == 0);
    mqr_mqtt_auth_t au = {.reason = MQR_MQTT_RC_CONTINUE_AUTH, .props = {props, (uint32_t)pn}};
    SEED("auth-v5", C5, mqr__mqtt_encode_auth, &au, 5);

    /* a stream of several packets, as a socket delivers them */
    uint8_t stream[4096];
    size_t sl = 0, n;
    CHECK(mqr__mqtt_encode_connect(&c4, stream, sizeof stream, &n) == 0);
    sl += n;
    p.qos = 1;
    CHECK(mqr__mqtt_encode_publish(&p, 4, stream + sl, sizeof stream - sl, &n) == 0);
    sl += n;
    CHECK(mqr__mqtt_encode_subscribe(&s, ents, 3, 4, stream + sl, sizeof stream - sl, &n) == 0);
    sl += n;
    CHECK(mqr__mqtt_encode_ping(MQR_MQTT_PINGREQ, stream + sl, sizeof stream - sl, &n) == 0);
    sl += n;
    seed("stream-v4", C4, stream, sl, false);
    printf("%d seeds written to %s\n", g_count, g_dir);
    return 0;
}
#endif
