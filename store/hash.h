/* SPDX-License-Identifier: MIT */
/* A fast 64-bit hash for fingerprints of trusted data (sink profiles) and
 * the index's bucket choice. Not cryptographic: block identity uses the
 * keyed BLAKE2b of space.c. */
#ifndef KVS_DAEMON_HASH_H
#define KVS_DAEMON_HASH_H

#include <stddef.h>
#include <stdint.h>

typedef struct kvs__h128 {
  uint64_t lo, hi;
} kvs__h128;

uint64_t kvs__hash64(const void *data, size_t len, uint64_t seed);

#endif
