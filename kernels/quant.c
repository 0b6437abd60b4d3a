/* SPDX-License-Identifier: MIT */
/* C reference quantizer: the definition of the block format (quant.h).
 *
 * It is also the daemon's host path, so it is written for speed; the
 * arithmetic is still exactly the one quant.h describes, step by step in
 * fp32, and tests/unit/test_quant_exact.c checks every output byte against
 * a frozen copy of the plain version this replaced. How it is fast:
 * - gcc -O2 vectorizes only loops whose trip count is a known multiple of
 *   the vector width ("very cheap" cost model): the hot loops run over
 *   fixed chunks of LANES elements with a scalar tail, on restrict pointers
 *   (a uint8_t store may alias anything, which would also stop it).
 * - no per-element branches: outliers are left out of the min/max by a NaN
 *   in the converted row (x < mn and x > mx are both false for NaN, and
 *   the input has no NaN), sinks by skipping whole rows.
 * - keys: per-channel min/max row by row over contiguous memory.
 * - codes are packed 8 at a time: 8 codes of b bits are exactly b bytes of
 *   the little-endian row stream, merged with shifts in a uint64_t.
 * - dequantize by table where a range has few levels for its elements
 *   (the 2^b outputs computed once, each element one load).
 * Out-of-range float conversion saturates (qcode_big); the NaN payload of
 * a corrupt block is spelled out as gcc compiled it (dqx).
 * No FMA contraction: gcc's ISO C mode (-std=c11) implies
 * -ffp-contract=off; clang contracts within one expression unless told
 * not to, hence the pragma (and one operation per statement anyway; only
 * gcc in GNU mode, -std=gnu11, on an FMA target would still contract). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/half.h"
#include "kernels/quant.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

/* Hot loops live in functions of their own: inlined into the big ones,
 * gcc loses their restrict and then needs alias versioning, which -O2's
 * cost model refuses. */
#if defined(__GNUC__)
#define NOINLINE __attribute__((noinline))
#else
#define NOINLINE
#endif

#define LANES 16u  /* fixed chunk of the vectorizable loops */
#define CPAD 64u   /* per-row buffers are padded to this many channels */

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define KVS__LE 1
#else
#define KVS__LE 0
#endif

#define KVS__OUTLIER_MAX_FRACTION 0.05f

static size_t align16(size_t x) { return (x + 15u) & ~(size_t)15u; }
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
  if (!KVS_BITS_VALID(p->k_bits) || !KVS_BITS_VALID(p->v_bits)) return -EINVAL;
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

/* ---- small helpers ------------------------------------------------------ */

/* Any NaN/Inf among x[0, n)? (x & exp) + the exponent's lowest bit carries
 * into bit 15 exactly when the exponent is all ones. */
NOINLINE static int any_bad(const uint16_t *restrict x, size_t n, int dt)
{
  const uint16_t e = dt == KVS_DTYPE_BF16 ? 0x7f80u : 0x7c00u, one = dt == KVS_DTYPE_BF16 ? 0x80u : 0x400u;
  uint16_t acc = 0;
  size_t i = 0;
  for (; i + 4u * LANES <= n; i += 4u * LANES)
    for (unsigned j = 0; j < 4u * LANES; j++) acc |= (uint16_t)((x[i + j] & e) + one);
  for (; i < n; i++) acc |= (uint16_t)((x[i] & e) + one);
  return acc >> 15;
}

/* half.h's array converter in a function of its own (see NOINLINE). */
NOINLINE static void to_f32(float *restrict dst, const uint16_t *restrict src, size_t n, int dt)
{
  kvs__h_to_f32_n(dst, src, n, dt);
}

static uint32_t cpad(uint32_t c) { return (c + CPAD - 1u) & ~(CPAD - 1u); }

/* Little-endian loads and stores of n = 2, 4 or 8 bytes: on LE hosts a
 * memcpy into a variable of that width, which compiles to one move (a
 * memcpy into part of a wider variable goes through the stack and stalls
 * the load that follows). */
