/*
 * pg.c — the PostgreSQL sink (pg.h): a pool of libpq connections on the
 * engine's loop, a queue of requests in front of them, insert rows gathered
 * into multi-row INSERT statements, reconnect with backoff, and outcomes
 * classified by SQLSTATE. Called by the bindings and the benchmark on the
 * loop thread. Must not: block (every libpq call here is one of the
 * non-blocking ones; host names are looked up first on libuv's thread pool,
 * pg_lookup.c, since libpq's own lookup blocks), fire a callback inside the
 * call that accepted the request, or put the password anywhere it can be
 * shown.
 *
 * Shape: a request (req_t) is a query or one insert row. Admitted requests
 * either wait (p->wait, FIFO, counted `queued`) or hold a slot and sit in a
 * unit of the dispatch list (p->pend): a unit is one query, or a batch of
 * rows for one table and column list (key_t). An idle connection takes the
 * first unit that may go (a query, a full batch, a batch whose window has
 * passed), sends one statement, and answers the unit's requests when the
 * result is complete. Dispatch runs from a zero timer (p->kick), never from
 * the API call itself, so callbacks always fire later; when a statement
 * completes, the connection takes its next unit before the answers run, so
 * that the server works while the callbacks do.
 */
#include "pg.h"
#include "pg_lookup.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PG_MAX_CONNS 64
#define PG_MAX_COLS 1600
#define PG_MAX_PARAMS 65535

typedef struct key key_t_;
typedef struct unit unit_t;

typedef struct req {
    struct req *next;
    mqr_pg_done_fn done;
    void *arg;
    uint64_t t0;  /* uv_hrtime() at admission */
    bool waiting; /* counted in sink.queued, not yet in a unit */
    key_t_ *key;  /* an insert row (NULL: a query) */
    char *sql;    /* a query: its text */
    int nvals;
    char **vals; /* nvals values (NULL = SQL NULL), in the same allocation */
} req_t;

/* A table and column list rows are batched by: "INSERT INTO t (a, b) VALUES ". */
struct key {
    key_t_ *next;
    unsigned refs; /* rows that point here */
    int ncols;
    char *table;  /* as given */
    char **cols;  /* as given */
    char *prefix; /* the quoted statement head */
    unit_t *open; /* the batch still taking rows, if any */
};

struct unit {
    unit_t *next;
    key_t_ *key; /* a batch (NULL: one query) */
    req_t *head, *tail;
    uint32_t n;
    uint32_t cap;    /* rows the batch may take */
    uint64_t due_ms; /* a batch goes at this uv_now() even when not full */
    bool solo;       /* a row re-run alone: takes no other rows */
};

typedef enum { C_DOWN, C_CONNECTING, C_IDLE, C_BUSY } conn_state_t;

typedef struct {
    mqr_pg_t *p;
    PGconn *pg;
    uv_poll_t *poll; /* heap: a new one per socket (closed ones free themselves) */
    int poll_fd;
    int poll_events;
    uv_timer_t timer; /* backoff, connect bound, statement bound */
    conn_state_t state;
    unit_t *unit;  /* on the wire */
    PGresult *res; /* the statement's result so far (the error, else the last) */
    uint32_t backoff_ms;
    bool ever;               /* has tried to connect before: the next attempt is a reconnect */
    mqr_pg_lookup_t *lookup; /* host names being looked up before connecting */
} conn_t;

struct mqr_pg {
    mqr_sink_t sink; /* first: a mqr_sink_t * is a mqr_pg_t * */
    uv_loop_t *loop;
    mqr_pg_opts_t o;
    char *conninfo;
    PQconninfoOption *opts; /* conninfo parsed, for connecting to looked-up addresses */
    mqr_pg_hosts_t *hosts;  /* its host names, NULL when it names none */
    char *password;         /* only to scrub it from libpq's messages */
    uv_timer_t kick;        /* dispatch soon */
    uint64_t kick_due;
    uv_timer_t tick; /* request timeouts */
    conn_t *conns;
    uint32_t nconns;
    req_t *wait_head, *wait_tail;
    unit_t *pend_head, *pend_tail;
    key_t_ *keys;
    mqr_pg_stats_t stats;
    unsigned handles; /* open handles; p is freed when it reaches 0 after close */
    bool closing;
};

static void dispatch(mqr_pg_t *p);
static void conn_connect(conn_t *c);
static void conn_drop(conn_t *c, mqr_sink_err_kind_t kind, int err, const char *why);
static void on_poll(uv_poll_t *h, int status, int events);

/* ---- small helpers ------------------------------------------------------ */

static void set_why(char *why, size_t cap, const char *msg)
{
    if (why && cap) snprintf(why, cap, "%s", msg);
}

/* Copies msg into out with the password (if any) replaced and the trailing
 * newline libpq adds removed. */
static void scrub(const mqr_pg_t *p, const char *msg, char *out, size_t cap)
{
    size_t len = 0;
    out[0] = '\0';
    if (!msg) return;
    size_t pwlen = p->password ? strlen(p->password) : 0;
    while (*msg && len + 1 < cap) {
        if (pwlen && strncmp(msg, p->password, pwlen) == 0) {
            size_t n = len + 3 < cap ? 3 : cap - 1 - len;
            memcpy(out + len, "***", n);
            len += n;
            msg += pwlen;
            continue;
        }
        out[len++] = *msg++;
    }
    out[len] = '\0';
    while (len && (out[len - 1] == '\n' || out[len - 1] == ' '))
        out[--len] = '\0';
}

/* Appends name[0..n) as a quoted identifier ("" doubles a quote) to buf,
 * which has room for 2n + 2 bytes; returns the bytes written. */
static size_t quote_ident(char *buf, const char *name, size_t n)
{
    size_t len = 0;
    buf[len++] = '"';
    for (size_t i = 0; i < n; i++) {
        if (name[i] == '"') buf[len++] = '"';
        buf[len++] = name[i];
    }
    buf[len++] = '"';
    return len;
}

static bool conn_up(const conn_t *c)
{
    return c->state == C_IDLE || c->state == C_BUSY;
}

static bool pool_up(const mqr_pg_t *p)
{
    for (uint32_t i = 0; i < p->nconns; i++)
        if (conn_up(&p->conns[i])) return true;
    return false;
}

