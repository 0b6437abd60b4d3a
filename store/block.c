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
  if (!b || b->pending || b->parent.lo != parent.lo || b->parent.hi != parent.hi ||
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
  /* whole cache lines, so that an eviction reads one (kvs__block) */
  return (sizeof(kvs__block) + (size_t)G * sizeof(uint32_t) + 63u) & ~(size_t)63u;
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

/* Drop an unreferenced published block from the cache; with keep, its
 * data slot goes to *keep instead of back to the pool. */
static void blk_evict(kvs__block *b, void **keep)
{
  kvs__space *sp = b->sp;
  kvs__store *st = sp->st;
  /* every eviction takes the oldest of its class: the look-ahead's
   * window of class ev_cls loses its first block */
  if (sp->blk_cls == st->ev_cls && (st->ev_dist || st->ev_ahead)) {
    if (st->ev_dist)
      st->ev_dist--;
    else
      st->ev_ahead = NULL;
  }
  if (b->indexed && st->hooks.on_evict) {
    kvs__block_view v;
    kvs__blk_view(b, NULL, &v);
    st->hooks.on_evict(&v, st->hooks.arg);
  }
  lru_unlink(st, b);
  if (b->indexed)
    kvs__index_remove(st->ix, &b->key);
  account(b, -1);
  if (keep) {
    *keep = b->data;
    b->data = NULL;
  }
  kvs__blk_drop(b);
  if (sp->refs == 0 && sp->blocks == 0)
    kvs__space_free(sp);
}

/* The next victims lie at random places, their index slots too. The
 * walk along the class LRU (one record per eviction, each asked for one
 * eviction before it is read) asks for the index slot of the victim
 * EV_AHEAD places ahead, so that its removal does not wait. Valid within
 * one kvs__blk_slots call, where only evictions change the lists. */
#define EV_AHEAD 16u

static void look_ahead(kvs__store *st, int cls, kvs__block *v)
{
  if (st->ev_cls != cls || (!st->ev_dist && !st->ev_ahead)) {
    st->ev_cls = cls;
    st->ev_ahead = v;
    st->ev_dist = 0;
  }
  /* several steps when starting, then one per eviction */
  while (st->ev_dist < EV_AHEAD && st->ev_ahead) {
    kvs__block *a = st->ev_ahead;
    kvs__blk_prefetch(st, a->key.h, a->key.layer);
    st->ev_ahead = a->cnext;
    if (st->ev_ahead)
      __builtin_prefetch(st->ev_ahead);
    st->ev_dist++;
  }
}

/* A slot of cls: first a free one, then the class's own old blocks, then
 * the oldest of all. When the class is full (no free slot, no free run
 * of chunks) and the victim is its own, the slot that freeing it and
 * allocating again would give is the victim's: every unit of the class
 * is full, so its unit becomes the only one with a free slot, and that
 * slot is on top of its stack (units of one slot would go back as free
 * chunks: those take the pool's way). So the slot changes hands
 * directly: same victims, same slots, and no pool bookkeeping per block
 * for a put into a full pool. */
static int reserve(kvs__store *st, int cls, void **slot)
{
  for (;;) {
    /* a class found full stays full until something is freed: a put into
     * a full pool asks the pool once, not once per block */
    if (st->full_cls != cls + 1 || st->full_frees != kvs__pool_frees(st->pool)) {
      int rc = kvs__pool_alloc(st->pool, cls, slot);
      if (rc != -ENOSPC)
        return rc;
      st->full_cls = cls + 1;
      st->full_frees = kvs__pool_frees(st->pool);
    }
    kvs__block *v = st->cls_lru[cls].old ? st->cls_lru[cls].old : st->lru.old;
    if (!v)
      return -ENOSPC;
    const int own = st->cls_lru[cls].old == v;
    if (own) {
      look_ahead(st, cls, v);
    } else {
      /* the global LRU (rare): ask one eviction ahead */
      kvs__block *n1 = v->next;
      if (n1) {
        kvs__blk_prefetch(st, n1->key.h, n1->key.layer);
        __builtin_prefetch(n1->next);
      }
    }
    st->evictions++;
    /* (its sink rows would go back first were they of cls too) */
    if (own && kvs__pool_class_slots(st->pool, cls) > 1 &&
        (v->n_sinks == 0 || v->sp->row_cls != cls)) {
      blk_evict(v, slot);
      return 0;
    }
    blk_evict(v, NULL);
  }
}

/* A record for a new block: every field written (no memset), no slots
 * yet, not in the index. */
static kvs__block *rec_new(kvs__space *sp, kvs__h128 h, kvs__h128 parent, uint32_t layer,
                           uint32_t g, const uint32_t *tok, uint64_t sink_mask)
{
  /* most blocks have no sink rows (popcount is a libcall without -mpopcnt) */
  uint32_t ns = sink_mask ? (uint32_t)__builtin_popcountll(sink_mask) : 0;
  /* the struct, its sink-row slots and its token ids in one allocation
   * (a bulk put makes a thousand blocks) */
  size_t head = sizeof(kvs__block) + ns * sizeof(uint16_t *);
  kvs__block *b = rec_get(sp->st, ns, sp->qp.group);
  if (!b)
    return NULL;
  b->key = (kvs__ikey){h, layer};
  b->sp = sp;
  b->data = NULL;
  b->prev = b->next = b->cprev = b->cnext = NULL;
  b->parent = parent;
  b->tok = (uint32_t *)((unsigned char *)b + head);
  memcpy(b->tok, tok, (size_t)sp->qp.group * sizeof(*tok));
  b->sink_mask = sink_mask;
  b->refs = 0;
  b->n_sinks = ns;
  b->g = g;
  b->indexed = 0;
  b->pending = 0;
  for (uint32_t r = 0; r < ns; r++)
    b->rows[r] = NULL;
  return b;
}

int kvs__blk_slots(kvs__block *const *bs, uint32_t n)
{
  if (!n)
    return 0;
  kvs__store *st = bs[0]->sp->st;
  int rc = 0;
  st->ev_ahead = NULL;
  st->ev_dist = 0;
  st->full_cls = 0; /* classes may have changed since the last call */
  for (uint32_t i = 0; i < n && rc == 0; i++) {
    kvs__block *b = bs[i];
    rc = reserve(st, b->sp->blk_cls, &b->data);
    for (uint32_t r = 0; rc == 0 && r < b->n_sinks; r++)
      rc = reserve(st, b->sp->row_cls, (void **)&b->rows[r]);
  }
  st->ev_ahead = NULL; /* the lists change after this call */
  st->ev_dist = 0;
  return rc;
}

int kvs__blk_new(kvs__space *sp, kvs__h128 h, kvs__h128 parent, uint32_t layer, uint32_t g,
                 const uint32_t *tok, uint64_t sink_mask, kvs__block **out)
{
  kvs__block *b = rec_new(sp, h, parent, layer, g, tok, sink_mask);
  if (!b)
    return -ENOMEM;
  int rc = kvs__blk_slots(&b, 1);
  if (rc < 0) {
    kvs__blk_drop(b);
    return rc;
  }
  *out = b;
  return 0;
}

kvs__block *kvs__blk_claim(kvs__space *sp, kvs__h128 h, kvs__h128 parent, uint32_t layer,
                           uint32_t g, const uint32_t *tok, uint64_t sink_mask, int *fresh)
{
  kvs__store *st = sp->st;
  kvs__ikey key = {h, layer};
  void **slot = kvs__index_slot(st->ix, &key);
  kvs__block *o = *slot;
  /* identity is the whole prefix, as in kvs__blk_find; a block this put
   * filed itself is never a hit (it holds nothing yet) */
  if (o && !o->pending && o->parent.lo == parent.lo && o->parent.hi == parent.hi &&
      memcmp(o->tok, tok, (size_t)sp->qp.group * sizeof(*tok)) == 0) {
    *fresh = 0;
    return o;
  }
  kvs__block *b = rec_new(sp, h, parent, layer, g, tok, sink_mask);
  if (!b)
    return NULL;
  *fresh = 1;
  b->pending = 1;
  if (!o) {
    kvs__index_fill(st->ix, slot, &b->key, b);
    b->indexed = 1;
  }
  return b;
}

void kvs__blk_unclaim(kvs__block *b)
{
  if (b->indexed)
    kvs__index_remove(b->sp->st->ix, &b->key);
  kvs__blk_drop(b);
}

void kvs__blk_publish_n(kvs__block *const *bs, uint32_t n, const uint32_t *prefix)
{
  if (!n)
    return;
  kvs__space *sp = bs[0]->sp;
  kvs__store *st = sp->st;
  uint64_t rows = 0;
  for (uint32_t i = 0; i < n; i++) {
    bs[i]->pending = 0;
    bs[i]->refs = 1;
    rows += bs[i]->n_sinks;
  }
  /* account() of n blocks of one space at once */
  sp->blocks += n;
  st->blocks += n;
  st->sink_rows += rows;
  st->stored_raw += n * raw_bytes(sp);
  st->stored += n * sp->qbytes + rows * sp->rowbytes;
  st->outliers_kept +=
      ((uint64_t)n * sp->qp.group - rows) * (sp->qp.k_outliers + sp->qp.v_outliers);
  sp->pinned += n;
  st->pinned += n;
  if (prefix && st->hooks.on_publish)
    for (uint32_t i = 0; i < n; i++)
      if (bs[i]->indexed) {
        kvs__block_view v;
        kvs__blk_view(bs[i], prefix, &v);
        st->hooks.on_publish(&v, st->hooks.arg);
      }
}

uint64_t kvs__blk_evict_all(kvs__store *st)
{
  uint64_t n = 0;
  while (st->lru.old) {
    blk_evict(st->lru.old, NULL);
    n++;
  }
  st->evictions += n;
  return n;
}
