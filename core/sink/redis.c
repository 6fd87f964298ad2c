/*
 * redis.c — the Redis sink (redis.h): hiredis' asynchronous context driven
 * by our libuv event hooks on the engine's loop, our own bounds, waiting list,
 * per-command deadlines, handshake (AUTH, SELECT, PING) and reconnect with
 * backoff. The engine's Lua bindings and any C caller use it through
 * redis.h. Loop thread only. Must not: block, fire a done callback inside
 * mqr__redis_command, free a hiredis context from inside its connect or
 * disconnect callback (hiredis still uses it afterwards), or keep the
 * password anywhere it can be shown.
 *
 * A request is in one of three places: `waiting` (our list; its command
 * already formatted), `sent` (written to hiredis, reply expected; the sink
 * counts it in flight), or done and still known to hiredis (a tombstone:
 * its done callback has fired, hiredis will call us once more for it and
 * we free it then). `sent` holds older requests than `waiting`, and every
 * request has the same timeout, so the oldest deadline is at the head of
 * `sent`, else of `waiting`: one timer is enough.
 */
#include "redis.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <arpa/inet.h>
#include <assert.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef enum { REQ_WAITING, REQ_SENT, REQ_TOMB } req_state_t;

typedef struct req {
    struct req *prev, *next;
    mqr_redis_t *r;
    mqr_redis_done_fn done;
    void *arg;
    uint64_t t0;          /* uv_hrtime() at the call */
    uint64_t deadline_ms; /* t0 in ms + timeout */
    char *cmd;            /* formatted, while waiting */
    size_t cmd_len;
    req_state_t state;
    bool in_hiredis; /* hiredis holds our callback for it */
    bool late;       /* timed out on the current connection */
} req_t;

typedef struct {
    req_t *head, *tail;
} req_list_t;

typedef enum { CONN_DOWN, CONN_RESOLVING, CONN_HANDSHAKE, CONN_UP } conn_state_t;

/* Handshake steps, in the order they are sent. */
enum { STEP_AUTH, STEP_SELECT, STEP_PING };

struct mqr_redis {
    mqr_sink_t sink; /* first: a mqr_sink_t * casts back */
    uv_loop_t *loop;
    uv_timer_t cmd_timer;  /* the oldest request's deadline */
    uv_timer_t conn_timer; /* backoff while down; connect timeout while connecting */
    uv_getaddrinfo_t gai;
    bool gai_active;
    redisAsyncContext *ac; /* the current connection; NULL when none */
    conn_state_t state;
    int steps[3], nsteps, step; /* handshake: what is sent, which answer is next */
    req_list_t sent, waiting;
    uint32_t late;       /* requests timed out on the wire, reply still due */
    uint32_t backoff_ms; /* next reconnect delay */
    bool ever_up, closing;
    bool broken;   /* hiredis refused a command: drop the connection from the timer */
    bool expiring; /* the deadline timer ends requests: promote once, after */
    int handles;   /* open libuv handles; r is freed when they are closed */
    char *host, *password;
    int port, db;
    uint32_t timeout_ms, connect_timeout_ms, backoff_min_ms, backoff_max_ms;
};

/* ---- small helpers ----------------------------------------------------- */

static void list_push(req_list_t *l, req_t *q)
{
    q->next = NULL;
    q->prev = l->tail;
    if (l->tail)
        l->tail->next = q;
    else
        l->head = q;
    l->tail = q;
}

static void list_remove(req_list_t *l, req_t *q)
{
    if (q->prev)
        q->prev->next = q->next;
    else
        l->head = q->next;
    if (q->next)
        q->next->prev = q->prev;
    else
        l->tail = q->prev;
    q->prev = q->next = NULL;
}

static void req_free(req_t *q)
{
    free(q->cmd);
    free(q);
}

static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000u;
}

static void set_why(char *why, size_t cap, const char *msg)
{
    if (why && cap) snprintf(why, cap, "%s", msg);
}

/* Replaces any copy of the password in s (a server's error text may quote
 * what it was sent) by "***". */
static void scrub(const mqr_redis_t *r, char *s, size_t cap)
{
    const char *pw = r->password;
    if (!pw || !pw[0] || !strstr(s, pw)) return;
    size_t plen = strlen(pw), n = 0;
    char out[512];
    for (const char *p = s; *p && n + 1 < sizeof out;) {
        if (strncmp(p, pw, plen) == 0) {
            for (int k = 0; k < 3 && n + 1 < sizeof out; k++)
                out[n++] = '*';
            p += plen;
        } else {
            out[n++] = *p++;
        }
    }
    if (n >= cap) n = cap - 1; /* cap > strlen(s) >= 1 */
    memcpy(s, out, n);
    s[n] = '\0';
}

