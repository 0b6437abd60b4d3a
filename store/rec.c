/* SPDX-License-Identifier: MIT */
/* Records come from 2 MiB slabs and go back to a stack of free ones per
 * size (in cache lines), never to malloc: a bulk put makes a thousand
 * records, and one page fault per 16 of them, or malloc trimming and
 * refaulting its heap when a full pool evicts as many, cost more than
 * the rest of the put's host work (tests/store/bench_put); and a stale
 * LRU entry may still read a block record that was freed (block.c). The
 * slabs stay until the store closes. A stack of pointers, not a list
 * linked through the records: popping a list waits for each record's
 * link to come from memory before the next pop (a third of a bulk put's
 * record time), a stack's next entries are known ahead. */
#include "store/rec.h"

#include <stdlib.h>
#include <sys/mman.h>

#define REC_SLAB ((size_t)2 << 20)
#define CUT_AHEAD 32u /* and ahead of a cut from a slab (lines from memory) */

/* A fresh slab, 2 MiB-aligned so that it can be one huge page (where
 * the kernel gives them on madvise), faulted in here rather than line by
 * line inside a put: in 4 KiB pages, a slab's 512 faults were a third
 * of a put's host time while the pool filled (bench_put cold). */
void *kvs__map_huge(size_t bytes)
{
  const size_t huge = (size_t)2 << 20;
  bytes = (bytes + huge - 1) & ~(huge - 1);
  unsigned char *m = mmap(NULL, bytes + huge, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED)
    return NULL;
  unsigned char *p = (unsigned char *)(((uintptr_t)m + huge - 1) & ~(uintptr_t)(huge - 1));
  if (p > m)
    munmap(m, (size_t)(p - m));
  if (p + bytes < m + bytes + huge)
    munmap(p + bytes, (size_t)(m + bytes + huge - (p + bytes)));
  madvise(p, bytes, MADV_HUGEPAGE); /* a hint: 4 KiB pages work too */
  return p;
}

void kvs__unmap_huge(void *p, size_t bytes)
{
  const size_t huge = (size_t)2 << 20;
  munmap(p, (bytes + huge - 1) & ~(huge - 1));
}

static unsigned char *slab_new(void **slabs)
{
  unsigned char *p = kvs__map_huge(REC_SLAB);
  if (!p)
    return NULL;
  for (size_t o = 0; o < REC_SLAB; o += 4096)
    p[o] = 0;
  *(void **)p = *slabs; /* the slab list lives in the slabs' first bytes */
  *slabs = p;
  return p;
}

void *kvs__rec_cut(kvs__recs *r, void **slabs, uint32_t lines)
{
  const size_t rs = (size_t)lines * 64u;
  /* the stack grows first, so that every record made has a place there
   * (kvs__rec_put cannot fail) */
  if (r->made[lines] == r->cap[lines]) {
    size_t cap = r->cap[lines] ? 2 * r->cap[lines] : 1024;
    void **s = realloc(r->free[lines], cap * sizeof(*s));
    if (!s)
      return NULL;
    r->free[lines] = s;
    r->cap[lines] = cap;
  }
  if (!r->next[lines] || r->next[lines] + rs > r->end[lines]) {
    unsigned char *p = slab_new(slabs);
    if (!p)
      return NULL;
    r->next[lines] = p + 64;
    r->end[lines] = p + REC_SLAB;
  }
  void *b = r->next[lines];
  r->next[lines] += rs;
  r->made[lines]++;
  /* a fresh slab's lines come from memory, not the caches: asked for
   * far enough ahead that they arrive in parallel */
  for (size_t o = 0; r->next[lines] + CUT_AHEAD * rs <= r->end[lines] && o < rs; o += 64)
    __builtin_prefetch(r->next[lines] + CUT_AHEAD * rs + o, 1);
  return b;
}

void kvs__recs_reset(kvs__recs *r)
{
  for (uint32_t i = 0; i < KVS_REC_LINES; i++)
    free(r->free[i]);
  *r = (kvs__recs){0};
}

void kvs__rec_slabs_free(void **slabs)
{
  while (*slabs) {
    void *p = *slabs;
    *slabs = *(void **)p;
    munmap(p, REC_SLAB);
  }
}