/* ---- keys ----------------------------------------------------------------- */

static void key_free(key_t_ *k)
{
    for (int i = 0; i < k->ncols && k->cols; i++)
        free(k->cols[i]);
    free(k->cols);
    free(k->table);
    free(k->prefix);
    free(k);
}

static void key_unref(mqr_pg_t *p, key_t_ *k)
{
    if (--k->refs) return;
    for (key_t_ **pp = &p->keys; *pp; pp = &(*pp)->next) {
        if (*pp == k) {
            *pp = k->next;
            break;
        }
    }
    key_free(k);
}

/* The key for table and cols, made when new (refs 0). NULL: ENOMEM. */
static key_t_ *key_get(mqr_pg_t *p, const char *table, int ncols, const char *const *cols)
{
    for (key_t_ *k = p->keys; k; k = k->next) {
        if (k->ncols != ncols || strcmp(k->table, table) != 0) continue;
        int i = 0;
        while (i < ncols && strcmp(k->cols[i], cols[i]) == 0)
            i++;
        if (i == ncols) return k;
    }
    key_t_ *k = calloc(1, sizeof *k);
    if (!k) return NULL;
    k->ncols = ncols;
    k->table = strdup(table);
    k->cols = calloc((size_t)ncols, sizeof *k->cols);
    /* worst case every byte is a quote: 2n + 2 per name, plus separators */
    size_t cap = 2 * strlen(table) + 64;
    for (int i = 0; i < ncols; i++)
        cap += 2 * strlen(cols[i]) + 4;
    k->prefix = malloc(cap);
    bool ok = k->table && k->cols && k->prefix;
    for (int i = 0; ok && i < ncols; i++)
        ok = (k->cols[i] = strdup(cols[i])) != NULL;
    if (!ok) {
        key_free(k);
        return NULL;
    }
    size_t len = (size_t)sprintf(k->prefix, "INSERT INTO ");
    const char *dot = strchr(table, '.');
    if (dot) {
        len += quote_ident(k->prefix + len, table, (size_t)(dot - table));
        k->prefix[len++] = '.';
        len += quote_ident(k->prefix + len, dot + 1, strlen(dot + 1));
    } else {
        len += quote_ident(k->prefix + len, table, strlen(table));
    }
    k->prefix[len++] = ' ';
    k->prefix[len++] = '(';
    for (int i = 0; i < ncols; i++) {
        if (i) k->prefix[len++] = ',';
        len += quote_ident(k->prefix + len, cols[i], strlen(cols[i]));
    }
    sprintf(k->prefix + len, ") VALUES ");
    k->next = p->keys;
    p->keys = k;
    return k;
}

/* ---- answering requests ---------------------------------------------------- */

static void req_free(mqr_pg_t *p, req_t *r)
{
    if (r->key) key_unref(p, r->key);
    free(r);
}

/* Answers r (already out of every list) and frees it. */
static void req_answer(mqr_pg_t *p, req_t *r, mqr_pg_result_t *res, mqr_sink_err_kind_t kind)
{
    uint64_t ns = uv_hrtime() - r->t0;
    res->seconds = (double)ns / 1e9;
    mqr__sink_done(&p->sink, r->waiting, ns, res->outcome, kind, res->reason);
    mqr_pg_done_fn done = r->done;
    void *arg = r->arg;
    req_free(p, r);
    done(arg, res);
}

static void req_fail(mqr_pg_t *p, req_t *r, mqr_sink_outcome_t outcome, mqr_sink_err_kind_t kind,
                     int err, const char *reason)
{
    mqr_pg_result_t res = {.outcome = outcome, .err = err, .reason = reason};
    req_answer(p, r, &res, kind);
}

/* A slot was freed: the oldest waiting request takes it. Called before the
 * answer, so that a request made from the callback queues behind it. */
static void promote(mqr_pg_t *p);

static void unit_free(unit_t *u)
{
    free(u);
}

/* Detaches u's rows (u freed; it is in no list) and fails each; their
 * slots go to waiting requests first. */
static void unit_fail(mqr_pg_t *p, unit_t *u, mqr_sink_outcome_t outcome, mqr_sink_err_kind_t kind,
                      int err, const char *reason)
{
    req_t *r = u->head;
    unit_free(u);
    for (req_t *q = r; q; q = q->next)
        promote(p);
    while (r) {
        req_t *next = r->next;
        req_fail(p, r, outcome, kind, err, reason);
        r = next;
    }
}

/* ---- the dispatch list ---------------------------------------------------- */

static void pend_push(mqr_pg_t *p, unit_t *u)
{
    u->next = NULL;
    if (p->pend_tail)
        p->pend_tail->next = u;
    else
        p->pend_head = u;
    p->pend_tail = u;
}

static void pend_remove(mqr_pg_t *p, unit_t *u, unit_t *prev)
{
    if (prev)
        prev->next = u->next;
    else
        p->pend_head = u->next;
    if (p->pend_tail == u) p->pend_tail = prev;
    u->next = NULL;
}

static void kick_cb(uv_timer_t *t)
{
    dispatch(t->data);
}

/* Dispatch in delay_ms (0: next loop turn), unless due sooner already. */
static void kick_at(mqr_pg_t *p, uint64_t delay_ms)
{
    if (p->closing) return;
    uint64_t due = uv_now(p->loop) + delay_ms;
    if (uv_is_active((uv_handle_t *)&p->kick) && p->kick_due <= due) return;
    p->kick_due = due;
    uv_timer_start(&p->kick, kick_cb, delay_ms, 0);
}

static void tick_cb(uv_timer_t *t);

static void tick_ensure(mqr_pg_t *p)
{
    if (p->closing || uv_is_active((uv_handle_t *)&p->tick)) return;
    uint64_t every = p->o.timeout_ms / 4;
    if (every < 10) every = 10;
    if (every > 250) every = 250;
    uv_timer_start(&p->tick, tick_cb, every, every);
}

/* Would r join an open batch (no new unit needed)? */
static bool joins(const req_t *r)
{
    return r->key && r->key->open && r->key->open->n < r->key->open->cap;
}

/* Puts a request that holds a slot into a unit: the open batch of its key,
 * or spare (allocated here when NULL), which is freed when not used.
 * 0, or MQR_ENOMEM. */
