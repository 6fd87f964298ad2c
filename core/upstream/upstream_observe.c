/*
 * upstream_observe.c — who hears about sessions: the observers of every
 * session of an engine (mqr__upstream_observe) and the waits for sessions
 * to be ready (mqr__upstream_wait_ready), which are observers themselves
 * and share their list's mutex. Loop thread of each engine.
 *
 * Must not: change a session, or hold the mutex while an observer or a
 * wait's callback runs (either may close sessions or (un)register).
 */
#include "upstream_int.h"

#include <stdlib.h>
#include <string.h>

/* ---- observers (every session of an engine) ------------------------------
 * The engine struct has no slot for them, so they live in one process-wide
 * list keyed by engine. Engines on different threads may use it at once:
 * the list is under a mutex, never held while an observer runs. */

typedef struct up_obs up_obs_t;
struct up_obs {
    up_obs_t *next;
    mqr_engine_t *e;
    mqr_upstream_observer_fn fn;
    void *arg;
    uint64_t seq; /* registration order: mqr__up_emit() walks by it, see there */
};

typedef struct up_wait up_wait_t;
struct up_wait {
    up_wait_t *next; /* waits, while the timer is open */
    mqr_engine_t *e;
    char *name; /* NULL = every session */
    mqr_upstream_ready_fn cb;
    void *arg;
    uv_timer_t timer;
    bool done;
};

static uv_once_t obs_once = UV_ONCE_INIT;
static uv_mutex_t obs_lock;
static up_obs_t *observers;
static uint64_t obs_seq; /* last seq given, under obs_lock */
static up_wait_t *waits;

static void obs_init(void)
{
    uv_mutex_init(&obs_lock);
}

int mqr__upstream_observe(mqr_engine_t *e, mqr_upstream_observer_fn fn, void *arg)
{
    uv_once(&obs_once, obs_init);
    up_obs_t *o = malloc(sizeof *o);
    if (!o) return MQR_ENOMEM;
    o->e = e;
    o->fn = fn;
    o->arg = arg;
    uv_mutex_lock(&obs_lock);
    o->seq = ++obs_seq;
    up_obs_t **pp = &observers;
    while (*pp && !((*pp)->e == e && (*pp)->fn == fn && (*pp)->arg == arg))
        pp = &(*pp)->next;
    if (*pp) {
        free(o);
        o = NULL;
    } else {
        o->next = NULL; /* appended: observers run in the order added */
        *pp = o;
    }
    uv_mutex_unlock(&obs_lock);
    return o ? 0 : MQR_EEXIST;
}

void mqr__upstream_unobserve(mqr_engine_t *e, mqr_upstream_observer_fn fn, void *arg)
{
    uv_once(&obs_once, obs_init);
    uv_mutex_lock(&obs_lock);
    for (up_obs_t **pp = &observers; *pp; pp = &(*pp)->next) {
        up_obs_t *o = *pp;
        if (o->e == e && o->fn == fn && o->arg == arg) {
            *pp = o->next;
            free(o);
            break;
        }
    }
    uv_mutex_unlock(&obs_lock);
}

/* Observers may (un)register others and close sessions while we iterate,
 * so no pointer into the list is kept across a call: each step takes, under
 * the lock, the observer of e with the next higher seq among those present
 * when emit began. One removed before its turn is not called; one added
 * meanwhile waits for the next event. No snapshot array, so no cap on the
 * number of observers (quadratic in it, and there are a handful). */
void mqr__up_emit(mqr_upstream_t *u, mqr_upstream_event_t *ev)
{
    ev->u = u;
    ev->name = u->name;
    ev->time_ms = mqr__up_wall_ms();
    if (!ev->broker) ev->broker = u->broker[0] ? u->broker : u->uri;
    uv_once(&obs_once, obs_init);
    uv_mutex_lock(&obs_lock);
    uint64_t last = obs_seq, after = 0;
    uv_mutex_unlock(&obs_lock);
    for (;;) {
        mqr_upstream_observer_fn fn = NULL;
        void *arg = NULL;
        uint64_t next = UINT64_MAX;
        uv_mutex_lock(&obs_lock);
        for (up_obs_t *o = observers; o; o = o->next)
            if (o->e == u->e && o->seq > after && o->seq <= last) {
                next = o->seq; /* the list is in seq order: the first is the next */
                fn = o->fn;
                arg = o->arg;
                break;
            }
        uv_mutex_unlock(&obs_lock);
        if (!fn) return;
        after = next;
        fn(arg, ev);
    }
}

void mqr__up_emit_simple(mqr_upstream_t *u, mqr_upstream_event_type_t type, const char *reason,
                         unsigned attempt)
{
    mqr_upstream_event_t ev = {.type = type, .reason = reason, .attempt = attempt};
    mqr__up_emit(u, &ev);
}

