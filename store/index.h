/* SPDX-License-Identifier: MIT */
/* The prefix index: (128-bit chain hash, layer) -> block, open addressing
 * with linear probing and backward-shift deletion (no tombstones). */
#ifndef KVS_DAEMON_INDEX_H
#define KVS_DAEMON_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include "store/hash.h"

typedef struct kvs__ikey {
  kvs__h128 h;
  uint32_t layer;
} kvs__ikey;

typedef struct kvs__index kvs__index;

int kvs__index_init(kvs__index **out);
void kvs__index_close(kvs__index *ix);
void *kvs__index_find(const kvs__index *ix, const kvs__ikey *k);
/* Start loading k's home slot: a put looks up a thousand keys at random
 * places of a table larger than the caches, so it asks for all of them
 * before the first look-up (memory-level parallelism). */
void kvs__index_prefetch(const kvs__index *ix, const kvs__ikey *k);
/* Make room so that `extra` more inserts cannot fail (-ENOMEM). */
int kvs__index_reserve(kvs__index *ix, size_t extra);
/* 0, -EEXIST (key present; nothing changed) or -ENOMEM. */
int kvs__index_insert(kvs__index *ix, const kvs__ikey *k, void *val);
/* One probe for a look-up and an insert: the value slot of k, holding
 * the value filed under k, or NULL where k would go; kvs__index_fill
 * files val there. Valid until the index next changes; room must have
 * been reserved (kvs__index_reserve), as filling never grows the table.
 * A put files its fresh blocks while it looks its blocks up, probing a
 * random slot once per block instead of twice. */
void **kvs__index_slot(kvs__index *ix, const kvs__ikey *k);
void kvs__index_fill(kvs__index *ix, void **slot, const kvs__ikey *k, void *val);
/* 0 or -ENOENT. */
int kvs__index_remove(kvs__index *ix, const kvs__ikey *k);
/* Keys filed. */
size_t kvs__index_count(const kvs__index *ix);

#endif
