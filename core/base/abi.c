/*
 * abi.c — reading options structs sized by the host (abi.h).
 *
 * The size field is the first member of every public options struct; it is
 * read through memcpy so that no struct type is assumed for the caller's
 * bytes. Must not: touch a byte of the caller's struct beyond its size.
 */
#include "abi.h"

#include "mqrouter.h"

#include <string.h>

int mqr__abi_copy(void *dst, size_t dst_size, size_t min_size, const void *src)
{
    size_t size;
    memcpy(&size, src, sizeof size);
    if (size < sizeof size || size < min_size) return MQR_EINVAL;
    if (size > dst_size) {
        const unsigned char *p = (const unsigned char *)src;
        for (size_t i = dst_size; i < size; i++)
            if (p[i]) return MQR_ETOOLARGE;
        size = dst_size;
    }
    memcpy((char *)dst + sizeof size, (const char *)src + sizeof size, size - sizeof size);
    memcpy(dst, &dst_size, sizeof dst_size);
    return 0;
}

void mqr__abi_init(void *opts, size_t size, const void *defaults, size_t full_size)
{
    if (!opts || size < sizeof(size_t)) return;
    memset(opts, 0, size);
    memcpy(opts, defaults, size < full_size ? size : full_size);
    memcpy(opts, &size, sizeof size);
}
