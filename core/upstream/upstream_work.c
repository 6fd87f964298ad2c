/*
 * upstream_work.c — the end of a session's client, on libuv's worker
 * threads because destroying one can block for a second or more (Paho's:
 * see paho_destroy, upstream_paho_ops.c): destroying it when the session
 * closes (after letting in-flight messages go), rebuilding it after a loss
 * when the transport wants a new one, and freeing the session once its
 * handles are closed.
 *
 * A transport whose client lives on the loop (destroy_on_loop: native)
 * is destroyed and rebuilt right there instead, at once.
 *
 * Must not: touch the engine or the session's loop-only fields from a
 * worker (only the transport's destroy, the fields under lock and the
 * session's records), or call the transport holding the session's lock.
 */
#include "upstream_int.h"

#include "topic_map.h"

#include <stdlib.h>

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
    mqr__up_acks_detach(u);
    mqr__holds_free(&u->holds);
    if (u->tp_state) u->tp->free(u);
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
    uv_mutex_destroy(&u->lock);
    free(u->name);
    free(u->uri);
    free(u->client_id);
    free(u->username);
    free(u->password);
    free(u->auth_method);
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

/* Runs on a libuv worker thread: the transport's destroy can block. Once
 * it returned no callback of the transport runs for u (its contract,
 * upstream_transport.h), so the records are the session's alone. The
 * handles close only after this, on the loop: callbacks the destroy makes
 * itself still find the queue and the async handle alive. */
static void destroy_work(uv_work_t *req)
{
    mqr_upstream_t *u = req->data;
    if (!u->has_client) return; /* dormant: never had one */
    u->tp->destroy(u, true);
    /* Nothing of the transport touches the records any more. */
    if (u->discard_records) mqr__up_records_discard(u);
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
    uv_close((uv_handle_t *)&u->drain, on_async_closed);
}

/* A transport that wants a new client after a loss (rebuild_after_loss;
 * Paho: paho_rebuild_after_loss says why) gets its old one destroyed here
 * without a flush — destroying takes Paho's global lock and can block: a
 * worker does it — and the next attempt creates a new one. */
static void rebuild_work(uv_work_t *req)
{
    mqr_upstream_t *u = req->data;
    u->tp->destroy(u, false);
}

static void after_rebuild(uv_work_t *req, int status)
{
    mqr_upstream_t *u = req->data;
    (void)status;
    u->rebuilding = false;
    u->has_client = false; /* the next attempt creates it (create_client, upstream.c) */
    if (u->closing)
        mqr__up_begin_close(u);
    else
        mqr__up_schedule_retry(u);
}

void mqr__up_rebuild_client(mqr_upstream_t *u)
{
    u->rebuilding = true;
    u->rebuild_req.data = u;
    if (u->tp->destroy_on_loop ||
        uv_queue_work(u->all->loop, &u->rebuild_req, rebuild_work, after_rebuild) < 0) {
        rebuild_work(&u->rebuild_req);
        after_rebuild(&u->rebuild_req, 0);
    }
}

void mqr__up_begin_close(mqr_upstream_t *u)
{
    uv_timer_stop(&u->retry);
    uv_timer_stop(&u->warn);
    mqr__up_release_publishers(u);
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
    /* A transport that says so (destroy_on_loop: its client lives on the
     * loop and ending it never blocks) is destroyed here, at once. */
    if (u->tp->destroy_on_loop ||
        uv_queue_work(u->all->loop, &u->destroy_req, destroy_work, after_destroy) < 0) {
        destroy_work(&u->destroy_req);
        after_destroy(&u->destroy_req, 0);
    }
}
