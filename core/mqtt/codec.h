/*
 * codec.h — MQTT 3.1.1 and 5.0 packets: framing, decoding, properties,
 * encoding, and the reason codes that answer a bad packet.
 *
 * Pure functions over caller buffers: nothing here allocates, does I/O, keeps
 * state between calls or knows about sessions (packet-id tracking, topic
 * alias tables, keep-alive, authorisation are the session layer's job).
 * Decoded structs point into the packet bytes they were decoded from, so
 * those bytes must outlive the struct. Any thread; no shared state.
 *
 * Sections of the specifications are cited as "3.1.1 §x" (OASIS MQTT
 * Version 3.1.1) and "5.0 §x" (OASIS MQTT Version 5.0).
 *
 * Errors returned by decoders, and the reason code each maps to (see
 * mqr__mqtt_reason_for_error()):
 *   MQR_EMALFORMED  the bytes do not parse (0x81)
 *   MQR_EUTF8       a string is not valid MQTT UTF-8, or holds U+0000 (0x81)
 *   MQR_EPROTOCOL   parses, but breaks a protocol rule (0x82)
 *   MQR_ETOPIC      invalid topic name (0x90) or topic filter (0x8F)
 *   MQR_ETOOLARGE   larger than the maximum packet size (0x95)
 *   MQR_EINCOMPLETE framing only: more bytes are needed
 *   MQR_EINVAL      misuse: wrong packet type for the function, bad version
 */
#ifndef MQR_MQTT_CODEC_H
#define MQR_MQTT_CODEC_H

#include "mqrouter.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MQR_MQTT_V311 4 /* protocol level byte of MQTT 3.1.1 */
#define MQR_MQTT_V5 5   /* protocol level byte of MQTT 5.0 */

#define MQR_MQTT_MAX_REMAINING 268435455u                 /* largest Remaining Length */
#define MQR_MQTT_MAX_PACKET (MQR_MQTT_MAX_REMAINING + 5u) /* with the largest fixed header */
#define MQR_MQTT_MAX_VARINT MQR_MQTT_MAX_REMAINING

/* Control packet types (high nibble of the first byte). */
enum {
    MQR_MQTT_CONNECT = 1,
    MQR_MQTT_CONNACK = 2,
    MQR_MQTT_PUBLISH = 3,
    MQR_MQTT_PUBACK = 4,
    MQR_MQTT_PUBREC = 5,
    MQR_MQTT_PUBREL = 6,
    MQR_MQTT_PUBCOMP = 7,
    MQR_MQTT_SUBSCRIBE = 8,
    MQR_MQTT_SUBACK = 9,
    MQR_MQTT_UNSUBSCRIBE = 10,
    MQR_MQTT_UNSUBACK = 11,
    MQR_MQTT_PINGREQ = 12,
    MQR_MQTT_PINGRESP = 13,
    MQR_MQTT_DISCONNECT = 14,
    MQR_MQTT_AUTH = 15, /* 5.0 only */
};

/* Who sent the packet being decoded: a few rules differ by direction (a
 * client must not send a Subscription Identifier in PUBLISH, a server must
 * not send Session Expiry Interval in DISCONNECT, ...). */
typedef enum {
    MQR_MQTT_FROM_CLIENT = 0, /* we are the server */
    MQR_MQTT_FROM_SERVER = 1, /* we are the client (load generator, tests) */
} mqr_mqtt_dir_t;

/* MQTT 5.0 property identifiers (5.0 §2.2.2.2). */
enum {
    MQR_MQTT_PROP_PAYLOAD_FORMAT = 0x01,         /* byte */
    MQR_MQTT_PROP_MESSAGE_EXPIRY = 0x02,         /* u32 */
    MQR_MQTT_PROP_CONTENT_TYPE = 0x03,           /* string */
    MQR_MQTT_PROP_RESPONSE_TOPIC = 0x08,         /* string */
    MQR_MQTT_PROP_CORRELATION_DATA = 0x09,       /* binary */
    MQR_MQTT_PROP_SUBSCRIPTION_ID = 0x0B,        /* varint */
    MQR_MQTT_PROP_SESSION_EXPIRY = 0x11,         /* u32 */
    MQR_MQTT_PROP_ASSIGNED_CLIENT_ID = 0x12,     /* string */
    MQR_MQTT_PROP_SERVER_KEEP_ALIVE = 0x13,      /* u16 */
    MQR_MQTT_PROP_AUTH_METHOD = 0x15,            /* string */
    MQR_MQTT_PROP_AUTH_DATA = 0x16,              /* binary */
    MQR_MQTT_PROP_REQUEST_PROBLEM_INFO = 0x17,   /* byte */
    MQR_MQTT_PROP_WILL_DELAY = 0x18,             /* u32 */
    MQR_MQTT_PROP_REQUEST_RESPONSE_INFO = 0x19,  /* byte */
    MQR_MQTT_PROP_RESPONSE_INFO = 0x1A,          /* string */
    MQR_MQTT_PROP_SERVER_REFERENCE = 0x1C,       /* string */
    MQR_MQTT_PROP_REASON_STRING = 0x1F,          /* string */
    MQR_MQTT_PROP_RECEIVE_MAX = 0x21,            /* u16 */
    MQR_MQTT_PROP_TOPIC_ALIAS_MAX = 0x22,        /* u16 */
    MQR_MQTT_PROP_TOPIC_ALIAS = 0x23,            /* u16 */
    MQR_MQTT_PROP_MAX_QOS = 0x24,                /* byte */
    MQR_MQTT_PROP_RETAIN_AVAILABLE = 0x25,       /* byte */
    MQR_MQTT_PROP_USER = 0x26,                   /* string pair */
    MQR_MQTT_PROP_MAX_PACKET_SIZE = 0x27,        /* u32 */
    MQR_MQTT_PROP_WILDCARD_SUB_AVAILABLE = 0x28, /* byte */
    MQR_MQTT_PROP_SUB_ID_AVAILABLE = 0x29,       /* byte */
    MQR_MQTT_PROP_SHARED_SUB_AVAILABLE = 0x2A,   /* byte */
    MQR_MQTT_PROP_MAX_ID = 0x2A,
};

