/*
 * upstream_native_ops.c — the "native" transport: upstream sessions on our
 * own MQTT client (core/mqttc), on the loop thread. It implements the ops
 * table of upstream_transport.h: parses the broker URIs, resolves names
 * (uv_getaddrinfo), makes one mqr_mqttc_t per attempt (failing over along
 * the session's URI list within one connect, as Paho does), buffers
 * publishes while disconnected and turns what the client reports into the
 * session's events.
 *
 * An incoming QoS 1/2 message is acknowledged only after the loop routed
 * it: its event carries an ack_id and mqr__up_deliver calls native_ack.
 * The ack_id holds the client's own id and, above it, the generation of
 * the connection, so an acknowledgement meant for a connection that is
 * gone never reaches the next one (the broker resends those).
 *
 * A persistent session keeps every QoS 1/2 publish it accepted as a row of
 * the engine store's outbox (store_outbox.h) until the broker completes it:
 * written in the loop turn's group commit before publish returns (so the
 * publisher's acknowledgement waits for that commit), deleted at the
 * PUBACK / PUBCOMP, read back in order when the session is made again
 * (a restart, a kill -9, a reload). Every session keeps its in-flight
 * publishes across a lost connection whatever clean_start says: resent
 * with DUP to a session the broker kept, sent again as new ones to a
 * fresh session.
 *
 * Loop thread only; nothing here blocks, so the session destroys the
 * client on the loop (destroy_on_loop). Must not: decide what the session
 * does next (retries, state, waiters: upstream.c).
 */
#include "upstream_int.h"

#include "auth.h"
#include "mqttc.h"
#include "store_outbox.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NAT_CONNECT_TIMEOUT_MS 10000

/* ack_id = the client's id (18 bits: packet id, QoS) | generation << 18 */
#define NAT_ACK_BITS 18
#define NAT_ACK_MASK ((1u << NAT_ACK_BITS) - 1u)
#define NAT_GEN_MASK ((1u << (32 - NAT_ACK_BITS)) - 1u)

/* The mqttc token's low two bits say what it answers. */
enum {
    TOK_WAITER = 0,  /* an up_pub_t (unsubscribe, ping, QoS 0 publish) */
    TOK_SUB = 1,     /* a subscription token << 2 */
    TOK_QOS_PUB = 2, /* a QoS 1/2 publish nobody waits for */
    TOK_QOS_WAIT = 3 /* a QoS 1/2 publish with its up_pub_t */
};

typedef struct nat_buf nat_buf_t;
struct nat_buf {
    nat_buf_t *next;
    mqr_msg_t *msg; /* a reference */
    uint64_t seq;   /* its outbox row (persistent, QoS 1/2), else 0 */
    uint32_t expiry_s;
    up_pub_t *p;
    char topic[];
};

typedef struct nat_state nat_state_t;

/* One connect attempt to one URI: resolving, then a client. Outlives the
 * session when destroy detached it (n NULL): a name still resolving, or a
 * flushing DISCONNECT; then it frees itself when that ends. */
typedef struct {
    nat_state_t *n;
    mqr_mqttc_t *c;
    uv_getaddrinfo_t gai;
    bool resolving;
    bool up; /* connected() came */
    const char *uri;
    char host[256];
    char path[256];
    int port;
    bool tls, ws;
} nat_conn_t;

struct nat_state {
    mqr_upstream_t *u;
    nat_conn_t *cur;
    /* A resumable session's (clean_start = 0) last client, closed: the QoS
     * 1/2 publishes it had not completed, for the next client to resend
     * (mqr__mqttc_resume). */
    mqr_mqttc_t *held;
    int uri_idx;  /* of the attempt under way */
    uint32_t gen; /* connections made, for ack ids */
    int next_sub_token;
    mqr_scram_client_t scram; /* auth_method "SCRAM-SHA-256": one exchange per attempt */
    nat_buf_t *buf_head, *buf_tail;
    size_t n_buf;
};

static nat_state_t *nat(const mqr_upstream_t *u)
{
    return u->tp_state;
}

static bool nat_up(const nat_state_t *n)
{
    return n->cur && n->cur->up && n->cur->c;
}

/* ---- URIs ---------------------------------------------------------------- */

/* scheme://host[:port][/path]; host may be [v6]. */
static int parse_uri(const char *uri, nat_conn_t *k)
{
    static const struct {
        const char *scheme;
        bool tls, ws;
        int port;
    } schemes[] = {
        {"tcp://", false, false, 1883}, {"mqtt://", false, false, 1883},
        {"ssl://", true, false, 8883},  {"mqtts://", true, false, 8883},
        {"ws://", false, true, 80},     {"wss://", true, true, 443},
    };
    const char *rest = NULL;
    for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++) {
        size_t sl = strlen(schemes[i].scheme);
        if (strncmp(uri, schemes[i].scheme, sl) == 0) {
            rest = uri + sl;
            k->tls = schemes[i].tls;
            k->ws = schemes[i].ws;
            k->port = schemes[i].port;
            break;
        }
    }
    if (!rest) return MQR_EINVAL;
    const char *host = rest, *host_end;
    if (*rest == '[') {
        host = rest + 1;
        host_end = strchr(host, ']');
        if (!host_end) return MQR_EINVAL;
        rest = host_end + 1;
    } else {
        host_end = rest + strcspn(rest, ":/");
        rest = host_end;
    }
    size_t hl = (size_t)(host_end - host);
    if (hl == 0 || hl >= sizeof k->host) return MQR_EINVAL;
    memcpy(k->host, host, hl);
    k->host[hl] = '\0';
    if (*rest == ':') {
        char *end;
        long port = strtol(rest + 1, &end, 10);
        if (end == rest + 1 || port <= 0 || port > 65535) return MQR_EINVAL;
        k->port = (int)port;
        rest = end;
    }
    if (*rest && *rest != '/') return MQR_EINVAL;
    snprintf(k->path, sizeof k->path, "%s", *rest ? rest : "/mqtt");
    return 0;
}

