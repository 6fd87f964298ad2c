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
 * size field of dst keeps dst_size. min_size is the size of the oldest
 * layout the library still reads (the struct as first released). Returns
 * 0; MQR_ETOOLARGE when src's size exceeds dst_size with a non-zero byte
 * beyond it (a newer host asking for something this library lacks);
 * MQR_EINVAL when it is below min_size. */
int mqr__abi_copy(void *dst, size_t dst_size, size_t min_size, const void *src);

/* For the *_init_sized functions: zeroes size bytes of the caller's struct
 * and copies the first min(size, full_size) bytes of defaults (a full
 * struct) into it, with its size field set to size. Does nothing when size
 * cannot hold the size field. */
void mqr__abi_init(void *opts, size_t size, const void *defaults, size_t full_size);

#endif
