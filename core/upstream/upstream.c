/*
 * upstream.c — mqrouter's sessions to other brokers, one client of a
 * transport each (upstream_transport.h; Paho MQTTAsync today): a session's
 * life from its configuration to its close, and the state machine that
 * turns the events its transport queues into state changes, observer
 * events, retries with backoff and re-subscribing after every (re)connect.
 *
 * Loop thread only. Must not: name the transport's library (the ops table
 * u->tp is all it knows of it; Paho's files are upstream_paho*.c), or
 * destroy a client here (it can block: upstream_work.c does it on a
 * worker). The other jobs sit beside it: inbound messages
 * (upstream_inbound.c), subscribe and publish (upstream_publish.c),
 * observers and waits (upstream_observe.c), status (upstream_status.c),
 * the public C API (api_upstream.c).
 */
#include "upstream_int.h"

#include "topic.h"
#include "topic_map.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define UP_RETRY_MIN_S 1
#define UP_RETRY_MAX_S 30

/* While a connect is under way, how often another connected session is
 * made to get an answer from its broker (see nudge_connect), and for how
 * many turns at most. */
#define UP_NUDGE_MS 10
#define UP_NUDGE_MAX 200

uint64_t mqr__up_wall_ms(void)
{
    struct timespec ts;
    if (!timespec_get(&ts, TIME_UTC)) return (uint64_t)time(NULL) * 1000u;
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static char *xstrdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* The transports there are; the first is the default (the engine's
 * upstream_transport option overrides it). */
static const up_transport_t *const transports[] = {&mqr__up_transport_native,
                                                   &mqr__up_transport_paho};
#define N_TRANSPORTS (sizeof transports / sizeof transports[0])

const up_transport_t *mqr__up_transport_find(const char *name)
{
    if (!name || !name[0]) return transports[0];
    for (size_t i = 0; i < N_TRANSPORTS; i++)
        if (strcmp(transports[i]->name, name) == 0) return transports[i];
    return NULL;
}

bool mqr__upstream_transport_known(const char *name)
{
    return name && name[0] && mqr__up_transport_find(name);
}

/* "'native', 'paho'": for the log line about an unknown one. */
static void transport_choices(char *buf, size_t n)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < N_TRANSPORTS && used < n; i++) {
        int w = snprintf(buf + used, n - used, "%s'%s'", i ? ", " : "", transports[i]->name);
        if (w < 0) break;
        used += (size_t)w;
    }
}

/* Text for a failed connect: the transport's error, v3 CONNACK code or v5
 * reason code. */
static void describe_failure(const mqr_upstream_t *u, char *buf, size_t n, int code, int reason,
                             const char *text)
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
        what = u->tp->reason_text(reason);
    else if (code > 0 && code <= 5)
        what = connack[code];
    else if (code < 0)
        what = u->tp->strerror(code);
    if (what && text)
        snprintf(buf, n, "%s (%s)", what, text);
    else if (what)
        snprintf(buf, n, "%s", what);
    else if (text)
        snprintf(buf, n, "%s", text);
    else
        snprintf(buf, n, "error %d", code);
}

const char *mqr__upstream_state_name(mqr_upstream_state_t st)
{
    static const char *const names[] = {"connecting", "connected", "disconnected", "closed",
                                        "failed"};
    return (unsigned)st < sizeof names / sizeof names[0] ? names[st] : "?";
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
    mqr__up_emit(u, &ev);
    if (u->observer && st <= MQR_UPSTREAM_CLOSED) u->observer(u->observer_arg, u, st, reason);
}

static void note_error(mqr_upstream_t *u, const char *why)
{
    snprintf(u->last_error, sizeof u->last_error, "%s", why);
    u->last_error_at_ms = mqr__up_wall_ms();
}

void mqr__up_check_ready(mqr_upstream_t *u)
{
    if (u->ready || u->closing || u->state != MQR_UPSTREAM_CONNECTED || u->subs_awaiting) return;
    u->ready = true;
    mqr__up_emit_simple(u, MQR_UPEV_READY, NULL, 0);
}