/* last_error while down: set_up only writes it on a change. */
static void note_error(mqr_redis_t *r, const char *reason)
{
    snprintf(r->sink.last_error, sizeof r->sink.last_error, "%s", reason);
}

static const char *ctx_error(const redisAsyncContext *ac, const char *fallback)
{
    return ac && ac->c.err && ac->c.errstr[0] ? ac->c.errstr : fallback;
}

/* ---- hiredis on the loop ----------------------------------------------------
 *
 * Our own event hooks instead of hiredis 0.14.1's adapters/libuv.h: libuv
 * reports a socket error (POLLERR: connection refused, reset by a killed
 * server) as a negative status and stops the handle, and that adapter
 * ignores such a call, so hiredis never hears of the error and the
 * connection hangs. Here an error status lets hiredis read and write, where
 * it meets the error and disconnects. */

typedef struct {
    uv_poll_t poll;
    redisAsyncContext *ac; /* NULL once hiredis let go (cleanup) */
    int events;            /* UV_READABLE | UV_WRITABLE wanted, as started */
} ev_t;

static void ev_on_poll(uv_poll_t *h, int status, int events)
{
    ev_t *e = h->data;
    if (status < 0) { /* libuv stopped the handle */
        events = e->events ? e->events : UV_READABLE | UV_WRITABLE;
        e->events = 0;
    }
    if (e->ac && (events & UV_READABLE)) redisAsyncHandleRead(e->ac);
    if (e->ac && (events & UV_WRITABLE)) redisAsyncHandleWrite(e->ac);
}

static void ev_set(ev_t *e, int events)
{
    if (events == e->events || !e->ac) return; /* hiredis asks once per command */
    e->events = events;
    if (events)
        uv_poll_start(&e->poll, events, ev_on_poll);
    else
        uv_poll_stop(&e->poll);
}

static void ev_add_read(void *p)
{
    ev_t *e = p;
    ev_set(e, e->events | UV_READABLE);
}

static void ev_del_read(void *p)
{
    ev_t *e = p;
    ev_set(e, e->events & ~UV_READABLE);
}

static void ev_add_write(void *p)
{
    ev_t *e = p;
    ev_set(e, e->events | UV_WRITABLE);
}

static void ev_del_write(void *p)
{
    ev_t *e = p;
    ev_set(e, e->events & ~UV_WRITABLE);
}

static void ev_on_closed(uv_handle_t *h)
{
    free(h->data);
}

static void ev_cleanup(void *p)
{
    ev_t *e = p;
    if (!e->ac) return; /* twice: once is enough */
    e->ac = NULL;
    uv_close((uv_handle_t *)&e->poll, ev_on_closed);
}

static int ev_attach(redisAsyncContext *ac, uv_loop_t *loop)
{
    ev_t *e = calloc(1, sizeof *e);
    if (!e) return MQR_ENOMEM;
    int rc = uv_poll_init(loop, &e->poll, ac->c.fd);
    if (rc != 0) {
        free(e);
        return rc;
    }
    e->poll.data = e;
    e->ac = ac;
    ac->ev.data = e;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    return 0;
}

/* ---- commands in RESP ------------------------------------------------------
 *
 * Our own formatter rather than redisFormatCommandArgv: hiredis 0.14.1
 * writes every length with sprintf, which took a fifth of the client's CPU
 * in bench_sink_redis (ten calls per XADD of a three-field reading). */

static size_t dec_len(size_t v)
{
    size_t n = 1;
    while (v >= 10) {
        v /= 10;
        n++;
    }
    return n;
}

/* Writes c, v in decimal, "\r\n" at p; returns the end. */
static char *put_header(char *p, char c, size_t v)
{
    size_t n = dec_len(v);
    *p++ = c;
    for (size_t i = n; i > 0; i--) {
        p[i - 1] = (char)('0' + v % 10);
        v /= 10;
    }
    p += n;
    *p++ = '\r';
    *p++ = '\n';
    return p;
}

/* *<argc>\r\n then $<len>\r\n<bytes>\r\n per argument, in one malloc'd
 * block (*out, *out_len); 0 or MQR_ENOMEM. */
