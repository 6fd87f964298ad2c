/*
 * upstream.c — mqrouter's sessions to other brokers, one Paho MQTTAsync
 * client each.
 *
 * Paho runs every callback of every client on its own threads while holding
 * its one global mutex. The callbacks here therefore only copy the event into
 * the session's queue (under the session's own small mutex) and wake the loop
 * with uv_async_send(); they never touch the engine, never log (a host's log
 * sink may not be thread-safe) and never call Paho. The loop thread drains
 * the queue: it builds messages and routes them, tracks the state, logs,
 * calls the observer and re-subscribes after every (re)connect.
 *
 * Lock order: the loop thread must never call Paho while holding a session's
 * queue mutex — a callback waiting for that mutex holds Paho's global one,
 * and Paho functions take it too.
 *
 * Delivery: Paho acknowledges an incoming QoS 1/2 message to the broker as
 * soon as the messageArrived callback returns 1, before the loop has routed
 * it. A persistent session's callback therefore writes the message to the
 * inbox (upstream_persist.h) first, and the loop deletes it once routed;
 * without persistence a crash in that window loses the message.
 */
#include "upstream.h"
#include "engine_int.h" /* TEMP(issue 12): until upstream takes its deps at init */

#include "topic.h"
#include "topic_map.h"
#include "upstream_persist.h"

#include <MQTTAsync.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* How long a closing session waits for in-flight messages before the
 * connection is dropped anyway. */
#define UP_CLOSE_TIMEOUT_MS 1000
/* Incoming messages queued for the loop; only a stalled loop fills this.
 * Beyond it the newest messages are dropped, counted and warned about: they
 * are acknowledged to the broker all the same — except a persistent
 * session's QoS 1/2 messages, which go to the inbox only and are read back
 * from there (spill/refill below). Handing them back to Paho (returning 0
 * from messageArrived) is no back-pressure: Paho offers a kept message
 * again only when that client's socket next has traffic, one per packet,
 * so they would stall until the next keepalive. */
#define UP_MAX_PENDING_MSGS 100000
#define UP_MAX_PENDING_BYTES (64u * 1024u * 1024u)
/* Spilled messages read back from the inbox per loop turn, at most. */
#define UP_REFILL_BATCH 1000
/* Warnings about messages acknowledged and then dropped: the first at
 * once, then at most one per period with the running count. A session
 * without a stored copy acknowledges every QoS 1/2 message before routing
 * it: that is its configuration, said once and then once a minute. */
#define UP_DROP_WARN_MS 1000
#define UP_UNPROTECTED_WARN_MS 60000
#define UP_CONNECT_TIMEOUT_S 10
#define UP_RETRY_MIN_S 1
#define UP_RETRY_MAX_S 30
/* While a connect is under way, how often another connected session is
 * made to get an answer from its broker (see nudge_connect), and for how
 * many turns at most. */
#define UP_NUDGE_MS 10
#define UP_NUDGE_MAX 200

typedef struct up_sub up_sub_t;
struct up_sub {
    up_sub_t *next;
    unsigned refs;
    int qos;
    MQTTAsync_token token; /* of the last SUBSCRIBE sent, to match its answer */
    bool awaiting;         /* restored after a connect, answer not seen: not ready yet */
    bool pending;          /* a SUBSCRIBE sent and not answered */
    int granted;           /* the last answer: granted QoS (v5: reason code); -1 none */
    char filter[];
};

/* v5 subscription options a rule asked for a filter. */
typedef struct up_subopt up_subopt_t;
struct up_subopt {
    up_subopt_t *next;
    bool no_local, rap;
    int rh; /* < 0: default */
    char filter[];
};

/* A publish whose completion someone waits for (mqr__upstream_publish_cb).
 * Owned by the session's list until its answer is handled on the loop, or
 * until the session is freed. */
typedef struct up_pub up_pub_t;
struct up_pub {
    up_pub_t *next;
    mqr_upstream_t *u;
    mqr_upstream_done_fn done; /* NULL once answered or cancelled */
    void *arg;
    up_sub_t *sub; /* waiting for this subscription's SUBACK (else NULL) */
};

typedef enum {
    EV_MESSAGE,
    EV_CONNECTED,
    EV_CONNECT_FAILED,
    EV_LOST,
    EV_SERVER_DISCONNECT,
    EV_SUB_OK,
    EV_SUB_FAILED,
    EV_CONNECT_OK, /* which URI (text) */
    EV_PUB_DONE,   /* ptr = the up_pub_t, code = 0 or Paho error */
    EV_TLS_ERROR,  /* one line of OpenSSL's error report (text) */
} up_ev_type_t;

/* One event from Paho's threads. A message event carries topic, payload and
 * raw v5 properties in data[]; others may carry a text. */
typedef struct up_event up_event_t;
struct up_event {
    up_event_t *next;
    up_ev_type_t type;
    int code;   /* Paho return code, granted QoS... */
    int reason; /* MQTT reason code, v5 */
    MQTTAsync_token token;
    void *ptr;
    uint8_t qos;
    bool retain;
    uint32_t expiry_s;
    uint64_t arrived_ms;
    uint64_t inbox_seq; /* EV_MESSAGE kept in the inbox under this seq; 0 = not kept */
    size_t topic_len;
    size_t payload_len;
    size_t props_len;
    const char *text; /* NUL-terminated inside data[], or NULL */
    char data[];
};

struct mqr_upstream {
    mqr_upstream_t *next; /* e->sessions */
    mqr_engine_t *e;
    char *name;
    char *uri;
    char *client_id;
    char *username;
    char *password;
    int keepalive_s;
    int clean_start;
    int version; /* 4 or 5 */
    int max_buffered;
    bool drop_oldest; /* a full buffer drops its oldest (else refuses the newest) */
    bool full_warned; /* warn_full said so since the last connect */
    char **uris;      /* failover list, n_uris of them (0: uri alone) */
    int n_uris;
    char *will_topic;
    void *will_payload;
    size_t will_payload_len;
    int will_qos, will_retain;
    int64_t session_expiry_s;
    int retry_initial_s, retry_max_s, max_reconnects;
    char *prefix; /* NULL = none */
    size_t prefix_len;
    mqr_topic_map_t *map; /* level mapping (topic_map.h); NULL = none */
    up_subopt_t *subopts;
    up_pub_t *pubs;
    struct {
        bool on; /* a broker URI is ssl://, mqtts:// or wss://: connect with SSL options */
        char *cafile, *capath, *cert, *key, *key_password;
        bool no_verify, no_verify_hostname;
        char error[200]; /* loop: OpenSSL's reasons since the last attempt ended */
    } tls;

    /* Persistence (upstream_persist.h): records keyed by the name. A session
     * replacing an open one of the same name (a reload with other settings)
     * must not have a Paho client reading and writing those records while
     * the old one still does: it stays without a client ("dormant") until
     * the predecessor is destroyed, then restores what it left. Publishes
     * meanwhile wait in early[]. */
    bool persistent;
    bool discard;         /* close gives the records up (loop thread) */
    bool discard_records; /* decided at begin_close, read by the destroying worker */
    MQTTClient_persistence phooks;
    mqr_upstream_t *predecessor, *successor;
    struct up_early {
        mqr_msg_t *msg;
        up_pub_t *pub;
    } * early;
    size_t n_early, cap_early;
    /* A lost clean = false persistent session rebuilds its Paho client from
     * the records (see rebuild_client); no Paho call while this is set. */
    bool rebuilding;
    uv_work_t rebuild_req;
    bool inbox_loaded;   /* this session routed what an earlier one left */
    uint64_t inbox_seq;  /* last seq given (under lock: Paho's thread) */
    uint64_t inbox_fail; /* messages not written to the inbox (under lock) */
    /* Spilling (under lock): the incoming queue was full, so a persistent
     * session's QoS 1/2 messages go to the inbox only, and every later one
     * too until the loop has read them all back, so that order is kept.
     * spill_next: the next seq the loop reads back; spill_settled: the
     * last seq Paho's thread finished with (written, or given up). */
    bool spilling;
    uint64_t spill_next, spill_settled;

    /* Loop thread only: what status() reports. */
    char broker[256];
    char last_error[256];
    uint64_t last_error_at_ms;
    uint64_t connected_since_ms;
    uint64_t last_message_at_ms;
    unsigned attempt;       /* failed connect attempts in a row */
    unsigned retries;       /* retries scheduled since the last connect: the backoff step */
    unsigned subs_awaiting; /* restored subscriptions not answered yet */
    bool ready;

    MQTTAsync client;
    mqr_upstream_state_t state;
    bool closing;
    bool ever_connected;
    bool connect_failing;    /* a failure was logged since the last connect */
    char server_reason[160]; /* v5 DISCONNECT from the broker, for the next "lost" */
    mqr_upstream_event_fn observer;
    void *observer_arg;
    mqr_upstream_credentials_fn credentials;
    void *credentials_arg;
    up_sub_t *subs;
    uv_async_t async;
    uv_timer_t retry; /* next connect attempt */
    uv_timer_t nudge; /* while connect_pending: see nudge_connect */
    bool connect_pending;
    unsigned nudges;
    int open_handles; /* async, retry, nudge and warn, until all closed */
    uv_work_t destroy_req;

    /* Shared with Paho's threads (and the destroying worker): under lock. */
    uv_mutex_t lock;
    uv_cond_t cond;
    up_event_t *head;
    up_event_t *tail;
    size_t pending_msgs;
    size_t pending_bytes;
    size_t max_pending_msgs, max_pending_bytes; /* UP_MAX_PENDING_*; a test lowers them */
    uint64_t dropped;     /* incoming messages dropped: queue full or no memory */
    uint64_t unprotected; /* QoS 1/2 queued for routing, acknowledged, no stored copy */
    uint64_t spilled;     /* QoS 1/2 of a persistent session kept in the inbox only */
    uint64_t delivered;   /* QoS 1/2 publishes the broker completed */
    bool disconnect_done;

    /* Loop thread only. */
    struct {
        uint64_t received;       /* messages that arrived from the broker */
        uint64_t refused;        /* of those, not routed (bad topic, no memory, router refused) */
        uint64_t sent;           /* publishes accepted by Paho (sent or buffered) */
        uint64_t full;           /* publishes refused: buffer full */
        uint64_t dropped_oldest; /* buffered publishes dropped to make room (drop_oldest) */
        uint64_t expired;        /* publishes dropped: message expired */
        uint64_t props_dropped;  /* publishes sent without their malformed v5 properties */
        uint64_t connects;
        uint64_t connect_failures;
        uint64_t reconnects;
        uint64_t bytes_sent;
        uint64_t bytes_received;
        uint64_t publish_failed;
        uint64_t not_kept; /* routed, but a subscriber that had to keep it could not */
    } stats;
    uint64_t buffered;         /* publishes accepted while not connected, since the last connect */
    uint64_t dropped_seen;     /* u->dropped when last warned about */
    uint64_t unprotected_seen; /* u->unprotected when last warned about */
    uint64_t not_kept_seen;    /* u->stats.not_kept when last warned about */
    uint64_t not_kept_warned_ms;
    uint64_t drop_warned_ms, unprotected_warned_ms; /* mqr__now_ms() of those warnings */
    uv_timer_t warn; /* a warning held back by the rate limit comes then */
};

/* PAHO_MEMORY_ERROR, not in the public header */
#define PAHO_OOM (-99)