static inline uint64_t ldn(const uint8_t *p, unsigned n)
{
  if (KVS__LE) {
    if (n == 2) { uint16_t x; memcpy(&x, p, 2); return x; }
    if (n == 4) { uint32_t x; memcpy(&x, p, 4); return x; }
    uint64_t x; memcpy(&x, p, 8); return x;
  }
  uint64_t x = 0;
  for (unsigned i = 0; i < n; i++) x |= (uint64_t)p[i] << (8u * i);
  return x;
}
static inline void stn(uint8_t *p, uint64_t x, unsigned n)
{
  if (KVS__LE) {
    if (n == 2) { uint16_t y = (uint16_t)x; memcpy(p, &y, 2); return; }
    if (n == 4) { uint32_t y = (uint32_t)x; memcpy(p, &y, 4); return; }
    memcpy(p, &x, 8);
    return;
  }
  for (unsigned i = 0; i < n; i++) p[i] = (uint8_t)(x >> (8u * i));
}
static inline uint64_t ld64(const uint8_t *p) { return ldn(p, 8); }
static inline void st64(uint8_t *p, uint64_t x) { stn(p, x, 8); }

/* A row's codes are a little-endian bit stream stored as native 32-bit
 * words (quant.h). The packers work on the byte stream; these move `n`
 * bytes (a multiple of 4) between it and the block. */
static void put_stream(uint8_t *restrict dst, const uint8_t *restrict s, size_t n)
{
  if (KVS__LE) { memcpy(dst, s, n); return; }
  for (size_t i = 0; i < n; i += 4) {
    uint32_t w = (uint32_t)ldn(s + i, 4);
    memcpy(dst + i, &w, 4);
  }
}
static void get_stream(uint8_t *restrict s, const uint8_t *restrict src, size_t n)
{
  if (KVS__LE) { memcpy(s, src, n); return; }
  for (size_t i = 0; i < n; i += 4) {
    uint32_t w;
    memcpy(&w, src + i, 4);
    stn(s + i, w, 4);
  }
}

/* 8 codes of b bits are exactly b bytes of the stream: merge neighbours
 * with shifts inside a uint64_t (codes are < 2^b, so nothing overlaps). */
NOINLINE static void pack_row(const uint8_t *restrict c, size_t n8, uint32_t b, uint8_t *restrict out)
{
  switch (b) {
  case 8: memcpy(out, c, 8u * n8); break;
  case 4:
    for (size_t i = 0; i < n8; i++) {
      uint64_t x = ld64(c + 8u * i);
      x = (x | x >> 4) & 0x00ff00ff00ff00ffull;
      x = (x | x >> 8) & 0x0000ffff0000ffffull;
      stn(out + 4u * i, x | x >> 16, 4);
    }
    break;
  case 3:
    for (size_t i = 0; i < n8; i++) {
      uint64_t x = ld64(c + 8u * i);
      x = (x | x >> 5) & 0x00ff00ff00ff00ffull;
      x = (x | x >> 10) & 0x00000fff00000fffull;
      /* 4 bytes, the 4th zero: the next group overwrites it, and the row
       * buffers have room for the one past the end */
      stn(out + 3u * i, (x | x >> 20) & 0xffffffu, 4);
    }
    break;
  default: /* 2 */
    for (size_t i = 0; i < n8; i++) {
      uint64_t x = ld64(c + 8u * i);
      x = (x | x >> 6) & 0x00ff00ff00ff00ffull;
      x = (x | x >> 12) & 0x000000ff000000ffull;
      stn(out + 2u * i, x | x >> 24, 2);
    }
    break;
  }
}

/* The inverse: spread b bytes back into 8 code bytes. */
NOINLINE static void unpack_row(const uint8_t *restrict s, size_t n8, uint32_t b, uint8_t *restrict c)
{
  switch (b) {
  case 8: memcpy(c, s, 8u * n8); break;
  case 4:
    for (size_t i = 0; i < n8; i++) {
      uint64_t x = ldn(s + 4u * i, 4);
      x = (x | x << 16) & 0x0000ffff0000ffffull;
      x = (x | x << 8) & 0x00ff00ff00ff00ffull;
      st64(c + 8u * i, (x | x << 4) & 0x0f0f0f0f0f0f0f0full);
    }
    break;
  case 3:
    for (size_t i = 0; i < n8; i++) {
      uint64_t x = ldn(s + 3u * i, 4) & 0xffffffu; /* the buffers have a byte to spare */
      x = (x | x << 20) & 0x00000fff00000fffull;
      x = (x | x << 10) & 0x003f003f003f003full;
      st64(c + 8u * i, (x | x << 5) & 0x0707070707070707ull);
    }
    break;
  default: /* 2 */
    for (size_t i = 0; i < n8; i++) {
      uint64_t x = ldn(s + 2u * i, 2);
      x = (x | x << 24) & 0x000000ff000000ffull;
      x = (x | x << 12) & 0x000f000f000f000full;
      st64(c + 8u * i, (x | x << 6) & 0x0303030303030303ull);
    }
    break;
  }
}

