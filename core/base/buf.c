/*
 * buf.c — the growable byte buffer of buf.h.
 */
#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void mqr__buf_add(mqr_buf_t *b, const char *s, size_t n)
{
    if (b->failed) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->failed = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void mqr__buf_reserve(mqr_buf_t *b, size_t n)
{
    if (b->failed || b->cap >= n + 1) return;
    char *p = realloc(b->p, n + 1);
    if (!p) return; /* not an error: adding grows it later */
    if (!b->p) p[0] = '\0';
    b->p = p;
    b->cap = n + 1;
}

void mqr__buf_str(mqr_buf_t *b, const char *s)
{
    mqr__buf_add(b, s, strlen(s));
}

void mqr__buf_printf(mqr_buf_t *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof tmp) {
        mqr__buf_add(b, tmp, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        b->failed = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    mqr__buf_add(b, big, (size_t)n);
    free(big);
}

void mqr__buf_reset(mqr_buf_t *b)
{
    b->len = 0;
    b->failed = false;
    if (b->p) b->p[0] = '\0';
}

void mqr__buf_free(mqr_buf_t *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}