static up_sub_t *sub_by_token(mqr_upstream_t *u, int token)
{
    for (up_sub_t *s = u->subs; s; s = s->next)
        if (s->token == token) return s;
    return NULL;
}

static int start_connect(mqr_upstream_t *u);
static int create_client(mqr_upstream_t *u);

static void on_retry(uv_timer_t *t)
{
    mqr_upstream_t *u = t->data;
    if (u->closing || u->rebuilding || u->state == MQR_UPSTREAM_FAILED) return;
    /* A fresh attempt each time (the transport's own reconnect is not used). */
    int rc = start_connect(u);
    if (rc < 0 && !u->closing) {
        /* Counted like an attempt that failed on the wire. */
        up_event_t ev = {.type = EV_CONNECT_FAILED};
        ev.text = mqr_strerror(rc);
        mqr__up_handle_event(u, &ev);
    }
}

/* The n-th retry since the last connect (n = 0, 1, ...) comes after
 * initial * 2^n seconds, at most max: 1, 2, 4, ... s. Counted apart from
 * attempt: that one counts failed attempts, and a lost connection starts
 * its retries with none failed while a failed first connect starts with
 * one, which gave the first step twice after a loss (1, 1, 2, 4 s). */
void mqr__up_schedule_retry(mqr_upstream_t *u)
{
    uint64_t max = (uint64_t)u->retry_max_s * 1000u;
    uint64_t delay = (uint64_t)u->retry_initial_s * 1000u;
    for (unsigned i = 0; i < u->retries && delay < max; i++)
        delay *= 2;
    if (delay > max) delay = max;
    u->retries++;
    uv_timer_start(&u->retry, on_retry, delay, 0);
}

/* The transport may report the URI it connected to without its scheme
 * (Paho does): name the configured one. */
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
    if (!u->closing) mqr__up_emit_simple(u, MQR_UPEV_FAILED, reason, u->attempt);
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

