/* SPDX-License-Identifier: MIT */
/* The request layer: validation and the store calls of every op. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/log.h"
#include "daemon/ops.h"
#include "daemon/ops_dev.h"
#include "daemon/table.h"
#include "proto/fastarea.h"

void kvs__sess_init(kvs__sess_state *st, const kvs__config *cfg, uint64_t id, uid_t uid,
                    pid_t pid, int admin)
{
  memset(st, 0, sizeof *st);
  st->id = id;
  st->uid = uid;
  st->pid = pid;
  st->admin = admin;
  st->seg.fd = -1;
  kvs__devseg_init(&st->dseg);
  snprintf(st->ns, sizeof st->ns, "uid:%u", (unsigned)uid);
  for (size_t i = 0; i < cfg->n_shared_uids; i++)
    if (cfg->shared_uids[i] == uid) snprintf(st->ns, sizeof st->ns, "shared");
}

void kvs__sess_free(kvs__sess_state *st)
{
  for (size_t i = 0; i < st->n_seqs; i++) kvs__seq_free(st->seqs[i].seq);
  free(st->seqs);
  st->seqs = NULL;
  st->n_seqs = st->cap_seqs = 0;
  if (st->space) kvs__space_unref(st->space);
  st->space = NULL;
  /* the profile names the segment kind: before the segment goes */
  if (st->prof) {
    char what[96];
    snprintf(what, sizeof what, "%s, %u/%u bits",
             st->dseg.vmm.ptr ? "device segment" : st->dseg.pinned ? "pinned host segment"
                                                                   : "host segment",
             st->key.k_bits, st->key.v_bits);
    kvs__prof_log(st->prof, st->id, what);
    free(st->prof);
    st->prof = NULL;
  }
  /* first: unmaps and releases the device segment, unpins the memfd */
  kvs__devseg_close(&st->dseg);
  kvs__segment_close(&st->seg);
  kvs__ops_table_drop_fds(st);
  free(st->tbl_sent);
  free(st->tbl_seen);
  st->tbl_sent = st->tbl_seen = NULL;
}

void kvs__ops_rep_free(kvs__rep *rep)
{
  kvs__rep_free(rep);
}

/* A client's string for the log: printable ASCII, the rest '?'. */
static const char *printable(const char *s, char *buf, size_t cap)
{
  size_t i = 0;
  for (; s[i] && i + 1 < cap; i++)
    buf[i] = (unsigned char)s[i] >= 0x20 && (unsigned char)s[i] < 0x7f ? s[i] : '?';
  buf[i] = 0;
  return buf;
}

/* ---- seqs ---- */

static kvs__seq_slot *seq_find(kvs__sess_state *st, uint64_t id)
{
  for (size_t i = 0; i < st->n_seqs; i++)
    if (st->seqs[i].id == id) return &st->seqs[i];
  return NULL;
}

/* Live seqs are capped per session; going over answers -EMFILE. */
static int seq_create(kvs__sess_state *st, uint64_t id, kvs__seq_slot **out, kvs__rep *rep)
{
  if (st->n_seqs >= KVS_MAX_SEQS_PER_CLIENT)
    return kvs__ops_fail(rep, -EMFILE, "too many open sequences (max %u)", KVS_MAX_SEQS_PER_CLIENT);
  if (st->n_seqs == st->cap_seqs) {
    size_t cap = st->cap_seqs ? st->cap_seqs * 2 : 16;
    kvs__seq_slot *n = realloc(st->seqs, cap * sizeof *n);
    if (!n) return kvs__ops_fail(rep, -ENOMEM, "cannot create sequence %llu: out of memory",
                        (unsigned long long)id);
    st->seqs = n;
    st->cap_seqs = cap;
  }
  kvs__seq *q;
  int r = kvs__seq_new(st->space, &q);
  if (r < 0)
    return kvs__ops_fail(rep, r, "cannot create sequence %llu: %s", (unsigned long long)id,
                kvs_strerror(r));
  st->seqs[st->n_seqs] = (kvs__seq_slot){.id = id, .seq = q};
  *out = &st->seqs[st->n_seqs++];
  return 0;
}

static void seq_remove(kvs__sess_state *st, kvs__seq_slot *slot)
{
  kvs__seq_free(slot->seq);
  *slot = st->seqs[--st->n_seqs];
}

/* ---- hello ---- */

static int resolve_bits(int32_t asked, uint32_t def, uint32_t *out)
{
  if (asked <= 0) {
    *out = def;
    return 0;
  }
  if (!kvs__bits_valid((uint32_t)asked)) return -EINVAL;
  *out = (uint32_t)asked;
  return 0;
}

