/* SPDX-License-Identifier: MIT */
/* Records of blocks and groups (store/block.c, group.c): whole cache
 * lines cut from 2 MiB slabs, a free list per size, never given back to
 * malloc while the store lives. */
#ifndef KVS_DAEMON_REC_H
#define KVS_DAEMON_REC_H

#include <stddef.h>
#include <stdint.h>

#define KVS_REC_LINES 40u            /* record sizes, in cache lines */
/* A free record's link lies at this byte offset: a block's data pointer,
 * never its stamp, which a stale LRU entry still reads (block.c). */
#define KVS_REC_LINK 16u

typedef struct kvs__recs {
  void *free[KVS_REC_LINES];          /* free records, by cache lines */
  unsigned char *next[KVS_REC_LINES], *end[KVS_REC_LINES]; /* unused part of a slab */
} kvs__recs;

/* A record of `lines` cache lines (< KVS_REC_LINES), its bytes as they
 * were (the caller writes every field); *slabs is the list of all slabs
 * of the store. NULL: out of memory. */
void *kvs__rec_get(kvs__recs *r, void **slabs, uint32_t lines);
void kvs__rec_put(kvs__recs *r, void *rec, uint32_t lines);
/* Unmap every slab (at close); the free lists of each kvs__recs given
 * must be reset by the caller. */
void kvs__rec_slabs_free(void **slabs);

#endif
