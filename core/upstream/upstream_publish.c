/*
 * upstream_publish.c — what the loop sends to a broker: subscriptions
 * (counted per filter, restored after every connect, with their v5
 * options), publishes (buffered by the transport while disconnected, in
 * early[] while the session is dormant), and the waiters for a broker's
 * answer (mqr__upstream_*_cb), answered on the loop through the session's
 * queue. What goes to the broker goes through the transport (u->tp).
 *
 * Loop thread. Must not: call the transport without a client (dormant or
 * rebuilding: publishes wait in early[]), or with the session's lock held.
 */
#include "upstream_int.h"

#include "topic.h"
#include "topic_map.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int mqr__up_send_subscribe(mqr_upstream_t *u, up_sub_t *s)
{
    /* v5: re-subscribing after a reconnect must not replay retained
     * messages for a subscription the broker kept. */
    up_subflags_t f = {.rh = 1};
    up_subopt_t *o = subopt_find(u, s->filter);
    if (o) {
        f.no_local = o->f.no_local;
        f.rap = o->f.rap;
        if (o->f.rh >= 0) f.rh = o->f.rh;
    }
    bool oom;
    char *remote = remote_name(u, s->filter, &oom);
    int rc = oom ? MQR_ENOMEM : u->tp->subscribe(u, s, remote ? remote : s->filter, &f);
    free(remote);
    if (rc == 0) {
        s->pending = true;
    } else if (rc != MQR_ENOTCONN) {
        /* ENOTCONN: the loss is queued for us; we subscribe again on
         * reconnect. */
        MQR_LOG_W("upstream", "session '%s': cannot subscribe to '%s': %s", u->name, s->filter,
                  mqr_strerror(rc));
    }
    return rc;
}

void mqr__up_pub_done(mqr_upstream_t *u, up_event_t *ev)
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
void mqr__up_answer_sub_waiters(mqr_upstream_t *u, up_sub_t *s, int status, int reason)
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

/* Answers (and frees) a waited-for publish that never reached the transport. */
void mqr__up_pub_answer(up_pub_t *p, int status)
{
    for (up_pub_t **pp = &p->u->pubs; *pp; pp = &(*pp)->next) {
        if (*pp != p) continue;
        *pp = p->next;
        if (p->done) p->done(p->arg, status, 0);
        free(p);
        return;
    }
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
            if (u->state == MQR_UPSTREAM_CONNECTED) mqr__up_send_subscribe(u, s);
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
    if (u->state == MQR_UPSTREAM_CONNECTED) mqr__up_send_subscribe(u, s);
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
    mqr__up_answer_sub_waiters(u, s, MQR_ECLOSED, 0);
    if (s->awaiting) u->subs_awaiting--;
    if (u->state == MQR_UPSTREAM_CONNECTED) {
        /* If this fails the broker keeps sending until the next clean
         * start; such messages simply find no route. */
        bool oom;
        char *remote = remote_name(u, s->filter, &oom);
        int rc = oom ? MQR_ENOMEM : u->tp->unsubscribe(u, remote ? remote : s->filter, NULL);
        free(remote);
        if (rc < 0 && rc != MQR_ENOTCONN)
            MQR_LOG_W("upstream", "session '%s': cannot unsubscribe from '%s': %s", u->name,
                      s->filter, mqr_strerror(rc));
    }
    free(s);
    mqr__up_check_ready(u);
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
    o->f.no_local = no_local;
    o->f.rap = retain_as_published;
    o->f.rh = retain_handling;
    return 0;
}

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
    up_event_t *ev = mqr__up_ev_new(EV_PUB_DONE, 0, NULL);
    if (!ev) return MQR_ENOMEM;
    ev->code = code;
    ev->reason = reason;
    ev->ptr = p;
    mqr__up_ev_push(p->u, ev);
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
        rc = waiter_answer_later(p, s->granted < 0x80 ? 0 : MQR_EUPSTREAM, s->granted);
        if (rc < 0) {
            waiter_drop(u, p);
            mqr__upstream_unsubscribe(u, filter);
        }
        return rc;
    }
    p->sub = s;
    return 0;
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
    if (u->state != MQR_UPSTREAM_CONNECTED || !u->has_client || u->rebuilding) return MQR_ENOTCONN;
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
        rc = oom ? MQR_ENOMEM : u->tp->unsubscribe(u, remote ? remote : filter, p);
        free(remote);
        if (rc == 0) {
            /* gone from the session's list now: not restored after a reconnect */
            up_sub_t **pp = &u->subs;
            while (*pp != s)
                pp = &(*pp)->next;
            *pp = s->next;
            if (s->awaiting) u->subs_awaiting--;
            mqr__up_answer_sub_waiters(u, s, MQR_ECLOSED, 0);
            free(s);
            mqr__up_check_ready(u);
        }
    }
    if (rc < 0) waiter_drop(u, p);
    return rc;
}

int mqr__upstream_ping_cb(mqr_upstream_t *u, mqr_upstream_done_fn done, void *arg)
{
    if (!done) return MQR_EINVAL;
    if (u->closing) return MQR_ECLOSED;
    if (u->state != MQR_UPSTREAM_CONNECTED || !u->has_client || u->rebuilding) return MQR_ENOTCONN;
    up_pub_t *p = waiter_new(u, done, arg);
    if (!p) return MQR_ENOMEM;
    int rc = u->tp->ping(u, p);
    if (rc < 0) waiter_drop(u, p);
    return rc;
}

/* A route forwarding a message here while it is routed: when the session
 * could not keep it (no room in its buffer, no memory, a store error) the
 * publisher is told through the publish context (router.h), like a full
 * queue tells it; when it wrote it to the engine's store, the publisher's
 * acknowledgement waits for the commit. Other failures are the caller's
 * mistakes (bad QoS, a closed session) and its own business. Outside
 * routing the note changes nothing. */