static int format_command(int argc, const char *const *argv, const size_t *argvlen, char **out,
                          size_t *out_len)
{
    size_t total = 1 + dec_len((size_t)argc) + 2;
    for (int i = 0; i < argc; i++) {
        size_t len = argvlen ? argvlen[i] : strlen(argv[i]);
        total += 1 + dec_len(len) + 2 + len + 2;
    }
    char *buf = malloc(total);
    if (!buf) return MQR_ENOMEM;
    char *p = put_header(buf, '*', (size_t)argc);
    for (int i = 0; i < argc; i++) {
        size_t len = argvlen ? argvlen[i] : strlen(argv[i]);
        p = put_header(p, '$', len);
        memcpy(p, argv[i], len);
        p += len;
        *p++ = '\r';
        *p++ = '\n';
    }
    assert((size_t)(p - buf) == total);
    *out = buf;
    *out_len = total;
    return 0;
}

/* Commands that change what the connection answers or how (one reply per
 * command no more: SUBSCRIBE, MONITOR, CLIENT REPLY; RESP3: HELLO) or that
 * a reconnect would silently undo (SELECT: use opts.db; RESET). hiredis
 * would call us more than once for one request, or never. */
static bool word_is(const char *a, size_t alen, const char *word)
{
    return alen == strlen(word) && strncasecmp(a, word, alen) == 0;
}

static bool command_refused(int argc, const char *const *argv, const size_t *argvlen)
{
    static const char *const names[] = {"SUBSCRIBE",    "PSUBSCRIBE",   "SSUBSCRIBE", "UNSUBSCRIBE",
                                        "PUNSUBSCRIBE", "SUNSUBSCRIBE", "MONITOR",    "HELLO",
                                        "SELECT",       "RESET"};
    size_t len0 = argvlen ? argvlen[0] : strlen(argv[0]);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (word_is(argv[0], len0, names[i])) return true;
    return argc >= 2 && word_is(argv[0], len0, "CLIENT") &&
           word_is(argv[1], argvlen ? argvlen[1] : strlen(argv[1]), "REPLY");
}

/* ---- replies ------------------------------------------------------------- */

static void reply_free_elements(mqr_redis_reply_t *out)
{
    if (out->type != MQR_REDIS_ARRAY || !out->element) return;
    for (size_t i = 0; i < out->elements; i++)
        reply_free_elements(out->element[i]);
    free((void *)out->element);
}

/* Our view of a hiredis reply: strings are borrowed, arrays get one block
 * (pointers, then nodes) per level. 0 or MQR_ENOMEM. */
static int reply_view(const redisReply *in, mqr_redis_reply_t *out)
{
    memset(out, 0, sizeof *out);
    out->type = in->type;
    out->integer = in->integer;
    out->str = in->str;
    out->len = in->len;
    if (in->type != REDIS_REPLY_ARRAY || in->elements == 0) return 0;
    size_t n = in->elements;
    void *block = malloc(n * (sizeof(mqr_redis_reply_t *) + sizeof(mqr_redis_reply_t)));
    if (!block) return MQR_ENOMEM;
    mqr_redis_reply_t **ptrs = block;
    mqr_redis_reply_t *nodes = (mqr_redis_reply_t *)(ptrs + n);
    out->element = ptrs;
    out->elements = n;
    for (size_t i = 0; i < n; i++) {
        ptrs[i] = &nodes[i];
        if (reply_view(in->element[i], &nodes[i]) != 0) {
            out->elements = i + 1; /* free what was built, this one included */
            reply_free_elements(out);
            out->element = NULL;
            out->elements = 0;
            return MQR_ENOMEM;
        }
    }
    return 0;
}

/* Error replies that say "not now" rather than "never" (see redis.h); the
 * first word must match whole (BUSYGROUP is a request error). */
static bool error_is_transient(const char *s, size_t len)
{
    static const char *const words[] = {"LOADING",    "BUSY",     "TRYAGAIN",
                                        "MASTERDOWN", "READONLY", "CLUSTERDOWN"};
    size_t w = 0;
    while (w < len && s[w] != ' ')
        w++;
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (strlen(words[i]) == w && memcmp(words[i], s, w) == 0) return true;
    return false;
}

/* ---- requests ending ----------------------------------------------------- */

static void promote(mqr_redis_t *r);
static void arm_timer(mqr_redis_t *r);
static void schedule_reconnect(mqr_redis_t *r);
static void on_cmd_timer(uv_timer_t *t);

