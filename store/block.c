/* SPDX-License-Identifier: MIT */
/* The block lifecycle: reserve slots (evicting), publish, find, reference,
 * LRU, evict, drop. Eviction looks first in the LRU of the slot class that
 * needs room (memcached's per-class LRU), so a put of one block size takes
 * back its own class's old blocks before it touches another space's. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_int.h"

/* The LRU of a slot class is a ring of (block, stamp) entries in the
 * order the blocks became unreferenced; a block's stamp is its entry's
 * until it is referenced or evicted (then 0), so an entry whose block
 * has another stamp is stale and skipped. Why not a linked list: an
 * eviction then has to read each victim's record to find the next, one
 * cache miss after the other; from the ring, a put that evicts a
 * thousand blocks asks for their records and index slots many victims
 * ahead. Stamps grow across all classes, so the oldest of all is the
 * class head with the smallest. Records are never given back to malloc
 * while the store lives (rec_get), so a stale entry's record can always
 * be read. */
static kvs__lru_ent *lru_at(kvs__lru *r, uint32_t i)
{
  return &r->e[(r->head + i) & (r->cap - 1)];
}

static int lru_stale(const kvs__lru_ent *e) { return e->b->stamp != e->stamp; }

/* Keep the live entries in order (logical positions: writes never pass
 * reads, whatever the ring's wrap). */
static void lru_compact(kvs__lru *r)
{
  uint32_t k = 0;
  for (uint32_t i = 0; i < r->n; i++)
    if (!lru_stale(lru_at(r, i)))
      *lru_at(r, k++) = *lru_at(r, i);
  r->n = k;
}

/* Room for one more record of the class: a ring of at least twice its
 * records (+ 64) always has room after lru_compact, so pushing (from
 * kvs__blk_unref, which cannot fail) never allocates. */
static int lru_room_n(kvs__lru *r, uint32_t n)
{
  uint64_t want = 2 * (r->records + n) + 64;
  if (want <= r->cap)
    return 0;
  uint32_t cap = r->cap ? r->cap : 64;
  while (cap < want) {
    if (cap > UINT32_MAX / 2)
      return -ENOMEM;
    cap *= 2;
  }
  /* at once to the class's floor where memory allows (space.c) */
  kvs__lru_ent *e = NULL;
  uint32_t big = cap;
  while (big < r->floor && big <= UINT32_MAX / 2)
    big *= 2;
  if (big > cap && (e = malloc((size_t)big * sizeof(*e))))
    cap = big;
  if (!e && !(e = malloc((size_t)cap * sizeof(*e))))
    return -ENOMEM;
  for (uint32_t i = 0; i < r->n; i++)
    e[i] = *lru_at(r, i);
  free(r->e);
  r->e = e;
  r->cap = cap;
  r->head = 0;
  return 0;
}

static void lru_unlink(kvs__block *b)
{
  b->stamp = 0; /* its entry is stale now */
}

static void lru_push(kvs__store *st, kvs__block *b)
{
  int cls = b->sp->blk_cls;
  kvs__lru *r = &st->cls_lru[cls];
  if (r->n == r->cap)
    lru_compact(r);
  b->stamp = ++st->lru_clock;
  *lru_at(r, r->n++) = (kvs__lru_ent){b, b->stamp};
  if (cls >= st->lru_top)
    st->lru_top = cls + 1;
}

/* The oldest unreferenced block of class cls (stale heads dropped). */
static kvs__block *lru_old(kvs__store *st, int cls)
{
  kvs__lru *r = &st->cls_lru[cls];
  while (r->n) {
    kvs__lru_ent *e = lru_at(r, 0);
    if (!lru_stale(e))
      return e->b;
    r->head = (r->head + 1) & (r->cap - 1);
    r->n--;
  }
  return NULL;
}

/* The oldest unreferenced block of all. */
static kvs__block *lru_oldest(kvs__store *st)
{
  kvs__block *best = NULL;
  for (int c = 0; c < st->lru_top; c++) {
    kvs__block *b = lru_old(st, c);
    if (b && (!best || b->stamp < best->stamp))
      best = b;
  }
  return best;
}

void kvs__blk_ref(kvs__block *b)
{
  if (b->refs++ == 0) {
    lru_unlink(b);
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
    lru_unlink(b);
    lru_push(b->sp->st, b);
  }
}

static uint64_t raw_bytes(const kvs__space *sp)
{
  return (uint64_t)sp->qp.group * sp->qp.channels * 2u * 2u;
}

/* The counters of n blocks of sp with ns sink rows in all, added
 * (sign 1) or taken away (-1). */
