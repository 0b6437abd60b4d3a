/* 128-bit hashing for the prefix chain: two independently seeded 64-bit
 * mixes over the same bytes. Not cryptographic; collisions between honest
 * prefixes are what it must avoid, and 128 bits make that negligible. */
#ifndef KVS_DAEMON_HASH_H
#define KVS_DAEMON_HASH_H

#include <stddef.h>
#include <stdint.h>

typedef struct kvs__h128 {
  uint64_t lo, hi;
} kvs__h128;

uint64_t kvs__hash64(const void *data, size_t len, uint64_t seed);
/* Hash of data seeded by a previous 128-bit value (chains). */
kvs__h128 kvs__hash128(const void *data, size_t len, kvs__h128 seed);

#endif
