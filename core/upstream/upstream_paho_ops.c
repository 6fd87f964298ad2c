/*
 * upstream_paho_ops.c — the Paho MQTTAsync transport, the loop's half: the
 * ops table (upstream_transport.h) that the session manager calls to make
 * a client, connect, subscribe, publish and end the client, each a Paho
 * call with its options, Paho's codes translated to MQR_E*. What Paho
 * answers comes back through the callbacks of upstream_paho.c as events.
 *
 * Loop thread, but for paho_destroy (a libuv worker: destroying a client
 * can block). Must not: run anything on Paho's threads, call Paho holding
 * the session's lock (see the lock order in upstream_paho.c), or decide
 * what the session does next (retries, state, waiters: upstream.c).
 */
#include "upstream_paho_int.h"

#include <stdlib.h>
#include <string.h>

#define UP_CONNECT_TIMEOUT_S 10

/* How long a closing session waits for in-flight messages before the
 * connection is dropped anyway. */
#define UP_CLOSE_TIMEOUT_MS 1000

int mqr__up_map_paho(int rc)
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

/* A persistent session's Paho state holds the hooks of its records, for
 * every client it creates (the first, and each rebuilt one). */
static int paho_init(mqr_upstream_t *u)
{
    if (u->auth_method) {
        MQR_LOG_E("upstream",
                  "session '%s': Paho has no client-side enhanced authentication (%s); use "
                  "transport = 'native'",
                  u->name, u->auth_method);
        return MQR_EINVAL;
    }
    up_paho_t *pa = calloc(1, sizeof *pa);
    if (!pa) return MQR_ENOMEM;
    if (u->persistent) {
        int rc = mqr__upstream_persist_hooks(u->all->persist, u->name, &pa->phooks);
        if (rc < 0) {
            free(pa);
            return rc;
        }
        pa->hooks = true;
    }
    if (uv_cond_init(&pa->cond) != 0) {
        if (pa->hooks) mqr__upstream_persist_release(&pa->phooks);
        free(pa);
        return MQR_ENOMEM;
    }
    u->tp_state = pa;
    return 0;
}

static void paho_free(mqr_upstream_t *u)
{
    up_paho_t *pa = up_paho(u);
    if (!pa) return;
    if (pa->hooks) mqr__upstream_persist_release(&pa->phooks);
    uv_cond_destroy(&pa->cond);
    free(pa);
    u->tp_state = NULL;
}

/* Creates the Paho client (restoring the records of a persistent session)
 * and sets its callbacks. */
static int paho_create(mqr_upstream_t *u)
{
    up_paho_t *pa = up_paho(u);
    MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer;
    co.MQTTVersion = u->version;
    co.sendWhileDisconnected = 1;
    co.allowDisconnectedSendAtAnyTime = 1; /* buffer before the first connect too */
    co.maxBufferedMessages = u->max_buffered;
    /* A full buffer refuses the newest (MQR_EFULL) or drops the oldest. */
    co.deleteOldestMessages = u->drop_oldest;
    co.restoreMessages = 1;
    co.persistQoS0 = 0; /* QoS 0 may be lost by definition */
    int rc =
        mqr__up_paho_create(&pa->client, u->uri, u->client_id,
                            pa->hooks ? MQTTCLIENT_PERSISTENCE_USER : MQTTCLIENT_PERSISTENCE_NONE,
                            pa->hooks ? &pa->phooks : NULL, &co);
    if (rc != MQTTASYNC_SUCCESS) {
        MQR_LOG_E("upstream", "session '%s': cannot create a client for %s: %s", u->name, u->uri,
                  MQTTAsync_strerror(rc));
        pa->client = NULL;
        return mqr__up_map_paho(rc);
    }
    /* Callbacks must be in place before connecting; none can fire before. */
    rc = mqr__up_paho_set_callbacks(u);
    if (rc != MQTTASYNC_SUCCESS) {
        mqr__up_paho_destroy(&pa->client);
        pa->client = NULL;
        return mqr__up_map_paho(rc);
    }
    return 0;
}

