/*
 * handle_subscribe.c — SUBSCRIBE and UNSUBSCRIBE: a client's subscriptions
 * as entries of the engine's trie, and retained messages on subscribe.
 *
 * Each subscription is one trie entry whose sub is the connection; its
 * index in the connection's list is kept in opts.tag so removal is O(1).
 * Subscribing again to the same filter replaces the options in place
 * (3.1.1 §3.8.4, 5.0 §3.8.4). "$share/<group>/<filter>" is a shared
 * subscription for both protocol versions (as Mosquitto does; 3.1.1 has no
 * such thing, and a 3.1.1 client can hardly mean the literal topic).
 * Retained messages go out after the SUBACK, with RETAIN set, as Retain
 * Handling says, never for a shared subscription (5.0 §4.8.2); No Local
 * applies to forwarded messages only, not to retained ones.
 */
#include "listener_int.h"

#include "auth.h"

#include "topic.h"

#include <stdlib.h>

static int subs_push(mqr_lconn_t *c, mqr_trie_entry_t *e)
{
    if (c->nsubs == c->subs_cap) {
        uint32_t cap = c->subs_cap ? c->subs_cap * 2 : 2; /* most clients have one or two */
        mqr_trie_entry_t **s = realloc(c->subs, cap * sizeof *s);
        if (!s) return MQR_ENOMEM;
        c->subs = s;
        c->subs_cap = cap;
    }
    e->opts.tag = c->nsubs;
    c->subs[c->nsubs++] = e;
    return 0;
}

static void subs_remove(mqr_lconn_t *c, mqr_trie_entry_t *e)
{
    uint32_t i = (uint32_t)e->opts.tag;
    mqr_trie_entry_t *last = c->subs[--c->nsubs];
    c->subs[i] = last;
    last->opts.tag = i;
    mqr__router_remove(c->l->all->router, e);
}

void mqr__listener_subs_clear(mqr_lconn_t *c)
{
    mqr_router_t *r = c->l->all->router;
    for (uint32_t i = 0; i < c->nsubs; i++)
        mqr__router_remove(r, c->subs[i]);
    free(c->subs);
    c->subs = NULL;
    c->nsubs = c->subs_cap = 0;
}

typedef struct {
    mqr_lconn_t *c;
    mqr_sub_opts_t opts;
} retained_ctx_t;

static int send_retained(void *arg, mqr_msg_t *msg)
{
    retained_ctx_t *x = arg;
    if (x->c->state != MQR_LCONN_ACTIVE) return 1;
    uint8_t qos = msg->qos < x->opts.qos ? msg->qos : x->opts.qos;
    /* 3.1.1 §3.3.1.3, 5.0 §3.3.1.3: RETAIN 1 when sent because of a new
     * subscription */
    mqr__listener_send_message(x->c, msg, qos, true, &x->opts.subscription_id,
                               x->opts.subscription_id != 0);
    return 0;
}