static void account_n(kvs__space *sp, uint64_t n, uint64_t ns, int sign)
{
  kvs__store *st = sp->st;
  uint64_t d = (uint64_t)(int64_t)sign;  /* wraps to subtract */
  sp->blocks += d * n;
  st->blocks += d * n;
  st->sink_rows += d * ns;
  st->stored_raw += d * n * raw_bytes(sp);
  st->stored += d * (n * sp->qbytes + ns * sp->rowbytes);
  st->outliers_kept +=
      d * (n * sp->qp.group - ns) * (sp->qp.k_outliers + sp->qp.v_outliers);
}

static void account(kvs__block *b, int sign) { account_n(b->sp, 1, b->n_sinks, sign); }

void kvs__blk_view(const kvs__block *b, const uint32_t *prefix, kvs__block_view *v)
{
  memset(v, 0, sizeof(*v));
  v->space = &b->sp->key;
  v->blk = b;
  memcpy(v->id, &b->grp->h.lo, 8);
  memcpy(v->id + 8, &b->grp->h.hi, 8);
  v->layer = b->layer;
  v->group_index = b->grp->g;
  v->group = b->sp->qp.group;
  v->tokens = b->grp->tok;
  v->prefix = prefix;
}

void kvs__blk_publish(kvs__block *b)
{
  b->pending = 0;
  account(b, 1);
  if (b->refs) {
    b->sp->pinned++;
    b->sp->st->pinned++;
  } else {
    lru_push(b->sp->st, b);
  }
}

kvs__block *kvs__blk_find(kvs__space *sp, kvs__h128 h, kvs__h128 parent, uint32_t layer,
                          const uint32_t *tok)
{
  return kvs__grp_block(kvs__grp_find(sp, h, parent, tok), layer);
}

_Static_assert((sizeof(kvs__block) + KVS_QBLOCK_MAX_G * sizeof(uint16_t *) + 63) / 64 <
                   KVS_REC_LINES,
               "KVS_REC_LINES covers the largest record");

/* Whole cache lines, so that an eviction reads one (kvs__block). */
static uint32_t rec_lines(uint32_t ns)
{
  return (uint32_t)((sizeof(kvs__block) + ns * sizeof(uint16_t *) + 63u) / 64u);
}

static void rec_free(kvs__store *st, kvs__block *b)
{
  kvs__rec_put(&st->blk_recs, b, rec_lines(b->n_sinks));
}

/* Free a block that was never published (or was evicted), out of its
 * group already: its slots, and its record. */
static void blk_drop(kvs__block *b)
{
  kvs__store *st = b->sp->st;
  kvs__pool *p = st->pool;
  if (b->data)
    kvs__pool_free(p, b->data);
  for (uint32_t i = 0; i < b->n_sinks; i++)
    if (b->rows[i])
      kvs__pool_free(p, b->rows[i]);
  st->cls_lru[b->sp->blk_cls].records--;
  b->stamp = 0; /* (it is: unreferenced, never published, or evicted) */
  rec_free(st, b);
}

void kvs__blk_cache_free(kvs__store *st)
{
  kvs__slabs_close(&st->rec_slabs);
  kvs__recs_reset(&st->blk_recs);
  kvs__grp_cache_reset(st);
  for (uint32_t c = 0; c < KVS_POOL_MAX_CLASSES; c++) {
    free(st->cls_lru[c].e);
    memset(&st->cls_lru[c], 0, sizeof(st->cls_lru[c]));
  }
  st->lru_top = 0;
}

/* Drop an unreferenced published block from the cache. */
static void blk_evict(kvs__block *b)
{
  kvs__space *sp = b->sp;
  kvs__store *st = sp->st;
  if (b->grp->indexed && st->hooks.on_evict) {
    kvs__block_view v;
    kvs__blk_view(b, NULL, &v);
    st->hooks.on_evict(&v, st->hooks.arg);
  }
  lru_unlink(b);
  kvs__grp_detach(b);
  account(b, -1);
  blk_drop(b);
  if (sp->refs == 0 && sp->blocks == 0)
    kvs__space_free(sp);
}

/* The next victims lie at random places, their groups and index slots
 * too: with the class's victims in a row (its LRU ring), an eviction
 * asks for the record EV_AHEAD victims ahead, for the group lines of the
 * one half as far (whose record it asked for before: its header and its
 * layer's slot), and for the index slot of the one a quarter as far if
 * it is the last block of its group, so that none waits. A stale
 * entry's record may be free, its group pointer overwritten: only
 * live entries are followed. */
#define EV_AHEAD 32u

static void look_ahead(kvs__store *st, int cls)
{
  kvs__lru *r = &st->cls_lru[cls];
  if (r->n > EV_AHEAD)
    __builtin_prefetch(lru_at(r, EV_AHEAD)->b);
  if (r->n > EV_AHEAD / 2) {
    const kvs__lru_ent *e = lru_at(r, EV_AHEAD / 2);
    if (!lru_stale(e)) {
      __builtin_prefetch(e->b->grp);
      __builtin_prefetch(&e->b->grp->blk[e->b->layer], 1);
    }
  }
  if (r->n > EV_AHEAD / 4) {
    const kvs__lru_ent *e = lru_at(r, EV_AHEAD / 4);
    if (!lru_stale(e) && e->b->grp->nblk == 1 && e->b->grp->indexed)
      kvs__grp_prefetch(st, e->b->grp->h);
  }
}

