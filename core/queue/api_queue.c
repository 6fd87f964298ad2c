/*
 * api_queue.c — the public queue API (mqrouter.h, "queues"): thin wrappers
 * over core/queue/queue.h for C hosts.
 *
 * It turns public options into the internal configuration, sets the
 * engine's queues up on first use, and copies topic and payload into a
 * message. Must not: keep state of its own (the queue module owns every
 * queue) or add behaviour the internal functions lack.
 */
#include "abi.h"
#include "engine.h"
#include "message.h"
#include "queue.h"
#include "topic.h"

#include <string.h>

void mqr_queue_options_init_sized(mqr_queue_options_t *o, size_t size)
{
    mqr_queue_options_t def;
    memset(&def, 0, sizeof def);
    def.size = sizeof def;
    def.dead_letter = 1;
    mqr__abi_init(o, size, &def, sizeof def);
}

static int queues_ready(mqr_engine_t *e)
{
    if (mqr__engine_queues(e)) return 0;
    int rc = mqr__queues_init(e, NULL);
    return rc == MQR_EEXIST ? 0 : rc;
}

int mqr_queue_new(mqr_engine_t *e, const mqr_queue_options_t *opts, mqr_queue_t **out)
{
    if (out) *out = NULL;
    if (!e || !opts || !out) return MQR_EINVAL;
    mqr_queue_options_t o;
    mqr_queue_options_init(&o);
    int rc = mqr__abi_copy(&o, sizeof o, sizeof o, opts);
    if (rc < 0) return rc;
    if (!o.name) return MQR_EINVAL;
    if (mqr__engine_stopping(e)) return MQR_ECLOSED;
    if ((rc = queues_ready(e)) < 0) return rc;
    mqr_queue_config_t cfg;
    mqr__queue_config_init(&cfg);
    cfg.name = o.name;
    cfg.default_ttl_ms = o.default_ttl_ms;
    cfg.ack_timeout_ms = o.ack_timeout_ms;
    cfg.max_attempts = o.max_attempts;
    cfg.backoff_initial_ms = o.backoff_initial_ms;
    cfg.backoff_max_ms = o.backoff_max_ms;
    cfg.max_messages = o.max_messages;
    cfg.max_bytes = o.max_bytes;
    cfg.drop_oldest = o.drop_oldest != 0;
    cfg.dead_letter = o.dead_letter != 0;
    cfg.durable = o.durable != 0;
    cfg.dedup_window = o.dedup_window;
    return mqr__queue_new(e, &cfg, out);
}

int mqr_queue_find(mqr_engine_t *e, const char *name, mqr_queue_t **out)
{
    if (out) *out = NULL;
    if (!e || !name || !out) return MQR_EINVAL;
    if (!mqr__engine_queues(e)) return MQR_ENOENT;
    return mqr__queue_find(e, name, out);
}

const char *mqr_queue_name(const mqr_queue_t *q)
{
    return mqr__queue_name(q);
}

void mqr_queue_close(mqr_queue_t *q)
{
    if (q) mqr__queue_close(q);
}

int mqr_queue_publish(mqr_queue_t *q, const char *topic, const void *payload, size_t len,
                      int priority, int64_t ttl_ms, uint64_t *id)
{
    if (!q || !topic || (!payload && len)) return MQR_EINVAL;
    if (priority < MQR_PRIO_LOWEST || priority > MQR_PRIO_HIGHEST) return MQR_EINVAL;
    size_t tlen = strlen(topic);
    int rc = mqr__topic_name_validate(topic, tlen);
    if (rc < 0) return rc;
    mqr_msg_init_t in = {
        .topic = topic,
        .topic_len = tlen,
        .payload = payload,
        .payload_len = len,
        .qos = 1,
        .origin = MQR_ORIGIN_C,
    };
    mqr_msg_t *m = mqr__msg_new(&in);
    if (!m) return MQR_ENOMEM;
    mqr_queue_pub_opts_t po = {.priority = priority, .ttl_ms = ttl_ms};
    rc = mqr__queue_publish(q, m, &po, id);
    mqr_msg_unref(m);
    return rc;
}

int mqr_queue_bind(mqr_queue_t *q, const char *filter)
{
    if (!q || !filter) return MQR_EINVAL;
    return mqr__queue_bind(q, filter, NULL);
}

int mqr_queue_consume(mqr_queue_t *q, mqr_queue_consume_fn fn, void *arg, unsigned prefetch,
                      mqr_queue_consumer_t **out)
{
    mqr_queue_consumer_t *c = NULL;
    if (out) *out = NULL;
    if (!q || !fn) return MQR_EINVAL;
    int rc = mqr__queue_consume(q, fn, arg, prefetch, &c);
    if (rc == 0 && out) *out = c;
    return rc;
}

void mqr_queue_cancel(mqr_queue_t *q, mqr_queue_consumer_t *c)
{
    if (q && c) mqr__queue_cancel(q, c);
}

int mqr_queue_ack(mqr_queue_t *q, uint64_t id)
{
    return q ? mqr__queue_ack(q, id) : MQR_EINVAL;
}

int mqr_queue_nack(mqr_queue_t *q, uint64_t id, int64_t delay_ms)
{
    return q ? mqr__queue_nack(q, id, delay_ms) : MQR_EINVAL;
}

int mqr_queue_reject(mqr_queue_t *q, uint64_t id)
{
    return q ? mqr__queue_reject(q, id) : MQR_EINVAL;
}

int mqr_queue_stats(const mqr_queue_t *q, mqr_queue_info_t *out)
{
    if (!q || !out || out->size < sizeof out->size) return MQR_EINVAL;
    mqr_queue_stats_t st;
    int rc = mqr__queue_stats(q, &st);
    if (rc < 0) return rc;
    mqr_queue_info_t info = {
        .size = sizeof info,
        .published = st.published,
        .delivered = st.delivered,
        .acked = st.acked,
        .nacked = st.nacked,
        .rejected = st.rejected,
        .redelivered = st.redelivered,
        .expired = st.expired,
        .dropped = st.dropped,
        .dead_lettered = st.dead_lettered,
        .refused = st.refused_full + st.refused_memory,
        .depth = st.depth,
        .in_flight = st.in_flight,
        .dead = st.dead,
        .bytes = st.bytes,
        .consumers = st.consumers,
    };
    /* only what the caller's struct holds; its size field stays its own */
    size_t n = out->size < sizeof info ? out->size : sizeof info;
    memcpy((char *)out + sizeof info.size, (const char *)&info + sizeof info.size,
           n - sizeof info.size);
    return 0;
}