static int place(mqr_pg_t *p, req_t *r, unit_t *spare)
{
    r->next = NULL;
    key_t_ *k = r->key;
    if (joins(r)) {
        free(spare);
        unit_t *u = k->open;
        u->tail->next = r;
        u->tail = r;
        if (++u->n == u->cap) {
            k->open = NULL;
            kick_at(p, 0);
        }
        return 0;
    }
    unit_t *u = spare ? spare : malloc(sizeof *u);
    if (!u) return MQR_ENOMEM;
    memset(u, 0, sizeof *u);
    u->key = k;
    u->head = u->tail = r;
    u->n = 1;
    u->cap = 1;
    if (k) {
        uint32_t by_params = PG_MAX_PARAMS / (uint32_t)k->ncols;
        u->cap = p->o.batch_rows < by_params ? p->o.batch_rows : by_params;
        if (u->cap < 1) u->cap = 1;
        u->due_ms = uv_now(p->loop) + p->o.batch_ms;
        if (u->cap > 1) k->open = u;
    }
    pend_push(p, u);
    kick_at(p, k && u->cap > 1 ? p->o.batch_ms : 0);
    return 0;
}

static void promote(mqr_pg_t *p)
{
    req_t *r = p->wait_head;
    if (!r || p->closing) return;
    p->wait_head = r->next;
    if (!p->wait_head) p->wait_tail = NULL;
    mqr__sink_start_waiting(&p->sink);
    r->waiting = false;
    if (place(p, r, NULL) != 0)
        req_fail(p, r, MQR_SINK_RETRY, MQR_SINK_ERR_OTHER, MQR_ENOMEM, "out of memory");
}

/* Builds and sends u's statement on c. 0, MQR_ENOMEM, or UV_ECONNRESET
 * (libpq refused: the connection is broken). */
static int send_unit(conn_t *c, unit_t *u)
{
    mqr_pg_t *p = c->p;
    const char *sql;
    char *built = NULL;
    int nparams;
    const char *const *params;
    const char **flat = NULL;
    if (!u->key) {
        req_t *r = u->head;
        sql = r->sql;
        nparams = r->nvals;
        params = (const char *const *)r->vals;
    } else {
        key_t_ *k = u->key;
        nparams = (int)u->n * k->ncols;
        /* ",$65535" is at most 7 bytes a parameter, "()," 3 a row */
        size_t cap = strlen(k->prefix) + (size_t)nparams * 7 + (size_t)u->n * 3 + 1;
        built = malloc(cap);
        flat = malloc(sizeof *flat * (size_t)nparams);
        if (!built || !flat) {
            free(built);
            free(flat);
            return MQR_ENOMEM;
        }
        size_t len = strlen(k->prefix);
        memcpy(built, k->prefix, len);
        int n = 0;
        for (req_t *r = u->head; r; r = r->next) {
            if (n) built[len++] = ',';
            built[len++] = '(';
            for (int i = 0; i < k->ncols; i++) {
                flat[n] = r->vals[i];
                n++;
                len += (size_t)sprintf(built + len, i ? ",$%d" : "$%d", n);
            }
            built[len++] = ')';
        }
        built[len] = '\0';
        sql = built;
        params = flat;
        if (u->n > 1) {
            p->stats.batches++;
            p->stats.batch_rows += u->n;
        }
    }
    int ok = PQsendQueryParams(c->pg, sql, nparams, NULL, params, NULL, NULL, 0);
    free(built);
    free(flat);
    if (!ok) return UV_ECONNRESET;
    p->stats.statements++;
    return 0;
}

static void conn_watch(conn_t *c, int events);
static void timer_statement(uv_timer_t *t);

/* Flushes what libpq buffered; watches for writable while it could not. */
static int conn_flush(conn_t *c)
{
    int f = PQflush(c->pg);
    if (f < 0) return UV_ECONNRESET;
    conn_watch(c, UV_READABLE | (f ? UV_WRITABLE : 0));
    return 0;
}

/* May u go now? If not, *next_due learns when it may. */
static bool unit_may_go(const mqr_pg_t *p, const unit_t *u, uint64_t now, uint64_t *next_due)
{
    if (!u->key || u->n >= u->cap || u->solo || p->closing) return true;
    if (now >= u->due_ms) return true;
    if (!*next_due || u->due_ms < *next_due) *next_due = u->due_ms;
    return false;
}

static void dispatch(mqr_pg_t *p)
{
    if (p->closing) return;
    uint64_t now = uv_now(p->loop);
    uint64_t next_due = 0;
    for (uint32_t i = 0; i < p->nconns && p->pend_head; i++) {
        conn_t *c = &p->conns[i];
        if (c->state != C_IDLE) continue;
        unit_t *prev = NULL, *u = p->pend_head;
        while (u && !unit_may_go(p, u, now, &next_due)) {
            prev = u;
            u = u->next;
        }
        if (!u) break;
        pend_remove(p, u, prev);
        if (u->key && u->key->open == u) u->key->open = NULL;
        c->unit = u;
        c->state = C_BUSY;
        int rc = send_unit(c, u);
        if (rc == 0) rc = conn_flush(c);
        if (rc == MQR_ENOMEM) {
            c->unit = NULL;
            c->state = C_IDLE;
            unit_fail(p, u, MQR_SINK_RETRY, MQR_SINK_ERR_OTHER, MQR_ENOMEM, "out of memory");
            if (p->closing) return;
            continue;
        }
        if (rc < 0) {
            char msg[256];
            scrub(p, PQerrorMessage(c->pg), msg, sizeof msg);
            conn_drop(c, MQR_SINK_ERR_CONNECT, UV_ECONNRESET, msg[0] ? msg : "connection lost");
            if (p->closing) return;
            continue;
        }
        uv_timer_start(&c->timer, timer_statement, p->o.timeout_ms, 0);
    }
    if (next_due && !p->closing) kick_at(p, next_due > now ? next_due - now : 0);
}

/* ---- timeouts of requests not on the wire -------------------------------- */