const char *mqr__upstream_event_name(mqr_upstream_event_type_t t)
{
    static const char *const names[] = {
        "session_added",   "session_connecting",    "session_connected",
        "session_ready",   "session_disconnected",  "session_reconnecting",
        "session_removed", "session_state_changed", "session_failed",
    };
    return (unsigned)t < sizeof names / sizeof names[0] ? names[t] : "?";
}

/* ---- waiting for ready ------------------------------------------------- */

static bool is_ready(mqr_engine_t *e, const char *name)
{
    if (name) {
        mqr_upstream_t *u = mqr__upstream_find(e, name);
        return u && u->ready;
    }
    unsigned n = 0;
    for (mqr_upstream_t *u = mqr__engine_upstreams(e)->first; u; u = u->next) {
        if (u->closing) continue;
        if (!u->ready) return false;
        n++;
    }
    return n > 0;
}

static void wait_closed(uv_handle_t *h)
{
    up_wait_t *w = h->data;
    uv_mutex_lock(&obs_lock);
    for (up_wait_t **pp = &waits; *pp; pp = &(*pp)->next)
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    uv_mutex_unlock(&obs_lock);
    free(w->name);
    free(w);
}

static void wait_observe(void *arg, const mqr_upstream_event_t *ev);

static void wait_finish(up_wait_t *w, int status)
{
    if (w->done) return;
    w->done = true;
    mqr__upstream_unobserve(w->e, wait_observe, w);
    uv_timer_stop(&w->timer);
    uv_close((uv_handle_t *)&w->timer, wait_closed);
    w->cb(w->arg, status);
}

static void wait_observe(void *arg, const mqr_upstream_event_t *ev)
{
    up_wait_t *w = arg;
    if (is_ready(w->e, w->name)) wait_finish(w, 0);
}

static void wait_timer(uv_timer_t *t)
{
    up_wait_t *w = t->data;
    wait_finish(w, is_ready(w->e, w->name) ? 0 : UV_ETIMEDOUT);
}

static void wait_check_now(uv_timer_t *t)
{
    up_wait_t *w = t->data;
    if (is_ready(w->e, w->name)) wait_finish(w, 0);
}

int mqr__upstream_wait_ready(mqr_engine_t *e, const char *name, uint64_t timeout_ms,
                             mqr_upstream_ready_fn cb, void *arg)
{
    if (!cb) return MQR_EINVAL;
    if (mqr__engine_stopping(e)) return MQR_ECLOSED;
    up_wait_t *w = calloc(1, sizeof *w);
    if (!w) return MQR_ENOMEM;
    w->e = e;
    w->cb = cb;
    w->arg = arg;
    if (name && !(w->name = strdup(name))) {
        free(w);
        return MQR_ENOMEM;
    }
    int rc = uv_timer_init(mqr_engine_loop(e), &w->timer);
    if (rc < 0) {
        free(w->name);
        free(w);
        return rc;
    }
    w->timer.data = w;
    rc = mqr__upstream_observe(e, wait_observe, w);
    if (rc < 0) {
        w->done = true;
        uv_close((uv_handle_t *)&w->timer, wait_closed);
        return rc;
    }
    uv_once(&obs_once, obs_init);
    uv_mutex_lock(&obs_lock);
    w->next = waits;
    waits = w;
    uv_mutex_unlock(&obs_lock);
    if (is_ready(e, name)) {
        uv_timer_start(&w->timer, wait_check_now, 0, 0);
    } else {
        /* the loop's clock was read when its turn began, maybe long ago:
         * the timeout counts from now, never less than asked */
        uv_update_time(mqr_engine_loop(e));
        uv_timer_start(&w->timer, wait_timer, timeout_ms, 0);
    }
    return 0;
}

bool mqr__up_has_waits(mqr_engine_t *e)
{
    bool any = false;
    uv_once(&obs_once, obs_init);
    uv_mutex_lock(&obs_lock);
    for (up_wait_t *w = waits; w && !any; w = w->next)
        any = w->e == e;
    uv_mutex_unlock(&obs_lock);
    return any;
}

/* Waits still open end now; each is finished once, then only closing. */
void mqr__up_waits_close(mqr_engine_t *e)
{
    for (;;) {
        up_wait_t *found = NULL;
        uv_once(&obs_once, obs_init);
        uv_mutex_lock(&obs_lock);
        for (up_wait_t *w = waits; w && !found; w = w->next)
            if (w->e == e && !w->done) found = w;
        uv_mutex_unlock(&obs_lock);
        if (!found) break;
        wait_finish(found, MQR_ECLOSED);
    }
}
