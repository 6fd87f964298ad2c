/*
 * client_session.c — a listener client's persistent session (not an
 * upstream broker session, core/upstream/): what outlives the client's
 * connection, in memory while the client is away and in the store
 * throughout.
 *
 * A session is persistent when a 3.1.1 client connects with Clean Session 0
 * or a v5 client gives a Session Expiry Interval above 0 (0xFFFFFFFF:
 * never). 3.1.1 has no expiry: by default such a session is kept until the
 * client cleans it (Mosquitto's default too), and with the listener's
 * v311_session_expiry_s it ends that long after its client left, counted
 * from the disconnection as a v5 expiry is (the stored expiry stays "never":
 * the limit is the listener's, read when the session goes offline or is
 * loaded, so changing it applies to sessions already kept). While connected, the session lives
 * in the connection (subscriptions, deliveries, QoS 2 ids) and deliver.c
 * and handle_*.c write its rows; when the connection closes, the state
 * moves into an mqr_client_session_t whose trie entries keep matching, and moves
 * back into the next connection that asks for it (Clean Start 0). Offline,
 * QoS 1/2 messages are queued up to max_queued (newer ones are dropped,
 * counted in offline_dropped and logged once per absence); QoS 0 is not
 * queued (as Mosquitto's default, queue_qos0_messages false). A v5 will
 * with a Will Delay Interval waits here until the delay passes or the
 * session ends, whichever is first, and is dropped if the client comes
 * back in time. Delayed wills are not stored: a restart loses them.
 *
 * At start-up every stored session is loaded offline, its expiry counted
 * from when its client left (or from the start-up if the process died with
 * the client connected), into the engine's first listener; a client finds
 * its session through any listener (one client-id space). A listener that
 * closes while the engine runs (a script reload) takes its offline sessions
 * out of memory: they are only in the store until the next start-up.
 * This file must not touch sockets or encode packets; redelivery on
 * reconnect is deliver.c's.
 */
#include "listener_int.h"

#include "hash.h"

#include "store_client_sessions.h"
#include "topic.h"

#include <stdlib.h>
#include <string.h>

#define NEVER UINT64_MAX
/* How often the timer looks for expired sessions and due wills. */
#define SESSION_TICK_MS 1000u

/* ---- the map of offline sessions ------------------------------------------------ */

static mqr_client_session_t **bucket(mqr_listener_t *l, const char *id, size_t len)
{
    return &l->sessions[mqr__fnv1a64(id, len) & (l->sessions_cap - 1)];
}

static mqr_client_session_t *find(mqr_listener_t *l, const char *id, size_t len)
{
    if (!l->sessions_cap) return NULL;
    for (mqr_client_session_t *s = *bucket(l, id, len); s; s = s->next)
        if (s->client_id_len == len && memcmp(s->client_id, id, len) == 0) return s;
    return NULL;
}

/* In every listener of the engine: one client-id space (server.c). */
static mqr_client_session_t *find_any(mqr_listener_t *l, const char *id, size_t len)
{
    if (!l->linked) return find(l, id, len);
    for (mqr_listener_t *x = l->all->first; x; x = x->e_next) {
        mqr_client_session_t *s = find(x, id, len);
        if (s) return s;
    }
    return NULL;
}

static int map_add(mqr_listener_t *l, mqr_client_session_t *s)
{
    if (l->sessions_count >= l->sessions_cap) {
        size_t cap = l->sessions_cap ? l->sessions_cap * 2 : 64;
        mqr_client_session_t **b = calloc(cap, sizeof *b);
        if (!b) return MQR_ENOMEM;
        for (size_t i = 0; i < l->sessions_cap; i++) {
            mqr_client_session_t *x = l->sessions[i];
            while (x) {
                mqr_client_session_t *next = x->next;
                size_t j = mqr__fnv1a64(x->client_id, x->client_id_len) & (cap - 1);
                x->next = b[j];
                b[j] = x;
                x = next;
            }
        }
        free(l->sessions);
        l->sessions = b;
        l->sessions_cap = cap;
    }
    mqr_client_session_t **pp = bucket(l, s->client_id, s->client_id_len);
    s->next = *pp;
    *pp = s;
    l->sessions_count++;
    l->stats.sessions_offline++;
    return 0;
}