/* Take v, the head of ring r, out of the cache (evict hook, its entry,
 * its group); its record and slot stay with the caller. */
static void evict_head(kvs__store *st, kvs__lru *r, kvs__block *v)
{
  if (v->grp->indexed && st->hooks.on_evict) {
    kvs__block_view bv;
    kvs__blk_view(v, NULL, &bv);
    st->hooks.on_evict(&bv, st->hooks.arg);
  }
  v->stamp = 0;
  r->head = (r->head + 1) & (r->cap - 1); /* its entry, stale now */
  r->n--;
  kvs__grp_detach(v);
}

/* blk_evict for reserve's own victims, whose data slot goes to *slot:
 * the head of the ring of the class being reserved, so a block of the
 * reserving space, which the caller holds (it is not freed here). Its
 * counters wait in st->own_* until kvs__blk_slots ends: one update for a
 * put's thousand victims. */
static void evict_own(kvs__store *st, kvs__lru *r, kvs__block *v, void **slot)
{
  evict_head(st, r, v);
  *slot = v->data;
  for (uint32_t i = 0; i < v->n_sinks; i++)
    kvs__pool_free(st->pool, v->rows[i]);
  st->own_n++;
  st->own_rows += v->n_sinks;
  rec_free(st, v);
}

static void own_flush(kvs__store *st, kvs__space *sp)
{
  if (!st->own_n)
    return;
  account_n(sp, st->own_n, st->own_rows, -1);
  st->cls_lru[sp->blk_cls].records -= st->own_n;
  st->own_n = st->own_rows = 0;
}

/* A slot of cls: first a free one, then the class's own old blocks, then
 * the oldest of all. When the class is full (no free slot, no free run
 * of chunks) and the victim is its own, the slot that freeing it and
 * allocating again would give is the victim's: every unit of the class
 * is full, so its unit becomes the only one with a free slot, and that
 * slot is on top of its stack (units of one slot would go back as free
 * chunks: those take the pool's way). So the slot changes hands
 * directly: same victims, same slots, and no pool bookkeeping per block
 * for a put into a full pool.
 * direct: units of cls hold more than one slot. */
static int reserve(kvs__store *st, int cls, int direct, void **slot)
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
    kvs__block *v = lru_old(st, cls);
    const int own = v != NULL;
    if (own)
      look_ahead(st, cls);
    else if (!(v = lru_oldest(st)))
      return -ENOSPC;
    st->evictions++;
    /* (its sink rows would go back first were they of cls too) */
    if (own && direct && (v->n_sinks == 0 || v->sp->row_cls != cls)) {
      evict_own(st, &st->cls_lru[cls], v, slot);
      return 0;
    }
    blk_evict(v);
  }
}

/* A fresh record: pending (no look-up takes it) until the put commits. */
static void blk_init(kvs__block *b, kvs__space *sp, kvs__group *grp, uint64_t sink_mask, uint32_t ns,
                     uint32_t layer)
{
  b->sp = sp;
  b->data = NULL;
  b->stamp = 0;
  b->sink_mask = sink_mask;
  b->refs = 0;
  b->n_sinks = ns;
  b->layer = layer;
  b->pending = 1;
  for (uint32_t i = 0; i < ns; i++)
    b->rows[i] = NULL;
  kvs__grp_attach(grp, b);
}

/* A record for a new, pending block of layer in grp: every field written
 * (no memset), no slots yet, attached to grp. */
static kvs__block *rec_new(kvs__group *grp, uint32_t layer, uint64_t sink_mask)
{
  kvs__space *sp = grp->sp;
  kvs__store *st = sp->st;
  kvs__lru *r = &st->cls_lru[sp->blk_cls];
  if (lru_room_n(r, 1) < 0)
    return NULL;
  /* most blocks have no sink rows (popcount is a libcall without -mpopcnt) */
  uint32_t ns = sink_mask ? (uint32_t)__builtin_popcountll(sink_mask) : 0;
  kvs__block *b = kvs__rec_get(&st->blk_recs, &st->rec_slabs, rec_lines(ns));
  if (!b)
    return NULL;
  r->records++;
  blk_init(b, sp, grp, sink_mask, ns, layer);
  return b;
}

