/*
 * log.c — formats one log line and hands it to stderr or the host's sink.
 */
#include "log.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

int mqr__log_level = MQR_LOG_INFO;
static mqr_log_fn log_sink;
static void *log_sink_arg;

void mqr__log_set_level(int level)
{
    mqr__log_level = level;
}

void mqr_log_set_level(int level)
{
    mqr__log_level = level;
}

void mqr_log_set_sink(mqr_log_fn fn, void *arg)
{
    log_sink = fn;
    log_sink_arg = arg;
}

int mqr_log_level_parse(const char *name)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++)
        if (name && strcmp(name, names[i]) == 0) return i;
    return -1;
}

void mqr__log_write(int level, const char *component, const char *fmt, ...)
{
    static const char *const tags[] = {"ERROR", "WARN ", "INFO ", "DEBUG"};
    char text[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    /* one entry, one line: a line break inside (a Lua error's, a peer's
     * text) would read as the start of another entry */
    for (char *c = text; *c; c++)
        if (*c == '\n' || *c == '\r') *c = ' ';
    if (log_sink) {
        log_sink(log_sink_arg, level, component, text);
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(stderr, "%s.%03ldZ %s [%s] %s\n", when, ts.tv_nsec / 1000000L,
            tags[level < 0   ? 0
                 : level > 3 ? 3
                             : level],
            component, text);
}
