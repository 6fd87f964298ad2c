/*
 * buf.h — a growable byte buffer, always NUL-terminated once written to.
 * On allocation failure it stays as it was and `failed` is set; the
 * caller decides what that means (the admin API answers 500, the HTTP
 * sink fails the request). Used by the admin API and the sinks.
 */
#ifndef MQR_BUF_H
#define MQR_BUF_H

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    char *p;
    size_t len, cap;
    bool failed;
} mqr_buf_t;

void mqr__buf_add(mqr_buf_t *b, const char *s, size_t n);
void mqr__buf_str(mqr_buf_t *b, const char *s);
/* Room for n bytes at least (a hint: failure is not reported). */
void mqr__buf_reserve(mqr_buf_t *b, size_t n);
void mqr__buf_printf(mqr_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Empty again, keeping its memory; free gives the memory back. */
void mqr__buf_reset(mqr_buf_t *b);
void mqr__buf_free(mqr_buf_t *b);

#endif
