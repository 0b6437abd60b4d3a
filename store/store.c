/* The store: spaces, blocks, the LRU and the stats. Sequences are in seq.c. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_int.h"

int kvs__store_init(kvs__store **out, const kvs__store_opts *o)
{
  if (!out || !o)
    return -EINVAL;
  kvs__store *st = calloc(1, sizeof(*st));
  if (!st)
    return -ENOMEM;
  st->be = o->backend ? o->backend : &kvs__backend_host;
  st->max_pending = o->max_pending ? o->max_pending : KVS_MAX_PENDING;
  int rc = kvs__pool_init(&st->pool, st->be, o->pool_bytes, o->chunk_bytes);
  if (rc == 0) {
    rc = kvs__index_init(&st->ix);
    if (rc < 0)
      kvs__pool_close(st->pool);
  }
  if (rc < 0) {
    free(st);
    return rc;
  }
  *out = st;
  return 0;
}

static void space_free(kvs__space *sp)
{
  kvs__store *st = sp->st;
  if (sp->prev)
    sp->prev->next = sp->next;
  else
    st->spaces = sp->next;
  if (sp->next)
    sp->next->prev = sp->prev;
  st->nspaces--;
  free(sp);
}

static void lru_unlink(kvs__store *st, kvs__block *b)
{
  if (b->prev)
    b->prev->next = b->next;
  else
    st->lru_old = b->next;
  if (b->next)
    b->next->prev = b->prev;
  else
    st->lru_new = b->prev;
  b->prev = b->next = NULL;
}

static void lru_push(kvs__store *st, kvs__block *b)
{
  b->next = NULL;
  b->prev = st->lru_new;
  if (st->lru_new)
    st->lru_new->next = b;
  else
    st->lru_old = b;
  st->lru_new = b;
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

void kvs__blk_publish(kvs__block *b)
{
  kvs__space *sp = b->sp;
  kvs__store *st = sp->st;
  /* Room was reserved by the caller, so this cannot fail. */
  (void)kvs__index_insert(st->ix, &b->key, b);
  sp->blocks++;
  st->blocks++;
  if (b->refs) {
    sp->pinned++;
    st->pinned++;
  } else {
    lru_push(st, b);
  }
  st->sink_rows += b->n_sinks;
  st->stored_raw += raw_bytes(sp);
  st->stored += sp->qbytes + (uint64_t)b->n_sinks * sp->rowbytes;
  st->outliers_kept +=
      (uint64_t)(sp->qp.group - b->n_sinks) * (sp->qp.k_outliers + sp->qp.v_outliers);
}

/* Drop an unreferenced block from the cache. */
static void blk_evict(kvs__block *b)
{
  kvs__space *sp = b->sp;
  kvs__store *st = sp->st;
  lru_unlink(st, b);
  kvs__index_remove(st->ix, &b->key);
  kvs__pool_free(st->pool, b->data);
  for (uint32_t i = 0; i < b->n_sinks; i++)
    kvs__pool_free(st->pool, b->rows[i]);
  sp->blocks--;
  st->blocks--;
  st->sink_rows -= b->n_sinks;
  st->stored_raw -= raw_bytes(sp);
  st->stored -= sp->qbytes + (uint64_t)b->n_sinks * sp->rowbytes;
  st->outliers_kept -=
      (uint64_t)(sp->qp.group - b->n_sinks) * (sp->qp.k_outliers + sp->qp.v_outliers);
  free(b);
  if (sp->refs == 0 && sp->blocks == 0)
    space_free(sp);
}

int kvs__store_reserve(kvs__store *st, int cls, void **slot)
{
  for (;;) {
    int rc = kvs__pool_alloc(st->pool, cls, slot);
    if (rc != -ENOSPC)
      return rc;
    if (!st->lru_old)
      return -ENOSPC;
    blk_evict(st->lru_old);
    st->evictions++;
  }
}

uint64_t kvs__store_evict_all(kvs__store *st)
{
  uint64_t n = 0;
  while (st->lru_old) {
    blk_evict(st->lru_old);
    n++;
  }
  st->evictions += n;
  return n;
}