static void map_remove(mqr_listener_t *l, mqr_client_session_t *s)
{
    for (mqr_client_session_t **pp = bucket(l, s->client_id, s->client_id_len); *pp;
         pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            s->next = NULL;
            l->sessions_count--;
            l->stats.sessions_offline--;
            return;
        }
    }
}

/* ---- one offline session ----------------------------------------------------------- */

static int session_deliver(mqr_subscriber_t *self, mqr_msg_t *msg, const mqr_trie_entry_t *entry);
static int session_deliver_set(mqr_subscriber_t *self, mqr_msg_t *msg,
                               mqr_trie_entry_t *const *entries, size_t n);

static mqr_client_session_t *session_new(mqr_listener_t *l, const char *id, size_t len)
{
    mqr_client_session_t *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->client_id = malloc(len + 1);
    if (!s->client_id) {
        free(s);
        return NULL;
    }
    memcpy(s->client_id, id, len);
    s->client_id[len] = '\0';
    s->client_id_len = len;
    s->l = l;
    s->sub.deliver = session_deliver;
    s->sub.deliver_set = session_deliver_set;
    s->expires_ms = NEVER;
    return s;
}

static void publish_will(mqr_listener_t *l, const char *id, mqr_msg_t *will)
{
    if (!l->closing) {
        MQR_LOG_D(MQR_LSN_LOG, "client %s: publishing delayed will on %s", id, will->topic);
        mqr__engine_publish(l->e, will);
    }
    mqr_msg_unref(will);
}

/* Frees s (out of the map already). Its subscriptions leave the router
 * unless they were moved out (nsubs 0). */
static void session_free(mqr_client_session_t *s, bool will)
{
    mqr_listener_t *l = s->l;
    for (uint32_t i = 0; i < s->nsubs; i++)
        mqr__router_remove(l->all->router, s->subs[i]);
    for (uint32_t i = 0; i < s->nmsgs; i++)
        mqr__ldelivery_free(&s->msgs[i]);
    if (s->will) {
        if (will)
            publish_will(l, s->client_id, s->will);
        else
            mqr_msg_unref(s->will);
    }
    free(s->subs);
    free(s->msgs);
    free(s->qos2_ids);
    free(s->client_id);
    free(s);
}

/* 0, or the store's error (counted and logged). */
static int rows_delete(mqr_listener_t *l, const char *id, size_t len)
{
    if (!l->sstore) return 0;
    int rc = mqr__store_client_session_delete(l->sstore, id, len);
    if (rc < 0) mqr__client_session_row_failed(l, id, rc);
    return rc;
}

static int msgs_push(mqr_client_session_t *s, const mqr_ldelivery_t *d)
{
    if (s->nmsgs == s->msgs_cap) {
        uint32_t cap = s->msgs_cap ? s->msgs_cap * 2 : 16;
        mqr_ldelivery_t *m = realloc(s->msgs, cap * sizeof *m);
        if (!m) return MQR_ENOMEM;
        s->msgs = m;
        s->msgs_cap = cap;
    }
    s->msgs[s->nmsgs++] = *d;
    if (!d->pid) s->nqueued++;
    return 0;
}

/* Queues msg for an absent client. A message whose row the store refused
 * is not kept in memory either: its publisher is told it was not taken
 * (and may send it again), so holding it would only make a duplicate. */
static int session_queue(mqr_client_session_t *s, mqr_msg_t *msg, uint8_t qos, bool retain,
                         const uint32_t *ids, uint32_t nids)
{
    mqr_listener_t *l = s->l;
    if (qos == 0) return 0; /* not queued for an absent client (Mosquitto's default too) */
    if (msg->expiry_s && msg->created_ms + (uint64_t)msg->expiry_s * 1000u <= mqr__now_ms()) {
        l->stats.expired++;
        return 0;
    }
    if (s->nqueued >= l->opts.max_queued) {
        l->stats.offline_dropped++;
        if (!s->full_logged) {
            s->full_logged = true;
            MQR_LOG_W(MQR_LSN_LOG,
                      "client %s is away and its queue is full (%u messages): newer QoS 1/2 "
                      "messages are dropped until it comes back",
                      s->client_id, l->opts.max_queued);
        }
        return 0; /* the documented bound of an offline queue (docs/listener.md) */
    }
    mqr_ldelivery_t d = {
        .msg = msg,
        .qos = qos,
        .retain = retain,
        .seq = l->sstore ? s->next_seq + 1 : 0,
    };
    if (mqr__ldelivery_set_ids(&d, ids, nids) < 0 || msgs_push(s, &d) < 0) {
        free(d.sub_ids);
        l->stats.offline_dropped++;
        return MQR_ENOMEM;
    }
    if (!l->sstore) {
        mqr_msg_ref(msg);
        return 0;
    }
    int rc = mqr__store_client_session_msg_put(l->sstore, s->client_id, s->client_id_len, d.seq,
                                               msg, qos, d.retain, ids, nids, 0, MQR_LQ_FREE);
    if (rc < 0) {
        s->nmsgs--; /* the one msgs_push added */
        s->nqueued--;
        free(d.sub_ids);
        mqr__client_session_row_failed(l, s->client_id, rc);
        return rc;
    }
    s->next_seq = d.seq;
    mqr_msg_ref(msg);
    return MQR_DELIVER_STORED; /* the publisher's ack waits for the commit */
}