/* ---- events ---------------------------------------------------------------- */

static void push_simple(mqr_upstream_t *u, up_ev_type_t type, int code, int reason, int token,
                        const char *text)
{
    up_event_t *ev = mqr__up_ev_new(type, 0, text);
    if (!ev) return;
    ev->code = code;
    ev->reason = reason;
    ev->token = token;
    mqr__up_ev_push(u, ev);
}

static void push_pub_done(mqr_upstream_t *u, up_pub_t *p, int code, int reason)
{
    up_event_t *ev = mqr__up_ev_new(EV_PUB_DONE, 0, NULL);
    if (!ev) return; /* the waiter times out; the record goes with the session */
    ev->code = code;
    ev->reason = reason;
    ev->ptr = p;
    mqr__up_ev_push(u, ev);
}

/* OpenSSL's reasons of a TLS failure, as the session collects them (its
 * tls_note reads Paho's lines): mqttc joins ERR_error_string()s with "; "
 * after its own words; each goes as one line, in OpenSSL's print format.
 * Without any (TLS files that do not load) a line still says TLS failed,
 * so that the session checks the files and names the one at fault. */
static void push_tls_reasons(mqr_upstream_t *u, const char *why)
{
    const char *p = why ? strstr(why, "error:") : NULL;
    if (!p) {
        push_simple(u, EV_TLS_ERROR, 0, 0, 0, why && why[0] ? why : "TLS error");
        return;
    }
    while (p) {
        const char *next = strstr(p, "; ");
        size_t len = next ? (size_t)(next - p) : strlen(p);
        char line[256];
        snprintf(line, sizeof line, "0:%.*s:", (int)(len < 200 ? len : 200), p);
        push_simple(u, EV_TLS_ERROR, 0, 0, 0, line);
        p = next ? strstr(next, "error:") : NULL;
    }
}

/* ---- the client's callbacks ---------------------------------------------- */

/* A libuv code (the socket, the name): the connection itself failed. MQR's
 * own codes sit below -4200 (mqrouter.h). */
static bool is_uv_code(int err)
{
    return err < 0 && err > -4200;
}

static void conn_free(nat_conn_t *k)
{
    mqr__mqttc_free(k->c);
    free(k);
}

static void attempt_next(nat_state_t *n);

static void send_publish(nat_state_t *n, const char *topic, const mqr_msg_t *msg, uint32_t expiry_s,
                         up_pub_t *p, uint64_t seq, int *rc_out);
static void record_done(mqr_upstream_t *u, uint64_t seq);

static void on_connected(void *ud, const mqr_mqtt_connack_t *ack)
{
    nat_conn_t *k = ud;
    nat_state_t *n = k->n;
    (void)ack;
    if (!n) return;
    k->up = true;
    n->gen = (n->gen + 1) & NAT_GEN_MASK;
    if (!n->gen) n->gen = 1;
    push_simple(n->u, EV_CONNECT_OK, 0, 0, 0, k->uri);
    push_simple(n->u, EV_CONNECTED, 0, 0, 0, NULL);
    /* What waited for the connection goes first, in the order given. */
    while (n->buf_head && nat_up(n)) {
        nat_buf_t *b = n->buf_head;
        n->buf_head = b->next;
        if (!n->buf_head) n->buf_tail = NULL;
        n->n_buf--;
        int rc;
        send_publish(n, b->topic, b->msg, b->expiry_s, b->p, b->seq, &rc);
        if (rc < 0) {
            record_done(n->u, b->seq);
            if (b->p)
                push_pub_done(n->u, b->p, rc, 0);
            else
                n->u->stats.publish_failed++;
            MQR_LOG_W("upstream", "session '%s': a buffered message on '%s' is lost: %s",
                      n->u->name, b->topic, mqr_strerror(rc));
        }
        mqr_msg_unref(b->msg);
        free(b);
    }
}

