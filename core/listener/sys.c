/*
 * sys.c — the listener's statistics as $SYS/broker/... topics, the way
 * Mosquitto publishes them, so existing dashboards and `mosquitto_sub -t
 * '$SYS/#'` work unchanged.
 *
 * Every sys_interval_ms a timer publishes them through the engine as
 * retained messages (origin C, name "$SYS"), so a new subscriber sees the
 * latest values at once; a value equal to the one already retained is not
 * published again. They are never matched by a filter starting with a
 * wildcard ([MQTT-4.7.2-1], the trie's rule), only by filters that name
 * $SYS. retain.c keeps $SYS topics in memory only: they describe this run.
 * Its only state is the load averages (l->sys). It must not publish while
 * the listener closes.
 *
 * What is counted is the listeners' clients only (the messages a Lua rule
 * or an upstream session publishes are not "received" here). With several
 * listeners, every one runs the timer but only the first of the engine's listeners
 * publishes, the sums over all of them, so the figures do not flap.
 */
#include "listener_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SYS_PREFIX "$SYS/broker/"

/* Load averages: per-minute rates smoothed over 1, 5 and 15 minutes. */
typedef struct {
    double v[3];
    uint64_t last;
} sys_load_t;

struct mqr_lsys {
    sys_load_t recv, sent, bytes_recv, bytes_sent, conns;
    uint64_t at_ms; /* when last sampled, 0 = never */
};

static void publish(mqr_listener_t *l, const char *name, const char *value)
{
    char topic[96];
    int n = snprintf(topic, sizeof topic, SYS_PREFIX "%s", name);
    size_t vlen = strlen(value);
    mqr_msg_t *old = mqr__retain_get(l->all->retain, topic, (size_t)n);
    if (old && old->payload_len == vlen && memcmp(old->payload, value, vlen) == 0) return;
    mqr_msg_init_t in = {
        .topic = topic,
        .topic_len = (size_t)n,
        .payload = value,
        .payload_len = vlen,
        .qos = 0,
        .retain = true,
        .origin = MQR_ORIGIN_C,
        .origin_name = "$SYS",
    };
    mqr_msg_t *m = mqr__msg_new(&in);
    if (!m) return;
    int rc = mqr__engine_publish(l->e, m);
    mqr_msg_unref(m);
    if (rc < 0) MQR_LOG_D(MQR_LSN_LOG, "$SYS %s not published: %s", topic, mqr_strerror(rc));
}

static void publish_u64(mqr_listener_t *l, const char *name, uint64_t v)
{
    char buf[24];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)v);
    publish(l, name, buf);
}

static void load_update(sys_load_t *ld, uint64_t total, uint64_t dt_ms, bool first)
{
    if (first) {
        ld->last = total;
        return;
    }
    double per_min = (double)(total - ld->last) * 60000.0 / (double)dt_ms;
    ld->last = total;
    static const double period_ms[3] = {60000.0, 300000.0, 900000.0};
    for (int i = 0; i < 3; i++) {
        /* first-order smoothing; alpha = dt / period is close enough to
         * 1 - exp(-dt / period) for dt well below the period */
        double a = (double)dt_ms / period_ms[i];
        if (a > 1.0) a = 1.0;
        ld->v[i] += (per_min - ld->v[i]) * a;
    }
}

static void publish_load(mqr_listener_t *l, const char *what, const sys_load_t *ld)
{
    static const char *const win[3] = {"1min", "5min", "15min"};
    for (int i = 0; i < 3; i++) {
        char name[64], val[32];
        snprintf(name, sizeof name, "load/%s/%s", what, win[i]);
        snprintf(val, sizeof val, "%.2f", ld->v[i]);
        publish(l, name, val);
    }
}

/* Every field of mqr_listener_stats_t is a uint64_t counter (keep it so):
 * the sum adds them as an array. */
_Static_assert(sizeof(mqr_listener_stats_t) % sizeof(uint64_t) == 0,
               "listener stats are uint64_t counters");

static void add_listener(mqr_listener_totals_t *t, const mqr_listener_t *x)
{
    uint64_t *sum = (uint64_t *)&t->stats;
    const uint64_t *a = (const uint64_t *)&x->stats;
    for (size_t i = 0; i < sizeof t->stats / sizeof *sum; i++)
        sum[i] += a[i];
    if (!t->start_ms || x->start_ms < t->start_ms) t->start_ms = x->start_ms;
    for (const mqr_lconn_t *c = x->conns; c; c = c->next) {
        t->subscriptions += c->nsubs;
        if (c->qs) {
            t->inflight += c->qs->if_live;
            t->queued += c->qs->q_count;
        }
    }
}