static int op_hello(const kvs__ops_env *env, kvs__sess_state *st, const kvs__req *rq,
                    kvs__rep *rep)
{
  const kvs__hello *h = &rq->hello;
  const kvs__config *cfg = env->cfg;
  if (st->hello_done) return kvs__ops_fail(rep, -EPROTO, "hello already done on this connection");
  if (h->version < KVS_PROTO_VERSION_MIN || h->version > KVS_PROTO_VERSION)
    return kvs__ops_fail(rep, KVS_EVERSION,
                "protocol version %u not supported: this kvsinkd speaks versions %u to %u",
                h->version, KVS_PROTO_VERSION_MIN, KVS_PROTO_VERSION);
  if (!h->model_id[0] || h->n_layers == 0 || h->n_layers > KVS_MAX_LAYERS || h->n_kv_heads == 0 ||
      h->n_kv_heads > KVS_MAX_KV_HEADS || h->head_dim == 0 || h->head_dim > KVS_MAX_HEAD_DIM ||
      (h->dtype != KVS_DTYPE_F16 && h->dtype != KVS_DTYPE_BF16))
    return kvs__ops_fail(rep, KVS_EMODEL,
                "invalid model descriptor: id '%s', %u layers (1..%u), %u kv heads (1..%u), "
                "head dim %u (1..%u), dtype %u (1 f16, 2 bf16)",
                h->model_id, h->n_layers, KVS_MAX_LAYERS, h->n_kv_heads, KVS_MAX_KV_HEADS,
                h->head_dim, KVS_MAX_HEAD_DIM, h->dtype);
  kvs__space_key k;
  memset(&k, 0, sizeof k);
  snprintf(k.ns, sizeof k.ns, "%s", st->ns);
  snprintf(k.model_id, sizeof k.model_id, "%s", h->model_id);
  k.n_layers = h->n_layers;
  k.n_kv_heads = h->n_kv_heads;
  k.head_dim = h->head_dim;
  k.dtype = (kvs_dtype)h->dtype;
  if (h->salt_len > sizeof k.salt)
    return kvs__ops_fail(rep, -E2BIG, "salt of %u bytes, limit %zu", h->salt_len, sizeof k.salt);
  memcpy(k.salt, h->salt, h->salt_len); /* tenants of one namespace opt out of sharing */
  k.salt_len = h->salt_len;
  k.group = cfg->group_size;
  k.v_group = cfg->v_group_size;
  if (resolve_bits(h->k_bits, cfg->k_bits, &k.k_bits) < 0 ||
      resolve_bits(h->v_bits, cfg->v_bits, &k.v_bits) < 0)
    return kvs__ops_fail(rep, -EINVAL, "bits %d/%d: expected 2, 3, 4, 8 or 16 (0 = default)", h->k_bits,
                h->v_bits);
  if (h->policy == KVS_POLICY_DEFAULT) k.policy = (kvs_policy)cfg->policy;
  else if (h->policy >= KVS_POLICY_NONE && h->policy <= KVS_POLICY_KVSINK)
    k.policy = (kvs_policy)h->policy;
  else
    return kvs__ops_fail(rep, -EINVAL, "policy %d: expected default, none, pfn or kvsink (0..3)",
                h->policy);
  if (h->pfn < 0) k.pfn = cfg->pfn;
  else if ((uint32_t)h->pfn <= k.group) k.pfn = (uint32_t)h->pfn;
  else return kvs__ops_fail(rep, -EINVAL, "pfn %d larger than the group size %u", h->pfn, k.group);
  /* outliers: the request's, else the model profile's, else the config's */
  const kvs__profile *mprof = kvs__profiles_find(env->profiles, h->model_id);
  if (h->outliers < 0) k.outliers = mprof && mprof->outliers >= 0.f ? mprof->outliers : cfg->outliers;
  else if (h->outliers <= 0.01f) k.outliers = h->outliers;
  else return kvs__ops_fail(rep, -EINVAL, "outliers %g: expected a fraction 0..0.01", h->outliers);
  const kvs__profile *prof = NULL;
  int fell_back = 0;
  if (k.policy == KVS_POLICY_KVSINK) {
    prof = mprof;
    if (!prof) {
      k.policy = KVS_POLICY_PFN; /* the reply says profile=false */
      fell_back = 1;
    }
  }
  uint64_t seg = h->seg_size ? h->seg_size : KVS_DEFAULT_SEG_SIZE;
  if (seg > cfg->max_segment_size) seg = cfg->max_segment_size;
  uint64_t pg = (uint64_t)sysconf(_SC_PAGESIZE);
  seg = (seg + pg - 1) / pg * pg;

  int dev = kvs__opsdev_pool(env, st, h);
  int r = kvs__space_ref(st->store, &k, prof, &st->space);
  if (r < 0) {
    st->space = NULL;
    return kvs__ops_fail(rep, r, "cannot create the cache space: %s", kvs_strerror(r));
  }
  char name[64];
  snprintf(name, sizeof name, "kvsink-session-%llu", (unsigned long long)st->id);
  r = kvs__segment_create(&st->seg, seg, name);
  if (r < 0) {
    kvs__space_unref(st->space);
    st->space = NULL;
    return kvs__ops_fail(rep, r, "cannot create a %llu-byte segment: %s", (unsigned long long)seg,
                strerror(-r));
  }
  st->key = k;
  st->hello_done = 1;
  st->fell_back = fell_back;
  kvs__opsdev_hello(env, st, h, dev, seg, rep);
  rep->session = st->id;
  rep->seg_size = st->seg.size;
  /* the fast area: the segment's last KVS_FAST_BYTES, when asked for and
   * the segment is large enough that the client keeps most of it */
  st->fast_off = h->fast && st->seg.size >= 4u * KVS_FAST_BYTES ? st->seg.size - KVS_FAST_BYTES : 0;
  rep->fast_off = st->fast_off;
  if (st->fast_off) st->seg.data = st->fast_off; /* requests may not name the area */
  rep->group = k.group;
  rep->k_bits = (int32_t)k.k_bits;
  rep->v_bits = (int32_t)k.v_bits;
  rep->policy = k.policy;
  rep->pfn = (int32_t)k.pfn;
  rep->outliers = k.outliers;
  rep->has_profile = kvs__space_has_profile(st->space);
  rep->policy_fallback = fell_back;
  rep->v_group = kvs__space_qparams(st->space)->v_group;
  const kvs__profile *sp = kvs__space_profile(st->space);
  if (rep->has_profile && sp) {
    rep->sink_layer = sp->layer;
    rep->n_sink_channels = sp->n_channels;
    memcpy(rep->sink_channels, sp->channels, sp->n_channels * sizeof sp->channels[0]);
  }
  char mid[KVS_MAX_MODEL_ID + 1];
  printable(k.model_id, mid, sizeof mid);
  if (fell_back)
    kvs__notice("session %llu: no sink profile for model '%s': policy kvsink falls back to pfn",
                (unsigned long long)st->id, mid);
  /* the pid a client states is only informational: the log names the
   * kernel's (SO_PEERCRED) and adds the stated one when they differ */
  if (h->client_pid && h->client_pid != (uint32_t)st->pid)
    kvs__info("session %llu: pid %d says it is pid %u", (unsigned long long)st->id, (int)st->pid,
              h->client_pid);
  kvs__info("session %llu: hello from pid %d (%s), model '%s' %u/%u/%u, bits %u/%u, policy %s, "
            "pfn %u, %ssegment %llu bytes",
            (unsigned long long)st->id, (int)st->pid, st->ns, mid, k.n_layers,
            k.n_kv_heads, k.head_dim, k.k_bits, k.v_bits, kvs__policy_name(k.policy), k.pfn,
            k.salt_len ? "salted, " : "", (unsigned long long)st->seg.size);
  return 0;
}

