/* SPDX-License-Identifier: MIT */
/* Records of blocks and groups (store/block.c, group.c): whole cache
 * lines cut from 2 MiB slabs, a stack of free ones per size, never given
 * back to malloc while the store lives. */
#ifndef KVS_DAEMON_REC_H
#define KVS_DAEMON_REC_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define KVS_REC_LINES 40u            /* record sizes, in cache lines */

typedef struct kvs__recs {
  void **free[KVS_REC_LINES];         /* free records, by cache lines: a stack */
  size_t nfree[KVS_REC_LINES], made[KVS_REC_LINES], cap[KVS_REC_LINES]; /* made <= cap */
  unsigned char *next[KVS_REC_LINES], *end[KVS_REC_LINES]; /* unused part of a slab */
} kvs__recs;

#define KVS_REC_AHEAD 4u /* records asked for ahead of a pop, to be written soon */

/* The record slabs of a store: every slab made (a list through their
 * first bytes, unmapped at close) and a spare that a helper thread maps
 * and faults in ahead of need. A slab made inside a bulk put stalled it
 * for 100-700 us on the H200 host, once every 32 puts of 1,024 blocks
 * while the pool filled (HACKING.md Decision 55). The helper starts with
 * the first slab; KVSINK_SLAB_SPARE=0 in the environment: none (A/B). */
typedef struct kvs__slabs {
  void *list;
  void *spare;                /* mapped and faulted in, not in list yet */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  pthread_t th;
  int started, stop, off;
  uint64_t made, spares_taken; /* slabs in all; of them, spares */
} kvs__slabs;

void kvs__slabs_init(kvs__slabs *s);
/* Stops the helper and unmaps every slab (the records die with them). */
void kvs__slabs_close(kvs__slabs *s);
/* For tests: waits up to ms for a spare to be ready; 1 when one is. */
int kvs__slabs_spare_ready(kvs__slabs *s, unsigned ms);

/* kvs__rec_get with no free record: one cut from a slab. */
void *kvs__rec_cut(kvs__recs *r, kvs__slabs *slabs, uint32_t lines);
/* A record of `lines` cache lines (< KVS_REC_LINES), its bytes as they
 * were (the caller writes every field), from the store's slabs. NULL:
 * out of memory. (inline: once per block of a bulk put) */
static inline void *kvs__rec_get(kvs__recs *r, kvs__slabs *slabs, uint32_t lines)
{
  size_t n = r->nfree[lines];
  if (!n)
    return kvs__rec_cut(r, slabs, lines);
  void **s = r->free[lines];
  if (n > KVS_REC_AHEAD)
    for (uint32_t o = 0; o < lines; o++)
      __builtin_prefetch((const char *)s[n - 1 - KVS_REC_AHEAD] + 64u * o, 1);
  r->nfree[lines] = n - 1;
  return s[n - 1];
}
/* Give a record back (cannot fail: its stack has room for every record
 * ever made). */
static inline void kvs__rec_put(kvs__recs *r, void *rec, uint32_t lines)
{
  r->free[lines][r->nfree[lines]++] = rec;
}
/* Anonymous memory of bytes (rounded up to 2 MiB), 2 MiB-aligned so that
 * it can be huge pages (where the kernel gives them); NULL when out of
 * memory. kvs__unmap_huge takes the same bytes. (Record slabs here, the
 * CUDA backend's page-locked residual chunks.) */
void *kvs__map_huge(size_t bytes);
void kvs__unmap_huge(void *p, size_t bytes);
/* The stacks freed; the slabs stay (kvs__slabs_close). */
void kvs__recs_reset(kvs__recs *r);

#endif