static int session_deliver(mqr_subscriber_t *self, mqr_msg_t *msg, const mqr_trie_entry_t *entry)
{
    const mqr_sub_opts_t *o = &entry->opts;
    uint8_t qos = msg->qos < o->qos ? msg->qos : o->qos;
    return session_queue((mqr_client_session_t *)self, msg, qos,
                         o->retain_as_published && msg->retain, &o->subscription_id,
                         o->subscription_id != 0);
}

/* Several subscriptions of the absent client match: one queued copy, as
 * its connection would have sent (deliver.c). No origin: an absent client
 * published nothing, so No Local never applies. */
static int session_deliver_set(mqr_subscriber_t *self, mqr_msg_t *msg,
                               mqr_trie_entry_t *const *entries, size_t n)
{
    uint8_t qos;
    bool retain;
    uint32_t *ids, nids;
    int rc = mqr__listener_merge(NULL, msg, entries, n, &qos, &retain, &ids, &nids);
    if (rc == 1) return 0;
    if (rc < 0) return msg->qos ? rc : 0;
    rc = session_queue((mqr_client_session_t *)self, msg, qos, retain, ids, nids);
    free(ids);
    return rc;
}

void mqr__client_session_row_failed(mqr_listener_t *l, const char *client_id, int rc)
{
    l->stats.session_rows_failed++;
    uint64_t now = mqr__now_ms();
    if (now - l->row_log_ms < 1000u) return; /* a failing disk fails every row: one line a second */
    l->row_log_ms = now;
    MQR_LOG_W(MQR_LSN_LOG, "client %s: session row not stored: %s (%llu failed writes so far)",
              client_id, l->all->store ? mqr__store_last_error(l->all->store) : mqr_strerror(rc),
              (unsigned long long)l->stats.session_rows_failed);
}

/* ---- moving state between a connection and a session ------------------------------ */

static void subs_point(mqr_trie_entry_t **subs, uint32_t n, void *sub)
{
    for (uint32_t i = 0; i < n; i++)
        subs[i]->sub = sub;
}

