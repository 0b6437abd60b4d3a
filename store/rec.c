/* SPDX-License-Identifier: MIT */
/* Records come from 2 MiB slabs, faulted in by one mmap (MAP_POPULATE),
 * and go back to a free list per size (in cache lines), never to malloc:
 * a bulk put makes a thousand records, and one page fault per 16 of
 * them, or malloc trimming and refaulting its heap when a full pool
 * evicts as many, cost more than the rest of the put's host work
 * (tests/store/bench_put); and a stale LRU entry may still read a block
 * record that was freed (block.c). The slabs stay until the store
 * closes. */
#include "store/rec.h"

#include <string.h>
#include <sys/mman.h>

#define REC_SLAB ((size_t)2 << 20)

static void *link_of(const void *rec)
{
  void *n;
  memcpy(&n, (const unsigned char *)rec + KVS_REC_LINK, sizeof(n));
  return n;
}

void *kvs__rec_get(kvs__recs *r, void **slabs, uint32_t lines)
{
  const size_t rs = (size_t)lines * 64u;
  void *b = r->free[lines];
  if (b) {
    void *nx = link_of(b);
    r->free[lines] = nx;
    if (nx) /* the next record's lines, to be written soon */
      for (size_t o = 0; o < rs; o += 64)
        __builtin_prefetch((const char *)nx + o, 1);
    return b;
  }
  /* never used: cut from the slab, which is not linked ahead of time
   * (writing a link into each record of a fresh slab missed the cache
   * 8,000 times in a row) */
  if (!r->next[lines] || r->next[lines] + rs > r->end[lines]) {
    unsigned char *p = mmap(NULL, REC_SLAB, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED)
      return NULL;
    *(void **)p = *slabs; /* the slab list lives in the slabs' first bytes */
    *slabs = p;
    r->next[lines] = p + 64;
    r->end[lines] = p + REC_SLAB;
  }
  b = r->next[lines];
  r->next[lines] += rs;
  for (size_t o = 0; r->next[lines] + rs <= r->end[lines] && o < rs; o += 64)
    __builtin_prefetch(r->next[lines] + o, 1);
  return b;
}

void kvs__rec_put(kvs__recs *r, void *rec, uint32_t lines)
{
  memcpy((unsigned char *)rec + KVS_REC_LINK, &r->free[lines], sizeof(void *));
  r->free[lines] = rec;
}

void kvs__rec_slabs_free(void **slabs)
{
  while (*slabs) {
    void *p = *slabs;
    *slabs = *(void **)p;
    munmap(p, REC_SLAB);
  }
}
