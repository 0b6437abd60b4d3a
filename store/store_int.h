/* Internals shared by store.c (spaces, blocks, LRU) and seq.c. */
#ifndef KVS_DAEMON_STORE_INT_H
#define KVS_DAEMON_STORE_INT_H

#include "store/index.h"
#include "store/pool.h"
#include "store/store.h"

#define KVS_MAX_PENDING 4096u  /* default of kvs__store_opts.max_pending */

typedef struct kvs__block {
  kvs__ikey key;
  kvs__space *sp;
  void *data;                       /* quantized part, in the pool */
  struct kvs__block *prev, *next;   /* LRU, while refs == 0 */
  uint64_t sink_mask;
  uint32_t refs;
  uint32_t n_sinks;
  uint16_t *rows[];                 /* sink-row slots, in the pool */
} kvs__block;

struct kvs__space {
  kvs__store *st;
  kvs__space *prev, *next;
  kvs__space_key key;
  kvs__profile prof;
  int has_prof;                     /* KVSINK with a profile */
  kvs__qparams qp;
  size_t qbytes, rowbytes;
  int blk_cls, row_cls;
  kvs__h128 seed;
  uint32_t refs;                    /* users + seqs */
  uint64_t blocks, pinned, seqs;
};

typedef struct kvs__seq_layer {
  uint32_t len, nblk, blkcap;
  kvs__block **blk;
  uint16_t *rk, *rv;                /* residual [len - nblk*G][C] */
  uint32_t rcap;                    /* rows allocated in rk / rv */
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
  uint32_t npred;                   /* predicted sinks so far */
};

struct kvs__store {
  kvs__backend *be;
  kvs__pool *pool;
  kvs__index *ix;
  kvs__space *spaces;
  kvs__seq *seqs;
  kvs__block *lru_old, *lru_new;
  uint32_t nspaces;
  uint32_t max_pending;
  uint64_t nseqs, blocks, pinned, sink_rows;
  uint64_t lookups, lookup_hit_tokens, lookup_tokens;
  uint64_t puts, gets, evictions, put_nospc, bytes_in, bytes_out;
  uint64_t stored_raw, stored, sinks_found, sinks_dropped, outliers_kept;
};

void kvs__blk_ref(kvs__block *b);
void kvs__blk_unref(kvs__block *b);
/* Move an unreferenced block to the young end of the LRU. */
void kvs__blk_touch(kvs__block *b);
/* A slot of cls, evicting LRU blocks as needed; -ENOSPC when none left. */
int kvs__store_reserve(kvs__store *st, int cls, void **slot);
/* Make b (already filled, refs == 1) known: index, counters. */
void kvs__blk_publish(kvs__block *b);
kvs__h128 kvs__chain_next(const kvs__space *sp, const kvs__h128 *prev, const uint32_t *tokens);
void kvs__space_unref_internal(kvs__space *sp);

#endif