/* Ends q (unlinked by the caller or here): counts it, lets a waiting request
 * take a freed slot before the caller hears (order stays the call order),
 * calls done, then frees q or leaves it as a tombstone for hiredis. */
static void finish(mqr_redis_t *r, req_t *q, mqr_sink_outcome_t outcome, mqr_sink_err_kind_t kind,
                   int err, const char *reason, const mqr_redis_reply_t *reply)
{
    bool was_waiting = q->state == REQ_WAITING;
    if (q->state == REQ_WAITING)
        list_remove(&r->waiting, q);
    else if (q->state == REQ_SENT)
        list_remove(&r->sent, q);
    q->state = REQ_TOMB;
    uint64_t ns = uv_hrtime() - q->t0;
    mqr__sink_done(&r->sink, was_waiting, ns, outcome, kind, reason);
    if (!r->closing && !r->expiring) promote(r);
    mqr_redis_result_t res = {.outcome = outcome,
                              .err = err,
                              .reason = reason,
                              .reply = reply,
                              .seconds = (double)ns / 1e9};
    q->done(q->arg, &res);
    if (!q->in_hiredis) req_free(q);
}

/* The connection is gone (or being dropped by us): requests written on it
 * fail RETRY (they may have run), the sink goes down, and unless r is
 * closing a reconnect is scheduled. free_ac: we drop it (hiredis did not). */
static void drop(mqr_redis_t *r, const char *why, bool free_ac)
{
    char reason[256]; /* hiredis' own texts ("Connection reset by peer") get our prefix */
    snprintf(reason, sizeof reason, "%s%s", strncmp(why, "redis: ", 7) ? "redis: " : "", why);
    scrub(r, reason, sizeof reason);
    redisAsyncContext *ac = r->ac;
    r->ac = NULL;
    r->state = CONN_DOWN;
    r->late = 0;
    r->broken = false;
    uv_timer_stop(&r->conn_timer);
    if (r->sink.up)
        mqr__sink_set_up(&r->sink, false, reason);
    else
        note_error(r, reason);
    req_t *q;
    while ((q = r->sent.head) != NULL)
        finish(r, q, MQR_SINK_RETRY, MQR_SINK_ERR_CONNECT, UV_ECONNRESET, reason, NULL);
    if (free_ac && ac) redisAsyncFree(ac); /* tombstones and handshake answers come back NULL */
    if (r->closing) return;
    schedule_reconnect(r);
}

/* ---- sending --------------------------------------------------------------- */

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata);

/* Writes q (already counted in flight) on the current connection. */
static void send_req(mqr_redis_t *r, req_t *q)
{
    q->state = REQ_SENT;
    list_push(&r->sent, q);
    if (redisAsyncFormattedCommand(r->ac, on_reply, q, q->cmd, q->cmd_len) != REDIS_OK) {
        /* only out of memory on an open context: the connection's state is
         * unknown, start again (q fails with the rest of `sent`), from the
         * timer since we may be inside mqr__redis_command */
        r->broken = true;
        uv_timer_stop(&r->cmd_timer);
        uv_timer_start(&r->cmd_timer, on_cmd_timer, 0, 0);
        return;
    }
    q->in_hiredis = true;
    free(q->cmd);
    q->cmd = NULL;
}

static void promote(mqr_redis_t *r)
{
    while (r->state == CONN_UP && !r->broken && r->waiting.head &&
           r->sink.in_flight < r->sink.max_in_flight) {
        req_t *q = r->waiting.head;
        list_remove(&r->waiting, q);
        mqr__sink_start_waiting(&r->sink);
        send_req(r, q);
    }
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    req_t *q = privdata;
    mqr_redis_t *r = q->r;
    if (q->state == REQ_TOMB) { /* done already (timeout, connection lost, closed) */
        if (q->late && ac == r->ac && r->late) r->late--;
        req_free(q);
        return;
    }
    if (!reply) { /* hiredis is freeing a connection it found broken */
        /* q stays in_hiredis meanwhile, so that ending it leaves it to us */
        if (ac == r->ac) drop(r, ctx_error(ac, "redis: connection lost"), false);
        if (q->state != REQ_TOMB) /* not on the current connection: cannot be, but end it */
            finish(r, q, MQR_SINK_RETRY, MQR_SINK_ERR_CONNECT, UV_ECONNRESET,
                   "redis: connection lost", NULL);
        req_free(q);
        return;
    }
    q->in_hiredis = false;
    const redisReply *rep = reply;
    mqr_redis_reply_t view;
    if (reply_view(rep, &view) != 0) {
        finish(r, q, MQR_SINK_RETRY, MQR_SINK_ERR_OTHER, MQR_ENOMEM, "redis: out of memory", NULL);
        return;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        char reason[256];
        snprintf(reason, sizeof reason, "%.*s", (int)(rep->len < 200 ? rep->len : 200),
                 rep->str ? rep->str : "");
        scrub(r, reason, sizeof reason);
        if (error_is_transient(rep->str, rep->len))
            finish(r, q, MQR_SINK_RETRY, MQR_SINK_ERR_SERVER, UV_EAGAIN, reason, &view);
        else
            finish(r, q, MQR_SINK_PERMANENT, MQR_SINK_ERR_REQUEST, MQR_EINVAL, reason, &view);
    } else {
        finish(r, q, MQR_SINK_OK, MQR_SINK_ERR_OTHER, 0, NULL, &view);
    }
    reply_free_elements(&view);
}