void kvs__ops_hello_undo(kvs__sess_state *st)
{
  kvs__devseg_close(&st->dseg);
  kvs__segment_close(&st->seg);
  if (st->space) kvs__space_unref(st->space);
  st->space = NULL;
  st->hello_done = 0;
  st->fell_back = 0;
  st->fast_off = 0;
}

/* ---- put / get / lookup / release ---- */

/* Size in bytes of [layers][n][C] 16-bit, or UINT64_MAX on overflow. */
static uint64_t kv_bytes(const kvs__sess_state *st, uint32_t layers, uint32_t n)
{
  uint64_t b;
  if (kvs__mul_u64(&b, layers, n, (uint64_t)st->key.n_kv_heads * st->key.head_dim, 2) < 0)
    return UINT64_MAX;
  return b;
}

static int check_layers(const kvs__sess_state *st, const kvs__req *rq, kvs__rep *rep)
{
  if (rq->layer_begin > rq->layer_end || rq->layer_end > st->key.n_layers)
    return kvs__ops_fail(rep, -EINVAL, "layer range [%u, %u) outside the model's %u layers",
                rq->layer_begin, rq->layer_end, st->key.n_layers);
  return 0;
}

static int check_range(const kvs__sess_state *st, kvs__rep *rep, const char *what, uint64_t off,
                       uint64_t len, uint64_t align)
{
  if (len == UINT64_MAX || !kvs__segment_range_ok(&st->seg, off, len, align))
    return kvs__ops_fail(rep, KVS_ESEGMENT,
                "%s: offset %llu + %llu bytes outside the %llu-byte segment or not %llu-aligned",
                what, (unsigned long long)off, (unsigned long long)len,
                (unsigned long long)st->seg.data, (unsigned long long)align);
  return 0;
}

