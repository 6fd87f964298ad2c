/*
 * upstream_work.c — the end of a session's Paho client, on libuv's worker
 * threads because destroying one can block for a second or more:
 * destroying it when the session closes (after a disconnect that waits for
 * in-flight messages), rebuilding it after a persistent session lost its
 * connection, and freeing the session once its handles are closed.
 *
 * Must not: touch the engine or the session's loop-only fields from a
 * worker (only the client, the fields under lock and the session's
 * records), or call Paho holding the session's lock.
 */
#include "upstream_int.h"

#include "topic_map.h"

#include <stdlib.h>

/* How long a closing session waits for in-flight messages before the
 * connection is dropped anyway. */
#define UP_CLOSE_TIMEOUT_MS 1000

void mqr__up_session_free(mqr_upstream_t *u)
{
    mqr__up_warn_unrouted(u, mqr__up_count_unrouted(u, u->head));
    up_event_t *ev = u->head;
    while (ev) {
        up_event_t *next = ev->next;
        free(ev);
        ev = next;
    }
    up_sub_t *s = u->subs;
    while (s) {
        up_sub_t *next = s->next;
        free(s);
        s = next;
    }
    for (up_subopt_t *o = u->subopts, *next; o; o = next) {
        next = o->next;
        free(o);
    }
    for (up_pub_t *p = u->pubs, *next; p; p = next) {
        next = p->next;
        free(p);
    }
    for (size_t i = 0; i < u->n_early; i++)
        mqr_msg_unref(u->early[i].msg);
    free(u->early);
    mqr__upstream_persist_release(&u->phooks);
    for (int i = 0; i < u->n_uris; i++)
        free(u->uris[i]);
    free(u->uris);
    free(u->will_topic);
    free(u->will_payload);
    free(u->prefix);
    mqr__topic_map_free(u->map);
    free(u->tls.cafile);
    free(u->tls.capath);
    free(u->tls.cert);
    free(u->tls.key);
    free(u->tls.key_password);
    uv_cond_destroy(&u->cond);
    uv_mutex_destroy(&u->lock);
    free(u->name);
    free(u->uri);
    free(u->client_id);
    free(u->username);
    free(u->password);
    free(u);
}

static void unlink_session(mqr_upstream_t *u)
{
    for (mqr_upstream_t **pp = &u->all->first; *pp; pp = &(*pp)->next) {
        if (*pp == u) {
            *pp = u->next;
            return;
        }
    }
}

static void on_async_closed(uv_handle_t *h)
{
    mqr_upstream_t *u = h->data;
    if (--u->open_handles > 0) return;
    unlink_session(u);
    mqr__up_session_free(u);
}

/* Runs on a libuv worker thread, because MQTTAsync_destroy() of the last
 * client in the process stops Paho's threads and can block for a second or
 * more — not something to do on the loop.
 *
 * Why the session's memory is safe to free afterwards: Paho calls every
 * callback with its global mutex held (the receive thread around packet
 * handling, the send thread in command processing and timeout checks), and
 * MQTTAsync_destroy() takes that same mutex, removes the client from Paho's
 * handle list and only then returns. So once it returns no callback of ours
 * is running and none can start. Callbacks it makes itself (failures of
 * pending subscribes, from inside destroy on this thread) still find the
 * queue and the async handle alive: those are closed only in after_destroy,
 * on the loop.
 *
 * Known leak: Paho 1.3.12 does not free PUBLISH commands still buffered (never
 * sent) when the client is destroyed — topic, payload and bookkeeping of each
 * (eclipse-paho/paho.mqtt.c#1474, fixed after 1.3.13). Connected, the
 * disconnect below lets them go out first; closing while disconnected loses
 * that memory, at most max_buffered messages per close. Close warns. */