void mqr__client_session_disconnect(mqr_lconn_t *c)
{
    mqr_listener_t *l = c->l;
    if (l->closing) return; /* the rows stay as they are */
    if (!c->persistent) {
        if (c->stored) rows_delete(l, c->client_id, c->client_id_len);
        c->stored = false;
        return;
    }
    mqr_client_session_t *s = session_new(l, c->client_id, c->client_id_len);
    if (!s || map_add(l, s) < 0) {
        MQR_LOG_E(MQR_LSN_LOG, "client %s: out of memory, its session ends", c->client_id);
        if (s) session_free(s, false);
        rows_delete(l, c->client_id, c->client_id_len);
        c->stored = false;
        return;
    }
    uint64_t now = uv_now(l->all->loop);
    s->version = c->version;
    s->expiry_s = c->session_expiry;
    if (s->expiry_s != UINT32_MAX)
        s->expires_ms = now + (uint64_t)s->expiry_s * 1000u;
    else if (s->version != MQR_MQTT_V5 && l->opts.v311_session_expiry_s)
        s->expires_ms = now + (uint64_t)l->opts.v311_session_expiry_s * 1000u;
    s->subs = c->subs;
    s->nsubs = c->nsubs;
    s->subs_cap = c->subs_cap;
    subs_point(s->subs, s->nsubs, &s->sub);
    c->subs = NULL;
    c->nsubs = c->subs_cap = 0;
    if (mqr__listener_deliveries_take(c, &s->msgs, &s->nmsgs) < 0) {
        MQR_LOG_E(MQR_LSN_LOG, "client %s: out of memory, its messages stay in the store only",
                  c->client_id);
    }
    s->msgs_cap = s->nmsgs;
    for (uint32_t i = 0; i < s->nmsgs; i++)
        if (!s->msgs[i].pid) s->nqueued++;
    if (c->qs) {
        s->qos2_ids = c->qs->qos2_ids;
        s->qos2_count = c->qs->qos2_count;
        c->qs->qos2_ids = NULL;
        c->qs->qos2_count = 0;
        s->next_seq = c->qs->next_seq;
    }
    s->next_pid = c->next_pid;
    if (c->will && c->will_publish && c->will_delay) {
        /* 5.0 §3.1.2.5: published when the delay or the session ends */
        uint32_t delay = c->will_delay < s->expiry_s ? c->will_delay : s->expiry_s;
        s->will = c->will;
        s->will_ms = now + (uint64_t)delay * 1000u;
        c->will = NULL;
    }
    /* a failed update (counted) only makes the expiry count from the next
     * start-up instead of from now */
    int rc;
    if (l->sstore &&
        (rc = mqr__store_client_session_put(l->sstore, s->client_id, s->client_id_len, s->version,
                                            s->expiry_s, mqr__now_ms())) < 0)
        mqr__client_session_row_failed(l, s->client_id, rc);
    MQR_LOG_D(MQR_LSN_LOG, "client %s: session kept (%u subscriptions, %u messages)", s->client_id,
              s->nsubs, s->nmsgs);
}

int mqr__client_session_connect(mqr_lconn_t *c, bool clean, bool *present)
{
    mqr_listener_t *l = c->l;
    *present = false;
    if (c->version != MQR_MQTT_V5) c->session_expiry = clean ? 0 : UINT32_MAX;
    c->persistent = c->session_expiry > 0;
    mqr_client_session_t *s = find_any(l, c->client_id, c->client_id_len);
    bool resume = s && !clean;
    if (l->sstore) {
        /* The rows first, while nothing in memory has moved: a refusal
         * leaves the session as it was. Rows of a session that does not go
         * on (ended, or unknown here: kept by a listener that has closed
         * since) go; a failed delete matters only for a session we know
         * of (a clean client's CONNECT does not depend on a working store). */
        int rc = 0;
        if (!resume || !c->persistent) {
            rc = rows_delete(l, c->client_id, c->client_id_len);
            if (!s) rc = 0;
        }
        if (rc == 0 && c->persistent) {
            rc = mqr__store_client_session_put(l->sstore, c->client_id, c->client_id_len,
                                               c->version, c->session_expiry, 0);
            if (rc < 0) mqr__client_session_row_failed(l, c->client_id, rc);
        }
        if (rc < 0) return rc;
    }
    if (s) {
        map_remove(s->l, s);
        if (clean) {
            /* the old session ends: its delayed will goes now */
            session_free(s, true);
            s = NULL;
        }
    }
    if (s) {
        *present = true;
        c->subs = s->subs;
        c->nsubs = s->nsubs;
        c->subs_cap = s->subs_cap;
        subs_point(c->subs, c->nsubs, &c->sub);
        s->subs = NULL;
        s->nsubs = 0;
        /* only a session with something to bring back needs c->qs */
        mqr_lqs_t *q = s->qos2_ids || s->next_seq ? mqr__listener_qstate(c) : c->qs;
        int rc = 0;
        if (q) {
            q->qos2_ids = s->qos2_ids;
            q->qos2_count = s->qos2_count;
            s->qos2_ids = NULL;
            q->next_seq = s->next_seq;
        } else if (s->qos2_ids || s->next_seq) {
            rc = MQR_ENOMEM; /* the QoS 2 ids are forgotten: logged below */
        }
        int grc = mqr__listener_deliveries_give(c, s->msgs, s->nmsgs);
        if (rc == 0) rc = grc;
        s->nmsgs = 0; /* the references moved (or were dropped) */
        c->next_pid = s->next_pid;
        if (rc < 0)
            MQR_LOG_E(MQR_LSN_LOG, "client %s: out of memory restoring its messages", c->client_id);
        if (s->will) { /* 5.0 §3.1.3.2.2: back in time, the will is not sent */
            mqr_msg_unref(s->will);
            s->will = NULL;
        }
        session_free(s, false);
    }
    c->stored = c->persistent && l->sstore;
    return 0;
}

