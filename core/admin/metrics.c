/*
 * metrics.c — GET /metrics: every figure of the engine in the Prometheus
 * text exposition format (version 0.0.4).
 *
 * Names: the listener's and the registry's as mqtt_*, the upstream sessions' as docs/upstream.md
 * maps them (label session), queues, rule routes (with a handler latency
 * histogram) and the engine as mqrouter_*, the process as process_*.
 * Samples of one family must be contiguous, so labelled families are built
 * in one buffer each during a single pass over the sessions, queues and
 * routes, then appended in order. Read-only: a scrape changes nothing.
 */
#include "admin_int.h"

#include "listener.h"
#include "queue.h"
#include "registry.h"
#include "sink.h"
#include "upstream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* Appends " <v>\n": the hot path of a scrape, so no printf. */
static void value_u64(mqr_buf_t *b, uint64_t v)
{
    char tmp[24];
    char *p = tmp + sizeof tmp;
    *--p = '\n';
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    *--p = ' ';
    mqr__buf_add(b, p, (size_t)(tmp + sizeof tmp - p));
}

static void head(mqr_buf_t *b, const char *name, const char *type, const char *help)
{
    mqr__buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void one(mqr_buf_t *b, const char *name, const char *type, const char *help, double v)
{
    head(b, name, type, help);
    mqr__buf_printf(b, "%s %.17g\n", name, v);
}

static void one_u(mqr_buf_t *b, const char *name, const char *type, const char *help, uint64_t v)
{
    head(b, name, type, help);
    mqr__buf_str(b, name);
    value_u64(b, v);
}

/* Appends v as a label value: backslash, double quote and newline escaped. */
static void label_value(mqr_buf_t *b, const char *v)
{
    const char *run = v;
    for (const char *p = v; *p; p++) {
        const char *esc = *p == '\\' ? "\\\\" : *p == '"' ? "\\\"" : *p == '\n' ? "\\n" : NULL;
        if (!esc) continue;
        mqr__buf_add(b, run, (size_t)(p - run));
        mqr__buf_str(b, esc);
        run = p + 1;
    }
    mqr__buf_str(b, run);
}

/* name{key="value"[,extra]} v */
static void sample(mqr_buf_t *b, const char *name, const char *key, const char *value,
                   const char *extra, uint64_t v)
{
    mqr__buf_str(b, name);
    mqr__buf_str(b, "{");
    mqr__buf_str(b, key);
    mqr__buf_str(b, "=\"");
    label_value(b, value);
    mqr__buf_str(b, "\"");
    if (extra) mqr__buf_str(b, extra);
    mqr__buf_str(b, "}");
    value_u64(b, v);
}

/* A family of labelled samples built during a pass. */
typedef struct {
    const char *name, *type, *help;
    mqr_buf_t b;
} family_t;
#define F(n, t, h)                                                                                 \
    {                                                                                              \
        .name = n, .type = t, .help = h                                                            \
    }

static void families_flush(mqr_buf_t *out, family_t *f, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        head(out, f[i].name, f[i].type, f[i].help);
        if (f[i].b.failed) out->failed = true;
        if (f[i].b.len) mqr__buf_add(out, f[i].b.p, f[i].b.len);
        free(f[i].b.p);
        f[i].b = (mqr_buf_t){0};
    }
}

/* ---- listener ---- */

/* A counter with one series per MQTT packet type the names give. */
static void by_type(mqr_buf_t *b, const char *name, const char *help, const char *const types[16],
                    const uint64_t counts[16])
{
    head(b, name, "counter", help);
    for (int t = 0; t < 16; t++) {
        if (!types[t]) continue;
        mqr__buf_printf(b, "%s{type=\"%s\"}", name, types[t]);
        value_u64(b, counts[t]);
    }
}