static void on_closed(void *ud, int err, int reason, const char *why_in)
{
    nat_conn_t *k = ud;
    nat_state_t *n = k->n;
    if (!n) {
        conn_free(k); /* detached: a flushing DISCONNECT is over */
        return;
    }
    /* why may point into the client's buffers, freed with it below */
    char why_copy[400];
    snprintf(why_copy, sizeof why_copy, "%s", why_in ? why_in : "");
    const char *why = why_copy;
    mqr_upstream_t *u = n->u;
    bool was_up = k->up;
    n->cur = NULL;
    if (k->c && mqr__mqttc_inflight(k->c) + mqr__mqttc_waiting(k->c) > 0) {
        /* Its unfinished publishes wait for the next connection. */
        mqr__mqttc_free(n->held);
        n->held = k->c;
        k->c = NULL;
    }
    const char *uri = k->uri;
    /* A lost connection's words say it all; a failed connect's are added
     * to the error's name by the session (describe_failure). */
    char text[512];
    bool has_why = why[0] != '\0';
    if (was_up && err < 0 && err != MQR_EUPSTREAM && has_why)
        snprintf(text, sizeof text, "%.400s: %.100s", why, mqr_strerror(err));
    else
        snprintf(text, sizeof text, "%.500s", has_why ? why : mqr_strerror(err));
    for (size_t tl = strlen(text); tl > 0 && text[tl - 1] == ' '; tl--)
        text[tl - 1] = '\0';
    conn_free(k);
    if (was_up) {
        if (err == MQR_EUPSTREAM && reason)
            push_simple(u, EV_SERVER_DISCONNECT, 0, reason, 0, has_why ? why : NULL);
        push_simple(u, EV_LOST, 0, 0, 0, text);
        return;
    }
    int n_uris = u->n_uris > 0 ? u->n_uris : 1;
    if (n->uri_idx + 1 < n_uris) {
        MQR_LOG_D("upstream", "session '%s': %s failed (%s), trying the next broker", u->name, uri,
                  text);
        n->uri_idx++;
        attempt_next(n);
        return;
    }
    if (err == MQR_ETLS) push_tls_reasons(u, why);
    up_event_t *ev = mqr__up_ev_new(EV_CONNECT_FAILED, 0, text);
    if (!ev) return;
    if (err == MQR_EUPSTREAM && reason) {
        /* refused in CONNACK */
        if (u->version == UP_MQTT_5)
            ev->reason = reason;
        else
            ev->code = reason;
    } else {
        ev->code = err < 0 ? err : MQR_EUPSTREAM;
        ev->net_failure = is_uv_code(err);
    }
    mqr__up_ev_push(u, ev);
}

static void on_message(void *ud, const mqr_mqtt_publish_t *p, uint32_t ack_id)
{
    nat_conn_t *k = ud;
    nat_state_t *n = k->n;
    if (!n) return;
    mqr_upstream_t *u = n->u;
    size_t tlen = p->topic.len;
    size_t plen = p->payload.len;
    size_t xlen = u->version == UP_MQTT_5 ? p->props.len : 0;
    uv_mutex_lock(&u->lock);
    /* A lone message larger than the byte limit still passes. */
    bool full =
        u->pending_msgs > 0 && (u->pending_msgs >= u->max_pending_msgs ||
                                u->pending_bytes + tlen + plen + xlen > u->max_pending_bytes);
    uv_mutex_unlock(&u->lock);
    up_event_t *ev = full ? NULL : mqr__up_ev_new(EV_MESSAGE, tlen + 1 + plen + xlen, NULL);
    if (!ev) {
        /* Dropped: acknowledged all the same, counted and warned about. */
        if (ack_id) mqr__mqttc_ack(k->c, ack_id);
        uv_mutex_lock(&u->lock);
        u->dropped++;
        uv_mutex_unlock(&u->lock);
        uv_async_send(&u->async);
        return;
    }
    ev->arrived_ms = mqr__now_ms();
    ev->qos = p->qos;
    ev->retain = p->retain;
    ev->topic_len = tlen;
    ev->payload_len = plen;
    memcpy(ev->data, p->topic.p, tlen);
    ev->data[tlen] = '\0';
    if (plen) memcpy(ev->data + tlen + 1, p->payload.p, plen);
    if (xlen) {
        /* Topic Alias and Subscription Identifier are this hop's only. */
        ev->props_len =
            mqr__mqtt_props_strip(p->props.p, xlen, (uint8_t *)ev->data + tlen + 1 + plen);
        ev->expiry_s = p->has_expiry ? p->expiry : 0;
    }
    ev->ack_id = ack_id ? (ack_id & NAT_ACK_MASK) | (n->gen << NAT_ACK_BITS) : 0;
    mqr__up_ev_push(u, ev);
}

static void on_done(void *ud, uint64_t token, int status, int reason)
{
    nat_conn_t *k = ud;
    nat_state_t *n = k->n;
    if (!n || token == 0) return;
    mqr_upstream_t *u = n->u;
    unsigned kind = (unsigned)(token & 3u);
    switch (kind) {
    case TOK_SUB: {
        int stok = (int)(token >> 2);
        if (status == 0)
            push_simple(u, EV_SUB_OK, reason, 0, stok, NULL);
        else if (status == MQR_EUPSTREAM)
            push_simple(u, EV_SUB_FAILED, 0, reason ? reason : 0x80, stok, NULL);
        /* cut short by a lost connection: the next connect subscribes again */
        break;
    }
    case TOK_QOS_PUB:
        if (status == 0) record_done(u, token >> 2); /* completed or refused: done */
        if (status == 0 && reason < 0x80) {
            uv_mutex_lock(&u->lock);
            u->delivered++;
            uv_mutex_unlock(&u->lock);
        } else {
            u->stats.publish_failed++;
        }
        break;
    case TOK_QOS_WAIT:
        if (status == 0) record_done(u, ((up_pub_t *)(uintptr_t)(token & ~(uint64_t)3u))->out_seq);
        if (status == 0 && reason < 0x80) {
            uv_mutex_lock(&u->lock);
            u->delivered++;
            uv_mutex_unlock(&u->lock);
        }
        /* fall through */
    case TOK_WAITER:
        push_pub_done(u, (up_pub_t *)(uintptr_t)(token & ~(uint64_t)3u), status, reason);
        break;
    }
}

