/* C reference quantizer: the definition of the block format (quant.h). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/half.h"
#include "kernels/quant.h"

#define KVS__OUTLIER_MAX_FRACTION 0.05f

static size_t align16(size_t x) { return (x + 15u) & ~(size_t)15u; }
static int bits_ok(uint32_t b) { return b == 2 || b == 3 || b == 4 || b == 8 || b == 16; }
static size_t row_stride(uint32_t c, uint32_t b) { return (((size_t)c * b + 7u) / 8u + 3u) & ~(size_t)3u; }
/* 16-bit passthrough has no outliers whatever the params say. */
static uint32_t n_kout(const kvs__qparams *p) { return p->k_bits == 16 ? 0 : p->k_outliers; }
static uint32_t n_vout(const kvs__qparams *p) { return p->v_bits == 16 ? 0 : p->v_outliers; }

uint32_t kvs__outlier_count(uint32_t channels, float fraction)
{
  if (!(fraction > 0.f)) return 0; /* also NaN */
  if (fraction > KVS__OUTLIER_MAX_FRACTION) fraction = KVS__OUTLIER_MAX_FRACTION;
  /* fp32 product, so that 0.001f * 1000 is 1 and not 1.00000005 -> 2 */
  float n = ceilf(fraction * (float)channels);
  return n > (float)channels ? channels : (uint32_t)n;
}

int kvs__qparams_check(const kvs__qparams *p)
{
  if (!p) return -EINVAL;
  if (p->group < 1 || p->group > KVS_QBLOCK_MAX_G) return -EINVAL;
  if (p->channels < 1 || p->channels > 65536u) return -EINVAL; /* u16 outlier index */
  if (p->v_group < 1 || p->channels % p->v_group) return -EINVAL;
  if (!bits_ok(p->k_bits) || !bits_ok(p->v_bits)) return -EINVAL;
  if (p->dtype != KVS_DTYPE_F16 && p->dtype != KVS_DTYPE_BF16) return -EINVAL;
  uint32_t cap = kvs__outlier_count(p->channels, KVS__OUTLIER_MAX_FRACTION);
  if (p->k_outliers > cap || p->v_outliers > cap) return -EINVAL;
  return 0;
}

size_t kvs__qlayout_of(const kvs__qparams *p, kvs__qlayout *l)
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

double kvs__bits_per_element(const kvs__qparams *p, uint32_t n_sinks)
{
  kvs__qlayout l;
  if (kvs__qparams_check(p) || n_sinks > p->group) return 0.0;
  size_t bytes = kvs__qlayout_of(p, &l) + (size_t)n_sinks * kvs__sink_row_bytes(p);
  return (double)bytes * 8.0 / (2.0 * p->group * p->channels);
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
  uint16_t s = kvs__f32_to_f16(scale), m = kvs__f32_to_f16(mn);
  if ((s & 0x7c00u) == 0x7c00u || (m & 0x7c00u) == 0x7c00u) return -ERANGE;
  float sf = kvs__f16_to_f32_i(s);
  *sc_h = s;
  *mn_h = m;
  q->minf = kvs__f16_to_f32_i(m);
  q->inv = sf == 0.f ? 0.f : 1.0f / sf;
  return 0;
}

static inline uint32_t qcode(float x, const qrange *q, uint32_t hi)
{
  /* floor(y) then clamp; for y >= 0 truncation is floor */
  float y = (x - q->minf) * q->inv + 0.5f;
  y = y > 0.f ? y : 0.f; /* branch-free; inv == 0 gives 0.5 -> code 0 */
  uint32_t c = (uint32_t)y;
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

int kvs__quantize_block(const kvs__qparams *p, const uint16_t *k, const uint16_t *v,
                        uint64_t sink_mask, void *block, uint16_t *const *sink_rows)
{
  if (kvs__qparams_check(p) || !k || !v || !block) return -EINVAL;
  const uint32_t G = p->group, C = p->channels, vg = p->v_group, ng = C / vg;
  const int dt = (int)p->dtype;
  if (G < 64 && (sink_mask >> G)) return -EINVAL;
  if (sink_mask && !sink_rows) return -EINVAL;
  for (size_t i = 0; i < (size_t)G * C; i++)
    if (is_bad(k[i], dt) || is_bad(v[i], dt)) return KVS_ENAN;

  kvs__qlayout l;
  kvs__qlayout_of(p, &l);
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
  for (size_t i = 0; i < (size_t)G * C; i++) { xk[i] = kvs__h_to_f32(k[i], dt); xv[i] = kvs__h_to_f32(v[i], dt); }
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

int kvs__dequantize_block(const kvs__qparams *p, const void *block,
                          const uint16_t *const *sink_rows, uint32_t r0, uint32_t r1,
                          uint16_t *k_out, uint16_t *v_out)
{
  if (kvs__qparams_check(p) || !block || r0 > r1 || r1 > p->group) return -EINVAL;
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
  kvs__qlayout_of(p, &l);
  const uint32_t nko = n_kout(p), nvo = n_vout(p);
  const uint16_t *ksc = (const uint16_t *)(blk + l.kscale), *kmn = (const uint16_t *)(blk + l.kmin);
  /* key scale/min as fp32 once per call, not once per element */
  float *kf = NULL;
  if (p->k_bits != 16 && r0 < r1) {
    kf = scratch_get(sizeof(float) * 2u * C);
    if (!kf) return -ENOMEM;
    for (uint32_t c = 0; c < C; c++) { kf[2 * c] = kvs__f16_to_f32_i(kmn[c]); kf[2 * c + 1] = kvs__f16_to_f32_i(ksc[c]); }
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
        ko[c] = kvs__f32_to_h(x, dt);
      }
    }
    b = (bitr){ (const uint32_t *)(blk + l.vcodes + r * l.vstride), 0, 0 };
    if (p->v_bits == 16) {
      for (uint32_t c = 0; c < C; c++) vo[c] = (uint16_t)bitr_get(&b, 16);
    } else {
      const uint16_t *vsc = (const uint16_t *)(blk + l.vscale) + (size_t)r * ng;
      const uint16_t *vmn = (const uint16_t *)(blk + l.vmin) + (size_t)r * ng;
      for (uint32_t g = 0; g < ng; g++) {
        float sf = kvs__f16_to_f32_i(vsc[g]), mf = kvs__f16_to_f32_i(vmn[g]);
        for (uint32_t c = g * vg; c < (g + 1u) * vg; c++)
          vo[c] = kvs__f32_to_h(mf + (float)bitr_get(&b, p->v_bits) * sf, dt);
      }
    }
    if (put_outliers((const uint32_t *)(blk + l.kout) + (size_t)r * nko, nko, C, ko) ||
        put_outliers((const uint32_t *)(blk + l.vout) + (size_t)r * nvo, nvo, C, vo))
      return -EINVAL;
  }
  return 0;
}