static void listener_metrics(mqr_engine_t *e, mqr_buf_t *b)
{
    mqr_listener_totals_t tot;
    mqr__listener_totals(mqr__engine_listeners(e), &tot);
    mqr_listener_stats_t s = tot.stats;
    s.dropped += s.dropped_too_large;
    uint64_t subs = tot.subscriptions, inflight = tot.inflight, queued = tot.queued;
    one_u(b, "mqtt_clients_connected", "gauge", "Listener clients past a successful CONNECT.",
          s.clients_current);
    one_u(b, "mqtt_connections_current", "gauge", "Open listener sockets.", s.connections_current);
    one_u(b, "mqtt_connections_total", "counter", "Listener sockets accepted.",
          s.connections_total);
    one_u(b, "mqtt_connects_refused_total", "counter", "CONNECTs refused.", s.connects_refused);
    one_u(b, "mqtt_auth_failures_total", "counter", "CONNECTs refused by authentication.",
          s.auth_failures);
    /* the packet types a client may send, and a server, by their number */
    static const char *const in_types[16] = {
        [1] = "connect",  [3] = "publish",     [4] = "puback",    [5] = "pubrec",
        [6] = "pubrel",   [7] = "pubcomp",     [8] = "subscribe", [10] = "unsubscribe",
        [12] = "pingreq", [14] = "disconnect", [15] = "auth"};
    static const char *const out_types[16] = {
        [2] = "connack",   [3] = "publish",     [4] = "puback", [5] = "pubrec",
        [6] = "pubrel",    [7] = "pubcomp",     [9] = "suback", [11] = "unsuback",
        [13] = "pingresp", [14] = "disconnect", [15] = "auth"};
    by_type(b, "mqtt_messages_received_total",
            "Packets received from listener clients, by MQTT packet type.", in_types, s.packets_in);
    by_type(b, "mqtt_messages_sent_total", "Packets sent to listener clients, by MQTT packet type.",
            out_types, s.packets_out);
    one_u(b, "mqtt_messages_dropped_total", "counter",
          "Deliveries to listener clients dropped (buffer or queue full, too large).", s.dropped);
    /* QoS 1/2 PUBLISHes not acknowledged as taken (docs/listener.md) */
    head(b, "mqtt_publishes_refused_total", "counter",
         "QoS 1/2 PUBLISHes refused unacknowledged (v5 reason code, 3.1.1 connection closed): "
         "no room in a queue or session buffer, or routing or a store write failed.");
    mqr__buf_printf(b, "mqtt_publishes_refused_total{reason=\"no_room\"} %llu\n",
                    (unsigned long long)s.refused_no_room);
    mqr__buf_printf(b, "mqtt_publishes_refused_total{reason=\"failed\"} %llu\n",
                    (unsigned long long)s.refused_failed);
    one_u(b, "mqtt_persistent_session_rows_failed_total", "counter",
          "Persistent-session rows the store refused (subscriptions, messages, state).",
          s.session_rows_failed);
    one_u(b, "mqtt_bytes_received_total", "counter", "Bytes read from listener sockets.",
          s.bytes_in);
    one_u(b, "mqtt_bytes_sent_total", "counter", "Bytes written to listener sockets.", s.bytes_out);
    one_u(b, "mqtt_malformed_packets_total", "counter", "Connections closed for a bad packet.",
          s.malformed);
    one_u(b, "mqtt_keepalive_timeouts_total", "counter", "Connections closed for silence.",
          s.keepalive_timeouts);
    one_u(b, "mqtt_subscriptions", "gauge", "Subscriptions of connected listener clients.", subs);
    one_u(b, "mqtt_retained_messages", "gauge",
          "Retained messages held (the engine's $SYS topics not counted).",
          mqr__retain_user_count(mqr__engine_retain(e)));
    one_u(b, "mqtt_inflight_messages", "gauge",
          "Outbound QoS 1/2 messages sent to listener clients and not acknowledged.", inflight);
    one_u(b, "mqtt_queued_messages", "gauge",
          "Outbound QoS 1/2 messages waiting behind full in-flight windows.", queued);
    one_u(b, "mqtt_persistent_sessions_offline", "gauge",
          "Persistent sessions whose client is away.", s.sessions_offline);
    head(b, "mqtt_persistent_sessions_expired_total", "counter",
         "Persistent sessions ended by their expiry, by protocol (MQTT 5 Session Expiry, or the "
         "listener's v311_session_expiry_s).");
    mqr__buf_printf(b, "mqtt_persistent_sessions_expired_total{protocol=\"5\"} %llu\n",
                    (unsigned long long)(s.sessions_expired - s.sessions_expired_v311));
    mqr__buf_printf(b, "mqtt_persistent_sessions_expired_total{protocol=\"3.1.1\"} %llu\n",
                    (unsigned long long)s.sessions_expired_v311);
}

