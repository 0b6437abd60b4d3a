/* SPDX-License-Identifier: MIT */
/* Request and reply encoders: one msgpack map behind a 4-byte length. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "proto/proto.h"
#include "proto/internal.h"

typedef struct enc {
  msgpack_sbuffer sb;
  msgpack_packer pk;
  int fail;
} enc;

static void enc_init(enc *e)
{
  static const char zero[4] = { 0 };
  msgpack_sbuffer_init(&e->sb);
  msgpack_packer_init(&e->pk, &e->sb, msgpack_sbuffer_write);
  /* room for the frame header, filled in by enc_finish */
  e->fail = msgpack_sbuffer_write(&e->sb, zero, 4) != 0;
}

static void key(enc *e, const char *k)
{
  e->fail |= msgpack_pack_str_with_body(&e->pk, k, strlen(k)) != 0;
}

static void kv_str(enc *e, const char *k, const char *v)
{
  key(e, k);
  e->fail |= msgpack_pack_str_with_body(&e->pk, v, strlen(v)) != 0;
}

static void kv_u64(enc *e, const char *k, uint64_t v)
{
  key(e, k);
  e->fail |= msgpack_pack_uint64(&e->pk, v) != 0;
}

static void kv_i64(enc *e, const char *k, int64_t v)
{
  key(e, k);
  e->fail |= msgpack_pack_int64(&e->pk, v) != 0;
}

static void kv_float(enc *e, const char *k, float v)
{
  key(e, k);
  e->fail |= msgpack_pack_float(&e->pk, v) != 0;
}

static void kv_bool(enc *e, const char *k, int v)
{
  key(e, k);
  e->fail |= (v ? msgpack_pack_true(&e->pk) : msgpack_pack_false(&e->pk)) != 0;
}

static void kv_layers(enc *e, uint32_t b, uint32_t end)
{
  key(e, "layers");
  e->fail |= msgpack_pack_array(&e->pk, 2) != 0;
  e->fail |= msgpack_pack_uint32(&e->pk, b) != 0;
  e->fail |= msgpack_pack_uint32(&e->pk, end) != 0;
}

static void kv_u32_array(enc *e, const char *k, const uint32_t *v, uint32_t n)
{
  key(e, k);
  e->fail |= msgpack_pack_array(&e->pk, n) != 0;
  for (uint32_t i = 0; i < n; i++)
    e->fail |= msgpack_pack_uint32(&e->pk, v[i]) != 0;
}

/* Token ids as one bin of little-endian uint32 (version 2; get_tokens). */
static void kv_tokens(enc *e, const uint32_t *v, uint32_t n)
{
  key(e, "tokens");
  if (n > UINT32_MAX / 4) {
    e->fail = 1;
    return;
  }
  e->fail |= msgpack_pack_bin(&e->pk, 4 * n) != 0;
  uint8_t b[256];
  for (uint32_t i = 0; i < n;) {
    uint32_t m = 0;
    for (; i < n && m < sizeof b; i++, m += 4) {
      b[m] = (uint8_t)v[i];
      b[m + 1] = (uint8_t)(v[i] >> 8);
      b[m + 2] = (uint8_t)(v[i] >> 16);
      b[m + 3] = (uint8_t)(v[i] >> 24);
    }
    e->fail |= msgpack_pack_bin_body(&e->pk, b, m) != 0;
  }
}

static int enc_finish(enc *e, char **out, size_t *len)
{
  if (e->fail) {
    msgpack_sbuffer_destroy(&e->sb);
    return -ENOMEM;
  }
  size_t payload = e->sb.size - 4;
  if (payload > KVS_MAX_FRAME) {
    msgpack_sbuffer_destroy(&e->sb);
    return -E2BIG;
  }
  kvs__frame_put_len((uint8_t *)e->sb.data, (uint32_t)payload);
  *len = e->sb.size;
  *out = msgpack_sbuffer_release(&e->sb);
  return 0;
}