static void tick_cb(uv_timer_t *t)
{
    mqr_pg_t *p = t->data;
    uint64_t now = uv_hrtime();
    uint64_t limit = (uint64_t)p->o.timeout_ms * 1000000u;
    /* Gather the late ones first: callbacks may add requests. Waiting
     * requests, and the rows of a unit, are in admission order: only heads
     * can be late. */
    req_t *late_wait = NULL, **wtail = &late_wait;
    while (p->wait_head && now - p->wait_head->t0 >= limit) {
        req_t *r = p->wait_head;
        p->wait_head = r->next;
        if (!p->wait_head) p->wait_tail = NULL;
        r->next = NULL;
        *wtail = r;
        wtail = &r->next;
    }
    req_t *late = NULL, **tailp = &late;
    unit_t *prev = NULL;
    for (unit_t *u = p->pend_head, *next; u; u = next) {
        next = u->next;
        while (u->head && now - u->head->t0 >= limit) {
            req_t *r = u->head;
            u->head = r->next;
            u->n--;
            r->next = NULL;
            *tailp = r;
            tailp = &r->next;
        }
        if (u->head) {
            prev = u;
            continue;
        }
        pend_remove(p, u, prev);
        if (u->key && u->key->open == u) u->key->open = NULL;
        unit_free(u);
    }
    char msg[96];
    snprintf(msg, sizeof msg, "no answer in %u ms (waiting for a connection)", p->o.timeout_ms);
    for (req_t *r = late; r; r = r->next)
        promote(p);
    while (late_wait) {
        req_t *r = late_wait;
        late_wait = r->next;
        req_fail(p, r, MQR_SINK_RETRY, MQR_SINK_ERR_TIMEOUT, UV_ETIMEDOUT, msg);
    }
    while (late) {
        req_t *r = late;
        late = r->next;
        req_fail(p, r, MQR_SINK_RETRY, MQR_SINK_ERR_TIMEOUT, UV_ETIMEDOUT, msg);
    }
    if (p->closing) return;
    bool busy = p->wait_head || p->pend_head;
    for (uint32_t i = 0; i < p->nconns && !busy; i++)
        busy = p->conns[i].state == C_BUSY;
    if (!busy) uv_timer_stop(&p->tick);
}

/* ---- connections ------------------------------------------------------- */

/* One handle of p closed; the last one after close frees p. */
static void handle_gone(mqr_pg_t *p)
{
    if (--p->handles || !p->closing) return;
    free(p->conns);
    mqr__pg_hosts_free(p->hosts);
    PQconninfoFree(p->opts);
    free(p->conninfo);
    free(p->password);
    free(p);
}

static void poll_close_cb(uv_handle_t *h)
{
    mqr_pg_t *p = h->data;
    free(h);
    handle_gone(p);
}

static void close_cb_count(uv_handle_t *h)
{
    handle_gone(h->data);
}

static void conn_unwatch(conn_t *c)
{
    if (!c->poll) return;
    uv_poll_stop(c->poll);
    c->poll->data = c->p;
    uv_close((uv_handle_t *)c->poll, poll_close_cb);
    c->poll = NULL;
    c->poll_fd = -1;
    c->poll_events = 0;
}

/* Watches c's socket for events (a new handle when libpq changed socket). */
static void conn_watch(conn_t *c, int events)
{
    int fd = PQsocket(c->pg);
    if (c->poll && c->poll_fd != fd) conn_unwatch(c);
    if (fd < 0) return;
    if (!c->poll) {
        c->poll = malloc(sizeof *c->poll);
        if (!c->poll) return; /* the connect or statement timer still bounds it */
        if (uv_poll_init(c->p->loop, c->poll, fd) != 0) {
            free(c->poll);
            c->poll = NULL;
            return;
        }
        c->p->handles++;
        c->poll->data = c;
        c->poll_fd = fd;
        c->poll_events = 0;
    }
    if (c->poll_events != events) {
        uv_poll_start(c->poll, events, on_poll);
        c->poll_events = events;
    }
}

static void timer_backoff(uv_timer_t *t)
{
    conn_connect(t->data);
}

/* Tells the observer when the pool went up or down (reason: why down).
 * last_error is written even without a change (a first connect failing). */
static void pool_state(mqr_pg_t *p, const char *reason)
{
    bool up = pool_up(p);
    if (!up && reason) snprintf(p->sink.last_error, sizeof p->sink.last_error, "%s", reason);
    mqr__sink_set_up(&p->sink, up, reason);
}

/* Closes c's connection: its unit (if any) fails RETRY with kind/err/why,
 * and a reconnect is planned after the backoff. */
static void conn_drop(conn_t *c, mqr_sink_err_kind_t kind, int err, const char *why)
{
    mqr_pg_t *p = c->p;
    mqr__pg_lookup_cancel(c->lookup);
    c->lookup = NULL;
    conn_unwatch(c);
    if (c->res) PQclear(c->res);
    c->res = NULL;
    if (c->pg) PQfinish(c->pg);
    c->pg = NULL;
    c->state = C_DOWN;
    uv_timer_stop(&c->timer);
    unit_t *u = c->unit;
    c->unit = NULL;
    if (!p->closing) {
        uv_timer_start(&c->timer, timer_backoff, c->backoff_ms, 0);
        c->backoff_ms =
            c->backoff_ms * 2 < p->o.backoff_max_ms ? c->backoff_ms * 2 : p->o.backoff_max_ms;
        pool_state(p, why);
    }
    if (u) unit_fail(p, u, MQR_SINK_RETRY, kind, err, why);
    if (!p->closing) kick_at(p, 0);
}

static void timer_connect(uv_timer_t *t)
{
    conn_t *c = t->data;
    char msg[96];
    snprintf(msg, sizeof msg, "connect: no answer in %u ms", c->p->o.timeout_ms);
    conn_drop(c, MQR_SINK_ERR_TIMEOUT, UV_ETIMEDOUT, msg);
}

static void timer_statement(uv_timer_t *t)
{
    conn_t *c = t->data;
    char msg[96];
    snprintf(msg, sizeof msg, "no answer in %u ms (connection dropped)", c->p->o.timeout_ms);
    conn_drop(c, MQR_SINK_ERR_TIMEOUT, UV_ETIMEDOUT, msg);
}