void kvs__store_close(kvs__store *st)
{
  if (!st)
    return;
  while (st->seqs)
    kvs__seq_free(st->seqs);
  kvs__store_evict_all(st);
  while (st->spaces)
    space_free(st->spaces);
  kvs__index_close(st->ix);
  kvs__pool_close(st->pool);
  free(st);
}

/* Spaces. */

static int key_eq(const kvs__space_key *a, const kvs__space_key *b)
{
  return strncmp(a->ns, b->ns, sizeof(a->ns)) == 0 &&
         strncmp(a->model_id, b->model_id, sizeof(a->model_id)) == 0 &&
         a->n_layers == b->n_layers && a->n_kv_heads == b->n_kv_heads &&
         a->head_dim == b->head_dim && a->dtype == b->dtype && a->group == b->group &&
         a->k_bits == b->k_bits && a->v_bits == b->v_bits && a->policy == b->policy &&
         a->pfn == b->pfn && memcmp(&a->outliers, &b->outliers, sizeof(float)) == 0 &&
         a->v_group == b->v_group && a->prof_id == b->prof_id;
}

/* Everything of a profile that decides which rows are sinks. */
static uint64_t prof_fingerprint(const kvs__profile *p)
{
  uint32_t f[4 + KVS_PROFILE_MAX_CHANNELS];
  uint32_t n = p->n_channels <= KVS_PROFILE_MAX_CHANNELS ? p->n_channels : KVS_PROFILE_MAX_CHANNELS;
  f[0] = p->layer;
  memcpy(&f[1], &p->tau, sizeof(float));
  f[2] = p->max_sinks;
  f[3] = p->pfn;
  memcpy(&f[4], p->channels, n * sizeof(uint32_t));
  uint64_t h = kvs__hash64(f, (4 + n) * sizeof(uint32_t), 0x6b7670726f66ull);
  return h ? h : 1;
}

/* The seed covers every field, serialized without padding bytes. */
static kvs__h128 key_seed(const kvs__space_key *k)
{
  unsigned char buf[sizeof(k->ns) + sizeof(k->model_id) + 14 * 4];
  size_t n = 0, ln = strnlen(k->ns, sizeof(k->ns)), lm = strnlen(k->model_id, sizeof(k->model_id));
  memset(buf, 0, sizeof(buf));
  memcpy(buf + n, k->ns, ln);
  n += sizeof(k->ns);
  memcpy(buf + n, k->model_id, lm);
  n += sizeof(k->model_id);
  uint32_t f[14] = {k->n_layers, k->n_kv_heads, k->head_dim, (uint32_t)k->dtype, k->group,
                    k->k_bits, k->v_bits, (uint32_t)k->policy, k->pfn, 0, k->v_group,
                    0x6b76736bu, (uint32_t)k->prof_id, (uint32_t)(k->prof_id >> 32)};
  memcpy(&f[9], &k->outliers, sizeof(float));
  memcpy(buf + n, f, sizeof(f));
  n += sizeof(f);
  kvs__h128 s = {0x243f6a8885a308d3ull, 0x13198a2e03707344ull};
  return kvs__hash128(buf, n, s);
}

kvs__h128 kvs__chain_next(const kvs__space *sp, const kvs__h128 *prev, const uint32_t *tokens)
{
  uint64_t buf[2 + KVS_QBLOCK_MAX_G / 2];
  buf[0] = prev ? prev->lo : 0;
  buf[1] = prev ? prev->hi : 0;
  memcpy(&buf[2], tokens, (size_t)sp->qp.group * 4u);
  return kvs__hash128(buf, 16u + (size_t)sp->qp.group * 4u, sp->seed);
}

static int key_check(const kvs__space_key *k)
{
  if (!memchr(k->ns, 0, sizeof(k->ns)) || !memchr(k->model_id, 0, sizeof(k->model_id)))
    return -EINVAL;
  if (k->n_layers == 0 || k->n_layers > KVS_MAX_LAYERS || k->n_kv_heads == 0 ||
      k->n_kv_heads > KVS_MAX_KV_HEADS || k->head_dim == 0 || k->head_dim > KVS_MAX_HEAD_DIM)
    return -EINVAL;
  if (k->dtype != KVS_DTYPE_F16 && k->dtype != KVS_DTYPE_BF16)
    return -EINVAL;
  if (k->policy != KVS_POLICY_NONE && k->policy != KVS_POLICY_PFN &&
      k->policy != KVS_POLICY_KVSINK)
    return -EINVAL;
  if (k->group == 0 || k->group > KVS_QBLOCK_MAX_G || !(k->outliers >= 0.0f && k->outliers < 1.0f))
    return -EINVAL;
  return 0;
}

