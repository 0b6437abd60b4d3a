/* SPDX-License-Identifier: MIT */
/* Decode attention over compressed blocks: the C reference (attn.h).
 * Plain on purpose: it is the definition the CUDA kernel is held to. One
 * KV head at a time, one token at a time: the token's d key and value
 * channels of that head are decoded into two small fp32 rows, then every
 * query head of the group takes its score and updates its online softmax. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/attn.h"
#include "kernels/half.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#define KVS__ATTN_MAX_G 64u /* query heads per KV head */

int kvs__attn_shape_check(const kvs__attn_shape *s)
{
  if (!s || kvs__qparams_check(&s->qp)) return -EINVAL;
  if (s->n_kv_heads == 0 || s->head_dim == 0 || s->n_q_heads == 0) return -EINVAL;
  if ((uint64_t)s->n_kv_heads * s->head_dim != s->qp.channels) return -EINVAL;
  if (s->n_q_heads % s->n_kv_heads || s->n_q_heads / s->n_kv_heads > KVS__ATTN_MAX_G) return -EINVAL;
  return 0;
}

/* Code i of a row: bits [i*b, i*b + b) of the stream of native 32-bit
 * words (quant.h); b = 16 gives the raw word. */
static uint32_t code_at(const uint8_t *row, uint32_t i, uint32_t b)
{
  uint64_t p = (uint64_t)i * b;
  uint32_t w0, w1 = 0, sh = (uint32_t)(p & 31u);
  memcpy(&w0, row + 4u * (p >> 5), 4);
  if (sh + b > 32u) memcpy(&w1, row + 4u * (p >> 5) + 4u, 4);
  uint64_t x = ((uint64_t)w1 << 32 | w0) >> sh;
  return (uint32_t)x & ((1u << b) - 1u);
}

/* min + code * scale, product then sum (no FMA), rounded to the dtype as
 * the dequantizer does, back to fp32. */
static float dq(uint32_t code, uint16_t mn, uint16_t sc, int dt)
{
  float t = (float)code * kvs__f16_to_f32_i(sc);
  float x = kvs__f16_to_f32_i(mn) + t;
  return kvs__h_to_f32(kvs__f32_to_h(x, dt), dt);
}

/* Outliers of one row that fall in [c0, c0 + d) replace their channels. */
static int apply_outliers(const uint32_t *e, uint32_t n, uint32_t C, uint32_t c0, uint32_t d, int dt, float *x)
{
  for (uint32_t i = 0; i < n; i++) {
    uint32_t c = e[i] & 0xffffu;
    if (c >= C) return -EINVAL;
    if (c >= c0 && c < c0 + d) x[c - c0] = kvs__h_to_f32((uint16_t)(e[i] >> 16), dt);
  }
  return 0;
}

/* Row r of block b, KV head channels [c0, c0 + d), into k[d], v[d]. */
static int block_row(const kvs__attn_shape *s, const kvs__qlayout *l, const kvs__attn_block *b, uint32_t r,
                     uint32_t c0, float *k, float *v)
{
  const kvs__qparams *p = &s->qp;
  const uint32_t C = p->channels, d = s->head_dim, ng = C / p->v_group;
  const int dt = (int)p->dtype;
  const uint8_t *blk = b->data;
  if ((b->sink_mask >> r) & 1u) {
    const uint16_t *row = b->rows[__builtin_popcountll(b->sink_mask & ((1ull << r) - 1ull))];
    for (uint32_t c = 0; c < d; c++) {
      k[c] = kvs__h_to_f32(row[c0 + c], dt);
      v[c] = kvs__h_to_f32(row[C + c0 + c], dt);
    }
    return 0;
  }
  const uint8_t *kr = blk + l->kcodes + (size_t)r * l->kstride, *vr = blk + l->vcodes + (size_t)r * l->vstride;
  const uint16_t *ksc = (const uint16_t *)(blk + l->kscale), *kmn = (const uint16_t *)(blk + l->kmin);
  const uint16_t *vsc = (const uint16_t *)(blk + l->vscale) + (size_t)r * ng;
  const uint16_t *vmn = (const uint16_t *)(blk + l->vmin) + (size_t)r * ng;
  for (uint32_t c = 0; c < d; c++) {
    uint32_t ch = c0 + c;
    uint32_t kc = code_at(kr, ch, p->k_bits), vc = code_at(vr, ch, p->v_bits);
    k[c] = p->k_bits == 16 ? kvs__h_to_f32((uint16_t)kc, dt) : dq(kc, kmn[ch], ksc[ch], dt);
    uint32_t g = ch / p->v_group;
    v[c] = p->v_bits == 16 ? kvs__h_to_f32((uint16_t)vc, dt) : dq(vc, vmn[g], vsc[g], dt);
  }
  if (p->k_bits != 16 && p->k_outliers &&
      apply_outliers((const uint32_t *)(blk + l->kout) + (size_t)r * p->k_outliers, p->k_outliers, C, c0, d, dt, k))
    return -EINVAL;
  if (p->v_bits != 16 && p->v_outliers &&
      apply_outliers((const uint32_t *)(blk + l->vout) + (size_t)r * p->v_outliers, p->v_outliers, C, c0, d, dt, v))
    return -EINVAL;
  return 0;
}