/* ---- upstream sessions (docs/upstream.md, "Metrics") ---- */

enum {
    S_CONNECTED,
    S_READY,
    S_FAILED,
    S_CONNECTS,
    S_RECONNECTS,
    S_CONNECT_FAILURES,
    S_SENT,
    S_RECEIVED,
    S_BYTES_SENT,
    S_BYTES_RECEIVED,
    S_REFUSED,
    S_DROPPED,
    S_UNPROTECTED,
    S_SPILLED,
    S_NOT_KEPT,
    S_PUBLISHERS_PAUSED,
    S_PUBLISH_REFUSED,
    S_PUBLISH_FAILED,
    S_DELIVERED,
    S_INFLIGHT,
    S_BUFFERED,
    S_SUBS,
    S_SINCE,
    S_LAST,
    S_N
};

static void session_metrics(mqr_engine_t *e, mqr_buf_t *out)
{
    family_t f[S_N] = {
        F("mqrouter_upstream_session_connected", "gauge", "1 when the session is connected."),
        F("mqrouter_upstream_session_ready", "gauge", "1 when connected and subscribed."),
        F("mqrouter_upstream_session_failed", "gauge", "1 when the session gave up reconnecting."),
        F("mqrouter_upstream_session_connects_total", "counter", "Successful connects."),
        F("mqrouter_upstream_session_reconnects_total", "counter",
          "Connection attempts after the first."),
        F("mqrouter_upstream_session_connect_failures_total", "counter",
          "Failed connection attempts."),
        F("mqrouter_upstream_session_messages_sent_total", "counter",
          "Messages published to the broker."),
        F("mqrouter_upstream_session_messages_received_total", "counter",
          "Messages received from the broker."),
        F("mqrouter_upstream_session_bytes_sent_total", "counter", "Payload bytes published."),
        F("mqrouter_upstream_session_bytes_received_total", "counter", "Payload bytes received."),
        F("mqrouter_upstream_session_messages_refused_total", "counter",
          "Messages received but not routed."),
        F("mqrouter_upstream_session_messages_dropped_total", "counter",
          "Messages received and acknowledged, then dropped: the incoming queue was full."),
        F("mqrouter_upstream_session_messages_unprotected_total", "counter",
          "QoS 1/2 messages acknowledged before routing with no stored copy (persist = false)."),
        F("mqrouter_upstream_session_messages_spilled_total", "counter",
          "QoS 1/2 messages of a persistent session routed from its inbox after a full queue."),
        F("mqrouter_upstream_session_messages_not_kept_total", "counter",
          "Messages routed that a subscriber which had to keep them could not."),
        F("mqrouter_upstream_session_publishers_paused_total", "counter",
          "Times a publisher's input was paused because too much waited for the broker."),
        F("mqrouter_upstream_session_publish_refused_total", "counter",
          "Publishes refused, by reason."),
        F("mqrouter_upstream_session_publish_failed_total", "counter",
          "Waited-for publishes the broker refused."),
        F("mqrouter_upstream_session_delivered_total", "counter",
          "QoS 1/2 publishes the broker completed."),
        F("mqrouter_upstream_session_inflight_messages", "gauge", "Publishes not completed."),
        F("mqrouter_upstream_session_buffered_messages", "gauge",
          "Publishes accepted while disconnected, since the last connect."),
        F("mqrouter_upstream_session_subscriptions", "gauge", "Subscriptions of the session."),
        F("mqrouter_upstream_session_connected_since_seconds", "gauge",
          "When the current connection started (Unix time), 0 when not connected."),
        F("mqrouter_upstream_session_last_message_timestamp_seconds", "gauge",
          "When a message was last sent or received (Unix time)."),
    };
    for (mqr_upstream_t *u = mqr__upstream_first(e); u; u = mqr__upstream_next(u)) {
        mqr_upstream_status_t st;
        mqr__upstream_status(u, &st);
        const char *n = mqr__upstream_name(u);
        sample(&f[S_CONNECTED].b, f[S_CONNECTED].name, "session", n, NULL,
               st.state == MQR_UPSTREAM_CONNECTED);
        sample(&f[S_READY].b, f[S_READY].name, "session", n, NULL, st.ready);
        sample(&f[S_FAILED].b, f[S_FAILED].name, "session", n, NULL,
               st.state == MQR_UPSTREAM_FAILED);
#define S(k, v) sample(&f[k].b, f[k].name, "session", n, NULL, v)
        S(S_CONNECTS, st.connects);
        S(S_RECONNECTS, st.reconnects);
        S(S_CONNECT_FAILURES, st.connect_failures);
        S(S_SENT, st.messages_sent);
        S(S_RECEIVED, st.messages_received);
        S(S_BYTES_SENT, st.bytes_sent);
        S(S_BYTES_RECEIVED, st.bytes_received);
        S(S_REFUSED, st.messages_refused);
        S(S_DROPPED, st.messages_dropped);
        S(S_UNPROTECTED, st.messages_unprotected);
        S(S_SPILLED, st.messages_spilled);
        S(S_NOT_KEPT, st.messages_not_kept);
        S(S_PUBLISHERS_PAUSED, st.publishers_paused);
        sample(&f[S_PUBLISH_REFUSED].b, f[S_PUBLISH_REFUSED].name, "session", n, ",reason=\"full\"",
               st.publish_full);
        sample(&f[S_PUBLISH_REFUSED].b, f[S_PUBLISH_REFUSED].name, "session", n,
               ",reason=\"expired\"", st.publish_expired);
        S(S_PUBLISH_FAILED, st.publish_failed);
        S(S_DELIVERED, st.delivered);
        S(S_INFLIGHT, st.inflight);
        S(S_BUFFERED, st.buffered);
        S(S_SUBS, st.subscriptions);
        S(S_SINCE, st.connected_since_ms / 1000u);
        S(S_LAST, st.last_message_at_ms / 1000u);
#undef S
    }
    families_flush(out, f, S_N);
    mqr_upstream_manager_stats_t ms;
    mqr__upstream_manager_stats(e, &ms);
    one_u(out, "mqrouter_upstream_sessions", "gauge", "Upstream sessions open.", ms.sessions);
    one_u(out, "mqrouter_upstream_sessions_connected", "gauge", "Upstream sessions connected.",
          ms.connected);
    one_u(out, "mqrouter_upstream_sessions_ready", "gauge", "Upstream sessions ready.", ms.ready);
    one_u(out, "mqrouter_upstream_sessions_failed", "gauge", "Upstream sessions that gave up.",
          ms.failed);
}

