/*
 * upstream_status.c — what sessions report: a session's status and
 * counters (docs/upstream.md maps them to metrics), its subscriptions,
 * the open sessions of an engine and their totals.
 *
 * Loop thread. Must not: change a session (the test hook
 * mqr__upstream_set_inbound_limit aside).
 */
#include "upstream_int.h"

#include <string.h>

void mqr__upstream_status(mqr_upstream_t *u, mqr_upstream_status_t *o)
{
    memset(o, 0, sizeof *o);
    o->state = u->state;
    o->ready = u->ready;
    o->clean = u->clean_start != 0;
    o->persistent = u->persistent;
    if (u->persistent) {
        int64_t n = mqr__up_records_count(u);
        o->stored = n > 0 ? (uint64_t)n : 0;
    }
    o->auto_reconnect = u->state != MQR_UPSTREAM_FAILED && !u->closing;
    o->broker = u->broker[0] ? u->broker : u->uri;
    o->transport = u->tp->name;
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
    if (!u->closing && u->has_client && !u->rebuilding) o->inflight = u->tp->inflight(u);
    o->buffered = (u->state == MQR_UPSTREAM_CONNECTED ? 0 : u->buffered) + u->n_early;
    o->messages_sent = u->stats.sent;
    o->bytes_sent = u->stats.bytes_sent;
    o->messages_received = u->stats.received;
    o->bytes_received = u->stats.bytes_received;
    o->messages_refused = u->stats.refused;
    o->publish_full = u->stats.full;
    o->publish_dropped = u->stats.dropped_oldest;
    o->publishers_paused = u->stats.publishers_paused;
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
    mqr_upstream_t *u = mqr__engine_upstreams(e)->first;
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