static uint64_t wall_ms(void)
{
    struct timespec ts;
    if (!timespec_get(&ts, TIME_UTC)) return (uint64_t)time(NULL) * 1000u;
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static char *xstrdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

static int map_paho(int rc)
{
    switch (rc) {
    case MQTTASYNC_SUCCESS:
        return 0;
    case MQTTASYNC_MAX_BUFFERED_MESSAGES:
    case MQTTASYNC_MAX_MESSAGES_INFLIGHT:
    case MQTTASYNC_NO_MORE_MSGIDS:
        return MQR_EFULL;
    case MQTTASYNC_DISCONNECTED:
        return MQR_ENOTCONN;
    case MQTTASYNC_BAD_UTF8_STRING:
        return MQR_EUTF8;
    case MQTTASYNC_BAD_QOS:
        return MQR_EQOS;
    case MQTTASYNC_NULL_PARAMETER:
    case MQTTASYNC_TOPICNAME_TRUNCATED:
    case MQTTASYNC_BAD_STRUCTURE:
    case MQTTASYNC_BAD_PROTOCOL:
    case MQTTASYNC_BAD_MQTT_OPTION:
    case MQTTASYNC_WRONG_MQTT_VERSION:
    case MQTTASYNC_SSL_NOT_SUPPORTED:
        return MQR_EINVAL;
    case PAHO_OOM:
        return MQR_ENOMEM;
    default:
        return MQR_EUPSTREAM;
    }
}

/* Text for a failed connect: Paho error, v3 CONNACK code or v5 reason code. */
static void describe_failure(char *buf, size_t n, int code, int reason, const char *text)
{
    static const char *const connack[] = {
        NULL,
        "unacceptable protocol version",
        "identifier rejected",
        "server unavailable",
        "bad user name or password",
        "not authorized",
    };
    const char *what = NULL;
    if (reason >= 0x80)
        what = MQTTReasonCode_toString((enum MQTTReasonCodes)reason);
    else if (code > 0 && code <= 5)
        what = connack[code];
    else if (code < 0 && code >= MQTTASYNC_MAX_BUFFERED)
        what = MQTTAsync_strerror(code);
    if (what && text)
        snprintf(buf, n, "%s (%s)", what, text);
    else if (what)
        snprintf(buf, n, "%s", what);
    else if (text)
        snprintf(buf, n, "%s", text);
    else
        snprintf(buf, n, "error %d", code);
}

/* ---- v5 properties: Paho's list <-> raw bytes ---------------------------- */

static size_t vbi_len(uint32_t v)
{
    return v < 128u ? 1 : v < 16384u ? 2 : v < 2097152u ? 3 : 4;
}

static uint8_t *put_u16(uint8_t *p, unsigned v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
    return p + 2;
}

static uint8_t *put_lenstr(uint8_t *p, const MQTTLenString *s)
{
    p = put_u16(p, (unsigned)s->len);
    if (s->len > 0) memcpy(p, s->data, (size_t)s->len);
    return p + s->len;
}

/* What the engine keeps of an incoming message's properties: everything but
 * Topic Alias and Subscription Identifier (meaningful only on that one
 * connection). Message Expiry stays, as the listener keeps it (rules read
 * it in msg.properties; a listener subscriber served within the first
 * second gets the properties as they are): the broker sent what is left of
 * it (MQTT 5 §3.3.2.3.3), and msg->expiry_s, counted from arrival, carries
 * the same number for the engine's own expiry checks. */
static bool keep_prop(int id)
{
    return id != MQTTPROPERTY_CODE_TOPIC_ALIAS && id != MQTTPROPERTY_CODE_SUBSCRIPTION_IDENTIFIER;
}

/* Bytes props_encode() will write. Runs on Paho's thread: pure. */
static size_t props_encoded_len(const MQTTProperties *props)
{
    size_t n = 0;
    for (int i = 0; i < props->count; i++) {
        const MQTTProperty *p = &props->array[i];
        if (!keep_prop(p->identifier)) continue;
        switch (MQTTProperty_getType(p->identifier)) {
        case MQTTPROPERTY_TYPE_BYTE:
            n += 2;
            break;
        case MQTTPROPERTY_TYPE_TWO_BYTE_INTEGER:
            n += 3;
            break;
        case MQTTPROPERTY_TYPE_FOUR_BYTE_INTEGER:
            n += 5;
            break;
        case MQTTPROPERTY_TYPE_VARIABLE_BYTE_INTEGER:
            n += 1 + vbi_len(p->value.integer4);
            break;
        case MQTTPROPERTY_TYPE_BINARY_DATA:
        case MQTTPROPERTY_TYPE_UTF_8_ENCODED_STRING:
            n += 3 + (size_t)p->value.data.len;
            break;
        case MQTTPROPERTY_TYPE_UTF_8_STRING_PAIR:
            n += 5 + (size_t)p->value.data.len + (size_t)p->value.value.len;
            break;
        default:
            break;
        }
    }
    return n;
}

/* Writes the kept properties as raw MQTT bytes; returns the Message Expiry
 * Interval (0 = none). Runs on Paho's thread: pure. */
static uint32_t props_encode(const MQTTProperties *props, uint8_t *out)
{
    uint32_t expiry = 0;
    for (int i = 0; i < props->count; i++) {
        const MQTTProperty *p = &props->array[i];
        if (p->identifier == MQTTPROPERTY_CODE_MESSAGE_EXPIRY_INTERVAL) expiry = p->value.integer4;
        if (!keep_prop(p->identifier)) continue;
        int type = MQTTProperty_getType(p->identifier);
        if (type < 0) continue;
        *out++ = (uint8_t)p->identifier; /* every defined identifier fits one byte */
        switch (type) {
        case MQTTPROPERTY_TYPE_BYTE:
            *out++ = p->value.byte;
            break;
        case MQTTPROPERTY_TYPE_TWO_BYTE_INTEGER:
            out = put_u16(out, p->value.integer2);
            break;
        case MQTTPROPERTY_TYPE_FOUR_BYTE_INTEGER:
            out = put_u16(out, p->value.integer4 >> 16);
            out = put_u16(out, p->value.integer4 & 0xffffu);
            break;
        case MQTTPROPERTY_TYPE_VARIABLE_BYTE_INTEGER: {
            uint32_t v = p->value.integer4;
            do {
                uint8_t b = v & 0x7f;
                v >>= 7;
                *out++ = v ? (uint8_t)(b | 0x80) : b;
            } while (v);
            break;
        }
        case MQTTPROPERTY_TYPE_BINARY_DATA:
        case MQTTPROPERTY_TYPE_UTF_8_ENCODED_STRING:
            out = put_lenstr(out, &p->value.data);
            break;
        case MQTTPROPERTY_TYPE_UTF_8_STRING_PAIR:
            out = put_lenstr(out, &p->value.data);
            out = put_lenstr(out, &p->value.value);
            break;
        default:
            break;
        }
    }
    return expiry;
}

static int get_lenstr(const uint8_t *raw, size_t len, size_t *i, MQTTLenString *s)
{
    if (len - *i < 2) return MQR_EMALFORMED;
    size_t n = ((size_t)raw[*i] << 8) | raw[*i + 1];
    *i += 2;
    if (len - *i < n) return MQR_EMALFORMED;
    s->len = (int)n;
    s->data = (char *)(raw + *i);
    *i += n;
    return 0;
}

/* Parses a message's raw properties into Paho's list (which copies strings).
 * Only properties a PUBLISH may carry are accepted; Message Expiry is left
 * out because msg->expiry_s is authoritative (the caller adds what remains
 * of it), Topic Alias and Subscription Identifier because they belong to the
 * connection the message came in on. Anything else is MQR_EMALFORMED. */
static int props_decode(const uint8_t *raw, size_t len, MQTTProperties *out)
{
    size_t i = 0;
    while (i < len) {
        MQTTProperty p;
        memset(&p, 0, sizeof p);
        int id = raw[i++];
        p.identifier = (enum MQTTPropertyCodes)id;
        bool skip = false;
        int rc = 0;
        switch (id) {
        case MQTTPROPERTY_CODE_PAYLOAD_FORMAT_INDICATOR:
            if (len - i < 1) return MQR_EMALFORMED;
            p.value.byte = raw[i++];
            break;
        case MQTTPROPERTY_CODE_MESSAGE_EXPIRY_INTERVAL:
            if (len - i < 4) return MQR_EMALFORMED;
            i += 4;
            skip = true;
            break;
        case MQTTPROPERTY_CODE_TOPIC_ALIAS:
            if (len - i < 2) return MQR_EMALFORMED;
            i += 2;
            skip = true;
            break;
        case MQTTPROPERTY_CODE_SUBSCRIPTION_IDENTIFIER: {
            int n = 0;
            while (i < len && (raw[i] & 0x80) && n < 3) {
                i++;
                n++;
            }
            if (i >= len || (raw[i] & 0x80)) return MQR_EMALFORMED;
            i++;
            skip = true;
            break;
        }
        case MQTTPROPERTY_CODE_CONTENT_TYPE:
        case MQTTPROPERTY_CODE_RESPONSE_TOPIC:
        case MQTTPROPERTY_CODE_CORRELATION_DATA:
            rc = get_lenstr(raw, len, &i, &p.value.data);
            break;
        case MQTTPROPERTY_CODE_USER_PROPERTY:
            rc = get_lenstr(raw, len, &i, &p.value.data);
            if (rc == 0) rc = get_lenstr(raw, len, &i, &p.value.value);
            break;
        default:
            return MQR_EMALFORMED;
        }
        if (rc < 0) return rc;
        if (!skip && MQTTProperties_add(out, &p) != 0) return MQR_ENOMEM;
    }
    return 0;
}

/* ---- Paho's side: copy, queue, wake ------------------------------------- */

static up_event_t *ev_new(up_ev_type_t type, size_t extra, const char *text)
{
    size_t tlen = text ? strlen(text) + 1 : 0;
    up_event_t *ev = malloc(sizeof *ev + extra + tlen);
    if (!ev) return NULL;
    memset(ev, 0, sizeof *ev);
    ev->type = type;
    if (text) {
        memcpy(ev->data + extra, text, tlen);
        ev->text = ev->data + extra;
    }
    return ev;
}

static void ev_push(mqr_upstream_t *u, up_event_t *ev)
{
    uv_mutex_lock(&u->lock);
    if (u->tail)
        u->tail->next = ev;
    else
        u->head = ev;
    u->tail = ev;
    if (ev->type == EV_MESSAGE) {
        u->pending_msgs++;
        u->pending_bytes += ev->topic_len + ev->payload_len + ev->props_len;
        /* acknowledged by Paho with no inbox row behind it (on_message) */
        if (ev->qos > 0 && !ev->inbox_seq) u->unprotected++;
    }
    uv_mutex_unlock(&u->lock);
    uv_async_send(&u->async);
}

/* Events that carry no data. If memory is short the event is lost; the loop
 * then misses one state change, which the next one corrects. */
static void push_simple(mqr_upstream_t *u, up_ev_type_t type, int code, int reason,
                        MQTTAsync_token token, const char *text)
{
    up_event_t *ev = ev_new(type, 0, text);
    if (!ev) return;
    ev->code = code;
    ev->reason = reason;
    ev->token = token;
    ev_push(u, ev);
}

/* Paho's thread: writes an incoming QoS 1/2 message to the inbox under seq
 * before Paho acknowledges it (see upstream_persist.h); ev->inbox_seq says
 * it was written. */
static void inbox_keep(mqr_upstream_t *u, up_event_t *ev, uint64_t seq)
{
    mqr_upstream_inbox_rec_t r = {
        .seq = seq,
        .qos = ev->qos,
        .retain = ev->retain,
        .expiry_s = ev->expiry_s,
        .arrived_ms = ev->arrived_ms,
        .topic_len = ev->topic_len,
        .payload_len = ev->payload_len,
        .props_len = ev->props_len,
        .data = ev->data,
        .data_len = ev->topic_len + 1 + ev->payload_len + ev->props_len,
    };
    if (mqr__upstream_inbox_put(u->e->upstream_persist, u->name, &r) == 0) {
        ev->inbox_seq = seq;
    } else {
        uv_mutex_lock(&u->lock);
        u->inbox_fail++;
        uv_mutex_unlock(&u->lock);
    }
}

/* Every message Paho hands us is acknowledged to the broker when this
 * returns 1 (QoS 1/2), whatever became of it. So each way it can go is
 * counted: queued with a stored copy (persistent), queued without one
 * (unprotected: a crash before routing loses it), kept in the inbox only
 * (spilled: read back by the loop, nothing lost), or dropped (the queue
 * was full, or no memory). */
static int on_message(void *ctx, char *topic, int topic_len, MQTTAsync_message *m)
{
    mqr_upstream_t *u = ctx;
    size_t tlen = topic_len > 0 ? (size_t)topic_len : strlen(topic);
    size_t plen = m->payloadlen > 0 ? (size_t)m->payloadlen : 0;
    size_t xlen = u->version == MQTTVERSION_5 ? props_encoded_len(&m->properties) : 0;
    bool keep = u->persistent && m->qos > 0;

    uv_mutex_lock(&u->lock);
    /* A lone message larger than the byte limit still passes. */
    bool full =
        u->pending_msgs > 0 && (u->pending_msgs >= u->max_pending_msgs ||
                                u->pending_bytes + tlen + plen + xlen > u->max_pending_bytes);
    uint64_t seq = keep ? ++u->inbox_seq : 0;
    bool spill = keep && (full || u->spilling);
    if (spill && !u->spilling) {
        u->spilling = true;
        u->spill_next = seq;
    }
    uv_mutex_unlock(&u->lock);
    up_event_t *ev = full && !spill ? NULL : ev_new(EV_MESSAGE, tlen + 1 + plen + xlen, NULL);
    if (ev) {
        ev->arrived_ms = mqr__now_ms();
        ev->qos = (uint8_t)m->qos;
        ev->retain = m->retained != 0;
        ev->topic_len = tlen;
        ev->payload_len = plen;
        ev->props_len = xlen;
        memcpy(ev->data, topic, tlen);
        ev->data[tlen] = '\0';
        if (plen) memcpy(ev->data + tlen + 1, m->payload, plen);
        if (u->version == MQTTVERSION_5)
            ev->expiry_s = props_encode(&m->properties, (uint8_t *)ev->data + tlen + 1 + plen);
        if (keep) inbox_keep(u, ev, seq);
    }
    MQTTAsync_freeMessage(&m);
    MQTTAsync_free(topic);
    if (ev && !spill) {
        ev_push(u, ev); /* counts it as unprotected without an inbox row */
        return 1;
    }
    uv_mutex_lock(&u->lock);
    if (ev && ev->inbox_seq)
        u->spilled++;
    else
        u->dropped++;
    if (spill) u->spill_settled = seq;
    uv_mutex_unlock(&u->lock);
    free(ev);
    /* the loop reads a spilled message back, or warns about the drop */
    uv_async_send(&u->async);
    return 1;
}

static void on_connected(void *ctx, char *cause)
{
    push_simple(ctx, EV_CONNECTED, 0, 0, 0, NULL);
}

static void on_lost(void *ctx, char *cause)
{
    push_simple(ctx, EV_LOST, 0, 0, 0, cause);
}

static void on_server_disconnect(void *ctx, MQTTProperties *props, enum MQTTReasonCodes rc)
{
    char text[128];
    const char *t = NULL;
    MQTTProperty *rs =
        props ? MQTTProperties_getProperty(props, MQTTPROPERTY_CODE_REASON_STRING) : NULL;
    if (rs && rs->value.data.data) {
        snprintf(text, sizeof text, "%.*s", rs->value.data.len < 100 ? rs->value.data.len : 100,
                 rs->value.data.data);
        t = text;
    }
    push_simple(ctx, EV_SERVER_DISCONNECT, 0, (int)rc, 0, t);
}

/* Paho's OpenSSL error report (ERR_print_errors_cb), one line per call,
 * when making the TLS context or the handshake fails. The loop extracts
 * the reason; returning 1 asks for the next line. */
static int on_ssl_error(const char *str, size_t len, void *ctx)
{
    char line[256];
    snprintf(line, sizeof line, "%.*s", (int)(len < sizeof line ? len : sizeof line - 1), str);
    push_simple(ctx, EV_TLS_ERROR, 0, 0, 0, line);
    return 1;
}

static void on_delivered(void *ctx, MQTTAsync_token token)
{
    mqr_upstream_t *u = ctx;
    uv_mutex_lock(&u->lock);
    u->delivered++;
    uv_mutex_unlock(&u->lock);
}

static void on_connect_failure(void *ctx, MQTTAsync_failureData *d)
{
    push_simple(ctx, EV_CONNECT_FAILED, d ? d->code : 0, 0, 0, d ? d->message : NULL);
}

static void on_connect_failure5(void *ctx, MQTTAsync_failureData5 *d)
{
    push_simple(ctx, EV_CONNECT_FAILED, d ? d->code : 0, d ? (int)d->reasonCode : 0, 0,
                d ? d->message : NULL);
}

static void on_connect_ok(void *ctx, MQTTAsync_successData *d)
{
    push_simple(ctx, EV_CONNECT_OK, 0, 0, 0, d ? d->alt.connect.serverURI : NULL);
}

static void on_connect_ok5(void *ctx, MQTTAsync_successData5 *d)
{
    push_simple(ctx, EV_CONNECT_OK, 0, 0, 0, d ? d->alt.connect.serverURI : NULL);
}

static void push_pub_done(up_pub_t *p, int code, int reason)
{
    up_event_t *ev = ev_new(EV_PUB_DONE, 0, NULL);
    if (!ev) return; /* the waiter times out; the record goes with the session */
    ev->code = code;
    ev->reason = reason;
    ev->ptr = p;
    ev_push(p->u, ev);
}

static void on_pub_ok(void *ctx, MQTTAsync_successData *d)
{
    push_pub_done(ctx, 0, 0);
}

static void on_pub_ok5(void *ctx, MQTTAsync_successData5 *d)
{
    push_pub_done(ctx, 0, d ? (int)d->reasonCode : 0);
}

static void on_pub_failed(void *ctx, MQTTAsync_failureData *d)
{
    push_pub_done(ctx, d && d->code ? d->code : MQTTASYNC_FAILURE, 0);
}

static void on_pub_failed5(void *ctx, MQTTAsync_failureData5 *d)
{
    push_pub_done(ctx, d && d->code ? d->code : MQTTASYNC_FAILURE, d ? (int)d->reasonCode : 0);
}

static void on_sub_ok(void *ctx, MQTTAsync_successData *d)
{
    push_simple(ctx, EV_SUB_OK, d ? d->alt.qos : 0, 0, d ? d->token : 0, NULL);
}

static void on_sub_ok5(void *ctx, MQTTAsync_successData5 *d)
{
    push_simple(ctx, EV_SUB_OK, d ? (int)d->reasonCode : 0, 0, d ? d->token : 0, NULL);
}

static void on_sub_failed(void *ctx, MQTTAsync_failureData *d)
{
    push_simple(ctx, EV_SUB_FAILED, d ? d->code : 0, 0, d ? d->token : 0, NULL);
}

static void on_sub_failed5(void *ctx, MQTTAsync_failureData5 *d)
{
    push_simple(ctx, EV_SUB_FAILED, d ? d->code : 0, d ? (int)d->reasonCode : 0, d ? d->token : 0,
                NULL);
}

/* The closing worker waits for these (see destroy_work). */
static void on_disconnect_done(void *ctx)
{
    mqr_upstream_t *u = ctx;
    uv_mutex_lock(&u->lock);
    u->disconnect_done = true;
    uv_cond_signal(&u->cond);
    uv_mutex_unlock(&u->lock);
}

static void on_disconnect_ok(void *ctx, MQTTAsync_successData *d)
{
    on_disconnect_done(ctx);
}

static void on_disconnect_failed(void *ctx, MQTTAsync_failureData *d)
{
    on_disconnect_done(ctx);
}

/* ---- loop side ---------------------------------------------------------- */

/* ---- observers (every session of an engine) ------------------------------
 * The engine struct has no slot for them, so they live in one process-wide
 * list keyed by engine. Engines on different threads may use it at once:
 * the list is under a mutex, never held while an observer runs. */

typedef struct up_obs up_obs_t;
struct up_obs {
    up_obs_t *next;
    mqr_engine_t *e;
    mqr_upstream_observer_fn fn;
    void *arg;
    uint64_t seq; /* registration order: emit() walks by it, see there */
};

typedef struct up_wait up_wait_t;
struct up_wait {
    up_wait_t *next; /* waits, while the timer is open */
    mqr_engine_t *e;
    char *name; /* NULL = every session */
    mqr_upstream_ready_fn cb;
    void *arg;
    uv_timer_t timer;
    bool done;
};

static uv_once_t obs_once = UV_ONCE_INIT;
static uv_mutex_t obs_lock;
static up_obs_t *observers;
static uint64_t obs_seq; /* last seq given, under obs_lock */
static up_wait_t *waits;

static void obs_init(void)
{
    uv_mutex_init(&obs_lock);
}

int mqr__upstream_observe(mqr_engine_t *e, mqr_upstream_observer_fn fn, void *arg)
{
    uv_once(&obs_once, obs_init);
    up_obs_t *o = malloc(sizeof *o);
    if (!o) return MQR_ENOMEM;
    o->e = e;
    o->fn = fn;
    o->arg = arg;
    uv_mutex_lock(&obs_lock);
    o->seq = ++obs_seq;
    up_obs_t **pp = &observers;
    while (*pp && !((*pp)->e == e && (*pp)->fn == fn && (*pp)->arg == arg))
        pp = &(*pp)->next;
    if (*pp) {
        free(o);
        o = NULL;
    } else {
        o->next = NULL; /* appended: observers run in the order added */
        *pp = o;
    }
    uv_mutex_unlock(&obs_lock);
    return o ? 0 : MQR_EEXIST;
}

void mqr__upstream_unobserve(mqr_engine_t *e, mqr_upstream_observer_fn fn, void *arg)
{
    uv_once(&obs_once, obs_init);
    uv_mutex_lock(&obs_lock);
    for (up_obs_t **pp = &observers; *pp; pp = &(*pp)->next) {
        up_obs_t *o = *pp;
        if (o->e == e && o->fn == fn && o->arg == arg) {
            *pp = o->next;
            free(o);
            break;
        }
    }
    uv_mutex_unlock(&obs_lock);
}

/* Observers may (un)register others and close sessions while we iterate,
 * so no pointer into the list is kept across a call: each step takes, under
 * the lock, the observer of e with the next higher seq among those present
 * when emit began. One removed before its turn is not called; one added
 * meanwhile waits for the next event. No snapshot array, so no cap on the
 * number of observers (quadratic in it, and there are a handful). */
static void emit(mqr_upstream_t *u, mqr_upstream_event_t *ev)
{
    ev->u = u;
    ev->name = u->name;
    ev->time_ms = wall_ms();
    if (!ev->broker) ev->broker = u->broker[0] ? u->broker : u->uri;
    uv_once(&obs_once, obs_init);
    uv_mutex_lock(&obs_lock);
    uint64_t last = obs_seq, after = 0;
    uv_mutex_unlock(&obs_lock);
    for (;;) {
        mqr_upstream_observer_fn fn = NULL;
        void *arg = NULL;
        uint64_t next = UINT64_MAX;
        uv_mutex_lock(&obs_lock);
        for (up_obs_t *o = observers; o; o = o->next)
            if (o->e == u->e && o->seq > after && o->seq <= last) {
                next = o->seq; /* the list is in seq order: the first is the next */
                fn = o->fn;
                arg = o->arg;
                break;
            }
        uv_mutex_unlock(&obs_lock);
        if (!fn) return;
        after = next;
        fn(arg, ev);
    }
}

static void emit_simple(mqr_upstream_t *u, mqr_upstream_event_type_t type, const char *reason,
                        unsigned attempt)
{
    mqr_upstream_event_t ev = {.type = type, .reason = reason, .attempt = attempt};
    emit(u, &ev);
}

const char *mqr__upstream_state_name(mqr_upstream_state_t st)
{
    static const char *const names[] = {"connecting", "connected", "disconnected", "closed",
                                        "failed"};
    return (unsigned)st < sizeof names / sizeof names[0] ? names[st] : "?";
}

const char *mqr__upstream_event_name(mqr_upstream_event_type_t t)
{
    static const char *const names[] = {
        "session_added",   "session_connecting",    "session_connected",
        "session_ready",   "session_disconnected",  "session_reconnecting",
        "session_removed", "session_state_changed", "session_failed",
    };
    return (unsigned)t < sizeof names / sizeof names[0] ? names[t] : "?";
}

static void set_state(mqr_upstream_t *u, mqr_upstream_state_t st, const char *reason)
{
    if (u->state == st) return;
    mqr_upstream_state_t old = u->state;
    u->state = st;
    MQR_LOG_I("upstream", "session '%s' %s (%s): %s", u->name, mqr__upstream_state_name(st),
              u->broker[0] ? u->broker : u->uri, reason);
    if (st != MQR_UPSTREAM_CONNECTED) {
        u->ready = false;
        u->connected_since_ms = 0;
    }
    mqr_upstream_event_t ev = {
        .type = MQR_UPEV_STATE_CHANGED, .reason = reason, .old_state = old, .new_state = st};
    emit(u, &ev);
    if (u->observer && st <= MQR_UPSTREAM_CLOSED) u->observer(u->observer_arg, u, st, reason);
}

static void note_error(mqr_upstream_t *u, const char *why)
{
    snprintf(u->last_error, sizeof u->last_error, "%s", why);
    u->last_error_at_ms = wall_ms();
}

static void check_ready(mqr_upstream_t *u)
{
    if (u->ready || u->closing || u->state != MQR_UPSTREAM_CONNECTED || u->subs_awaiting) return;
    u->ready = true;
    emit_simple(u, MQR_UPEV_READY, NULL, 0);
}

/* The filter as sent upstream: the session's prefix goes after a
 * "$share/<group>/" part. Returns malloc'd text, or NULL without a prefix
 * (then use filter) — or when out of memory (*oom set). */
static char *remote_name(const mqr_upstream_t *u, const char *filter, bool *oom)
{
    *oom = false;
    if (!u->prefix && !u->map) return NULL;
    size_t skip = 0;
    if (strncmp(filter, "$share/", 7) == 0) {
        const char *slash = strchr(filter + 7, '/');
        if (slash) skip = (size_t)(slash + 1 - filter);
    }
    if (u->map) { /* a rule that matches wins over the prefix */
        char *mapped = mqr__topic_map_apply(u->map, MQR_MAP_TO_REMOTE, filter + skip, oom);
        if (*oom) return NULL;
        if (mapped && !skip) return mapped;
        if (mapped) {
            size_t n = skip + strlen(mapped) + 1;
            char *r = malloc(n);
            if (r) snprintf(r, n, "%.*s%s", (int)skip, filter, mapped);
            *oom = !r;
            free(mapped);
            return r;
        }
    }
    if (!u->prefix) return NULL;
    size_t n = strlen(filter) + u->prefix_len + 1;
    char *r = malloc(n);
    if (!r) {
        *oom = true;
        return NULL;
    }
    snprintf(r, n, "%.*s%s%s", (int)skip, filter, u->prefix, filter + skip);
    return r;
}

static up_subopt_t *subopt_find(const mqr_upstream_t *u, const char *filter)
{
    for (up_subopt_t *o = u->subopts; o; o = o->next)
        if (strcmp(o->filter, filter) == 0) return o;
    return NULL;
}

static int send_subscribe(mqr_upstream_t *u, up_sub_t *s)
{
    MQTTAsync_responseOptions r = MQTTAsync_responseOptions_initializer;
    r.context = u;
    if (u->version == MQTTVERSION_5) {
        r.onSuccess5 = on_sub_ok5;
        r.onFailure5 = on_sub_failed5;
        /* Re-subscribing after a reconnect must not replay retained
         * messages for a subscription the broker kept. */
        r.subscribeOptions.retainHandling = 1;
        up_subopt_t *o = subopt_find(u, s->filter);
        if (o) {
            r.subscribeOptions.noLocal = o->no_local;
            r.subscribeOptions.retainAsPublished = o->rap;
            if (o->rh >= 0) r.subscribeOptions.retainHandling = (unsigned char)o->rh;
        }
    } else {
        r.onSuccess = on_sub_ok;
        r.onFailure = on_sub_failed;
    }
    bool oom;
    char *remote = remote_name(u, s->filter, &oom);
    int rc =
        oom ? PAHO_OOM : MQTTAsync_subscribe(u->client, remote ? remote : s->filter, s->qos, &r);
    free(remote);
    if (rc == MQTTASYNC_SUCCESS) {
        s->token = r.token;
        s->pending = true;
    } else if (rc != MQTTASYNC_DISCONNECTED) {
        /* DISCONNECTED: the loss is queued for us; we subscribe again on
         * reconnect. */
        MQR_LOG_W("upstream", "session '%s': cannot subscribe to '%s': %s", u->name, s->filter,
                  MQTTAsync_strerror(rc));
    }
    return rc;
}

static up_sub_t *sub_by_token(mqr_upstream_t *u, MQTTAsync_token token)
{
    for (up_sub_t *s = u->subs; s; s = s->next)
        if (s->token == token) return s;
    return NULL;
}

static void route_message(mqr_upstream_t *u, up_event_t *ev);
static void report_losses(mqr_upstream_t *u);
static void route_named(mqr_upstream_t *u, up_event_t *ev, const char *topic, size_t topic_len);

/* Routes a message event, then forgets its inbox copy: routed (or refused
 * for good) is done. */
static void deliver(mqr_upstream_t *u, up_event_t *ev)
{
    route_message(u, ev);
    if (ev->inbox_seq) mqr__upstream_inbox_delete(u->e->upstream_persist, u->name, ev->inbox_seq);
}

static void route_message(mqr_upstream_t *u, up_event_t *ev)
{
    u->stats.received++;
    u->stats.bytes_received += ev->payload_len;
    u->last_message_at_ms = wall_ms();
    const char *topic = ev->data;
    size_t topic_len = ev->topic_len;
    bool oom = false;
    char *mapped = u->map ? mqr__topic_map_apply(u->map, MQR_MAP_TO_LOCAL, topic, &oom) : NULL;
    if (mapped) {
        topic = mapped;
        topic_len = strlen(mapped);
    } else if (u->prefix && topic_len > u->prefix_len &&
               memcmp(topic, u->prefix, u->prefix_len) == 0) {
        topic += u->prefix_len;
        topic_len -= u->prefix_len;
    }
    if (oom) {
        u->stats.refused++;
        MQR_LOG_W("upstream", "session '%s': dropped a message: out of memory", u->name);
        return;
    }
    route_named(u, ev, topic, topic_len);
    free(mapped);
}

/* Routes ev under the (rewritten) local topic. */
static void route_named(mqr_upstream_t *u, up_event_t *ev, const char *topic, size_t topic_len)
{
    int rc = mqr__topic_name_validate(topic, topic_len);
    if (rc < 0) {
        u->stats.refused++;
        MQR_LOG_W("upstream", "session '%s': dropped a message with an invalid topic: %s", u->name,
                  mqr_strerror(rc));
        return;
    }
    mqr_msg_init_t in = {
        .topic = topic,
        .topic_len = topic_len,
        .payload = ev->data + ev->topic_len + 1,
        .payload_len = ev->payload_len,
        .props = (const uint8_t *)ev->data + ev->topic_len + 1 + ev->payload_len,
        .props_len = ev->props_len,
        .qos = ev->qos,
        .retain = ev->retain,
        .origin = MQR_ORIGIN_SESSION,
        .origin_name = u->name,
        .origin_conn = u,
        .expiry_s = ev->expiry_s,
        .created_ms = ev->arrived_ms,
    };
    mqr_msg_t *m = mqr__msg_new(&in);
    if (!m) {
        u->stats.refused++;
        MQR_LOG_W("upstream", "session '%s': dropped a message on '%s': out of memory", u->name,
                  topic);
        return;
    }
    /* Paho has acknowledged it already (QoS 1/2): what the subscribers
     * made of it cannot change that, but a subscriber that had to keep it
     * and could not (a full queue, a store error) is a loss, so it is
     * counted and warned about here, not only by that subscriber. */
    mqr_pubctx_t pc;
    rc = mqr__engine_publish_ctx(u->e, m, &pc);
    if (rc < 0) {
        u->stats.refused++;
        MQR_LOG_D("upstream", "session '%s': message on '%s' not routed: %s", u->name, topic,
                  mqr_strerror(rc));
    } else if (pc.no_room || pc.failed) {
        u->stats.not_kept++;
        report_losses(u);
    }
    mqr_msg_unref(m);
}

static int start_connect(mqr_upstream_t *u);
static int create_client(mqr_upstream_t *u);
static int publish(mqr_upstream_t *u, const mqr_msg_t *msg, up_pub_t *p);
static void handle_event(mqr_upstream_t *u, up_event_t *ev);
static void rebuild_client(mqr_upstream_t *u);
static void begin_close(mqr_upstream_t *u);
static void nudge_stop(mqr_upstream_t *u);

static void on_retry(uv_timer_t *t)
{
    mqr_upstream_t *u = t->data;
    if (u->closing || u->rebuilding || u->state == MQR_UPSTREAM_FAILED) return;
    /* A fresh MQTTAsync_connect(): MQTTAsync_reconnect() re-queues the
     * first connect command, which after a failed attempt does nothing at
     * all (no callback) in Paho 1.3.12. */
    int rc = start_connect(u);
    if (rc < 0 && !u->closing) {
        /* Counted like an attempt that failed on the wire. */
        up_event_t ev = {.type = EV_CONNECT_FAILED, .code = MQTTASYNC_FAILURE};
        ev.text = mqr_strerror(rc);
        handle_event(u, &ev);
    }
}

/* The n-th retry since the last connect (n = 0, 1, ...) comes after
 * initial * 2^n seconds, at most max: 1, 2, 4, ... s. Counted apart from
 * attempt: that one counts failed attempts, and a lost connection starts
 * its retries with none failed while a failed first connect starts with
 * one, which gave the first step twice after a loss (1, 1, 2, 4 s). */
static void schedule_retry(mqr_upstream_t *u)
{
    uint64_t max = (uint64_t)u->retry_max_s * 1000u;
    uint64_t delay = (uint64_t)u->retry_initial_s * 1000u;
    for (unsigned i = 0; i < u->retries && delay < max; i++)
        delay *= 2;
    if (delay > max) delay = max;
    u->retries++;
    uv_timer_start(&u->retry, on_retry, delay, 0);
}

/* Paho reports the URI it connected to without its scheme: name the
 * configured one. */
static void set_broker(mqr_upstream_t *u, const char *reported)
{
    const char *found = reported;
    int n = u->n_uris > 0 ? u->n_uris : 1;
    for (int i = 0; i < n; i++) {
        const char *c = u->n_uris > 0 ? u->uris[i] : u->uri;
        const char *rest = strstr(c, "://");
        if (strcmp(c, reported) == 0 || (rest && strcmp(rest + 3, reported) == 0)) {
            found = c;
            break;
        }
    }
    snprintf(u->broker, sizeof u->broker, "%s", found);
}

/* max_reconnects failed attempts in a row: stop retrying and say so. */
static void give_up(mqr_upstream_t *u, const char *why)
{
    char reason[320];
    snprintf(reason, sizeof reason, "gave up after %u failed attempt(s): %s", u->attempt, why);
    uv_timer_stop(&u->retry);
    MQR_LOG_E("upstream", "session '%s': %s", u->name, reason);
    set_state(u, MQR_UPSTREAM_FAILED, reason);
    if (!u->closing) emit_simple(u, MQR_UPEV_FAILED, reason, u->attempt);
}

static void pub_done(mqr_upstream_t *u, up_event_t *ev)
{
    up_pub_t *p = ev->ptr;
    for (up_pub_t **pp = &u->pubs; *pp; pp = &(*pp)->next) {
        if (*pp != p) continue;
        *pp = p->next;
        int status = ev->code == 0 && ev->reason < 0x80 ? 0 : MQR_EUPSTREAM;
        if (status < 0) u->stats.publish_failed++;
        if (p->done) p->done(p->arg, status, ev->reason);
        free(p);
        return;
    }
}

/* Answers (and frees) every waiter of s's SUBACK. A waiter may close u. */
static void answer_sub_waiters(mqr_upstream_t *u, up_sub_t *s, int status, int reason)
{
    for (;;) {
        up_pub_t **pp = &u->pubs;
        while (*pp && (*pp)->sub != s)
            pp = &(*pp)->next;
        up_pub_t *p = *pp;
        if (!p) return;
        *pp = p->next;
        if (p->done) p->done(p->arg, status, reason);
        free(p);
        if (u->closing) return;
    }
}

/* Answers (and frees) a waited-for publish that never reached Paho. */
static void pub_answer(up_pub_t *p, int status)
{
    for (up_pub_t **pp = &p->u->pubs; *pp; pp = &(*pp)->next) {
        if (*pp != p) continue;
        *pp = p->next;
        if (p->done) p->done(p->arg, status, 0);
        free(p);
        return;
    }
}

/* Collects the reasons of OpenSSL's report for the failure that follows. */
static void tls_note(mqr_upstream_t *u, const char *line)
{
    if (!line) return;
    char r[160];
    mqr__upstream_tls_reason(line, strlen(line), r, sizeof r);
    MQR_LOG_D("upstream", "session '%s': TLS: %s", u->name, r);
    size_t n = strlen(u->tls.error);
    if (!strstr(u->tls.error, r) && n + 3 < sizeof u->tls.error)
        snprintf(u->tls.error + n, sizeof u->tls.error - n, "%s%s", n ? "; " : "", r);
}

/* The reason of a failed TLS attempt. When Paho could not build its
 * context, OpenSSL's report lacks its first line (Paho takes it off the
 * queue before printing the rest), so "system lib" may be all it says:
 * then the files are checked again here to name the one at fault. */
static void tls_failure(mqr_upstream_t *u, char *why, size_t n)
{
    mqr_upstream_tls_t t = {.cafile = u->tls.cafile,
                            .capath = u->tls.capath,
                            .cert = u->tls.cert,
                            .key = u->tls.key,
                            .key_password = u->tls.key_password};
    char err[200];
    if ((t.cafile || t.capath || t.cert) &&
        mqr__upstream_tls_check_files(&t, err, sizeof err) == MQR_EINVAL)
        snprintf(why, n, "TLS: %s", err);
    else
        snprintf(why, n, "TLS: %s", u->tls.error);
    u->tls.error[0] = '\0';
}

static void handle_event(mqr_upstream_t *u, up_event_t *ev)
{
    char why[256];
    /* What the client being rebuilt still reports about its connection is
     * history: the new client starts from its own connect. */
    if (u->rebuilding && ev->type != EV_MESSAGE && ev->type != EV_PUB_DONE) return;
    switch (ev->type) {
    case EV_MESSAGE:
        deliver(u, ev);
        break;
    case EV_CONNECT_OK:
        if (ev->text) set_broker(u, ev->text);
        break;
    case EV_PUB_DONE:
        pub_done(u, ev);
        break;
    case EV_TLS_ERROR:
        tls_note(u, ev->text);
        break;
    case EV_CONNECTED:
        nudge_stop(u);
        u->stats.connects++;
        if (u->ever_connected || u->attempt) u->stats.reconnects++;
        u->buffered = 0;
        u->full_warned = false;
        u->connect_failing = false;
        u->attempt = 0;
        u->retries = 0;
        u->server_reason[0] = '\0';
        u->tls.error[0] = '\0';
        u->connected_since_ms = wall_ms();
        if (!u->broker[0] && u->n_uris == 0) snprintf(u->broker, sizeof u->broker, "%s", u->uri);
        set_state(u, MQR_UPSTREAM_CONNECTED, u->ever_connected ? "reconnected" : "connected");
        u->ever_connected = true;
        /* The observer may have closed us; then Paho is no longer ours. */
        if (u->closing || u->state != MQR_UPSTREAM_CONNECTED) break;
        emit_simple(u, MQR_UPEV_CONNECTED, NULL, 0);
        if (u->closing || u->state != MQR_UPSTREAM_CONNECTED) break;
        u->subs_awaiting = 0;
        for (up_sub_t *s = u->subs; s; s = s->next) {
            s->awaiting = send_subscribe(u, s) == MQTTASYNC_SUCCESS;
            if (s->awaiting) u->subs_awaiting++;
        }
        check_ready(u);
        break;
    case EV_SERVER_DISCONNECT:
        snprintf(u->server_reason, sizeof u->server_reason, "broker sent DISCONNECT: %s%s%s",
                 MQTTReasonCode_toString((enum MQTTReasonCodes)ev->reason), ev->text ? ", " : "",
                 ev->text ? ev->text : "");
        break;
    case EV_LOST: {
        nudge_stop(u);
        const char *cause = u->server_reason[0] ? u->server_reason
                            : ev->text          ? ev->text
                                                : "connection lost";
        char cause_copy[200];
        if (u->tls.error[0] && !u->server_reason[0])
            snprintf(cause_copy, sizeof cause_copy, "TLS: %.190s", u->tls.error);
        else
            snprintf(cause_copy, sizeof cause_copy, "%s", cause);
        u->tls.error[0] = '\0';
        snprintf(why, sizeof why, "%s, reconnecting", cause_copy);
        u->server_reason[0] = '\0';
        note_error(u, cause_copy);
        set_state(u, MQR_UPSTREAM_DISCONNECTED, why);
        if (u->closing) break;
        emit_simple(u, MQR_UPEV_DISCONNECTED, cause_copy, 0);
        if (u->closing) break;
        emit_simple(u, MQR_UPEV_RECONNECTING, NULL, 1);
        if (u->closing) break;
        if (u->persistent && !u->clean_start)
            rebuild_client(u);
        else
            schedule_retry(u);
        break;
    }
    case EV_CONNECT_FAILED:
        nudge_stop(u);
        if (u->state == MQR_UPSTREAM_FAILED) break;
        if (u->tls.error[0]) {
            /* Paho says only "TCP/TLS connect failure"; OpenSSL said why. */
            tls_failure(u, why, sizeof why);
        } else if (u->tls.on && ev->text &&
                   (strcmp(ev->text, "TCP/TLS connect failure") == 0 ||
                    strcmp(ev->text, "TCP connect completion failure") == 0)) {
            /* Failures Paho sees outside OpenSSL's error queue (a host name
             * check, over TLS 1.3 a refused client certificate, whose alert
             * comes on the first read) look like a broker that is down or
             * hangs up: name them too. */
            char hint[200];
            snprintf(hint, sizeof hint,
                     "%s; no TLS reason given: broker unreachable, host name not in its "
                     "certificate, or client certificate missing or refused",
                     ev->text);
            describe_failure(why, sizeof why, ev->code, ev->reason, hint);
        } else {
            describe_failure(why, sizeof why, ev->code, ev->reason, ev->text);
        }
        note_error(u, why);
        u->stats.connect_failures++;
        u->attempt++;
        /* One warning per outage; Paho keeps retrying with backoff. */
        if (!u->connect_failing)
            MQR_LOG_W("upstream", "session '%s': cannot connect to %s: %s (retrying)", u->name,
                      u->uri, why);
        else
            MQR_LOG_D("upstream", "session '%s': cannot connect to %s: %s (retrying)", u->name,
                      u->uri, why);
        u->connect_failing = true;
        if (u->max_reconnects > 0 && u->attempt >= (unsigned)u->max_reconnects) {
            give_up(u, why);
            break;
        }
        emit_simple(u, MQR_UPEV_RECONNECTING, why, u->attempt + 1);
        if (!u->closing && u->state != MQR_UPSTREAM_FAILED) schedule_retry(u);
        break;
    case EV_SUB_OK: {
        up_sub_t *s = sub_by_token(u, ev->token);
        if (s) {
            s->pending = false;
            s->granted = ev->code;
            answer_sub_waiters(u, s, ev->code < 0x80 ? 0 : MQR_EUPSTREAM, ev->code);
        }
        if (s && ev->code < s->qos)
            MQR_LOG_I("upstream", "session '%s': broker granted QoS %d for '%s' (asked %d)",
                      u->name, ev->code, s->filter, s->qos);
        if (s && s->awaiting) {
            s->awaiting = false;
            u->subs_awaiting--;
            check_ready(u);
        }
        break;
    }
    case EV_SUB_FAILED: {
        up_sub_t *s = sub_by_token(u, ev->token);
        /* Interrupted by a disconnect: the reconnect subscribes again. */
        if (ev->code == MQTTASYNC_OPERATION_INCOMPLETE || !s) break;
        s->pending = false;
        s->granted = ev->reason ? ev->reason : 0x80;
        answer_sub_waiters(u, s, MQR_EUPSTREAM, s->granted);
        describe_failure(why, sizeof why, ev->code == MQTT_BAD_SUBSCRIBE ? 0 : ev->code,
                         ev->reason ? ev->reason : (ev->code == MQTT_BAD_SUBSCRIBE ? 0x80 : 0),
                         NULL);
        MQR_LOG_W("upstream", "session '%s': broker refused subscription to '%s': %s", u->name,
                  s->filter, why);
        note_error(u, why);
        /* Answered all the same: a refused filter does not hold up ready. */
        if (s->awaiting) {
            s->awaiting = false;
            u->subs_awaiting--;
            check_ready(u);
        }
        break;
    }
    }
}

static up_event_t *take_events(mqr_upstream_t *u)
{
    uv_mutex_lock(&u->lock);
    up_event_t *ev = u->head;
    u->head = u->tail = NULL;
    u->pending_msgs = 0;
    u->pending_bytes = 0;
    uv_mutex_unlock(&u->lock);
    return ev;
}

static void on_warn_timer(uv_timer_t *t);

/* Warns about messages acknowledged to the broker and then dropped, or
 * acknowledged without a stored copy, since the last warning: the first at
 * once, later ones at most once per period (UP_*_WARN_MS), with the running
 * count; one held back comes from the warn timer. The exact figures are in
 * the status (messages_dropped, messages_unprotected). */
static void report_losses(mqr_upstream_t *u)
{
    uv_mutex_lock(&u->lock);
    uint64_t dropped = u->dropped, unprotected = u->unprotected;
    uv_mutex_unlock(&u->lock);
    uint64_t now = mqr__now_ms(), wait = 0;
    if (dropped != u->dropped_seen) {
        if (!u->drop_warned_ms || now - u->drop_warned_ms >= UP_DROP_WARN_MS) {
            MQR_LOG_W("upstream",
                      "session '%s': dropped %llu received message(s) already acknowledged to "
                      "the broker: incoming queue full (loop stalled?) or no memory; %llu in all",
                      u->name, (unsigned long long)(dropped - u->dropped_seen),
                      (unsigned long long)dropped);
            u->dropped_seen = dropped;
            u->drop_warned_ms = now;
        } else {
            wait = u->drop_warned_ms + UP_DROP_WARN_MS - now;
        }
    }
    if (u->stats.not_kept != u->not_kept_seen) {
        if (!u->not_kept_warned_ms || now - u->not_kept_warned_ms >= UP_DROP_WARN_MS) {
            MQR_LOG_W("upstream",
                      "session '%s': %llu received message(s) acknowledged to the broker that a "
                      "subscriber had to keep and could not (a full queue, a store error); %llu "
                      "in all",
                      u->name, (unsigned long long)(u->stats.not_kept - u->not_kept_seen),
                      (unsigned long long)u->stats.not_kept);
            u->not_kept_seen = u->stats.not_kept;
            u->not_kept_warned_ms = now;
        } else {
            uint64_t w = u->not_kept_warned_ms + UP_DROP_WARN_MS - now;
            if (!wait || w < wait) wait = w;
        }
    }
    if (unprotected != u->unprotected_seen) {
        if (!u->unprotected_warned_ms || now - u->unprotected_warned_ms >= UP_UNPROTECTED_WARN_MS) {
            MQR_LOG_W("upstream",
                      "session '%s': %llu QoS 1/2 message(s) acknowledged to the broker before "
                      "being routed, with no stored copy (%s): a crash before routing loses "
                      "them; %llu in all",
                      u->name, (unsigned long long)(unprotected - u->unprotected_seen),
                      u->persistent ? "the inbox write failed" : "persist = false",
                      (unsigned long long)unprotected);
            u->unprotected_seen = unprotected;
            u->unprotected_warned_ms = now;
        } else {
            uint64_t w = u->unprotected_warned_ms + UP_UNPROTECTED_WARN_MS - now;
            if (!wait || w < wait) wait = w;
        }
    }
    if (wait && !u->closing && !uv_is_active((uv_handle_t *)&u->warn))
        uv_timer_start(&u->warn, on_warn_timer, wait, 0);
}

static void on_warn_timer(uv_timer_t *t)
{
    report_losses(t->data);
}

/* A message event made from an inbox row (a copy), NULL without memory. */
static up_event_t *inbox_message(const mqr_upstream_inbox_rec_t *r)
{
    up_event_t *ev = ev_new(EV_MESSAGE, r->data_len, NULL);
    if (!ev) return NULL;
    ev->qos = r->qos;
    ev->retain = r->retain;
    ev->expiry_s = r->expiry_s;
    ev->arrived_ms = r->arrived_ms;
    ev->topic_len = r->topic_len;
    ev->payload_len = r->payload_len;
    ev->props_len = r->props_len;
    ev->inbox_seq = r->seq;
    memcpy(ev->data, r->data, r->data_len);
    ((char *)ev->data)[r->topic_len] = '\0';
    return ev;
}

typedef struct {
    mqr_upstream_t *u;
    uint64_t last;
    int64_t n;
} refill_t;

static int refill_event(void *arg, const mqr_upstream_inbox_rec_t *r)
{
    refill_t *f = arg;
    up_event_t *ev = inbox_message(r);
    if (!ev) return MQR_ENOMEM;
    ev_push(f->u, ev); /* wakes the loop: the next batch comes on the next turn */
    f->last = r->seq;
    f->n++;
    return 0;
}

/* Loop thread, after a turn's events: reads spilled messages back from the
 * inbox, in seq order, one batch per turn, and ends spilling once every
 * seq Paho's thread gave was settled before a read that found no more. */
static void refill(mqr_upstream_t *u)
{
    uv_mutex_lock(&u->lock);
    bool spilling = u->spilling;
    uint64_t next = u->spill_next, given = u->inbox_seq, settled = u->spill_settled;
    uv_mutex_unlock(&u->lock);
    if (!spilling) return;
    int64_t batch =
        u->max_pending_msgs < UP_REFILL_BATCH ? (int64_t)u->max_pending_msgs : UP_REFILL_BATCH;
    refill_t f = {.u = u};
    int rc = mqr__upstream_inbox_load_from(u->e->upstream_persist, u->name, next, batch,
                                           refill_event, &f);
    if (rc < 0) {
        /* stays spilling: the rows stay, and the next turn or the next
         * start reads them */
        MQR_LOG_E("upstream", "session '%s': cannot read spilled messages back: %s", u->name,
                  mqr_strerror(rc));
        return;
    }
    uv_mutex_lock(&u->lock);
    if (f.n) u->spill_next = f.last + 1;
    if (f.n < batch && settled == given && u->inbox_seq == given) u->spilling = false;
    uv_mutex_unlock(&u->lock);
}

/* Received messages a closing session will never route: those without an
 * inbox row, or whose row goes with the session (discarded, nobody takes
 * its records over), were acknowledged and are lost now, so say how many.
 * Rows that stay are routed by the next session of that name. */
static uint64_t count_unrouted(const mqr_upstream_t *u, const up_event_t *ev)
{
    uint64_t n = 0;
    for (; ev; ev = ev->next)
        n += ev->type == EV_MESSAGE && (!ev->inbox_seq || u->discard_records);
    return n;
}

static void warn_unrouted(mqr_upstream_t *u, uint64_t n)
{
    if (!n) return;
    MQR_LOG_W("upstream",
              "session '%s' closed with %llu received message(s) not routed yet: dropped", u->name,
              (unsigned long long)n);
}

static void on_async(uv_async_t *h)
{
    mqr_upstream_t *u = h->data;
    up_event_t *ev = take_events(u);
    report_losses(u);
    while (ev && !u->closing) {
        up_event_t *next = ev->next;
        handle_event(u, ev);
        free(ev);
        ev = next;
    }
    /* Routing or the observer may have closed the session: drop the rest. */
    warn_unrouted(u, count_unrouted(u, ev));
    while (ev) {
        up_event_t *next = ev->next;
        free(ev);
        ev = next;
    }
    if (u->persistent && !u->closing) refill(u);
}

/* ---- lifecycle ---------------------------------------------------------- */

static void session_free(mqr_upstream_t *u)
{
    warn_unrouted(u, count_unrouted(u, u->head));
    up_event_t *ev = u->head;
    while (ev) {
        up_event_t *next = ev->next;
        free(ev);
        ev = next;
    }
    up_sub_t *s = u->subs;
    while (s) {
        up_sub_t *next = s->next;
        free(s);
        s = next;
    }
    for (up_subopt_t *o = u->subopts, *next; o; o = next) {
        next = o->next;
        free(o);
    }
    for (up_pub_t *p = u->pubs, *next; p; p = next) {
        next = p->next;
        free(p);
    }
    for (size_t i = 0; i < u->n_early; i++)
        mqr_msg_unref(u->early[i].msg);
    free(u->early);
    mqr__upstream_persist_release(&u->phooks);
    for (int i = 0; i < u->n_uris; i++)
        free(u->uris[i]);
    free(u->uris);
    free(u->will_topic);
    free(u->will_payload);
    free(u->prefix);
    mqr__topic_map_free(u->map);
    free(u->tls.cafile);
    free(u->tls.capath);
    free(u->tls.cert);
    free(u->tls.key);
    free(u->tls.key_password);
    uv_cond_destroy(&u->cond);
    uv_mutex_destroy(&u->lock);
    free(u->name);
    free(u->uri);
    free(u->client_id);
    free(u->username);
    free(u->password);
    free(u);
}

static void unlink_session(mqr_upstream_t *u)
{
    for (mqr_upstream_t **pp = &u->e->sessions; *pp; pp = &(*pp)->next) {
        if (*pp == u) {
            *pp = u->next;
            return;
        }
    }
}

static void on_async_closed(uv_handle_t *h)
{
    mqr_upstream_t *u = h->data;
    if (--u->open_handles > 0) return;
    unlink_session(u);
    session_free(u);
}

/* Paho's global set-up and tear-down are not safe against each other:
 * creating the first client initialises its globals (its trace buffer among
 * them) outside its lock, and destroying the last one frees them. A create
 * on the loop while a worker destroys the last client could initialise twice
 * and lose a buffer (seen as a 124 800-byte leak under LeakSanitizer). So
 * every create and destroy of ours takes this lock; a create then waits for
 * a destroy in progress (at most what Paho's destroy takes). */
static uv_once_t paho_life_once = UV_ONCE_INIT;
static uv_mutex_t paho_life;

static void paho_life_init(void)
{
    if (uv_mutex_init(&paho_life) != 0) abort();
}

static int paho_create(MQTTAsync *c, const char *uri, const char *id, int persist_type,
                       void *persist, MQTTAsync_createOptions *co)
{
    uv_once(&paho_life_once, paho_life_init);
    uv_mutex_lock(&paho_life);
    int rc = MQTTAsync_createWithOptions(c, uri, id, persist_type, persist, co);
    uv_mutex_unlock(&paho_life);
    return rc;
}

static void paho_destroy(MQTTAsync *c)
{
    uv_once(&paho_life_once, paho_life_init);
    uv_mutex_lock(&paho_life);
    MQTTAsync_destroy(c);
    uv_mutex_unlock(&paho_life);
}

/* Runs on a libuv worker thread, because MQTTAsync_destroy() of the last
 * client in the process stops Paho's threads and can block for a second or
 * more — not something to do on the loop.
 *
 * Why the session's memory is safe to free afterwards: Paho calls every
 * callback with its global mutex held (the receive thread around packet
 * handling, the send thread in command processing and timeout checks), and
 * MQTTAsync_destroy() takes that same mutex, removes the client from Paho's
 * handle list and only then returns. So once it returns no callback of ours
 * is running and none can start. Callbacks it makes itself (failures of
 * pending subscribes, from inside destroy on this thread) still find the
 * queue and the async handle alive: those are closed only in after_destroy,
 * on the loop.
 *
 * Known leak: Paho 1.3.12 does not free PUBLISH commands still buffered (never
 * sent) when the client is destroyed — topic, payload and bookkeeping of each
 * (eclipse-paho/paho.mqtt.c#1474, fixed after 1.3.13). Connected, the
 * disconnect below lets them go out first; closing while disconnected loses
 * that memory, at most max_buffered messages per close. Close warns. */
static void destroy_work(uv_work_t *req)
{
    mqr_upstream_t *u = req->data;
    if (!u->client) return; /* dormant: never had one */
    MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
    d.timeout = UP_CLOSE_TIMEOUT_MS;
    d.onSuccess = on_disconnect_ok;
    d.onFailure = on_disconnect_failed;
    d.context = u;
    /* Also stops automatic reconnection, even when not connected (then it
     * returns MQTTASYNC_DISCONNECTED and calls nothing). */
    if (MQTTAsync_disconnect(u->client, &d) == MQTTASYNC_SUCCESS) {
        /* Paho completes a disconnect that waits for in-flight messages only
         * on its timeout tick, every 3 s. So wait for the callback in slices
         * and stop early once nothing is queued or in flight for this client
         * (destroy then sends DISCONNECT itself and loses nothing); give up
         * at the deadline, when destroy drops what is still in flight. */
        uint64_t deadline = uv_hrtime() + (uint64_t)(UP_CLOSE_TIMEOUT_MS + 500) * 1000000u;
        uv_mutex_lock(&u->lock);
        while (!u->disconnect_done) {
            uint64_t now = uv_hrtime();
            if (now >= deadline) break;
            uint64_t slice = deadline - now < 20000000u ? deadline - now : 20000000u;
            if (uv_cond_timedwait(&u->cond, &u->lock, slice) == 0) continue;
            uv_mutex_unlock(&u->lock); /* never call Paho holding it */
            MQTTAsync_token *tokens = NULL;
            bool idle = MQTTAsync_getPendingTokens(u->client, &tokens) == MQTTASYNC_SUCCESS &&
                        tokens == NULL;
            MQTTAsync_free(tokens);
            uv_mutex_lock(&u->lock);
            if (idle) break;
        }
        uv_mutex_unlock(&u->lock);
    }
    paho_destroy(&u->client);
    /* Nothing of Paho's touches the records any more. */
    if (u->discard_records) mqr__upstream_persist_discard(u->e->upstream_persist, u->name);
}

static void wake_successor(mqr_upstream_t *u);

static void after_destroy(uv_work_t *req, int status)
{
    mqr_upstream_t *u = req->data;
    (void)status;
    if (u->successor) {
        mqr_upstream_t *next = u->successor;
        u->successor = NULL;
        wake_successor(next);
    }
    uv_close((uv_handle_t *)&u->async, on_async_closed);
    uv_close((uv_handle_t *)&u->retry, on_async_closed);
    uv_close((uv_handle_t *)&u->nudge, on_async_closed);
    uv_close((uv_handle_t *)&u->warn, on_async_closed);
}

/* Paho 1.3.12 can lose the topic of a message it was writing when the
 * connection broke (it frees the string while the in-flight entry still
 * points at it) and then resends garbage after every reconnect, which the
 * broker rejects as malformed: the session never recovers (captured, see
 * docs/upstream.md). A persistent session's records hold every in-flight
 * message intact, so after a loss such a session destroys its client and
 * creates a new one, which restores them, instead of reconnecting the old
 * one. With clean = true Paho drops in-flight messages at the reconnect
 * anyway, so nothing is resent and the old client is kept. Destroying
 * takes Paho's global lock and can block: a worker does it. */
static void rebuild_work(uv_work_t *req)
{
    mqr_upstream_t *u = req->data;
    paho_destroy(&u->client);
}

static void after_rebuild(uv_work_t *req, int status)
{
    mqr_upstream_t *u = req->data;
    (void)status;
    u->rebuilding = false;
    u->client = NULL; /* the next attempt creates it (create_client) */
    if (u->closing)
        begin_close(u);
    else
        schedule_retry(u);
}

static void rebuild_client(mqr_upstream_t *u)
{
    u->rebuilding = true;
    u->rebuild_req.data = u;
    if (uv_queue_work(u->e->loop, &u->rebuild_req, rebuild_work, after_rebuild) < 0) {
        rebuild_work(&u->rebuild_req);
        after_rebuild(&u->rebuild_req, 0);
    }
}

static void begin_close(mqr_upstream_t *u)
{
    uv_timer_stop(&u->retry);
    uv_timer_stop(&u->warn);
    nudge_stop(u);
    if (u->rebuilding) return; /* after_rebuild comes back here */
    if (u->predecessor) {
        /* Dormant: the predecessor hands over to u's successor, if any,
         * which must go on waiting for it. */
        u->predecessor->successor = u->successor;
        if (u->successor) u->successor->predecessor = u->predecessor;
        u->predecessor = u->successor = NULL;
    }
    /* A successor takes the records over; otherwise they stay for the next
     * start unless the session was discarded. */
    u->discard_records = u->discard && u->persistent && !u->successor;
    u->destroy_req.data = u;
    if (uv_queue_work(u->e->loop, &u->destroy_req, destroy_work, after_destroy) < 0) {
        destroy_work(&u->destroy_req);
        after_destroy(&u->destroy_req, 0);
    }
}

/* Paho's one receive thread serves every client of the process: it polls
 * the sockets it knew when its poll began, for up to a second, and only
 * between two polls takes in a new socket or sees that a socket's TCP
 * connect completed (only then does it write CONNECT). So with other
 * sessions connected and quiet, a new connect waited for two of those
 * polls to time out: 1-2 s instead of a few ms (strace: connect()
 * EINPROGRESS, poll(..., 1000) timing out twice, then the CONNECT). Paho
 * has no call to wake that thread; an answer from a broker on any socket
 * it polls does. So while a connect is under way, every UP_NUDGE_MS
 * another connected session of the engine sends the same harmless round
 * trip as mqr__upstream_ping_cb (UNSUBSCRIBE of a filter nobody uses);
 * two or three of them are enough, at most UP_NUDGE_MAX are sent. */
static void nudge_connect(uv_timer_t *t)
{
    mqr_upstream_t *u = t->data;
    if (!u->connect_pending || u->closing || ++u->nudges > UP_NUDGE_MAX) {
        uv_timer_stop(&u->nudge);
        return;
    }
    for (mqr_upstream_t *o = u->e->sessions; o; o = o->next) {
        if (o == u || o->closing || o->rebuilding || !o->client ||
            o->state != MQR_UPSTREAM_CONNECTED)
            continue;
        MQTTAsync_unsubscribe(o->client, "$mqrouter/ping", NULL); /* nothing to answer */
        return;
    }
}

static void nudge_start(mqr_upstream_t *u)
{
    u->connect_pending = true;
    u->nudges = 0;
    uv_timer_start(&u->nudge, nudge_connect, UP_NUDGE_MS, UP_NUDGE_MS);
}

static void nudge_stop(mqr_upstream_t *u)
{
    u->connect_pending = false;
    uv_timer_stop(&u->nudge);
}

static int start_connect(mqr_upstream_t *u)
{
    if (!u->client) {
        int rc = create_client(u);
        if (rc < 0) return rc;
    }
    /* Fresh credentials for this attempt (Paho has no client-side v5 AUTH
     * exchange to renew them on a live connection). The hook may close u. */
    if (u->credentials) {
        u->credentials(u->credentials_arg, u, u->attempt);
        if (u->closing) return MQR_ECLOSED;
    }
    MQTTAsync_connectOptions o = MQTTAsync_connectOptions_initializer;
    MQTTAsync_connectOptions o5 = MQTTAsync_connectOptions_initializer5;
    MQTTProperties props = MQTTProperties_initializer;
    if (u->version == MQTTVERSION_5) {
        o = o5;
        o.cleanstart = u->clean_start != 0;
        o.onFailure5 = on_connect_failure5;
        o.onSuccess5 = on_connect_ok5;
        if (!u->clean_start || u->session_expiry_s >= 0) {
            /* v5 ends a session when the connection closes unless told
             * otherwise; a resumable session is what clean_start = 0 asks. */
            MQTTProperty p = {.identifier = MQTTPROPERTY_CODE_SESSION_EXPIRY_INTERVAL};
            p.value.integer4 =
                u->session_expiry_s >= 0 ? (unsigned)u->session_expiry_s : 0xFFFFFFFFu;
            if (MQTTProperties_add(&props, &p) != 0) return MQR_ENOMEM;
            o.connectProperties = &props;
        }
    } else {
        o.cleansession = u->clean_start != 0;
        o.onFailure = on_connect_failure;
        o.onSuccess = on_connect_ok;
    }
    MQTTAsync_willOptions will = MQTTAsync_willOptions_initializer;
    if (u->will_topic) {
        will.topicName = u->will_topic;
        will.payload.data = u->will_payload;
        will.payload.len = (int)u->will_payload_len;
        will.qos = u->will_qos;
        will.retained = u->will_retain;
        o.will = &will;
    }
    if (u->n_uris > 0) {
        o.serverURIs = u->uris;
        o.serverURIcount = u->n_uris;
    }
    o.MQTTVersion = u->version;
    o.keepAliveInterval = u->keepalive_s;
    o.username = u->username;
    o.password = u->password;
    o.connectTimeout = UP_CONNECT_TIMEOUT_S;
    MQTTAsync_SSLOptions ssl = MQTTAsync_SSLOptions_initializer;
    if (u->tls.on) {
        ssl.trustStore = u->tls.cafile; /* neither this nor CApath: the system's store */
        ssl.CApath = u->tls.capath;
        ssl.keyStore = u->tls.cert;
        ssl.privateKey = u->tls.key;
        /* Never NULL with a certificate: OpenSSL would prompt on the
         * terminal, from Paho's thread, for an encrypted key. */
        ssl.privateKeyPassword = u->tls.key_password || !u->tls.cert ? u->tls.key_password : "";
        ssl.enableServerCertAuth = !u->tls.no_verify;
        ssl.verify = !u->tls.no_verify && !u->tls.no_verify_hostname; /* host name check */
        ssl.ssl_error_cb = on_ssl_error;
        ssl.ssl_error_context = u;
        o.ssl = &ssl;
    }
    /* Reconnecting is ours (retry timer): Paho's automatic reconnect neither
     * retries a first connect that failed nor reports its failed attempts,
     * and both are needed to count attempts and stop at max_reconnects. */
    o.automaticReconnect = 0;
    o.context = u;
    int rc = MQTTAsync_connect(u->client, &o); /* copies what it keeps */
    MQTTProperties_free(&props);
    if (rc == MQTTASYNC_SUCCESS) nudge_start(u);
    return map_paho(rc);
}

static void log_connecting(mqr_upstream_t *u)
{
    MQR_LOG_I("upstream", "session '%s' connecting to %s (MQTT %s, client id '%s'%s)", u->name,
              u->uri, u->version == MQTTVERSION_5 ? "5" : "3.1.1", u->client_id,
              u->persistent ? ", persistent" : "");
}

/* The engine's upstream store, opened at the first persistent session.
 * NULL (and logged) when it cannot be opened: sessions then keep their
 * buffers in memory. */
static mqr_upstream_persist_t *engine_persist(mqr_engine_t *e)
{
    if (e->upstream_persist || e->upstream_persist_failed) return e->upstream_persist;
    if (!e->data_dir || !e->data_dir[0]) return NULL;
    size_t n = strlen(e->data_dir) + sizeof "/upstream.db";
    char *path = malloc(n);
    if (!path) return NULL;
    snprintf(path, n, "%s/upstream.db", e->data_dir);
    char *why = NULL;
    int rc = mqr__upstream_persist_open(e->loop, path, &e->upstream_persist, &why);
    if (rc < 0) {
        e->upstream_persist_failed = true;
        MQR_LOG_E("upstream", "%s; sessions keep their buffers in memory only",
                  why ? why : mqr_strerror(rc));
    }
    free(why);
    free(path);
    return e->upstream_persist;
}

/* Decides whether u persists; returns the open persistent session of its
 * name that u replaces and must wait for (see struct), or NULL. */
static mqr_upstream_t *persist_setup(mqr_upstream_t *u, const mqr_upstream_config_t *cfg, int *rc)
{
    mqr_engine_t *e = u->e;
    *rc = 0;
    bool want = cfg->persist == 0 ? e->data_dir && e->data_dir[0] : cfg->persist > 0;
    mqr_upstream_persist_t *p = want ? engine_persist(e) : NULL;
    if (!p) return NULL;
    if ((*rc = mqr__upstream_persist_hooks(p, u->name, &u->phooks)) < 0) return NULL;
    u->persistent = true;
    for (mqr_upstream_t *o = e->sessions; o; o = o->next) /* newest first */
        if (!o->closing && o->persistent && strcmp(o->name, u->name) == 0) return o;
    return NULL;
}

static int inbox_event(void *arg, const mqr_upstream_inbox_rec_t *r)
{
    mqr_upstream_t *u = arg;
    up_event_t *ev = inbox_message(r);
    if (!ev) return MQR_ENOMEM;
    if (r->seq > u->inbox_seq) u->inbox_seq = r->seq;
    ev_push(u, ev);
    return 0;
}

/* Queues for routing what arrived before a crash and was never routed; the
 * loop routes it once the script that created the session has loaded. Runs
 * before the session's first client can call on_message, so nothing else
 * touches inbox_seq. */
static void inbox_load(mqr_upstream_t *u)
{
    u->inbox_loaded = true;
    size_t before = u->pending_msgs;
    int rc = mqr__upstream_inbox_load(u->e->upstream_persist, u->name, inbox_event, u);
    if (rc < 0)
        MQR_LOG_E("upstream", "session '%s': cannot read its inbox: %s", u->name, mqr_strerror(rc));
    if (u->pending_msgs > before)
        MQR_LOG_I("upstream",
                  "session '%s': %zu message(s) received before the last stop and not routed "
                  "are routed now",
                  u->name, u->pending_msgs - before);
}

/* Creates the Paho client (restoring the records of a persistent session)
 * and sets its callbacks; then hands it what was published meanwhile. */
static int create_client(mqr_upstream_t *u)
{
    MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer;
    co.MQTTVersion = u->version;
    co.sendWhileDisconnected = 1;
    co.allowDisconnectedSendAtAnyTime = 1; /* buffer before the first connect too */
    co.maxBufferedMessages = u->max_buffered;
    /* A full buffer refuses the newest (MQR_EFULL) or drops the oldest. */
    co.deleteOldestMessages = u->drop_oldest;
    co.restoreMessages = 1;
    co.persistQoS0 = 0; /* QoS 0 may be lost by definition */
    int rc = paho_create(&u->client, u->uri, u->client_id,
                         u->persistent ? MQTTCLIENT_PERSISTENCE_USER : MQTTCLIENT_PERSISTENCE_NONE,
                         u->persistent ? &u->phooks : NULL, &co);
    if (rc != MQTTASYNC_SUCCESS) {
        MQR_LOG_E("upstream", "session '%s': cannot create a client for %s: %s", u->name, u->uri,
                  MQTTAsync_strerror(rc));
        u->client = NULL;
        return map_paho(rc);
    }
    /* Callbacks must be in place before connecting; none can fire before. */
    rc = MQTTAsync_setCallbacks(u->client, u, on_lost, on_message, on_delivered);
    if (rc == MQTTASYNC_SUCCESS) rc = MQTTAsync_setConnected(u->client, u, on_connected);
    if (rc == MQTTASYNC_SUCCESS && u->version == MQTTVERSION_5)
        rc = MQTTAsync_setDisconnected(u->client, u, on_server_disconnect);
    if (rc != MQTTASYNC_SUCCESS) {
        paho_destroy(&u->client);
        u->client = NULL;
        return map_paho(rc);
    }
    if (u->persistent) {
        int64_t n = mqr__upstream_persist_count(u->e->upstream_persist, u->name);
        if (n > 0)
            MQR_LOG_I("upstream", "session '%s': %lld stored message record(s) restored", u->name,
                      (long long)n);
    }
    /* What was published while the session waited for its predecessor. */
    for (size_t i = 0; i < u->n_early; i++) {
        struct up_early *x = &u->early[i];
        int prc = publish(u, x->msg, x->pub);
        if (prc != 0 && x->pub) pub_answer(x->pub, prc < 0 ? prc : MQR_EINVAL);
        if (prc < 0)
            MQR_LOG_W("upstream", "session '%s': a message published while waiting is lost: %s",
                      u->name, mqr_strerror(prc));
        mqr_msg_unref(x->msg);
    }
    free(u->early);
    u->early = NULL;
    u->n_early = u->cap_early = 0;
    return 0;
}

/* The predecessor is gone: create the client (restoring what it left) and
 * connect. */
static void wake_successor(mqr_upstream_t *u)
{
    u->predecessor = NULL;
    if (u->closing) return;
    if (u->persistent && !u->inbox_loaded) inbox_load(u);
    int rc = start_connect(u);
    if (u->closing) return;
    if (rc < 0) {
        /* Counted like an attempt that failed on the wire: retried. */
        up_event_t ev = {.type = EV_CONNECT_FAILED, .code = MQTTASYNC_FAILURE};
        ev.text = mqr_strerror(rc);
        handle_event(u, &ev);
        return;
    }
    log_connecting(u);
}

int mqr__upstream_new(mqr_engine_t *e, const mqr_upstream_config_t *cfg, mqr_upstream_t **out)
{
    *out = NULL;
    if (!cfg || !cfg->name || !cfg->name[0]) return MQR_EINVAL;
    if (cfg->n_uris < 0 || (cfg->n_uris > 0 && !cfg->uris)) return MQR_EINVAL;
    for (int i = 0; i < cfg->n_uris; i++)
        if (!cfg->uris[i] || !cfg->uris[i][0]) return MQR_EINVAL;
    if (cfg->n_uris == 0 && (!cfg->uri || !cfg->uri[0])) return MQR_EINVAL;
    if (cfg->will_topic &&
        (mqr__topic_name_validate(cfg->will_topic, strlen(cfg->will_topic)) < 0 ||
         cfg->will_qos < 0 || cfg->will_qos > 2 || cfg->will_payload_len > 65535))
        return MQR_EINVAL;
    if (cfg->retry_initial_s < 0 || cfg->retry_max_s < 0 || cfg->max_reconnects < 0 ||
        cfg->session_expiry_s > 0xFFFFFFFFll)
        return MQR_EINVAL;
    int version = cfg->mqtt_version ? cfg->mqtt_version : MQTTVERSION_3_1_1;
    if (version != MQTTVERSION_3_1_1 && version != MQTTVERSION_5) return MQR_EINVAL;
    if (cfg->keepalive_s < 0 || cfg->keepalive_s > 65535 || cfg->max_buffered < 0)
        return MQR_EINVAL;
    char tls_err[512];
    int trc = mqr__upstream_tls_check(cfg, tls_err, sizeof tls_err);
    if (trc < 0) {
        MQR_LOG_E("upstream", "session '%s': %s", cfg->name, tls_err);
        return trc;
    }
    if (e->stopping) return MQR_ECLOSED;
    if (!cfg->replaces && mqr__upstream_find(e, cfg->name)) return MQR_EEXIST;

    mqr_topic_map_t *map = NULL;
    if (cfg->n_map > 0) {
        const char *why = NULL;
        size_t bad = 0;
        int mrc = mqr__topic_map_new(cfg->map, cfg->n_map, &map, &why, &bad);
        if (mrc < 0) {
            if (why)
                MQR_LOG_E("upstream", "session '%s': topic map rule %zu: %s", cfg->name, bad + 1,
                          why);
            return mrc;
        }
    }
    mqr_upstream_t *u = calloc(1, sizeof *u);
    if (!u) {
        mqr__topic_map_free(map);
        return MQR_ENOMEM;
    }
    u->map = map;
    u->e = e;
    u->version = version;
    u->keepalive_s = cfg->keepalive_s ? cfg->keepalive_s : 30;
    u->clean_start = cfg->clean_start;
    u->max_buffered = cfg->max_buffered ? cfg->max_buffered : 10000;
    u->drop_oldest = cfg->drop_oldest != 0;
    u->max_pending_msgs = UP_MAX_PENDING_MSGS;
    u->max_pending_bytes = UP_MAX_PENDING_BYTES;
    u->state = MQR_UPSTREAM_CONNECTING;
    u->session_expiry_s = cfg->session_expiry_s;
    u->retry_initial_s = cfg->retry_initial_s ? cfg->retry_initial_s : UP_RETRY_MIN_S;
    u->retry_max_s = cfg->retry_max_s ? cfg->retry_max_s : UP_RETRY_MAX_S;
    if (u->retry_max_s < u->retry_initial_s) u->retry_max_s = u->retry_initial_s;
    u->max_reconnects = cfg->max_reconnects;
    u->will_qos = cfg->will_qos;
    u->will_retain = cfg->will_retain;
    bool oom = false;
    if (cfg->n_uris > 0) {
        u->uris = calloc((size_t)cfg->n_uris, sizeof *u->uris);
        oom |= !u->uris;
        for (int i = 0; u->uris && i < cfg->n_uris; i++) {
            u->uris[i] = strdup(cfg->uris[i]);
            oom |= !u->uris[i];
        }
        if (u->uris) u->n_uris = cfg->n_uris;
    }
    if (cfg->will_topic) {
        u->will_topic = strdup(cfg->will_topic);
        u->will_payload_len = cfg->will_payload_len;
        u->will_payload = malloc(cfg->will_payload_len + 1);
        oom |= !u->will_topic || !u->will_payload;
        if (u->will_payload && cfg->will_payload_len)
            memcpy(u->will_payload, cfg->will_payload, cfg->will_payload_len);
    }
    if (cfg->prefix && cfg->prefix[0]) {
        u->prefix = strdup(cfg->prefix);
        u->prefix_len = strlen(cfg->prefix);
        oom |= !u->prefix;
    }
    u->name = strdup(cfg->name);
    u->uri = strdup(cfg->uri && cfg->uri[0] ? cfg->uri : cfg->uris[0]);
    if (cfg->client_id) {
        u->client_id = strdup(cfg->client_id);
    } else if (u->name) {
        size_t n = strlen(u->name) + sizeof "mqrouter-";
        if ((u->client_id = malloc(n))) snprintf(u->client_id, n, "mqrouter-%s", u->name);
    }
    u->username = xstrdup(cfg->username);
    u->password = xstrdup(cfg->password);
    for (int i = 0; i < (cfg->n_uris > 0 ? cfg->n_uris : 1); i++)
        u->tls.on |= mqr__upstream_uri_is_tls(cfg->n_uris > 0 ? cfg->uris[i] : cfg->uri);
    const mqr_upstream_tls_t *t = cfg->tls;
    if (t) {
        u->tls.cafile = xstrdup(t->cafile);
        u->tls.capath = xstrdup(t->capath);
        u->tls.cert = xstrdup(t->cert);
        u->tls.key = xstrdup(t->key);
        u->tls.key_password = xstrdup(t->key_password);
        u->tls.no_verify = t->no_verify;
        u->tls.no_verify_hostname = t->no_verify_hostname;
        oom |= (t->cafile && !u->tls.cafile) || (t->capath && !u->tls.capath) ||
               (t->cert && !u->tls.cert) || (t->key && !u->tls.key) ||
               (t->key_password && !u->tls.key_password);
    }
    uv_mutex_init(&u->lock);
    uv_cond_init(&u->cond);
    if (oom || !u->name || !u->uri || !u->client_id || (cfg->username && !u->username) ||
        (cfg->password && !u->password)) {
        session_free(u);
        return MQR_ENOMEM;
    }

    int rc;
    mqr_upstream_t *pred = persist_setup(u, cfg, &rc);
    if (rc == 0 && !pred) rc = create_client(u);
    int urc = rc == 0 ? uv_async_init(e->loop, &u->async, on_async) : 0;
    if (rc < 0 || urc < 0) {
        if (u->client) paho_destroy(&u->client);
        session_free(u);
        return rc < 0 ? rc : urc;
    }
    uv_timer_init(e->loop, &u->retry); /* cannot fail */
    uv_timer_init(e->loop, &u->nudge);
    uv_timer_init(e->loop, &u->warn);
    u->async.data = u;
    u->retry.data = u;
    u->nudge.data = u;
    u->warn.data = u;
    u->open_handles = 4;
    if (u->persistent && !pred) inbox_load(u);
    if (pred) {
        /* defensive: a newer open successor would have been found first */
        if (pred->successor) pred->successor->predecessor = NULL;
        pred->successor = u;
        u->predecessor = pred;
    }
    u->next = e->sessions;
    e->sessions = u;
    emit_simple(u, MQR_UPEV_ADDED, NULL, 0);
    emit_simple(u, MQR_UPEV_CONNECTING, NULL, 0);

    if (u->predecessor) {
        MQR_LOG_I("upstream",
                  "session '%s' waits for the session it replaces to close, then takes over "
                  "its stored messages",
                  u->name);
        *out = u;
        return 0;
    }
    rc = start_connect(u);
    if (rc < 0) {
        MQR_LOG_E("upstream", "session '%s': cannot connect to %s: %s", u->name, u->uri,
                  mqr_strerror(rc));
        u->closing = true;
        u->state = MQR_UPSTREAM_CLOSED;
        emit_simple(u, MQR_UPEV_REMOVED, mqr_strerror(rc), 0);
        begin_close(u);
        return rc;
    }
    log_connecting(u);
    *out = u;
    return 0;
}

mqr_upstream_t *mqr__upstream_find(mqr_engine_t *e, const char *name)
{
    if (!name) return NULL;
    for (mqr_upstream_t *u = e->sessions; u; u = u->next)
        if (!u->closing && strcmp(u->name, name) == 0) return u;
    return NULL;
}

const char *mqr__upstream_name(const mqr_upstream_t *u)
{
    return u->name;
}

mqr_upstream_state_t mqr__upstream_state(const mqr_upstream_t *u)
{
    return u->state;
}

void mqr__upstream_set_credentials_hook(mqr_upstream_t *u, mqr_upstream_credentials_fn fn,
                                        void *arg)
{
    u->credentials = fn;
    u->credentials_arg = arg;
}

int mqr__upstream_set_credentials(mqr_upstream_t *u, const char *username, const char *password)
{
    char *nu = username ? strdup(username) : NULL;
    char *np = password ? strdup(password) : NULL;
    if ((username && !nu) || (password && !np)) {
        free(nu);
        free(np);
        return MQR_ENOMEM;
    }
    free(u->username);
    free(u->password);
    u->username = nu;
    u->password = np;
    return 0;
}

void mqr__upstream_set_observer(mqr_upstream_t *u, mqr_upstream_event_fn fn, void *arg)
{
    u->observer = fn;
    u->observer_arg = arg;
}

int mqr__upstream_subscribe(mqr_upstream_t *u, const char *filter, int qos)
{
    if (!filter) return MQR_EINVAL;
    if (u->closing) return MQR_ECLOSED;
    if (qos < 0 || qos > 2) return MQR_EQOS;
    size_t len = strlen(filter);
    int rc = mqr__topic_filter_validate(filter, len);
    if (rc < 0) return rc;
    up_sub_t *s = u->subs;
    while (s && strcmp(s->filter, filter) != 0)
        s = s->next;
    if (s) {
        s->refs++;
        /* Never downgraded while counted: the route wanting more may stay. */
        if (qos > s->qos) {
            s->qos = qos;
            if (u->state == MQR_UPSTREAM_CONNECTED) send_subscribe(u, s);
        }
        return 0;
    }
    s = malloc(sizeof *s + len + 1);
    if (!s) return MQR_ENOMEM;
    s->refs = 1;
    s->qos = qos;
    s->token = 0;
    s->awaiting = false;
    s->pending = false;
    s->granted = -1;
    memcpy(s->filter, filter, len + 1);
    s->next = u->subs;
    u->subs = s;
    /* Not connected (or the loss not drained yet): the next EV_CONNECTED
     * subscribes everything. */
    if (u->state == MQR_UPSTREAM_CONNECTED) send_subscribe(u, s);
    return 0;
}

int mqr__upstream_unsubscribe(mqr_upstream_t *u, const char *filter)
{
    if (!filter) return MQR_EINVAL;
    if (u->closing) return MQR_ECLOSED;
    up_sub_t **pp = &u->subs;
    while (*pp && strcmp((*pp)->filter, filter) != 0)
        pp = &(*pp)->next;
    up_sub_t *s = *pp;
    if (!s) return MQR_ENOENT;
    if (--s->refs > 0) return 0;
    *pp = s->next;
    answer_sub_waiters(u, s, MQR_ECLOSED, 0);
    if (s->awaiting) u->subs_awaiting--;
    if (u->state == MQR_UPSTREAM_CONNECTED) {
        /* If this fails the broker keeps sending until the next clean
         * start; such messages simply find no route. */
        bool oom;
        char *remote = remote_name(u, s->filter, &oom);
        int rc =
            oom ? PAHO_OOM : MQTTAsync_unsubscribe(u->client, remote ? remote : s->filter, NULL);
        free(remote);
        if (rc != MQTTASYNC_SUCCESS && rc != MQTTASYNC_DISCONNECTED)
            MQR_LOG_W("upstream", "session '%s': cannot unsubscribe from '%s': %s", u->name,
                      s->filter, MQTTAsync_strerror(rc));
    }
    free(s);
    check_ready(u);
    return 0;
}

int mqr__upstream_set_sub_options(mqr_upstream_t *u, const char *filter, bool no_local,
                                  bool retain_as_published, int retain_handling)
{
    if (!filter || retain_handling > 2) return MQR_EINVAL;
    if (u->closing) return MQR_ECLOSED;
    up_subopt_t *o = subopt_find(u, filter);
    if (!o) {
        size_t len = strlen(filter);
        o = malloc(sizeof *o + len + 1);
        if (!o) return MQR_ENOMEM;
        memcpy(o->filter, filter, len + 1);
        o->next = u->subopts;
        u->subopts = o;
    }
    o->no_local = no_local;
    o->rap = retain_as_published;
    o->rh = retain_handling;
    return 0;
}

static int publish(mqr_upstream_t *u, const mqr_msg_t *msg, up_pub_t *p);

/* A waiter listed in u->pubs (so that close answers it), or NULL. */
static up_pub_t *waiter_new(mqr_upstream_t *u, mqr_upstream_done_fn done, void *arg)
{
    up_pub_t *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->u = u;
    p->done = done;
    p->arg = arg;
    p->next = u->pubs;
    u->pubs = p;
    return p;
}

static void waiter_drop(mqr_upstream_t *u, up_pub_t *p)
{
    for (up_pub_t **pp = &u->pubs; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    free(p);
}

/* Answers p on a later loop turn, through the session's own queue. */
static int waiter_answer_later(up_pub_t *p, int code, int reason)
{
    up_event_t *ev = ev_new(EV_PUB_DONE, 0, NULL);
    if (!ev) return MQR_ENOMEM;
    ev->code = code;
    ev->reason = reason;
    ev->ptr = p;
    ev_push(p->u, ev);
    return 0;
}

int mqr__upstream_subscribe_cb(mqr_upstream_t *u, const char *filter, int qos,
                               mqr_upstream_done_fn done, void *arg)
{
    if (!done) return MQR_EINVAL;
    int rc = mqr__upstream_subscribe(u, filter, qos);
    if (rc < 0) return rc;
    up_sub_t *s = u->subs;
    while (s && strcmp(s->filter, filter) != 0)
        s = s->next;
    up_pub_t *p = s ? waiter_new(u, done, arg) : NULL;
    if (!p) {
        mqr__upstream_unsubscribe(u, filter);
        return MQR_ENOMEM;
    }
    /* Answered already and nothing newer on the way: say so now (on the
     * next turn); otherwise at the next SUBACK, after a reconnect if need be. */
    if (u->state == MQR_UPSTREAM_CONNECTED && !s->pending && s->granted >= 0) {
        rc = waiter_answer_later(p, s->granted < 0x80 ? 0 : MQTT_BAD_SUBSCRIBE, s->granted);
        if (rc < 0) {
            waiter_drop(u, p);
            mqr__upstream_unsubscribe(u, filter);
        }
        return rc;
    }
    p->sub = s;
    return 0;
}

/* Response options whose answer (success or failure) reaches waiter p as an
 * EV_PUB_DONE event. */
static void answer_to(const mqr_upstream_t *u, up_pub_t *p, MQTTAsync_responseOptions *r)
{
    r->context = p;
    if (u->version == MQTTVERSION_5) {
        r->onSuccess5 = on_pub_ok5;
        r->onFailure5 = on_pub_failed5;
    } else {
        r->onSuccess = on_pub_ok;
        r->onFailure = on_pub_failed;
    }
}

/* Sends an UNSUBSCRIBE of remote filter f whose UNSUBACK answers p. */
static int send_unsubscribe(mqr_upstream_t *u, const char *f, up_pub_t *p)
{
    MQTTAsync_responseOptions r = MQTTAsync_responseOptions_initializer;
    answer_to(u, p, &r);
    return map_paho(MQTTAsync_unsubscribe(u->client, f, &r));
}

int mqr__upstream_unsubscribe_cb(mqr_upstream_t *u, const char *filter, mqr_upstream_done_fn done,
                                 void *arg)
{
    if (!filter || !done) return MQR_EINVAL;
    if (u->closing) return MQR_ECLOSED;
    up_sub_t *s = u->subs;
    while (s && strcmp(s->filter, filter) != 0)
        s = s->next;
    if (!s) return MQR_ENOENT;
    if (u->state != MQR_UPSTREAM_CONNECTED || !u->client || u->rebuilding) return MQR_ENOTCONN;
    up_pub_t *p = waiter_new(u, done, arg);
    if (!p) return MQR_ENOMEM;
    int rc;
    if (s->refs > 1) {
        /* Other routes still want the filter: it stays subscribed, and the
         * broker has nothing to answer. */
        s->refs--;
        rc = waiter_answer_later(p, 0, 0);
    } else {
        bool oom;
        char *remote = remote_name(u, filter, &oom);
        rc = oom ? MQR_ENOMEM : send_unsubscribe(u, remote ? remote : filter, p);
        free(remote);
        if (rc == 0) {
            /* gone from the session's list now: not restored after a reconnect */
            up_sub_t **pp = &u->subs;
            while (*pp != s)
                pp = &(*pp)->next;
            *pp = s->next;
            if (s->awaiting) u->subs_awaiting--;
            answer_sub_waiters(u, s, MQR_ECLOSED, 0);
            free(s);
            check_ready(u);
        }
    }
    if (rc < 0) waiter_drop(u, p);
    return rc;
}

int mqr__upstream_ping_cb(mqr_upstream_t *u, mqr_upstream_done_fn done, void *arg)
{
    if (!done) return MQR_EINVAL;
    if (u->closing) return MQR_ECLOSED;
    if (u->state != MQR_UPSTREAM_CONNECTED || !u->client || u->rebuilding) return MQR_ENOTCONN;
    up_pub_t *p = waiter_new(u, done, arg);
    if (!p) return MQR_ENOMEM;
    /* Paho's MQTTAsync has no call that sends a PINGREQ; an UNSUBSCRIBE of
     * a filter nobody uses is the same round trip and changes nothing. */
    int rc = send_unsubscribe(u, "$mqrouter/ping", p);
    if (rc < 0) waiter_drop(u, p);
    return rc;
}

/* A route forwarding a message here while it is routed: when the session
 * could not keep it (no room in its buffer, no memory) the publisher is told
 * through the publish context (router.h), like a full queue tells it. Other
 * failures are the caller's mistakes (bad QoS, a closed session) and its
 * own business. Outside routing the note changes nothing. */
static int note_result(mqr_upstream_t *u, int rc)
{
    if (rc == MQR_EFULL || rc == MQR_ENOMEM) mqr__router_note(&u->e->router, rc);
    return rc;
}

int mqr__upstream_publish(mqr_upstream_t *u, const mqr_msg_t *msg)
{
    return note_result(u, publish(u, msg, NULL));
}

int mqr__upstream_publish_cb(mqr_upstream_t *u, const mqr_msg_t *msg, mqr_upstream_done_fn done,
                             void *arg)
{
    if (!msg || !done) return MQR_EINVAL;
    if (u->closing) return MQR_ECLOSED;
    up_pub_t *p = malloc(sizeof *p);
    if (!p) return note_result(u, MQR_ENOMEM);
    p->u = u;
    p->done = done;
    p->arg = arg;
    /* Listed before sending: Paho may answer on its thread at once. */
    p->next = u->pubs;
    u->pubs = p;
    int rc = publish(u, msg, p);
    if (rc == 1) rc = MQR_EINVAL; /* expired: nothing will answer */
    if (rc < 0) {
        for (up_pub_t **pp = &u->pubs; *pp; pp = &(*pp)->next)
            if (*pp == p) {
                *pp = p->next;
                break;
            }
        free(p);
    }
    return note_result(u, rc);
}

/* Keeps msg for the client a dormant session will create (see struct),
 * within the same bound as Paho's buffer. */
static int publish_early(mqr_upstream_t *u, const mqr_msg_t *msg, up_pub_t *p)
{
    if (u->n_early >= (size_t)u->max_buffered) {
        u->stats.full++;
        return MQR_EFULL;
    }
    if (u->n_early == u->cap_early) {
        size_t cap = u->cap_early ? u->cap_early * 2 : 16;
        struct up_early *bigger = realloc(u->early, cap * sizeof *bigger);
        if (!bigger) return MQR_ENOMEM;
        u->early = bigger;
        u->cap_early = cap;
    }
    /* counted as sent when handed to Paho */
    mqr_msg_ref((mqr_msg_t *)msg);
    u->early[u->n_early].msg = (mqr_msg_t *)msg;
    u->early[u->n_early].pub = p;
    u->n_early++;
    return 0;
}

/* Once per outage (and once while connected): the buffer bound was hit. */
static void warn_full(mqr_upstream_t *u, const char *what)
{
    if (u->full_warned) return;
    u->full_warned = true;
    MQR_LOG_W("upstream", "session '%s': %d messages waiting for the broker (max_buffered): %s",
              u->name, u->max_buffered, what);
}

/* Returns 0, 1 when the message expired (dropped), or < 0. */
static int publish(mqr_upstream_t *u, const mqr_msg_t *msg, up_pub_t *p)
{
    if (!msg) return MQR_EINVAL;
    if (u->closing) return MQR_ECLOSED;
    if (msg->qos > 2) return MQR_EQOS;
    uint32_t expiry = 0;
    if (msg->expiry_s) {
        uint64_t now = mqr__now_ms();
        uint64_t age_s = now > msg->created_ms ? (now - msg->created_ms) / 1000u : 0;
        if (age_s >= msg->expiry_s) {
            /* An expired message must not be forwarded (MQTT 5, 3.3.2.3.3). */
            u->stats.expired++;
            return p ? 1 : 0;
        }
        expiry = msg->expiry_s - (uint32_t)age_s;
    }
    if (!u->client || u->rebuilding) return publish_early(u, msg, p);
    MQTTAsync_message pm = MQTTAsync_message_initializer;
    pm.payload = (void *)msg->payload;
    pm.payloadlen = (int)msg->payload_len;
    pm.qos = msg->qos;
    pm.retained = msg->retain;
    /* Without a response struct Paho ignores the message's properties. */
    MQTTAsync_responseOptions r = MQTTAsync_responseOptions_initializer;
    if (p) answer_to(u, p, &r);
    if (u->version == MQTTVERSION_5) {
        if (msg->props_len) {
            int prc = props_decode(msg->props, msg->props_len, &pm.properties);
            if (prc < 0) {
                MQTTProperties_free(&pm.properties);
                u->stats.props_dropped++;
                MQR_LOG_W("upstream", "session '%s': sending '%s' without its v5 properties: %s",
                          u->name, msg->topic, mqr_strerror(prc));
            }
        }
        if (expiry) {
            MQTTProperty xp = {.identifier = MQTTPROPERTY_CODE_MESSAGE_EXPIRY_INTERVAL};
            xp.value.integer4 = expiry;
            if (MQTTProperties_add(&pm.properties, &xp) != 0) {
                MQTTProperties_free(&pm.properties);
                return MQR_ENOMEM;
            }
        }
    }
    bool oom;
    char *remote = remote_name(u, msg->topic, &oom);
    int rc = oom ? PAHO_OOM
                 : MQTTAsync_sendMessage(u->client, remote ? remote : msg->topic, &pm,
                                         &r); /* copies everything */
    free(remote);
    MQTTProperties_free(&pm.properties);
    rc = map_paho(rc);
    if (rc == 0 && u->state != MQR_UPSTREAM_CONNECTED &&
        ++u->buffered > (uint64_t)u->max_buffered && u->drop_oldest) {
        /* Paho made room by dropping the oldest buffered publish */
        u->stats.dropped_oldest++;
        warn_full(u, "dropping the oldest");
    }
    if (rc == 0) {
        u->stats.sent++;
        u->stats.bytes_sent += msg->payload_len;
        u->last_message_at_ms = wall_ms();
    } else if (rc == MQR_EFULL) {
        u->stats.full++;
        warn_full(u, "refusing new publishes (EFULL)");
    }
    return rc;
}

void mqr__upstream_close(mqr_upstream_t *u)
{
    if (!u || u->closing) return;
    u->closing = true;
    mqr_upstream_state_t old = u->state;
    u->state = MQR_UPSTREAM_CLOSED;
    u->ready = false;
    MQR_LOG_I("upstream", "session '%s' closing (%s)", u->name, u->uri);
    for (up_pub_t *p = u->pubs; p; p = p->next) {
        mqr_upstream_done_fn done = p->done;
        p->done = NULL;
        if (done) done(p->arg, MQR_ECLOSED, 0);
    }
    mqr_upstream_event_t sc = {.type = MQR_UPEV_STATE_CHANGED,
                               .reason = "closed",
                               .old_state = old,
                               .new_state = MQR_UPSTREAM_CLOSED};
    emit(u, &sc);
    emit_simple(u, MQR_UPEV_REMOVED, "closed", 0);
    /* what the rate limit still held back: the status goes with the session */
    u->drop_warned_ms = u->unprotected_warned_ms = u->not_kept_warned_ms = 0;
    report_losses(u);
    uint64_t waiting = (u->state == MQR_UPSTREAM_CONNECTED ? 0 : u->buffered) + u->n_early;
    if (waiting && u->persistent && !u->discard)
        MQR_LOG_I("upstream",
                  "session '%s': %llu message(s) buffered while disconnected stay stored for "
                  "the next start",
                  u->name, (unsigned long long)waiting);
    else if (waiting)
        MQR_LOG_W("upstream",
                  "session '%s': %llu message(s) buffered while disconnected are dropped", u->name,
                  (unsigned long long)waiting);
    begin_close(u);
}

void mqr__upstream_discard(mqr_upstream_t *u)
{
    if (!u || u->closing) return;
    u->discard = true;
    mqr__upstream_close(u);
}

/* ---- waiting for ready ------------------------------------------------- */

static bool is_ready(mqr_engine_t *e, const char *name)
{
    if (name) {
        mqr_upstream_t *u = mqr__upstream_find(e, name);
        return u && u->ready;
    }
    unsigned n = 0;
    for (mqr_upstream_t *u = e->sessions; u; u = u->next) {
        if (u->closing) continue;
        if (!u->ready) return false;
        n++;
    }
    return n > 0;
}

static void wait_closed(uv_handle_t *h)
{
    up_wait_t *w = h->data;
    uv_mutex_lock(&obs_lock);
    for (up_wait_t **pp = &waits; *pp; pp = &(*pp)->next)
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    uv_mutex_unlock(&obs_lock);
    free(w->name);
    free(w);
}

static void wait_observe(void *arg, const mqr_upstream_event_t *ev);

static void wait_finish(up_wait_t *w, int status)
{
    if (w->done) return;
    w->done = true;
    mqr__upstream_unobserve(w->e, wait_observe, w);
    uv_timer_stop(&w->timer);
    uv_close((uv_handle_t *)&w->timer, wait_closed);
    w->cb(w->arg, status);
}

static void wait_observe(void *arg, const mqr_upstream_event_t *ev)
{
    up_wait_t *w = arg;
    if (is_ready(w->e, w->name)) wait_finish(w, 0);
}

static void wait_timer(uv_timer_t *t)
{
    up_wait_t *w = t->data;
    wait_finish(w, is_ready(w->e, w->name) ? 0 : UV_ETIMEDOUT);
}

static void wait_check_now(uv_timer_t *t)
{
    up_wait_t *w = t->data;
    if (is_ready(w->e, w->name)) wait_finish(w, 0);
}

int mqr__upstream_wait_ready(mqr_engine_t *e, const char *name, uint64_t timeout_ms,
                             mqr_upstream_ready_fn cb, void *arg)
{
    if (!cb) return MQR_EINVAL;
    if (e->stopping) return MQR_ECLOSED;
    up_wait_t *w = calloc(1, sizeof *w);
    if (!w) return MQR_ENOMEM;
    w->e = e;
    w->cb = cb;
    w->arg = arg;
    if (name && !(w->name = strdup(name))) {
        free(w);
        return MQR_ENOMEM;
    }
    int rc = uv_timer_init(e->loop, &w->timer);
    if (rc < 0) {
        free(w->name);
        free(w);
        return rc;
    }
    w->timer.data = w;
    rc = mqr__upstream_observe(e, wait_observe, w);
    if (rc < 0) {
        w->done = true;
        uv_close((uv_handle_t *)&w->timer, wait_closed);
        return rc;
    }
    uv_once(&obs_once, obs_init);
    uv_mutex_lock(&obs_lock);
    w->next = waits;
    waits = w;
    uv_mutex_unlock(&obs_lock);
    if (is_ready(e, name)) {
        uv_timer_start(&w->timer, wait_check_now, 0, 0);
    } else {
        /* the loop's clock was read when its turn began, maybe long ago:
         * the timeout counts from now, never less than asked */
        uv_update_time(e->loop);
        uv_timer_start(&w->timer, wait_timer, timeout_ms, 0);
    }
    return 0;
}

/* ---- status ------------------------------------------------------------- */

void mqr__upstream_status(mqr_upstream_t *u, mqr_upstream_status_t *o)
{
    memset(o, 0, sizeof *o);
    o->state = u->state;
    o->ready = u->ready;
    o->clean = u->clean_start != 0;
    o->persistent = u->persistent;
    if (u->persistent) {
        int64_t n = mqr__upstream_persist_count(u->e->upstream_persist, u->name);
        o->stored = n > 0 ? (uint64_t)n : 0;
    }
    o->auto_reconnect = u->state != MQR_UPSTREAM_FAILED && !u->closing;
    o->broker = u->broker[0] ? u->broker : u->uri;
    o->last_error = u->last_error;
    o->last_error_at_ms = u->last_error_at_ms;
    o->connected_since_ms = u->connected_since_ms;
    o->last_message_at_ms = u->last_message_at_ms;
    o->connects = u->stats.connects;
    o->reconnects = u->stats.reconnects;
    o->connect_failures = u->stats.connect_failures;
    o->attempt = u->attempt;
    for (up_sub_t *s = u->subs; s; s = s->next)
        o->subscriptions++;
    if (!u->closing && u->client && !u->rebuilding) {
        MQTTAsync_token *tokens = NULL;
        if (MQTTAsync_getPendingTokens(u->client, &tokens) == MQTTASYNC_SUCCESS && tokens)
            for (MQTTAsync_token *t = tokens; *t != -1; t++)
                o->inflight++;
        MQTTAsync_free(tokens);
    }
    o->buffered = (u->state == MQR_UPSTREAM_CONNECTED ? 0 : u->buffered) + u->n_early;
    o->messages_sent = u->stats.sent;
    o->bytes_sent = u->stats.bytes_sent;
    o->messages_received = u->stats.received;
    o->bytes_received = u->stats.bytes_received;
    o->messages_refused = u->stats.refused;
    o->publish_full = u->stats.full;
    o->publish_dropped = u->stats.dropped_oldest;
    o->publish_expired = u->stats.expired;
    o->publish_failed = u->stats.publish_failed;
    uv_mutex_lock(&u->lock);
    o->messages_dropped = u->dropped;
    o->messages_unprotected = u->unprotected;
    o->messages_spilled = u->spilled;
    o->messages_not_kept = u->stats.not_kept;
    o->delivered = u->delivered;
    uv_mutex_unlock(&u->lock);
}

void mqr__upstream_set_inbound_limit(mqr_upstream_t *u, size_t max_msgs, size_t max_bytes)
{
    uv_mutex_lock(&u->lock);
    u->max_pending_msgs = max_msgs ? max_msgs : UP_MAX_PENDING_MSGS;
    u->max_pending_bytes = max_bytes ? max_bytes : UP_MAX_PENDING_BYTES;
    uv_mutex_unlock(&u->lock);
}

void mqr__upstream_foreach_sub(const mqr_upstream_t *u,
                               void (*fn)(void *arg, const char *filter, int qos), void *arg)
{
    for (const up_sub_t *s = u->subs; s; s = s->next)
        fn(arg, s->filter, s->qos);
}

mqr_upstream_t *mqr__upstream_first(mqr_engine_t *e)
{
    mqr_upstream_t *u = e->sessions;
    while (u && u->closing)
        u = u->next;
    return u;
}

mqr_upstream_t *mqr__upstream_next(mqr_upstream_t *u)
{
    u = u->next;
    while (u && u->closing)
        u = u->next;
    return u;
}

void mqr__upstream_manager_stats(mqr_engine_t *e, mqr_upstream_manager_stats_t *o)
{
    memset(o, 0, sizeof *o);
    for (mqr_upstream_t *u = mqr__upstream_first(e); u; u = mqr__upstream_next(u)) {
        o->sessions++;
        o->connected += u->state == MQR_UPSTREAM_CONNECTED;
        o->ready += u->ready;
        o->failed += u->state == MQR_UPSTREAM_FAILED;
        o->messages_sent += u->stats.sent;
        o->messages_received += u->stats.received;
        o->bytes_sent += u->stats.bytes_sent;
        o->bytes_received += u->stats.bytes_received;
        o->reconnects += u->stats.reconnects;
    }
}

static bool has_waits(mqr_engine_t *e)
{
    bool any = false;
    uv_once(&obs_once, obs_init);
    uv_mutex_lock(&obs_lock);
    for (up_wait_t *w = waits; w && !any; w = w->next)
        any = w->e == e;
    uv_mutex_unlock(&obs_lock);
    return any;
}

void mqr__upstream_close_all(mqr_engine_t *e)
{
    for (mqr_upstream_t *u = e->sessions; u; u = u->next)
        mqr__upstream_close(u);
    /* Waits still open end now; each is finished once, then only closing. */
    for (;;) {
        up_wait_t *found = NULL;
        uv_once(&obs_once, obs_init);
        uv_mutex_lock(&obs_lock);
        for (up_wait_t *w = waits; w && !found; w = w->next)
            if (w->e == e && !w->done) found = w;
        uv_mutex_unlock(&obs_lock);
        if (!found) break;
        wait_finish(found, MQR_ECLOSED);
    }
}

void mqr__upstream_free_all(mqr_engine_t *e)
{
    mqr__upstream_close_all(e);
    /* Closed sessions leave e->sessions only when Paho is done with them
     * (destroy on a worker, then the async handle's close). On the engine's
     * own loop that has happened already; on a host's loop drive it here so
     * nothing of the engine outlives mqr_engine_free(). */
    while (e->sessions || has_waits(e)) {
        if (uv_run(e->loop, UV_RUN_ONCE) == 0 && (e->sessions || has_waits(e))) {
            MQR_LOG_E("upstream", "sessions still open with an idle loop; leaking them");
            break;
        }
    }
}