/* SCRAM's steps (auth_method): the server's challenge answered with our
 * proof; its final message checked, so a broker that does not know the
 * password is refused too. */
static int on_auth(void *ud, int step, const uint8_t *data, size_t len, uint8_t **out,
                   size_t *out_len)
{
    nat_conn_t *k = ud;
    nat_state_t *n = k->n;
    if (!n) return MQR_ECLOSED;
    mqr_upstream_t *u = n->u;
    if (step == MQR_MQTTC_AUTH_CONTINUE) {
        char *final = NULL;
        const char *pw = u->password ? u->password : "";
        int rc = mqr__scram_client_continue(&n->scram, data, len, pw, strlen(pw), &final, out_len);
        *out = (uint8_t *) final;
        return rc;
    }
    return mqr__scram_client_finish(&n->scram, data, len);
}

static const mqr_mqttc_cbs_t nat_cbs = {
    .auth = on_auth,
    .connected = on_connected,
    .closed = on_closed,
    .message = on_message,
    .done = on_done,
};

/* ---- connecting ----------------------------------------------------------- */

static void fail_attempt(nat_state_t *n, nat_conn_t *k, int rc, const char *what)
{
    mqr_upstream_t *u = n->u;
    char text[300];
    snprintf(text, sizeof text, "%s", what);
    if (n->cur == k) n->cur = NULL;
    conn_free(k);
    int n_uris = u->n_uris > 0 ? u->n_uris : 1;
    if (n->uri_idx + 1 < n_uris) {
        n->uri_idx++;
        attempt_next(n);
        return;
    }
    if (rc == MQR_ETLS) push_tls_reasons(u, NULL);
    up_event_t *ev = mqr__up_ev_new(EV_CONNECT_FAILED, 0, text);
    if (!ev) return;
    ev->code = rc;
    ev->net_failure = is_uv_code(rc);
    mqr__up_ev_push(u, ev);
}

static void start_client(nat_state_t *n, nat_conn_t *k, const struct sockaddr *addr)
{
    mqr_upstream_t *u = n->u;
    mqr_mqttc_options_t o;
    memset(&o, 0, sizeof o);
    o.version = u->version;
    o.client_id = u->client_id;
    o.username = u->username;
    char *first = NULL;
    size_t first_len = 0;
    if (u->auth_method) {
        /* the password never goes on the wire */
        int rc = mqr__scram_client_begin(&n->scram, u->username, NULL, &first, &first_len);
        if (rc < 0) {
            fail_attempt(n, k, rc, "cannot start SCRAM");
            return;
        }
        o.auth_method = u->auth_method;
        o.auth_data = (const uint8_t *)first;
        o.auth_data_len = first_len;
    } else {
        o.password = u->password;
        o.password_len = u->password ? strlen(u->password) : 0;
    }
    o.keepalive_s = (uint16_t)(u->keepalive_s > 0 && u->keepalive_s < 65535 ? u->keepalive_s : 0);
    o.clean_start = u->clean_start != 0;
    if (u->version == UP_MQTT_5 && (!u->clean_start || u->session_expiry_s >= 0))
        o.session_expiry_s = u->session_expiry_s >= 0 ? (uint32_t)u->session_expiry_s : 0xFFFFFFFFu;
    o.connect_timeout_ms = NAT_CONNECT_TIMEOUT_MS;
    /* QoS 1/2 publishes in flight outlive a lost connection, whatever
     * clean_start says: resent (DUP) to a session the broker kept, sent
     * again as new publishes to a fresh one (mqr__mqttc_resend). Clean
     * Start asks both ends to forget the protocol state, not to drop
     * messages the session accepted. */
    o.keep_inflight = true;
    if (u->will_topic) {
        o.will_topic = u->will_topic;
        o.will_payload = u->will_payload;
        o.will_payload_len = u->will_payload_len;
        o.will_qos = (uint8_t)u->will_qos;
        o.will_retain = u->will_retain != 0;
    }
    if (k->tls) {
        o.tls.on = true;
        o.tls.host = k->host;
        o.tls.cafile = u->tls.cafile;
        o.tls.capath = u->tls.capath;
        o.tls.cert = u->tls.cert;
        o.tls.key = u->tls.key;
        o.tls.key_password = u->tls.key_password;
        o.tls.no_verify = u->tls.no_verify;
        o.tls.no_verify_hostname = u->tls.no_verify_hostname;
    }
    if (k->ws) {
        o.ws.on = true;
        o.ws.path = k->path;
        o.ws.host = k->host;
    }
    int rc = mqr__mqttc_new(u->all->loop, &o, &nat_cbs, k, &k->c);
    free(first); /* copied */
    if (rc < 0) {
        k->c = NULL;
        fail_attempt(n, k, rc, "cannot make a client");
        return;
    }
    if (n->held) {
        /* resent (DUP) after the CONNACK, before what was buffered */
        if (mqr__mqttc_resume(k->c, n->held) < 0)
            MQR_LOG_W("upstream", "session '%s': publishes in flight at the loss are dropped",
                      u->name);
        mqr__mqttc_free(n->held);
        n->held = NULL;
    }
    rc = mqr__mqttc_connect(k->c, addr);
    if (rc < 0) fail_attempt(n, k, rc, "cannot connect");
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    nat_conn_t *k = req->data;
    k->resolving = false;
    nat_state_t *n = k->n;
    if (!n) {
        uv_freeaddrinfo(res);
        free(k); /* detached while resolving */
        return;
    }
    if (status < 0 || !res) {
        uv_freeaddrinfo(res);
        char what[300];
        snprintf(what, sizeof what, "cannot resolve '%s'", k->host);
        fail_attempt(n, k, status < 0 ? status : UV_EAI_NONAME, what);
        return;
    }
    start_client(n, k, res->ai_addr);
    uv_freeaddrinfo(res);
}