/* ---- deadlines ----------------------------------------------------------- */

static void arm_timer(mqr_redis_t *r)
{
    if (r->closing || uv_is_active((uv_handle_t *)&r->cmd_timer)) return;
    req_t *q = r->sent.head ? r->sent.head : r->waiting.head;
    if (!q) return;
    uint64_t now = now_ms();
    uint64_t in = q->deadline_ms > now ? q->deadline_ms - now : 0;
    uv_timer_start(&r->cmd_timer, on_cmd_timer, in ? in : 1, 0);
}

static void on_cmd_timer(uv_timer_t *t)
{
    mqr_redis_t *r = t->data;
    uint64_t now = now_ms();
    char reason[320];
    req_t *q;
    if (r->broken && r->ac) {
        drop(r, "redis: could not queue a command (out of memory)", true);
        if (r->closing) return;
    }
    /* No promotion while expiring: a request that waited past its deadline
     * fails from the waiting list rather than being written and failed. */
    r->expiring = true;
    while (!r->closing && (q = r->sent.head) != NULL && q->deadline_ms <= now) {
        q->late = true; /* its reply may still come: a tombstone takes it */
        r->late++;
        snprintf(reason, sizeof reason, "redis: no reply within %u ms", (unsigned)r->timeout_ms);
        finish(r, q, MQR_SINK_RETRY, MQR_SINK_ERR_TIMEOUT, UV_ETIMEDOUT, reason, NULL);
    }
    while (!r->closing && (q = r->waiting.head) != NULL && q->deadline_ms <= now) {
        if (r->state == CONN_UP)
            snprintf(reason, sizeof reason, "redis: no slot within %u ms", (unsigned)r->timeout_ms);
        else
            snprintf(reason, sizeof reason, "redis: not connected within %u ms (%s)",
                     (unsigned)r->timeout_ms,
                     r->sink.last_error[0] ? r->sink.last_error : "connecting");
        finish(r, q, MQR_SINK_RETRY, MQR_SINK_ERR_TIMEOUT, UV_ETIMEDOUT, reason, NULL);
    }
    r->expiring = false;
    if (r->closing) return;
    promote(r);
    /* As many unanswered as the pipeline holds, all past their time: the
     * connection is stuck, not slow. */
    if (r->ac && r->late >= r->sink.max_in_flight) {
        snprintf(reason, sizeof reason, "redis: %u commands unanswered past %u ms, reconnecting",
                 (unsigned)r->late, (unsigned)r->timeout_ms);
        drop(r, reason, true);
        if (r->closing) return;
    }
    arm_timer(r);
}

static void redis_free(mqr_redis_t *r)
{
    free(r->host);
    free(r->password);
    free(r);
}

/* ---- connecting ----------------------------------------------------------- */

static void on_conn_timer(uv_timer_t *t);

static void schedule_reconnect(mqr_redis_t *r)
{
    uint32_t delay = r->backoff_ms;
    r->backoff_ms = delay >= r->backoff_max_ms / 2 ? r->backoff_max_ms : delay * 2;
    uv_timer_start(&r->conn_timer, on_conn_timer, delay, 0);
}

/* A connection attempt failed before any connection existed. */
static void attempt_failed(mqr_redis_t *r, const char *why)
{
    r->state = CONN_DOWN;
    note_error(r, why);
    uv_timer_stop(&r->conn_timer);
    schedule_reconnect(r);
}