void mqr__up_handle_event(mqr_upstream_t *u, up_event_t *ev)
{
    char why[256];
    /* What the client being rebuilt still reports about its connection is
     * history: the new client starts from its own connect. */
    if (u->rebuilding && ev->type != EV_MESSAGE && ev->type != EV_PUB_DONE) return;
    switch (ev->type) {
    case EV_MESSAGE:
        mqr__up_deliver(u, ev);
        break;
    case EV_CONNECT_OK:
        if (ev->text) set_broker(u, ev->text);
        break;
    case EV_PUB_DONE:
        mqr__up_pub_done(u, ev);
        break;
    case EV_TLS_ERROR:
        tls_note(u, ev->text);
        break;
    case EV_CONNECTED:
        mqr__up_nudge_stop(u);
        u->stats.connects++;
        if (u->ever_connected || u->attempt) u->stats.reconnects++;
        u->buffered = 0;
        u->full_warned = false;
        u->connect_failing = false;
        u->attempt = 0;
        u->retries = 0;
        u->server_reason[0] = '\0';
        u->tls.error[0] = '\0';
        u->connected_since_ms = mqr__up_wall_ms();
        if (!u->broker[0] && u->n_uris == 0) snprintf(u->broker, sizeof u->broker, "%s", u->uri);
        set_state(u, MQR_UPSTREAM_CONNECTED, u->ever_connected ? "reconnected" : "connected");
        u->ever_connected = true;
        /* The observer may have closed us; then the client is no longer ours. */
        if (u->closing || u->state != MQR_UPSTREAM_CONNECTED) break;
        mqr__up_emit_simple(u, MQR_UPEV_CONNECTED, NULL, 0);
        if (u->closing || u->state != MQR_UPSTREAM_CONNECTED) break;
        u->subs_awaiting = 0;
        for (up_sub_t *s = u->subs; s; s = s->next) {
            s->awaiting = mqr__up_send_subscribe(u, s) == 0;
            if (s->awaiting) u->subs_awaiting++;
        }
        mqr__up_check_ready(u);
        break;
    case EV_SERVER_DISCONNECT:
        snprintf(u->server_reason, sizeof u->server_reason, "broker sent DISCONNECT: %s%s%s",
                 u->tp->reason_text(ev->reason), ev->text ? ", " : "", ev->text ? ev->text : "");
        break;
    case EV_LOST: {
        mqr__up_nudge_stop(u);
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
        mqr__up_emit_simple(u, MQR_UPEV_DISCONNECTED, cause_copy, 0);
        if (u->closing) break;
        mqr__up_emit_simple(u, MQR_UPEV_RECONNECTING, NULL, 1);
        if (u->closing) break;
        if (u->tp->rebuild_after_loss(u))
            mqr__up_rebuild_client(u);
        else
            mqr__up_schedule_retry(u);
        break;
    }
    case EV_CONNECT_FAILED:
        mqr__up_nudge_stop(u);
        if (u->state == MQR_UPSTREAM_FAILED) break;
        if (u->tls.error[0]) {
            /* The transport says only "TCP/TLS connect failure"; OpenSSL said why. */
            tls_failure(u, why, sizeof why);
        } else if (u->tls.on && ev->text && ev->net_failure) {
            /* Failures the transport sees outside OpenSSL's error queue (a host name
             * check, over TLS 1.3 a refused client certificate, whose alert
             * comes on the first read) look like a broker that is down or
             * hangs up: name them too. */
            char hint[200];
            snprintf(hint, sizeof hint,
                     "%s; no TLS reason given: broker unreachable, host name not in its "
                     "certificate, or client certificate missing or refused",
                     ev->text);
            describe_failure(u, why, sizeof why, ev->code, ev->reason, hint);
        } else {
            describe_failure(u, why, sizeof why, ev->code, ev->reason, ev->text);
        }
        note_error(u, why);
        u->stats.connect_failures++;
        u->attempt++;
        /* One warning per outage; the retry timer keeps trying with backoff. */
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
        mqr__up_emit_simple(u, MQR_UPEV_RECONNECTING, why, u->attempt + 1);
        if (!u->closing && u->state != MQR_UPSTREAM_FAILED) mqr__up_schedule_retry(u);
        break;
    case EV_SUB_OK: {
        up_sub_t *s = sub_by_token(u, ev->token);
        if (s) {
            s->pending = false;
            s->granted = ev->code;
            mqr__up_answer_sub_waiters(u, s, ev->code < 0x80 ? 0 : MQR_EUPSTREAM, ev->code);
        }
        if (s && ev->code < s->qos)
            MQR_LOG_I("upstream", "session '%s': broker granted QoS %d for '%s' (asked %d)",
                      u->name, ev->code, s->filter, s->qos);
        if (s && s->awaiting) {
            s->awaiting = false;
            u->subs_awaiting--;
            mqr__up_check_ready(u);
        }
        break;
    }
    case EV_SUB_FAILED: {
        up_sub_t *s = sub_by_token(u, ev->token);
        /* (One cut short by a disconnect is not answered: the reconnect
         * subscribes again.) */
        if (!s) break;
        s->pending = false;
        s->granted = ev->reason ? ev->reason : 0x80;
        mqr__up_answer_sub_waiters(u, s, MQR_EUPSTREAM, s->granted);
        describe_failure(u, why, sizeof why, ev->code, ev->reason, NULL);
        MQR_LOG_W("upstream", "session '%s': broker refused subscription to '%s': %s", u->name,
                  s->filter, why);
        note_error(u, why);
        /* Answered all the same: a refused filter does not hold up ready. */
        if (s->awaiting) {
            s->awaiting = false;
            u->subs_awaiting--;
            mqr__up_check_ready(u);
        }
        break;
    }
    }
}

/* For a transport that says so (nudge_connects): Paho's one receive thread
 * serves every client of the process: it polls
 * the sockets it knew when its poll began, for up to a second, and only
 * between two polls takes in a new socket or sees that a socket's TCP
 * connect completed (only then does it write CONNECT). So with other
 * sessions connected and quiet, a new connect waited for two of those
 * polls to time out: 1-2 s instead of a few ms (strace: connect()
 * EINPROGRESS, poll(..., 1000) timing out twice, then the CONNECT). Paho
 * has no call to wake that thread; an answer from a broker on any socket
 * it polls does. So while a connect is under way, every UP_NUDGE_MS
 * another connected session of the engine on the same transport sends the
 * harmless round trip of mqr__upstream_ping_cb (Paho: an UNSUBSCRIBE of a
 * filter nobody uses); two or three of them are enough, at most
 * UP_NUDGE_MAX are sent. */
