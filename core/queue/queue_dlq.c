/*
 * queue_dlq.c — a queue's dead letters: entries that expired (when asked),
 * reached max_attempts or were rejected. A dead letter keeps its message
 * (original topic and payload), the reason and the attempt count; the queue
 * counts them in total and by reason, lists them, re-drives them into the
 * queue or purges them. The dead-letter queue is bounded: past
 * dlq_max_messages the oldest dead letter goes (counted as overflow).
 *
 * Dead letters stay in the queue's and the engine's memory accounting, but
 * never make a publish fail: they are bounded by count instead.
 */
#include "queue_impl.h"

static inline void store_removed(mqr_queue_t *q, uint64_t id)
{
    mqr_queues_t *s = q->set;
    if (q->cfg.durable && s->ops && s->ops->removed) s->ops->removed(s->ops_ctx, q, id);
}

static void dlq_remove(mqr_queue_t *q, mqr_qentry_t *e)
{
    mqr__q_list_remove(&q->dlq, e);
    q->ndead--;
    q->dst.depth_by_reason[e->reason]--;
}

void mqr__q_dead_letter(mqr_queue_t *q, mqr_qentry_t *e, int reason)
{
    q->held--;
    mqr_queues_t *s = q->set;
    if (!q->cfg.dead_letter) {
        q->st.discarded++;
        store_removed(q, e->id);
        mqr__q_entry_release(q, e);
        return;
    }
    e->state = QE_DEAD;
    e->reason = (uint8_t)reason;
    e->due = mqr__now_ms();
    e->owner = NULL;
    mqr__q_list_push_back(&q->dlq, e);
    q->ndead++;
    q->st.dead_lettered++;
    q->dst.total++;
    q->dst.by_reason[reason]++;
    q->dst.depth_by_reason[reason]++;
    if (q->cfg.durable && s->ops && s->ops->dead) {
        s->ops->dead(s->ops_ctx, q, e->id, reason, e->attempts);
        if (e->replaced && s->ops->dead_msg) s->ops->dead_msg(s->ops_ctx, q, e->id, e->msg);
    }
    e->replaced = 0;
    mqr_queue_dead_t d = {.id = e->id,
                          .msg = e->msg,
                          .reason = reason,
                          .attempts = e->attempts,
                          .priority = e->prio,
                          .dead_at_ms = e->due};
    mqr_msg_ref(d.msg); /* the overflow below may release this very entry */
    while (q->ndead > q->cfg.dlq_max_messages) {
        mqr_qentry_t *old = q->dlq.head;
        dlq_remove(q, old);
        q->dst.overflow++;
        store_removed(q, old->id);
        mqr__q_entry_release(q, old);
    }
    if (q->cfg.on_dead) {
        q->busy++;
        q->cfg.on_dead(q->cfg.on_dead_arg, q, &d);
        mqr__q_leave(q);
    }
    mqr_msg_unref(d.msg);
}

void mqr__q_dlq_release_all(mqr_queue_t *q)
{
    while (q->dlq.head) {
        mqr_qentry_t *e = q->dlq.head;
        dlq_remove(q, e);
        mqr__q_entry_release(q, e);
    }
}

static int dlq_check(const mqr_queue_t *q)
{
    if (q->closed) return MQR_ECLOSED;
    if (!q->cfg.dead_letter) return MQR_ENODLQ;
    return 0;
}

int mqr__queue_dlq_stats(mqr_queue_t *q, mqr_queue_dlq_stats_t *out)
{
    int rc = dlq_check(q);
    if (rc < 0) return rc;
    *out = q->dst;
    out->depth = q->ndead;
    return 0;
}

int mqr__queue_dlq_list(mqr_queue_t *q, size_t skip, size_t max, mqr_queue_dead_t *out)
{
    int rc = dlq_check(q);
    if (rc < 0) return rc;
    if (!out && max) return MQR_EINVAL;
    size_t n = 0;
    for (mqr_qentry_t *e = q->dlq.head; e && n < max; e = e->next) {
        if (skip) {
            skip--;
            continue;
        }
        out[n++] = (mqr_queue_dead_t){.id = e->id,
                                      .msg = e->msg,
                                      .reason = e->reason,
                                      .attempts = e->attempts,
                                      .priority = e->prio,
                                      .dead_at_ms = e->due};
    }
    return (int)n;
}

int mqr__queue_redrive(mqr_queue_t *q, size_t max)
{
    int rc = dlq_check(q);
    if (rc < 0) return rc;
    mqr_queues_t *s = q->set;
    bool durable = q->cfg.durable && s->ops;
    size_t n = 0;
    while (q->dlq.head && (max == 0 || n < max)) {
        if (q->held + 1 > q->cfg.max_messages) {
            if (n == 0) return MQR_EFULL;
            break;
        }
        mqr_qentry_t *e = q->dlq.head;
        uint64_t old_id = e->id;
        uint64_t at =
            q->cfg.default_ttl_ms > 0 ? mqr__q_now(s) + (uint64_t)q->cfg.default_ttl_ms : 0;
        if (durable && s->ops->stored) {
            rc = s->ops->stored(s->ops_ctx, q, q->next_id, e->msg, e->prio,
                                mqr__q_wall_expiry(q, at));
            if (rc < 0) return n ? (int)n : rc;
        }
        dlq_remove(q, e);
        if (durable) store_removed(q, old_id);
        e->id = q->next_id++;
        e->attempts = 0;
        e->reason = 0;
        e->expires_at = at;
        e->hidx = MQR_QHIDX_NONE;
        q->held++;
        q->dst.redriven++;
        mqr__q_make_ready(q, e, false);
        n++;
    }
    return (int)n;
}

int mqr__queue_restore_dead(mqr_queue_t *q, const mqr_queue_dead_t *dead)
{
    int rc = dlq_check(q);
    if (rc < 0) return rc;
    if (!dead || !dead->msg || dead->id == 0 || (unsigned)dead->priority >= MQR_PRIO_LEVELS ||
        dead->reason < 0 || dead->reason >= MQR_QREASON_COUNT)
        return MQR_EINVAL;
    mqr_qentry_t *e =
        mqr__q_new_entry(q, dead->msg, dead->priority, 0, mqr__q_entry_bytes(dead->msg));
    if (!e) return MQR_ENOMEM;
    q->next_id--; /* the stored id is used instead */
    e->id = dead->id;
    if (dead->id >= q->next_id) q->next_id = dead->id + 1;
    q->held--; /* dead letters are not held */
    e->state = QE_DEAD;
    e->reason = (uint8_t)dead->reason;
    e->attempts = dead->attempts > UINT16_MAX ? UINT16_MAX : (uint16_t)dead->attempts;
    e->due = dead->dead_at_ms;
    mqr__q_list_push_back(&q->dlq, e);
    q->ndead++;
    q->dst.depth_by_reason[dead->reason]++;
    return 0;
}

int mqr__queue_dlq_purge(mqr_queue_t *q, size_t max)
{
    int rc = dlq_check(q);
    if (rc < 0) return rc;
    size_t n = 0;
    while (q->dlq.head && (max == 0 || n < max)) {
        mqr_qentry_t *e = q->dlq.head;
        dlq_remove(q, e);
        q->dst.purged++;
        store_removed(q, e->id);
        mqr__q_entry_release(q, e);
        n++;
    }
    return (int)n;
}
