/* SPDX-License-Identifier: MIT */
/* Internals of the store. Call direction, one way only:
 *   store.c (init, close, stats) -> seq.c (seqs, get, lookup), put.c,
 *   tier.c -> space.c, block.c -> pool.c, index.c.
 * block.c owns the block lifecycle (reserve, publish, find, reference,
 * LRU, evict, drop); space.c the spaces and the chain hash. */
#ifndef KVS_DAEMON_STORE_INT_H
#define KVS_DAEMON_STORE_INT_H

#include <time.h>

#include "store/index.h"
#include "store/pool.h"
#include "store/rec.h"
#include "store/resbuf.h"
#include "store/rows.h"
#include "store/store.h"


/* The LRU of a slot class (block.c): a ring of its unreferenced blocks
 * in the order they became so, each entry with the block's stamp then. */
typedef struct kvs__lru_ent {
  struct kvs__block *b;
  uint64_t stamp;
} kvs__lru_ent;

typedef struct kvs__lru {
  kvs__lru_ent *e;
  uint32_t cap, head, n;            /* entries e[(head + i) % cap], i < n */
  uint64_t records;                 /* records of the class (the ring's room) */
  uint32_t floor;                   /* the ring's first size: room for the most
                                       records the pool holds of the class, so
                                       that a filling pool never copies it */
} kvs__lru;

/* A cached block: one layer of one group. Its identity (chain hash,
 * parent, token ids) is its group's (kvs__group), which the index files
 * once for all layers (Decision 46). */
typedef struct kvs__block {
  /* one cache line without sink rows: what an eviction reads */
  struct kvs__group *grp;
  kvs__space *sp;
  void *data;                       /* quantized part, in the pool */
  uint64_t stamp;                   /* its LRU entry's while refs == 0, else 0 */
  uint64_t sink_mask;
  uint32_t refs;
  uint32_t n_sinks;
  uint32_t layer;
  uint8_t pending;                  /* claimed by a put, not yet published */
  uint16_t *rows[];                 /* sink-row slots, in the pool */
} kvs__block;

/* The blocks of one identity (chain hash, parent, G token ids), a slot
 * per layer of its space; in the index under (h, 0) unless another
 * group holds that key (a collision: then private, Decision 19). It
 * lives while it has blocks (nblk > 0), published or pending. */
typedef struct kvs__group {
  kvs__h128 h;
  uint32_t *tok;                    /* the G token ids, checked on every hit */
  kvs__h128 parent;                 /* chain hash of the group before (0 for the first) */
  kvs__space *sp;
  uint32_t g;                       /* group index: tokens [g*G, (g+1)*G) */
  uint32_t nblk;                    /* blocks in blk[] */
  uint8_t indexed;                  /* 0: a collision kept it private to its seqs */
  kvs__block *blk[];                /* per layer, or NULL; the token ids follow */
} kvs__group;

struct kvs__space {
  kvs__store *st;
  kvs__space *prev, *next;
  kvs__space_key key;
  kvs__profile prof;
  int has_prof;                     /* KVSINK with a profile */
  kvs__qparams qp;
  size_t qbytes, rowbytes;
  int blk_cls, row_cls;             /* pool classes, referenced while the space lives */
  int blk_direct, row_direct;       /* their units hold more than one slot (block.c) */
  kvs__h128 seed;
  uint32_t refs;                    /* users + seqs */
  uint64_t blocks, pinned, seqs;
};

typedef struct kvs__seq_layer {
  uint32_t len, nblk, blkcap;
  kvs__block **blk;
  uint16_t *rk, *rv;                /* residual [len - nblk*G][C] */
  uint32_t rcap;                    /* rows allocated in rk / rv */
  uint32_t rpin;                    /* rk and rv are resbuf buffers (store/resbuf.c) */
} kvs__seq_layer;

struct kvs__seq {
  kvs__space *sp;
  kvs__seq *prev, *next;            /* store's list, freed at close */
  kvs__seq_layer *l;
  uint32_t ntok, tokcap;
  uint32_t *tok;
  uint8_t *flag;                    /* sink flag per position */
  uint32_t known;                   /* flags known below this (KVSINK+profile) */
  uint32_t nchain, chaincap;
  kvs__h128 *chain;                 /* chain hash per group */
  uint32_t npred;                   /* protected beyond the first pfn: predicted + fill (Decision 39) */
  uint64_t res_bytes;               /* residual bytes allocated (rk + rv, all layers) */
};

