/* SPDX-License-Identifier: MIT */
/* The block lifecycle: reserve slots (evicting), publish, find, reference,
 * LRU, evict, drop. Eviction looks first in the LRU of the slot class that
 * needs room (memcached's per-class LRU), so a put of one block size takes
 * back its own class's old blocks before it touches another space's. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "store/store_int.h"

static void lru_unlink(kvs__store *st, kvs__block *b)
{
  if (b->prev)
    b->prev->next = b->next;
  else
    st->lru.old = b->next;
  if (b->next)
    b->next->prev = b->prev;
  else
    st->lru.young = b->prev;
  b->prev = b->next = NULL;
  kvs__lru *c = &st->cls_lru[b->sp->blk_cls];
  if (b->cprev)
    b->cprev->cnext = b->cnext;
  else
    c->old = b->cnext;
  if (b->cnext)
    b->cnext->cprev = b->cprev;
  else
    c->young = b->cprev;
  b->cprev = b->cnext = NULL;
}

static void lru_push(kvs__store *st, kvs__block *b)
{
  b->next = NULL;
  b->prev = st->lru.young;
  if (st->lru.young)
    st->lru.young->next = b;
  else
    st->lru.old = b;
  st->lru.young = b;
  kvs__lru *c = &st->cls_lru[b->sp->blk_cls];
  b->cnext = NULL;
  b->cprev = c->young;
  if (c->young)
    c->young->cnext = b;
  else
    c->old = b;
  c->young = b;
}

void kvs__blk_ref(kvs__block *b)
{
  if (b->refs++ == 0) {
    lru_unlink(b->sp->st, b);
    b->sp->pinned++;
    b->sp->st->pinned++;
  }
}

void kvs__blk_unref(kvs__block *b)
{
  if (--b->refs == 0) {
    lru_push(b->sp->st, b);
    b->sp->pinned--;
    b->sp->st->pinned--;
  }
}

void kvs__blk_touch(kvs__block *b)
{
  if (b->refs == 0) {
    lru_unlink(b->sp->st, b);
    lru_push(b->sp->st, b);
  }
}

static uint64_t raw_bytes(const kvs__space *sp)
{
  return (uint64_t)sp->qp.group * sp->qp.channels * 2u * 2u;
}

static void account(kvs__block *b, int sign)
{
  kvs__space *sp = b->sp;
  kvs__store *st = sp->st;
  uint64_t d = (uint64_t)(int64_t)sign;  /* wraps to subtract */
  sp->blocks += d;
  st->blocks += d;
  st->sink_rows += d * b->n_sinks;
  st->stored_raw += d * raw_bytes(sp);
  st->stored += d * (sp->qbytes + (uint64_t)b->n_sinks * sp->rowbytes);
  st->outliers_kept +=
      d * (uint64_t)(sp->qp.group - b->n_sinks) * (sp->qp.k_outliers + sp->qp.v_outliers);
}

void kvs__blk_view(const kvs__block *b, const uint32_t *prefix, kvs__block_view *v)
{
  memset(v, 0, sizeof(*v));
  v->space = &b->sp->key;
  v->blk = b;
  memcpy(v->id, &b->key.h.lo, 8);
  memcpy(v->id + 8, &b->key.h.hi, 8);
  v->layer = b->key.layer;
  v->group_index = b->g;
  v->group = b->sp->qp.group;
  v->tokens = b->tok;
  v->prefix = prefix;
}

void kvs__blk_publish(kvs__block *b, const uint32_t *prefix)
{
  kvs__space *sp = b->sp;
  kvs__store *st = sp->st;
  b->indexed = kvs__index_insert(st->ix, &b->key, b) == 0;
  account(b, 1);
  if (b->refs) {
    sp->pinned++;
    st->pinned++;
  } else {
    lru_push(st, b);
  }
  if (prefix && b->indexed && st->hooks.on_publish) {
    kvs__block_view v;
    kvs__blk_view(b, prefix, &v);
    st->hooks.on_publish(&v, st->hooks.arg);
  }
}

kvs__block *kvs__blk_find(kvs__store *st, kvs__h128 h, kvs__h128 parent, uint32_t layer,
                          const uint32_t *tok)
{
  kvs__ikey key = {h, layer};
  kvs__block *b = kvs__index_find(st->ix, &key);
  /* Identity is the whole prefix: the parent's chain hash and these ids. */
  if (!b || b->parent.lo != parent.lo || b->parent.hi != parent.hi ||
      memcmp(b->tok, tok, (size_t)b->sp->qp.group * sizeof(*tok)) != 0)
    return NULL;
  return b;
}

void kvs__blk_prefetch(const kvs__store *st, kvs__h128 h, uint32_t layer)
{
  kvs__ikey key = {h, layer};
  kvs__index_prefetch(st->ix, &key);
}

/* Records of blocks without sink rows (all but a sequence's first few)
 * come from 2 MiB slabs, faulted in by one mmap (MAP_POPULATE), and go
 * back to a free list per G, never to malloc: a bulk put makes a thousand
 * records, and one page fault per 16 of them, or malloc trimming and
 * refaulting its heap when a full pool evicts as many, cost more than the
 * rest of the put's host work (tests/store/bench_put). The slabs stay
 * until the store closes: as many records as blocks were ever cached at
 * once. Records with sink rows vary in size and are malloc'd. */
#define REC_SLAB ((size_t)2 << 20)

static size_t rec_size(uint32_t G)
{
  return (sizeof(kvs__block) + (size_t)G * sizeof(uint32_t) + 15u) & ~(size_t)15u;
}