/* ---- quantize ----------------------------------------------------------- */

/* Scale/min of one range as stored (fp16), plus what the coder needs.
 * mn > mx means the range has no member: scale 0, min 0. Returns nonzero
 * when the scale or the min overflows fp16 (-ERANGE). Branch-free, so that
 * the loop over many ranges vectorizes. */
static inline uint32_t range1(float mn, float mx, float levels, uint16_t *sc_h, uint16_t *mn_h, float *minf,
                              float *inv)
{
  /* selects as masks (kvs__sel): gcc -O2 leaves these ?: as branches */
  int any = mn <= mx;
  mn = kvs__bits_f(kvs__sel(any, kvs__f_bits(mn), 0));
  mx = kvs__bits_f(kvs__sel(any, kvs__f_bits(mx), 0));
  float scale = (mx - mn) / levels;
  uint16_t s = kvs__f32_to_f16_i(scale), m = kvs__f32_to_f16_i(mn);
  float sf = kvs__f16_to_f32_i(s);
  int zero = (s & 0x7fffu) == 0; /* sf == 0.f */
  float r = 1.0f / kvs__bits_f(kvs__sel(zero, 0x3f800000u, kvs__f_bits(sf))); /* never 1/0 */
  *sc_h = s;
  *mn_h = m;
  *minf = kvs__f16_to_f32_i(m);
  *inv = kvs__bits_f(kvs__sel(zero, 0, kvs__f_bits(r)));
  return (uint32_t)((s & 0x7c00u) == 0x7c00u) | (uint32_t)((m & 0x7c00u) == 0x7c00u);
}

/* n ranges at once: the key channels, or the value groups of a row. */
NOINLINE static uint32_t ranges(const float *restrict mn, const float *restrict mx, size_t C, float levels,
                                uint16_t *restrict sc, uint16_t *restrict mh, float *restrict minf,
                                float *restrict inv)
{
  uint32_t bad = 0;
  size_t c = 0;
  for (; c + LANES <= C; c += LANES)
    for (unsigned j = 0; j < LANES; j++)
      bad |= range1(mn[c + j], mx[c + j], levels, &sc[c + j], &mh[c + j], &minf[c + j], &inv[c + j]);
  for (; c < C; c++) bad |= range1(mn[c], mx[c], levels, &sc[c], &mh[c], &minf[c], &inv[c]);
  return bad;
}

/* code = clamp(floor((x - min) * inv + 0.5), 0, hi), one fp32 rounding per
 * step. For y >= 0 truncation is floor; clamping to hi before the
 * conversion gives the same code and keeps it in range. */
static inline float qcode_y(float x, float minf, float inv)
{
  float y = x - minf;
  y = y * inv;
  y = y + 0.5f;
  return y > 0.f ? y : 0.f; /* inv == 0 gives 0.5 -> code 0 */
}
static inline uint8_t qcode(float y, float hif)
{
  y = y < hif ? y : hif;
  return (uint8_t)(int32_t)y;
}

/* y >= 2^32 (an outlier far outside a tiny range): (uint32_t)y would be
 * undefined; the code saturates, as quant.h specifies and quant.cu does. */
static uint8_t qcode_big(float y, uint32_t hi)
{
  uint32_t c = y < 4294967296.0f ? (uint32_t)y : 0xffffffffu;
  return (uint8_t)(c > hi ? hi : c);
}