static int op_put(kvs__sess_state *st, const kvs__req *rq, kvs__rep *rep)
{
  int r;
  if ((r = check_layers(st, rq, rep)) < 0) return r;
  uint32_t nl = rq->layer_end - rq->layer_begin, n = rq->n_tokens;
  if (n > 0 && !rq->tokens) return kvs__ops_fail(rep, -EPROTO, "put: tokens missing");
  uint64_t kvb = kv_bytes(st, nl, n);
  const uint16_t *kp = NULL, *vp = NULL;
  const float *act = NULL;
  if (nl > 0 && !rq->dev) {
    if ((r = check_range(st, rep, "k", rq->k_off, kvb, 2)) < 0) return r;
    if ((r = check_range(st, rep, "v", rq->v_off, kvb, 2)) < 0) return r;
    kp = (const uint16_t *)(st->seg.base + rq->k_off);
    vp = (const uint16_t *)(st->seg.base + rq->v_off);
  }
  uint32_t ach = 0;
  uint64_t ab = 0;
  if (rq->has_act && rq->act_channels > 0) {
    if (rq->act_channels > KVS_MAX_ACT_CHANNELS)
      return kvs__ops_fail(rep, -E2BIG, "act_channels %u over %u", rq->act_channels, KVS_MAX_ACT_CHANNELS);
    if (kvs__mul_u64(&ab, n, rq->act_channels, 4, 1) < 0) ab = UINT64_MAX;
    if (!rq->dev) {
      if ((r = check_range(st, rep, "act", rq->act_off, ab, 4)) < 0) return r;
      act = (const float *)(st->seg.base + rq->act_off);
    }
    ach = rq->act_channels;
  }
  /* device segment or pinned memfd: staged once into daemon memory */
  int on_dev = 0;
  if ((r = kvs__opsdev_put_src(st, rq, nl ? kvb : 0, ab, &kp, &vp, &act, &on_dev, rep)) < 0)
    return r;
  kvs__seq_slot *slot = seq_find(st, rq->seq);
  int created = 0;
  if (!slot) {
    if ((r = seq_create(st, rq->seq, &slot, rep)) < 0) return r;
    created = 1;
  }
  kvs__put_info info = {0};
  char msg[KVS_MAX_ERRMSG] = "";
  r = (on_dev ? kvs__seq_put_dev : kvs__seq_put)(slot->seq, rq->start, rq->tokens, n,
                                                 rq->layer_begin, rq->layer_end, kp, vp, act, ach,
                                                 &info, msg);
  if (r < 0) {
    if (created) seq_remove(st, slot); /* atomic: nothing was there before */
    return kvs__ops_fail(rep, r, "%s", msg[0] ? msg : kvs_strerror(r));
  }
  rep->quantized = info.quantized;
  rep->sinks = info.sinks;
  rep->seq_len = info.seq_len;
  return 0;
}

static int op_get(kvs__sess_state *st, const kvs__req *rq, kvs__rep *rep)
{
  int r;
  if ((r = check_layers(st, rq, rep)) < 0) return r;
  kvs__seq_slot *slot = seq_find(st, rq->seq);
  if (!slot) return kvs__ops_fail(rep, -ENOENT, "no sequence %llu", (unsigned long long)rq->seq);
  uint32_t nl = rq->layer_end - rq->layer_begin;
  uint64_t kvb = kv_bytes(st, nl, rq->n_tokens);
  uint16_t *kp = NULL, *vp = NULL;
  kvs__opsdev_get g = {0};
  if (nl > 0 && rq->n_tokens > 0) {
    if (!rq->dev) {
      if ((r = check_range(st, rep, "k", rq->k_off, kvb, 2)) < 0) return r;
      if ((r = check_range(st, rep, "v", rq->v_off, kvb, 2)) < 0) return r;
      kp = (uint16_t *)(st->seg.base + rq->k_off);
      vp = (uint16_t *)(st->seg.base + rq->v_off);
    }
    if ((r = kvs__opsdev_get_dst(st, rq, kvb, &kp, &vp, &g, rep)) < 0) return r;
  }
  char msg[KVS_MAX_ERRMSG] = "";
  r = (g.on_dev ? kvs__seq_get_dev : kvs__seq_get)(slot->seq, rq->start, rq->n_tokens,
                                                   rq->layer_begin, rq->layer_end, kp, vp, msg);
  if (r < 0) return kvs__ops_fail(rep, r, "%s", msg[0] ? msg : kvs_strerror(r));
  if ((r = kvs__opsdev_get_done(st, rq, kvb, kp, vp, &g, rep)) < 0) return r;
  rep->seq_len = kvs__seq_len(slot->seq);
  return 0;
}

