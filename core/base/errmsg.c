/*
 * errmsg.c — error text for callers (errmsg.h). One copy of the formatting
 * every module used to carry its own of.
 */
#include "errmsg.h"

#include <stdio.h>
#include <stdlib.h>

char *mqr__vstrfmt(const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0) return NULL;
    char *buf = malloc((size_t)n + 1);
    if (buf) vsnprintf(buf, (size_t)n + 1, fmt, ap);
    return buf;
}

char *mqr__strfmt(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *text = mqr__vstrfmt(fmt, ap);
    va_end(ap);
    return text;
}

void mqr__errmsg(char **errmsg, const char *fmt, ...)
{
    if (!errmsg) return;
    va_list ap;
    va_start(ap, fmt);
    *errmsg = mqr__vstrfmt(fmt, ap);
    va_end(ap);
}