/* ---- store writes of a connected persistent session ----------------------------- */

int mqr__client_session_sub_put(mqr_lconn_t *c, const char *filter, size_t flen,
                                const mqr_sub_opts_t *o)
{
    if (!c->persistent || !c->l->sstore) return 0;
    uint8_t flags = (uint8_t)((o->no_local ? 1 : 0) | (o->retain_as_published ? 2 : 0) |
                              ((o->retain_handling & 3) << 2));
    int rc = mqr__store_client_session_sub_put(c->l->sstore, c->client_id, c->client_id_len, filter,
                                               flen, o->qos, flags, o->subscription_id);
    if (rc < 0) {
        mqr__client_session_row_failed(c->l, c->client_id, rc);
        return rc;
    }
    return MQR_DELIVER_STORED;
}

void mqr__client_session_sub_delete(mqr_lconn_t *c, const char *filter, size_t flen)
{
    if (!c->persistent || !c->l->sstore) return;
    mqr__store_client_session_sub_delete(c->l->sstore, c->client_id, c->client_id_len, filter,
                                         flen);
}

int mqr__client_session_qos2(mqr_lconn_t *c, uint16_t pid, bool add)
{
    mqr_listener_t *l = c->l;
    if (!c->persistent || !l->sstore) return 0;
    int rc =
        add ? mqr__store_client_session_qos2_put(l->sstore, c->client_id, c->client_id_len, pid)
            : mqr__store_client_session_qos2_delete(l->sstore, c->client_id, c->client_id_len, pid);
    if (rc < 0) {
        mqr__client_session_row_failed(l, c->client_id, rc);
        return rc;
    }
    return MQR_DELIVER_STORED;
}

/* ---- expiry and delayed wills -------------------------------------------------------- */

void mqr__client_session_tick(mqr_listener_t *l, uint64_t now)
{
    if (!l->sessions_count || now - l->session_tick_ms < SESSION_TICK_MS) return;
    l->session_tick_ms = now;
    /* unlink first, act after: a will may close or open connections, which
     * changes the map */
    mqr_client_session_t *ended = NULL;
    size_t nwills = 0;
    for (size_t i = 0; i < l->sessions_cap; i++) {
        mqr_client_session_t **pp = &l->sessions[i];
        while (*pp) {
            mqr_client_session_t *s = *pp;
            if (now >= s->expires_ms) {
                *pp = s->next;
                l->sessions_count--;
                l->stats.sessions_offline--;
                s->next = ended;
                ended = s;
                continue;
            }
            if (s->will && now >= s->will_ms) nwills++;
            pp = &s->next;
        }
    }
    if (nwills) {
        mqr_msg_t **w = malloc(nwills * sizeof *w);
        char **ids = malloc(nwills * sizeof *ids);
        size_t k = 0;
        for (size_t i = 0; w && ids && i < l->sessions_cap; i++) {
            for (mqr_client_session_t *s = l->sessions[i]; s; s = s->next) {
                if (!s->will || now < s->will_ms) continue;
                ids[k] = strdup(s->client_id);
                w[k++] = s->will;
                s->will = NULL;
            }
        }
        for (size_t i = 0; i < k; i++) {
            publish_will(l, ids[i] ? ids[i] : "?", w[i]);
            free(ids[i]);
        }
        free(w);
        free(ids);
    }
    while (ended) {
        mqr_client_session_t *s = ended;
        ended = s->next;
        l->stats.sessions_expired++;
        if (s->version != MQR_MQTT_V5) l->stats.sessions_expired_v311++;
        MQR_LOG_I(MQR_LSN_LOG, "session of %s expired (%u messages dropped)", s->client_id,
                  s->nmsgs);
        rows_delete(l, s->client_id, s->client_id_len);
        session_free(s, true);
    }
}

/* ---- start-up and shutdown -------------------------------------------------------- */