/* ---- queues ---- */

enum {
    Q_DEPTH,
    Q_MSGS,
    Q_BYTES,
    Q_CONSUMERS,
    Q_PUBLISHED,
    Q_DELIVERED,
    Q_ACKED,
    Q_NACKED,
    Q_REJECTED,
    Q_REDELIVERED,
    Q_EXPIRED,
    Q_DROPPED,
    Q_DEAD_LETTERED,
    Q_REFUSED,
    Q_N
};

static int queue_sample(void *arg, mqr_queue_t *q)
{
    family_t *f = arg;
    mqr_queue_stats_t st;
    if (mqr__queue_stats(q, &st) < 0) return 0;
    const char *n = mqr__queue_name(q);
#define Q(k, v) sample(&f[k].b, f[k].name, "queue", n, NULL, v)
    Q(Q_DEPTH, st.depth);
    sample(&f[Q_MSGS].b, f[Q_MSGS].name, "queue", n, ",state=\"ready\"", st.ready);
    sample(&f[Q_MSGS].b, f[Q_MSGS].name, "queue", n, ",state=\"delayed\"", st.delayed);
    sample(&f[Q_MSGS].b, f[Q_MSGS].name, "queue", n, ",state=\"in_flight\"", st.in_flight);
    sample(&f[Q_MSGS].b, f[Q_MSGS].name, "queue", n, ",state=\"pending_tx\"", st.pending_tx);
    sample(&f[Q_MSGS].b, f[Q_MSGS].name, "queue", n, ",state=\"dead\"", st.dead);
    Q(Q_BYTES, st.bytes);
    Q(Q_CONSUMERS, st.consumers);
    Q(Q_PUBLISHED, st.published);
    Q(Q_DELIVERED, st.delivered);
    Q(Q_ACKED, st.acked);
    Q(Q_NACKED, st.nacked);
    Q(Q_REJECTED, st.rejected);
    Q(Q_REDELIVERED, st.redelivered);
    Q(Q_EXPIRED, st.expired);
    Q(Q_DROPPED, st.dropped);
    Q(Q_DEAD_LETTERED, st.dead_lettered);
    sample(&f[Q_REFUSED].b, f[Q_REFUSED].name, "queue", n, ",reason=\"full\"", st.refused_full);
    sample(&f[Q_REFUSED].b, f[Q_REFUSED].name, "queue", n, ",reason=\"memory\"", st.refused_memory);
#undef Q
    return 0;
}