static void ignore_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/* Goes on with the connection libpq started (NULL: out of memory). */
static void conn_started(conn_t *c, PGconn *pg)
{
    mqr_pg_t *p = c->p;
    c->pg = pg;
    if (!c->pg || PQstatus(c->pg) == CONNECTION_BAD) {
        char msg[256];
        scrub(p, c->pg ? PQerrorMessage(c->pg) : "out of memory", msg, sizeof msg);
        conn_drop(c, MQR_SINK_ERR_CONNECT, UV_ECONNREFUSED, msg);
        return;
    }
    /* libpq's default prints the server's NOTICEs on stderr */
    PQsetNoticeProcessor(c->pg, ignore_notice, NULL);
    c->state = C_CONNECTING;
    /* libpq: start as if PQconnectPoll had said PGRES_POLLING_WRITING */
    conn_watch(c, UV_WRITABLE);
    uv_timer_start(&c->timer, timer_connect, p->o.timeout_ms, 0);
}

static void on_looked_up(void *arg, PGconn *pg, int status, const char *why)
{
    conn_t *c = arg;
    c->lookup = NULL;
    if (status < 0) {
        conn_drop(c, MQR_SINK_ERR_CONNECT, status, why);
        return;
    }
    conn_started(c, pg);
}

static void conn_connect(conn_t *c)
{
    mqr_pg_t *p = c->p;
    if (p->closing) return;
    if (c->ever) p->sink.reconnects++;
    c->ever = true;
    if (!p->hosts) {
        conn_started(c, PQconnectStart(p->conninfo));
        return;
    }
    int status = 0;
    c->lookup = mqr__pg_lookup_start(p->loop, p->hosts, on_looked_up, c, &status);
    if (!c->lookup) {
        char msg[128];
        snprintf(msg, sizeof msg, "could not look up the host names: %s", uv_strerror(status));
        conn_drop(c, MQR_SINK_ERR_CONNECT, status, msg);
        return;
    }
    c->state = C_CONNECTING;
    uv_timer_start(&c->timer, timer_connect, p->o.timeout_ms, 0);
}

static void conn_connect_step(conn_t *c)
{
    mqr_pg_t *p = c->p;
    switch (PQconnectPoll(c->pg)) {
    case PGRES_POLLING_READING:
        conn_watch(c, UV_READABLE);
        return;
    case PGRES_POLLING_WRITING:
        conn_watch(c, UV_WRITABLE);
        return;
    case PGRES_POLLING_OK:
        break;
    default: {
        char msg[256];
        scrub(p, PQerrorMessage(c->pg), msg, sizeof msg);
        conn_drop(c, MQR_SINK_ERR_CONNECT, UV_ECONNREFUSED, msg);
        return;
    }
    }
    if (PQsetnonblocking(c->pg, 1) != 0) {
        conn_drop(c, MQR_SINK_ERR_CONNECT, UV_ECONNRESET,
                  "cannot make the connection non-blocking");
        return;
    }
    uv_timer_stop(&c->timer);
    c->state = C_IDLE;
    c->backoff_ms = p->o.backoff_min_ms;
    p->stats.connects++;
    conn_watch(c, UV_READABLE);
    pool_state(p, NULL);
    kick_at(p, 0);
}

/* The outcome of a failed statement, by SQLSTATE (the table in pg.h). */
static mqr_sink_outcome_t classify(const char *st, mqr_sink_err_kind_t *kind, int *err)
{
    *kind = MQR_SINK_ERR_SERVER;
    *err = UV_EAGAIN;
    if (!st || strlen(st) != 5 || strncmp(st, "08", 2) == 0) {
        *kind = MQR_SINK_ERR_CONNECT;
        *err = UV_ECONNRESET;
        return MQR_SINK_RETRY;
    }
    if (strcmp(st, "57014") == 0) {
        *kind = MQR_SINK_ERR_TIMEOUT;
        *err = UV_ETIMEDOUT;
        return MQR_SINK_RETRY;
    }
    if (strcmp(st, "40001") == 0 || strcmp(st, "40P01") == 0 || strcmp(st, "57P01") == 0 ||
        strcmp(st, "57P02") == 0 || strcmp(st, "57P03") == 0 || strcmp(st, "55P03") == 0 ||
        strncmp(st, "53", 2) == 0 || strncmp(st, "58", 2) == 0 || strncmp(st, "XX", 2) == 0)
        return MQR_SINK_RETRY;
    *kind = MQR_SINK_ERR_REQUEST;
    *err = MQR_EINVAL;
    return MQR_SINK_PERMANENT;
}

/* One line for last_error and logs: "ERROR 23505: primary (detail)", or
 * libpq's own message when the server sent none (the connection broke). */
static void error_line(const mqr_pg_t *p, const PGresult *res, PGconn *pg, char *out, size_t cap)
{
    const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    char line[512];
    if (primary) {
        const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
        snprintf(line, sizeof line, "%s %s: %s%s%s%s", sev ? sev : "ERROR", state ? state : "",
                 primary, detail ? " (" : "", detail ? detail : "", detail ? ")" : "");
    } else {
        snprintf(line, sizeof line, "%s", res ? PQresultErrorMessage(res) : PQerrorMessage(pg));
    }
    for (char *q = line; *q; q++)
        if (*q == '\n' || *q == '\t') *q = ' ';
    scrub(p, line, out, cap);
}

/* A batch refused for a bad row: each row goes back to the front of the
 * dispatch list, in order, as a unit of its own. u is freed. */
static void unit_split(mqr_pg_t *p, unit_t *u, const mqr_pg_result_t *out, mqr_sink_err_kind_t kind)
{
    unit_t *first = NULL, *last = NULL;
    req_t *r = u->head;
    while (r) {
        unit_t *s = malloc(sizeof *s);
        if (!s) break;
        req_t *next = r->next;
        memset(s, 0, sizeof *s);
        r->next = NULL;
        s->key = r->key;
        s->head = s->tail = r;
        s->n = s->cap = 1;
        s->solo = true;
        if (last)
            last->next = s;
        else
            first = s;
        last = s;
        p->stats.row_retries++;
        r = next;
    }
    if (last) {
        last->next = p->pend_head;
        p->pend_head = first;
        if (!p->pend_tail) p->pend_tail = last;
    }
    u->head = r;
    if (r) /* out of memory: the rest take the batch's answer */
        unit_fail(p, u, out->outcome, kind, out->err, out->reason);
    else
        unit_free(u);
}