typedef struct {
    mqr_listener_t *l;
    uint64_t now_ms, wall_ms;
    char **stale; /* ids of sessions that expired while we were down */
    size_t nstale, stale_cap;
    size_t nsessions, nmsgs;
} load_ctx_t;

static int load_session(void *arg, const char *id, size_t len, int version, uint32_t expiry_s,
                        uint64_t disconnected_ms)
{
    load_ctx_t *x = arg;
    uint64_t left = NEVER;
    uint32_t stored_expiry = expiry_s;
    if (expiry_s == UINT32_MAX && version != MQR_MQTT_V5 && x->l->opts.v311_session_expiry_s)
        expiry_s = x->l->opts.v311_session_expiry_s; /* the listener's limit: see the top */
    if (expiry_s != UINT32_MAX) {
        uint64_t since = disconnected_ms ? disconnected_ms : x->wall_ms;
        uint64_t end = since + (uint64_t)expiry_s * 1000u;
        if (end <= x->wall_ms || expiry_s == 0) {
            if (x->nstale == x->stale_cap) {
                size_t cap = x->stale_cap ? x->stale_cap * 2 : 8;
                char **s = realloc(x->stale, cap * sizeof *s);
                if (!s) return MQR_ENOMEM;
                x->stale = s;
                x->stale_cap = cap;
            }
            char *copy = malloc(len + 1);
            if (!copy) return MQR_ENOMEM;
            memcpy(copy, id, len);
            copy[len] = '\0';
            x->stale[x->nstale++] = copy;
            return 0;
        }
        left = end - x->wall_ms;
    }
    /* already here: offline, or connected through another listener (a
     * listener started after the first one closed) */
    if (find_any(x->l, id, len) || mqr__listener_id_find(x->l, id, len)) return 0;
    mqr_client_session_t *s = session_new(x->l, id, len);
    if (!s) return MQR_ENOMEM;
    if (map_add(x->l, s) < 0) {
        session_free(s, false);
        return MQR_ENOMEM;
    }
    s->version = (uint8_t)(version == MQR_MQTT_V5 ? MQR_MQTT_V5 : MQR_MQTT_V311);
    s->expiry_s = stored_expiry;
    s->expires_ms = left == NEVER ? NEVER : x->now_ms + left;
    x->nsessions++;
    return 0;
}

static int load_sub(void *arg, const char *id, size_t len, const char *filter, size_t flen,
                    uint8_t qos, uint8_t flags, uint32_t sub_id)
{
    load_ctx_t *x = arg;
    mqr_client_session_t *s = find(x->l, id, len);
    if (!s) return 0;
    mqr_topic_filter_t tf;
    if (mqr__topic_filter_parse(filter, flen, &tf, NULL) < 0) return 0;
    if (s->nsubs == s->subs_cap) {
        uint32_t cap = s->subs_cap ? s->subs_cap * 2 : 8;
        mqr_trie_entry_t **a = realloc(s->subs, cap * sizeof *a);
        if (!a) return MQR_ENOMEM;
        s->subs = a;
        s->subs_cap = cap;
    }
    mqr_sub_opts_t o = {
        .qos = qos,
        .no_local = flags & 1,
        .retain_as_published = (flags & 2) != 0,
        .retain_handling = (uint8_t)((flags >> 2) & 3),
        .subscription_id = sub_id,
        .tag = s->nsubs,
    };
    mqr_router_t *router = x->l->all->router;
    mqr_trie_entry_t *ent = tf.group
                                ? mqr__trie_add_shared(&router->trie, tf.group, tf.group_len,
                                                       tf.filter, tf.filter_len, &s->sub, &o)
                                : mqr__router_add(router, tf.filter, tf.filter_len, &s->sub, &o);
    if (!ent) return MQR_ENOMEM;
    s->subs[s->nsubs++] = ent;
    return 0;
}

static int load_msg(void *arg, const char *id, size_t len, uint64_t seq, mqr_msg_t *msg,
                    uint8_t qos, bool retain, const uint32_t *sub_ids, uint32_t n_ids, uint16_t pid,
                    uint8_t state)
{
    load_ctx_t *x = arg;
    mqr_client_session_t *s = find(x->l, id, len);
    if (!s || (pid && state == MQR_LQ_FREE) || (!pid && state != MQR_LQ_FREE)) {
        mqr_msg_unref(msg);
        return 0;
    }
    if (state == MQR_LQ_WAIT_PUBCOMP) { /* released: only its id is left */
        mqr_msg_unref(msg);
        msg = NULL;
    }
    mqr_ldelivery_t d = {
        .msg = msg, .pid = pid, .qos = qos, .state = state, .retain = retain, .seq = seq};
    if (mqr__ldelivery_set_ids(&d, sub_ids, n_ids) < 0 || msgs_push(s, &d) < 0) {
        mqr__ldelivery_free(&d);
        return MQR_ENOMEM;
    }
    if (seq > s->next_seq) s->next_seq = seq;
    x->nmsgs++;
    return 0;
}

