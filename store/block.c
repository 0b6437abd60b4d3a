/* SPDX-License-Identifier: MIT */
/* The block lifecycle: reserve slots (evicting), publish, find, reference,
 * LRU, evict, drop. Eviction looks first in the LRU of the slot class that
 * needs room (memcached's per-class LRU), so a put of one block size takes
 * back its own class's old blocks before it touches another space's. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

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

void kvs__blk_drop(kvs__block *b)
{
  kvs__pool *p = b->sp->st->pool;
  if (b->data)
    kvs__pool_free(p, b->data);
  for (uint32_t i = 0; i < b->n_sinks; i++)
    if (b->rows[i])
      kvs__pool_free(p, b->rows[i]);
  free(b->tok);
  free(b);
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
    blk_evict(v);
    st->evictions++;
  }
}

int kvs__blk_new(kvs__space *sp, kvs__h128 h, kvs__h128 parent, uint32_t layer, uint32_t g,
                 const uint32_t *tok, uint64_t sink_mask, kvs__block **out)
{
  uint32_t ns = (uint32_t)__builtin_popcountll(sink_mask);
  kvs__block *b = calloc(1, sizeof(*b) + ns * sizeof(b->rows[0]));
  if (!b)
    return -ENOMEM;
  b->tok = malloc((size_t)sp->qp.group * sizeof(*tok));
  if (!b->tok) {
    free(b);
    return -ENOMEM;
  }
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