/* Starts the attempt on URI n->uri_idx. */
static void attempt_next(nat_state_t *n)
{
    mqr_upstream_t *u = n->u;
    nat_conn_t *k = calloc(1, sizeof *k);
    if (!k) {
        push_simple(u, EV_CONNECT_FAILED, MQR_ENOMEM, 0, 0, NULL);
        return;
    }
    k->n = n;
    k->uri = u->n_uris > 0 ? u->uris[n->uri_idx] : u->uri;
    n->cur = k;
    int rc = parse_uri(k->uri, k);
    if (rc < 0) {
        char what[300];
        snprintf(what, sizeof what, "bad broker URI '%s'", k->uri);
        fail_attempt(n, k, rc, what);
        return;
    }
    char port[8];
    snprintf(port, sizeof port, "%d", k->port);
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    k->gai.data = k;
    k->resolving = true;
    rc = uv_getaddrinfo(u->all->loop, &k->gai, on_resolved, k->host, port, &hints);
    if (rc < 0) {
        k->resolving = false;
        fail_attempt(n, k, rc, "cannot resolve");
    }
}

/* Ends the attempt or connection k without a callback to the session. */
static void conn_end(nat_conn_t *k, bool flush)
{
    k->n = NULL;
    if (k->resolving) return; /* on_resolved frees it */
    if (flush && k->up && k->c) {
        mqr__mqttc_disconnect(k->c, 0); /* on_closed frees it */
        return;
    }
    conn_free(k);
}

/* ---- the ops ---------------------------------------------------------------- */

static int native_init(mqr_upstream_t *u)
{
    if (u->auth_method && (strcmp(u->auth_method, MQR_AUTH_SCRAM_METHOD) != 0 ||
                           u->version != UP_MQTT_5 || !u->username || !u->password)) {
        MQR_LOG_E("upstream",
                  "session '%s': auth_method '%s': only '%s', with MQTT 5, a username and a "
                  "password",
                  u->name, u->auth_method, MQR_AUTH_SCRAM_METHOD);
        return MQR_EINVAL;
    }
    /* A URI that cannot work is refused now, as Paho's create does. */
    for (int i = 0; i < (u->n_uris > 0 ? u->n_uris : 1); i++) {
        const char *uri = u->n_uris > 0 ? u->uris[i] : u->uri;
        nat_conn_t k;
        if (parse_uri(uri, &k) < 0) {
            MQR_LOG_E("upstream",
                      "session '%s': bad broker URI '%s' (tcp://, mqtt://, ssl://, mqtts://, "
                      "ws:// or wss://, then host[:port][/path])",
                      u->name, uri);
            return MQR_EINVAL;
        }
    }
    nat_state_t *n = calloc(1, sizeof *n);
    if (!n) return MQR_ENOMEM;
    n->u = u;
    mqr__scram_client_init(&n->scram);
    u->tp_state = n;
    return 0;
}

static void buf_drop_all(nat_state_t *n)
{
    while (n->buf_head) {
        nat_buf_t *b = n->buf_head;
        n->buf_head = b->next;
        mqr_msg_unref(b->msg);
        free(b);
    }
    n->buf_tail = NULL;
    n->n_buf = 0;
}

static void native_free(mqr_upstream_t *u)
{
    nat_state_t *n = nat(u);
    if (!n) return;
    if (n->cur) conn_end(n->cur, false);
    mqr__mqttc_free(n->held);
    buf_drop_all(n);
    mqr__scram_client_free(&n->scram);
    free(n);
    u->tp_state = NULL;
}

/* On the loop (destroy_on_loop). Buffered and unfinished publishes are
 * lost, or for a persistent session left to its rows for the next start;
 * their waiters are answered when the session is freed. */
static void native_destroy(mqr_upstream_t *u, bool flush)
{
    nat_state_t *n = nat(u);
    if (n->cur) conn_end(n->cur, flush);
    n->cur = NULL;
    mqr__mqttc_free(n->held); /* what it still held is lost (or in its rows) */
    n->held = NULL;
    if (n->n_buf && !u->persistent)
        MQR_LOG_W("upstream", "session '%s': %zu message(s) buffered for the broker are lost",
                  u->name, n->n_buf);
    buf_drop_all(n);
}

