/*
 * embed.c — a C host that embeds the mqrouter engine next to its own libuv
 * work, using only the public headers (mqrouter.h, mqrouter_lua.h).
 *
 * The host owns the loop. Its own timer plays the part of the host's work:
 * every tick it reads a "sensor" (20, 21, ... 39) and publishes it. On the
 * same loop the engine serves an MQTT listener on a free port and runs a
 * rules script, loaded from a string, that asks the host for the alert
 * limit through a C function the host registered (mq.host_limit) and
 * publishes an alert above it. The host counts alerts with a C
 * subscription, and works them from a queue with a C consumer. Then it
 * stops cleanly: engine stopped, loop run to completion, engine freed,
 * uv_loop_close() == 0.
 *
 *   embed [delay_ms]   wait delay_ms before the first tick (time for an MQTT
 *                      client to connect to the printed port and subscribe)
 *
 * Prints the counts; exits non-zero when a call fails or the counts are
 * not the ones the timeline makes (docs/c-api.md walks through it).
 */
#include <mqrouter.h>
#include <mqrouter_lua.h>

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define TICKS 20
#define TICK_MS 10
#define FIRST_VALUE 20
#define LIMIT 30
#define SETTLE_MS 3000 /* most time the queue consumer may need after the last tick */

typedef struct {
    uv_loop_t loop;
    uv_timer_t tick; /* the host's own work */
    mqr_engine_t *e;
    mqr_queue_t *jobs;
    int ticks;
    int settle_ticks;
    unsigned limit_calls; /* mq.host_limit() calls from the rules */
    unsigned alerts_seen; /* messages on alerts/# seen by the C subscription */
    unsigned jobs_done;   /* queue entries the C consumer acked */
    long jobs_sum;        /* the values they carried */
    int failed;
} host_t;

static const char rules[] = "local mq = require 'mqrouter'\n"
                            "mq.route('sensors/+/temperature', function(msg)\n"
                            "  local room = msg.topic:match('^sensors/([^/]+)/')\n"
                            "  if tonumber(msg.payload) > mq.host_limit() then\n"
                            "    mq.publish('alerts/' .. room, msg.payload, { qos = 1 })\n"
                            "  end\n"
                            "end)\n";

/* mq.host_limit(): the host's alert limit. Runs on the loop thread inside
 * the rule's protected call; the host struct comes back as the closure's
 * argument. */
static int l_host_limit(lua_State *L)
{
    host_t *h = mqr_lua_arg(L);
    h->limit_calls++;
    lua_pushinteger(L, LIMIT);
    return 1;
}

static void on_alert(void *arg, mqr_msg_t *msg)
{
    host_t *h = arg;
    (void)msg; /* borrowed for the call: mqr_msg_ref() would keep it */
    h->alerts_seen++;
}

static int on_job(void *arg, mqr_queue_t *q, const mqr_queue_delivery_t *d)
{
    host_t *h = arg;
    (void)q;
    size_t len;
    const char *payload = mqr_msg_payload(d->msg, &len);
    h->jobs_sum += strtol(payload, NULL, 10); /* a NUL follows every payload */
    h->jobs_done++;
    return MQR_QUEUE_ACK;
}

static void stop_all(host_t *h)
{
    uv_close((uv_handle_t *)&h->tick, NULL); /* the host's handle */
    mqr_engine_stop(h->e);                   /* the engine's: listener, rules timers... */
}

static void on_tick(uv_timer_t *t)
{
    host_t *h = t->data;
    if (h->ticks < TICKS) {
        char value[16];
        int n = snprintf(value, sizeof value, "%d", FIRST_VALUE + h->ticks);
        int rc = mqr_publish(h->e, "sensors/room1/temperature", value, (size_t)n, 0, 0);
        if (rc < 0) {
            fprintf(stderr, "embed: publish: %s\n", mqr_strerror(rc));
            h->failed = 1;
        }
        h->ticks++;
        return;
    }
    /* every tick published: wait for the consumer to work the alerts */
    if (h->jobs_done < h->alerts_seen && ++h->settle_ticks < SETTLE_MS / TICK_MS) return;
    stop_all(h);
}

