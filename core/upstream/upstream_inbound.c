/*
 * upstream_inbound.c — messages from the brokers, on the loop: the
 * session's event queue, which its transport fills from any thread
 * (mqr__up_ev_push; Paho's threads: upstream_paho.c) and the loop drains,
 * routing each message into the
 * engine under its local topic, reading a persistent session's inbox back
 * (what a crash left unrouted, and spilled messages: spill/refill), and
 * warning about messages acknowledged to a broker and then lost.
 *
 * Loop thread, but for mqr__up_ev_new and mqr__up_ev_push (any thread).
 * Must not: call the transport (it takes the session's lock), or decide a
 * state change: every other event goes to mqr__up_handle_event.
 */
#include "upstream_int.h"

#include "topic.h"
#include "store.h"
#include "topic_map.h"

#include <stdlib.h>
#include <string.h>

/* Spilled messages read back from the inbox per loop turn, at most. */
#define UP_REFILL_BATCH 1000

/* Warnings about messages acknowledged and then dropped: the first at
 * once, then at most one per period with the running count. A session
 * without a stored copy acknowledges every QoS 1/2 message before routing
 * it: that is its configuration, said once and then once a minute. */
#define UP_DROP_WARN_MS 1000
#define UP_UNPROTECTED_WARN_MS 60000

/* ---- the queue: pushed from any thread ---------------------------------- */

up_event_t *mqr__up_ev_new(up_ev_type_t type, size_t extra, const char *text)
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

void mqr__up_ev_push(mqr_upstream_t *u, up_event_t *ev)
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
        /* acknowledged by the transport with no inbox row behind it (Paho's
         * on_message); one with an ack_id is acknowledged after routing */
        if (ev->qos > 0 && !ev->inbox_seq && !ev->ack_id) u->unprotected++;
    }
    uv_mutex_unlock(&u->lock);
    uv_async_send(&u->async);
}

/* ---- the loop's side --------------------------------------------------- */

static bool route_message(mqr_upstream_t *u, up_event_t *ev);
static bool route_named(mqr_upstream_t *u, up_event_t *ev, const char *topic, size_t topic_len);

/* ---- acknowledgements after the commit ---------------------------------- */

/* The ack ids of one loop turn that wait for the store's commit. It
 * outlives a session freed before the commit (u NULL then). */
struct up_acks {
    mqr_upstream_t *u;
    size_t n, cap;
    uint32_t *ids;
};

static void acks_committed(void *arg, int status)
{
    struct up_acks *b = arg;
    mqr_upstream_t *u = b->u;
    if (u) {
        u->acks = NULL;
        if (status < 0)
            MQR_LOG_W("upstream",
                      "session '%s': %zu received message(s) left unacknowledged: the store lost "
                      "what routing wrote (%s); the broker sends them again",
                      u->name, b->n, mqr_strerror(status));
        else if (!u->closing && u->has_client && !u->rebuilding)
            for (size_t i = 0; i < b->n; i++)
                u->tp->ack(u, b->ids[i]);
    }
    free(b->ids);
    free(b);
}

/* Acknowledges after the commit of this turn, and every later ack of the
 * turn with it (acks go out in the order the messages came, 3.1.1 §4.6).
 * False when that cannot be arranged (no memory, the store closing). */
static bool ack_after_commit(mqr_upstream_t *u, uint32_t ack_id)
{
    struct up_acks *b = u->acks;
    if (!b) {
        if (!(b = calloc(1, sizeof *b))) return false;
        if (mqr__store_after_commit(mqr__engine_store(u->e), acks_committed, b) < 0) {
            free(b);
            return false;
        }
        b->u = u;
        u->acks = b;
    }
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 16;
        uint32_t *v = realloc(b->ids, cap * sizeof *v);
        if (!v) return false; /* acked at once: out of order, but not lost */
        b->ids = v;
        b->cap = cap;
    }
    b->ids[b->n++] = ack_id;
    return true;
}

void mqr__up_acks_detach(mqr_upstream_t *u)
{
    if (u->acks) u->acks->u = NULL;
    u->acks = NULL;
}

/* Routes a message event, then forgets its inbox copy: routed (or refused
 * for good) is done; only then does a transport that waits for it (ack_id)
 * acknowledge the message to the broker — after the store's commit when
 * routing wrote it there (a durable queue, a persistent client session, a
 * persistent upstream session). */
void mqr__up_deliver(mqr_upstream_t *u, up_event_t *ev)
{
    bool stored = route_message(u, ev);
    if (ev->inbox_seq) mqr__upstream_inbox_delete(u->all->persist, u->name, ev->inbox_seq);
    if (!ev->ack_id || !u->tp->ack || !u->has_client || u->rebuilding) return;
    if ((stored || u->acks) && ack_after_commit(u, ev->ack_id)) return;
    u->tp->ack(u, ev->ack_id);
}