static void destroy_work(uv_work_t *req)
{
    mqr_upstream_t *u = req->data;
    if (!u->client) return; /* dormant: never had one */
    MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
    d.timeout = UP_CLOSE_TIMEOUT_MS;
    mqr__up_paho_disconnect_answers(u, &d);
    /* Also stops automatic reconnection, even when not connected (then it
     * returns MQTTASYNC_DISCONNECTED and calls nothing). */
    if (MQTTAsync_disconnect(u->client, &d) == MQTTASYNC_SUCCESS) {
        /* Paho completes a disconnect that waits for in-flight messages only
         * on its timeout tick, every 3 s. So wait for the callback in slices
         * and stop early once nothing is queued or in flight for this client
         * (destroy then sends DISCONNECT itself and loses nothing); give up
         * at the deadline, when destroy drops what is still in flight. */
        uint64_t deadline = uv_hrtime() + (uint64_t)(UP_CLOSE_TIMEOUT_MS + 500) * 1000000u;
        uv_mutex_lock(&u->lock);
        while (!u->disconnect_done) {
            uint64_t now = uv_hrtime();
            if (now >= deadline) break;
            uint64_t slice = deadline - now < 20000000u ? deadline - now : 20000000u;
            if (uv_cond_timedwait(&u->cond, &u->lock, slice) == 0) continue;
            uv_mutex_unlock(&u->lock); /* never call Paho holding it */
            MQTTAsync_token *tokens = NULL;
            bool idle = MQTTAsync_getPendingTokens(u->client, &tokens) == MQTTASYNC_SUCCESS &&
                        tokens == NULL;
            MQTTAsync_free(tokens);
            uv_mutex_lock(&u->lock);
            if (idle) break;
        }
        uv_mutex_unlock(&u->lock);
    }
    mqr__up_paho_destroy(&u->client);
    /* Nothing of Paho's touches the records any more. */
    if (u->discard_records) mqr__upstream_persist_discard(u->all->persist, u->name);
}

static void after_destroy(uv_work_t *req, int status)
{
    mqr_upstream_t *u = req->data;
    (void)status;
    if (u->successor) {
        mqr_upstream_t *next = u->successor;
        u->successor = NULL;
        mqr__up_wake_successor(next);
    }
    uv_close((uv_handle_t *)&u->async, on_async_closed);
    uv_close((uv_handle_t *)&u->retry, on_async_closed);
    uv_close((uv_handle_t *)&u->nudge, on_async_closed);
    uv_close((uv_handle_t *)&u->warn, on_async_closed);
}

/* Paho 1.3.12 can lose the topic of a message it was writing when the
 * connection broke (it frees the string while the in-flight entry still
 * points at it) and then resends garbage after every reconnect, which the
 * broker rejects as malformed: the session never recovers (captured, see
 * docs/upstream.md). A persistent session's records hold every in-flight
 * message intact, so after a loss such a session destroys its client and
 * creates a new one, which restores them, instead of reconnecting the old
 * one. With clean = true Paho drops in-flight messages at the reconnect
 * anyway, so nothing is resent and the old client is kept. Destroying
 * takes Paho's global lock and can block: a worker does it. */
static void rebuild_work(uv_work_t *req)
{
    mqr_upstream_t *u = req->data;
    mqr__up_paho_destroy(&u->client);
}

static void after_rebuild(uv_work_t *req, int status)
{
    mqr_upstream_t *u = req->data;
    (void)status;
    u->rebuilding = false;
    u->client = NULL; /* the next attempt creates it (create_client, upstream.c) */
    if (u->closing)
        mqr__up_begin_close(u);
    else
        mqr__up_schedule_retry(u);
}

void mqr__up_rebuild_client(mqr_upstream_t *u)
{
    u->rebuilding = true;
    u->rebuild_req.data = u;
    if (uv_queue_work(u->all->loop, &u->rebuild_req, rebuild_work, after_rebuild) < 0) {
        rebuild_work(&u->rebuild_req);
        after_rebuild(&u->rebuild_req, 0);
    }
}

void mqr__up_begin_close(mqr_upstream_t *u)
{
    uv_timer_stop(&u->retry);
    uv_timer_stop(&u->warn);
    mqr__up_nudge_stop(u);
    if (u->rebuilding) return; /* after_rebuild comes back here */
    if (u->predecessor) {
        /* Dormant: the predecessor hands over to u's successor, if any,
         * which must go on waiting for it. */
        u->predecessor->successor = u->successor;
        if (u->successor) u->successor->predecessor = u->predecessor;
        u->predecessor = u->successor = NULL;
    }
    /* A successor takes the records over; otherwise they stay for the next
     * start unless the session was discarded. */
    u->discard_records = u->discard && u->persistent && !u->successor;
    u->destroy_req.data = u;
    if (uv_queue_work(u->all->loop, &u->destroy_req, destroy_work, after_destroy) < 0) {
        destroy_work(&u->destroy_req);
        after_destroy(&u->destroy_req, 0);
    }
}