/* MQTTAsync_destroy() of the last client in the process stops Paho's
 * threads and can block for a second or more: the session calls this on a
 * worker.
 *
 * Why the session's memory is safe to free afterwards: Paho calls every
 * callback with its global mutex held (the receive thread around packet
 * handling, the send thread in command processing and timeout checks), and
 * MQTTAsync_destroy() takes that same mutex, removes the client from Paho's
 * handle list and only then returns. So once it returns no callback of ours
 * is running and none can start. Callbacks it makes itself (failures of
 * pending subscribes, from inside destroy on this thread) still find the
 * queue and the async handle alive: those are closed only after this, on
 * the loop.
 *
 * Known leak: Paho 1.3.12 does not free PUBLISH commands still buffered (never
 * sent) when the client is destroyed — topic, payload and bookkeeping of each
 * (eclipse-paho/paho.mqtt.c#1474, fixed after 1.3.13). Connected, the
 * disconnect below lets them go out first; closing while disconnected loses
 * that memory, at most max_buffered messages per close. Close warns.
 *
 * Without flush (a rebuild, see mqr__up_rebuild_client) the client is
 * destroyed at once. */
/* After destroy no answer can come (see above): a count left by the wait's
 * deadline must not hold up the next client's close. */
static void paho_destroy_client(mqr_upstream_t *u)
{
    mqr__up_paho_destroy(&up_paho(u)->client);
    uv_mutex_lock(&u->lock);
    up_paho(u)->unsubs_unanswered = 0;
    uv_mutex_unlock(&u->lock);
}

static void paho_destroy(mqr_upstream_t *u, bool flush)
{
    up_paho_t *pa = up_paho(u);
    mqr__up_paho_wait_unsubs(u);
    if (!flush) {
        paho_destroy_client(u);
        return;
    }
    MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
    d.timeout = UP_CLOSE_TIMEOUT_MS;
    mqr__up_paho_disconnect_answers(u, &d);
    /* Also stops automatic reconnection, even when not connected (then it
     * returns MQTTASYNC_DISCONNECTED and calls nothing). */
    if (MQTTAsync_disconnect(pa->client, &d) == MQTTASYNC_SUCCESS) {
        /* Paho completes a disconnect that waits for in-flight messages only
         * on its timeout tick, every 3 s. So wait for the callback in slices
         * and stop early once nothing is queued or in flight for this client
         * (destroy then sends DISCONNECT itself and loses nothing); give up
         * at the deadline, when destroy drops what is still in flight. */
        uint64_t deadline = uv_hrtime() + (uint64_t)(UP_CLOSE_TIMEOUT_MS + 500) * 1000000u;
        uv_mutex_lock(&u->lock);
        while (!pa->disconnect_done) {
            uint64_t now = uv_hrtime();
            if (now >= deadline) break;
            uint64_t slice = deadline - now < 20000000u ? deadline - now : 20000000u;
            if (uv_cond_timedwait(&pa->cond, &u->lock, slice) == 0) continue;
            uv_mutex_unlock(&u->lock); /* never call Paho holding it */
            MQTTAsync_token *tokens = NULL;
            bool idle = MQTTAsync_getPendingTokens(pa->client, &tokens) == MQTTASYNC_SUCCESS &&
                        tokens == NULL;
            MQTTAsync_free(tokens);
            uv_mutex_lock(&u->lock);
            if (idle) break;
        }
        uv_mutex_unlock(&u->lock);
    }
    paho_destroy_client(u);
}