static int native_connect(mqr_upstream_t *u)
{
    nat_state_t *n = nat(u);
    if (n->cur) conn_end(n->cur, false); /* a stale attempt */
    n->cur = NULL;
    n->uri_idx = 0;
    attempt_next(n);
    return 0;
}

static int native_subscribe(mqr_upstream_t *u, up_sub_t *s, const char *remote,
                            const up_subflags_t *f)
{
    nat_state_t *n = nat(u);
    if (!nat_up(n)) return MQR_ENOTCONN;
    if (++n->next_sub_token <= 0 || n->next_sub_token > 0x3FFFFFFF) n->next_sub_token = 1;
    int tok = n->next_sub_token;
    mqr_mqtt_sub_entry_t e;
    memset(&e, 0, sizeof e);
    e.filter.p = remote;
    e.filter.len = (uint16_t)strlen(remote);
    e.qos = (uint8_t)s->qos;
    if (u->version == UP_MQTT_5) {
        e.no_local = f->no_local;
        e.retain_as_published = f->rap;
        e.retain_handling = (uint8_t)(f->rh > 0 && f->rh <= 2 ? f->rh : 0);
    }
    int rc = mqr__mqttc_subscribe(n->cur->c, &e, 1, NULL, 0, ((uint64_t)tok << 2) | TOK_SUB);
    if (rc == 0) s->token = tok;
    return rc;
}

static int native_unsubscribe(mqr_upstream_t *u, const char *remote, up_pub_t *p)
{
    nat_state_t *n = nat(u);
    if (!nat_up(n)) return MQR_ENOTCONN;
    mqr_mqtt_str_t f = {.p = remote, .len = (uint16_t)strlen(remote)};
    return mqr__mqttc_unsubscribe(n->cur->c, &f, 1, NULL, 0, (uint64_t)(uintptr_t)p);
}

/* An UNSUBSCRIBE of a filter nobody uses: a round trip that changes
 * nothing, answered like any other (mqttc has no ping with an answer). */
static int native_ping(mqr_upstream_t *u, up_pub_t *p)
{
    return native_unsubscribe(u, "$mqrouter/ping", p);
}

/* The outgoing properties: the message's own but the one-hop ones and its
 * Message Expiry, which becomes expiry_s. NULL props: none or malformed
 * (*bad set). Caller frees. */
static uint8_t *out_props(const mqr_msg_t *msg, uint32_t expiry_s, size_t *len, bool *bad)
{
    *bad = false;
    *len = 0;
    size_t cap = msg->props_len + 8;
    uint8_t *buf = malloc(cap);
    if (!buf) return NULL;
    mqr_mqtt_pbuild_t b;
    mqr__mqtt_pb_init(&b, buf, cap);
    if (msg->props_len) {
        if (mqr__mqtt_props_validate(msg->props, msg->props_len, MQR_MQTT_PUBLISH,
                                     MQR_MQTT_FROM_CLIENT) < 0) {
            *bad = true;
        } else {
            mqr_mqtt_prop_iter_t it;
            mqr_mqtt_prop_t pr;
            mqr__mqtt_props_iter(&it, msg->props, msg->props_len);
            while (mqr__mqtt_props_next(&it, &pr) == 1) {
                if (pr.id == MQR_MQTT_PROP_MESSAGE_EXPIRY || pr.id == MQR_MQTT_PROP_TOPIC_ALIAS ||
                    pr.id == MQR_MQTT_PROP_SUBSCRIPTION_ID)
                    continue;
                mqr__mqtt_pb_add(&b, &pr);
            }
        }
    }
    if (expiry_s) mqr__mqtt_pb_u32(&b, MQR_MQTT_PROP_MESSAGE_EXPIRY, expiry_s);
    if (mqr__mqtt_pb_finish(&b, len) < 0) {
        *bad = true;
        *len = 0;
    }
    return buf;
}

static void send_publish(nat_state_t *n, const char *topic, const mqr_msg_t *msg, uint32_t expiry_s,
                         up_pub_t *p, uint64_t seq, int *rc_out)
{
    mqr_upstream_t *u = n->u;
    mqr_mqtt_publish_t pk;
    memset(&pk, 0, sizeof pk);
    pk.qos = msg->qos;
    pk.retain = msg->retain;
    pk.topic.p = topic;
    pk.topic.len = (uint16_t)strlen(topic);
    pk.payload.p = (const uint8_t *)msg->payload;
    pk.payload.len = (uint32_t)msg->payload_len;
    uint8_t *props = NULL;
    if (u->version == UP_MQTT_5 && (msg->props_len || expiry_s)) {
        size_t plen;
        bool bad;
        props = out_props(msg, expiry_s, &plen, &bad);
        if (!props) {
            *rc_out = MQR_ENOMEM;
            return;
        }
        if (bad) {
            u->stats.props_dropped++;
            MQR_LOG_W("upstream", "session '%s': sending '%s' without its v5 properties", u->name,
                      msg->topic);
        }
        pk.props.p = props;
        pk.props.len = (uint32_t)plen;
    }
    if (p) p->out_seq = seq;
    uint64_t token = msg->qos > 0
                         ? (p ? (uint64_t)(uintptr_t)p | TOK_QOS_WAIT : seq << 2 | TOK_QOS_PUB)
                         : (uint64_t)(uintptr_t)p;
    *rc_out = mqr__mqttc_publish(n->cur->c, &pk, token);
    free(props);
}