static int op_lookup(kvs__sess_state *st, const kvs__req *rq, kvs__rep *rep)
{
  if (rq->n_tokens > 0 && !rq->tokens) return kvs__ops_fail(rep, -EPROTO, "lookup: tokens missing");
  kvs__seq_slot *slot = NULL;
  int created = 0, r;
  if (rq->bind) {
    slot = seq_find(st, rq->seq);
    if (slot && kvs__seq_len(slot->seq) > 0)
      return kvs__ops_fail(rep, -EEXIST, "bind: sequence %llu is not empty", (unsigned long long)rq->seq);
    if (!slot) {
      if ((r = seq_create(st, rq->seq, &slot, rep)) < 0) return r;
      created = 1;
    }
  }
  uint32_t cached = 0;
  r = kvs__space_lookup(st->space, rq->tokens, rq->n_tokens, slot ? slot->seq : NULL, &cached);
  if (r < 0) {
    if (created) seq_remove(st, slot);
    return kvs__ops_fail(rep, r, "lookup failed: %s", kvs_strerror(r));
  }
  rep->cached = cached;
  rep->seq_len = slot ? kvs__seq_len(slot->seq) : 0;
  return 0;
}

static int op_release(kvs__sess_state *st, const kvs__req *rq, kvs__rep *rep)
{
  kvs__seq_slot *slot = seq_find(st, rq->seq);
  if (!slot) return kvs__ops_fail(rep, -ENOENT, "no sequence %llu", (unsigned long long)rq->seq);
  seq_remove(st, slot);
  return 0;
}

/* ---- control ops ---- */

typedef struct list_ctx {
  const char *ns;        /* NULL: every namespace (admin) */
  kvs__stats *st;        /* sum one namespace into st instead of listing */
  kvs_space_info *v;
  uint32_t n, cap;
  int oom;
} list_ctx;

/* The store's own stats into the wire struct. The pool's capacity is
 * pool_bytes: blocks of several sizes share it, so there is no block
 * count to report as a total (pool_free_bytes is what any size can use). */
void kvs__ops_store_stats(const kvs__store *store, kvs__stats *st)
{
  _Static_assert(KVS_MAX_ERRMSG >= KVS_STORE_ERRMSG && KVS_MAX_MODEL_ID == KVS_STORE_MAX_MODEL_ID &&
                     KVS_MAX_TOKENS_PER_PUT <= KVS_STORE_MAX_TOKENS &&
                     KVS_MAX_LAYERS <= KVS_STORE_MAX_LAYERS &&
                     KVS_MAX_KV_HEADS <= KVS_STORE_MAX_KV_HEADS &&
                     KVS_MAX_HEAD_DIM <= KVS_STORE_MAX_HEAD_DIM,
                 "wire limits within the store's");
  kvs__store_stats ss;
  kvs__store_stats_get(store, &ss);
  st->pool_bytes = ss.pool_bytes;
  st->pool_used_bytes = ss.pool_used_bytes;
  st->pool_free_bytes = ss.pool_free_bytes;
  st->residual_bytes = ss.residual_bytes;
  st->residual_limit_bytes = ss.residual_max;
  st->blocks_used = ss.blocks;
  st->blocks_pinned = ss.blocks_pinned;
  st->sink_rows_used = ss.sink_rows;
  st->lookups = ss.lookups;
  st->lookup_hit_tokens = ss.lookup_hit_tokens;
  st->lookup_tokens = ss.lookup_tokens;
  st->puts = ss.puts;
  st->gets = ss.gets;
  st->evictions = ss.evictions;
  st->put_nospc = ss.put_nospc;
  st->bytes_in = ss.bytes_in;
  st->bytes_out = ss.bytes_out;
  st->stored_raw_bytes = ss.stored_raw_bytes;
  st->stored_bytes = ss.stored_bytes;
  st->sinks_found = ss.sinks_found;
  st->sinks_dropped = ss.sinks_dropped;
  st->outliers_kept = ss.outliers_kept;
  st->seqs = ss.seqs;
  st->spaces = ss.spaces;
  snprintf(st->backend, sizeof st->backend, "%s", ss.backend);
}

/* Store counters of every pool summed (the store fields only: the
 * server's are 0 in each term). */
static void stats_add(kvs__stats *sum, const kvs__stats *x)
{
#define KVS_ADD_(f) sum->f += x->f;
  KVS_STATS_U64_FIELDS(KVS_ADD_)
#undef KVS_ADD_
  sum->spaces += x->spaces;
  if (!sum->backend[0]) memcpy(sum->backend, x->backend, sizeof sum->backend);
}

void kvs__ops_all_stats(const kvs__ops_env *env, kvs__stats *st)
{
  kvs__store *stores[KVS_MAX_DEVICES + 1];
  memset(st, 0, sizeof *st);
  for (size_t i = 0, n = kvs__opsdev_stores(env, stores); i < n; i++) {
    kvs__stats one;
    memset(&one, 0, sizeof one);
    kvs__ops_store_stats(stores[i], &one);
    stats_add(st, &one);
  }
}

