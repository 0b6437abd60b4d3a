/* SPDX-License-Identifier: MIT */
/* Spaces: the key, its resolution, the pool classes a space holds, and the
 * chain hash that names its blocks (keyed BLAKE2b, Decision 19). */
#include <errno.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_int.h"

void kvs__space_free(kvs__space *sp)
{
  kvs__store *st = sp->st;
  if (sp->prev)
    sp->prev->next = sp->next;
  else
    st->spaces = sp->next;
  if (sp->next)
    sp->next->prev = sp->prev;
  st->nspaces--;
  kvs__pool_class_put(st->pool, sp->blk_cls);
  kvs__pool_class_put(st->pool, sp->row_cls);
  free(sp);
}

static int key_eq(const kvs__space_key *a, const kvs__space_key *b)
{
  return strncmp(a->ns, b->ns, sizeof(a->ns)) == 0 &&
         strncmp(a->model_id, b->model_id, sizeof(a->model_id)) == 0 &&
         a->n_layers == b->n_layers && a->n_kv_heads == b->n_kv_heads &&
         a->head_dim == b->head_dim && a->dtype == b->dtype && a->group == b->group &&
         a->k_bits == b->k_bits && a->v_bits == b->v_bits && a->policy == b->policy &&
         a->pfn == b->pfn && memcmp(&a->outliers, &b->outliers, sizeof(float)) == 0 &&
         a->v_group == b->v_group && a->prof_id == b->prof_id &&
         a->salt_len == b->salt_len && memcmp(a->salt, b->salt, a->salt_len) == 0;
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

int kvs__space_reads_once(const kvs__space *sp, const void *k, const void *v)
{
  kvs__backend *be = sp->st->be;
  return be->dev_io && be->reads_once && be->reads_once(be, &sp->qp, k, v);
}

void kvs__hash_init(kvs__store *st)
{
  /* the chain's key: BLAKE2b(key, label), so both keys come from the one
   * secret (stores that share it, as hosts of a Redis tier do, agree) */
  static const char label[] = "kvsink chain siphash-2-4-128 v2";
  crypto_generichash(st->chkey, sizeof(st->chkey), (const unsigned char *)label, sizeof(label) - 1,
                     st->key, sizeof(st->key));
}

static kvs__h128 h128_of(const unsigned char out[16])
{
  kvs__h128 h;
  memcpy(&h.lo, out, 8);
  memcpy(&h.hi, out + 8, 8);
  return h;
}

/* BLAKE2b-128 keyed with the store's secret (once per space: the seed). */
static kvs__h128 keyed(const kvs__store *st, const void *buf, size_t n)
{
  unsigned char out[16];
  crypto_generichash(out, sizeof(out), buf, n, st->key, sizeof(st->key));
  return h128_of(out);
}

/* The seed covers every field, serialized without padding bytes. */
static kvs__h128 key_seed(const kvs__store *st, const kvs__space_key *k)
{
  unsigned char buf[sizeof(k->ns) + sizeof(k->model_id) + 15 * 4 + sizeof(k->salt)];
  size_t n = 0, ln = strnlen(k->ns, sizeof(k->ns)), lm = strnlen(k->model_id, sizeof(k->model_id));
  memset(buf, 0, sizeof(buf));
  memcpy(buf + n, k->ns, ln);
  n += sizeof(k->ns);
  memcpy(buf + n, k->model_id, lm);
  n += sizeof(k->model_id);
  uint32_t f[15] = {k->n_layers, k->n_kv_heads, k->head_dim, (uint32_t)k->dtype, k->group,
                    k->k_bits, k->v_bits, (uint32_t)k->policy, k->pfn, 0, k->v_group,
                    0x6b76736bu, (uint32_t)k->prof_id, (uint32_t)(k->prof_id >> 32), k->salt_len};
  memcpy(&f[9], &k->outliers, sizeof(float));
  memcpy(buf + n, f, sizeof(f));
  n += sizeof(f);
  memcpy(buf + n, k->salt, k->salt_len);
  n += sizeof(k->salt);
  return keyed(st, buf, n);
}

kvs__h128 kvs__chain_next(const kvs__space *sp, const kvs__h128 *prev, const uint32_t *tokens)
{
  uint64_t buf[4 + KVS_QBLOCK_MAX_G / 2];
  buf[0] = sp->seed.lo;
  buf[1] = sp->seed.hi;
  buf[2] = prev ? prev->lo : 0;
  buf[3] = prev ? prev->hi : 0;
  memcpy(&buf[4], tokens, (size_t)sp->qp.group * 4u);
  /* SipHash-2-4 with 128-bit output: a keyed PRF, 5 times faster than
   * BLAKE2b on these 160 bytes (a group of 32), one per group of a put
   * on its critical path (Decision 51); a hit compares token ids and the
   * parent's hash too, so the key's secrecy is what protects against
   * chosen collisions, as before */
  unsigned char out[16];
  crypto_shorthash_siphashx24(out, (const unsigned char *)buf, 32u + (size_t)sp->qp.group * 4u,
                              sp->st->chkey);
  return h128_of(out);
}

static int key_check(const kvs__space_key *k)
{
  if (!memchr(k->ns, 0, sizeof(k->ns)) || !memchr(k->model_id, 0, sizeof(k->model_id)))
    return -EINVAL;
  if (k->n_layers == 0 || k->n_layers > KVS_STORE_MAX_LAYERS || k->n_kv_heads == 0 ||
      k->n_kv_heads > KVS_STORE_MAX_KV_HEADS || k->head_dim == 0 ||
      k->head_dim > KVS_STORE_MAX_HEAD_DIM)
    return -EINVAL;
  if (k->dtype != KVS_DTYPE_F16 && k->dtype != KVS_DTYPE_BF16)
    return -EINVAL;
  if (k->policy != KVS_POLICY_NONE && k->policy != KVS_POLICY_PFN &&
      k->policy != KVS_POLICY_KVSINK)
    return -EINVAL;
  if (k->group == 0 || k->group > KVS_QBLOCK_MAX_G || !(k->outliers >= 0.0f && k->outliers < 1.0f))
    return -EINVAL;
  if (k->salt_len > sizeof(k->salt))
    return -EINVAL;
  return 0;
}

/* Quantization parameters and pool classes of a new space. */
static int space_setup(kvs__store *st, kvs__space *sp)
{
  const kvs__space_key *key = &sp->key;
  sp->qp.group = key->group;
  sp->qp.channels = key->n_kv_heads * key->head_dim;
  sp->qp.v_group = key->v_group;
  sp->qp.k_bits = key->k_bits;
  sp->qp.v_bits = key->v_bits;
  sp->qp.k_outliers = sp->qp.v_outliers = kvs__outlier_count(sp->qp.channels, key->outliers);
  sp->qp.dtype = key->dtype;
  int rc = kvs__qparams_check(&sp->qp);
  if (rc < 0)
    return rc;
  kvs__qlayout ql;
  sp->qbytes = kvs__qlayout_of(&sp->qp, &ql);
  sp->rowbytes = kvs__sink_row_bytes(&sp->qp);
  /* owned by the space: a chunk never mixes spaces (Attend exports chunks) */
  rc = sp->blk_cls = kvs__pool_class_owned(st->pool, sp->qbytes, (uint64_t)(uintptr_t)sp);
  if (rc >= 0) {
    rc = sp->row_cls = kvs__pool_class_owned(st->pool, sp->rowbytes, (uint64_t)(uintptr_t)sp);
    if (rc < 0)
      kvs__pool_class_put(st->pool, sp->blk_cls);
  }
  if (rc >= 0) {
    sp->blk_direct = kvs__pool_class_slots(st->pool, sp->blk_cls) > 1;
    sp->row_direct = kvs__pool_class_slots(st->pool, sp->row_cls) > 1;
    /* the class's LRU ring is made at its full size at once: doubling
     * while the pool filled copied it each time, ~10 us a bulk put on
     * average (Decision 51); its pages are touched as it fills */
    kvs__lru *r = &st->cls_lru[sp->blk_cls];
    uint64_t most = 2u * (kvs__pool_bytes(st->pool) / sp->qbytes) + 64u;
    /* at most 2^20 entries (16 MiB; it doubles past that): a ring's
     * pages all get touched as its entries go round, even for a space
     * with few records, so a big floor costs every space that much */
    if (most > (1u << 20))
      most = 1u << 20;
    if (most > r->floor)
      r->floor = (uint32_t)most;
  }
  return rc == -E2BIG ? -ENOSPC : rc < 0 ? rc : 0;
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
  /* Bytes past salt_len do not count. */
  memset(rk.salt + rk.salt_len, 0, sizeof(rk.salt) - rk.salt_len);
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
  rc = space_setup(st, sp);
  if (rc < 0) {
    free(sp);
    return rc;
  }
  sp->seed = key_seed(st, key);
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
    kvs__space_free(sp);
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
