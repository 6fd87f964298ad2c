/*
 * log.h — levelled logging for the whole process.
 *
 * Lines go to stderr (or to a host's callback) as
 * "2026-11-23T12:00:00.123Z INFO  [listener] text". The level is process-wide
 * because every engine in a process shares stderr anyway.
 */
#ifndef MQR_LOG_H
#define MQR_LOG_H

#include "mqrouter.h"

#include <stdarg.h>

extern int mqr__log_level;

void mqr__log_set_level(int level);

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
void mqr__log_write(int level, const char *component, const char *fmt, ...);

#define mqr__log(level, component, ...)                                                            \
    do {                                                                                           \
        if ((level) <= mqr__log_level) mqr__log_write((level), (component), __VA_ARGS__);          \
    } while (0)

#define MQR_LOG_E(comp, ...) mqr__log(MQR_LOG_ERROR, comp, __VA_ARGS__)
#define MQR_LOG_W(comp, ...) mqr__log(MQR_LOG_WARN, comp, __VA_ARGS__)
#define MQR_LOG_I(comp, ...) mqr__log(MQR_LOG_INFO, comp, __VA_ARGS__)
#define MQR_LOG_D(comp, ...) mqr__log(MQR_LOG_DEBUG, comp, __VA_ARGS__)

#endif