static int block_ok(const kvs__attn_shape *s, const kvs__attn_block *b)
{
  kvs__qhdr h;
  if (!b->data) return 0;
  memcpy(&h, b->data, sizeof h);
  const kvs__qparams *p = &s->qp;
  if (h.rows != p->group || h.k_bits != p->k_bits || h.v_bits != p->v_bits) return 0;
  if (h.sink_mask != b->sink_mask || (p->group < 64 && (h.sink_mask >> p->group))) return 0;
  return !h.sink_mask || b->rows;
}

/* Online softmax state of the g query heads of one KV head. */
struct heads {
  uint32_t g, d;
  float scale;
  const float *q;  /* [g][d] */
  float *m, *l, *acc;
};

static void attend(struct heads *H, const float *k, const float *v)
{
  for (uint32_t h = 0; h < H->g; h++) {
    const float *qh = H->q + (size_t)h * H->d;
    float dot = 0.f;
    for (uint32_t c = 0; c < H->d; c++) dot += qh[c] * k[c];
    float sc = dot * H->scale;
    float mn = sc > H->m[h] ? sc : H->m[h];
    float corr = expf(H->m[h] - mn), p = expf(sc - mn);
    float *a = H->acc + (size_t)h * H->d;
    for (uint32_t c = 0; c < H->d; c++) a[c] = a[c] * corr + p * v[c];
    H->l[h] = H->l[h] * corr + p;
    H->m[h] = mn;
  }
}

int kvs__attn_decode(const kvs__attn_shape *s, const kvs__attn_seq *seqs, uint32_t n_seqs,
                     const float *q, float *out)
{
  return kvs__attn_decode_lse(s, seqs, n_seqs, q, out, NULL);
}

int kvs__attn_decode_lse(const kvs__attn_shape *s, const kvs__attn_seq *seqs, uint32_t n_seqs,
                         const float *q, float *out, float *lse)
{
  if (kvs__attn_shape_check(s) || (n_seqs && (!seqs || !q || !out))) return -EINVAL;
  const uint32_t d = s->head_dim, C = s->qp.channels, G = s->qp.group, g = s->n_q_heads / s->n_kv_heads;
  const int dt = (int)s->qp.dtype;
  kvs__qlayout l;
  kvs__qlayout_of(&s->qp, &l);
  float *buf = malloc(sizeof(float) * (2u * d + 2u * g + (size_t)g * d));
  if (!buf) return -ENOMEM;
  float *k = buf, *v = k + d, *m = v + d, *lsum = m + g, *acc = lsum + g;
  int rc = 0;
  for (uint32_t i = 0; i < n_seqs && !rc; i++) {
    const kvs__attn_seq *S = &seqs[i];
    if ((S->n_blocks && !S->blocks) || (S->n_res && (!S->res_k || !S->res_v))) { rc = -EINVAL; break; }
    for (uint32_t b = 0; b < S->n_blocks; b++)
      if (!block_ok(s, &S->blocks[b])) rc = -EINVAL;
    for (uint32_t j = 0; j < s->n_kv_heads && !rc; j++) {
      const size_t qo = ((size_t)i * s->n_q_heads + (size_t)j * g) * d;
      struct heads H = {g, d, 1.0f / sqrtf((float)d), q + qo, m, lsum, acc};
      for (uint32_t h = 0; h < g; h++) { m[h] = -INFINITY; lsum[h] = 0.f; }
      memset(acc, 0, sizeof(float) * g * d);
      for (uint32_t b = 0; b < S->n_blocks && !rc; b++)
        for (uint32_t r = 0; r < G && !rc; r++) {
          rc = block_row(s, &l, &S->blocks[b], r, j * d, k, v);
          if (!rc) attend(&H, k, v);
        }
      for (uint32_t t = 0; t < S->n_res && !rc; t++) {
        kvs__h_to_f32_n(k, S->res_k + (size_t)t * C + (size_t)j * d, d, dt);
        kvs__h_to_f32_n(v, S->res_v + (size_t)t * C + (size_t)j * d, d, dt);
        attend(&H, k, v);
      }
      for (uint32_t h = 0; h < g && !rc; h++) {
        float inv = lsum[h] > 0.f ? 1.0f / lsum[h] : 0.f; /* no token: zeros */
        for (uint32_t c = 0; c < d; c++) out[qo + (size_t)h * d + c] = acc[(size_t)h * d + c] * inv;
        if (lse) lse[qo / d + h] = lsum[h] > 0.f ? m[h] + logf(lsum[h]) : -INFINITY;
      }
    }
  }
  free(buf);
  return rc;
}
