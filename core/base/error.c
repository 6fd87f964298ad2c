/*
 * error.c — text and names for every error code the public API returns.
 *
 * One list (MQR_ERRNO_MAP in mqrouter.h) feeds both functions; anything not
 * on it is a libuv (negative errno) code and is handed to libuv.
 */
#include "mqrouter.h"

#include <uv.h>

const char *mqr_version(void)
{
    return MQR_VERSION_STRING;
}

unsigned mqr_version_hex(void)
{
    return MQR_VERSION_HEX;
}

const char *mqr_strerror(int err)
{
    switch (err) {
#define XX(name, val, msg)                                                                         \
    case MQR_##name:                                                                               \
        return msg;
        MQR_ERRNO_MAP(XX)
#undef XX
    case 0:
        return "success";
#define XX(code, _) case UV_##code:
        UV_ERRNO_MAP(XX)
#undef XX
        return uv_strerror(err);
    default:
        /* libuv would malloc (and leak) a text for a code it does not know */
        return "unknown error";
    }
}

const char *mqr_err_name(int err)
{
    switch (err) {
#define XX(name, val, msg)                                                                         \
    case MQR_##name:                                                                               \
        return #name;
        MQR_ERRNO_MAP(XX)
#undef XX
    case 0:
        return "OK";
#define XX(code, _) case UV_##code:
        UV_ERRNO_MAP(XX)
#undef XX
        return uv_err_name(err);
    default:
        return "EUNKNOWN"; /* as for mqr_strerror: never libuv's malloc'd text */
    }
}
