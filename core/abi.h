/*
 * abi.h — reading options structs that a host compiled against another
 * version of mqrouter.h.
 *
 * Every public options struct starts with `size_t size`. The library copies
 * the part the caller's size covers over its own defaults, so an older,
 * smaller struct keeps working; a newer, larger one is accepted when the
 * bytes this library does not know are all zero. Must not: read past the
 * caller's size.
 */
#ifndef MQR_ABI_H
#define MQR_ABI_H

#include <stddef.h>

/* dst (dst_size bytes, already holding the defaults, its size field
 * included) receives the first min(src's size, dst_size) bytes of src; the
 * size field of dst keeps dst_size. Returns 0, or MQR_EINVAL when src's
 * size cannot even hold the size field, or exceeds dst_size with a non-zero
 * byte beyond it. */
int mqr__abi_copy(void *dst, size_t dst_size, const void *src);

/* For the *_init_sized functions: zeroes size bytes of the caller's struct
 * and copies the first min(size, full_size) bytes of defaults (a full
 * struct) into it, with its size field set to size. Does nothing when size
 * cannot hold the size field. */
void mqr__abi_init(void *opts, size_t size, const void *defaults, size_t full_size);

#endif