/* ---- the outbox of a persistent session -------------------------------- */

/* Writes msg's row (persistent sessions, QoS 1/2); *seq 0 when none is
 * kept. 0 or the store's error. */
static int record_put(mqr_upstream_t *u, const char *remote, const mqr_msg_t *msg,
                      uint32_t expiry_s, uint64_t *seq)
{
    *seq = 0;
    if (!u->persistent || msg->qos == 0) return 0;
    int rc = mqr__store_outbox_put(u->all->outbox, u->name, remote, msg, expiry_s, seq);
    if (rc < 0)
        MQR_LOG_W("upstream", "session '%s': cannot keep a message on '%s': %s", u->name, remote,
                  mqr_strerror(rc));
    return rc;
}

/* The broker completed (or refused) the publish of row seq: it is owed no
 * more. A delete lost in a crash sends the message once more (QoS 1 allows
 * it; a QoS 2 resend to a kept session is answered from its state). */
static void record_done(mqr_upstream_t *u, uint64_t seq)
{
    if (!seq || !u->persistent) return;
    int rc = mqr__store_outbox_delete(u->all->outbox, seq);
    if (rc < 0 && rc != MQR_ECLOSED)
        MQR_LOG_W("upstream", "session '%s': cannot forget a delivered message: %s", u->name,
                  mqr_strerror(rc));
}

static int64_t native_records_count(mqr_upstream_t *u)
{
    return mqr__store_outbox_count(u->all->outbox, u->name);
}

static void native_records_discard(mqr_upstream_t *u)
{
    int rc = mqr__store_outbox_discard(u->all->outbox, u->name);
    if (rc < 0 && rc != MQR_ECLOSED)
        MQR_LOG_W("upstream", "session '%s': cannot discard its stored messages: %s", u->name,
                  mqr_strerror(rc));
}

/* Appends a publish to the buffer of a session waiting for a connection. */
static int buf_push(nat_state_t *n, const char *remote, const mqr_msg_t *msg, uint32_t expiry_s,
                    up_pub_t *p, uint64_t seq)
{
    size_t tl = strlen(remote);
    nat_buf_t *b = malloc(sizeof *b + tl + 1);
    if (!b) return MQR_ENOMEM;
    memcpy(b->topic, remote, tl + 1);
    b->next = NULL;
    mqr_msg_ref((mqr_msg_t *)msg);
    b->msg = (mqr_msg_t *)msg;
    b->seq = seq;
    b->expiry_s = expiry_s;
    b->p = p;
    if (n->buf_tail)
        n->buf_tail->next = b;
    else
        n->buf_head = b;
    n->buf_tail = b;
    n->n_buf++;
    return 0;
}

static int restore_row(void *arg, uint64_t seq, mqr_msg_t *msg, uint32_t expiry_s)
{
    nat_state_t *n = arg;
    int rc = buf_push(n, msg->topic, msg, expiry_s, NULL, seq);
    mqr_msg_unref(msg);
    return rc;
}

/* What a persistent session of this name still owed its broker when it
 * last ran goes first, in its order. */
static int native_create(mqr_upstream_t *u)
{
    if (!u->persistent) return 0;
    nat_state_t *n = nat(u);
    uint64_t expired = 0;
    int rc = mqr__store_outbox_load(u->all->outbox, u->name, restore_row, n, &expired);
    if (expired)
        MQR_LOG_I("upstream", "session '%s': %llu stored message(s) expired while stopped", u->name,
                  (unsigned long long)expired);
    if (rc < 0) {
        MQR_LOG_E("upstream", "session '%s': cannot read its stored messages: %s", u->name,
                  mqr_strerror(rc));
        buf_drop_all(n);
    }
    return rc;
}

static int native_publish(mqr_upstream_t *u, const char *remote, const mqr_msg_t *msg,
                          uint32_t expiry_s, up_pub_t *p)
{
    nat_state_t *n = nat(u);
    bool up = nat_up(n);
    if (up) {
        /* Connected, QoS 1/2 beyond the window wait in the client, and
         * every packet in its output until the socket takes it: bounded
         * like the buffer. The session pauses its publishers from half of
         * these (upstream_publish.c); past them it is MQR_EFULL. */
        if (msg->qos > 0 && u->max_buffered > 0 &&
            mqr__mqttc_waiting(n->cur->c) >= (size_t)u->max_buffered)
            return MQR_EFULL;
        if (msg->qos == 0 && mqr__mqttc_out_bytes(n->cur->c) >= u->max_buffered_bytes)
            return MQR_EFULL;
    } else if (u->max_buffered <= 0 || n->n_buf >= (size_t)u->max_buffered) {
        /* Not connected: kept in order for the next connection. */
        if (!u->drop_oldest || !n->buf_head) return MQR_EFULL;
        nat_buf_t *old = n->buf_head; /* upstream_publish.c counts it */
        n->buf_head = old->next;
        if (!n->buf_head) n->buf_tail = NULL;
        n->n_buf--;
        record_done(u, old->seq);
        if (old->p) push_pub_done(u, old->p, MQR_EFULL, 0);
        mqr_msg_unref(old->msg);
        free(old);
    }
    uint64_t seq;
    int rc = record_put(u, remote, msg, expiry_s, &seq);
    if (rc < 0) return rc;
    if (up)
        send_publish(n, remote, msg, expiry_s, p, seq, &rc);
    else
        rc = buf_push(n, remote, msg, expiry_s, p, seq);
    if (rc < 0) {
        record_done(u, seq);
        return rc;
    }
    return seq ? UP_PUB_STORED : 0;
}