/* Keys: a range per channel (lane). */
NOINLINE static void codes_lanes(const float *restrict x, const float *restrict minf, const float *restrict inv,
                                 float hif, size_t n, uint8_t *restrict c)
{
  uint32_t big = 0; /* bit 31: some y >= 2^32 */
  size_t i = 0;
  for (; i + LANES <= n; i += LANES)
    for (unsigned j = 0; j < LANES; j++) {
      float y = qcode_y(x[i + j], minf[i + j], inv[i + j]);
      big |= kvs__f_bits(y) + 0x30800000u; /* y >= 0: its bits are monotone */
      c[i + j] = qcode(y, hif);
    }
  for (; i < n; i++) {
    float y = qcode_y(x[i], minf[i], inv[i]);
    big |= kvs__f_bits(y) + 0x30800000u; /* y >= 0: its bits are monotone */
    c[i] = qcode(y, hif);
  }
  if (big >> 31)
    for (i = 0; i < n; i++) c[i] = qcode_big(qcode_y(x[i], minf[i], inv[i]), (uint32_t)hif);
}

/* Values: one range for the n channels of a group. */
NOINLINE static void codes_const(const float *restrict x, float minf, float inv, float hif, size_t n,
                                 uint8_t *restrict c)
{
  uint32_t big = 0; /* bit 31: some y >= 2^32 */
  size_t i = 0;
  for (; i + LANES <= n; i += LANES)
    for (unsigned j = 0; j < LANES; j++) {
      float y = qcode_y(x[i + j], minf, inv);
      big |= kvs__f_bits(y) + 0x30800000u; /* y >= 0: its bits are monotone */
      c[i + j] = qcode(y, hif);
    }
  for (; i < n; i++) {
    float y = qcode_y(x[i], minf, inv);
    big |= kvs__f_bits(y) + 0x30800000u; /* y >= 0: its bits are monotone */
    c[i] = qcode(y, hif);
  }
  if (big >> 31)
    for (i = 0; i < n; i++) c[i] = qcode_big(qcode_y(x[i], minf, inv), (uint32_t)hif);
}

/* Keys: fold one row into the per-channel min/max. Rows come in order,
 * each channel is its own lane, so ties resolve as in a plain loop (the
 * first of -0/+0 stays). NaN (an outlier) compares false: left out. */
NOINLINE static void minmax_row(const float *restrict x, size_t n, float *restrict mn, float *restrict mx)
{
  size_t i = 0;
  for (; i + LANES <= n; i += LANES)
    for (unsigned j = 0; j < LANES; j++) {
      float v = x[i + j];
      mn[i + j] = v < mn[i + j] ? v : mn[i + j];
      mx[i + j] = v > mx[i + j] ? v : mx[i + j];
    }
  for (; i < n; i++) {
    float v = x[i];
    mn[i] = v < mn[i] ? v : mn[i];
    mx[i] = v > mx[i] ? v : mx[i];
  }
}

static float first_zero(const float *x, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (x[i] == 0.f) return x[i];
  return 0.f; /* not reached: the caller saw a zero */
}

/* Values: min/max of one group, LANES partial results at a time. The lanes
 * see the elements out of order, which matters only for -0 versus +0 (the
 * plain loop keeps the first zero it meets): fixed up after. No member
 * leaves mn = +Inf > mx = -Inf. */
NOINLINE static void minmax_group(const float *restrict x, size_t n, float *mn_out, float *mx_out)
{
  float lmn[LANES], lmx[LANES];
  for (unsigned j = 0; j < LANES; j++) { lmn[j] = INFINITY; lmx[j] = -INFINITY; }
  size_t i = 0;
  for (; i + LANES <= n; i += LANES)
    for (unsigned j = 0; j < LANES; j++) {
      float v = x[i + j];
      lmn[j] = v < lmn[j] ? v : lmn[j];
      lmx[j] = v > lmx[j] ? v : lmx[j];
    }
  /* fold the lanes in halves (fixed counts: vectorized too) */
  for (unsigned w = LANES / 2u; w >= 1u; w /= 2u)
    for (unsigned j = 0; j < w; j++) {
      lmn[j] = lmn[j + w] < lmn[j] ? lmn[j + w] : lmn[j];
      lmx[j] = lmx[j + w] > lmx[j] ? lmx[j + w] : lmx[j];
    }
  float mn = lmn[0], mx = lmx[0];
  for (; i < n; i++) {
    float v = x[i];
    mn = v < mn ? v : mn;
    mx = v > mx ? v : mx;
  }
  if (mn == 0.f) mn = first_zero(x, n);
  if (mx == 0.f) mx = first_zero(x, n);
  *mn_out = mn;
  *mx_out = mx;
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
 * the entries sorted by channel, and NaN at those channels of the
 * converted row x so that the min/max leave them out. */
static void pick_outliers(const uint16_t *row, uint32_t C, uint32_t n, uint32_t *heap, uint32_t *entries, float *x)
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
    x[c] = NAN;
  }
}