/* True when routing wrote the message to the engine's store. */
static bool route_message(mqr_upstream_t *u, up_event_t *ev)
{
    u->stats.received++;
    u->stats.bytes_received += ev->payload_len;
    u->last_message_at_ms = mqr__up_wall_ms();
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
        return false;
    }
    bool stored = route_named(u, ev, topic, topic_len);
    free(mapped);
    return stored;
}

/* Routes ev under the (rewritten) local topic; true when routing wrote it
 * to the engine's store. */
static bool route_named(mqr_upstream_t *u, up_event_t *ev, const char *topic, size_t topic_len)
{
    int rc = mqr__topic_name_validate(topic, topic_len);
    if (rc < 0) {
        u->stats.refused++;
        MQR_LOG_W("upstream", "session '%s': dropped a message with an invalid topic: %s", u->name,
                  mqr_strerror(rc));
        return false;
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
        return false;
    }
    /* Paho has acknowledged it already (QoS 1/2): what the subscribers
     * made of it cannot change that, but a subscriber that had to keep it
     * and could not (a full queue, a store error) is a loss, so it is
     * counted and warned about here, not only by that subscriber. */
    mqr_pubctx_t pc;
    rc = mqr__engine_publish_ctx(u->e, m, &pc, NULL);
    if (rc < 0) {
        u->stats.refused++;
        MQR_LOG_D("upstream", "session '%s': message on '%s' not routed: %s", u->name, topic,
                  mqr_strerror(rc));
    } else if (pc.no_room || pc.failed) {
        u->stats.not_kept++;
        mqr__up_report_losses(u);
    }
    mqr_msg_unref(m);
    return rc >= 0 && pc.stored > 0;
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
void mqr__up_report_losses(mqr_upstream_t *u)
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
    mqr__up_report_losses(t->data);
}

/* A message event made from an inbox row (a copy), NULL without memory. */
static up_event_t *inbox_message(const mqr_upstream_inbox_rec_t *r)
{
    up_event_t *ev = mqr__up_ev_new(EV_MESSAGE, r->data_len, NULL);
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
    mqr__up_ev_push(f->u, ev); /* wakes the loop: the next batch comes on the next turn */
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
    int rc = mqr__upstream_inbox_load_from(u->all->persist, u->name, next, batch, refill_event, &f);
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
uint64_t mqr__up_count_unrouted(const mqr_upstream_t *u, const up_event_t *ev)
{
    uint64_t n = 0;
    for (; ev; ev = ev->next)
        n += ev->type == EV_MESSAGE && (!ev->inbox_seq || u->discard_records);
    return n;
}

void mqr__up_warn_unrouted(mqr_upstream_t *u, uint64_t n)
{
    if (!n) return;
    MQR_LOG_W("upstream",
              "session '%s' closed with %llu received message(s) not routed yet: dropped", u->name,
              (unsigned long long)n);
}

void mqr__up_on_async(uv_async_t *h)
{
    mqr_upstream_t *u = h->data;
    up_event_t *ev = take_events(u);
    mqr__up_report_losses(u);
    while (ev && !u->closing) {
        up_event_t *next = ev->next;
        mqr__up_handle_event(u, ev);
        free(ev);
        ev = next;
    }
    /* Routing or the observer may have closed the session: drop the rest. */
    mqr__up_warn_unrouted(u, mqr__up_count_unrouted(u, ev));
    while (ev) {
        up_event_t *next = ev->next;
        free(ev);
        ev = next;
    }
    if (u->persistent && !u->closing) refill(u);
}

static int inbox_event(void *arg, const mqr_upstream_inbox_rec_t *r)
{
    mqr_upstream_t *u = arg;
    up_event_t *ev = inbox_message(r);
    if (!ev) return MQR_ENOMEM;
    if (r->seq > u->inbox_seq) u->inbox_seq = r->seq;
    mqr__up_ev_push(u, ev);
    return 0;
}

/* Queues for routing what arrived before a crash and was never routed; the
 * loop routes it once the script that created the session has loaded. Runs
 * before the session's first client can call on_message (upstream_paho.c),
 * so nothing else touches inbox_seq. */
void mqr__up_inbox_load(mqr_upstream_t *u)
{
    u->inbox_loaded = true;
    size_t before = u->pending_msgs;
    int rc = mqr__upstream_inbox_load(u->all->persist, u->name, inbox_event, u);
    if (rc < 0)
        MQR_LOG_E("upstream", "session '%s': cannot read its inbox: %s", u->name, mqr_strerror(rc));
    if (u->pending_msgs > before)
        MQR_LOG_I("upstream",
                  "session '%s': %zu message(s) received before the last stop and not routed "
                  "are routed now",
                  u->name, u->pending_msgs - before);
}