/* One entry per pool: the GPUs' (cuda:ORDINAL, by UUID), then the host
 * pool when it is a pool of its own. */
static uint32_t pool_stats(const kvs__ops_env *env, kvs_pool_stats *v)
{
  const kvs__devset *d = env->devs;
  uint32_t n = 0;
  int host_seen = 0;
  for (size_t i = 0; d && i < d->n && n < KVS_MAX_POOLS; i++, n++) {
    const uint8_t *u = d->uuid[i];
    memset(&v[n], 0, sizeof v[n]);
    snprintf(v[n].device, sizeof v[n].device, "cuda:%d", d->ordinal[i]);
    snprintf(v[n].uuid, sizeof v[n].uuid,
             "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
             u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14],
             u[15]);
    kvs__ops_store_stats(d->store[i], &v[n].stats);
    host_seen |= d->store[i] == env->store;
  }
  if (!host_seen && n < KVS_MAX_POOLS) {
    memset(&v[n], 0, sizeof v[n]);
    kvs__ops_store_stats(env->store, &v[n].stats);
    snprintf(v[n].device, sizeof v[n].device, "%s", v[n].stats.backend);
    n++;
  }
  return n;
}

static void list_cb(const kvs__space_key *k, uint64_t blocks, uint64_t pinned, uint64_t seqs,
                    void *arg)
{
  list_ctx *c = arg;
  if (c->ns && strcmp(c->ns, k->ns) != 0) return;
  if (c->st) {
    c->st->spaces++;
    c->st->blocks_used += blocks;
    c->st->blocks_pinned += pinned;
    c->st->seqs += seqs;
    return;
  }
  if (c->oom || c->n == KVS_MAX_LIST_ITEMS) return; /* the reply's limit */
  if (c->n == c->cap) {
    uint32_t cap = c->cap ? c->cap * 2 : 16;
    kvs_space_info *nv = realloc(c->v, cap * sizeof *nv);
    if (!nv) {
      c->oom = 1;
      return;
    }
    c->v = nv;
    c->cap = cap;
  }
  kvs_space_info *i = &c->v[c->n++];
  memset(i, 0, sizeof *i);
  snprintf(i->ns, sizeof i->ns, "%s", k->ns);
  snprintf(i->model_id, sizeof i->model_id, "%s", k->model_id);
  i->n_layers = k->n_layers;
  i->n_kv_heads = k->n_kv_heads;
  i->head_dim = k->head_dim;
  i->k_bits = k->k_bits;
  i->v_bits = k->v_bits;
  i->pfn = k->pfn;
  i->policy = k->policy;
  i->has_profile = k->prof_id != 0;
  i->blocks = blocks;
  i->pinned = pinned;
  i->seqs = seqs;
}

/* The space a session's key names, as list_cb saw it (prof_id aside: a
 * session that fell back has none). */
static int same_space(const kvs_space_info *i, const kvs__space_key *k)
{
  return strcmp(i->ns, k->ns) == 0 && strcmp(i->model_id, k->model_id) == 0 &&
         i->n_layers == k->n_layers && i->n_kv_heads == k->n_kv_heads &&
         i->head_dim == k->head_dim && i->k_bits == k->k_bits && i->v_bits == k->v_bits &&
         i->pfn == k->pfn && i->policy == k->policy && !i->has_profile;
}

static void count_fallback(const kvs__sess_state *s, void *arg)
{
  list_ctx *c = arg;
  if (!s->hello_done || !s->fell_back) return;
  for (uint32_t i = 0; i < c->n; i++)
    if (same_space(&c->v[i], &s->key)) {
      c->v[i].fallback_sessions++;
      return;
    }
}

static int op_list(const kvs__ops_env *env, kvs__sess_state *st, kvs__rep *rep)
{
  list_ctx c;
  memset(&c, 0, sizeof c);
  c.ns = st->admin ? NULL : st->ns;
  kvs__store *stores[KVS_MAX_DEVICES + 1];
  for (size_t i = 0, n = kvs__opsdev_stores(env, stores); i < n; i++)
    kvs__store_foreach_space(stores[i], list_cb, &c);
  if (c.oom) {
    free(c.v);
    return kvs__ops_fail(rep, -ENOMEM, "out of memory");
  }
  if (env->foreach_session) env->foreach_session(env->arg, count_fallback, &c);
  rep->spaces = c.v;
  rep->n_spaces = c.n;
  return 0;
}