int kvs__encode_req(const kvs__req *req, char **out, size_t *len)
{
  const kvs__hello *h = &req->hello;
  uint32_t n = 2;
  enc e;

  switch (req->op) {
  case KVS_OP_HELLO:
    if (strnlen(h->model_id, sizeof(h->model_id)) > KVS_MAX_MODEL_ID)
      return -E2BIG;
    if (h->dtype != KVS_DTYPE_F16 && h->dtype != KVS_DTYPE_BF16)
      return -EINVAL;
    if (h->salt_len > KVS_MAX_SALT)
      return -E2BIG;
    n += 9 + (h->has_gpu ? 2 : 0) + (h->salt_len ? 1 : 0) + (h->fast ? 1 : 0);
    break;
  case KVS_OP_PUT:
    n += 6 + (req->has_act ? 2 : 0) + (req->dev ? 1 : 0);
    /* fall through */
  case KVS_OP_LOOKUP:
    if (req->n_tokens > KVS_MAX_TOKENS_PER_PUT)
      return -E2BIG;
    if (req->n_tokens && !req->tokens)
      return -EINVAL;
    if (req->op == KVS_OP_LOOKUP)
      n += 3;
    break;
  case KVS_OP_GET:
    n += 6 + (req->dev ? 1 : 0);
    break;
  case KVS_OP_TABLE:
    n += 4;
    break;
  case KVS_OP_RELEASE:
    n += 1;
    break;
  case KVS_OP_STATS: case KVS_OP_BYE: case KVS_OP_LIST: case KVS_OP_EVICT:
  case KVS_OP_RELOAD: case KVS_OP_PROFILES: case KVS_OP_PING: case KVS_OP_METRICS:
  case KVS_OP_BELL:
    break;
  default:
    return -EINVAL;
  }

  enc_init(&e);
  e.fail |= msgpack_pack_map(&e.pk, n) != 0;
  kv_str(&e, "op", kvs__op_name(req->op));
  kv_u64(&e, "id", req->id);
  switch (req->op) {
  case KVS_OP_HELLO:
    kv_u64(&e, "version", h->version);
    key(&e, "model");
    e.fail |= msgpack_pack_map(&e.pk, 5) != 0;
    key(&e, "id");
    e.fail |= msgpack_pack_str_with_body(&e.pk, h->model_id,
                                         strnlen(h->model_id, sizeof(h->model_id))) != 0;
    kv_u64(&e, "layers", h->n_layers);
    kv_u64(&e, "kv_heads", h->n_kv_heads);
    kv_u64(&e, "head_dim", h->head_dim);
    kv_str(&e, "dtype", h->dtype == KVS_DTYPE_BF16 ? "bf16" : "fp16");
    kv_u64(&e, "seg_size", h->seg_size);
    kv_i64(&e, "k_bits", h->k_bits);
    kv_i64(&e, "v_bits", h->v_bits);
    kv_str(&e, "policy", kvs__policy_name(h->policy));
    kv_i64(&e, "pfn", h->pfn);
    kv_float(&e, "outliers", h->outliers);
    kv_u64(&e, "pid", h->client_pid);
    if (h->has_gpu) {
      key(&e, "gpu");
      e.fail |= msgpack_pack_bin_with_body(&e.pk, h->gpu_uuid, sizeof h->gpu_uuid) != 0;
      kv_u64(&e, "dev_seg_size", h->dev_seg_size);
    }
    if (h->salt_len) {
      key(&e, "salt");
      e.fail |= msgpack_pack_bin_with_body(&e.pk, h->salt, h->salt_len) != 0;
    }
    if (h->fast)
      kv_bool(&e, "fast", 1);
    break;
  case KVS_OP_PUT:
    kv_u64(&e, "seq", req->seq);
    kv_u64(&e, "start", req->start);
    kv_tokens(&e, req->tokens, req->n_tokens);
    kv_layers(&e, req->layer_begin, req->layer_end);
    kv_u64(&e, "k_off", req->k_off);
    kv_u64(&e, "v_off", req->v_off);
    if (req->has_act) {
      kv_u64(&e, "act_off", req->act_off);
      kv_u64(&e, "act_channels", req->act_channels);
    }
    if (req->dev)
      kv_bool(&e, "dev", 1);
    break;
  case KVS_OP_LOOKUP:
    kv_tokens(&e, req->tokens, req->n_tokens);
    kv_u64(&e, "seq", req->seq);
    kv_bool(&e, "bind", req->bind);
    break;
  case KVS_OP_GET:
    kv_u64(&e, "seq", req->seq);
    kv_u64(&e, "start", req->start);
    kv_u64(&e, "n", req->n_tokens);
    kv_layers(&e, req->layer_begin, req->layer_end);
    kv_u64(&e, "k_off", req->k_off);
    kv_u64(&e, "v_off", req->v_off);
    if (req->dev)
      kv_bool(&e, "dev", 1);
    break;
  case KVS_OP_RELEASE:
    kv_u64(&e, "seq", req->seq);
    break;
  case KVS_OP_TABLE:
    kv_u64(&e, "seq", req->seq);
    kv_layers(&e, req->layer_begin, req->layer_end);
    kv_u64(&e, "k_off", req->k_off);
    kv_u64(&e, "n", req->n_tokens);
    break;
  default:
    break;
  }
  return enc_finish(&e, out, len);
}