int mqr__listener_handle_subscribe(mqr_lconn_t *c, uint8_t *pkt, size_t len)
{
    mqr_listener_t *l = c->l;
    mqr_listeners_t *all = l->all;
    mqr_mqtt_subscribe_t s;
    int rc = mqr__mqtt_decode_subscribe(pkt, len, c->version, &s);
    if (rc < 0) return rc;
    bool v5 = c->version == MQR_MQTT_V5;

    uint8_t codes_small[32];
    mqr_trie_entry_t *retained_small[32];
    uint8_t *codes = codes_small;
    mqr_trie_entry_t **retained = retained_small;
    if (s.count > 32) {
        codes = malloc(s.count);
        retained = malloc(s.count * sizeof *retained);
        if (!codes || !retained) {
            free(codes);
            free(retained);
            return mqr__listener_conn_fail(c, MQR_MQTT_RC_UNSPECIFIED, "out of memory");
        }
    }
    size_t nret = 0;
    uint32_t i = 0;
    mqr_mqtt_list_iter_t it;
    mqr_mqtt_sub_entry_t se;
    mqr__mqtt_sub_iter(&it, &s, c->version);
    for (; mqr__mqtt_sub_next(&it, &se); i++) {
        mqr_topic_filter_t tf;
        if (mqr__topic_filter_parse(se.filter.p, se.filter.len, &tf, NULL) < 0) {
            codes[i] = v5 ? MQR_MQTT_RC_TOPIC_FILTER_INVALID : 0x80;
            continue;
        }
        int denied = mqr__listener_authorize(c, MQR_AUTH_SUBSCRIBE, se.filter.p, se.filter.len,
                                             se.qos, false);
        if (denied) {
            /* v5: the hook's reason (0x87 unless it named another SUBACK
             * failure code, 5.0 §3.9.3); 3.1.1 has only 0x80 (§3.9.3) */
            codes[i] = v5 ? (uint8_t)denied : 0x80;
            continue;
        }
        char mbuf[256], *mheap = NULL;
        const char *fp = se.filter.p;
        size_t fl = se.filter.len;
        if (c->mount) {
            /* under the tenant's mountpoint ("$share/<g>/" stays in front) */
            fp = mqr__listener_mount(c, fp, fl, true, mbuf, sizeof mbuf, &mheap, &fl);
            if (!fp || mqr__topic_filter_parse(fp, fl, &tf, NULL) < 0) {
                free(mheap);
                codes[i] = v5 ? MQR_MQTT_RC_TOPIC_FILTER_INVALID : 0x80;
                continue;
            }
        }
        /* granted at most max_qos (3.1.1 §3.9.3, 5.0 §3.9.3: the server
         * may grant less than asked) */
        uint8_t granted = se.qos < l->opts.max_qos ? se.qos : (uint8_t)l->opts.max_qos;
        mqr_sub_opts_t o = {
            .qos = granted,
            .no_local = se.no_local,
            .retain_as_published = se.retain_as_published,
            .retain_handling = se.retain_handling,
            .subscription_id = s.sub_id,
        };
        mqr_trie_entry_t *ent = mqr__trie_find(&all->router->trie, tf.group, tf.group_len,
                                               tf.filter, tf.filter_len, &c->sub);
        bool existed = ent != NULL;
        mqr_sub_opts_t before = existed ? ent->opts : o;
        if (ent) {
            o.tag = ent->opts.tag;
            ent->opts = o;
        } else if (c->nsubs >= l->opts.max_subscriptions) {
            free(mheap);
            codes[i] = v5 ? MQR_MQTT_RC_QUOTA_EXCEEDED : 0x80;
            continue;
        } else {
            ent = tf.group ? mqr__trie_add_shared(&all->router->trie, tf.group, tf.group_len,
                                                  tf.filter, tf.filter_len, &c->sub, &o)
                           : mqr__router_add(all->router, tf.filter, tf.filter_len, &c->sub, &o);
            if (ent && subs_push(c, ent) < 0) {
                mqr__router_remove(all->router, ent);
                ent = NULL;
            }
            if (!ent) {
                free(mheap);
                codes[i] = 0x80;
                continue;
            }
        }
        if (mqr__client_session_sub_put(c, fp, fl, &ent->opts) < 0) {
            /* a persistent session's subscription the store refused would
             * be gone after a restart: refused now, as it was before */
            if (existed)
                ent->opts = before;
            else
                subs_remove(c, ent);
            free(mheap);
            codes[i] = v5 ? MQR_MQTT_RC_UNSPECIFIED : 0x80;
            continue;
        }
        codes[i] = granted;
        MQR_LOG_D(MQR_LSN_LOG, "%s subscribed to %.*s q%u%s", c->client_id, (int)fl, fp, se.qos,
                  existed ? " (replaced)" : "");
        free(mheap);
        if (!tf.group && (se.retain_handling == 0 || (se.retain_handling == 1 && !existed)))
            retained[nret++] = ent;
    }
    rc = mqr__listener_send_suback(c, s.packet_id, codes, i);
    for (size_t k = 0; rc == 0 && k < nret && c->state == MQR_LCONN_ACTIVE; k++) {
        mqr_trie_entry_t *ent = retained[k];
        if (!mqr__trie_entry_alive(ent)) continue;
        size_t flen;
        const char *f = mqr__trie_entry_filter(ent, &flen);
        retained_ctx_t x = {.c = c, .opts = ent->opts};
        mqr__retain_match(all->retain, f, flen, send_retained, &x);
    }
    if (codes != codes_small) {
        free(codes);
        free(retained);
    }
    if (rc < 0) return mqr__listener_conn_fail(c, MQR_MQTT_RC_UNSPECIFIED, "out of memory");
    return 0;
}

int mqr__listener_handle_unsubscribe(mqr_lconn_t *c, uint8_t *pkt, size_t len)
{
    mqr_listeners_t *all = c->l->all;
    mqr_mqtt_unsubscribe_t u;
    int rc = mqr__mqtt_decode_unsubscribe(pkt, len, c->version, &u);
    if (rc < 0) return rc;
    bool v5 = c->version == MQR_MQTT_V5;
    uint8_t codes_small[32];
    uint8_t *codes = codes_small;
    if (u.count > 32 && !(codes = malloc(u.count)))
        return mqr__listener_conn_fail(c, MQR_MQTT_RC_UNSPECIFIED, "out of memory");
    uint32_t i = 0;
    mqr_mqtt_list_iter_t it;
    mqr_mqtt_str_t f;
    mqr__mqtt_unsub_iter(&it, &u, c->version);
    for (; mqr__mqtt_unsub_next(&it, &f); i++) {
        mqr_topic_filter_t tf;
        char mbuf[256], *mheap = NULL;
        if (c->mount && mqr__topic_filter_parse(f.p, f.len, &tf, NULL) == 0) {
            size_t fl;
            const char *fp =
                mqr__listener_mount(c, f.p, f.len, true, mbuf, sizeof mbuf, &mheap, &fl);
            if (fp) {
                f.p = fp;
                f.len = (uint16_t)(fl > 65535 ? 65535 : fl);
            }
        }
        if (mqr__topic_filter_parse(f.p, f.len, &tf, NULL) < 0) {
            free(mheap);
            codes[i] = MQR_MQTT_RC_TOPIC_FILTER_INVALID;
            continue;
        }
        mqr_trie_entry_t *ent = mqr__trie_find(&all->router->trie, tf.group, tf.group_len,
                                               tf.filter, tf.filter_len, &c->sub);
        if (ent) {
            subs_remove(c, ent);
            mqr__client_session_sub_delete(c, f.p, f.len);
        }
        codes[i] = ent ? MQR_MQTT_RC_SUCCESS : MQR_MQTT_RC_NO_SUBSCRIPTION_EXISTED;
        MQR_LOG_D(MQR_LSN_LOG, "%s unsubscribed from %.*s%s", c->client_id, (int)f.len, f.p,
                  ent ? "" : " (had no such subscription)");
        free(mheap);
    }
    rc = mqr__listener_send_unsuback(c, u.packet_id, v5 ? codes : NULL, v5 ? i : 0);
    if (codes != codes_small) free(codes);
    if (rc < 0) return mqr__listener_conn_fail(c, MQR_MQTT_RC_UNSPECIFIED, "out of memory");
    return 0;
}