/* Data slots for bs[0..n) (of space sp, no sink rows) in reserve's
 * common case for a put into a full pool, as one loop: the class found
 * full and nothing freed since, each victim the class's oldest block and
 * its own, without sink rows (freeing rows may change what the pool
 * has: then reserve decides). Same victims, same slots as reserve would
 * give, without its calls per block (a bulk put evicts a thousand).
 * Returns how many blocks got their slot. */
static uint32_t evict_run(kvs__store *st, kvs__space *sp, kvs__block *const *bs, uint32_t n)
{
  const int cls = sp->blk_cls;
  if (!sp->blk_direct || st->full_cls != cls + 1 ||
      st->full_frees != kvs__pool_frees(st->pool))
    return 0;
  kvs__lru *r = &st->cls_lru[cls];
  uint32_t i = 0;
  while (i < n && bs[i]->sp == sp && bs[i]->n_sinks == 0 && r->n) {
    const kvs__lru_ent *e = lru_at(r, 0);
    kvs__block *v = e->b;
    if (lru_stale(e)) {
      r->head = (r->head + 1) & (r->cap - 1);
      r->n--;
      continue;
    }
    if (v->n_sinks)
      break; /* reserve's way: rows to free */
    look_ahead(st, cls);
    evict_head(st, r, v);
    bs[i++]->data = v->data;
    rec_free(st, v);
  }
  st->evictions += i;
  st->own_n += i;
  return i;
}

int kvs__blk_slots(kvs__block *const *bs, uint32_t n)
{
  if (!n)
    return 0;
  kvs__store *st = bs[0]->sp->st;
  int rc = 0;
  st->full_cls = 0; /* classes may have changed since the last call */
  kvs__space *sp = bs[0]->sp;
  for (uint32_t i = 0; i < n && rc == 0; i++) {
    kvs__block *b = bs[i];
    if (b->sp != sp) {
      own_flush(st, sp);
      sp = b->sp;
    }
    uint32_t run = evict_run(st, sp, bs + i, n - i);
    if (run) {
      i += run - 1; /* (the loop's i++ counts the last) */
      continue;
    }
    rc = reserve(st, sp->blk_cls, sp->blk_direct, &b->data);
    for (uint32_t r = 0; rc == 0 && r < b->n_sinks; r++)
      rc = reserve(st, sp->row_cls, sp->row_direct, (void **)&b->rows[r]);
  }
  own_flush(st, sp);
  return rc;
}

int kvs__blk_new(kvs__group *grp, uint32_t layer, uint64_t sink_mask, kvs__block **out)
{
  kvs__block *b = rec_new(grp, layer, sink_mask);
  if (!b) {
    if (!grp->nblk)
      kvs__grp_release(grp);
    return -ENOMEM;
  }
  int rc = kvs__blk_slots(&b, 1);
  if (rc < 0) {
    kvs__blk_unclaim(b);
    return rc;
  }
  *out = b;
  return 0;
}

int kvs__blk_claim_run(kvs__group *grp, kvs__claim *j, uint32_t n, uint64_t sink_mask,
                       kvs__block ***fresh_out)
{
  kvs__space *sp = grp->sp;
  kvs__store *st = sp->st;
  kvs__lru *r = &st->cls_lru[sp->blk_cls];
  if (lru_room_n(r, n) < 0)
    return -ENOMEM;
  const uint32_t ns = sink_mask ? (uint32_t)__builtin_popcountll(sink_mask) : 0;
  const uint32_t lines = rec_lines(ns);
  kvs__block **fo = *fresh_out;
  int rc = 0;
  for (uint32_t i = 0; i < n; i++) {
    kvs__block *b = grp->blk[j[i].layer];
    if (b) {
      kvs__blk_ref(b);
      j[i].b = b;
      j[i].fresh = 0;
      continue;
    }
    if (!(b = kvs__rec_get(&st->blk_recs, &st->rec_slabs, lines))) {
      rc = -ENOMEM;
      break;
    }
    r->records++;
    blk_init(b, sp, grp, sink_mask, ns, j[i].layer);
    j[i].b = b;
    j[i].fresh = 1;
    *fo++ = b;
  }
  *fresh_out = fo;
  return rc;
}

void kvs__blk_unclaim(kvs__block *b)
{
  kvs__grp_detach(b);
  blk_drop(b);
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
  account_n(sp, n, rows, 1);
  sp->pinned += n;
  st->pinned += n;
  if (prefix && st->hooks.on_publish)
    for (uint32_t i = 0; i < n; i++)
      if (bs[i]->grp->indexed) {
        kvs__block_view v;
        kvs__blk_view(bs[i], prefix, &v);
        st->hooks.on_publish(&v, st->hooks.arg);
      }
}

uint64_t kvs__blk_evict_all(kvs__store *st)
{
  uint64_t n = 0;
  kvs__block *b;
  while ((b = lru_oldest(st))) {
    blk_evict(b);
    n++;
  }
  st->evictions += n;
  return n;
}
