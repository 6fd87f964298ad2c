/*
 * message.c — building, sharing and freeing messages.
 *
 * A message is one malloc: the struct, then origin name, topic, payload and
 * properties packed behind it, so fan-out and freeing cost nothing per part.
 */
#include "message.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MQR_MAX_PAYLOAD 268435455u /* largest MQTT remaining length */

/* ---- a per-thread pool of small message blocks ----------------------------
 *
 * Most messages are small and live for one routing; malloc and free cost
 * about 200 instructions a message on the publish path (callgrind,
 * bench_inprocess), the pool a fraction of that. Block sizes follow glibc's
 * chunks (16-byte steps, 8 bytes of each for its header): class c holds
 * blocks of 16 * (c + 1) + 8 bytes, the most a chunk of 16 * (c + 2) bytes
 * gives, so a pooled message takes the chunk malloc would have given it
 * and queued messages cost no more memory. Each thread keeps up to POOL_KEEP blocks of
 * each size: a message freed on a worker goes to that worker's pool, so
 * nothing is shared; a thread's pool is freed when it exits. Under
 * AddressSanitizer there is no pool: a freed message must stay poisoned
 * for use-after-free to show. */
#if defined(__SANITIZE_ADDRESS__)
#define POOL_ON 0
#else
#define POOL_ON 1
#endif
#define POOL_SIZES 16 /* blocks of 24, 40, ... 264 bytes */
#define POOL_BLOCK(c) (16u * ((c) + 1) + 8)
#define POOL_LARGEST POOL_BLOCK(POOL_SIZES - 1)
#define POOL_KEEP 32

#if POOL_ON
/* Not even declared under ASan: LeakSanitizer's exit-time scan has crashed
 * (signal 11 in its tracer) on a thread-local variable of the Lua module,
 * which the busted host loads with dlopen. */
typedef struct {
    unsigned n[POOL_SIZES];
    void *blocks[POOL_SIZES][POOL_KEEP];
} msg_pool_t;

static _Thread_local msg_pool_t *pool;
static pthread_key_t pool_key;
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;
static bool pool_key_ok;

static void pool_free(void *p)
{
    msg_pool_t *mp = p;
    for (unsigned c = 0; c < POOL_SIZES; c++)
        for (unsigned i = 0; i < mp->n[c]; i++)
            free(mp->blocks[c][i]);
    free(mp);
}

static void pool_key_make(void)
{
    pool_key_ok = pthread_key_create(&pool_key, pool_free) == 0;
}

/* This thread's pool, made on first use; NULL without one. */
static msg_pool_t *pool_get(void)
{
    if (pool) return pool;
    pthread_once(&pool_once, pool_key_make);
    if (!pool_key_ok) return NULL;
    msg_pool_t *mp = calloc(1, sizeof *mp);
    if (mp && pthread_setspecific(pool_key, mp) != 0) {
        free(mp);
        mp = NULL;
    }
    return pool = mp;
}
#endif

/* A block for total bytes; *size_class gets its size class + 1, or 0 for
 * a plain allocation (too big for the pool). */
static mqr_msg_t *block_alloc(size_t total, uint8_t *size_class)
{
    if (total > POOL_LARGEST) {
        *size_class = 0;
        return malloc(total);
    }
    unsigned c =
        total <= POOL_BLOCK(0) ? 0 : (unsigned)((total - 9) / 16); /* the smallest that fits */
    *size_class = (uint8_t)(c + 1);
#if POOL_ON
    if (pool && pool->n[c]) return pool->blocks[c][--pool->n[c]];
#endif
    return malloc(POOL_BLOCK(c));
}

static void block_free(mqr_msg_t *m)
{
#if POOL_ON
    if (m->size_class) {
        msg_pool_t *mp = pool_get();
        unsigned c = m->size_class - 1u;
        if (mp && mp->n[c] < POOL_KEEP) {
            mp->blocks[c][mp->n[c]++] = m;
            return;
        }
    }
#endif
    free(m);
}

uint64_t mqr__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t mqr__now_ms_coarse(void)
{
#ifdef CLOCK_REALTIME_COARSE
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
#else
    return mqr__now_ms();
#endif
}

mqr_msg_t *mqr__msg_new(const mqr_msg_init_t *in)
{
    if (in->topic_len > UINT16_MAX || in->payload_len > MQR_MAX_PAYLOAD ||
        in->props_len > MQR_MAX_PAYLOAD)
        return NULL;
    size_t name_len = in->origin_name_len ? in->origin_name_len
                      : in->origin_name   ? strlen(in->origin_name)
                                          : 0;
    size_t total =
        sizeof(mqr_msg_t) + name_len + 1 + in->topic_len + 1 + in->payload_len + 1 + in->props_len;
    uint8_t size_class;
    mqr_msg_t *m = block_alloc(total, &size_class);
    if (!m) return NULL;
    m->size_class = size_class;
    char *p = m->data;

    m->origin_name = p;
    if (name_len) memcpy(p, in->origin_name, name_len);
    p[name_len] = '\0';
    p += name_len + 1;

    m->topic = p;
    memcpy(p, in->topic, in->topic_len);
    p[in->topic_len] = '\0';
    p += in->topic_len + 1;

    m->payload = (const uint8_t *)p;
    if (in->payload_len) memcpy(p, in->payload, in->payload_len);
    p[in->payload_len] = '\0';
    p += in->payload_len + 1;

    m->props = (const uint8_t *)p;
    if (in->props_len) memcpy(p, in->props, in->props_len);

    m->refs = 1;
    m->qos = (uint8_t)in->qos;
    m->retain = in->retain;
    m->origin = (uint8_t)in->origin;
    m->topic_len = (uint16_t)in->topic_len;
    m->payload_len = (uint32_t)in->payload_len;
    m->props_len = (uint32_t)in->props_len;
    m->expiry_s = in->expiry_s;
    m->created_ms = in->created_ms ? in->created_ms : mqr__now_ms_coarse();
    m->origin_conn = in->origin_conn;
    return m;
}

void mqr_msg_ref(mqr_msg_t *msg)
{
    msg->refs++;
}

void mqr_msg_unref(mqr_msg_t *msg)
{
    if (msg && --msg->refs == 0) block_free(msg);
}

const char *mqr_msg_topic(const mqr_msg_t *msg, size_t *len)
{
    if (len) *len = msg->topic_len;
    return msg->topic;
}

const void *mqr_msg_payload(const mqr_msg_t *msg, size_t *len)
{
    if (len) *len = msg->payload_len;
    return msg->payload;
}

int mqr_msg_qos(const mqr_msg_t *msg)
{
    return msg->qos;
}

int mqr_msg_retain(const mqr_msg_t *msg)
{
    return msg->retain;
}

const char *mqr__origin_kind_name(unsigned origin)
{
    static const char *const kinds[] = {"listener", "session", "lua", "c", "store"};
    return origin < sizeof kinds / sizeof kinds[0] ? kinds[origin] : "unknown";
}

const char *mqr_msg_origin_kind(const mqr_msg_t *msg)
{
    return mqr__origin_kind_name(msg->origin);
}

const char *mqr_msg_origin_name(const mqr_msg_t *msg)
{
    return msg->origin_name;
}