/* Data types of property values (5.0 §1.5). */
typedef enum {
    MQR_MQTT_PT_BYTE = 1,
    MQR_MQTT_PT_U16 = 2,
    MQR_MQTT_PT_U32 = 3,
    MQR_MQTT_PT_VARINT = 4,
    MQR_MQTT_PT_STRING = 5,
    MQR_MQTT_PT_BINARY = 6,
    MQR_MQTT_PT_PAIR = 7,
} mqr_mqtt_prop_type_t;

/* MQTT 5.0 reason codes (5.0 §2.4). 0x00 is also "normal disconnection" and
 * "granted QoS 0". */
enum {
    MQR_MQTT_RC_SUCCESS = 0x00,
    MQR_MQTT_RC_GRANTED_QOS1 = 0x01,
    MQR_MQTT_RC_GRANTED_QOS2 = 0x02,
    MQR_MQTT_RC_DISCONNECT_WITH_WILL = 0x04,
    MQR_MQTT_RC_NO_MATCHING_SUBSCRIBERS = 0x10,
    MQR_MQTT_RC_NO_SUBSCRIPTION_EXISTED = 0x11,
    MQR_MQTT_RC_CONTINUE_AUTH = 0x18,
    MQR_MQTT_RC_REAUTHENTICATE = 0x19,
    MQR_MQTT_RC_UNSPECIFIED = 0x80,
    MQR_MQTT_RC_MALFORMED = 0x81,
    MQR_MQTT_RC_PROTOCOL_ERROR = 0x82,
    MQR_MQTT_RC_IMPL_SPECIFIC = 0x83,
    MQR_MQTT_RC_UNSUPPORTED_VERSION = 0x84,
    MQR_MQTT_RC_CLIENT_ID_INVALID = 0x85,
    MQR_MQTT_RC_BAD_USERNAME_PASSWORD = 0x86,
    MQR_MQTT_RC_NOT_AUTHORIZED = 0x87,
    MQR_MQTT_RC_SERVER_UNAVAILABLE = 0x88,
    MQR_MQTT_RC_SERVER_BUSY = 0x89,
    MQR_MQTT_RC_BANNED = 0x8A,
    MQR_MQTT_RC_SERVER_SHUTTING_DOWN = 0x8B,
    MQR_MQTT_RC_BAD_AUTH_METHOD = 0x8C,
    MQR_MQTT_RC_KEEP_ALIVE_TIMEOUT = 0x8D,
    MQR_MQTT_RC_SESSION_TAKEN_OVER = 0x8E,
    MQR_MQTT_RC_TOPIC_FILTER_INVALID = 0x8F,
    MQR_MQTT_RC_TOPIC_NAME_INVALID = 0x90,
    MQR_MQTT_RC_PACKET_ID_IN_USE = 0x91,
    MQR_MQTT_RC_PACKET_ID_NOT_FOUND = 0x92,
    MQR_MQTT_RC_RECEIVE_MAX_EXCEEDED = 0x93,
    MQR_MQTT_RC_TOPIC_ALIAS_INVALID = 0x94,
    MQR_MQTT_RC_PACKET_TOO_LARGE = 0x95,
    MQR_MQTT_RC_MESSAGE_RATE_TOO_HIGH = 0x96,
    MQR_MQTT_RC_QUOTA_EXCEEDED = 0x97,
    MQR_MQTT_RC_ADMIN_ACTION = 0x98,
    MQR_MQTT_RC_PAYLOAD_FORMAT_INVALID = 0x99,
    MQR_MQTT_RC_RETAIN_NOT_SUPPORTED = 0x9A,
    MQR_MQTT_RC_QOS_NOT_SUPPORTED = 0x9B,
    MQR_MQTT_RC_USE_ANOTHER_SERVER = 0x9C,
    MQR_MQTT_RC_SERVER_MOVED = 0x9D,
    MQR_MQTT_RC_SHARED_SUB_NOT_SUPPORTED = 0x9E,
    MQR_MQTT_RC_CONNECTION_RATE_EXCEEDED = 0x9F,
    MQR_MQTT_RC_MAX_CONNECT_TIME = 0xA0,
    MQR_MQTT_RC_SUB_ID_NOT_SUPPORTED = 0xA1,
    MQR_MQTT_RC_WILDCARD_SUB_NOT_SUPPORTED = 0xA2,
};