static int op_profiles(const kvs__ops_env *env, kvs__rep *rep)
{
  const kvs__profiles *ps = env->profiles;
  size_t n = ps->n < KVS_MAX_LIST_ITEMS ? ps->n : KVS_MAX_LIST_ITEMS;
  if (!n) return 0;
  kvs_profile_info *v = calloc(n, sizeof *v);
  if (!v) return kvs__ops_fail(rep, -ENOMEM, "out of memory");
  for (size_t i = 0; i < n; i++) {
    const kvs__profile *p = &ps->v[i];
    uint32_t nc = p->n_channels;
    if (nc > KVS_PROFILE_MAX_CHANNELS) nc = KVS_PROFILE_MAX_CHANNELS;
    if (nc > KVS_MAX_ACT_CHANNELS) nc = KVS_MAX_ACT_CHANNELS;
    snprintf(v[i].model_id, sizeof v[i].model_id, "%s", p->model_id);
    v[i].layer = p->layer;
    v[i].n_channels = nc;
    memcpy(v[i].channels, p->channels, nc * sizeof v[i].channels[0]);
    v[i].tau = p->tau;
    v[i].max_sinks = p->max_sinks;
    v[i].pfn = p->pfn;
  }
  rep->profiles = v;
  rep->n_profiles = (uint32_t)n;
  return 0;
}

/* An admin sees everything; a data client the spaces of its namespace,
 * the daemon's uptime and backend, and nothing of other users. */
static void op_stats(const kvs__ops_env *env, kvs__sess_state *st, kvs__rep *rep)
{
  memset(&rep->stats, 0, sizeof rep->stats);
  if (st->admin) {
    kvs__ops_all_stats(env, &rep->stats);
    if (env->server_stats) env->server_stats(env->arg, &rep->stats);
    kvs_pool_stats *v = calloc(KVS_MAX_POOLS, sizeof *v);
    if (v) { /* the totals still go out without them */
      rep->pools = v;
      rep->n_pools = pool_stats(env, v);
    }
    return;
  }
  kvs__stats all;
  memset(&all, 0, sizeof all);
  if (env->server_stats) env->server_stats(env->arg, &all);
  rep->stats.uptime_s = all.uptime_s;
  memcpy(rep->stats.backend, all.backend, sizeof all.backend);
  list_ctx c;
  memset(&c, 0, sizeof c);
  c.ns = st->ns;
  c.st = &rep->stats;
  kvs__store *stores[KVS_MAX_DEVICES + 1];
  for (size_t i = 0, n = kvs__opsdev_stores(env, stores); i < n; i++)
    kvs__store_foreach_space(stores[i], list_cb, &c);
}

int kvs__ops_metrics_text(const kvs__ops_env *env, kvs__text *t)
{
  kvs__metrics_view *v = calloc(1, sizeof *v);
  if (!v) return -ENOMEM;
  if (env->server_stats) env->server_stats(env->arg, &v->server);
  kvs__ops_all_stats(env, &v->total);
  /* one row per pool: one GPU (or host) labelled as the backend, several
   * GPUs "cuda:ORDINAL" each */
  const kvs__devset *d = env->devs;
  if (d && d->n > 1) {
    for (size_t i = 0; i < d->n && v->npool < KVS_MAX_POOLS; i++, v->npool++) {
      kvs__store_stats_get(d->store[i], &v->pool[v->npool]);
      snprintf(v->pool_label[v->npool], sizeof v->pool_label[0], "cuda:%d", d->ordinal[i]);
    }
  } else {
    kvs__store_stats_get(env->store, &v->pool[0]);
    snprintf(v->pool_label[0], sizeof v->pool_label[0], "%s",
             v->server.backend[0] ? v->server.backend : v->pool[0].backend);
    v->npool = 1;
  }
  for (size_t i = 0; d && i < d->n && v->nstaging < KVS_MAX_POOLS; i++, v->nstaging++) {
    v->staging_ordinal[v->nstaging] = d->ordinal[i];
    v->staged[v->nstaging] = d->staged[i];
  }
  kvs__store *stores[KVS_MAX_DEVICES + 1];
  size_t n = kvs__opsdev_stores(env, stores);
  for (size_t i = 0; i < n && v->nstores < KVS_MAX_POOLS; i++) v->stores[v->nstores++] = stores[i];
  int r = kvs__metrics_render(v, env->metrics, t);
  free(v);
  return r;
}

/* Every namespace's spaces are in it: admin only. */
static int op_metrics(const kvs__ops_env *env, kvs__rep *rep)
{
  kvs__text t = {0};
  if (kvs__ops_metrics_text(env, &t) < 0) {
    kvs__text_free(&t);
    return kvs__ops_fail(rep, -ENOMEM, "out of memory");
  }
  if (t.len > KVS_MAX_FRAME - 64) {
    kvs__text_free(&t);
    return kvs__ops_fail(rep, -E2BIG, "metrics of %zu bytes do not fit a frame: use metrics_listen",
                t.len);
  }
  rep->text = t.p; /* kvs__rep_free frees it */
  rep->text_len = (uint32_t)t.len;
  return 0;
}