/* The statement on c is complete (c->res holds its result): answer its unit. */
static void conn_complete(conn_t *c)
{
    mqr_pg_t *p = c->p;
    unit_t *u = c->unit;
    PGresult *res = c->res;
    c->unit = NULL;
    c->res = NULL;
    uv_timer_stop(&c->timer);
    c->state = C_IDLE;
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    mqr_pg_result_t out = {.outcome = MQR_SINK_OK, .batch = u->key ? (int)u->n : 0};
    mqr_sink_err_kind_t kind = MQR_SINK_ERR_OTHER;
    char msg[512];
    const char **cells = NULL;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY) {
        const char *aff = PQcmdTuples(res);
        out.affected = aff && *aff ? strtoull(aff, NULL, 10) : 0;
        if (st == PGRES_TUPLES_OK && !u->key) {
            out.rows = PQntuples(res);
            out.cols = PQnfields(res);
            size_t n = (size_t)out.cols + (size_t)out.rows * (size_t)out.cols;
            cells = malloc(sizeof *cells * (n ? n : 1));
            if (!cells) {
                out.outcome = MQR_SINK_RETRY;
                out.err = MQR_ENOMEM;
                out.reason = "out of memory";
                out.rows = out.cols = 0;
            } else {
                for (int j = 0; j < out.cols; j++)
                    cells[j] = PQfname(res, j);
                const char **v = cells + out.cols;
                for (int i = 0; i < out.rows; i++)
                    for (int j = 0; j < out.cols; j++)
                        v[i * out.cols + j] = PQgetisnull(res, i, j) ? NULL : PQgetvalue(res, i, j);
                out.names = cells;
                out.values = v;
            }
        }
    } else {
        const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
        if (state) snprintf(out.sqlstate, sizeof out.sqlstate, "%s", state);
        out.outcome = classify(state, &kind, &out.err);
        error_line(p, res, c->pg, msg, sizeof msg);
        if (!msg[0]) snprintf(msg, sizeof msg, "%s", PQresStatus(st));
        out.reason = msg;
    }
    bool broken = PQstatus(c->pg) == CONNECTION_BAD;
    char why[256] = "";
    if (broken) scrub(p, PQerrorMessage(c->pg), why, sizeof why);
    req_t *r = NULL;
    if (u->key && u->n > 1 && out.outcome == MQR_SINK_PERMANENT &&
        (strncmp(out.sqlstate, "22", 2) == 0 || strncmp(out.sqlstate, "23", 2) == 0)) {
        unit_split(p, u, &out, kind);
    } else {
        r = u->head;
        unit_free(u);
        for (req_t *q = r; q; q = q->next)
            promote(p);
    }
    /* the next statement goes out before the answers run: the server works
     * while the callbacks do (a poll callback: no API call to return from) */
    if (broken)
        conn_drop(c, MQR_SINK_ERR_CONNECT, UV_ECONNRESET, why[0] ? why : "connection lost");
    else
        dispatch(p);
    while (r) {
        req_t *next = r->next;
        mqr_pg_result_t one = out;
        req_answer(p, r, &one, kind);
        r = next;
    }
    free(cells);
    PQclear(res);
}

static void conn_read(conn_t *c)
{
    mqr_pg_t *p = c->p;
    if (!PQconsumeInput(c->pg)) {
        char msg[256];
        scrub(p, PQerrorMessage(c->pg), msg, sizeof msg);
        conn_drop(c, MQR_SINK_ERR_CONNECT, UV_ECONNRESET, msg[0] ? msg : "connection lost");
        return;
    }
    PGnotify *n;
    while ((n = PQnotifies(c->pg)) != NULL)
        PQfreemem(n);
    if (c->state != C_BUSY) {
        if (PQstatus(c->pg) == CONNECTION_BAD)
            conn_drop(c, MQR_SINK_ERR_CONNECT, UV_ECONNRESET, "connection lost");
        return;
    }
    while (!PQisBusy(c->pg)) {
        PGresult *res = PQgetResult(c->pg);
        if (!res) {
            conn_complete(c);
            return;
        }
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
            /* the connection is in the middle of a COPY that nobody feeds
             * or reads: drop it, and the statement fails for good */
            PQclear(res);
            unit_t *u = c->unit;
            c->unit = NULL;
            conn_drop(c, MQR_SINK_ERR_REQUEST, MQR_EINVAL, "COPY is not supported by the sink");
            unit_fail(p, u, MQR_SINK_PERMANENT, MQR_SINK_ERR_REQUEST, MQR_EINVAL,
                      "COPY is not supported by the sink");
            return;
        }
        /* keep the first error, else the last result */
        bool is_err = st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY;
        ExecStatusType had = c->res ? PQresultStatus(c->res) : PGRES_COMMAND_OK;
        bool have_err =
            c->res && had != PGRES_COMMAND_OK && had != PGRES_TUPLES_OK && had != PGRES_EMPTY_QUERY;
        if (have_err && !is_err) {
            PQclear(res);
        } else {
            if (c->res) PQclear(c->res);
            c->res = res;
        }
    }
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    conn_t *c = h->data;
    if (status < 0) {
        /* libuv stopped the handle (POLLERR comes as UV_EBADF: a reset
         * connection); libpq finds out what happened and says it better */
        c->poll_events = 0;
        events = UV_READABLE;
    }
    if (c->state == C_CONNECTING) {
        conn_connect_step(c);
        return;
    }
    if (c->state == C_BUSY && (events & UV_WRITABLE) && conn_flush(c) < 0) {
        conn_drop(c, MQR_SINK_ERR_CONNECT, UV_ECONNRESET, "connection lost while sending");
        return;
    }
    if (events & UV_READABLE) {
        conn_read(c);
        /* a partly sent statement still needs flushing after a read */
        if (c->state == C_BUSY && (c->poll_events & UV_WRITABLE) && conn_flush(c) < 0) {
            conn_drop(c, MQR_SINK_ERR_CONNECT, UV_ECONNRESET, "connection lost while sending");
            return;
        }
    }
    if (status < 0 && (c->state == C_IDLE || c->state == C_BUSY))
        conn_drop(c, MQR_SINK_ERR_CONNECT, UV_ECONNRESET, uv_strerror(status));
}