/* MQTT 3.1.1 CONNACK return codes (3.1.1 §3.2.2.3). */
enum {
    MQR_MQTT_V3_ACCEPTED = 0x00,
    MQR_MQTT_V3_BAD_PROTOCOL_VERSION = 0x01,
    MQR_MQTT_V3_ID_REJECTED = 0x02,
    MQR_MQTT_V3_SERVER_UNAVAILABLE = 0x03,
    MQR_MQTT_V3_BAD_USERNAME_PASSWORD = 0x04,
    MQR_MQTT_V3_NOT_AUTHORIZED = 0x05,
};

/* Views into packet bytes. A string is never NUL-terminated; p is NULL
 * when the field is absent (p may be non-NULL with len 0: present, empty). */
typedef struct {
    const char *p;
    uint16_t len;
} mqr_mqtt_str_t;

typedef struct {
    const uint8_t *p;
    uint32_t len;
} mqr_mqtt_bin_t;

/* ---- framing ---------------------------------------------------------- */

typedef struct {
    uint8_t type;       /* 0..15, high nibble of the first byte (not checked) */
    uint8_t flags;      /* low nibble of the first byte (not checked) */
    uint8_t hdr_len;    /* fixed header bytes, 2..5 */
    uint32_t remaining; /* Remaining Length */
    size_t total;       /* hdr_len + remaining: the bytes this packet occupies */
} mqr_mqtt_frame_t;

/* Is a whole packet at the start of buf[0..len)? Returns 0 and fills *out
 * when the packet's last byte has arrived; MQR_EINCOMPLETE when more bytes
 * are needed; MQR_EMALFORMED for a bad Remaining Length; MQR_ETOOLARGE when
 * the packet would exceed max_size (0 = MQR_MQTT_MAX_PACKET), reported as
 * soon as the Remaining Length is known so the caller need not buffer it.
 * version is the connection's protocol level, or 0 before CONNECT: with 5 a
 * non-minimal Remaining Length is malformed (5.0 §1.5.5 [MQTT-1.5.5-1],
 * which §2.1.4 applies to the Remaining Length); 3.1.1 §2.2.3 states no such
 * rule, so with 4 or 0 it is accepted (a v5 CONNECT re-checks its own). */
int mqr__mqtt_frame(const uint8_t *buf, size_t len, size_t max_size, int version,
                    mqr_mqtt_frame_t *out);

/* Variable Byte Integer helpers (5.0 §1.5.5, 3.1.1 §2.2.3).
 * read: 0 and *v, *used (1..4); MQR_EINCOMPLETE when buf ends inside it;
 * MQR_EMALFORMED when a fourth byte still has the continuation bit. Does not
 * reject non-minimal forms: compare *used with mqr__mqtt_varint_size(*v).
 * write: dst needs mqr__mqtt_varint_size(v) bytes; v <= MQR_MQTT_MAX_VARINT. */
int mqr__mqtt_varint_read(const uint8_t *buf, size_t len, uint32_t *v, size_t *used);
size_t mqr__mqtt_varint_size(uint32_t v);
size_t mqr__mqtt_varint_write(uint8_t *dst, uint32_t v);

/* ---- properties (5.0 §2.2.2) -------------------------------------------- */

/* One property. num holds byte, u16, u32 and varint values; data/len a
 * string or binary value or a pair's name, value/value_len a pair's value. */
typedef struct {
    uint8_t id;
    uint8_t type; /* mqr_mqtt_prop_type_t */
    uint16_t len;
    uint16_t value_len;
    uint32_t num;
    const uint8_t *data;
    const uint8_t *value;
} mqr_mqtt_prop_t;

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
} mqr_mqtt_prop_iter_t;

/* Walks raw property bytes (without their length prefix), e.g. a decoded
 * packet's props, or a message's stored props. next returns 1 with *out, 0
 * at the end, MQR_EMALFORMED on an unknown identifier or a truncated value
 * (and 0 on every later call). It checks framing only: run bytes from outside
 * a decoder through mqr__mqtt_props_validate() first. */