/* Put the outliers' own values back for coding (their codes are kept,
 * though dequantize overwrites them). */
static void restore_outliers(const uint32_t *entries, uint32_t n, const uint16_t *row, int dt, float *x)
{
  for (uint32_t i = 0; i < n; i++) {
    uint32_t c = entries[i] & 0xffffu;
    x[c] = kvs__h_to_f32(row[c], dt);
  }
}

/* 16-bit passthrough: the stream is the row's words in order. */
static void raw_row(uint8_t *dst, const uint16_t *row, uint32_t C, uint8_t *tmp)
{
  if (KVS__LE) { memcpy(dst, row, 2u * C); return; }
  for (uint32_t c = 0; c < C; c++) stn(tmp + 2u * c, row[c], 2);
  memset(tmp + 2u * C, 0, 2u * (C & 1u));
  put_stream(dst, tmp, 2u * C + 2u * (C & 1u));
}

int kvs__quantize_block(const kvs__qparams *p, const uint16_t *k, const uint16_t *v,
                        uint64_t sink_mask, void *block, uint16_t *const *sink_rows)
{
  if (kvs__qparams_check(p) || !k || !v || !block) return -EINVAL;
  const uint32_t G = p->group, C = p->channels, vg = p->v_group, ng = C / vg, Cp = cpad(C);
  const int dt = (int)p->dtype;
  if (G < 64 && (sink_mask >> G)) return -EINVAL;
  if (sink_mask && !sink_rows) return -EINVAL;
  if (any_bad(k, (size_t)G * C, dt) || any_bad(v, (size_t)G * C, dt)) return KVS_ENAN;

  kvs__qlayout l;
  kvs__qlayout_of(p, &l);
  const uint32_t nko = n_kout(p), nvo = n_vout(p);
  const int kraw = p->k_bits == 16, vraw = p->v_bits == 16;
  /* scratch: converted keys [G][C]; key min, max, fp32 min, 1/scale [Cp];
   * a converted value row [Cp]; group fp32 min, 1/scale, min, max [ng];
   * codes [Cp]; a row stream [2 Cp]; the outlier heap */
  size_t nf = (kraw ? 0 : (size_t)G * C + 4u * (size_t)Cp) + Cp + 4u * (size_t)ng;
  size_t need = sizeof(float) * nf + 3u * (size_t)Cp + sizeof(uint32_t) * (nko > nvo ? nko : nvo);
  float *xk = scratch_get(need);
  if (!xk) return -ENOMEM;
  float *kmn = xk + (kraw ? 0 : (size_t)G * C), *kmx = kmn + (kraw ? 0 : Cp);
  float *kminf = kmx + (kraw ? 0 : Cp), *kinv = kminf + (kraw ? 0 : Cp);
  float *xv = kinv + (kraw ? 0 : Cp), *gminf = xv + Cp, *ginv = gminf + ng, *gmn = ginv + ng, *gmx = gmn + ng;
  uint8_t *codes = (uint8_t *)(gmx + ng), *stream = codes + Cp;
  uint32_t *heap = (uint32_t *)(stream + 2u * (size_t)Cp); /* Cp is a multiple of 64: aligned */
  memset(codes, 0, Cp); /* channels past C code as 0: zero bits past C*b */

  uint8_t *blk = block;
  memset(blk, 0, l.total);
  kvs__qhdr *h = (kvs__qhdr *)blk;
  h->sink_mask = sink_mask;
  h->n_sinks = (uint16_t)__builtin_popcountll(sink_mask);
  h->k_bits = (uint8_t)p->k_bits;
  h->v_bits = (uint8_t)p->v_bits;
  h->rows = G;

  uint32_t si = 0;
  for (uint32_t r = 0; r < G; r++) {
    if (!((sink_mask >> r) & 1u)) continue;
    memcpy(sink_rows[si], k + (size_t)r * C, 2u * C);
    memcpy(sink_rows[si] + C, v + (size_t)r * C, 2u * C);
    si++;
  }

  /* keys: per-channel min/max over the rows, then codes row by row */
  if (kraw) {
    for (uint32_t r = 0; r < G; r++)
      if (!((sink_mask >> r) & 1u)) raw_row(blk + l.kcodes + r * l.kstride, k + (size_t)r * C, C, stream);
  } else {
    uint32_t *kout = (uint32_t *)(blk + l.kout);
    for (uint32_t c = 0; c < C; c++) { kmn[c] = INFINITY; kmx[c] = -INFINITY; }
    for (uint32_t r = 0; r < G; r++) {
      if ((sink_mask >> r) & 1u) continue;
      float *xr = xk + (size_t)r * C;
      to_f32(xr, k + (size_t)r * C, C, dt);
      if (nko) pick_outliers(k + (size_t)r * C, C, nko, heap, kout + (size_t)r * nko, xr);
      minmax_row(xr, C, kmn, kmx);
    }
    if (ranges(kmn, kmx, C, (float)((1u << p->k_bits) - 1u), (uint16_t *)(blk + l.kscale),
                   (uint16_t *)(blk + l.kmin), kminf, kinv))
      return -ERANGE;
    const float hif = (float)((1u << p->k_bits) - 1u);
    for (uint32_t r = 0; r < G; r++) {
      if ((sink_mask >> r) & 1u) continue;
      float *xr = xk + (size_t)r * C;
      if (nko) restore_outliers(kout + (size_t)r * nko, nko, k + (size_t)r * C, dt, xr);
      codes_lanes(xr, kminf, kinv, hif, C, codes);
      pack_row(codes, Cp / 8u, p->k_bits, stream);
      put_stream(blk + l.kcodes + r * l.kstride, stream, l.kstride);
    }
  }

  /* values: per row, per group of vg channels */
  const float vlev = (float)((1u << (vraw ? 2 : p->v_bits)) - 1u);
  for (uint32_t r = 0; r < G; r++) {
    if ((sink_mask >> r) & 1u) continue;
    const uint16_t *vr = v + (size_t)r * C;
    if (vraw) { raw_row(blk + l.vcodes + r * l.vstride, vr, C, stream); continue; }
    uint32_t *vout = (uint32_t *)(blk + l.vout) + (size_t)r * nvo;
    to_f32(xv, vr, C, dt);
    if (nvo) pick_outliers(vr, C, nvo, heap, vout, xv);
    uint16_t *vsc = (uint16_t *)(blk + l.vscale) + (size_t)r * ng;
    uint16_t *vmn = (uint16_t *)(blk + l.vmin) + (size_t)r * ng;
    for (uint32_t g = 0; g < ng; g++) minmax_group(xv + (size_t)g * vg, vg, &gmn[g], &gmx[g]);
    if (ranges(gmn, gmx, ng, vlev, vsc, vmn, gminf, ginv)) return -ERANGE;
    if (nvo) restore_outliers(vout, nvo, vr, dt, xv);
    for (uint32_t g = 0; g < ng; g++)
      codes_const(xv + (size_t)g * vg, gminf[g], ginv[g], vlev, vg, codes + (size_t)g * vg);
    pack_row(codes, Cp / 8u, p->v_bits, stream);
    put_stream(blk + l.vcodes + r * l.vstride, stream, l.vstride);
  }
  return 0;
}