static void queue_metrics(mqr_engine_t *e, mqr_buf_t *out)
{
    family_t f[Q_N] = {
        F("mqrouter_queue_depth", "gauge", "Entries waiting for a consumer (ready + delayed)."),
        F("mqrouter_queue_messages", "gauge", "Entries held, by state."),
        F("mqrouter_queue_bytes", "gauge", "Memory accounted to the queue."),
        F("mqrouter_queue_consumers", "gauge", "Consumers attached."),
        F("mqrouter_queue_published_total", "counter", "Entries accepted."),
        F("mqrouter_queue_delivered_total", "counter", "Deliveries, redeliveries included."),
        F("mqrouter_queue_acked_total", "counter", "Entries acknowledged."),
        F("mqrouter_queue_nacked_total", "counter", "Negative acknowledgements."),
        F("mqrouter_queue_rejected_total", "counter", "Entries rejected by a consumer."),
        F("mqrouter_queue_redelivered_total", "counter", "Deliveries after the first."),
        F("mqrouter_queue_expired_total", "counter", "Entries whose TTL passed."),
        F("mqrouter_queue_dropped_total", "counter", "Entries dropped to make room."),
        F("mqrouter_queue_dead_lettered_total", "counter", "Entries moved to the DLQ."),
        F("mqrouter_queue_refused_total", "counter", "Publishes refused, by reason."),
    };
    mqr__queues_foreach(e, queue_sample, f);
    families_flush(out, f, Q_N);
    mqr_queues_health_t h;
    if (mqr__queues_health(e, &h) >= 0) {
        one_u(out, "mqrouter_queues", "gauge", "Open queues.", h.queues);
        one_u(out, "mqrouter_queues_memory_bytes", "gauge", "Memory of every queue and subscriber.",
              h.bytes);
        one_u(out, "mqrouter_queues_memory_limit_bytes", "gauge",
              "The engine-wide queue memory limit.", h.max_bytes);
    }
}

/* ---- routes ---- */

enum { R_CALLS, R_ERRORS, R_BUDGET, R_DEAD, R_LATENCY, R_N };