struct kvs__store {
  kvs__backend *be;
  kvs__pool *pool;
  kvs__index *ix;
  kvs__space *spaces;
  kvs__seq *seqs;
  kvs__lru cls_lru[KVS_POOL_MAX_CLASSES]; /* by the block's slot class */
  uint64_t lru_clock;               /* the last stamp given */
  int lru_top;                      /* classes below it may have LRU entries */
  unsigned char key[32];            /* secret of the chain hash */
  unsigned char chkey[16];          /* SipHash key of the chain, drawn
                                       from key (kvs__hash_init) */
  kvs__tier_hooks hooks;
  uint32_t nspaces;
  uint32_t max_pending;
  uint64_t res_bytes, res_max, res_seq_max;
  uint64_t nseqs, blocks, pinned, sink_rows;
  uint64_t lookups, lookup_hit_tokens, lookup_tokens;
  uint64_t puts, gets, evictions, put_nospc, bytes_in, bytes_out;
  uint64_t stored_raw, stored, sinks_found, sinks_dropped, outliers_kept;
  kvs__store_prof *prof;            /* attached profile, or NULL */
  kvs__recs blk_recs, grp_recs;     /* records of blocks and groups (apart, so
                                       a stale LRU entry never reads a group) */
  kvs__slabs rec_slabs;             /* the slabs they come from */
  kvs__resbuf resbuf;               /* decode residuals in page-locked memory */
  int full_cls;                     /* reserve(): class + 1 that had no free slot */
  uint64_t own_n, own_rows;         /* evictions not counted yet (block.c) */
  uint64_t full_frees;              /* at this kvs__pool_frees */
};