/* ---- dequantize --------------------------------------------------------- */

static int put_outliers(const uint32_t *e, uint32_t n, uint32_t C, uint16_t *out)
{
  for (uint32_t i = 0; i < n; i++) {
    uint32_t c = e[i] & 0xffffu;
    if (c >= C) return -EINVAL; /* a corrupt block must not write out of bounds */
    out[c] = (uint16_t)(e[i] >> 16);
  }
  return 0;
}

/* x = min + code * scale (product rounded, then the sum: no FMA), then
 * rounded to the dtype. */
static inline float dqx(uint8_t code, float m, float s)
{
  float t = (float)code * s;
  float x = m + t;
  /* Only a corrupt block has NaN in both min and scale; then which payload
   * the sum keeps depends on the operand order the compiler picks. gcc
   * built the plain version with the product first, so the product's
   * (the scale's) NaN wins: pinned here, whatever the compiler does (as a
   * mask select, which vectorizes). */
  return kvs__bits_f(kvs__sel(t != t, kvs__f_bits(t), kvs__f_bits(x)));
}
/* The loops once per dtype, so that the conversion is branch-free. */
#define DEQ_LOOP(n, out, X, conv)                                              \
  do {                                                                         \
    size_t i = 0;                                                              \
    for (; i + LANES <= (n); i += LANES)                                       \
      for (size_t j = i; j < i + LANES; j++) (out)[j] = conv(X(j));            \
    for (; i < (n); i++) (out)[i] = conv(X(i));                                \
  } while (0)