/* ---- the API ------------------------------------------------------------- */

static int fail_new(char **errmsg, int rc, const char *fmt, const char *detail)
{
    if (errmsg) {
        char buf[512];
        snprintf(buf, sizeof buf, fmt, detail ? detail : "");
        *errmsg = strdup(buf);
    }
    return rc;
}

/* Copies libpq's conninfo parse error msg into out with every "quoted"
 * token that is not visible in the redacted conninfo replaced by ***: such
 * an error may quote a piece of the password (a bad %-escape in a URI), and
 * the parse failed, so the password itself is not known. */
static void hide_quoted_secrets(const char *msg, const char *conninfo, char *out, size_t cap)
{
    char shown[1024];
    mqr__sink_redact(conninfo, shown, sizeof shown);
    size_t len = 0;
    while (*msg && len + 1 < cap) {
        const char *end = *msg == '"' ? strchr(msg + 1, '"') : NULL;
        if (!end) {
            out[len++] = *msg == '\n' ? ' ' : *msg;
            msg++;
            continue;
        }
        size_t n = (size_t)(end - msg - 1);
        char tok[256];
        bool visible = n < sizeof tok;
        if (visible) {
            memcpy(tok, msg + 1, n);
            tok[n] = '\0';
            visible = strstr(shown, tok) != NULL;
        }
        len += (size_t)snprintf(out + len, cap - len, "\"%.*s\"", visible ? (int)n : 3,
                                visible ? msg + 1 : "***");
        if (len >= cap) len = cap - 1;
        msg = end + 1;
    }
    out[len] = '\0';
    while (len && out[len - 1] == ' ')
        out[--len] = '\0';
}

int mqr__pg_new(uv_loop_t *loop, const mqr_pg_opts_t *o, mqr_pg_t **out, char **errmsg)
{
    if (errmsg) *errmsg = NULL;
    if (!loop || !o || !out) return fail_new(errmsg, MQR_EINVAL, "pg: missing argument%s", NULL);
    *out = NULL;
    if (!o->conninfo || !*o->conninfo)
        return fail_new(errmsg, MQR_EINVAL, "pg: no conninfo%s", NULL);
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(o->conninfo, &perr);
    if (!opts) {
        if (!perr) return fail_new(errmsg, MQR_ENOMEM, "pg: out of memory%s", NULL);
        char detail[512];
        hide_quoted_secrets(perr, o->conninfo, detail, sizeof detail);
        PQfreemem(perr);
        return fail_new(errmsg, MQR_EINVAL, "pg: bad conninfo: %s", detail);
    }
    char *password = NULL;
    bool nomem = false;
    for (PQconninfoOption *op = opts; op->keyword; op++) {
        if (strcmp(op->keyword, "password") == 0 && op->val && *op->val) {
            password = strdup(op->val);
            nomem = !password;
        }
    }
    uint32_t nconns = o->connections ? o->connections : 2;
    if (nconns > PG_MAX_CONNS) {
        PQconninfoFree(opts);
        free(password);
        return fail_new(errmsg, MQR_EINVAL, "pg: at most 64 connections%s", NULL);
    }
    mqr_pg_hosts_t *hosts = NULL;
    if (mqr__pg_hosts_new(opts, &hosts) != 0) nomem = true;
    mqr_pg_t *p = calloc(1, sizeof *p);
    if (p) p->conns = calloc(nconns, sizeof *p->conns);
    if (p) p->conninfo = strdup(o->conninfo);
    if (nomem || !p || !p->conns || !p->conninfo) {
        if (p) {
            free(p->conns);
            free(p->conninfo);
        }
        free(p);
        free(password);
        mqr__pg_hosts_free(hosts);
        PQconninfoFree(opts);
        return fail_new(errmsg, MQR_ENOMEM, "pg: out of memory%s", NULL);
    }
    p->opts = opts;
    p->hosts = hosts;
    p->password = password;
    p->loop = loop;
    p->o = *o;
    p->o.name = NULL;
    p->o.conninfo = NULL;
    p->o.connections = nconns;
    if (!p->o.max_queued) p->o.max_queued = 100000;
    if (!p->o.timeout_ms) p->o.timeout_ms = 10000;
    if (!p->o.batch_rows) p->o.batch_rows = 1000;
    if (!p->o.batch_ms) p->o.batch_ms = 5;
    if (!p->o.backoff_min_ms) p->o.backoff_min_ms = 100;
    if (!p->o.backoff_max_ms) p->o.backoff_max_ms = 5000;
    if (p->o.backoff_max_ms < p->o.backoff_min_ms) p->o.backoff_max_ms = p->o.backoff_min_ms;
    p->nconns = nconns;
    mqr__sink_init(&p->sink, "pg", o->name && *o->name ? o->name : "pg", o->conninfo,
                   nconns * p->o.batch_rows, p->o.max_queued);
    snprintf(p->sink.last_error, sizeof p->sink.last_error, "connecting");
    uv_timer_init(loop, &p->kick);
    uv_timer_init(loop, &p->tick);
    p->kick.data = p->tick.data = p;
    p->handles = 2;
    for (uint32_t i = 0; i < nconns; i++) {
        conn_t *c = &p->conns[i];
        c->p = p;
        c->poll_fd = -1;
        c->backoff_ms = p->o.backoff_min_ms;
        uv_timer_init(loop, &c->timer);
        c->timer.data = c;
        p->handles++;
        /* connect on the next loop turn: nothing happens inside new() */
        uv_timer_start(&c->timer, timer_backoff, 0, 0);
    }
    *out = p;
    return 0;
}

mqr_sink_t *mqr__pg_sink(mqr_pg_t *p)
{
    return &p->sink;
}

void mqr__pg_stats(const mqr_pg_t *p, mqr_pg_stats_t *out)
{
    *out = p->stats;
}