static kvs__block *rec_get(kvs__store *st, uint32_t ns, uint32_t G)
{
  if (ns)
    return malloc(sizeof(kvs__block) + ns * sizeof(uint16_t *) + (size_t)G * sizeof(uint32_t));
  kvs__block *b = st->blk_free[G];
  const size_t rs = rec_size(G);
  if (b) {
    st->blk_free[G] = b->next;
    if (b->next) /* the next record's lines, to be written soon */
      for (size_t o = 0; o < rs; o += 64)
        __builtin_prefetch((const char *)b->next + o, 1);
    return b;
  }
  /* never used: cut from the slab, which is not linked ahead of time
   * (writing a link into each record of a fresh slab missed the cache
   * 8,000 times in a row) */
  if (!st->rec_next[G] || st->rec_next[G] + rs > st->rec_end[G]) {
    unsigned char *p = mmap(NULL, REC_SLAB, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED)
      return NULL;
    *(void **)p = st->rec_slabs; /* the slab list lives in the slabs' first bytes */
    st->rec_slabs = p;
    st->rec_next[G] = p + 64;
    st->rec_end[G] = p + REC_SLAB;
  }
  b = (kvs__block *)st->rec_next[G];
  st->rec_next[G] += rs;
  for (size_t o = 0; st->rec_next[G] + rs <= st->rec_end[G] && o < rs; o += 64)
    __builtin_prefetch(st->rec_next[G] + o, 1);
  return b;
}

void kvs__blk_drop(kvs__block *b)
{
  kvs__store *st = b->sp->st;
  kvs__pool *p = st->pool;
  if (b->data)
    kvs__pool_free(p, b->data);
  for (uint32_t i = 0; i < b->n_sinks; i++)
    if (b->rows[i])
      kvs__pool_free(p, b->rows[i]);
  if (b->n_sinks == 0) {
    uint32_t G = b->sp->qp.group;
    b->next = st->blk_free[G];
    st->blk_free[G] = b;
    return;
  }
  free(b); /* its token ids too: one allocation */
}

void kvs__blk_cache_free(kvs__store *st)
{
  while (st->rec_slabs) {
    void *p = st->rec_slabs;
    st->rec_slabs = *(void **)p;
    munmap(p, REC_SLAB);
  }
  memset(st->blk_free, 0, sizeof(st->blk_free));
  memset(st->rec_next, 0, sizeof(st->rec_next));
  memset(st->rec_end, 0, sizeof(st->rec_end));
}

/* Drop an unreferenced published block from the cache. */
static void blk_evict(kvs__block *b)
{
  kvs__space *sp = b->sp;
  kvs__store *st = sp->st;
  if (b->indexed && st->hooks.on_evict) {
    kvs__block_view v;
    kvs__blk_view(b, NULL, &v);
    st->hooks.on_evict(&v, st->hooks.arg);
  }
  lru_unlink(st, b);
  if (b->indexed)
    kvs__index_remove(st->ix, &b->key);
  account(b, -1);
  kvs__blk_drop(b);
  if (sp->refs == 0 && sp->blocks == 0)
    kvs__space_free(sp);
}

/* A slot of cls: first the class's own old blocks, then the oldest of all. */
static int reserve(kvs__store *st, int cls, void **slot)
{
  for (;;) {
    int rc = kvs__pool_alloc(st->pool, cls, slot);
    if (rc != -ENOSPC)
      return rc;
    kvs__block *v = st->cls_lru[cls].old ? st->cls_lru[cls].old : st->lru.old;
    if (!v)
      return -ENOSPC;
    /* the next victims lie at random places: ask two evictions ahead for
     * the index slot (the record is here, asked for last time) and three
     * ahead for the record, so their misses overlap this work */
    const int own = st->cls_lru[cls].old == v;
    kvs__block *n1 = own ? v->cnext : v->next, *n2 = n1 ? (own ? n1->cnext : n1->next) : NULL;
    if (n2) {
      kvs__blk_prefetch(st, n2->key.h, n2->key.layer);
      __builtin_prefetch(own ? n2->cnext : n2->next);
    }
    blk_evict(v);
    st->evictions++;
  }
}

int kvs__blk_new(kvs__space *sp, kvs__h128 h, kvs__h128 parent, uint32_t layer, uint32_t g,
                 const uint32_t *tok, uint64_t sink_mask, kvs__block **out)
{
  uint32_t ns = (uint32_t)__builtin_popcountll(sink_mask);
  /* the struct, its sink-row slots and its token ids in one allocation
   * (a bulk put makes a thousand blocks) */
  size_t head = sizeof(kvs__block) + ns * sizeof(uint16_t *);
  kvs__block *b = rec_get(sp->st, ns, sp->qp.group);
  if (!b)
    return -ENOMEM;
  memset(b, 0, head);
  b->tok = (uint32_t *)((unsigned char *)b + head);
  memcpy(b->tok, tok, (size_t)sp->qp.group * sizeof(*tok));
  b->key = (kvs__ikey){h, layer};
  b->parent = parent;
  b->g = g;
  b->sp = sp;
  b->sink_mask = sink_mask;
  b->n_sinks = ns;
  int rc = reserve(sp->st, sp->blk_cls, &b->data);
  for (uint32_t r = 0; rc == 0 && r < ns; r++)
    rc = reserve(sp->st, sp->row_cls, (void **)&b->rows[r]);
  if (rc < 0) {
    kvs__blk_drop(b);
    return rc;
  }
  *out = b;
  return 0;
}

uint64_t kvs__blk_evict_all(kvs__store *st)
{
  uint64_t n = 0;
  while (st->lru.old) {
    blk_evict(st->lru.old);
    n++;
  }
  st->evictions += n;
  return n;
}