static void nudge_connect(uv_timer_t *t)
{
    mqr_upstream_t *u = t->data;
    if (!u->connect_pending || u->closing || ++u->nudges > UP_NUDGE_MAX) {
        uv_timer_stop(&u->nudge);
        return;
    }
    for (mqr_upstream_t *o = u->all->first; o; o = o->next) {
        if (o == u || o->tp != u->tp || o->closing || o->rebuilding || !o->has_client ||
            o->state != MQR_UPSTREAM_CONNECTED)
            continue;
        o->tp->ping(o, NULL); /* nothing to answer */
        return;
    }
}

static void nudge_start(mqr_upstream_t *u)
{
    u->connect_pending = true;
    u->nudges = 0;
    uv_timer_start(&u->nudge, nudge_connect, UP_NUDGE_MS, UP_NUDGE_MS);
}

void mqr__up_nudge_stop(mqr_upstream_t *u)
{
    u->connect_pending = false;
    uv_timer_stop(&u->nudge);
}

static int start_connect(mqr_upstream_t *u)
{
    if (!u->has_client) {
        int rc = create_client(u);
        if (rc < 0) return rc;
    }
    /* Fresh credentials for this attempt (Paho has no client-side v5 AUTH
     * exchange to renew them on a live connection). The hook may close u. */
    if (u->credentials) {
        u->credentials(u->credentials_arg, u, u->attempt);
        if (u->closing) return MQR_ECLOSED;
    }
    int rc = u->tp->connect(u);
    if (rc == 0 && u->tp->nudge_connects) nudge_start(u);
    return rc;
}

static void log_connecting(mqr_upstream_t *u)
{
    MQR_LOG_I("upstream", "session '%s' connecting to %s (MQTT %s, client id '%s'%s)", u->name,
              u->uri, u->version == UP_MQTT_5 ? "5" : "3.1.1", u->client_id,
              u->persistent ? ", persistent" : "");
}

/* The engine's upstream store, opened at the first persistent session.
 * NULL (and logged) when it cannot be opened: sessions then keep their
 * buffers in memory. */
static mqr_upstream_persist_t *engine_persist(mqr_upstreams_t *all)
{
    if (all->persist || all->persist_failed) return all->persist;
    if (!all->data_dir || !all->data_dir[0]) return NULL;
    size_t n = strlen(all->data_dir) + sizeof "/upstream.db";
    char *path = malloc(n);
    if (!path) return NULL;
    snprintf(path, n, "%s/upstream.db", all->data_dir);
    char *why = NULL;
    int rc = mqr__upstream_persist_open(all->loop, path, &all->persist, &why);
    if (rc < 0) {
        all->persist_failed = true;
        MQR_LOG_E("upstream", "%s; sessions keep their buffers in memory only",
                  why ? why : mqr_strerror(rc));
    }
    free(why);
    free(path);
    return all->persist;
}

int64_t mqr__up_records_count(mqr_upstream_t *u)
{
    if (!u->persistent) return 0;
    if (u->tp->records_count) return u->tp->records_count(u);
    return mqr__upstream_persist_count(u->all->persist, u->name);
}

void mqr__up_records_discard(mqr_upstream_t *u)
{
    if (!u->persistent) return;
    if (u->tp->records_discard)
        u->tp->records_discard(u);
    else
        mqr__upstream_persist_discard(u->all->persist, u->name);
}

/* Decides whether u persists; returns the open persistent session of its
 * name that u replaces and must wait for (see struct mqr_upstream), or NULL. */
