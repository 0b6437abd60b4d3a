/* SPDX-License-Identifier: MIT */
/* libkvsink-backed K/V cache for the forward pass; see daemonkv.h. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval/daemonkv.h"

/* kvs_info.sink_channels holds at most this many */
#define KVS_EVAL_MAX_CHANNELS 64u

/* Segment layout: K rows, V rows, then the summary. */
static size_t seg_k(const kvs__daemonkv *d) { (void)d; return 0; }
static size_t seg_v(const kvs__daemonkv *d) { return (size_t)d->max_tokens * d->channels * 2; }
static size_t seg_act(const kvs__daemonkv *d) { return 2 * seg_v(d); }
static size_t seg_table(const kvs__daemonkv *d)
{
  return seg_act(d) + (size_t)d->max_tokens * KVS_EVAL_MAX_CHANNELS * sizeof(float);
}
/* Room for a block table of every layer: per token at most a block
 * record share, a sink-row location and unit record (48 bytes), the
 * residual (under 2 groups of 64 rows, K and V) and headers. */
static size_t table_room(const kvs__daemonkv *d)
{
  return (size_t)d->n_layers * ((size_t)d->max_tokens * 48 + 4 * 64 * (size_t)d->channels * 2 + 64) +
         65536;
}
static size_t seg_need(const kvs__daemonkv *d) { return seg_table(d) + table_room(d); }

static int put_raw(kvs__daemonkv *d, uint32_t lb, uint32_t le, uint32_t start, uint32_t n,
                   const uint32_t *tokens, int with_act)
{
  kvs_put_args a = {0};
  kvs_put_result res = {0};
  a.seq = d->seq;
  a.start = start;
  a.tokens = tokens;
  a.n_tokens = n;
  a.layer_begin = lb;
  a.layer_end = le;
  a.k_off = seg_k(d);
  a.v_off = seg_v(d);
  if (with_act) {
    a.act_off = seg_act(d);
    a.act_channels = d->info->n_sink_channels;
  }
  int r = kvs_put(d->c, &a, &res);
  if (r < 0)
    return r;
  d->daemon_sinks += res.sinks;
  d->puts++;
  return 0;
}

static int dk_put(void *ctx, uint32_t layer, uint32_t start, uint32_t n, const uint32_t *tokens,
                  const uint16_t *k, const uint16_t *v)
{
  kvs__daemonkv *d = ctx;
  size_t seg_size;
  uint8_t *seg = kvs_segment(d->c, &seg_size);
  size_t bytes = (size_t)n * d->channels * 2;
  int with_act = d->act_pending && d->act_start == start && d->act_n == n;
  if (n > d->max_tokens)
    return -EINVAL;
  if (d->use_attend && layer == 0 && start > 0) {
    /* the step's past, [0, start) of every layer, before the step's puts */
    kvs_table_free(d->table);
    d->table = NULL;
    int r = kvs_table_get(d->c, d->seq, 0, d->n_layers, seg_table(d), table_room(d), &d->table);
    if (r < 0)
      return r;
    d->tables++;
  }
  memcpy(seg + seg_k(d), k, bytes);
  memcpy(seg + seg_v(d), v, bytes);
  if (with_act)
    memcpy(seg + seg_act(d), d->act, (size_t)n * d->info->n_sink_channels * sizeof(float));
  int r = put_raw(d, layer, layer + 1, start, n, tokens, with_act);
  if (r == 0 && with_act)
    d->act_pending = 0;
  return r;
}

static int dk_get(void *ctx, uint32_t layer, uint32_t n, uint16_t *k, uint16_t *v)
{
  kvs__daemonkv *d = ctx;
  size_t seg_size;
  uint8_t *seg = kvs_segment(d->c, &seg_size);
  if (n > d->max_tokens)
    return -EINVAL;
  int r = kvs_get(d->c, d->seq, 0, n, layer, layer + 1, seg_k(d), seg_v(d));
  if (r < 0)
    return r;
  memcpy(k, seg + seg_k(d), (size_t)n * d->channels * 2);
  memcpy(v, seg + seg_v(d), (size_t)n * d->channels * 2);
  d->gets++;
  return 0;
}