static void route_sample(void *arg, const mqr_admin_route_t *r)
{
    family_t *f = arg;
    mqr_buf_t extra = {0};
    mqr__buf_str(&extra, ",filter=\"");
    label_value(&extra, r->filter);
    mqr__buf_str(&extra, "\"");
    const char *ex = extra.p ? extra.p : "";
    sample(&f[R_CALLS].b, f[R_CALLS].name, "route", r->name, ex, r->calls);
    sample(&f[R_ERRORS].b, f[R_ERRORS].name, "route", r->name, ex, r->errors);
    sample(&f[R_BUDGET].b, f[R_BUDGET].name, "route", r->name, ex, r->budget_errors);
    sample(&f[R_DEAD].b, f[R_DEAD].name, "route", r->name, ex, r->dead_lettered);
    /* a route into a queue has no handler to time; one never timed (no
     * call since the admin API started) has no series yet, as is usual for
     * labelled histograms: idle routes cost a scrape nothing here */
    if (!r->latency || !r->latency->count) {
        free(extra.p);
        return;
    }
    /* the histogram's series carry the route label only (its name holds
     * the filter already): 16 lines per route, the bulk of a scrape */
    static const char *const le[MQR_ADMIN_LAT_NBOUNDS + 1] = MQR_ADMIN_LAT_LE;
    const mqr_admin_hist_t *h = r->latency;
    mqr_buf_t *b = &f[R_LATENCY].b;
    mqr_buf_t lbl = {0};
    mqr__buf_str(&lbl, "{route=\"");
    label_value(&lbl, r->name);
    mqr__buf_str(&lbl, "\"");
    const char *l = lbl.p ? lbl.p : "{";
    size_t llen = lbl.p ? lbl.len : 1;
    static const char bucket[] = "mqrouter_route_handler_duration_seconds_bucket";
    uint64_t cum = 0;
    for (int i = 0; i <= MQR_ADMIN_LAT_NBOUNDS; i++) {
        cum += h->bucket[i];
        mqr__buf_add(b, bucket, sizeof bucket - 1);
        mqr__buf_add(b, l, llen);
        mqr__buf_str(b, ",le=\"");
        mqr__buf_str(b, le[i]);
        mqr__buf_str(b, "\"}");
        value_u64(b, cum);
    }
    mqr__buf_printf(b, "mqrouter_route_handler_duration_seconds_sum%s} %.9f\n", l,
                    (double)h->sum_ns / 1e9);
    mqr__buf_str(b, "mqrouter_route_handler_duration_seconds_count");
    mqr__buf_add(b, l, llen);
    mqr__buf_str(b, "}");
    value_u64(b, h->count);
    if (lbl.failed) b->failed = true;
    free(lbl.p);
    free(extra.p);
}

static void route_metrics(mqr_engine_t *e, mqr_buf_t *out)
{
    family_t f[R_N] = {
        F("mqrouter_route_calls_total", "counter", "Messages delivered to the route."),
        F("mqrouter_route_errors_total", "counter", "Handler errors (or queue refusals)."),
        F("mqrouter_route_budget_errors_total", "counter", "Handler calls over the time budget."),
        F("mqrouter_route_dead_lettered_total", "counter",
          "Messages sent to the route's dead-letter topic."),
        F("mqrouter_route_handler_duration_seconds", "histogram",
          "Time spent in the route's Lua handler per message."),
    };
    const mqr_host_ops_t *h;
    void *host = mqr__engine_host(e, &h);
    if (h->foreach_route) h->foreach_route(host, route_sample, f);
    families_flush(out, f, R_N);
    mqr_admin_rules_info_t ri = {.last_error = ""};
    if (h->rules_info) h->rules_info(host, &ri);
    one_u(out, "mqrouter_rules_loaded", "gauge", "1 when a rules script serves traffic.",
          ri.loaded);
    one_u(out, "mqrouter_rules_reloads_total", "counter", "Successful reloads.", ri.reloads);
    one_u(out, "mqrouter_rules_reload_failures_total", "counter", "Failed reloads.",
          ri.reload_failures);
    one_u(out, "mqrouter_rules_handler_errors_total", "counter", "Errors of every Lua call.",
          ri.handler_errors);
    one_u(out, "mqrouter_rules_budget_errors_total", "counter",
          "Lua calls stopped by the time budget.", ri.budget_errors);
    one_u(out, "mqrouter_rules_reload_dropped_total", "counter",
          "Messages waiting in a subscriber or iterator that a reload found no taker for.",
          ri.reload_dropped);
    one_u(out, "mqrouter_lua_memory_bytes", "gauge", "Memory of the Lua states.",
          h->lua_memory ? h->lua_memory(host) : 0);
}

/* ---- sinks ---- */

/* One series per open sink (HTTP, PostgreSQL, Redis, file clients); the
 * target is never a label: it may name hosts a scrape should not spread. */
