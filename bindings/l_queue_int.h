/*
 * l_queue_int.h — what the l_queue*.c files share: the records of a declared
 * queue, its consumers and the handler-call frames, and the helpers more
 * than one of them calls. Internal to those files: nothing else includes
 * it (script.h declares what the rest of the bindings call).
 */
#ifndef MQR_L_QUEUE_INT_H
#define MQR_L_QUEUE_INT_H

#include "script.h"

#include "decl.h"
#include "queue.h"

#include <math.h>

#define QUEUE_MT "mqrouter.queue"
#define CONSUMER_MT "mqrouter.queue.consumer"
#define QMSG_MT "mqrouter.queue.message"
#define TX_MT "mqrouter.queue.transaction"

typedef struct l_queue l_queue_t;
typedef struct l_qcons l_qcons_t;
typedef struct l_qframe l_qframe_t;

/* A declared queue. Referenced by the host's list (while declared), every
 * queue handle, every queue message and every consumer of any state. */
struct l_queue {
    l_decl_t d; /* first: the host's list is of l_decl_t */
    l_qhost_t *qh;
    mqr_queue_t *q; /* a reference: calls on a closed queue say ECLOSED */
    unsigned refs;
    bool priorities;     /* per-message priorities allowed */
    bool dedup;          /* publish ids allowed */
    char *dead_topic;    /* MQTT topic for dead letters; NULL = none */
    char *pending_topic; /* declared by a loading state: used once it takes over */
    bool has_pending;
    /* other tunable settings declared by a loading state (reconfigure at
     * takeover) */
    mqr_queue_config_t pending_cfg;
    char *pending_key;
    uint64_t dead_published, dead_publish_failed;
};

/* A consumer handler call in progress, on the C stack. Calls nest (a
 * handler's msg:nack() may dead-letter, whose MQTT publish may run a route
 * that pulls from another queue), so they form a stack; msg:defer() marks
 * its message in the frame of the call that handed it out. */
enum { QF_DEFERRED = 1 };
struct l_qframe {
    l_qframe_t *prev;
    uint64_t serial;
    size_t n;
    uint8_t flags[MQR_QUEUE_MAX_BATCH];
};

/* A consumer a state declared. Freed when its state closes. */
struct l_qcons {
    l_qcons_t *next; /* qh->consumers */
    l_qhost_t *qh;
    l_state_t *st;
    l_queue_t *lq;
    mqr_queue_consumer_t *c; /* NULL until started, and once cancelled or closed */
    int fn_ref;
    unsigned prefetch, batch;
    bool cancelled;
    l_qcons_t **ud; /* the Lua handle's slot */
    char *name;
    uint64_t calls, messages, errors, budget_errors, nacked, deferred;
};

struct l_qhost {
    mqr_script_t *h;
    l_decl_list_t queues;
    l_qcons_t *consumers;
    l_qframe_t *frame;
    uint64_t serial;
};

/* A message handed to Lua by a consumer or q:receive. */
typedef struct {
    mqr_msg_t *msg; /* a reference */
    l_queue_t *lq;  /* a reference */
    uint64_t id;
    uint64_t serial; /* the handler call that got it; 0 = pulled */
    uint16_t idx;
    uint16_t attempts;
    uint8_t prio;
} l_qmsg_t;

typedef struct {
    mqr_engine_t *e;
    uint64_t txid;
    bool done;
} l_tx_t;

extern const char *const mqr__lqueue_prio_names[MQR_PRIO_LEVELS];

static inline void lq_set_num(lua_State *L, const char *key, double v)
{
    lua_pushnumber(L, v);
    lua_setfield(L, -2, key);
}

/* seconds -> ms for a core setting: at least 1, HUGE_VAL = UINT32_MAX (never) */
static inline uint32_t lq_secs_ms(double s)
{
    if (s == HUGE_VAL) return UINT32_MAX;
    double ms = ceil(s * 1000.0);
    return ms < 1 ? 1 : ms >= (double)UINT32_MAX ? UINT32_MAX - 1 : (uint32_t)ms;
}

/* l_queue.c */
void mqr__lqueue_unref(l_queue_t *lq);
l_queue_t *mqr__lqueue_check(lua_State *L, int idx);

/* l_queue_publish.c: q:publish, q:publish_batch and what tx:publish shares */
extern const luaL_Reg mqr__lqueue_publish_methods[];
/* seconds at idx -> ms for a TTL: > 0, or -1 for false (never); what names
 * the option in the error. Raises on misuse. */
int64_t mqr__lqueue_opt_ttl(lua_State *L, int idx, const char *what);
/* Builds the message and options of a publish: payload at pidx (a string, or
 * a message to enqueue as it is), options at oidx, of those in known (NULL-
 * terminated). Returns the message (a reference) or NULL having pushed nil,
 * err, name (*nret = 3). Raises on misuse, naming fname. */
mqr_msg_t *mqr__lqueue_build(lua_State *L, l_queue_t *lq, int pidx, int oidx,
                             mqr_queue_pub_opts_t *o, const char *fname, const char *const *known,
                             int *nret);

/* l_queue_msg.c: the message a handler or q:receive gets */
void mqr__lqueue_msg_register(lua_State *L);
/* Pushes a queue message for delivery d of lq, handed out by handler call
 * serial (0: pulled) at position idx of its batch. [-0, +1] */
void mqr__lqueue_push_msg(lua_State *L, l_queue_t *lq, const mqr_queue_delivery_t *d,
                          uint64_t serial, size_t idx);

/* l_queue_consumer.c: q:consume, q:receive and the consumer handles */
extern const luaL_Reg mqr__lqueue_consumer_methods[];
void mqr__lqueue_consumer_register(lua_State *L);
/* Starts the core consumer of c unless cancelled, started or its queue is
 * closed: 0, or a negative MQR_E*. */
int mqr__lqueue_consumer_start(l_qcons_t *c);
/* Cancels c, detaches its Lua handle and frees it; the caller unlinked it. */
void mqr__lqueue_consumer_free(l_qcons_t *c);

/* l_queue_dlq.c: dead letters */
extern const luaL_Reg mqr__lqueue_dlq_methods[];
/* the core's on_dead hook: publishes the dead letter to lq's dead_letter topic */
void mqr__lqueue_on_dead(void *arg, mqr_queue_t *q, const mqr_queue_dead_t *dd);

/* l_queue_stats.c */
extern const luaL_Reg mqr__lqueue_stats_methods[];

/* l_queue_tx.c */
void mqr__lqueue_tx_register(lua_State *L);

#endif