void mqr__mqtt_props_iter(mqr_mqtt_prop_iter_t *it, const uint8_t *props, size_t len);
int mqr__mqtt_props_next(mqr_mqtt_prop_iter_t *it, mqr_mqtt_prop_t *out);

/* Where properties sit: a packet type, or the Will Properties of CONNECT. */
#define MQR_MQTT_CTX_WILL 16

/* Every property found, as validated by mqr__mqtt_props_parse(): bit id of
 * seen is set when property id is present, v[id] is then its (first) value. */
typedef struct {
    uint64_t seen;
    uint32_t n_user;   /* User Property count */
    uint32_t n_sub_id; /* Subscription Identifier count */
    mqr_mqtt_prop_t v[MQR_MQTT_PROP_MAX_ID + 1];
} mqr_mqtt_propset_t;

/* Validates props for context ctx (MQR_MQTT_CONNECT.. MQR_MQTT_AUTH, or
 * MQR_MQTT_CTX_WILL) sent in direction dir, and fills *ps. Errors:
 * MQR_EMALFORMED for truncation or an identifier unknown or not allowed in
 * ctx (5.0 §2.2.2.2); MQR_EUTF8 for a bad string; MQR_EPROTOCOL for a
 * duplicate (only User Property may repeat, and Subscription Identifier in a
 * PUBLISH from the server, 5.0 §3.3.2.3.8), a Subscription Identifier in a
 * PUBLISH from a client [MQTT-3.3.4-6], or a value the spec calls a protocol
 * error (0 for Receive Maximum, Maximum Packet Size, Topic Alias or
 * Subscription Identifier; a byte flag other than 0/1; Maximum QoS > 1; a
 * Response Topic that is empty or has wildcards; Authentication Data without
 * Authentication Method). */
int mqr__mqtt_props_parse(const uint8_t *props, size_t len, int ctx, mqr_mqtt_dir_t dir,
                          mqr_mqtt_propset_t *ps);
int mqr__mqtt_props_validate(const uint8_t *props, size_t len, int ctx, mqr_mqtt_dir_t dir);

/* Copies validated props to dst leaving out what is meant for one hop only
 * (Topic Alias, Subscription Identifier, Will Delay Interval), so a received
 * PUBLISH's or will's props can be stored and forwarded. dst needs len bytes
 * and may equal props (compacts in place). Returns the new length. */
size_t mqr__mqtt_props_strip(const uint8_t *props, size_t len, uint8_t *dst);

/* Builds property bytes (without the length prefix) into buf[0..cap).
 * Errors stick: after the calls, finish says 0 with *len the bytes written;
 * MQR_ETOOLARGE when they did not fit (*len = bytes needed, so init with
 * buf NULL, cap 0 to measure); MQR_EINVAL when an id is unknown or used with
 * the wrong type, a varint is over MQR_MQTT_MAX_VARINT or a string or binary
 * over 65535 bytes. Strings are written as given (not UTF-8 checked). */
typedef struct {
    uint8_t *buf;
    size_t cap;
    size_t len;
    int err;
} mqr_mqtt_pbuild_t;

void mqr__mqtt_pb_init(mqr_mqtt_pbuild_t *b, uint8_t *buf, size_t cap);
void mqr__mqtt_pb_byte(mqr_mqtt_pbuild_t *b, uint8_t id, uint8_t v);
void mqr__mqtt_pb_u16(mqr_mqtt_pbuild_t *b, uint8_t id, uint16_t v);
void mqr__mqtt_pb_u32(mqr_mqtt_pbuild_t *b, uint8_t id, uint32_t v);
void mqr__mqtt_pb_varint(mqr_mqtt_pbuild_t *b, uint8_t id, uint32_t v);
void mqr__mqtt_pb_string(mqr_mqtt_pbuild_t *b, uint8_t id, const char *s, size_t len);
void mqr__mqtt_pb_binary(mqr_mqtt_pbuild_t *b, uint8_t id, const void *data, size_t len);
void mqr__mqtt_pb_user(mqr_mqtt_pbuild_t *b, const char *name, size_t name_len, const char *value,
                       size_t value_len);
void mqr__mqtt_pb_add(mqr_mqtt_pbuild_t *b, const mqr_mqtt_prop_t *p); /* any type, by p->id */
int mqr__mqtt_pb_finish(const mqr_mqtt_pbuild_t *b, size_t *len);

/* ---- packets -----------------------------------------------------------
 *
 * One struct per packet, used both ways. Decoders fill every field (the
 * "from props" ones with the spec's defaults when absent) and point into the
 * packet. Encoders read the fields above "from props": props are written
 * verbatim (build them with mqr__mqtt_pb_*), the pre-extracted values are
 * ignored. In 3.1.1 props, reasons and the v5-only fields are left empty by
 * decoders and ignored by encoders.
 */