NOINLINE static void deq_lanes(const uint8_t *restrict c, const float *restrict m, const float *restrict s, size_t n,
                          uint16_t *restrict out, int dt)
{
#define X_LANES(i) dqx(c[i], m[i], s[i])
  if (dt == KVS_DTYPE_BF16) DEQ_LOOP(n, out, X_LANES, kvs__f32_to_bf16_i);
  else DEQ_LOOP(n, out, X_LANES, kvs__f32_to_f16_i);
#undef X_LANES
}

NOINLINE static void deq_const(const uint8_t *restrict c, float m, float s, size_t n, uint16_t *restrict out, int dt)
{
#define X_CONST(i) dqx(c[i], m, s)
  if (dt == KVS_DTYPE_BF16) DEQ_LOOP(n, out, X_CONST, kvs__f32_to_bf16_i);
  else DEQ_LOOP(n, out, X_CONST, kvs__f32_to_f16_i);
#undef X_CONST
}

/* Dequantize by table when there are far fewer levels than elements: the
 * 2^b outputs of a range are computed once (by the same loops, so the same
 * bits) and each element is one load. */
static void lut_const(const uint8_t *ramp, float m, float s, uint32_t levels, int dt, uint16_t *lut)
{
  deq_const(ramp, m, s, levels, lut, dt); /* ramp[q] = q */
}

NOINLINE static void lut_apply(const uint8_t *restrict c, const uint16_t *restrict lut, size_t n,
                               uint16_t *restrict out)
{
  for (size_t i = 0; i < n; i++) out[i] = lut[c[i]];
}

/* Keys: a table per channel, laid out [code][C] so that it is built with
 * the vectorized deq_lanes, one code at a time. */
static void lut_keys(const float *m, const float *s, size_t C, uint32_t levels, int dt, uint8_t *qrow,
                     uint16_t *lut)
{
  for (uint32_t q = 0; q < levels; q++) {
    memset(qrow, (int)q, C);
    deq_lanes(qrow, m, s, C, lut + q * C, dt);
  }
}

NOINLINE static void lut_apply_keys(const uint8_t *restrict c, const uint16_t *restrict lut, size_t C,
                                    uint16_t *restrict out)
{
  for (size_t i = 0; i < C; i++) out[i] = lut[(size_t)c[i] * C + i];
}

/* Codes of one row into codes[0, Cp): stride bytes of the block, the rest
 * of the last 8-code group zero. */
static void row_codes(const uint8_t *src, size_t stride, uint32_t Cp, uint32_t b, uint8_t *stream, uint8_t *codes)
{
  get_stream(stream, src, stride);
  memset(stream + stride, 0, (size_t)Cp / 8u * b - stride + 4u); /* and the spare bytes */
  unpack_row(stream, Cp / 8u, b, codes);
}

