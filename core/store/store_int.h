/*
 * store_int.h — what the files of core/store/ share beyond store.h: the
 * statements store.c prepares once with the connection (the hot ones:
 * transactions, retained messages, meta) and how to reach them. Only
 * core/store/ includes it.
 */
#ifndef MQR_STORE_INT_H
#define MQR_STORE_INT_H

#include "store.h"

#include <sqlite3.h>

enum {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_RETAIN_PUT,
    ST_RETAIN_DEL,
    ST_RETAIN_LOAD,
    ST_RETAIN_EXPIRE,
    ST_RETAIN_COUNT,
    ST_META_GET,
    ST_META_PUT,
    ST_META_DEL,
    ST_COUNT_
};

/* One of the statements above, prepared and reset; NULL once closing. */
sqlite3_stmt *mqr__store_stmt(mqr_store_t *s, int which);

#endif