static int paho_connect(mqr_upstream_t *u)
{
    MQTTAsync_connectOptions o = MQTTAsync_connectOptions_initializer;
    MQTTAsync_connectOptions o5 = MQTTAsync_connectOptions_initializer5;
    MQTTProperties props = MQTTProperties_initializer;
    if (u->version == MQTTVERSION_5) {
        o = o5;
        o.cleanstart = u->clean_start != 0;
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
    }
    mqr__up_paho_connect_answers(u, &o);
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
        mqr__up_paho_ssl_errors(u, &ssl);
        o.ssl = &ssl;
    }
    /* Reconnecting is the session's (its retry timer): Paho's automatic
     * reconnect neither retries a first connect that failed nor reports its
     * failed attempts, and both are needed to count attempts and stop at
     * max_reconnects. MQTTAsync_reconnect() is no use either: it re-queues
     * the first connect command, which after a failed attempt does nothing
     * at all (no callback) in Paho 1.3.12. So every attempt is a fresh
     * MQTTAsync_connect(). */
    o.automaticReconnect = 0;
    o.context = u;
    int rc = MQTTAsync_connect(up_paho(u)->client, &o); /* copies what it keeps */
    MQTTProperties_free(&props);
    return mqr__up_map_paho(rc);
}

static int paho_subscribe(mqr_upstream_t *u, up_sub_t *s, const char *remote,
                          const up_subflags_t *f)
{
    MQTTAsync_responseOptions r = MQTTAsync_responseOptions_initializer;
    mqr__up_paho_sub_answers(u, &r);
    if (u->version == MQTTVERSION_5) {
        r.subscribeOptions.noLocal = f->no_local;
        r.subscribeOptions.retainAsPublished = f->rap;
        r.subscribeOptions.retainHandling = (unsigned char)f->rh;
    }
    int rc = MQTTAsync_subscribe(up_paho(u)->client, remote, s->qos, &r);
    if (rc == MQTTASYNC_SUCCESS) s->token = r.token;
    return mqr__up_map_paho(rc);
}

/* Paho took no UNSUBSCRIBE: nothing will answer it. */
static void on_unsub_refused(mqr_upstream_t *u)
{
    uv_mutex_lock(&u->lock);
    up_paho(u)->unsubs_unanswered--;
    uv_mutex_unlock(&u->lock);
}

static int paho_unsubscribe(mqr_upstream_t *u, const char *remote, up_pub_t *p)
{
    up_paho_t *pa = up_paho(u);
    MQTTAsync_responseOptions r = MQTTAsync_responseOptions_initializer;
    if (p) {
        mqr__up_paho_answer_to(u, p, &r);
        return mqr__up_map_paho(MQTTAsync_unsubscribe(pa->client, remote, &r));
    }
    mqr__up_paho_unsub_answers(u, &r);
    uv_mutex_lock(&u->lock);
    pa->unsubs_unanswered++;
    uv_mutex_unlock(&u->lock);
    int rc = MQTTAsync_unsubscribe(pa->client, remote, &r);
    if (rc != MQTTASYNC_SUCCESS) on_unsub_refused(u);
    return mqr__up_map_paho(rc);
}

/* Paho's MQTTAsync has no call that sends a PINGREQ; an UNSUBSCRIBE of a
 * filter nobody uses is the same round trip and changes nothing. */
static int paho_ping(mqr_upstream_t *u, up_pub_t *p)
{
    return paho_unsubscribe(u, "$mqrouter/ping", p);
}

static int paho_publish(mqr_upstream_t *u, const char *remote, const mqr_msg_t *msg,
                        uint32_t expiry_s, up_pub_t *p)
{
    MQTTAsync_message pm = MQTTAsync_message_initializer;
    pm.payload = (void *)msg->payload;
    pm.payloadlen = (int)msg->payload_len;
    pm.qos = msg->qos;
    pm.retained = msg->retain;
    /* Without a response struct Paho ignores the message's properties. */
    MQTTAsync_responseOptions r = MQTTAsync_responseOptions_initializer;
    if (p) mqr__up_paho_answer_to(u, p, &r);
    if (u->version == MQTTVERSION_5) {
        if (msg->props_len) {
            int prc = mqr__up_props_decode(msg->props, msg->props_len, &pm.properties);
            if (prc < 0) {
                MQTTProperties_free(&pm.properties);
                u->stats.props_dropped++;
                MQR_LOG_W("upstream", "session '%s': sending '%s' without its v5 properties: %s",
                          u->name, msg->topic, mqr_strerror(prc));
            }
        }
        if (expiry_s) {
            MQTTProperty xp = {.identifier = MQTTPROPERTY_CODE_MESSAGE_EXPIRY_INTERVAL};
            xp.value.integer4 = expiry_s;
            if (MQTTProperties_add(&pm.properties, &xp) != 0) {
                MQTTProperties_free(&pm.properties);
                return MQR_ENOMEM;
            }
        }
    }
    int rc = MQTTAsync_sendMessage(up_paho(u)->client, remote, &pm, &r); /* copies everything */
    MQTTProperties_free(&pm.properties);
    if (rc == MQTTASYNC_SUCCESS && msg->qos > 0) up_paho(u)->bp_sent++;
    return mqr__up_map_paho(rc);
}