static int is_admin_op(kvs__op op)
{
  return op == KVS_OP_EVICT || op == KVS_OP_RELOAD || op == KVS_OP_PROFILES ||
         op == KVS_OP_METRICS;
}

static int run_op(const kvs__ops_env *env, kvs__sess_state *st, const kvs__req *rq,
                  kvs__rep *rep);

int kvs__ops_run(const kvs__ops_env *env, kvs__sess_state *st, const kvs__req *rq, kvs__rep *rep)
{
  uint64_t t0 = env->metrics ? kvs__metrics_now_ns() : 0, tp = 0;
  kvs__store *pst = st->store; /* the session's pool, fixed at hello */
  int prof = 0;
  if (env->profile && pst && (rq->op == KVS_OP_PUT || rq->op == KVS_OP_GET)) {
    if (!st->prof) st->prof = calloc(1, sizeof *st->prof);
    if (st->prof && (prof = kvs__prof_begin(st->prof, rq->op, pst))) tp = kvs__prof_clock();
  }
  int act = run_op(env, st, rq, rep);
  if (prof) kvs__prof_end(st->prof, rq->op, pst, tp);
  if (env->metrics)
    kvs__metrics_request(env->metrics, rq->op, rep->err, kvs__metrics_now_ns() - t0);
  /* messages may quote client strings (model id): printable ASCII only */
  for (char *p = rep->errmsg; *p; p++)
    if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e) *p = '?';
  return act;
}

static int run_op(const kvs__ops_env *env, kvs__sess_state *st, const kvs__req *rq,
                  kvs__rep *rep)
{
  memset(rep, 0, sizeof *rep);
  rep->op = rq->op;
  rep->id = rq->id;
  if (is_admin_op(rq->op) && !st->admin) {
    kvs__ops_fail(rep, -EACCES, "%s is an admin operation: use the admin socket (or uid 0, admin_group)",
         kvs__op_name(rq->op));
    return KVS_OPS_REPLY;
  }
  switch (rq->op) {
  case KVS_OP_PING:
    return KVS_OPS_REPLY;
  case KVS_OP_BYE:
    return KVS_OPS_CLOSE;
  case KVS_OP_STATS:
    op_stats(env, st, rep);
    return KVS_OPS_REPLY;
  case KVS_OP_LIST:
    op_list(env, st, rep);
    return KVS_OPS_REPLY;
  case KVS_OP_PROFILES:
    op_profiles(env, rep);
    return KVS_OPS_REPLY;
  case KVS_OP_METRICS:
    op_metrics(env, rep);
    return KVS_OPS_REPLY;
  case KVS_OP_EVICT:
    {
      kvs__store *stores[KVS_MAX_DEVICES + 1];
      for (size_t i = 0, n = kvs__opsdev_stores(env, stores); i < n; i++)
        rep->evicted += kvs__store_evict_all(stores[i]);
    }
    kvs__notice("evicted %llu blocks on request of session %llu (uid %u)",
                (unsigned long long)rep->evicted, (unsigned long long)st->id, (unsigned)st->uid);
    return KVS_OPS_REPLY;
  case KVS_OP_RELOAD: {
    int r = env->reload ? env->reload(env->arg, rep->errmsg) : -ENOTSUP;
    if (r < 0) rep->err = r;
    return KVS_OPS_REPLY;
  }
  case KVS_OP_HELLO:
    return op_hello(env, st, rq, rep) < 0 ? KVS_OPS_REPLY : KVS_OPS_REPLY_FD;
  default:
    break;
  }
  if (!st->hello_done) {
    kvs__ops_fail(rep, -EPROTO, "%s before hello", kvs__op_name(rq->op));
    return KVS_OPS_REPLY;
  }
  switch (rq->op) {
  case KVS_OP_PUT: op_put(st, rq, rep); break;
  case KVS_OP_GET: op_get(st, rq, rep); break;
  case KVS_OP_LOOKUP: op_lookup(st, rq, rep); break;
  case KVS_OP_RELEASE: op_release(st, rq, rep); break;
  case KVS_OP_TABLE: {
    kvs__seq_slot *slot = seq_find(st, rq->seq);
    if (check_layers(st, rq, rep) < 0) break;
    if (!slot) {
      kvs__ops_fail(rep, -ENOENT, "no sequence %llu", (unsigned long long)rq->seq);
      break;
    }
    /* the session's own pool (its GPU's), where its seqs live */
    if (kvs__ops_table(st->store ? st->store : env->store, st, slot->seq, rq,
                       env->cfg->table_chunks, rep) == 0 &&
        st->n_tbl_fds)
      return KVS_OPS_REPLY_FDS;
    break;
  }
  default: kvs__ops_fail(rep, -EPROTO, "unknown op"); break;
  }
  return KVS_OPS_REPLY;
}