#define ONE(f) +1
#define STATS_U64_COUNT (0 KVS__STATS_U64(ONE))

static void enc_stats_map(enc *e, const kvs__stats *s)
{
  e->fail |= msgpack_pack_map(&e->pk, STATS_U64_COUNT + 2) != 0;
#define X(f) kv_u64(e, #f, s->f);
  KVS__STATS_U64(X)
#undef X
  kv_u64(e, "spaces", s->spaces);
  key(e, "backend");
  e->fail |= msgpack_pack_str_with_body(&e->pk, s->backend,
                                        strnlen(s->backend, sizeof(s->backend))) != 0;
}

static void enc_stats(enc *e, const kvs__stats *s)
{
  key(e, "stats");
  enc_stats_map(e, s);
}

static void enc_pools(enc *e, const kvs_pool_stats *v, uint32_t n)
{
  key(e, "pools");
  e->fail |= msgpack_pack_array(&e->pk, n) != 0;
  for (uint32_t i = 0; i < n; i++) {
    e->fail |= msgpack_pack_map(&e->pk, 3) != 0;
    kv_str(e, "device", v[i].device);
    kv_str(e, "uuid", v[i].uuid);
    key(e, "stats");
    enc_stats_map(e, &v[i].stats);
  }
}

static void enc_spaces(enc *e, const kvs_space_info *v, uint32_t n)
{
  key(e, "spaces");
  e->fail |= msgpack_pack_array(&e->pk, n) != 0;
  for (uint32_t i = 0; i < n; i++) {
    const kvs_space_info *s = &v[i];
    e->fail |= msgpack_pack_map(&e->pk, 14) != 0;
    kv_str(e, "ns", s->ns);
    kv_str(e, "model", s->model_id);
    kv_u64(e, "layers", s->n_layers);
    kv_u64(e, "kv_heads", s->n_kv_heads);
    kv_u64(e, "head_dim", s->head_dim);
    kv_u64(e, "k_bits", s->k_bits);
    kv_u64(e, "v_bits", s->v_bits);
    kv_str(e, "policy", kvs__policy_name(s->policy));
    kv_u64(e, "pfn", s->pfn);
    kv_bool(e, "profile", s->has_profile);
    kv_u64(e, "blocks", s->blocks);
    kv_u64(e, "pinned", s->pinned);
    kv_u64(e, "seqs", s->seqs);
    kv_u64(e, "fallback", s->fallback_sessions);
  }
}

static void enc_profiles(enc *e, const kvs_profile_info *v, uint32_t n)
{
  key(e, "profiles");
  e->fail |= msgpack_pack_array(&e->pk, n) != 0;
  for (uint32_t i = 0; i < n; i++) {
    const kvs_profile_info *p = &v[i];
    e->fail |= msgpack_pack_map(&e->pk, 6) != 0;
    kv_str(e, "model", p->model_id);
    kv_u64(e, "layer", p->layer);
    kv_u32_array(e, "channels", p->channels, p->n_channels);
    kv_float(e, "tau", p->tau);
    kv_u64(e, "max_sinks", p->max_sinks);
    kv_u64(e, "pfn", p->pfn);
  }
}