static void became_up(mqr_redis_t *r)
{
    r->state = CONN_UP;
    uv_timer_stop(&r->conn_timer);
    r->backoff_ms = r->backoff_min_ms;
    if (r->ever_up) r->sink.reconnects++;
    r->ever_up = true;
    mqr__sink_set_up(&r->sink, true, NULL);
    if (r->closing || r->state != CONN_UP) return;
    promote(r);
    arm_timer(r);
}

static void on_handshake(redisAsyncContext *ac, void *reply, void *privdata)
{
    mqr_redis_t *r = privdata;
    if (ac != r->ac || r->state != CONN_HANDSHAKE) return; /* an old connection */
    if (!reply) {
        drop(r, ctx_error(ac, "redis: connection lost during the handshake"), false);
        return;
    }
    const redisReply *rep = reply;
    int step = r->steps[r->step++];
    if (rep->type == REDIS_REPLY_ERROR) {
        static const char *const names[] = {"AUTH", "SELECT", "PING"};
        char reason[256];
        snprintf(reason, sizeof reason, "redis: %s refused: %.*s", names[step],
                 (int)(rep->len < 200 ? rep->len : 200), rep->str ? rep->str : "");
        drop(r, reason, true);
        return;
    }
    if (r->step == r->nsteps) became_up(r);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    mqr_redis_t *r = ac->data;
    if (ac != r->ac || status == REDIS_OK) return; /* up comes with the handshake */
    char reason[256];
    snprintf(reason, sizeof reason, "redis: connect to %s:%d: %s", r->host, r->port,
             ctx_error(ac, "failed"));
    drop(r, reason, false); /* hiredis frees it after this returns */
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    mqr_redis_t *r = ac->data;
    if (ac != r->ac) return; /* ours to drop, dropped already */
    drop(r, ctx_error(ac, "redis: connection closed"), false);
}