static void sink_metrics(mqr_engine_t *e, mqr_buf_t *out)
{
    enum {
        SK_REQ,
        SK_OK,
        SK_RETRY,
        SK_FAIL,
        SK_ERR,
        SK_FLIGHT,
        SK_QUEUED,
        SK_UP,
        SK_RECON,
        SK_LAT,
        SK_N
    };
    family_t f[SK_N] = {
        F("mqrouter_sink_requests_total", "counter", "Requests a sink accepted."),
        F("mqrouter_sink_ok_total", "counter", "Requests that succeeded."),
        F("mqrouter_sink_retriable_total", "counter",
          "Requests that failed in a way worth retrying (timeout, connection, 5xx)."),
        F("mqrouter_sink_failed_total", "counter",
          "Requests that failed for good (4xx, constraint, bad command)."),
        F("mqrouter_sink_errors_total", "counter", "Failures by kind, refusals (full) included."),
        F("mqrouter_sink_in_flight", "gauge", "Requests on the wire."),
        F("mqrouter_sink_queued", "gauge", "Requests waiting for a slot."),
        F("mqrouter_sink_up", "gauge", "1 while the sink is connected (or its file open)."),
        F("mqrouter_sink_reconnects_total", "counter", "Connections made again after a loss."),
        F("mqrouter_sink_request_duration_seconds", "histogram",
          "Time from a request accepted to its answer."),
    };
    static const char *const le[MQR_ADMIN_LAT_NBOUNDS + 1] = MQR_ADMIN_LAT_LE;
    for (const mqr_sink_t *s = mqr__engine_sinks(e)->head; s; s = s->next) {
        mqr_buf_t ex = {0};
        mqr__buf_str(&ex, ",kind=\"");
        mqr__buf_str(&ex, s->kind);
        mqr__buf_str(&ex, "\"");
        const char *x = ex.p ? ex.p : "";
        sample(&f[SK_REQ].b, f[SK_REQ].name, "sink", s->name, x, s->requests);
        sample(&f[SK_OK].b, f[SK_OK].name, "sink", s->name, x, s->ok);
        sample(&f[SK_RETRY].b, f[SK_RETRY].name, "sink", s->name, x, s->retried);
        sample(&f[SK_FAIL].b, f[SK_FAIL].name, "sink", s->name, x, s->failed);
        for (int k = 0; k < MQR_SINK_ERR_KINDS_; k++) {
            char extra[96];
            snprintf(extra, sizeof extra, "%s,error=\"%s\"", x,
                     mqr__sink_err_kind_name((mqr_sink_err_kind_t)k));
            sample(&f[SK_ERR].b, f[SK_ERR].name, "sink", s->name, extra, s->errors[k]);
        }
        sample(&f[SK_FLIGHT].b, f[SK_FLIGHT].name, "sink", s->name, x, s->in_flight);
        sample(&f[SK_QUEUED].b, f[SK_QUEUED].name, "sink", s->name, x, s->queued);
        sample(&f[SK_UP].b, f[SK_UP].name, "sink", s->name, x, s->up);
        sample(&f[SK_RECON].b, f[SK_RECON].name, "sink", s->name, x, s->reconnects);
        uint64_t cum = 0;
        for (int i = 0; i <= MQR_ADMIN_LAT_NBOUNDS; i++) {
            cum += s->latency.bucket[i];
            char extra[64];
            snprintf(extra, sizeof extra, ",le=\"%s\"", le[i]);
            sample(&f[SK_LAT].b, "mqrouter_sink_request_duration_seconds_bucket", "sink", s->name,
                   extra, cum);
        }
        mqr_buf_t *b = &f[SK_LAT].b;
        mqr__buf_str(b, "mqrouter_sink_request_duration_seconds_sum{sink=\"");
        label_value(b, s->name);
        mqr__buf_printf(b, "\"} %.9f\n", (double)s->latency.sum_ns / 1e9);
        sample(b, "mqrouter_sink_request_duration_seconds_count", "sink", s->name, NULL,
               s->latency.count);
        if (ex.failed) f[SK_REQ].b.failed = true;
        free(ex.p);
    }
    families_flush(out, f, SK_N);
}

/* ---- registry ---- */

/* Aggregates only: no series per device or per topic, so a scrape costs
 * the same with ten devices or a million. */
static void registry_metrics(mqr_engine_t *e, mqr_buf_t *out)
{
    mqr_registry_stats_t st = {0};
    if (mqr__engine_registry(e)) mqr__registry_stats(mqr__engine_registry(e), &st);
    one_u(out, "mqtt_devices", "gauge", "Devices registered (every tenant).", st.devices);
    one_u(out, "mqtt_devices_online", "gauge", "Registered devices online now.", st.online);
    one_u(out, "mqtt_topics_tracked", "gauge", "Topics seen through the router and tracked.",
          st.topics);
    one_u(out, "mqtt_topics_max", "gauge", "The bound of the topic table.", st.topics_max);
    one_u(out, "mqtt_topics_dropped_total", "counter",
          "Publishes on topics not tracked because the table was full.", st.topics_dropped);
    one_u(out, "mqrouter_registry_flushes_total", "counter",
          "Device counter rows written to the store.", st.flushes);
}