static int note_result(mqr_upstream_t *u, int rc)
{
    if (rc == UP_PUB_STORED) {
        mqr__router_note(u->all->router, MQR_DELIVER_STORED);
        return 0;
    }
    if (rc == MQR_EFULL || rc == MQR_ENOMEM || rc == MQR_ESTORE)
        mqr__router_note(u->all->router, rc);
    return rc;
}

int mqr__upstream_publish(mqr_upstream_t *u, const mqr_msg_t *msg)
{
    return note_result(u, mqr__up_publish(u, msg, NULL));
}

int mqr__upstream_publish_cb(mqr_upstream_t *u, const mqr_msg_t *msg, mqr_upstream_done_fn done,
                             void *arg)
{
    if (!msg || !done) return MQR_EINVAL;
    if (u->closing) return MQR_ECLOSED;
    up_pub_t *p = calloc(1, sizeof *p);
    if (!p) return note_result(u, MQR_ENOMEM);
    p->u = u;
    p->done = done;
    p->arg = arg;
    /* Listed before sending: the transport may answer on its thread at once. */
    p->next = u->pubs;
    u->pubs = p;
    int rc = mqr__up_publish(u, msg, p);
    if (rc == UP_PUB_EXPIRED) rc = MQR_EINVAL; /* nothing will answer */
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

/* Keeps msg for the client a dormant session will create (see struct mqr_upstream),
 * within the same bound as the transport's buffer. */
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
    /* counted as sent when handed to the transport */
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

/* Backpressure. While connected, a publisher whose message leaves too much
 * waiting for the broker (half of max_buffered QoS 1/2 publishes beyond
 * the window, or half of max_buffered_bytes the socket has not taken) is
 * paused (holds.h) rather than refused, and its message is taken; `drain`
 * lets it go when the backlog is down to a quarter, or the connection is
 * gone (an outage is not a burst: publishes are then buffered and refused
 * past max_buffered, as before). The bounds themselves stay: what comes
 * from an ingress that cannot wait (Lua timers, C callers), or what paused
 * publishers had sent already beyond them, is refused there (MQR_EFULL). */
static void on_drain(uv_check_t *h)
{
    mqr_upstream_t *u = h->data;
    size_t bytes = 0, waiting = 0;
    bool up = u->state == MQR_UPSTREAM_CONNECTED && !u->closing && u->has_client && !u->rebuilding;
    if (up) waiting = u->tp->backlog(u, &bytes);
    if (up && (waiting > (size_t)u->max_buffered / 4 || bytes > u->max_buffered_bytes / 4)) {
        uint64_t now = uv_now(u->all->loop);
        if (waiting + bytes < u->hold_backlog) {
            u->hold_backlog = waiting + bytes;
            u->hold_progress_ms = now;
        }
        if (now - u->hold_progress_ms < UP_HOLD_STUCK_MS) return;
        /* a broker that takes nothing while the connection stays up (or a
         * count that went wrong): publishers are not held for ever; past
         * the bounds they get EFULL, as without backpressure */
        MQR_LOG_W("upstream",
                  "session '%s': its backlog has not gone down for %d s: letting %u paused "
                  "publisher(s) go",
                  u->name, UP_HOLD_STUCK_MS / 1000, u->holds.n);
    }
    mqr__up_release_publishers(u);
}

void mqr__up_release_publishers(mqr_upstream_t *u)
{
    if (!u->holds.n) return;
    uv_check_stop(&u->drain);
    mqr__holds_release(&u->holds);
}

static void push_back(mqr_upstream_t *u)
{
    if (!u->tp->backlog) return;
    size_t bytes = 0;
    size_t waiting = u->tp->backlog(u, &bytes);
    if (waiting < (size_t)u->max_buffered / 2 && bytes < u->max_buffered_bytes / 2) return;
    mqr_source_t *s = mqr__router_source(u->all->router);
    if (!s || mqr__holds_add(&u->holds, s) != 1) return;
    u->stats.publishers_paused++;
    if (u->holds.n == 1) {
        u->hold_backlog = waiting + bytes;
        u->hold_progress_ms = uv_now(u->all->loop);
        uv_check_start(&u->drain, on_drain);
    }
}

/* Returns 0, 1 when the message expired (dropped), or < 0. */
int mqr__up_publish(mqr_upstream_t *u, const mqr_msg_t *msg, up_pub_t *p)
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
            return p ? UP_PUB_EXPIRED : 0;
        }
        expiry = msg->expiry_s - (uint32_t)age_s;
    }
    if (!u->has_client || u->rebuilding) return publish_early(u, msg, p);
    if (u->state == MQR_UPSTREAM_CONNECTED) push_back(u);
    bool oom;
    char *remote = remote_name(u, msg->topic, &oom);
    int rc = oom ? MQR_ENOMEM : u->tp->publish(u, remote ? remote : msg->topic, msg, expiry, p);
    free(remote);
    bool stored = rc == UP_PUB_STORED;
    if (stored) rc = 0;
    if (rc == 0 && u->state != MQR_UPSTREAM_CONNECTED &&
        ++u->buffered > (uint64_t)u->max_buffered && u->drop_oldest) {
        /* the transport made room by dropping the oldest buffered publish */
        u->stats.dropped_oldest++;
        warn_full(u, "dropping the oldest");
    }
    if (rc == 0) {
        u->stats.sent++;
        u->stats.bytes_sent += msg->payload_len;
        u->last_message_at_ms = mqr__up_wall_ms();
    } else if (rc == MQR_EFULL) {
        u->stats.full++;
        warn_full(u, "refusing new publishes (EFULL)");
    }
    return stored ? UP_PUB_STORED : rc;
}