/* Profile phases (kvs__store_set_prof): a no-op without a profile. */
static inline uint64_t kvs__prof_now(const kvs__store *st)
{
  if (!st->prof)
    return 0;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
/* Adds now - t0 to phase ph; returns now (the next phase's t0). */
static inline uint64_t kvs__prof_add(const kvs__store *st, int ph, uint64_t t0)
{
  if (!st->prof)
    return 0;
  uint64_t t = kvs__prof_now(st);
  st->prof->ns[ph] += t - t0;
  st->prof->calls[ph]++;
  return t;
}

/* group.c */
/* The group of identity (h, parent, tok) of sp in the index, or NULL. */
kvs__group *kvs__grp_find(kvs__space *sp, kvs__h128 h, kvs__h128 parent, const uint32_t *tok);
/* Start loading the index slot of h, a few groups ahead. */
void kvs__grp_prefetch(const kvs__store *st, kvs__h128 h);
/* The group for a put's blocks of identity (h, parent, tok) at group
 * index g, in one probe of the index (room reserved by the caller): the
 * indexed one, or a new one, filed unless a different identity holds
 * the key (a collision: private). With exclusive set, a collision is
 * refused (NULL, *taken = 1) instead. A new group has no blocks: it
 * goes when its last one does (kvs__grp_detach), so a caller that adds
 * none gives it back with kvs__grp_release. NULL: out of memory. */
kvs__group *kvs__grp_claim(kvs__space *sp, kvs__h128 h, kvs__h128 parent, uint32_t g,
                           const uint32_t *tok, int exclusive, int *taken);
/* Give back a group with no blocks (out of the index, record freed). */
void kvs__grp_release(kvs__group *grp);
/* b joins / leaves its group; the group goes with its last block.
 * (inline: once per block of a bulk put and per eviction) */
static inline void kvs__grp_attach(kvs__group *grp, kvs__block *b)
{
  b->grp = grp;
  grp->blk[b->layer] = b;
  grp->nblk++;
}
static inline void kvs__grp_detach(kvs__block *b)
{
  kvs__group *grp = b->grp;
  grp->blk[b->layer] = NULL;
  if (--grp->nblk == 0)
    kvs__grp_release(grp);
}
void kvs__grp_cache_reset(kvs__store *st);

/* block.c */
/* A new, pending block of layer in grp (attached), its slots reserved
 * (evicting as needed): -ENOSPC when the pool is full of pinned blocks,
 * -ENOMEM; on failure nothing is left (grp goes if it has no blocks). */
int kvs__blk_new(kvs__group *grp, uint32_t layer, uint64_t sink_mask, kvs__block **out);
/* Reserve the slots of records bs[0..n) in order (data, then sink rows),
 * evicting as needed; on failure the slots taken stay with their records
 * (kvs__blk_unclaim gives them back). */
int kvs__blk_slots(kvs__block *const *bs, uint32_t n);
/* One block a put needs: layer in its group, then the block found
 * (pinned) or claimed (fresh). */
typedef struct kvs__claim {
  uint32_t layer, g;
  kvs__block *b;
  int fresh;
} kvs__claim;
/* The blocks of a put's n claims of one group (j[i].layer given, g ==
 * grp->g, from kvs__grp_claim): a published one is pinned (fresh = 0),
 * else a new record (fresh = 1, no slots: kvs__blk_slots) is attached
 * to grp, pending: no hit for anyone until kvs__blk_publish_n (the store
 * runs one call at a time, so nothing else sees it before, and a layer
 * of a group is claimed once per put); fresh ones also go to
 * *fresh_out (advanced). 0, or -ENOMEM with the claims done so far
 * filled in (b set) for the caller to undo. (A group's layers at once:
 * one check of the LRU's room, no call per block.) */
int kvs__blk_claim_run(kvs__group *grp, kvs__claim *j, uint32_t n, uint64_t sink_mask,
                       kvs__block ***fresh_out);
/* Undo a claim or a kvs__blk_new: out of its group, slots and record
 * given back. */
void kvs__blk_unclaim(kvs__block *b);
/* Publish n claimed and filled blocks of one space, each with one
 * reference (a seq's): counters at once, then the publish hook. */
void kvs__blk_publish_n(kvs__block *const *bs, uint32_t n, const uint32_t *prefix);
void kvs__blk_cache_free(kvs__store *st);
/* Make b (from kvs__blk_new, filled) known with no reference (an
 * import): counters, LRU; no publish hook. */
void kvs__blk_publish(kvs__block *b);
/* The view hooks see. */
void kvs__blk_view(const kvs__block *b, const uint32_t *prefix, kvs__block_view *v);
/* The published block of layer in grp, or NULL. */
static inline kvs__block *kvs__grp_block(const kvs__group *grp, uint32_t layer)
{
  kvs__block *b = grp ? grp->blk[layer] : NULL;
  return b && !b->pending ? b : NULL;
}
/* The published block of sp for (h, layer) whose parent and tokens
 * match, or NULL. */
kvs__block *kvs__blk_find(kvs__space *sp, kvs__h128 h, kvs__h128 parent, uint32_t layer,
                          const uint32_t *tok);
/* Prefetch distance of a put's look-ups, in groups. */
#define KVS_PREFETCH_AHEAD 8u
void kvs__blk_ref(kvs__block *b);
void kvs__blk_unref(kvs__block *b);
/* Move an unreferenced block to the young end of the LRU. */
void kvs__blk_touch(kvs__block *b);
uint64_t kvs__blk_evict_all(kvs__store *st);

/* seq.c: helpers the put shares */
/* Write a reason to errmsg (KVS_STORE_ERRMSG bytes, may be NULL); returns rc. */
int kvs__fail(char *errmsg, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Grow *p (elements of size sz) to hold at least n; contents kept. */
int kvs__grow(void **p, uint32_t *cap, uint32_t n, size_t sz);
/* Free a layer's residual buffers (malloc'd or resbuf) and zero them. */
void kvs__res_free(kvs__store *st, kvs__seq_layer *L, uint32_t channels);
/* Position t is a sink by the PFN rule of sp. */
int kvs__pfn_flag(const kvs__space *sp, uint32_t t);

/* space.c */
/* Derive the chain's SipHash key from st->key (Decision 19). */
void kvs__hash_init(kvs__store *st);
kvs__h128 kvs__chain_next(const kvs__space *sp, const kvs__h128 *prev, const uint32_t *tokens);
void kvs__space_unref_internal(kvs__space *sp);
void kvs__space_free(kvs__space *sp);

#endif