/* ---- process ---- */

static void process_metrics(mqr_admin_t *a, mqr_buf_t *b)
{
    long page = sysconf(_SC_PAGESIZE);
    unsigned long long vsz = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%llu %llu", &vsz, &rss) != 2) vsz = rss = 0;
        fclose(f);
    }
    one_u(b, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
          rss * (unsigned long long)page);
    one_u(b, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.",
          vsz * (unsigned long long)page);
    struct rusage ru;
    double cpu = 0;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
              ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6;
    one(b, "process_cpu_seconds_total", "counter", "User and system CPU time spent in seconds.",
        cpu);
    one(b, "process_start_time_seconds", "gauge",
        "Start time of the admin server since the Unix epoch in seconds.",
        (double)(a->start_ms / 1000u));
}

void mqr__admin_metrics(mqr_admin_t *a, mqr_buf_t *out)
{
    mqr_engine_t *e = a->e;
    listener_metrics(e, out);
    session_metrics(e, out);
    queue_metrics(e, out);
    route_metrics(e, out);
    sink_metrics(e, out);
    registry_metrics(e, out);
    one_u(out, "mqrouter_messages_published_total", "counter", "Messages that entered the router.",
          mqr__engine_stats(e)->published);
    one_u(out, "mqrouter_messages_refused_total", "counter",
          "Publishes refused (bad topic, routing loop, no memory).", mqr__engine_stats(e)->refused);
    one_u(out, "mqrouter_routing_loops_total", "counter", "Publishes stopped for nesting too deep.",
          mqr__engine_router(e)->loops);
    one_u(out, "mqrouter_deliveries_dropped_nomem_total", "counter",
          "Deliveries a subscriber could not take for lack of memory.",
          mqr__engine_router(e)->dropped_nomem);
    one_u(out, "mqrouter_admin_requests_total", "counter", "Admin API requests answered.",
          a->requests);
    head(out, "mqrouter_admin_errors_total", "counter", "Admin API error answers, by class.");
    mqr__buf_printf(out, "mqrouter_admin_errors_total{class=\"4xx\"} %llu\n",
                    (unsigned long long)a->responses_4xx);
    mqr__buf_printf(out, "mqrouter_admin_errors_total{class=\"5xx\"} %llu\n",
                    (unsigned long long)a->responses_5xx);
    head(out, "mqrouter_admin_requests_refused_total", "counter",
         "Admin requests refused before any endpoint: a foreign Host (DNS rebinding), a "
         "foreign Origin, a browser's cross-site write, a body that is not JSON.");
    for (int i = 0; i < MQR_ADMIN_REFUSE_N; i++)
        mqr__buf_printf(out, "mqrouter_admin_requests_refused_total{reason=\"%s\"} %llu\n",
                        mqr__admin_refuse_name((mqr_admin_refuse_t)i),
                        (unsigned long long)a->refused[i]);
    one_u(out, "mqrouter_admin_connections", "gauge", "Admin API connections open.", a->nlive);
    head(out, "mqrouter_admin_connections_closed_total", "counter",
         "Admin connections the server closed: the oldest idle one for a new one at the cap, "
         "a request not whole in time, a keep-alive connection idle too long.");
    const struct {
        const char *reason;
        uint64_t n;
    } closed[] = {{"evicted", a->conns_evicted},
                  {"request_timeout", a->conns_request_timeout},
                  {"idle_timeout", a->conns_idle_timeout}};
    for (size_t i = 0; i < sizeof closed / sizeof closed[0]; i++)
        mqr__buf_printf(out, "mqrouter_admin_connections_closed_total{reason=\"%s\"} %llu\n",
                        closed[i].reason, (unsigned long long)closed[i].n);
    one(out, "mqrouter_admin_scrape_duration_seconds", "gauge",
        "Time the previous GET /metrics took to build its text.", (double)a->metrics_ns / 1e9);
    process_metrics(a, out);
}
