/*
 * errmsg.h — error text for callers: the `char **errmsg` convention of the
 * public API (a malloc'd reason the caller frees; NULL errmsg = not wanted)
 * and a formatted string of any length.
 */
#ifndef MQR_ERRMSG_H
#define MQR_ERRMSG_H

#include <stdarg.h>

/* *errmsg = the formatted text (malloc'd; NULL when out of memory). Does
 * nothing when errmsg is NULL. */
void mqr__errmsg(char **errmsg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The formatted text, malloc'd, whatever its length; NULL on failure. */
char *mqr__vstrfmt(const char *fmt, va_list ap);
char *mqr__strfmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