static size_t native_inflight(mqr_upstream_t *u)
{
    nat_state_t *n = nat(u);
    size_t k = n->n_buf;
    if (n->cur && n->cur->c) k += mqr__mqttc_inflight(n->cur->c) + mqr__mqttc_waiting(n->cur->c);
    if (n->held) k += mqr__mqttc_inflight(n->held) + mqr__mqttc_waiting(n->held);
    return k;
}

static size_t native_backlog(mqr_upstream_t *u, size_t *bytes)
{
    nat_state_t *n = nat(u);
    *bytes = 0;
    if (!nat_up(n)) return 0;
    *bytes = mqr__mqttc_out_bytes(n->cur->c);
    return mqr__mqttc_waiting(n->cur->c);
}

/* After routing (mqr__up_deliver): the broker gets its PUBACK / PUBREC now,
 * if the connection that brought the message is still there. */
static void native_ack(mqr_upstream_t *u, uint32_t ack_id)
{
    nat_state_t *n = nat(u);
    if (!n || !nat_up(n) || (ack_id >> NAT_ACK_BITS) != n->gen) return;
    mqr__mqttc_ack(n->cur->c, ack_id & NAT_ACK_MASK);
}

static const char *native_strerror(int code)
{
    return code < 0 ? mqr_strerror(code) : NULL;
}

/* MQTT 5.0 reason codes (5.0 §2.4), as words. */
static const char *native_reason_text(int reason)
{
    switch (reason) {
    case 0x00:
        return "success";
    case 0x01:
        return "granted QoS 1";
    case 0x02:
        return "granted QoS 2";
    case 0x04:
        return "disconnect with will message";
    case 0x10:
        return "no matching subscribers";
    case 0x11:
        return "no subscription existed";
    case 0x18:
        return "continue authentication";
    case 0x19:
        return "re-authenticate";
    case 0x80:
        return "unspecified error";
    case 0x81:
        return "malformed packet";
    case 0x82:
        return "protocol error";
    case 0x83:
        return "implementation specific error";
    case 0x84:
        return "unsupported protocol version";
    case 0x85:
        return "client identifier not valid";
    case 0x86:
        return "bad user name or password";
    case 0x87:
        return "not authorized";
    case 0x88:
        return "server unavailable";
    case 0x89:
        return "server busy";
    case 0x8A:
        return "banned";
    case 0x8B:
        return "server shutting down";
    case 0x8C:
        return "bad authentication method";
    case 0x8D:
        return "keep alive timeout";
    case 0x8E:
        return "session taken over";
    case 0x8F:
        return "topic filter invalid";
    case 0x90:
        return "topic name invalid";
    case 0x91:
        return "packet identifier in use";
    case 0x92:
        return "packet identifier not found";
    case 0x93:
        return "receive maximum exceeded";
    case 0x94:
        return "topic alias invalid";
    case 0x95:
        return "packet too large";
    case 0x96:
        return "message rate too high";
    case 0x97:
        return "quota exceeded";
    case 0x98:
        return "administrative action";
    case 0x99:
        return "payload format invalid";
    case 0x9A:
        return "retain not supported";
    case 0x9B:
        return "QoS not supported";
    case 0x9C:
        return "use another server";
    case 0x9D:
        return "server moved";
    case 0x9E:
        return "shared subscriptions not supported";
    case 0x9F:
        return "connection rate exceeded";
    case 0xA0:
        return "maximum connect time";
    case 0xA1:
        return "subscription identifiers not supported";
    case 0xA2:
        return "wildcard subscriptions not supported";
    default:
        return "unknown reason code";
    }
}

static bool native_rebuild_after_loss(const mqr_upstream_t *u)
{
    (void)u;
    return false;
}

const up_transport_t mqr__up_transport_native = {
    .name = "native",
    .init = native_init,
    .free = native_free,
    .create = native_create,
    .destroy = native_destroy,
    .connect = native_connect,
    .subscribe = native_subscribe,
    .unsubscribe = native_unsubscribe,
    .ping = native_ping,
    .publish = native_publish,
    .inflight = native_inflight,
    .backlog = native_backlog,
    .ack = native_ack,
    .strerror = native_strerror,
    .reason_text = native_reason_text,
    .records_count = native_records_count,
    .records_discard = native_records_discard,
    .rebuild_after_loss = native_rebuild_after_loss,
    .nudge_connects = false,
    .destroy_on_loop = true,
    .records_in_engine_store = true,
};