static void on_start(uv_timer_t *t)
{
    uv_timer_start(t, on_tick, 0, TICK_MS);
}

static int check(int rc, const char *what, char *err)
{
    if (rc < 0) {
        fprintf(stderr, "embed: %s: %s (%s)\n", what, err ? err : mqr_strerror(rc),
                mqr_err_name(rc));
        free(err);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    unsigned delay_ms = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 0;
    host_t h;
    memset(&h, 0, sizeof h);
    printf("embed: mqrouter %s (built against %s)\n", mqr_version(), MQR_VERSION_STRING);

    if (uv_loop_init(&h.loop) != 0) return 1;
    uv_timer_init(&h.loop, &h.tick);
    h.tick.data = &h;

    /* an engine on the host's loop: no default listener, store in memory */
    mqr_engine_options_t opts;
    mqr_engine_options_init(&opts);
    opts.listen_port = -1;
    opts.data_dir = "";
    opts.log_level = MQR_LOG_WARN;
    char *err = NULL;
    if (check(mqr_engine_new(&h.e, &opts, &h.loop, &err), "engine", err)) return 1;

    /* an MQTT listener on a free port */
    mqr_listen_options_t lo;
    mqr_listen_options_init(&lo);
    lo.port = 0;
    mqr_listener_t *l;
    if (check(mqr_engine_listen(h.e, &lo, &l, &err), "listen", err)) return 1;
    printf("embed: listening on 127.0.0.1:%d\n", mqr_listener_port(l));
    fflush(stdout);

    /* C function for the rules, then the rules from a string */
    if (check(mqr_lua_register(h.e, "host_limit", l_host_limit, &h), "register", NULL)) return 1;
    if (check(mqr_engine_load_string(h.e, "embed-rules", rules, &err), "rules", err)) return 1;

    /* a C subscription that counts alerts, and a queue fed with them */
    if (check(mqr_subscribe(h.e, "alerts/#", on_alert, &h, NULL), "subscribe", NULL)) return 1;
    mqr_queue_options_t qo;
    mqr_queue_options_init(&qo);
    qo.name = "alert-jobs";
    if (check(mqr_queue_new(h.e, &qo, &h.jobs), "queue", NULL)) return 1;
    if (check(mqr_queue_bind(h.jobs, "alerts/#"), "bind", NULL)) return 1;
    if (check(mqr_queue_consume(h.jobs, on_job, &h, 0, NULL), "consume", NULL)) return 1;

    uv_timer_start(&h.tick, on_start, delay_ms, 0);
    uv_run(&h.loop, UV_RUN_DEFAULT); /* returns once host and engine are stopped */

    mqr_queue_info_t qi;
    mqr_queue_info_init(&qi);
    if (check(mqr_queue_stats(h.jobs, &qi), "queue stats", NULL)) return 1;
    mqr_engine_free(h.e);
    uv_run(&h.loop, UV_RUN_DEFAULT); /* whatever the free left closing */
    int closed = uv_loop_close(&h.loop);

    int alerts = TICKS - (LIMIT - FIRST_VALUE + 1); /* readings above LIMIT */
    printf("embed: host ticks %d, host_limit calls %u, alerts seen by C %u, jobs done %u, "
           "job values sum %ld, queue acked %llu depth %zu\n",
           h.ticks, h.limit_calls, h.alerts_seen, h.jobs_done, h.jobs_sum,
           (unsigned long long)qi.acked, qi.depth);
    printf("embed: uv_loop_close %s\n", closed == 0 ? "ok" : uv_err_name(closed));
    int ok = !h.failed && closed == 0 && h.ticks == TICKS && h.limit_calls == TICKS &&
             h.alerts_seen == (unsigned)alerts && h.jobs_done == (unsigned)alerts &&
             qi.acked == (unsigned)alerts && qi.depth == 0;
    printf("embed: %s\n", ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