static int load_qos2(void *arg, const char *id, size_t len, uint16_t pid)
{
    load_ctx_t *x = arg;
    mqr_client_session_t *s = find(x->l, id, len);
    if (!s) return 0;
    if (!s->qos2_ids && !(s->qos2_ids = calloc(65536 / 64, sizeof *s->qos2_ids))) return MQR_ENOMEM;
    uint64_t bit = 1ull << (pid & 63);
    if (!(s->qos2_ids[pid >> 6] & bit)) s->qos2_count++;
    s->qos2_ids[pid >> 6] |= bit;
    return 0;
}

/* In flight first (in their order), then the queue: the order deliver.c
 * gives them back in. */
static int arrange(mqr_client_session_t *s)
{
    if (!s->nmsgs) return 0;
    mqr_ldelivery_t *d = malloc(s->nmsgs * sizeof *d);
    if (!d) return MQR_ENOMEM;
    uint32_t k = 0;
    for (uint32_t i = 0; i < s->nmsgs; i++)
        if (s->msgs[i].pid) {
            d[k++] = s->msgs[i];
            s->next_pid = s->msgs[i].pid;
        }
    for (uint32_t i = 0; i < s->nmsgs; i++)
        if (!s->msgs[i].pid) d[k++] = s->msgs[i];
    free(s->msgs);
    s->msgs = d;
    s->msgs_cap = s->nmsgs;
    return 0;
}

int mqr__client_session_start(mqr_listener_t *l)
{
    mqr_store_t *st = l->all->store;
    if (!st) return 0;
    int rc = mqr__store_client_sessions_open(st, &l->sstore);
    if (rc < 0) return rc;
    /* every listener writes its clients' sessions; the first to start loads
     * them all (a client may come back through any listener: they share
     * one client-id space), two loading them would deliver twice */
    if (l->all->sessions_owner) return 0;
    l->all->sessions_owner = l;
    load_ctx_t x = {.l = l, .now_ms = uv_now(l->all->loop), .wall_ms = mqr__now_ms()};
    static const mqr_store_client_sessions_load_t cb = {load_session, load_sub, load_msg,
                                                        load_qos2};
    rc = mqr__store_client_sessions_load(l->sstore, &cb, &x);
    for (size_t i = 0; rc == 0 && i < l->sessions_cap; i++)
        for (mqr_client_session_t *s = l->sessions[i]; rc == 0 && s; s = s->next)
            rc = arrange(s);
    for (size_t i = 0; i < x.nstale; i++) {
        if (rc == 0) rows_delete(l, x.stale[i], strlen(x.stale[i]));
        free(x.stale[i]);
    }
    free(x.stale);
    if (rc < 0) {
        MQR_LOG_E(MQR_LSN_LOG, "cannot load sessions: %s", mqr_strerror(rc));
        mqr__client_session_stop(l);
        return rc;
    }
    if (x.nsessions || x.nstale)
        MQR_LOG_I(MQR_LSN_LOG, "%zu persistent sessions loaded (%zu messages), %zu expired",
                  x.nsessions, x.nmsgs, x.nstale);
    return 0;
}

void mqr__client_session_stop(mqr_listener_t *l)
{
    for (size_t i = 0; i < l->sessions_cap; i++) {
        while (l->sessions[i]) {
            mqr_client_session_t *s = l->sessions[i];
            l->sessions[i] = s->next;
            session_free(s, false);
        }
    }
    free(l->sessions);
    l->sessions = NULL;
    l->sessions_cap = l->sessions_count = 0;
    l->stats.sessions_offline = 0;
    mqr__store_client_sessions_close(l->sstore);
    l->sstore = NULL;
    if (l->all->sessions_owner == l) l->all->sessions_owner = NULL;
}
