/* SPDX-License-Identifier: MIT */
/* proto/ internals shared by the codec files; not for other folders. */
#ifndef KVS_PROTO_INTERNAL_H
#define KVS_PROTO_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* Deepest msgpack nesting accepted (msgpack-c's own stack holds 32). */
#define KVS__MP_MAX_DEPTH 16

/* Walk one msgpack value starting at p[*pos] without allocating: checks
 * that it is well formed, nests at most KVS__MP_MAX_DEPTH deep, and that no
 * container declares more elements than bytes remain (so msgpack-c, which
 * allocates a container's slots before reading them, can never be asked
 * for more than a few times the payload size). Advances *pos past it.
 * Returns 0 or -EBADMSG. */
int kvs__mp_skip(const uint8_t *p, size_t len, size_t *pos, int depth);

/* In a payload already checked by kvs__mp_skip whose top level is a map,
 * find the raw bytes of the value under string key `key`. Returns 1 and
 * sets *off and *vlen when found, 0 when absent. */
int kvs__mp_map_find_raw(const uint8_t *p, size_t len, const char *key,
                         size_t *off, size_t *vlen);

/* Every u64 field of kvs__stats, by its C name (also its wire name). */
#define KVS__STATS_U64(X) KVS_STATS_U64_FIELDS(X)


#endif