typedef struct {
    uint8_t version;          /* 4 or 5; decoders set it once the level is accepted */
    uint8_t protocol_level;   /* decode: the level byte as received */
    bool version_unsupported; /* decode failed: an MQTT name, but a level other than 4/5 */
    bool client_id_rejected;  /* decode failed: 3.1.1 empty client id without clean session */
    bool clean_start;         /* Clean Session in 3.1.1 */
    uint16_t keep_alive;
    mqr_mqtt_bin_t props;
    mqr_mqtt_str_t client_id;
    bool has_will;
    uint8_t will_qos;
    bool will_retain;
    mqr_mqtt_bin_t will_props;
    mqr_mqtt_str_t will_topic;
    mqr_mqtt_bin_t will_payload; /* at most 65535 bytes */
    bool has_username;
    mqr_mqtt_str_t username;
    bool has_password;
    mqr_mqtt_bin_t password; /* at most 65535 bytes */
    /* from props (decode only) */
    uint32_t session_expiry;       /* 0 */
    uint16_t receive_max;          /* 65535 */
    uint32_t max_packet_size;      /* 0 = no limit given */
    uint16_t topic_alias_max;      /* 0 */
    uint8_t request_response_info; /* 0 */
    uint8_t request_problem_info;  /* 1 */
    mqr_mqtt_str_t auth_method;    /* p NULL = absent */
    mqr_mqtt_bin_t auth_data;      /* p NULL = absent */
    uint32_t will_delay;           /* 0 */
    bool will_has_expiry;
    uint32_t will_expiry;
    uint8_t will_payload_format; /* 0 */
} mqr_mqtt_connect_t;

typedef struct {
    bool session_present;
    uint8_t reason; /* v5 reason code, or 3.1.1 return code */
    mqr_mqtt_bin_t props;
    /* from props (decode only) */
    bool has_session_expiry;
    uint32_t session_expiry;
    uint16_t receive_max;           /* 65535 */
    uint8_t max_qos;                /* 2 */
    uint8_t retain_available;       /* 1 */
    uint32_t max_packet_size;       /* 0 = no limit given */
    uint16_t topic_alias_max;       /* 0 */
    uint8_t wildcard_sub_available; /* 1 */
    uint8_t sub_id_available;       /* 1 */
    uint8_t shared_sub_available;   /* 1 */
    bool has_server_keep_alive;
    uint16_t server_keep_alive;
    mqr_mqtt_str_t assigned_client_id;
    mqr_mqtt_str_t reason_string;
    mqr_mqtt_str_t response_info;
    mqr_mqtt_str_t server_reference;
    mqr_mqtt_str_t auth_method;
    mqr_mqtt_bin_t auth_data;
} mqr_mqtt_connack_t;

typedef struct {
    uint8_t qos;
    bool dup;
    bool retain;
    uint16_t packet_id; /* 0 with QoS 0 */
    mqr_mqtt_str_t topic;
    mqr_mqtt_bin_t props;
    mqr_mqtt_bin_t payload;
    /* from props (decode only) */
    uint16_t topic_alias; /* 0 = none */
    bool has_expiry;
    uint32_t expiry;
    uint8_t payload_format; /* 0 bytes, 1 UTF-8 */
    uint32_t sub_id_count;  /* from a server: may be several */
    uint32_t sub_id;        /* the first one */
    mqr_mqtt_str_t content_type;
    mqr_mqtt_str_t response_topic;
    mqr_mqtt_bin_t correlation_data;
    /* encode only (decoders zero them): written after props, so a stored
     * message's props go out unchanged with this hop's alias and ids */
    uint16_t add_topic_alias;    /* 0 = none */
    const uint32_t *add_sub_ids; /* each 1..MQR_MQTT_MAX_VARINT */
    size_t n_add_sub_ids;
} mqr_mqtt_publish_t;

/* PUBACK, PUBREC, PUBREL, PUBCOMP. */
typedef struct {
    uint8_t type; /* MQR_MQTT_PUBACK..MQR_MQTT_PUBCOMP */
    uint16_t packet_id;
    uint8_t reason; /* v5; 0 in 3.1.1 */
    mqr_mqtt_bin_t props;
    mqr_mqtt_str_t reason_string; /* from props (decode only) */
} mqr_mqtt_ack_t;

/* One SUBSCRIBE entry. Decode fills all fields; encode reads filter, qos,
 * no_local, retain_as_published, retain_handling. */
typedef struct {
    mqr_mqtt_str_t filter;
    uint8_t options; /* the raw byte */
    uint8_t qos;
    bool no_local;
    bool retain_as_published;
    uint8_t retain_handling;
    bool shared; /* v5 "$share/<name>/<filter>" */
} mqr_mqtt_sub_entry_t;