static mqr_upstream_t *persist_setup(mqr_upstream_t *u, const mqr_upstream_config_t *cfg)
{
    mqr_upstreams_t *all = u->all;
    bool want = cfg->persist == 0 ? all->data_dir && all->data_dir[0] : cfg->persist > 0;
    if (!want) return NULL;
    if (u->tp->records_in_engine_store ? !all->outbox : !engine_persist(all)) return NULL;
    u->persistent = true;
    for (mqr_upstream_t *o = all->first; o; o = o->next) /* newest first */
        if (!o->closing && o->persistent && strcmp(o->name, u->name) == 0) return o;
    return NULL;
}

/* Has the transport create the client (restoring the records of a
 * persistent session); then hands it what was published meanwhile. */
static int create_client(mqr_upstream_t *u)
{
    int rc = u->tp->create(u);
    if (rc < 0) return rc;
    u->has_client = true;
    if (u->persistent) {
        int64_t n = mqr__up_records_count(u);
        if (n > 0)
            MQR_LOG_I("upstream", "session '%s': %lld stored message record(s) restored", u->name,
                      (long long)n);
    }
    /* What was published while the session waited for its predecessor. */
    for (size_t i = 0; i < u->n_early; i++) {
        struct up_early *x = &u->early[i];
        int prc = mqr__up_publish(u, x->msg, x->pub);
        if ((prc < 0 || prc == UP_PUB_EXPIRED) && x->pub)
            mqr__up_pub_answer(x->pub, prc < 0 ? prc : MQR_EINVAL);
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
void mqr__up_wake_successor(mqr_upstream_t *u)
{
    u->predecessor = NULL;
    if (u->closing) return;
    if (u->persistent && !u->inbox_loaded && !u->tp->records_in_engine_store) mqr__up_inbox_load(u);
    int rc = start_connect(u);
    if (u->closing) return;
    if (rc < 0) {
        /* Counted like an attempt that failed on the wire: retried. */
        up_event_t ev = {.type = EV_CONNECT_FAILED};
        ev.text = mqr_strerror(rc);
        mqr__up_handle_event(u, &ev);
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
    int version = cfg->mqtt_version ? cfg->mqtt_version : UP_MQTT_311;
    if (version != UP_MQTT_311 && version != UP_MQTT_5) return MQR_EINVAL;
    if (cfg->keepalive_s < 0 || cfg->keepalive_s > 65535 || cfg->max_buffered < 0 ||
        cfg->max_buffered_bytes < 0)
        return MQR_EINVAL;
    char tls_err[512];
    int trc = mqr__upstream_tls_check(cfg, tls_err, sizeof tls_err);
    if (trc < 0) {
        MQR_LOG_E("upstream", "session '%s': %s", cfg->name, tls_err);
        return trc;
    }
    const char *tp_name = cfg->transport;
    if (!tp_name || !tp_name[0]) tp_name = mqr__engine_upstreams(e)->default_transport;
    const up_transport_t *tp = mqr__up_transport_find(tp_name);
    if (!tp) {
        char choices[128];
        transport_choices(choices, sizeof choices);
        MQR_LOG_E("upstream", "session '%s': unknown transport '%s' (choose %s)", cfg->name,
                  cfg->transport, choices);
        return MQR_EINVAL;
    }
    if (mqr__engine_stopping(e)) return MQR_ECLOSED;
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
    u->tp = tp;
    u->e = e;
    u->all = mqr__engine_upstreams(e);
    u->version = version;
    u->keepalive_s = cfg->keepalive_s ? cfg->keepalive_s : 30;
    u->clean_start = cfg->clean_start;
    u->max_buffered = cfg->max_buffered ? cfg->max_buffered : 10000;
    u->max_buffered_bytes =
        cfg->max_buffered_bytes ? (size_t)cfg->max_buffered_bytes : UP_MAX_BUFFERED_BYTES;
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
    u->auth_method = xstrdup(cfg->auth_method && cfg->auth_method[0] ? cfg->auth_method : NULL);
    oom |= cfg->auth_method && cfg->auth_method[0] && !u->auth_method;
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
    if (oom || !u->name || !u->uri || !u->client_id || (cfg->username && !u->username) ||
        (cfg->password && !u->password)) {
        mqr__up_session_free(u);
        return MQR_ENOMEM;
    }

    mqr_upstream_t *pred = persist_setup(u, cfg);
    int rc = u->tp->init(u);
    if (rc == 0 && !pred) rc = create_client(u);
    int urc = rc == 0 ? uv_async_init(u->all->loop, &u->async, mqr__up_on_async) : 0;
    if (rc < 0 || urc < 0) {
        if (u->has_client) u->tp->destroy(u, false);
        mqr__up_session_free(u);
        return rc < 0 ? rc : urc;
    }
    uv_timer_init(u->all->loop, &u->retry); /* cannot fail */
    uv_timer_init(u->all->loop, &u->nudge);
    uv_timer_init(u->all->loop, &u->warn);
    uv_check_init(u->all->loop, &u->drain);
    u->async.data = u;
    u->retry.data = u;
    u->nudge.data = u;
    u->warn.data = u;
    u->drain.data = u;
    u->open_handles = 5;
    if (u->persistent && !pred && !u->tp->records_in_engine_store) mqr__up_inbox_load(u);
    if (pred) {
        /* defensive: a newer open successor would have been found first */
        if (pred->successor) pred->successor->predecessor = NULL;
        pred->successor = u;
        u->predecessor = pred;
    }
    u->next = u->all->first;
    u->all->first = u;
    mqr__up_emit_simple(u, MQR_UPEV_ADDED, NULL, 0);
    mqr__up_emit_simple(u, MQR_UPEV_CONNECTING, NULL, 0);

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
        mqr__up_emit_simple(u, MQR_UPEV_REMOVED, mqr_strerror(rc), 0);
        mqr__up_begin_close(u);
        return rc;
    }
    log_connecting(u);
    *out = u;
    return 0;
}

mqr_upstream_t *mqr__upstream_find(mqr_engine_t *e, const char *name)
{
    if (!name) return NULL;
    for (mqr_upstream_t *u = mqr__engine_upstreams(e)->first; u; u = u->next)
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
    mqr__up_emit(u, &sc);
    mqr__up_emit_simple(u, MQR_UPEV_REMOVED, "closed", 0);
    /* what the rate limit still held back: the status goes with the session */
    u->drop_warned_ms = u->unprotected_warned_ms = u->not_kept_warned_ms = 0;
    mqr__up_report_losses(u);
    uint64_t waiting = (u->state == MQR_UPSTREAM_CONNECTED ? 0 : u->buffered) + u->n_early;
    if (waiting && u->persistent && u->successor)
        MQR_LOG_I("upstream",
                  "session '%s': %llu message(s) buffered while disconnected stay stored for the "
                  "session that replaces it",
                  u->name, (unsigned long long)waiting);
    else if (waiting && u->persistent && !u->discard)
        MQR_LOG_I("upstream",
                  "session '%s': %llu message(s) buffered while disconnected stay stored for "
                  "the next start",
                  u->name, (unsigned long long)waiting);
    else if (waiting)
        MQR_LOG_W("upstream",
                  "session '%s': %llu message(s) buffered while disconnected are dropped", u->name,
                  (unsigned long long)waiting);
    mqr__up_begin_close(u);
}

void mqr__upstream_discard(mqr_upstream_t *u)
{
    if (!u || u->closing) return;
    u->discard = true;
    mqr__upstream_close(u);
}

void mqr__upstream_close_all(mqr_engine_t *e)
{
    for (mqr_upstream_t *u = mqr__engine_upstreams(e)->first; u; u = u->next)
        mqr__upstream_close(u);
    mqr__up_waits_close(e);
}

void mqr__upstream_free_all(mqr_engine_t *e)
{
    mqr__upstream_close_all(e);
    mqr_upstreams_t *all = mqr__engine_upstreams(e);
    /* Closed sessions leave the list only when the transport is done with them
     * (destroy on a worker, then the async handle's close). On the engine's
     * own loop that has happened already; on a host's loop drive it here so
     * nothing of the engine outlives mqr_engine_free(). */
    while (all->first || mqr__up_has_waits(e)) {
        if (uv_run(all->loop, UV_RUN_ONCE) == 0 && (all->first || mqr__up_has_waits(e))) {
            MQR_LOG_E("upstream", "sessions still open with an idle loop; leaking them");
            break;
        }
    }
}