static void open_conn(mqr_redis_t *r, const char *ip)
{
    redisAsyncContext *ac = redisAsyncConnect(ip, r->port);
    char reason[256];
    if (!ac) {
        attempt_failed(r, "redis: out of memory");
        return;
    }
    if (ac->err) {
        snprintf(reason, sizeof reason, "redis: connect to %s:%d: %s", r->host, r->port,
                 ac->errstr);
        redisAsyncFree(ac);
        attempt_failed(r, reason);
        return;
    }
    ac->data = r;
    if (ev_attach(ac, r->loop) != 0) {
        redisAsyncFree(ac);
        attempt_failed(r, "redis: could not attach to the loop");
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    r->ac = ac;
    r->state = CONN_HANDSHAKE;
    r->nsteps = r->step = 0;
    /* At least one command: hiredis only notices the connect when it
     * writes, and PING proves the server answers. */
    if (r->password && r->password[0]) {
        const char *argv[] = {"AUTH", r->password};
        r->steps[r->nsteps++] = STEP_AUTH;
        redisAsyncCommandArgv(ac, on_handshake, r, 2, argv, NULL);
    }
    if (r->db > 0) {
        char db[16];
        snprintf(db, sizeof db, "%d", r->db);
        const char *argv[] = {"SELECT", db};
        r->steps[r->nsteps++] = STEP_SELECT;
        redisAsyncCommandArgv(ac, on_handshake, r, 2, argv, NULL);
    }
    const char *argv[] = {"PING"};
    r->steps[r->nsteps++] = STEP_PING;
    redisAsyncCommandArgv(ac, on_handshake, r, 1, argv, NULL);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    mqr_redis_t *r = req->data;
    r->gai_active = false;
    if (r->closing || r->state != CONN_RESOLVING) { /* closed, or timed out meanwhile */
        if (res) uv_freeaddrinfo(res);
        if (r->closing && !r->handles) redis_free(r); /* the timers closed first */
        return;
    }
    /* IPv4 first: "localhost" often lists ::1 first, and a server bound to
     * 127.0.0.1 only would refuse us forever (one address is tried). */
    char ip[INET6_ADDRSTRLEN] = "";
    const struct addrinfo *pick = NULL;
    for (const struct addrinfo *a = status == 0 ? res : NULL; a; a = a->ai_next)
        if (a->ai_family == AF_INET || (!pick && a->ai_family == AF_INET6))
            if (!pick || pick->ai_family != AF_INET) pick = a;
    if (pick && pick->ai_family == AF_INET)
        uv_ip4_name((const struct sockaddr_in *)pick->ai_addr, ip, sizeof ip);
    else if (pick)
        uv_ip6_name((const struct sockaddr_in6 *)pick->ai_addr, ip, sizeof ip);
    if (res) uv_freeaddrinfo(res);
    if (!ip[0]) {
        char reason[256];
        snprintf(reason, sizeof reason, "redis: resolve %s: %s", r->host,
                 status ? uv_strerror(status) : "no address");
        attempt_failed(r, reason);
        return;
    }
    open_conn(r, ip);
}

static void start_connect(mqr_redis_t *r)
{
    uv_timer_start(&r->conn_timer, on_conn_timer, r->connect_timeout_ms, 0);
    struct in6_addr a6;
    struct in_addr a4;
    if (inet_pton(AF_INET, r->host, &a4) == 1 || inet_pton(AF_INET6, r->host, &a6) == 1) {
        open_conn(r, r->host);
        return;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    r->gai.data = r;
    int rc = uv_getaddrinfo(r->loop, &r->gai, on_resolved, r->host, NULL, &hints);
    if (rc != 0) {
        char reason[256];
        snprintf(reason, sizeof reason, "redis: resolve %s: %s", r->host, uv_strerror(rc));
        attempt_failed(r, reason);
        return;
    }
    r->gai_active = true;
    r->state = CONN_RESOLVING;
}

static void on_conn_timer(uv_timer_t *t)
{
    mqr_redis_t *r = t->data;
    char reason[256];
    switch (r->state) {
    case CONN_DOWN:
        start_connect(r);
        break;
    case CONN_RESOLVING:
        uv_cancel((uv_req_t *)&r->gai); /* its callback still comes; state tells it to stop */
        snprintf(reason, sizeof reason, "redis: resolve %s: no answer within %u ms", r->host,
                 (unsigned)r->connect_timeout_ms);
        attempt_failed(r, reason);
        break;
    case CONN_HANDSHAKE:
        snprintf(reason, sizeof reason, "redis: connect to %s:%d: no answer within %u ms", r->host,
                 r->port, (unsigned)r->connect_timeout_ms);
        drop(r, reason, true);
        break;
    case CONN_UP:
        break;
    }
}

/* ---- the API ------------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h)
{
    mqr_redis_t *r = h->data;
    if (--r->handles > 0 || r->gai_active) return;
    redis_free(r);
}

int mqr__redis_new(uv_loop_t *loop, const mqr_redis_opts_t *o, mqr_redis_t **out, char **errmsg)
{
    const char *err = NULL;
    if (errmsg) *errmsg = NULL;
    if (!loop || !o || !out)
        err = "redis: missing loop, options or result";
    else if (o->port < 0 || o->port > 65535)
        err = "redis: port must be 0..65535";
    else if (o->db < 0)
        err = "redis: db must be >= 0";
    else if (o->host && (!o->host[0] || strlen(o->host) > 253))
        err = "redis: host must be 1..253 characters";
    if (err) {
        if (errmsg) *errmsg = strdup(err);
        return MQR_EINVAL;
    }
    mqr_redis_t *r = calloc(1, sizeof *r);
    if (!r) return MQR_ENOMEM;
    r->host = strdup(o->host ? o->host : "127.0.0.1");
    r->password = o->password && o->password[0] ? strdup(o->password) : NULL;
    if (!r->host || (o->password && o->password[0] && !r->password)) {
        free(r->host);
        free(r->password);
        free(r);
        return MQR_ENOMEM;
    }
    r->loop = loop;
    r->port = o->port ? o->port : 6379;
    r->db = o->db;
    r->timeout_ms = o->timeout_ms ? o->timeout_ms : 5000;
    r->connect_timeout_ms = o->connect_timeout_ms ? o->connect_timeout_ms : 2000;
    r->backoff_min_ms = o->backoff_min_ms ? o->backoff_min_ms : 100;
    r->backoff_max_ms = o->backoff_max_ms ? o->backoff_max_ms : 5000;
    if (r->backoff_max_ms < r->backoff_min_ms) r->backoff_max_ms = r->backoff_min_ms;
    r->backoff_ms = r->backoff_min_ms;

    char target[300];
    bool v6 = strchr(r->host, ':') != NULL;
    snprintf(target, sizeof target, "redis://%s%s%s:%d/%d", v6 ? "[" : "", r->host, v6 ? "]" : "",
             r->port, r->db);
    mqr__sink_init(&r->sink, "redis", o->name ? o->name : "redis", target,
                   o->max_in_flight ? o->max_in_flight : 1024,
                   o->max_queued ? o->max_queued : 100000);
    snprintf(r->sink.last_error, sizeof r->sink.last_error, "redis: connecting");

    uv_timer_init(loop, &r->cmd_timer);
    uv_timer_init(loop, &r->conn_timer);
    r->cmd_timer.data = r->conn_timer.data = r;
    r->handles = 2;
    r->state = CONN_DOWN;
    uv_timer_start(&r->conn_timer, on_conn_timer, 0, 0); /* connect from the loop */
    *out = r;
    return 0;
}

mqr_sink_t *mqr__redis_sink(mqr_redis_t *r)
{
    return &r->sink;
}

int mqr__redis_command(mqr_redis_t *r, int argc, const char *const *argv, const size_t *argvlen,
                       mqr_redis_done_fn done, void *arg, char *why, size_t why_cap)
{
    if (!r || argc < 1 || !argv || !done) {
        set_why(why, why_cap, "redis: a command needs a name and a callback");
        return MQR_EINVAL;
    }
    for (int i = 0; i < argc; i++)
        if (!argv[i]) {
            set_why(why, why_cap, "redis: an argument is missing (NULL)");
            return MQR_EINVAL;
        }
    if (argvlen ? argvlen[0] == 0 : argv[0][0] == '\0') {
        set_why(why, why_cap, "redis: empty command name");
        return MQR_EINVAL;
    }
    if (command_refused(argc, argv, argvlen)) {
        set_why(why, why_cap,
                "redis: (P|S)SUBSCRIBE, MONITOR, CLIENT REPLY, HELLO, SELECT and RESET are not "
                "for a sink (SELECT: use the db option)");
        return MQR_EINVAL;
    }
    if (r->closing) {
        set_why(why, why_cap, "redis: sink closed");
        return MQR_ECLOSED;
    }
    req_t *q = calloc(1, sizeof *q);
    if (!q) {
        set_why(why, why_cap, "redis: out of memory");
        return MQR_ENOMEM;
    }
    if (format_command(argc, argv, argvlen, &q->cmd, &q->cmd_len) != 0) {
        free(q);
        set_why(why, why_cap, "redis: out of memory");
        return MQR_ENOMEM;
    }

    /* Straight to the wire only when up and nobody waits before us. */
    bool waits = true;
    int rc;
    if (r->state == CONN_UP && !r->broken && !r->waiting.head) {
        rc = mqr__sink_admit(&r->sink, &waits);
    } else if (r->sink.queued < r->sink.max_queued) {
        /* down: everything waits, bounded by max_queued alone. sink.c has
         * no "admit as waiting"; this is its waiting branch. */
        r->sink.queued++;
        r->sink.requests++;
        rc = 0;
    } else {
        r->sink.errors[MQR_SINK_ERR_FULL]++;
        rc = MQR_EFULL;
    }
    if (rc != 0) {
        req_free(q);
        set_why(why, why_cap, "redis: too many commands in flight and waiting");
        return rc;
    }
    q->r = r;
    q->done = done;
    q->arg = arg;
    q->t0 = uv_hrtime();
    q->deadline_ms = q->t0 / 1000000u + r->timeout_ms;
    if (waits) {
        q->state = REQ_WAITING;
        list_push(&r->waiting, q);
    } else {
        send_req(r, q); /* a failure ends q later, from the dropped connection */
    }
    arm_timer(r);
    return 0;
}

void mqr__redis_close(mqr_redis_t *r)
{
    if (!r || r->closing) return;
    r->closing = true;
    req_t *q;
    while ((q = r->sent.head) != NULL)
        finish(r, q, MQR_SINK_RETRY, MQR_SINK_ERR_OTHER, MQR_ECLOSED, "redis: sink closed", NULL);
    while ((q = r->waiting.head) != NULL)
        finish(r, q, MQR_SINK_RETRY, MQR_SINK_ERR_OTHER, MQR_ECLOSED, "redis: sink closed", NULL);
    redisAsyncContext *ac = r->ac;
    r->ac = NULL;
    r->state = CONN_DOWN;
    if (ac) redisAsyncFree(ac); /* from inside a hiredis callback it frees on return */
    if (r->gai_active) uv_cancel((uv_req_t *)&r->gai);
    uv_close((uv_handle_t *)&r->cmd_timer, on_handle_closed);
    uv_close((uv_handle_t *)&r->conn_timer, on_handle_closed);
}
