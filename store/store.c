/* SPDX-License-Identifier: MIT */
/* The store: init and close, admin eviction, stats and listing. Spaces are
 * in space.c, blocks in block.c, sequences in seq.c. */
#include <errno.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "store/store_int.h"

static int draw_key(unsigned char *key, size_t n)
{
  size_t got = 0;
  while (got < n) {
    ssize_t r = getrandom(key + got, n - got, 0);
    if (r < 0 && errno != EINTR)
      return -errno;
    if (r > 0)
      got += (size_t)r;
  }
  return 0;
}

int kvs__store_init(kvs__store **out, const kvs__store_opts *o)
{
  if (!out || !o)
    return -EINVAL;
  if (sodium_init() < 0)
    return -EIO;
  kvs__store *st = calloc(1, sizeof(*st));
  if (!st)
    return -ENOMEM;
  kvs__slabs_init(&st->rec_slabs);
  st->be = o->backend ? o->backend : &kvs__backend_host;
  st->max_pending = o->max_pending ? o->max_pending : KVS_STORE_MAX_PENDING;
  st->res_max = o->residual_bytes ? o->residual_bytes : o->pool_bytes;
  st->res_seq_max = o->residual_seq_bytes && o->residual_seq_bytes < st->res_max
                        ? o->residual_seq_bytes : st->res_max;
  static const unsigned char zero[32];
  int rc = 0;
  if (memcmp(o->hash_key, zero, sizeof(zero)) != 0)
    memcpy(st->key, o->hash_key, sizeof(st->key));
  else
    rc = draw_key(st->key, sizeof(st->key));
  if (rc == 0) {
    kvs__hash_init(st);
    rc = kvs__pool_init(&st->pool, st->be, o->pool_bytes, o->chunk_bytes);
  }
  if (rc == 0) {
    /* sized for a full pool of 16 KiB blocks (a 2-bit block of 8 x 128
     * channels is 20 KiB), at most 512 Ki of them (a 32 MiB table), so
     * that filling the pool does not rehash the index again and again
     * inside puts; smaller blocks grow it later */
    size_t want = o->pool_bytes / 16384u;
    rc = kvs__index_init(&st->ix);
    if (rc == 0 && (rc = kvs__index_reserve(st->ix, want < (1u << 19) ? want : (1u << 19))) < 0)
      kvs__index_close(st->ix);
    if (rc < 0)
      kvs__pool_close(st->pool);
  }
  if (rc < 0) {
    sodium_memzero(st->key, sizeof(st->key));
    sodium_memzero(st->chkey, sizeof(st->chkey));
    kvs__slabs_close(&st->rec_slabs);
    free(st);
    return rc;
  }
  *out = st;
  return 0;
}

uint64_t kvs__store_evict_all(kvs__store *st) { return kvs__blk_evict_all(st); }

void kvs__store_close(kvs__store *st)
{
  if (!st)
    return;
  while (st->seqs)
    kvs__seq_free(st->seqs);
  if (st->be)
    kvs__resbuf_close(&st->resbuf, st->be);
  kvs__blk_evict_all(st);
  while (st->spaces)
    kvs__space_free(st->spaces);
  kvs__blk_cache_free(st);
  kvs__index_close(st->ix);
  kvs__pool_close(st->pool);
  sodium_memzero(st->key, sizeof(st->key));
  sodium_memzero(st->chkey, sizeof(st->chkey));
  free(st);
}

void kvs__store_stats_get(const kvs__store *st, kvs__store_stats *s)
{
  memset(s, 0, sizeof(*s));
  s->pool_bytes = kvs__pool_bytes(st->pool);
  s->pool_used_bytes = kvs__pool_used_bytes(st->pool);
  s->pool_free_bytes = kvs__pool_free_bytes(st->pool);
  s->residual_bytes = st->res_bytes;
  s->residual_max = st->res_max;
  s->blocks = st->blocks;
  s->blocks_pinned = st->pinned;
  s->sink_rows = st->sink_rows;
  s->lookups = st->lookups;
  s->lookup_hit_tokens = st->lookup_hit_tokens;
  s->lookup_tokens = st->lookup_tokens;
  s->puts = st->puts;
  s->gets = st->gets;
  s->evictions = st->evictions;
  s->put_nospc = st->put_nospc;
  s->bytes_in = st->bytes_in;
  s->bytes_out = st->bytes_out;
  s->stored_raw_bytes = st->stored_raw;
  s->stored_bytes = st->stored;
  s->sinks_found = st->sinks_found;
  s->sinks_dropped = st->sinks_dropped;
  s->outliers_kept = st->outliers_kept;
  s->seqs = st->nseqs;
  s->spaces = st->nspaces;
  strncpy(s->backend, st->be->name ? st->be->name : "", sizeof(s->backend) - 1);
}

void kvs__store_set_prof(kvs__store *st, kvs__store_prof *p) { st->prof = p; }

const char *kvs__store_prof_name(int phase)
{
  static const char *const names[KVS_PROF_N] = {
      "put", "put.check", "put.predict", "put.plan", "put.chain", "put.residual",
      "put.find", "put.group", "put.new", "put.queue", "put.items", "put.kernel", "put.commit",
      "get", "get.items", "get.kernel", "get.residual"};
  return phase >= 0 && phase < KVS_PROF_N ? names[phase] : "?";
}

void kvs__store_set_hooks(kvs__store *st, const kvs__tier_hooks *h)
{
  if (h)
    st->hooks = *h;
  else
    memset(&st->hooks, 0, sizeof(st->hooks));
}

void kvs__store_foreach_space(const kvs__store *st, kvs__space_cb cb, void *arg)
{
  for (const kvs__space *sp = st->spaces; sp; sp = sp->next)
    cb(&sp->key, sp->blocks, sp->pinned, sp->seqs, arg);
}
