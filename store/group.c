/* SPDX-License-Identifier: MIT */
/* Groups: one record and one index entry per identity (chain hash,
 * parent, token ids) for the blocks of all its layers (Decision 46). A
 * put of 1,024 tokens x 32 layers probes the index 32 times, not 1,024,
 * and a block record is one cache line. */
#include <string.h>

#include "store/store_int.h"

_Static_assert(sizeof(kvs__group) == 64, "a group's header is one cache line");
_Static_assert((sizeof(kvs__group) + KVS_STORE_MAX_LAYERS * sizeof(kvs__block *) +
                KVS_QBLOCK_MAX_G * sizeof(uint32_t) + 63) / 64 < KVS_REC_LINES,
               "KVS_REC_LINES covers the largest group");

static uint32_t grp_lines(const kvs__space *sp)
{
  return (uint32_t)((sizeof(kvs__group) + sp->key.n_layers * sizeof(kvs__block *) +
                     sp->qp.group * sizeof(uint32_t) + 63u) / 64u);
}

static kvs__ikey key_of(kvs__h128 h) { return (kvs__ikey){h, 0}; }

/* Identity is the whole prefix: the parent's chain hash and these ids;
 * and the space (its chain hashes are seeded apart already), so that a
 * group's layers and ids are always the space's. */
static int same(const kvs__group *o, const kvs__space *sp, kvs__h128 parent, const uint32_t *tok)
{
  return o->sp == sp && o->parent.lo == parent.lo && o->parent.hi == parent.hi &&
         memcmp(o->tok, tok, (size_t)o->sp->qp.group * sizeof(*tok)) == 0;
}

kvs__group *kvs__grp_find(kvs__space *sp, kvs__h128 h, kvs__h128 parent, const uint32_t *tok)
{
  kvs__ikey k = key_of(h);
  kvs__group *o = kvs__index_find(sp->st->ix, &k);
  return o && same(o, sp, parent, tok) ? o : NULL;
}

void kvs__grp_prefetch(const kvs__store *st, kvs__h128 h)
{
  kvs__ikey k = key_of(h);
  kvs__index_prefetch(st->ix, &k);
}

kvs__group *kvs__grp_claim(kvs__space *sp, kvs__h128 h, kvs__h128 parent, uint32_t g,
                           const uint32_t *tok, int exclusive, int *taken)
{
  kvs__store *st = sp->st;
  kvs__ikey k = key_of(h);
  void **slot = kvs__index_slot(st->ix, &k);
  kvs__group *o = *slot;
  *taken = 0;
  if (o && same(o, sp, parent, tok))
    return o;
  if (o && exclusive) {
    *taken = 1;
    return NULL;
  }
  const uint32_t nl = sp->key.n_layers, G = sp->qp.group;
  kvs__group *grp = kvs__rec_get(&st->grp_recs, &st->rec_slabs, grp_lines(sp));
  if (!grp)
    return NULL;
  grp->h = h;
  grp->tok = (uint32_t *)(void *)&grp->blk[nl];
  memcpy(grp->tok, tok, (size_t)G * sizeof(*tok));
  grp->parent = parent;
  grp->sp = sp;
  grp->g = g;
  grp->nblk = 0;
  grp->indexed = o == NULL;
  memset(grp->blk, 0, nl * sizeof(*grp->blk));
  if (!o)
    kvs__index_fill(st->ix, slot, &k, grp);
  return grp;
}

void kvs__grp_release(kvs__group *grp)
{
  kvs__store *st = grp->sp->st;
  if (grp->indexed) {
    kvs__ikey k = key_of(grp->h);
    kvs__index_remove(st->ix, &k);
  }
  kvs__rec_put(&st->grp_recs, grp, grp_lines(grp->sp));
}

void kvs__grp_cache_reset(kvs__store *st) { kvs__recs_reset(&st->grp_recs); }