typedef struct {
    uint16_t packet_id;
    mqr_mqtt_bin_t props;
    mqr_mqtt_bin_t list; /* decode: the validated entries; read with mqr__mqtt_sub_next() */
    uint32_t count;
    uint32_t sub_id; /* from props; 0 = none */
} mqr_mqtt_subscribe_t;

typedef struct {
    uint16_t packet_id;
    mqr_mqtt_bin_t props;
    const uint8_t *codes; /* one reason code (3.1.1: return code) per filter */
    uint32_t count;
    mqr_mqtt_str_t reason_string; /* from props (decode only) */
} mqr_mqtt_suback_t;

typedef struct {
    uint16_t packet_id;
    mqr_mqtt_bin_t props;
    mqr_mqtt_bin_t list; /* decode: the validated filters; read with mqr__mqtt_unsub_next() */
    uint32_t count;
} mqr_mqtt_unsubscribe_t;

typedef struct {
    uint16_t packet_id;
    mqr_mqtt_bin_t props;
    const uint8_t *codes; /* v5: one per filter; 3.1.1 has none (count 0) */
    uint32_t count;
    mqr_mqtt_str_t reason_string; /* from props (decode only) */
} mqr_mqtt_unsuback_t;

typedef struct {
    uint8_t reason;
    mqr_mqtt_bin_t props;
    /* from props (decode only) */
    bool has_session_expiry;
    uint32_t session_expiry;
    mqr_mqtt_str_t reason_string;
    mqr_mqtt_str_t server_reference;
} mqr_mqtt_disconnect_t;

typedef struct {
    uint8_t reason;
    mqr_mqtt_bin_t props;
    /* from props (decode only) */
    mqr_mqtt_str_t auth_method;
    mqr_mqtt_bin_t auth_data;
    mqr_mqtt_str_t reason_string;
} mqr_mqtt_auth_t;

/* Any packet, for mqr__mqtt_decode(). PINGREQ/PINGRESP carry nothing. */
typedef struct {
    uint8_t type;
    union {
        mqr_mqtt_connect_t connect;
        mqr_mqtt_connack_t connack;
        mqr_mqtt_publish_t publish;
        mqr_mqtt_ack_t ack;
        mqr_mqtt_subscribe_t subscribe;
        mqr_mqtt_suback_t suback;
        mqr_mqtt_unsubscribe_t unsubscribe;
        mqr_mqtt_unsuback_t unsuback;
        mqr_mqtt_disconnect_t disconnect;
        mqr_mqtt_auth_t auth;
    } u;
} mqr_mqtt_packet_t;

/* ---- decoding ----------------------------------------------------------
 *
 * pkt[0..len) is exactly one packet from its first byte, as framed by
 * mqr__mqtt_frame() (len == frame.total); a Remaining Length that disagrees
 * with len is malformed. version is the connection's (4 or 5; else
 * MQR_EINVAL). The packet type must be the function's (else MQR_EINVAL).
 * Fixed-header flags other than the spec's are malformed (3.1.1 §2.2.2,
 * 5.0 §2.1.3); so are bytes left over after the last field. On error the
 * output holds whatever was decoded so far; use it only as documented.
 */

/* CONNECT fixes the version, so it takes none. Fails with MQR_EPROTOCOL for
 * a protocol name other than "MQTT" (or "MQIsdp", MQTT 3.1's), with
 * c->version_unsupported too when the name is one of those but not with
 * level 4 or 5 (c->protocol_level tells which); with c->client_id_rejected on a
 * 3.1.1 empty client id without clean session [MQTT-3.1.3-8]. Reserved flag,
 * will QoS 3, will QoS/retain without will: MQR_EMALFORMED (5.0 §3.1.2.3,
 * §3.1.2.6). 3.1.1 password without username: MQR_EPROTOCOL
 * [MQTT-3.1.2-22]. Will topic: as a PUBLISH topic. See
 * mqr__mqtt_connect_refusal() for the answer. */
int mqr__mqtt_decode_connect(const uint8_t *pkt, size_t len, mqr_mqtt_connect_t *c);

/* A 5.0 CONNACK with Remaining Length 2 (no properties) is accepted, with
 * the 3.1.1 return codes 1-5 too, as a v5 client must read a 3.1.1 server's
 * refusal ([20 02 00 01]); reason then holds the 3.1.1 code. Session present
 * with a non-zero code: MQR_EPROTOCOL. */
int mqr__mqtt_decode_connack(const uint8_t *pkt, size_t len, int version, mqr_mqtt_connack_t *c);