/* Backpressure's measure (upstream_transport.h): QoS 1/2 publishes handed
 * to Paho on this connection and not completed yet, its command queue and
 * its in-flight window together (Paho keeps one count for both, and its
 * own pending list costs an allocation to read). QoS 0 is not counted:
 * Paho tells nothing when it left, and no bytes either. A new connection
 * starts from zero, whatever the last one left. */
static size_t paho_backlog(mqr_upstream_t *u, size_t *bytes)
{
    up_paho_t *pp = up_paho(u);
    uv_mutex_lock(&u->lock);
    uint64_t done = u->delivered;
    uv_mutex_unlock(&u->lock);
    if (pp->bp_connects != u->stats.connects) {
        pp->bp_connects = u->stats.connects;
        pp->bp_sent = 0;
        pp->bp_done_base = done;
    }
    *bytes = 0;
    uint64_t completed = done - pp->bp_done_base;
    return pp->bp_sent > completed ? (size_t)(pp->bp_sent - completed) : 0;
}

static size_t paho_inflight(mqr_upstream_t *u)
{
    size_t n = 0;
    MQTTAsync_token *tokens = NULL;
    if (MQTTAsync_getPendingTokens(up_paho(u)->client, &tokens) == MQTTASYNC_SUCCESS && tokens)
        for (MQTTAsync_token *t = tokens; *t != -1; t++)
            n++;
    MQTTAsync_free(tokens);
    return n;
}

static const char *paho_strerror(int code)
{
    return code < 0 && code >= MQTTASYNC_MAX_BUFFERED ? MQTTAsync_strerror(code) : NULL;
}

static const char *paho_reason_text(int reason)
{
    return MQTTReasonCode_toString((enum MQTTReasonCodes)reason);
}

/* Paho 1.3.12 can lose the topic of a message it was writing when the
 * connection broke (it frees the string while the in-flight entry still
 * points at it) and then resends garbage after every reconnect, which the
 * broker rejects as malformed: the session never recovers (captured, see
 * docs/upstream.md). A persistent session's records hold every in-flight
 * message intact, so after a loss such a session destroys its client and
 * creates a new one, which restores them, instead of reconnecting the old
 * one. With clean = true Paho drops in-flight messages at the reconnect
 * anyway, so nothing is resent and the old client is kept. */
static bool paho_rebuild_after_loss(const mqr_upstream_t *u)
{
    return u->persistent && !u->clean_start;
}

const up_transport_t mqr__up_transport_paho = {
    .name = "paho",
    .init = paho_init,
    .free = paho_free,
    .create = paho_create,
    .destroy = paho_destroy,
    .connect = paho_connect,
    .subscribe = paho_subscribe,
    .unsubscribe = paho_unsubscribe,
    .ping = paho_ping,
    .publish = paho_publish,
    .inflight = paho_inflight,
    .backlog = paho_backlog,
    .strerror = paho_strerror,
    .reason_text = paho_reason_text,
    .rebuild_after_loss = paho_rebuild_after_loss,
    /* Paho's one receive thread serves every client of the process (see
     * nudge_connect, upstream.c). */
    .nudge_connects = true,
};