int kvs__encode_rep(const kvs__rep *rep, char **out, size_t *len)
{
  enc e;

  if (rep->err) {
    const char *m = rep->errmsg[0] ? rep->errmsg : kvs_strerror(rep->err);
    enc_init(&e);
    e.fail |= msgpack_pack_map(&e.pk, 2) != 0;
    kv_u64(&e, "id", rep->id);
    key(&e, "err");
    e.fail |= msgpack_pack_array(&e.pk, 2) != 0;
    e.fail |= msgpack_pack_int32(&e.pk, rep->err) != 0;
    e.fail |= msgpack_pack_str_with_body(&e.pk, m, strnlen(m, KVS_MAX_ERRMSG - 1)) != 0;
    return enc_finish(&e, out, len);
  }

  uint32_t n = 1;
  switch (rep->op) {
  case KVS_OP_HELLO:
    if (rep->n_sink_channels > KVS_MAX_ACT_CHANNELS)
      return -E2BIG;
    n += 14 + (rep->seg_device ? 1 : 0) + (rep->fast_off ? 1 : 0); /* seg_kind, dev_seg_size, fast_off */
    break;
  case KVS_OP_PUT: n += 3; break;
  case KVS_OP_LOOKUP: n += 2; break;
  case KVS_OP_STATS:
    if (rep->n_pools > KVS_MAX_POOLS || (rep->n_pools && !rep->pools))
      return -EINVAL;
    n += 1 + (rep->n_pools ? 1 : 0);
    break;
  case KVS_OP_LIST:
    if (rep->n_spaces > KVS_MAX_LIST_ITEMS || (rep->n_spaces && !rep->spaces))
      return -EINVAL;
    n += 1;
    break;
  case KVS_OP_PROFILES:
    if (rep->n_profiles > KVS_MAX_LIST_ITEMS || (rep->n_profiles && !rep->profiles))
      return -EINVAL;
    for (uint32_t i = 0; i < rep->n_profiles; i++)
      if (rep->profiles[i].n_channels > KVS_MAX_ACT_CHANNELS)
        return -E2BIG;
    n += 1;
    break;
  case KVS_OP_EVICT: n += 1; break;
  case KVS_OP_METRICS:
    if (rep->text_len > KVS_MAX_FRAME - 64 || (rep->text_len && !rep->text))
      return -E2BIG;
    n += 1;
    break;
  case KVS_OP_TABLE: n += 3 + (rep->table_device ? 2 : 0); break;
  case KVS_OP_GET: case KVS_OP_RELEASE: case KVS_OP_BYE: case KVS_OP_RELOAD:
  case KVS_OP_PING:
    break;
  default:
    return -EINVAL;
  }

  enc_init(&e);
  e.fail |= msgpack_pack_map(&e.pk, n) != 0;
  kv_u64(&e, "id", rep->id);
  switch (rep->op) {
  case KVS_OP_HELLO:
    kv_u64(&e, "session", rep->session);
    kv_u64(&e, "seg_size", rep->seg_size);
    kv_u64(&e, "group", rep->group);
    kv_i64(&e, "k_bits", rep->k_bits);
    kv_i64(&e, "v_bits", rep->v_bits);
    kv_str(&e, "policy", kvs__policy_name(rep->policy));
    kv_i64(&e, "pfn", rep->pfn);
    kv_float(&e, "outliers", rep->outliers);
    kv_bool(&e, "profile", rep->has_profile);
    kv_bool(&e, "fallback", rep->policy_fallback);
    kv_u64(&e, "v_group", rep->v_group);
    kv_u64(&e, "sink_layer", rep->sink_layer);
    kv_u32_array(&e, "sink_channels", rep->sink_channels, rep->n_sink_channels);
    kv_str(&e, "seg_kind", rep->seg_device ? "device" : "host");
    if (rep->seg_device)
      kv_u64(&e, "dev_seg_size", rep->dev_seg_size);
    if (rep->fast_off)
      kv_u64(&e, "fast_off", rep->fast_off);
    break;
  case KVS_OP_PUT:
    kv_u64(&e, "quantized", rep->quantized);
    kv_u64(&e, "sinks", rep->sinks);
    kv_u64(&e, "seq_len", rep->seq_len);
    break;
  case KVS_OP_LOOKUP:
    kv_u64(&e, "cached", rep->cached);
    kv_u64(&e, "seq_len", rep->seq_len);
    break;
  case KVS_OP_STATS:
    enc_stats(&e, &rep->stats);
    if (rep->n_pools)
      enc_pools(&e, rep->pools, rep->n_pools);
    break;
  case KVS_OP_LIST:
    enc_spaces(&e, rep->spaces, rep->n_spaces);
    break;
  case KVS_OP_PROFILES:
    enc_profiles(&e, rep->profiles, rep->n_profiles);
    break;
  case KVS_OP_EVICT:
    kv_u64(&e, "evicted", rep->evicted);
    break;
  case KVS_OP_METRICS:
    key(&e, "text");
    e.fail |= msgpack_pack_str_with_body(&e.pk, rep->text ? rep->text : "", rep->text_len) != 0;
      break;
  case KVS_OP_TABLE:
    kv_u64(&e, "table_bytes", rep->table_bytes);
    kv_u64(&e, "fds", rep->table_fds);
    kv_bool(&e, "more", rep->table_more);
    if (rep->table_device) {
      kv_str(&e, "chunks", "device");
      key(&e, "gpu");
      e.fail |= msgpack_pack_bin_with_body(&e.pk, rep->table_gpu, sizeof rep->table_gpu) != 0;
    }
    break;
  default:
    break;
  }
  return enc_finish(&e, out, len);
}