void mqr__listener_totals(const mqr_listeners_t *all, mqr_listener_totals_t *out)
{
    memset(out, 0, sizeof *out);
    for (const mqr_listener_t *x = all->first; x; x = x->e_next)
        if (!x->closing) add_listener(out, x);
}

void mqr__listener_sys_publish(mqr_listener_t *l)
{
    if (l->closing) return;
    const mqr_listener_t *first = l->all->first;
    while (first && first->closing)
        first = first->e_next;
    if (first && first != l) return; /* the first one publishes for all */
    mqr_listener_totals_t t;
    if (first) {
        mqr__listener_totals(l->all, &t);
    } else { /* not (yet) in the engine's list: its own figures */
        memset(&t, 0, sizeof t);
        add_listener(&t, l);
    }
    t.stats.dropped += t.stats.dropped_too_large;
    const mqr_listener_stats_t *st = &t.stats;
    uint64_t start = t.start_ms, nsubs = t.subscriptions;
    uint64_t now = uv_now(l->all->loop);

    publish(l, "version", "mqrouter version " MQR_VERSION_STRING);
    char buf[48];
    snprintf(buf, sizeof buf, "%llu seconds", (unsigned long long)((now - start) / 1000u));
    publish(l, "uptime", buf);
    publish_u64(l, "clients/connected", st->clients_current);
    /* as Mosquitto: disconnected = persistent sessions whose client is away */
    publish_u64(l, "clients/total", st->clients_current + st->sessions_offline);
    publish_u64(l, "clients/disconnected", st->sessions_offline);
    publish_u64(l, "clients/maximum", st->clients_peak);
    publish_u64(l, "clients/refused", st->connects_refused);
    publish_u64(l, "messages/received", st->msgs_in);
    publish_u64(l, "messages/sent", st->msgs_out);
    publish_u64(l, "publish/messages/received", st->msgs_in);
    publish_u64(l, "publish/messages/sent", st->msgs_out);
    publish_u64(l, "publish/messages/dropped", st->dropped);
    publish_u64(l, "bytes/received", st->bytes_in);
    publish_u64(l, "bytes/sent", st->bytes_out);
    publish_u64(l, "subscriptions/count", nsubs);

    struct mqr_lsys *s = l->sys;
    if (s) {
        bool initial = s->at_ms == 0;
        uint64_t dt = initial ? 0 : now - s->at_ms;
        if (initial || dt > 0) {
            load_update(&s->recv, st->msgs_in, dt, initial);
            load_update(&s->sent, st->msgs_out, dt, initial);
            load_update(&s->bytes_recv, st->bytes_in, dt, initial);
            load_update(&s->bytes_sent, st->bytes_out, dt, initial);
            load_update(&s->conns, st->connections_total, dt, initial);
            s->at_ms = now ? now : 1;
        }
        if (!initial) {
            publish_load(l, "messages/received", &s->recv);
            publish_load(l, "messages/sent", &s->sent);
            publish_load(l, "bytes/received", &s->bytes_recv);
            publish_load(l, "bytes/sent", &s->bytes_sent);
            publish_load(l, "connections", &s->conns);
        }
    }
    /* last, so it counts the ones above */
    publish_u64(l, "retained messages/count", mqr__retain_user_count(l->all->retain));
}

static void on_sys(uv_timer_t *h)
{
    mqr__listener_sys_publish(h->data);
}

void mqr__listener_sys_start(mqr_listener_t *l)
{
    l->sys = calloc(1, sizeof *l->sys); /* NULL: no load averages, the rest works */
    uv_timer_init(l->all->loop, &l->sys_timer);
    l->sys_timer.data = l;
    l->open_handles++;
    if (l->opts.sys_interval_ms > 0) {
        uint64_t every = (uint64_t)l->opts.sys_interval_ms;
        /* the first figures right away: version and zeros for subscribers */
        uv_timer_start(&l->sys_timer, on_sys, 0, every);
    }
    uv_unref((uv_handle_t *)&l->sys_timer);
}

void mqr__listener_sys_stop(mqr_listener_t *l, uv_close_cb cb)
{
    free(l->sys); /* the timer never fires again once closing */
    l->sys = NULL;
    uv_close((uv_handle_t *)&l->sys_timer, cb);
}