/* QoS 3: MQR_EMALFORMED. QoS > 0 with packet id 0: MQR_EPROTOCOL. Topic with
 * '+' or '#', or empty (3.1.1): MQR_ETOPIC; empty in 5.0 without a Topic
 * Alias: MQR_EPROTOCOL (5.0 §3.3.2.1). Hot path: no copy, no allocation. */
int mqr__mqtt_decode_publish(const uint8_t *pkt, size_t len, int version, mqr_mqtt_dir_t dir,
                             mqr_mqtt_publish_t *p);

/* PUBACK, PUBREC, PUBREL, PUBCOMP (type taken from the packet). 5.0 short
 * forms: Remaining Length 2 means reason 0, 3 means no properties. An
 * unknown reason code for the type is MQR_EPROTOCOL. */
int mqr__mqtt_decode_ack(const uint8_t *pkt, size_t len, int version, mqr_mqtt_ack_t *a);

/* Validates every entry: filter syntax (MQR_ETOPIC), reserved option bits
 * and 3.1.1 QoS 3 (MQR_EMALFORMED), 5.0 QoS 3 or Retain Handling 3 or
 * No Local on a shared subscription (MQR_EPROTOCOL), empty list
 * (MQR_EPROTOCOL). Then iterate with mqr__mqtt_sub_iter()/_next(). */
int mqr__mqtt_decode_subscribe(const uint8_t *pkt, size_t len, int version,
                               mqr_mqtt_subscribe_t *s);
int mqr__mqtt_decode_suback(const uint8_t *pkt, size_t len, int version, mqr_mqtt_suback_t *s);
int mqr__mqtt_decode_unsubscribe(const uint8_t *pkt, size_t len, int version,
                                 mqr_mqtt_unsubscribe_t *u);
int mqr__mqtt_decode_unsuback(const uint8_t *pkt, size_t len, int version, mqr_mqtt_unsuback_t *u);
/* PINGREQ or PINGRESP. */
int mqr__mqtt_decode_ping(const uint8_t *pkt, size_t len, int version);
int mqr__mqtt_decode_disconnect(const uint8_t *pkt, size_t len, int version, mqr_mqtt_dir_t dir,
                                mqr_mqtt_disconnect_t *d);
/* 5.0 only (type 15 is reserved in 3.1.1: MQR_EMALFORMED there). Unless
 * the Remaining Length is 0 (plain success), Authentication Method is
 * required (5.0 §3.15.2.2.2); comparing it with CONNECT's is the session's. */
int mqr__mqtt_decode_auth(const uint8_t *pkt, size_t len, int version, mqr_mqtt_auth_t *a);

/* Any packet: dispatches on the type, and also refuses (MQR_EPROTOCOL) a
 * type that never flows in direction dir (CONNACK from a client, CONNECT
 * from a server, ...). Reserved type 0 (and 15 in 3.1.1): MQR_EMALFORMED.
 * version is ignored for CONNECT. */
int mqr__mqtt_decode(const uint8_t *pkt, size_t len, int version, mqr_mqtt_dir_t dir,
                     mqr_mqtt_packet_t *out);

/* Iterators over a decoded SUBSCRIBE's entries / UNSUBSCRIBE's filters.
 * next returns false after the last one. version must be the one decoded
 * with (it decides how the options byte reads). */
typedef struct {
    const uint8_t *p;
    const uint8_t *end;
    int version;
} mqr_mqtt_list_iter_t;

void mqr__mqtt_sub_iter(mqr_mqtt_list_iter_t *it, const mqr_mqtt_subscribe_t *s, int version);
bool mqr__mqtt_sub_next(mqr_mqtt_list_iter_t *it, mqr_mqtt_sub_entry_t *e);
void mqr__mqtt_unsub_iter(mqr_mqtt_list_iter_t *it, const mqr_mqtt_unsubscribe_t *u, int version);
bool mqr__mqtt_unsub_next(mqr_mqtt_list_iter_t *it, mqr_mqtt_str_t *filter);

/* Topic checks as the decoders apply them (5.0 §4.7, 3.1.1 §4.7): a name is
 * valid UTF-8, non-empty, without '+' or '#'; a filter is valid UTF-8,
 * non-empty, with wildcards only as whole levels and '#' last, and in 5.0
 * a "$share/" filter has a non-empty share name without wildcards and a
 * filter after it. Return 0, MQR_EUTF8 or MQR_ETOPIC. */
int mqr__mqtt_topic_name_check(const char *s, size_t len);
int mqr__mqtt_topic_filter_check(const char *s, size_t len, int version, bool *shared);

/* ---- encoding ----------------------------------------------------------
 *
 * Every encoder sets *len to the packet's exact size, then writes it into
 * buf when buf is not NULL (pass NULL to size a packet against a peer's
 * Maximum Packet Size before writing). Returns 0; MQR_ETOOLARGE when buf is
 * not NULL and cap < *len (nothing written); MQR_EINVAL when the struct
 * cannot be encoded (version not 4/5, QoS > 2, packet id 0 where one is
 * required, a v5-only packet in 3.1.1, a field over its wire limit, a
 * Remaining Length over MQR_MQTT_MAX_REMAINING). Strings are trusted: they
 * are not UTF-8 checked again.
 */