static int dk_attend(void *ctx, uint32_t layer, uint32_t start, const float *q, uint32_t n_heads,
                     float *out, float *lse)
{
  kvs__daemonkv *d = ctx;
  if (start == 0 || !d->table || kvs_table_tokens(d->table, layer) != start)
    return -EPROTO;
  return kvs_attend_lse(d->c, &d->table, 1, layer, q, KVS_DTYPE_F32, n_heads, out, lse);
}

static int dk_summary(void *ctx, uint32_t start, uint32_t n, const uint32_t *tokens,
                      const float *h)
{
  kvs__daemonkv *d = ctx;
  uint32_t nch = d->info->n_sink_channels;
  for (uint32_t t = 0; t < n; t++)
    for (uint32_t c = 0; c < nch; c++)
      d->act[(size_t)t * nch + c] =
          d->force ? (d->force[start + t] ? 1e30f : 0.0f)
                   : h[(size_t)t * d->hidden + d->info->sink_channels[c]];
  if (d->profile) {
    /* the daemon's rule (HACKING.md Decision 39): pfn + max_sinks rows,
     * predicted sinks first (rows below pfn are no candidates), then, in
     * the summary that completes group 0, the first positions (pred 2) */
    uint32_t pfn = d->info->pfn > 0 ? (uint32_t)d->info->pfn : 0, G = d->info->group;
    uint32_t B = pfn + kvs_profile_max_sinks(d->profile), used = pfn + d->n_pred;
    uint32_t budget = B > used ? B - used : 0;
    float *a = malloc((size_t)n * nch * sizeof(*a));
    if (!a)
      return -ENOMEM;
    memcpy(a, d->act, (size_t)n * nch * sizeof(*a));
    for (uint32_t t = start; t < start + n && t < pfn; t++)
      memset(a + (size_t)(t - start) * nch, 0, nch * sizeof(*a));
    int r = kvs_predict_sinks(d->profile, a, n, nch, budget, d->pred + start);
    free(a);
    if (r < 0)
      return r;
    d->n_pred += (uint32_t)r;
    /* rows below pfn are kept anyway; above tau they count as predicted
     * for precision/recall (not against the budget) */
    for (uint32_t t = start; t < start + n && t < pfn; t++)
      for (uint32_t c = 0; c < nch; c++)
        if (fabsf(d->act[(size_t)(t - start) * nch + c]) > kvs_profile_tau(d->profile))
          d->pred[t] = 1;
    if (start < G && start + n >= G)
      for (uint32_t t = pfn; t < start + n && d->n_pred + pfn < B; t++)
        if (!d->pred[t]) {
          d->pred[t] = 2;
          d->n_pred++;
        }
  }
  if (!d->send_summary)
    return 0;
  if (d->info->sink_layer + 1 < d->n_layers) {
    /* rides on the next layer's put */
    d->act_start = start;
    d->act_n = n;
    d->act_pending = 1;
    return 0;
  }
  size_t seg_size;
  uint8_t *seg = kvs_segment(d->c, &seg_size);
  memcpy(seg + seg_act(d), d->act, (size_t)n * nch * sizeof(float));
  return put_raw(d, d->n_layers, d->n_layers, start, n, tokens, 1);
}

