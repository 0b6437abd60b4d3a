/* SPDX-License-Identifier: MIT */
/* Byte-exactness of the host quantizer (kernels/quant.c) and the fp16/bf16
 * conversions (kernels/half.h) against a frozen copy of the reference as it
 * was before they were optimized (commit 7a940bd). quant.h is the spec and
 * the CUDA kernels must match quant.c byte for byte, so any change to the
 * output of the fast code is a bug: every random and adversarial case below
 * must give the same return code, the same block bytes, the same sink rows
 * and the same dequantized words as the frozen code.
 *
 * KVS_QEXACT_ITERS=N runs N random block configurations (default 3000);
 * KVS_QEXACT_FULL=1 checks the f32 -> fp16/bf16 conversions on all 2^32
 * inputs (about a minute) instead of a strided sample. */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/half.h"
#include "kernels/quant.h"

/* ------------------------------------------------------------------------
 * Frozen copy: kernels/half.h and kernels/quant.c at 7a940bd, verbatim but
 * for the frz_ names and `static`. Do not edit. */
static inline uint32_t frz_f_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float frz_bits_f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static inline float frz_f16_to_f32_i(uint16_t h)
{
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  if (exp == 0x1fu) /* Inf / NaN: keep the payload, NaN stays NaN */
    return frz_bits_f(sign | 0x7f800000u | (man << 13));
  if (exp == 0) {
    /* zero or subnormal: man * 2^-24 is exact in fp32 */
    float f = (float)man * 0x1p-24f;
    return sign ? -f : f;
  }
  return frz_bits_f(sign | ((exp + 112u) << 23) | (man << 13));
}

static inline uint16_t frz_f32_to_f16_i(float f)
{
  uint32_t u = frz_f_bits(f);
  uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
  uint32_t a = u & 0x7fffffffu;
  if (a >= 0x7f800000u) /* Inf, or NaN made quiet so it cannot become Inf */
    return sign | (a == 0x7f800000u ? 0x7c00u : (uint16_t)(0x7e00u | ((a >> 13) & 0x3ffu)));
  if (a >= 0x477ff000u) /* >= 65520 rounds to Inf */
    return sign | 0x7c00u;
  if (a < 0x38800000u) {
    /* below the smallest normal: result is round(|f| * 2^24) ulps of 2^-24;
     * adding 0.5 and letting fp32 round does RNE for us */
    float r = frz_bits_f(a) + 0.5f;
    return sign | (uint16_t)(frz_f_bits(r) - 0x3f000000u);
  }
  /* normal: rebias the exponent, round the 13 dropped bits to even */
  uint32_t odd = (a >> 13) & 1u;
  a += 0xc8000fffu + odd; /* (15-127)<<23 plus rounding bias */
  return sign | (uint16_t)(a >> 13);
}

static inline float frz_bf16_to_f32_i(uint16_t h) { return frz_bits_f((uint32_t)h << 16); }

