/* SPDX-License-Identifier: MIT */
#include "store/index.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

typedef struct slot {
  kvs__ikey key;
  void *val;              /* NULL: empty */
} slot;

struct kvs__index {
  slot *t;
  size_t cap;             /* power of two */
  size_t count;
};

static inline size_t home(const kvs__index *ix, const kvs__ikey *k)
{
  uint64_t h = k->h.lo ^ ((uint64_t)k->layer * 0x9e3779b97f4a7c15ull);
  h ^= h >> 29;
  return (size_t)h & (ix->cap - 1);
}

static inline int key_eq(const kvs__ikey *a, const kvs__ikey *b)
{
  return a->h.lo == b->h.lo && a->h.hi == b->h.hi && a->layer == b->layer;
}

/* Tables of 2 MiB and more are their own mapping, in huge pages where the
 * kernel has them (MADV_HUGEPAGE), and faulted in at once: a put's
 * thousand look-ups land on random pages of a table of several MiB, and
 * with 4 KiB pages nearly each one missed the TLB, or faulted a page in
 * (tests/store/bench_put). */
#define HUGE_TABLE (2u << 20)

static slot *table_new(size_t cap)
{
  size_t bytes = cap * sizeof(slot);
  if (bytes < HUGE_TABLE)
    return calloc(cap, sizeof(slot));
  void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    return NULL;
  madvise(p, bytes, MADV_HUGEPAGE); /* a hint: 4 KiB pages work too */
  memset(p, 0, bytes);              /* fault it in here, not inside puts */
  return p;
}

static void table_free(slot *t, size_t cap)
{
  if (t && cap * sizeof(slot) >= HUGE_TABLE)
    munmap(t, cap * sizeof(slot));
  else
    free(t);
}

int kvs__index_init(kvs__index **out)
{
  kvs__index *ix = calloc(1, sizeof(*ix));
  if (!ix)
    return -ENOMEM;
  ix->cap = 64;
  ix->t = table_new(ix->cap);
  if (!ix->t) {
    free(ix);
    return -ENOMEM;
  }
  *out = ix;
  return 0;
}

void kvs__index_close(kvs__index *ix)
{
  if (!ix)
    return;
  table_free(ix->t, ix->cap);
  free(ix);
}

/* (inline: a put calls it a few thousand times, a call each cost more
 * than the probe of a mostly empty table) */
static inline __attribute__((always_inline)) size_t probe(const kvs__index *ix,
                                                          const kvs__ikey *k)
{
  size_t i = home(ix, k);
  while (ix->t[i].val && !key_eq(&ix->t[i].key, k))
    i = (i + 1) & (ix->cap - 1);
  return i;
}

void *kvs__index_find(const kvs__index *ix, const kvs__ikey *k)
{
  return ix->t[probe(ix, k)].val;
}

void kvs__index_prefetch(const kvs__index *ix, const kvs__ikey *k)
{
  /* and the slot after it, which a removal reads (backward shift) and
   * which lies in the next cache line half the time */
  size_t i = home(ix, k);
  __builtin_prefetch(&ix->t[i]);
  __builtin_prefetch(&ix->t[(i + 1) & (ix->cap - 1)]);
}

static int grow(kvs__index *ix, size_t cap)
{
  slot *nt = table_new(cap);
  if (!nt)
    return -ENOMEM;
  slot *ot = ix->t;
  size_t ocap = ix->cap;
  ix->t = nt;
  ix->cap = cap;
  for (size_t i = 0; i < ocap; i++)
    if (ot[i].val)
      ix->t[probe(ix, &ot[i].key)] = ot[i];
  table_free(ot, ocap);
  return 0;
}

int kvs__index_reserve(kvs__index *ix, size_t extra)
{
  size_t need = ix->count + extra;
  if (need < ix->count)
    return -ENOMEM;
  size_t cap = ix->cap;
  /* Load factor at most 3/4 keeps probe runs short. */
  while (need > cap / 4 * 3) {
    if (cap > SIZE_MAX / 2 / sizeof(slot))
      return -ENOMEM;
    cap *= 2;
  }
  return cap == ix->cap ? 0 : grow(ix, cap);
}

int kvs__index_insert(kvs__index *ix, const kvs__ikey *k, void *val)
{
  if (!val)
    return -EINVAL;
  /* room first (a grow moves slots), then one probe finds the key or the
   * empty slot it goes to */
  int rc = kvs__index_reserve(ix, 1);
  if (rc < 0)
    return rc;
  size_t i = probe(ix, k);
  if (ix->t[i].val)
    return -EEXIST;
  ix->t[i].key = *k;
  ix->t[i].val = val;
  ix->count++;
  return 0;
}

void **kvs__index_slot(kvs__index *ix, const kvs__ikey *k)
{
  return &ix->t[probe(ix, k)].val;
}

void kvs__index_fill(kvs__index *ix, void **val_slot, const kvs__ikey *k, void *val)
{
  slot *t = (slot *)(void *)((unsigned char *)val_slot - offsetof(slot, val));
  t->key = *k;
  t->val = val;
  ix->count++;
}

size_t kvs__index_count(const kvs__index *ix) { return ix->count; }

int kvs__index_remove(kvs__index *ix, const kvs__ikey *k)
{
  size_t mask = ix->cap - 1, i = probe(ix, k);
  if (!ix->t[i].val)
    return -ENOENT;
  /* Backward shift: pull later entries of the run into the hole when their
   * home lies cyclically at or before it. */
  size_t j = i;
  for (;;) {
    j = (j + 1) & mask;
    if (!ix->t[j].val)
      break;
    size_t h = home(ix, &ix->t[j].key);
    if (((j - h) & mask) >= ((j - i) & mask)) {
      ix->t[i] = ix->t[j];
      i = j;
    }
  }
  ix->t[i].val = NULL;
  ix->count--;
  return 0;
}