int kvs__daemonkv_init(kvs__daemonkv *d, const char *socket, const kvs__model *m,
                       const kvs_options *opts, uint32_t max_tokens, const kvs_profile *profile,
                       kvs__kvio *io, char *errmsg)
{
  kvs_model desc = {0};
  kvs_options o = *opts;
  int r;
  memset(d, 0, sizeof *d);
  d->n_layers = m->cfg.n_layers;
  d->hidden = m->cfg.hidden;
  d->channels = m->cfg.n_kv_heads * m->cfg.head_dim;
  d->max_tokens = max_tokens;
  desc.model_id = m->model_id;
  desc.n_layers = m->cfg.n_layers;
  desc.n_kv_heads = m->cfg.n_kv_heads;
  desc.head_dim = m->cfg.head_dim;
  desc.dtype = KVS_DTYPE_F16;
  if (o.seg_size == 0)
    o.seg_size = seg_need(d);
  if ((r = kvs_connect(&d->c, socket, &desc, &o)) < 0) {
    snprintf(errmsg, 256, "connect to %s: %s", socket ? socket : "(default socket)",
             kvs_strerror(r));
    return r;
  }
  d->info = kvs_get_info(d->c);
  d->seq = 0;
  size_t seg_size;
  kvs_segment(d->c, &seg_size);
  if (seg_size < seg_need(d)) {
    snprintf(errmsg, 256, "segment of %zu bytes is too small (need %zu)", seg_size, seg_need(d));
    r = -ENOSPC;
    goto fail;
  }
  if (d->info->n_sink_channels > KVS_EVAL_MAX_CHANNELS) {
    snprintf(errmsg, 256, "daemon announced %u sink channels", d->info->n_sink_channels);
    r = -EPROTO;
    goto fail;
  }
  for (uint32_t c = 0; c < d->info->n_sink_channels; c++)
    if (d->info->sink_channels[c] >= d->hidden) {
      snprintf(errmsg, 256, "sink channel %u outside the hidden size", d->info->sink_channels[c]);
      r = -EPROTO;
      goto fail;
    }
  d->send_summary = d->info->policy == KVS_POLICY_KVSINK && d->info->has_profile &&
                    d->info->n_sink_channels > 0 && d->info->sink_layer < d->n_layers;
  if (profile && d->send_summary) {
    /* the local replica must use what the daemon uses */
    uint32_t n_ch;
    const uint32_t *ch = kvs_profile_channels(profile, &n_ch);
    if (kvs_profile_layer(profile) != d->info->sink_layer || n_ch != d->info->n_sink_channels ||
        memcmp(ch, d->info->sink_channels, n_ch * sizeof(uint32_t))) {
      snprintf(errmsg, 256, "the profile given differs from the daemon's (layer/channels)");
      r = -EINVAL;
      goto fail;
    }
    d->profile = profile;
  }
  d->act = malloc((size_t)max_tokens * KVS_EVAL_MAX_CHANNELS * sizeof(float));
  d->pred = calloc(max_tokens, 1);
  if (!d->act || !d->pred) {
    r = -ENOMEM;
    goto fail;
  }
  memset(io, 0, sizeof *io);
  io->ctx = d;
  io->put = dk_put;
  io->get = dk_get;
  io->summary = dk_summary;
  io->summary_layer = d->send_summary ? (int)d->info->sink_layer : -1;
  return 0;
fail:
  kvs__daemonkv_close(d);
  return r;
}

int kvs__daemonkv_use_attend(kvs__daemonkv *d, kvs__kvio *io)
{
  d->use_attend = 1;
  io->attend = dk_attend;
  return 0;
}

int kvs__daemonkv_begin(kvs__daemonkv *d)
{
  int r = 0;
  kvs_table_free(d->table);
  d->table = NULL;
  if (d->seq)
    r = kvs_release(d->c, d->seq);
  d->seq++;
  d->act_pending = 0;
  d->n_pred = 0;
  memset(d->pred, 0, d->max_tokens);
  return r;
}

void kvs__daemonkv_close(kvs__daemonkv *d)
{
  kvs_table_free(d->table);
  d->table = NULL;
  if (d->c && d->seq)
    kvs_release(d->c, d->seq);
  kvs_close(d->c);
  free(d->act);
  free(d->pred);
  d->c = NULL;
  d->act = NULL;
  d->pred = NULL;
}
