/*
 * clock.h — the monotonic time modules read (ms): the loop's, or a fake one
 * a rule test sets (bindings' mqrouter.testing) so that queue deadlines and
 * timeouts can be moved by hand.
 *
 * The engine owns one clock and hands its address to each module at init;
 * setting the fake one later reaches every module at once. Loop thread only.
 */
#ifndef MQR_CLOCK_H
#define MQR_CLOCK_H

#include <stdint.h>
#include <uv.h>

typedef struct mqr_clock {
    uv_loop_t *loop;
    uint64_t (*fake)(void *arg); /* NULL: the loop's time */
    void *fake_arg;
} mqr_clock_t;

static inline uint64_t mqr__clock_now(const mqr_clock_t *c)
{
    return c->fake ? c->fake(c->fake_arg) : uv_now(c->loop);
}

#endif