/* Admits r (built by the caller) and queues it. 0 or <0 (r freed). */
static int submit(mqr_pg_t *p, req_t *r)
{
    /* a unit is allocated before admission: once admitted, nothing fails */
    unit_t *spare = NULL;
    if (!joins(r) && !(spare = malloc(sizeof *spare))) {
        req_free(p, r);
        return MQR_ENOMEM;
    }
    bool waits;
    int rc = mqr__sink_admit(&p->sink, &waits);
    if (rc != 0 || waits) free(spare);
    if (rc != 0) {
        req_free(p, r);
        return rc;
    }
    r->t0 = uv_hrtime();
    r->waiting = waits;
    r->next = NULL;
    if (waits) {
        if (p->wait_tail)
            p->wait_tail->next = r;
        else
            p->wait_head = r;
        p->wait_tail = r;
    } else {
        place(p, r, spare); /* cannot fail: spare is there when needed */
    }
    tick_ensure(p);
    return 0;
}

/* Copies n values (NULL stays NULL) behind a req_t. NULL on ENOMEM. */
static req_t *req_new(int n, const char *const *values, const size_t *lengths, const char *sql,
                      char *why, size_t why_cap, int *rc)
{
    size_t bytes = sizeof(req_t) + sizeof(char *) * (size_t)n + (sql ? strlen(sql) + 1 : 0);
    for (int i = 0; i < n; i++) {
        if (!values[i]) continue;
        size_t len = lengths ? lengths[i] : strlen(values[i]);
        if (lengths && memchr(values[i], '\0', len)) {
            set_why(why, why_cap, "a value contains a NUL byte");
            *rc = MQR_EINVAL;
            return NULL;
        }
        bytes += len + 1;
    }
    req_t *r = malloc(bytes);
    if (!r) {
        set_why(why, why_cap, "out of memory");
        *rc = MQR_ENOMEM;
        return NULL;
    }
    memset(r, 0, sizeof *r);
    r->nvals = n;
    r->vals = (char **)(r + 1);
    char *at = (char *)(r->vals + n);
    for (int i = 0; i < n; i++) {
        if (!values[i]) {
            r->vals[i] = NULL;
            continue;
        }
        size_t len = lengths ? lengths[i] : strlen(values[i]);
        memcpy(at, values[i], len);
        at[len] = '\0';
        r->vals[i] = at;
        at += len + 1;
    }
    if (sql) {
        r->sql = at;
        strcpy(at, sql);
    }
    return r;
}

int mqr__pg_query(mqr_pg_t *p, const char *sql, int nparams, const char *const *values,
                  const size_t *lengths, mqr_pg_done_fn done, void *arg, char *why, size_t why_cap)
{
    if (!p || !sql || !*sql || !done || nparams < 0 || nparams > PG_MAX_PARAMS ||
        (nparams && !values)) {
        set_why(why, why_cap,
                !p || !done     ? "missing argument"
                : !sql || !*sql ? "empty statement"
                                : "bad parameter count");
        return MQR_EINVAL;
    }
    if (p->closing) {
        set_why(why, why_cap, "closed");
        return MQR_ECLOSED;
    }
    int rc = 0;
    req_t *r = req_new(nparams, values, lengths, sql, why, why_cap, &rc);
    if (!r) return rc;
    r->done = done;
    r->arg = arg;
    rc = submit(p, r);
    if (rc == MQR_EFULL) set_why(why, why_cap, "full: in flight and waiting at their bounds");
    return rc;
}

int mqr__pg_insert(mqr_pg_t *p, const char *table, int ncols, const char *const *cols,
                   const char *const *values, mqr_pg_done_fn done, void *arg, char *why,
                   size_t why_cap)
{
    if (!p || !done || !values || !cols) {
        set_why(why, why_cap, "missing argument");
        return MQR_EINVAL;
    }
    if (ncols < 1 || ncols > PG_MAX_COLS) {
        set_why(why, why_cap, "a row has 1 to 1600 columns");
        return MQR_EINVAL;
    }
    if (!table || !*table || table[0] == '.' || table[strlen(table) - 1] == '.') {
        set_why(why, why_cap, "empty table name");
        return MQR_EINVAL;
    }
    for (int i = 0; i < ncols; i++) {
        if (!cols[i] || !*cols[i]) {
            set_why(why, why_cap, "empty column name");
            return MQR_EINVAL;
        }
    }
    if (p->closing) {
        set_why(why, why_cap, "closed");
        return MQR_ECLOSED;
    }
    int rc = 0;
    req_t *r = req_new(ncols, values, NULL, NULL, why, why_cap, &rc);
    if (!r) return rc;
    r->done = done;
    r->arg = arg;
    r->key = key_get(p, table, ncols, cols);
    if (!r->key) {
        free(r);
        set_why(why, why_cap, "out of memory");
        return MQR_ENOMEM;
    }
    r->key->refs++;
    rc = submit(p, r);
    if (rc == MQR_EFULL) set_why(why, why_cap, "full: in flight and waiting at their bounds");
    return rc;
}

void mqr__pg_close(mqr_pg_t *p)
{
    if (!p || p->closing) return;
    p->closing = true;
    uv_timer_stop(&p->kick);
    uv_timer_stop(&p->tick);
    const char *why = "closed";
    /* on the wire first, then units, then waiting: each answered once */
    for (uint32_t i = 0; i < p->nconns; i++) {
        conn_t *c = &p->conns[i];
        conn_drop(c, MQR_SINK_ERR_OTHER, MQR_ECLOSED, why);
    }
    while (p->pend_head) {
        unit_t *u = p->pend_head;
        pend_remove(p, u, NULL);
        if (u->key && u->key->open == u) u->key->open = NULL;
        unit_fail(p, u, MQR_SINK_RETRY, MQR_SINK_ERR_OTHER, MQR_ECLOSED, why);
    }
    while (p->wait_head) {
        req_t *r = p->wait_head;
        p->wait_head = r->next;
        if (!p->wait_head) p->wait_tail = NULL;
        req_fail(p, r, MQR_SINK_RETRY, MQR_SINK_ERR_OTHER, MQR_ECLOSED, why);
    }
    mqr__sink_set_up(&p->sink, false, why);
    uv_close((uv_handle_t *)&p->kick, close_cb_count);
    uv_close((uv_handle_t *)&p->tick, close_cb_count);
    for (uint32_t i = 0; i < p->nconns; i++) {
        p->conns[i].timer.data = p;
        uv_close((uv_handle_t *)&p->conns[i].timer, close_cb_count);
    }
}