static void raw_out(const uint8_t *src, uint32_t C, uint16_t *out, uint8_t *tmp)
{
  if (KVS__LE) { memcpy(out, src, 2u * C); return; }
  get_stream(tmp, src, (2u * C + 3u) & ~3u);
  for (uint32_t c = 0; c < C; c++) out[c] = (uint16_t)ldn(tmp + 2u * c, 2);
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
  const uint32_t G = p->group, C = p->channels, vg = p->v_group, ng = C / vg, Cp = cpad(C);
  const int dt = (int)p->dtype;
  if (h.rows != G || h.k_bits != p->k_bits || h.v_bits != p->v_bits) return -EINVAL;
  if (G < 64 && (h.sink_mask >> G)) return -EINVAL;
  if (h.sink_mask && !sink_rows) return -EINVAL;
  if (r0 == r1) return 0;
  kvs__qlayout l;
  kvs__qlayout_of(p, &l);
  const uint32_t nko = n_kout(p), nvo = n_vout(p);
  const int kraw = p->k_bits == 16, vraw = p->v_bits == 16;
  /* scratch: key min and scale as fp32 [Cp] (once per call, not once per
   * element), the tables, codes [Cp], a row stream [2 Cp + 4]. Tables where
   * a range has at most a quarter as many levels as elements (below that,
   * building the table costs about what it saves). */
  const uint32_t klev = 1u << p->k_bits, vlev = 1u << p->v_bits;
  const int klut = !kraw && 4u * klev <= r1 - r0, vlut = !vraw && 4u * vlev <= vg;
  size_t need = sizeof(float) * 2u * Cp + sizeof(uint16_t) * ((klut ? (size_t)klev * C : 0) + (vlut ? vlev : 0));
  float *kminf = scratch_get(need + 3u * (size_t)Cp + 4u);
  if (!kminf) return -ENOMEM;
  float *kscf = kminf + Cp;
  uint16_t *ktab = (uint16_t *)(kscf + Cp), *vtab = ktab + (klut ? (size_t)klev * C : 0);
  uint8_t *codes = (uint8_t *)(vtab + (vlut ? vlev : 0)), *stream = codes + Cp;
  if (!kraw) {
    kvs__h_to_f32_n(kminf, (const uint16_t *)(blk + l.kmin), C, KVS_DTYPE_F16);
    kvs__h_to_f32_n(kscf, (const uint16_t *)(blk + l.kscale), C, KVS_DTYPE_F16);
    if (klut) lut_keys(kminf, kscf, C, klev, dt, codes, ktab);
  }
  uint8_t ramp[256];
  if (vlut)
    for (uint32_t q = 0; q < vlev; q++) ramp[q] = (uint8_t)q;

  for (uint32_t r = r0; r < r1; r++) {
    uint16_t *ko = k_out + (size_t)(r - r0) * C, *vo = v_out + (size_t)(r - r0) * C;
    if ((h.sink_mask >> r) & 1u) {
      const uint16_t *s = sink_rows[__builtin_popcountll(h.sink_mask & ((1ull << r) - 1ull))];
      memcpy(ko, s, 2u * C);
      memcpy(vo, s + C, 2u * C);
      continue;
    }
    if (kraw) {
      raw_out(blk + l.kcodes + r * l.kstride, C, ko, stream);
    } else {
      row_codes(blk + l.kcodes + r * l.kstride, l.kstride, Cp, p->k_bits, stream, codes);
      if (klut) lut_apply_keys(codes, ktab, C, ko);
      else deq_lanes(codes, kminf, kscf, C, ko, dt);
    }
    if (vraw) {
      raw_out(blk + l.vcodes + r * l.vstride, C, vo, stream);
    } else {
      row_codes(blk + l.vcodes + r * l.vstride, l.vstride, Cp, p->v_bits, stream, codes);
      const uint16_t *vsc = (const uint16_t *)(blk + l.vscale) + (size_t)r * ng;
      const uint16_t *vmn = (const uint16_t *)(blk + l.vmin) + (size_t)r * ng;
      for (uint32_t g = 0; g < ng; g++) {
        float m = kvs__f16_to_f32_i(vmn[g]), sc = kvs__f16_to_f32_i(vsc[g]);
        if (vlut) {
          lut_const(ramp, m, sc, vlev, dt, vtab);
          lut_apply(codes + (size_t)g * vg, vtab, vg, vo + (size_t)g * vg);
        } else {
          deq_const(codes + (size_t)g * vg, m, sc, vg, vo + (size_t)g * vg, dt);
        }
      }
    }
    if (put_outliers((const uint32_t *)(blk + l.kout) + (size_t)r * nko, nko, C, ko) ||
        put_outliers((const uint32_t *)(blk + l.vout) + (size_t)r * nvo, nvo, C, vo))
      return -EINVAL;
  }
  return 0;
}