int kvs__space_ref(kvs__store *st, const kvs__space_key *key, const kvs__profile *profile,
                   kvs__space **out)
{
  if (!st || !key || !out)
    return -EINVAL;
  int rc = key_check(key);
  if (rc < 0)
    return rc;
  /* Resolve v_group first so that equivalent keys find one space. */
  kvs__space_key rk = *key;
  uint32_t c = key->n_kv_heads * key->head_dim;
  rk.v_group = key->v_group && c % key->v_group == 0 ? key->v_group
               : c % 32u == 0                        ? 32u
                                                     : key->head_dim;
  rk.prof_id = profile && key->policy == KVS_POLICY_KVSINK && profile->n_channels
                   ? prof_fingerprint(profile) : 0;
  key = &rk;
  for (kvs__space *sp = st->spaces; sp; sp = sp->next)
    if (key_eq(&sp->key, key)) {
      sp->refs++;
      *out = sp;
      return 0;
    }
  if (profile && (profile->n_channels == 0 || profile->n_channels > KVS_PROFILE_MAX_CHANNELS))
    return -EINVAL;
  kvs__space *sp = calloc(1, sizeof(*sp));
  if (!sp)
    return -ENOMEM;
  sp->st = st;
  sp->key = *key;
  if (profile) {
    sp->prof = *profile;
    sp->has_prof = key->policy == KVS_POLICY_KVSINK;
  }
  sp->qp.group = key->group;
  sp->qp.channels = c;
  sp->qp.v_group = key->v_group;
  sp->qp.k_bits = key->k_bits;
  sp->qp.v_bits = key->v_bits;
  sp->qp.k_outliers = sp->qp.v_outliers = kvs__outlier_count(c, key->outliers);
  sp->qp.dtype = key->dtype;
  rc = kvs__qparams_check(&sp->qp);
  if (rc == 0) {
    kvs__qlayout ql;
    sp->qbytes = kvs__qlayout_of(&sp->qp, &ql);
    sp->rowbytes = kvs__sink_row_bytes(&sp->qp);
    rc = kvs__pool_class(st->pool, sp->qbytes);
    sp->blk_cls = rc;
    if (rc >= 0)
      rc = sp->row_cls = kvs__pool_class(st->pool, sp->rowbytes);
    if (rc == -E2BIG)
      rc = -ENOSPC;
  }
  if (rc < 0) {
    free(sp);
    return rc;
  }
  sp->seed = key_seed(key);
  sp->refs = 1;
  sp->next = st->spaces;
  if (st->spaces)
    st->spaces->prev = sp;
  st->spaces = sp;
  st->nspaces++;
  *out = sp;
  return 0;
}

void kvs__space_unref_internal(kvs__space *sp)
{
  if (--sp->refs == 0 && sp->blocks == 0)
    space_free(sp);
}

void kvs__space_unref(kvs__space *sp)
{
  if (sp)
    kvs__space_unref_internal(sp);
}

const kvs__qparams *kvs__space_qparams(const kvs__space *sp) { return &sp->qp; }
int kvs__space_has_profile(const kvs__space *sp) { return sp->has_prof; }
const kvs__profile *kvs__space_profile(const kvs__space *sp)
{
  return sp->has_prof ? &sp->prof : NULL;
}

void kvs__store_stats(const kvs__store *st, kvs__stats *s)
{
  memset(s, 0, sizeof(*s));
  s->pool_bytes = kvs__pool_bytes(st->pool);
  s->pool_used_bytes = kvs__pool_used_bytes(st->pool);
  s->blocks_total = st->blocks;
  s->blocks_used = st->blocks;
  s->blocks_pinned = st->pinned;
  s->sink_rows_used = st->sink_rows;
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

void kvs__store_foreach_space(const kvs__store *st, kvs__space_cb cb, void *arg)
{
  for (const kvs__space *sp = st->spaces; sp; sp = sp->next)
    cb(&sp->key, sp->blocks, sp->pinned, sp->seqs, arg);
}