static inline uint16_t frz_f32_to_bf16_i(float f)
{
  uint32_t u = frz_f_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: truncate, forced quiet */
    return (uint16_t)((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

/* dtype: kvs_dtype value (1 fp16, 2 bf16). */
static inline float frz_h_to_f32(uint16_t h, int dtype)
{
  return dtype == 2 ? frz_bf16_to_f32_i(h) : frz_f16_to_f32_i(h);
}
static inline uint16_t frz_f32_to_h(float f, int dtype)
{
  return dtype == 2 ? frz_f32_to_bf16_i(f) : frz_f32_to_f16_i(f);
}

#define KVS__OUTLIER_MAX_FRACTION 0.05f

static size_t align16(size_t x) { return (x + 15u) & ~(size_t)15u; }
static int bits_ok(uint32_t b) { return b == 2 || b == 3 || b == 4 || b == 8 || b == 16; }
static size_t row_stride(uint32_t c, uint32_t b) { return (((size_t)c * b + 7u) / 8u + 3u) & ~(size_t)3u; }
/* 16-bit passthrough has no outliers whatever the params say. */
static uint32_t n_kout(const kvs__qparams *p) { return p->k_bits == 16 ? 0 : p->k_outliers; }
static uint32_t n_vout(const kvs__qparams *p) { return p->v_bits == 16 ? 0 : p->v_outliers; }

static uint32_t frz_outlier_count(uint32_t channels, float fraction)
{
  if (!(fraction > 0.f)) return 0; /* also NaN */
  if (fraction > KVS__OUTLIER_MAX_FRACTION) fraction = KVS__OUTLIER_MAX_FRACTION;
  /* fp32 product, so that 0.001f * 1000 is 1 and not 1.00000005 -> 2 */
  float n = ceilf(fraction * (float)channels);
  return n > (float)channels ? channels : (uint32_t)n;
}

static int frz_qparams_check(const kvs__qparams *p)
{
  if (!p) return -EINVAL;
  if (p->group < 1 || p->group > KVS_QBLOCK_MAX_G) return -EINVAL;
  if (p->channels < 1 || p->channels > 65536u) return -EINVAL; /* u16 outlier index */
  if (p->v_group < 1 || p->channels % p->v_group) return -EINVAL;
  if (!bits_ok(p->k_bits) || !bits_ok(p->v_bits)) return -EINVAL;
  if (p->dtype != KVS_DTYPE_F16 && p->dtype != KVS_DTYPE_BF16) return -EINVAL;
  uint32_t cap = frz_outlier_count(p->channels, KVS__OUTLIER_MAX_FRACTION);
  if (p->k_outliers > cap || p->v_outliers > cap) return -EINVAL;
  return 0;
}

static size_t frz_qlayout_of(const kvs__qparams *p, kvs__qlayout *l)
{
  size_t G = p->group, C = p->channels, ng = p->channels / p->v_group;
  l->kstride = row_stride(p->channels, p->k_bits);
  l->vstride = row_stride(p->channels, p->v_bits);
  l->kscale = align16(sizeof(kvs__qhdr));
  l->kmin = align16(l->kscale + 2u * C);
  l->kcodes = align16(l->kmin + 2u * C);
  l->vscale = align16(l->kcodes + G * l->kstride);
  l->vmin = align16(l->vscale + 2u * G * ng);
  l->vcodes = align16(l->vmin + 2u * G * ng);
  l->kout = align16(l->vcodes + G * l->vstride);
  l->vout = align16(l->kout + 4u * G * n_kout(p));
  l->total = align16(l->vout + 4u * G * n_vout(p));
  return l->total;
}

static int is_bad(uint16_t h, int dtype)
{
  return dtype == KVS_DTYPE_BF16 ? (h & 0x7f80u) == 0x7f80u : (h & 0x7c00u) == 0x7c00u;
}

/* Scale/min of a range as stored (fp16), plus what the coder needs. */
typedef struct qrange { float minf, inv; } qrange;

static int range_params(float mn, float mx, int any, uint32_t bits, uint16_t *sc_h, uint16_t *mn_h,
                        qrange *q)
{
  if (!any) mn = mx = 0.f;
  float scale = (mx - mn) / (float)((1u << bits) - 1u);
  uint16_t s = frz_f32_to_f16_i(scale), m = frz_f32_to_f16_i(mn);
  if ((s & 0x7c00u) == 0x7c00u || (m & 0x7c00u) == 0x7c00u) return -ERANGE;
  float sf = frz_f16_to_f32_i(s);
  *sc_h = s;
  *mn_h = m;
  q->minf = frz_f16_to_f32_i(m);
  q->inv = sf == 0.f ? 0.f : 1.0f / sf;
  return 0;
}

static inline uint32_t qcode(float x, const qrange *q, uint32_t hi)
{
  /* floor(y) then clamp; for y >= 0 truncation is floor */
  float y = (x - q->minf) * q->inv + 0.5f;
  y = y > 0.f ? y : 0.f; /* branch-free; inv == 0 gives 0.5 -> code 0 */
  /* The one edit to the frozen code: (uint32_t)y is undefined for
   * y >= 2^32 (an outlier far outside a tiny range); such a y saturates
   * to the top code, as quant.h specifies and the CUDA kernel does. */
  uint32_t c = y < 4294967296.0f ? (uint32_t)y : 0xffffffffu;
  return c > hi ? hi : c;
}

/* Bit-stream writer for one row: little-endian 32-bit words. */
typedef struct bitw { uint32_t *w; uint64_t acc; uint32_t n; } bitw;

static inline void bitw_put(bitw *b, uint32_t code, uint32_t bits)
{
  b->acc |= (uint64_t)code << b->n;
  b->n += bits;
  if (b->n >= 32) {
    *b->w++ = (uint32_t)b->acc;
    b->acc >>= 32;
    b->n -= 32;
  }
}

/* Flush and zero the rest of the row up to `end`. */
static void bitw_end(bitw *b, uint32_t *end)
{
  if (b->n) *b->w++ = (uint32_t)b->acc;
  while (b->w < end) *b->w++ = 0;
}

/* Per-thread scratch, kept between calls: a fresh allocation per block
 * costs page faults that dwarf the arithmetic (host path of the daemon). */
static _Thread_local struct { void *p; size_t n; } qscratch;

static void *scratch_get(size_t n)
{
  if (n > qscratch.n) {
    void *p = realloc(qscratch.p, n);
    if (!p) return NULL;
    qscratch.p = p;
    qscratch.n = n;
  }
  return qscratch.p;
}

static inline uint32_t okey(uint16_t h, uint32_t c) { return ((uint32_t)(h & 0x7fffu) << 16) | (0xffffu - c); }

static void heap_down(uint32_t *h, uint32_t n, uint32_t i)
{
  for (;;) {
    uint32_t l = 2u * i + 1u, s = i;
    if (l < n && h[l] < h[s]) s = l;
    if (l + 1u < n && h[l + 1u] < h[s]) s = l + 1u;
    if (s == i) return;
    uint32_t t = h[i]; h[i] = h[s]; h[s] = t;
    i = s;
  }
}

static int cmp_u32(const void *a, const void *b)
{
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return (x > y) - (x < y);
}

/* Top-n of a row by (|x|, lower channel): a min-heap of order keys. Writes
 * entries sorted by channel and marks them in `mark` (1 byte per channel). */
static void pick_outliers(const uint16_t *row, uint32_t C, uint32_t n, uint32_t *heap,
                          uint32_t *entries, uint8_t *mark)
{
  for (uint32_t c = 0; c < n; c++) heap[c] = okey(row[c], c);
  for (uint32_t i = n / 2u; i-- > 0;) heap_down(heap, n, i);
  for (uint32_t c = n; c < C; c++) {
    uint32_t k = okey(row[c], c);
    if (k > heap[0]) { heap[0] = k; heap_down(heap, n, 0); }
  }
  for (uint32_t i = 0; i < n; i++) heap[i] = 0xffffu - (heap[i] & 0xffffu); /* channel */
  qsort(heap, n, sizeof *heap, cmp_u32);
  for (uint32_t i = 0; i < n; i++) {
    uint32_t c = heap[i];
    entries[i] = c | ((uint32_t)row[c] << 16);
    mark[c] = 1;
  }
}

static void raw_row(bitw *b, const uint16_t *row, uint32_t C, uint32_t *end)
{
  for (uint32_t c = 0; c < C; c++) bitw_put(b, row[c], 16);
  bitw_end(b, end);
}

static int frz_quantize_block(const kvs__qparams *p, const uint16_t *k, const uint16_t *v,
                        uint64_t sink_mask, void *block, uint16_t *const *sink_rows)
{
  if (frz_qparams_check(p) || !k || !v || !block) return -EINVAL;
  const uint32_t G = p->group, C = p->channels, vg = p->v_group, ng = C / vg;
  const int dt = (int)p->dtype;
  if (G < 64 && (sink_mask >> G)) return -EINVAL;
  if (sink_mask && !sink_rows) return -EINVAL;
  for (size_t i = 0; i < (size_t)G * C; i++)
    if (is_bad(k[i], dt) || is_bad(v[i], dt)) return KVS_ENAN;

  kvs__qlayout l;
  frz_qlayout_of(p, &l);
  const uint32_t nko = n_kout(p), nvo = n_vout(p);
  const int kraw = p->k_bits == 16, vraw = p->v_bits == 16;
  /* scratch: key ranges [C], outlier marks [G][C] each, a heap [C] */
  size_t need = sizeof(qrange) * C + (nko ? (size_t)G * C : 0) + (nvo ? (size_t)G * C : 0);
  need += sizeof(uint32_t) * (nko > nvo ? nko : nvo) + 16u;
  need += sizeof(float) * 2u * G * C; /* inputs converted once */
  need += sizeof(float) * 2u * C + C;  /* key min/max, any */
  uint8_t *scratch = scratch_get(need);
  if (!scratch) return -ENOMEM;
  qrange *kq = (qrange *)scratch;
  uint32_t *heap = (uint32_t *)(kq + C);
  uint8_t *kmark = (uint8_t *)(heap + (nko > nvo ? nko : nvo));
  uint8_t *vmark = kmark + (nko ? (size_t)G * C : 0);
  float *xk = (float *)(((uintptr_t)(vmark + (nvo ? (size_t)G * C : 0)) + 3u) & ~(uintptr_t)3u);
  float *xv = xk + (size_t)G * C;
  for (size_t i = 0; i < (size_t)G * C; i++) { xk[i] = frz_h_to_f32(k[i], dt); xv[i] = frz_h_to_f32(v[i], dt); }
  if (nko) memset(kmark, 0, (size_t)G * C);
  if (nvo) memset(vmark, 0, (size_t)G * C);

  uint8_t *blk = block;
  int rc = 0;
  memset(blk, 0, l.total);
  kvs__qhdr *h = (kvs__qhdr *)blk;
  h->sink_mask = sink_mask;
  h->n_sinks = (uint16_t)__builtin_popcountll(sink_mask);
  h->k_bits = (uint8_t)p->k_bits;
  h->v_bits = (uint8_t)p->v_bits;
  h->rows = G;

  uint32_t si = 0;
  for (uint32_t r = 0; r < G; r++) {
    const uint16_t *kr = k + (size_t)r * C, *vr = v + (size_t)r * C;
    if ((sink_mask >> r) & 1u) {
      memcpy(sink_rows[si], kr, 2u * C);
      memcpy(sink_rows[si] + C, vr, 2u * C);
      si++;
      continue;
    }
    if (nko) pick_outliers(kr, C, nko, heap, (uint32_t *)(blk + l.kout) + (size_t)r * nko, kmark + (size_t)r * C);
    if (nvo) pick_outliers(vr, C, nvo, heap, (uint32_t *)(blk + l.vout) + (size_t)r * nvo, vmark + (size_t)r * C);
  }

  /* keys: per-channel min/max, rows outer so the input is read in order */
  if (!kraw) {
    /* after the converted inputs in the same scratch */
    float *mn = xv + (size_t)G * C, *mx = mn + C;
    uint8_t *any = (uint8_t *)(mx + C);
    memset(any, 0, C);
    for (uint32_t r = 0; r < G; r++) {
      if ((sink_mask >> r) & 1u) continue;
      const float *xr = xk + (size_t)r * C;
      const uint8_t *mk = nko ? kmark + (size_t)r * C : NULL;
      for (uint32_t c = 0; c < C; c++) {
        if (mk && mk[c]) continue;
        float x = xr[c];
        if (!any[c]) { mn[c] = mx[c] = x; any[c] = 1; }
        else { mn[c] = x < mn[c] ? x : mn[c]; mx[c] = x > mx[c] ? x : mx[c]; }
      }
    }
    uint16_t *ksc = (uint16_t *)(blk + l.kscale), *kmn = (uint16_t *)(blk + l.kmin);
    for (uint32_t c = 0; c < C && !rc; c++)
      rc = range_params(mn[c], mx[c], any[c], p->k_bits, &ksc[c], &kmn[c], &kq[c]);
  }
  /* key codes */
  for (uint32_t r = 0; r < G && !rc; r++) {
    if ((sink_mask >> r) & 1u) continue;
    const uint16_t *kr = k + (size_t)r * C;
    uint32_t *w = (uint32_t *)(blk + l.kcodes + r * l.kstride);
    bitw b = { w, 0, 0 };
    if (kraw) { raw_row(&b, kr, C, w + l.kstride / 4u); continue; }
    const uint32_t hi = (1u << p->k_bits) - 1u;
    for (uint32_t c = 0; c < C; c++) bitw_put(&b, qcode(xk[(size_t)r * C + c], &kq[c], hi), p->k_bits);
    bitw_end(&b, w + l.kstride / 4u);
  }
  /* values: per row, per group of vg channels */
  for (uint32_t r = 0; r < G && !rc; r++) {
    if ((sink_mask >> r) & 1u) continue;
    const uint16_t *vr = v + (size_t)r * C;
    uint32_t *w = (uint32_t *)(blk + l.vcodes + r * l.vstride);
    bitw b = { w, 0, 0 };
    if (vraw) { raw_row(&b, vr, C, w + l.vstride / 4u); continue; }
    const uint8_t *mk = nvo ? vmark + (size_t)r * C : NULL;
    uint16_t *vsc = (uint16_t *)(blk + l.vscale) + (size_t)r * ng;
    uint16_t *vmn = (uint16_t *)(blk + l.vmin) + (size_t)r * ng;
    const uint32_t hi = (1u << p->v_bits) - 1u;
    for (uint32_t g = 0; g < ng && !rc; g++) {
      const uint32_t c0 = g * vg;
      float mn = 0.f, mx = 0.f;
      int any = 0;
      for (uint32_t c = c0; c < c0 + vg; c++) {
        if (mk && mk[c]) continue;
        float x = xv[(size_t)r * C + c];
        if (!any) { mn = mx = x; any = 1; }
        else { mn = x < mn ? x : mn; mx = x > mx ? x : mx; }
      }
      qrange q;
      rc = range_params(mn, mx, any, p->v_bits, &vsc[g], &vmn[g], &q);
      for (uint32_t c = c0; c < c0 + vg && !rc; c++)
        bitw_put(&b, qcode(xv[(size_t)r * C + c], &q, hi), p->v_bits);
    }
    if (!rc) bitw_end(&b, w + l.vstride / 4u);
  }
  return rc;
}

/* Bit-stream reader over one row. */
typedef struct bitr { const uint32_t *w; uint64_t acc; uint32_t n; } bitr;

static inline uint32_t bitr_get(bitr *b, uint32_t bits)
{
  if (b->n < bits) {
    b->acc |= (uint64_t)*b->w++ << b->n;
    b->n += 32;
  }
  uint32_t c = (uint32_t)(b->acc & ((1u << bits) - 1u));
  b->acc >>= bits;
  b->n -= bits;
  return c;
}

static int put_outliers(const uint32_t *e, uint32_t n, uint32_t C, uint16_t *out)
{
  for (uint32_t i = 0; i < n; i++) {
    uint32_t c = e[i] & 0xffffu;
    if (c >= C) return -EINVAL; /* a corrupt block must not write out of bounds */
    out[c] = (uint16_t)(e[i] >> 16);
  }
  return 0;
}

static int frz_dequantize_block(const kvs__qparams *p, const void *block,
                          const uint16_t *const *sink_rows, uint32_t r0, uint32_t r1,
                          uint16_t *k_out, uint16_t *v_out)
{
  if (frz_qparams_check(p) || !block || r0 > r1 || r1 > p->group) return -EINVAL;
  if (r0 < r1 && (!k_out || !v_out)) return -EINVAL;
  const uint8_t *blk = block;
  kvs__qhdr h;
  memcpy(&h, blk, sizeof h);
  const uint32_t G = p->group, C = p->channels, vg = p->v_group, ng = C / vg;
  const int dt = (int)p->dtype;
  if (h.rows != G || h.k_bits != p->k_bits || h.v_bits != p->v_bits) return -EINVAL;
  if (G < 64 && (h.sink_mask >> G)) return -EINVAL;
  if (h.sink_mask && !sink_rows) return -EINVAL;
  kvs__qlayout l;
  frz_qlayout_of(p, &l);
  const uint32_t nko = n_kout(p), nvo = n_vout(p);
  const uint16_t *ksc = (const uint16_t *)(blk + l.kscale), *kmn = (const uint16_t *)(blk + l.kmin);
  /* key scale/min as fp32 once per call, not once per element */
  float *kf = NULL;
  if (p->k_bits != 16 && r0 < r1) {
    kf = scratch_get(sizeof(float) * 2u * C);
    if (!kf) return -ENOMEM;
    for (uint32_t c = 0; c < C; c++) { kf[2 * c] = frz_f16_to_f32_i(kmn[c]); kf[2 * c + 1] = frz_f16_to_f32_i(ksc[c]); }
  }

  for (uint32_t r = r0; r < r1; r++) {
    uint16_t *ko = k_out + (size_t)(r - r0) * C, *vo = v_out + (size_t)(r - r0) * C;
    if ((h.sink_mask >> r) & 1u) {
      const uint16_t *s = sink_rows[__builtin_popcountll(h.sink_mask & ((1ull << r) - 1ull))];
      memcpy(ko, s, 2u * C);
      memcpy(vo, s + C, 2u * C);
      continue;
    }
    bitr b = { (const uint32_t *)(blk + l.kcodes + r * l.kstride), 0, 0 };
    if (p->k_bits == 16) {
      for (uint32_t c = 0; c < C; c++) ko[c] = (uint16_t)bitr_get(&b, 16);
    } else {
      for (uint32_t c = 0; c < C; c++) {
        float x = kf[2 * c] + (float)bitr_get(&b, p->k_bits) * kf[2 * c + 1];
        ko[c] = frz_f32_to_h(x, dt);
      }
    }
    b = (bitr){ (const uint32_t *)(blk + l.vcodes + r * l.vstride), 0, 0 };
    if (p->v_bits == 16) {
      for (uint32_t c = 0; c < C; c++) vo[c] = (uint16_t)bitr_get(&b, 16);
    } else {
      const uint16_t *vsc = (const uint16_t *)(blk + l.vscale) + (size_t)r * ng;
      const uint16_t *vmn = (const uint16_t *)(blk + l.vmin) + (size_t)r * ng;
      for (uint32_t g = 0; g < ng; g++) {
        float sf = frz_f16_to_f32_i(vsc[g]), mf = frz_f16_to_f32_i(vmn[g]);
        for (uint32_t c = g * vg; c < (g + 1u) * vg; c++)
          vo[c] = frz_f32_to_h(mf + (float)bitr_get(&b, p->v_bits) * sf, dt);
      }
    }
    if (put_outliers((const uint32_t *)(blk + l.kout) + (size_t)r * nko, nko, C, ko) ||
        put_outliers((const uint32_t *)(blk + l.vout) + (size_t)r * nvo, nvo, C, vo))
      return -EINVAL;
  }
  return 0;
}

/* ------------------------------------------------------------------------
 * Harness */

/* ck_assert records every passing check through a file (the "last
 * passed point"), which would dominate these loops: test, then abort. */
#define REQUIRE(cond, ...) do { if (!(cond)) ck_abort_msg(__VA_ARGS__); } while (0)

static uint64_t rng_s = 0x2545f4914f6cdd1dull;
static uint32_t rnd(void)
{
  rng_s ^= rng_s << 13; rng_s ^= rng_s >> 7; rng_s ^= rng_s << 17;
  return (uint32_t)(rng_s >> 16);
}
static uint32_t rndn(uint32_t n) { return n ? rnd() % n : 0; }
static float frnd(void) { return (float)(rnd() & 0xffffff) / 16777216.0f; } /* [0, 1) */

static unsigned env_u(const char *name, unsigned dflt)
{
  const char *s = getenv(name);
  return s && *s ? (unsigned)strtoul(s, NULL, 0) : dflt;
}

START_TEST(exact_half_16_to_32)
{
  for (uint32_t h = 0; h < 65536; h++) {
    uint16_t x = (uint16_t)h;
    uint32_t want = frz_f_bits(frz_f16_to_f32_i(x));
    REQUIRE(kvs__f_bits(kvs__f16_to_f32_i(x)) == want, "f16 %04x", h);
    REQUIRE(kvs__f_bits(kvs__f16_to_f32(x)) == want, "f16 %04x", h);
    want = frz_f_bits(frz_bf16_to_f32_i(x));
    REQUIRE(kvs__f_bits(kvs__bf16_to_f32_i(x)) == want, "bf16 %04x", h);
    REQUIRE(kvs__f_bits(kvs__bf16_to_f32(x)) == want, "bf16 %04x", h);
  }
  /* the array forms, every length up to 70 (chunks and tails) */
  static uint16_t src[70];
  float d1[70], d2[70];
  for (int dt = 1; dt <= 2; dt++) {
    for (uint32_t n = 0; n <= 70; n++) {
      for (int rep = 0; rep < 20; rep++) {
        for (uint32_t i = 0; i < n; i++) src[i] = (uint16_t)rnd();
        memset(d1, 0x5a, sizeof d1);
        memset(d2, 0x5a, sizeof d2);
        kvs__h_to_f32_n(d1, src, n, dt);
        for (uint32_t i = 0; i < n; i++) d2[i] = frz_h_to_f32(src[i], dt);
        REQUIRE(memcmp(d1, d2, sizeof d1) == 0, "memcmp(d1, d2, sizeof d1) == 0");
      }
    }
  }
}
END_TEST

static void check_32_to_16(uint32_t u)
{
  float f = frz_bits_f(u);
  uint16_t w = frz_f32_to_f16_i(f), g = kvs__f32_to_f16_i(f);
  if (g != w || kvs__f32_to_f16(f) != w) ck_abort_msg("f32 %08x -> f16 got %04x want %04x", u, g, w);
  w = frz_f32_to_bf16_i(f), g = kvs__f32_to_bf16_i(f);
  if (g != w || kvs__f32_to_bf16(f) != w) ck_abort_msg("f32 %08x -> bf16 got %04x want %04x", u, g, w);
}

START_TEST(exact_half_32_to_16)
{
  if (env_u("KVS_QEXACT_FULL", 0)) {
    for (uint64_t u = 0; u <= 0xffffffffull; u++) check_32_to_16((uint32_t)u);
  } else {
    /* a strided sample of all 2^32, then every word near the boundaries
     * of the cases (subnormal, overflow, Inf, NaN) and the rounding ties */
    for (uint64_t u = rndn(509); u <= 0xffffffffull; u += 509) check_32_to_16((uint32_t)u);
    static const uint32_t edges[] = { 0, 0x00800000u, 0x33000000u, 0x33800000u, 0x38800000u, 0x38000000u,
                                      0x3f800000u, 0x477fe000u, 0x477ff000u, 0x47800000u, 0x7f7fffffu,
                                      0x7f800000u, 0x7fc00000u, 0x7fffffffu };
    for (unsigned i = 0; i < sizeof edges / sizeof *edges; i++)
      for (uint32_t d = 0; d < 8192; d++) {
        check_32_to_16(edges[i] + d - 4096u);
        check_32_to_16((edges[i] + d - 4096u) | 0x80000000u);
      }
    for (int i = 0; i < 1000000; i++) {
      uint32_t u = rnd() ^ (rnd() << 16);
      check_32_to_16((u & ~0x1fffu) | (rnd() & 1 ? 0x1000u : 0)); /* fp16 ties and near-ties */
      check_32_to_16((u & ~0xffffu) | (rnd() & 1 ? 0x8000u : 0)); /* bf16 ties */
    }
  }
  static float src[70];
  uint16_t d1[70], d2[70];
  for (int dt = 1; dt <= 2; dt++) {
    for (uint32_t n = 0; n <= 70; n++) {
      for (int rep = 0; rep < 20; rep++) {
        for (uint32_t i = 0; i < n; i++) src[i] = frz_bits_f(rnd() ^ (rnd() << 16));
        memset(d1, 0x5a, sizeof d1);
        memset(d2, 0x5a, sizeof d2);
        kvs__f32_to_h_n(d1, src, n, dt);
        for (uint32_t i = 0; i < n; i++) d2[i] = frz_f32_to_h(src[i], dt);
        REQUIRE(memcmp(d1, d2, sizeof d1) == 0, "memcmp(d1, d2, sizeof d1) == 0");
      }
    }
  }
}
END_TEST

/* A finite 16-bit word of the dtype (any exponent, subnormals included). */
static uint16_t rnd_finite(int dt)
{
  for (;;) {
    uint16_t h = (uint16_t)rnd();
    if (dt == KVS_DTYPE_BF16 ? (h & 0x7f80u) != 0x7f80u : (h & 0x7c00u) != 0x7c00u) return h;
  }
}

/* A value in +-2^e for e in [lo, hi], as the dtype. */
static uint16_t rnd_scaled(int dt, int lo, int hi)
{
  float s = ldexpf(1.0f, lo + (int)rndn((uint32_t)(hi - lo + 1)));
  return frz_f32_to_h((frnd() * 2.f - 1.f) * s, dt);
}

enum { M_UNIFORM, M_RAW, M_ROWCONST, M_COLCONST, M_ZEROS, M_FEW, M_SUBNORMAL, M_HUGE, M_POSZERO, M_SPIKES,
       M_MIXED, M_COUNT };

/* Fill a [G][C] matrix with one of the adversarial patterns. */
static void fill_mode(uint16_t *x, uint32_t G, uint32_t C, int dt, int mode)
{
  int lo = -24 + (int)rndn(30), hi = lo + (int)rndn(12);
  uint16_t pool[6];
  for (int i = 0; i < 6; i++) pool[i] = i < 2 ? (uint16_t)(i ? 0x8000u : 0) : rnd_scaled(dt, lo, hi);
  uint16_t cst = rnd_scaled(dt, lo, hi);
  for (uint32_t r = 0; r < G; r++) {
    int m = mode == M_MIXED ? (int)rndn(M_MIXED) : mode;
    if (m == M_ROWCONST) cst = rndn(4) ? rnd_scaled(dt, lo, hi) : (uint16_t)(rndn(2) ? 0x8000u : 0);
    for (uint32_t c = 0; c < C; c++) {
      uint16_t *p = &x[(size_t)r * C + c];
      switch (m) {
      case M_UNIFORM: *p = rnd_scaled(dt, lo, lo); break;
      case M_RAW: *p = rnd_finite(dt); break;
      case M_ROWCONST: *p = cst; break;
      case M_COLCONST: *p = r == 0 ? rnd_scaled(dt, lo, hi) : x[c]; break;
      case M_ZEROS: *p = rndn(8) ? (uint16_t)(rndn(2) ? 0x8000u : 0) : rnd_scaled(dt, lo, hi); break;
      case M_FEW: *p = pool[rndn(rndn(2) ? 6 : 3)]; break;
      case M_SUBNORMAL: *p = (uint16_t)((rnd() & 0x8000u) | (rnd() & (dt == KVS_DTYPE_BF16 ? 0x7fu : 0x3ffu))); break;
      case M_HUGE:
        if (dt == KVS_DTYPE_BF16) /* around fp16's max: some beyond it (-ERANGE) */
          *p = (uint16_t)((rnd() & 0x8000u) | (rndn(8) ? 0x4700u + rndn(0x80) : 0x4780u + rndn(0x80)));
        else
          *p = (uint16_t)((rnd() & 0x8000u) | (0x7800u + rndn(0x400)));
        break;
      case M_POSZERO: *p = rndn(3) ? (uint16_t)(rnd_scaled(dt, lo, hi) & 0x7fffu) : (uint16_t)(rndn(2) ? 0x8000u : 0); break;
      default: /* M_SPIKES: small values with a few equal-magnitude spikes (outlier ties) */
        *p = rndn(16) ? rnd_scaled(dt, -6, -2) : (uint16_t)(cst ^ (rndn(2) ? 0x8000u : 0)); break;
      }
    }
  }
}

static uint16_t bad_word(int dt)
{
  if (dt == KVS_DTYPE_BF16) return (uint16_t)((rnd() & 0x8000u) | 0x7f80u | (rndn(2) ? rnd() & 0x7fu : 0));
  return (uint16_t)((rnd() & 0x8000u) | 0x7c00u | (rndn(2) ? rnd() & 0x3ffu : 0));
}

static uint32_t rnd_divisor(uint32_t C)
{
  uint32_t d[512], n = 0, n16 = 0, d16[512];
  for (uint32_t i = 1; i <= C && n < 512; i++)
    if (C % i == 0) { d[n++] = i; if (i % 16 == 0) d16[n16++] = i; }
  if (n16 && rndn(2)) return d16[rndn(n16)];
  return d[rndn(n)];
}

static const uint32_t widths[] = { 2, 3, 4, 8, 16 };
static const uint32_t Cs[] = { 1, 2, 3, 5, 7, 15, 16, 17, 31, 32, 33, 48, 63, 64, 65, 96, 100, 127, 128, 129,
                               192, 255, 256, 257, 320, 384, 640, 1000, 1024, 1040 };
static const uint32_t Gs[] = { 1, 2, 3, 4, 7, 8, 16, 31, 32, 33, 63, 64 };

typedef struct stats { unsigned ok, enan, erange, einval, deq, deq_corrupt; } stats;

/* Dequantize rows [r0, r1) with both codes; same rc, and on success the
 * same words (buffers start with the same garbage; exact-size copies so
 * that AddressSanitizer sees any overrun). */
/* Dequantized words equal; with `corrupt`, under clang, two NaNs also
 * count as equal: where a corrupt block has NaN in both a min and its
 * scale, the frozen code's result keeps the NaN of whichever operand clang
 * put first (gcc: the product's, which quant.c now pins). */
static int same_words(const uint16_t *a, const uint16_t *b, size_t n, int dt, int corrupt)
{
  if (memcmp(a, b, 2 * n) == 0) return 1;
#if defined(__clang__)
  if (corrupt) {
    uint16_t e = dt == KVS_DTYPE_BF16 ? 0x7f80u : 0x7c00u, m = dt == KVS_DTYPE_BF16 ? 0x7fu : 0x3ffu;
    for (size_t i = 0; i < n; i++)
      if (a[i] != b[i] && !((a[i] & e) == e && (a[i] & m) && (b[i] & e) == e && (b[i] & m))) return 0;
    return 1;
  }
#else
  (void)dt; (void)corrupt;
#endif
  return 0;
}

static int same_dequant(const kvs__qparams *p, const void *blk, uint16_t *const *rows, uint32_t r0, uint32_t r1,
                        int corrupt)
{
  size_t n = (size_t)(r1 > r0 ? r1 - r0 : 0) * p->channels;
  uint16_t *a = malloc(2 * n + 2), *b = malloc(2 * n + 2), *c = malloc(2 * n + 2), *d = malloc(2 * n + 2);
  REQUIRE(a && b && c && d, "a && b && c && d");
  for (size_t i = 0; i < n; i++) a[i] = b[i] = c[i] = d[i] = (uint16_t)rnd();
  int rf = frz_dequantize_block(p, blk, (const uint16_t *const *)rows, r0, r1, a, b);
  int rk = kvs__dequantize_block(p, blk, (const uint16_t *const *)rows, r0, r1, c, d);
  REQUIRE(rf == rk, "dequantize rc %d want %d (G=%u C=%u vg=%u kb=%u vb=%u rows %u..%u)", rk, rf, p->group,
                p->channels, p->v_group, p->k_bits, p->v_bits, r0, r1);
  if (rf == 0) {
    REQUIRE(same_words(a, c, n, p->dtype, corrupt), "dequantized K differs (G=%u C=%u vg=%u kb=%u ko=%u dt=%d rows %u..%u)",
                  p->group, p->channels, p->v_group, p->k_bits, p->k_outliers, p->dtype, r0, r1);
    REQUIRE(same_words(b, d, n, p->dtype, corrupt), "dequantized V differs (G=%u C=%u vg=%u vb=%u vo=%u dt=%d rows %u..%u)",
                  p->group, p->channels, p->v_group, p->v_bits, p->v_outliers, p->dtype, r0, r1);
  }
  free(a); free(b); free(c); free(d);
  return rf;
}

/* One random configuration: quantize with both, compare, then dequantize
 * the block (and corrupted copies of it) with both, compare. */
static void one_case(unsigned it, stats *st)
{
  kvs__qparams p;
  p.group = rndn(2) ? 1 + rndn(64) : Gs[rndn(sizeof Gs / sizeof *Gs)];
  p.channels = rndn(4) ? Cs[rndn(sizeof Cs / sizeof *Cs)] : 1 + rndn(400);
  if ((size_t)p.group * p.channels > 40000) p.group = 40000 / p.channels;
  p.v_group = rnd_divisor(p.channels);
  p.k_bits = widths[rndn(5)];
  p.v_bits = widths[rndn(5)];
  p.dtype = rndn(2) ? KVS_DTYPE_F16 : KVS_DTYPE_BF16;
  uint32_t cap = frz_outlier_count(p.channels, 0.05f);
  p.k_outliers = rndn(2) ? 0 : rndn(cap + 1);
  p.v_outliers = rndn(2) ? 0 : rndn(cap + 1);
  const uint32_t G = p.group, C = p.channels;
  const size_t n = (size_t)G * C;

  uint64_t all = G == 64 ? ~0ull : (1ull << G) - 1u, mask;
  switch (rndn(6)) {
  case 0: case 1: mask = 0; break;
  case 2: mask = (((uint64_t)rnd() << 32) ^ rnd() ^ ((uint64_t)rnd() << 16)) & all; break;
  case 3: mask = all; break;
  case 4: mask = 1ull << rndn(G); break;
  default: mask = ((1ull << rndn(G < 5 ? G : 5)) - 1u) & all; break; /* the first PFN tokens */
  }

  uint16_t *k = malloc(2 * n), *v = malloc(2 * n);
  REQUIRE(k && v, "k && v");
  fill_mode(k, G, C, p.dtype, (int)rndn(M_COUNT));
  fill_mode(v, G, C, p.dtype, (int)rndn(M_COUNT));
  if (rndn(10) == 0) { /* NaN / Inf anywhere, sink rows too */
    uint16_t *x = rndn(2) ? k : v;
    x[rndn((uint32_t)n)] = bad_word(p.dtype);
  }
  /* now and then a bad call */
  uint64_t qmask = mask;
  int no_rows = 0;
  switch (rndn(60)) {
  case 0: if (G < 64) qmask |= 1ull << (G + rndn(64 - G)); break;
  case 1: no_rows = 1; break;
  case 2: p.v_group = C + 1; break;
  case 3: p.k_outliers = cap + 1; break;
  default: break;
  }

  kvs__qlayout l;
  size_t total = frz_qlayout_of(&p, &l);
  uint8_t *b1 = malloc(total), *b2 = malloc(total);
  uint16_t *r1[64], *r2[64];
  REQUIRE(b1 && b2, "b1 && b2");
  for (size_t i = 0; i < total; i++) b1[i] = b2[i] = (uint8_t)rnd();
  for (int i = 0; i < 64; i++) {
    r1[i] = malloc(4 * C);
    r2[i] = malloc(4 * C);
    REQUIRE(r1[i] && r2[i], "r1[i] && r2[i]");
    for (uint32_t j = 0; j < 2 * C; j++) r1[i][j] = r2[i][j] = (uint16_t)rnd();
  }
  int rf = frz_quantize_block(&p, k, v, qmask, b1, no_rows ? NULL : r1);
  int rk = kvs__quantize_block(&p, k, v, qmask, b2, no_rows ? NULL : r2);
  REQUIRE(rf == rk, "case %u: quantize rc %d want %d (G=%u C=%u vg=%u kb=%u vb=%u ko=%u vo=%u dt=%d)", it, rk,
                rf, G, C, p.v_group, p.k_bits, p.v_bits, p.k_outliers, p.v_outliers, p.dtype);
  if (rf == KVS_ENAN || rf == -EINVAL) /* nothing written: the block keeps its garbage */
    REQUIRE(memcmp(b1, b2, total) == 0, "memcmp(b1, b2, total) == 0");
  if (rf == 0) {
    size_t i = 0;
    while (i < total && b1[i] == b2[i]) i++;
    if (i < total && n <= 256) { /* small: print the input for a repro */
      fprintf(stderr, "k:");
      for (size_t j = 0; j < n; j++) fprintf(stderr, " %04x", k[j]);
      fprintf(stderr, "\nv:");
      for (size_t j = 0; j < n; j++) fprintf(stderr, " %04x", v[j]);
      fprintf(stderr, "\n");
    }
    REQUIRE(i == total,
                    "case %u: block byte %zu of %zu differs: %02x want %02x (G=%u C=%u vg=%u kb=%u vb=%u ko=%u vo=%u "
                    "dt=%d mask=%llx; kcodes@%zu vscale@%zu vcodes@%zu kout@%zu)",
                    it, i, total, b2[i], b1[i], G, C, p.v_group, p.k_bits, p.v_bits, p.k_outliers, p.v_outliers,
                    p.dtype, (unsigned long long)mask, l.kcodes, l.vscale, l.vcodes, l.kout);
  }
  if (rf == 0 || rf == -ERANGE) /* sink rows are copied before any range is formed */
    for (int i = 0; i < 64; i++) REQUIRE(memcmp(r1[i], r2[i], 4 * C) == 0, "case %u: sink row %d", it, i);
  st->ok += rf == 0;
  st->enan += rf == KVS_ENAN;
  st->erange += rf == -ERANGE;
  st->einval += rf == -EINVAL;

  if (rf == 0) {
    /* whole block, a random slice, an empty one, the last row */
    same_dequant(&p, b1, r1, 0, G, 0);
    uint32_t a = rndn(G + 1), b = rndn(G + 1);
    same_dequant(&p, b1, r1, a < b ? a : b, a < b ? b : a, 0);
    same_dequant(&p, b1, r1, a, a, 0);
    same_dequant(&p, b1, r1, G - 1, G, 0);
    st->deq += 4;
    /* corrupt copies: random scales/mins (NaN, Inf, huge), random code
     * bytes, random outlier entries, a header that does not match */
    for (int t = 0; t < 3; t++) {
      memcpy(b2, b1, total);
      switch (rndn(5)) {
      case 0:
        for (size_t i = l.kscale; i < l.kcodes; i += 2) if (rndn(4) == 0) { uint16_t w = (uint16_t)rnd(); memcpy(b2 + i, &w, 2); }
        for (size_t i = l.vscale; i < l.vcodes; i += 2) if (rndn(4) == 0) { uint16_t w = (uint16_t)rnd(); memcpy(b2 + i, &w, 2); }
        break;
      case 1:
        for (size_t i = l.kcodes; i < l.kout; i++) if (rndn(4) == 0) b2[i] = (uint8_t)rnd();
        break;
      case 2:
        for (size_t i = l.kout; i + 4 <= total; i += 4)
          if (rndn(3) == 0) { uint32_t w = rnd() % (C + C / 8 + 2) | rnd() << 16; memcpy(b2 + i, &w, 4); }
        break;
      case 3: b2[rndn(16)] ^= (uint8_t)(1u << rndn(8)); break; /* header */
      default: for (size_t i = 16; i < total; i++) b2[i] = (uint8_t)rnd(); break;
      }
      uint32_t x = rndn(G + 1), y = rndn(G + 1);
      same_dequant(&p, b2, r1, 0, G, 1);
      same_dequant(&p, b2, r1, x < y ? x : y, x < y ? y : x, 1);
      st->deq_corrupt += 2;
    }
  }
  for (int i = 0; i < 64; i++) { free(r1[i]); free(r2[i]); }
  free(b1); free(b2); free(k); free(v);
}

START_TEST(exact_random_blocks)
{
  unsigned iters = env_u("KVS_QEXACT_ITERS", 3000);
  stats st = { 0, 0, 0, 0, 0, 0 };
  for (unsigned it = 0; it < iters; it++) one_case(it, &st);
  /* the mix is what it is meant to be: mostly successes, every error seen */
  REQUIRE(st.ok > iters / 2, "st.ok > iters / 2");
  if (iters >= 1000) REQUIRE(st.enan > 0 && st.erange > 0 && st.einval > 0, "st.enan > 0 && st.erange > 0 && st.einval > 0");
  fprintf(stderr, "quant exact: %u cases: %u ok, %u KVS_ENAN, %u -ERANGE, %u -EINVAL; %u dequantize calls, %u on "
                  "corrupted blocks\n", iters, st.ok, st.enan, st.erange, st.einval, st.deq, st.deq_corrupt);
}
END_TEST

/* Every (K bits, V bits) pair and both dtypes on the daemon's shapes and
 * on odd ones, each with and without sinks and outliers. */
START_TEST(exact_width_grid)
{
  static const uint32_t shapes[][3] = { { 32, 1024, 32 }, { 32, 1024, 128 }, { 7, 15, 5 }, { 64, 48, 16 },
                                        { 1, 1, 1 }, { 33, 65, 13 }, { 16, 96, 96 }, { 5, 1040, 80 } };
  unsigned n = 0;
  for (unsigned s = 0; s < sizeof shapes / sizeof *shapes; s++)
    for (int kb = 0; kb < 5; kb++)
      for (int vb = 0; vb < 5; vb++)
        for (int dt = 1; dt <= 2; dt++)
          for (int var = 0; var < 4; var++) {
            kvs__qparams p = { shapes[s][0], shapes[s][1], shapes[s][2], widths[kb], widths[vb], 0, 0, (kvs_dtype)dt };
            uint32_t G = p.group, C = p.channels, cap = frz_outlier_count(C, 0.05f);
            if (var & 1) { p.k_outliers = cap; p.v_outliers = cap ? 1 : 0; }
            uint64_t mask = (var & 2) ? (G == 64 ? 0x8000000000000001ull : (1ull << (G - 1)) | 1u) : 0;
            size_t nn = (size_t)G * C;
            uint16_t *k = malloc(2 * nn), *v = malloc(2 * nn);
            fill_mode(k, G, C, dt, M_MIXED);
            fill_mode(v, G, C, dt, M_MIXED);
            kvs__qlayout l;
            size_t total = frz_qlayout_of(&p, &l);
            uint8_t *b1 = malloc(total), *b2 = malloc(total);
            uint16_t *r1[64], *r2[64];
            for (int i = 0; i < 2; i++) { r1[i] = malloc(4 * C); r2[i] = malloc(4 * C); }
            memset(b1, 0xa5, total);
            memset(b2, 0xa5, total);
            int rf = frz_quantize_block(&p, k, v, mask, b1, r1);
            int rk = kvs__quantize_block(&p, k, v, mask, b2, r2);
            REQUIRE(rk == rf, "quantize rc %d want %d", rk, rf);
            if (!rf) {
              REQUIRE(memcmp(b1, b2, total) == 0, "block differs: G=%u C=%u vg=%u kb=%u vb=%u dt=%d var=%d", G,
                            C, p.v_group, p.k_bits, p.v_bits, dt, var);
              for (int i = 0; i < __builtin_popcountll(mask); i++) REQUIRE(memcmp(r1[i], r2[i], 4 * C) == 0, "memcmp(r1[i], r2[i], 4 * C) == 0");
              same_dequant(&p, b1, r1, 0, G, 0);
              n++;
            }
            for (int i = 0; i < 2; i++) { free(r1[i]); free(r2[i]); }
            free(b1); free(b2); free(k); free(v);
          }
  REQUIRE(n > 800, "only %u successes", n);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("quant_exact");
  TCase *tc = tcase_create("exact");
  tcase_set_timeout(tc, 600);
  tcase_add_test(tc, exact_half_16_to_32);
  tcase_add_test(tc, exact_half_32_to_16);
  tcase_add_test(tc, exact_width_grid);
  tcase_add_test(tc, exact_random_blocks);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