int mqr__mqtt_encode_connect(const mqr_mqtt_connect_t *c, uint8_t *buf, size_t cap, size_t *len);
int mqr__mqtt_encode_connack(const mqr_mqtt_connack_t *c, int version, uint8_t *buf, size_t cap,
                             size_t *len);

/* PUBLISH in three costs: size only; the part before the payload (fixed
 * header, topic, packet id, props), so the payload can follow from the
 * message with a second iovec; or the whole packet. *head_len + payload.len
 * == *len. */
int mqr__mqtt_publish_size(const mqr_mqtt_publish_t *p, int version, size_t *len, size_t *head_len);
int mqr__mqtt_encode_publish_head(const mqr_mqtt_publish_t *p, int version, uint8_t *buf,
                                  size_t cap, size_t *head_len);
int mqr__mqtt_encode_publish(const mqr_mqtt_publish_t *p, int version, uint8_t *buf, size_t cap,
                             size_t *len);

/* Uses the 5.0 short forms when reason is 0 and/or props are empty. */
int mqr__mqtt_encode_ack(const mqr_mqtt_ack_t *a, int version, uint8_t *buf, size_t cap,
                         size_t *len);
int mqr__mqtt_encode_subscribe(const mqr_mqtt_subscribe_t *s, const mqr_mqtt_sub_entry_t *entries,
                               size_t n, int version, uint8_t *buf, size_t cap, size_t *len);
int mqr__mqtt_encode_suback(const mqr_mqtt_suback_t *s, int version, uint8_t *buf, size_t cap,
                            size_t *len);
int mqr__mqtt_encode_unsubscribe(const mqr_mqtt_unsubscribe_t *u, const mqr_mqtt_str_t *filters,
                                 size_t n, int version, uint8_t *buf, size_t cap, size_t *len);
int mqr__mqtt_encode_unsuback(const mqr_mqtt_unsuback_t *u, int version, uint8_t *buf, size_t cap,
                              size_t *len);
/* type is MQR_MQTT_PINGREQ or MQR_MQTT_PINGRESP. */
int mqr__mqtt_encode_ping(int type, uint8_t *buf, size_t cap, size_t *len);
int mqr__mqtt_encode_disconnect(const mqr_mqtt_disconnect_t *d, int version, uint8_t *buf,
                                size_t cap, size_t *len);
int mqr__mqtt_encode_auth(const mqr_mqtt_auth_t *a, int version, uint8_t *buf, size_t cap,
                          size_t *len);

/* ---- answering errors --------------------------------------------------- */

/* The v5 reason code to send (CONNACK or DISCONNECT) for a decoder error on
 * a packet of type packet_type: malformed/UTF-8/incomplete 0x81, protocol
 * 0x82, topic 0x90 (0x8F for SUBSCRIBE/UNSUBSCRIBE filters), too large 0x95,
 * QoS 0x9B, anything else 0x80. 3.1.1 has no such codes: close instead
 * (3.1.1 §4.8). */
uint8_t mqr__mqtt_reason_for_error(int err, int packet_type);

/* How to refuse a CONNECT that mqr__mqtt_decode_connect() failed with err
 * (c as it left it). Returns true with *version (the format of the CONNACK
 * to send: 4 or 5) and *code when a CONNACK should precede the close:
 *   protocol name "MQTT"/"MQIsdp" with a level below 5: 3.1.1 CONNACK 0x01
 *     [MQTT-3.1.2-2]; level above 5: 5.0 CONNACK 0x84 (5.0 §3.1.2.2);
 *   3.1.1 empty client id without clean session: 3.1.1 CONNACK 0x02;
 *   any error once the version is 5.0: 5.0 CONNACK with
 *     mqr__mqtt_reason_for_error(err, CONNECT) (5.0 §4.13.1).
 * False (close without CONNACK) for an unknown protocol name, an error before
 * the level is read, and any other 3.1.1 error (3.1.1 §4.8 has no code). */
bool mqr__mqtt_connect_refusal(int err, const mqr_mqtt_connect_t *c, int *version, uint8_t *code);

/* A 3.1.1 CONNACK return code for a v5 CONNACK reason the session layer
 * chose (bad credentials 0x86 -> 0x04, not authorised 0x87 -> 0x05, client
 * id invalid 0x85 -> 0x02, unsupported version 0x84 -> 0x01, success -> 0,
 * anything else -> 0x03 server unavailable). */
uint8_t mqr__mqtt_connack_v3_code(uint8_t v5_reason);

#endif
