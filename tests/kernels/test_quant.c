/* SPDX-License-Identifier: MIT */
/* Unit tests of the reference numerics: half.c and quant.c. */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/half.h"
#include "kernels/quant.h"

static uint64_t rng_s = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void)
{
  rng_s ^= rng_s << 13; rng_s ^= rng_s >> 7; rng_s ^= rng_s << 17;
  return (uint32_t)(rng_s >> 11);
}
static float frand(float lo, float hi) { return lo + (hi - lo) * (float)(rnd() & 0xffffff) / 16777216.0f; }

static uint32_t fbits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

/* Slow reference: pick the nearer of the two fp16 neighbours by exact
 * double arithmetic, ties to even. Only for finite f. */
static uint16_t ref_f32_to_f16(float f)
{
  double a = fabs((double)f);
  uint16_t sign = signbit(f) ? 0x8000u : 0;
  if (a >= 65520.0) return sign | 0x7c00u;
  uint16_t best = 0;
  /* binary search over the monotone positive encodings 0..0x7bff */
  uint16_t lo = 0, hi = 0x7bff;
  while (lo < hi) {
    uint16_t mid = (uint16_t)((lo + hi + 1) / 2);
    if ((double)kvs__f16_to_f32(mid) <= a) lo = mid; else hi = mid - 1;
  }
  best = lo;
  double d0 = a - kvs__f16_to_f32(best);
  if (best < 0x7bff) {
    double d1 = (double)kvs__f16_to_f32((uint16_t)(best + 1)) - a;
    if (d1 < d0 || (d1 == d0 && (best & 1u))) best++;
  } else if (d0 > 0) {
    /* between 65504 and 65520: rounds down */
  }
  return sign | best;
}

START_TEST(half_f16_exhaustive)
{
  for (uint32_t h = 0; h < 65536; h++) {
    float f = kvs__f16_to_f32((uint16_t)h);
    int nan = (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu);
    if (nan) {
      ck_assert(isnan(f));
      uint16_t back = kvs__f32_to_f16(f);
      ck_assert((back & 0x7c00u) == 0x7c00u && (back & 0x3ffu));
    } else {
      ck_assert_uint_eq(kvs__f32_to_f16(f), h);
      /* bf16 holds every fp16 value's magnitude only roughly; check its own round trip */
      uint16_t b = kvs__f32_to_bf16(f);
      ck_assert_uint_eq(kvs__f32_to_bf16(kvs__bf16_to_f32(b)), b);
    }
  }
  ck_assert(isinf(kvs__f16_to_f32(0x7c00u)) && kvs__f16_to_f32(0xfc00u) < 0);
  ck_assert_float_eq(kvs__f16_to_f32(0x0001u), 0x1p-24f);
  ck_assert_float_eq(kvs__f16_to_f32(0x3c00u), 1.0f);
}
END_TEST

START_TEST(half_f32_rounding)
{
  for (int i = 0; i < 200000; i++) {
    float f;
    uint32_t u = rnd() | (rnd() & 1u) << 31;
    /* bias toward fp16's range: exponents around [-26, 17] */
    u = (u & 0x807fffffu) | ((uint32_t)(100 + rnd() % 45) << 23);
    memcpy(&f, &u, 4);
    ck_assert_msg(kvs__f32_to_f16(f) == ref_f32_to_f16(f), "f=%a got %04x want %04x", (double)f,
                  kvs__f32_to_f16(f), ref_f32_to_f16(f));
  }
  /* exact ties */
  ck_assert_uint_eq(kvs__f32_to_f16(1.0f + 0x1p-11f), 0x3c00u);            /* tie to even, down */
  ck_assert_uint_eq(kvs__f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02u);        /* tie to even, up */
  ck_assert_uint_eq(kvs__f32_to_f16(0x1p-25f), 0x0000u);                   /* half the min subnormal */
  ck_assert_uint_eq(kvs__f32_to_f16(0x1.8p-25f), 0x0001u);
  ck_assert_uint_eq(kvs__f32_to_f16(65519.0f), 0x7bffu);
  ck_assert_uint_eq(kvs__f32_to_f16(65520.0f), 0x7c00u);
  ck_assert_uint_eq(kvs__f32_to_f16(-INFINITY), 0xfc00u);
  ck_assert_uint_eq(kvs__f32_to_f16(1e-30f), 0x0000u);
  ck_assert_uint_eq(kvs__f32_to_f16(-0.0f), 0x8000u);
  uint16_t n = kvs__f32_to_f16(NAN);
  ck_assert((n & 0x7c00u) == 0x7c00u && (n & 0x3ffu));
  /* bf16: RNE on the top half */
  ck_assert_uint_eq(kvs__f32_to_bf16(1.0f), 0x3f80u);
  uint32_t tie = 0x3f808000u, up = 0x3f818000u;
  float ft, fu;
  memcpy(&ft, &tie, 4); memcpy(&fu, &up, 4);
  ck_assert_uint_eq(kvs__f32_to_bf16(ft), 0x3f80u);
  ck_assert_uint_eq(kvs__f32_to_bf16(fu), 0x3f82u);
  ck_assert(isnan(kvs__bf16_to_f32(kvs__f32_to_bf16(NAN))));
  ck_assert_uint_eq(fbits(kvs__bf16_to_f32(0x3f80u)), 0x3f800000u);
}
END_TEST

static kvs__qparams mkp(uint32_t G, uint32_t C, uint32_t vg, uint32_t kb, uint32_t vb, uint32_t ko, uint32_t vo,
                        kvs_dtype dt)
{
  kvs__qparams p = { G, C, vg, kb, vb, ko, vo, dt };
  return p;
}

static void fill(uint16_t *x, size_t n, float lo, float hi, kvs_dtype dt)
{
  for (size_t i = 0; i < n; i++) x[i] = kvs__f32_to_h(frand(lo, hi), dt);
}

typedef struct qbuf {
  kvs__qparams p;
  kvs__qlayout l;
  void *blk;
  uint16_t *rows[64];
  uint16_t *ko, *vo;
} qbuf;

static void qb_init(qbuf *b, kvs__qparams p)
{
  b->p = p;
  ck_assert_int_eq(kvs__qparams_check(&p), 0);
  size_t t = kvs__qlayout_of(&p, &b->l);
  b->blk = malloc(t);
  for (int i = 0; i < 64; i++) b->rows[i] = malloc(kvs__sink_row_bytes(&p));
  b->ko = malloc((size_t)p.group * p.channels * 2);
  b->vo = malloc((size_t)p.group * p.channels * 2);
}
static void qb_free(qbuf *b)
{
  free(b->blk);
  for (int i = 0; i < 64; i++) free(b->rows[i]);
  free(b->ko);
  free(b->vo);
}
static int qb_run(qbuf *b, const uint16_t *k, const uint16_t *v, uint64_t mask)
{
  int rc = kvs__quantize_block(&b->p, k, v, mask, b->blk, b->rows);
  if (rc) return rc;
  return kvs__dequantize_block(&b->p, b->blk, (const uint16_t *const *)b->rows, 0, b->p.group, b->ko, b->vo);
}

static float half_ulp(float y, kvs_dtype dt)
{
  int e;
  frexpf(fabsf(y), &e);
  float ulp = ldexpf(1.0f, e - (dt == KVS_DTYPE_BF16 ? 8 : 11));
  if (dt == KVS_DTYPE_F16 && ulp < 0x1p-24f) ulp = 0x1p-24f;
  return ulp / 2;
}

/* |x - x^| <= scale/2 plus what fp16 rounding of scale, min and output adds. */
static void check_bound(float x, float xh, float mn, float mx, uint16_t sc_h, uint16_t mn_h, uint32_t bits,
                        kvs_dtype dt)
{
  float levels = (float)((1u << bits) - 1u);
  float sf = kvs__f16_to_f32(sc_h), mf = kvs__f16_to_f32(mn_h);
  float exact = (mx - mn) / levels;
  double bound = sf / 2.0 + fabs((double)mf - mn) + levels * fabs((double)sf - exact) + half_ulp(xh, dt) +
                 1e-6 * (fabs(mn) + fabs(mx));
  ck_assert_msg(fabs((double)x - xh) <= bound, "x=%g x^=%g bound=%g bits=%u", x, xh, bound, bits);
}

/* Check every non-sink, non-outlier element against its group's bound, with
 * the range recomputed here from the input (sinks and outliers left out). */
static void check_block(qbuf *b, const uint16_t *k, const uint16_t *v, uint64_t mask)
{
  const kvs__qparams *p = &b->p;
  uint32_t G = p->group, C = p->channels, vg = p->v_group, ng = C / vg;
  const uint8_t *blk = b->blk;
  uint8_t *kout = calloc((size_t)G * C, 1), *vout = calloc((size_t)G * C, 1);
  uint32_t nko = p->k_bits == 16 ? 0 : p->k_outliers, nvo = p->v_bits == 16 ? 0 : p->v_outliers;
  for (uint32_t r = 0; r < G; r++) {
    if ((mask >> r) & 1u) continue;
    const uint32_t *ke = (const uint32_t *)(blk + b->l.kout) + r * nko;
    const uint32_t *ve = (const uint32_t *)(blk + b->l.vout) + r * nvo;
    for (uint32_t i = 0; i < nko; i++) kout[r * C + (ke[i] & 0xffff)] = 1;
    for (uint32_t i = 0; i < nvo; i++) vout[r * C + (ve[i] & 0xffff)] = 1;
  }
  for (uint32_t r = 0; r < G; r++) {
    for (uint32_t c = 0; c < C; c++) {
      size_t i = (size_t)r * C + c;
      if (((mask >> r) & 1u) || p->k_bits == 16 || kout[i]) ck_assert_uint_eq(b->ko[i], k[i]);
      if (((mask >> r) & 1u) || p->v_bits == 16 || vout[i]) ck_assert_uint_eq(b->vo[i], v[i]);
    }
  }
  if (p->k_bits != 16) {
    for (uint32_t c = 0; c < C; c++) {
      float mn = INFINITY, mx = -INFINITY;
      for (uint32_t r = 0; r < G; r++) {
        if (((mask >> r) & 1u) || kout[r * C + c]) continue;
        float x = kvs__h_to_f32(k[r * C + c], p->dtype);
        mn = fminf(mn, x); mx = fmaxf(mx, x);
      }
      for (uint32_t r = 0; r < G; r++) {
        if (((mask >> r) & 1u) || kout[r * C + c]) continue;
        check_bound(kvs__h_to_f32(k[r * C + c], p->dtype), kvs__h_to_f32(b->ko[r * C + c], p->dtype), mn, mx,
                    ((const uint16_t *)(blk + b->l.kscale))[c], ((const uint16_t *)(blk + b->l.kmin))[c],
                    p->k_bits, p->dtype);
      }
    }
  }
  if (p->v_bits != 16) {
    for (uint32_t r = 0; r < G; r++) {
      if ((mask >> r) & 1u) continue;
      for (uint32_t g = 0; g < ng; g++) {
        float mn = INFINITY, mx = -INFINITY;
        for (uint32_t c = g * vg; c < (g + 1) * vg; c++) {
          if (vout[r * C + c]) continue;
          float x = kvs__h_to_f32(v[r * C + c], p->dtype);
          mn = fminf(mn, x); mx = fmaxf(mx, x);
        }
        for (uint32_t c = g * vg; c < (g + 1) * vg; c++) {
          if (vout[r * C + c]) continue;
          check_bound(kvs__h_to_f32(v[r * C + c], p->dtype), kvs__h_to_f32(b->vo[r * C + c], p->dtype), mn, mx,
                      ((const uint16_t *)(blk + b->l.vscale))[r * ng + g],
                      ((const uint16_t *)(blk + b->l.vmin))[r * ng + g], p->v_bits, p->dtype);
        }
      }
    }
  }
  free(kout);
  free(vout);
}

static const uint32_t all_bits[] = { 2, 3, 4, 8, 16 };

START_TEST(quant_error_bound)
{
  for (int bi = 0; bi < 5; bi++) {
    for (int dt = 1; dt <= 2; dt++) {
      uint32_t bits = all_bits[bi], G = 32, C = 128, vg = 32;
      qbuf b;
      qb_init(&b, mkp(G, C, vg, bits, bits == 16 ? 2 : all_bits[(bi + 1) % 4], 0, 0, (kvs_dtype)dt));
      uint16_t *k = malloc(G * C * 2), *v = malloc(G * C * 2);
      fill(k, G * C, -3.f, 5.f, (kvs_dtype)dt);
      fill(v, G * C, -0.5f, 0.25f, (kvs_dtype)dt);
      ck_assert_int_eq(qb_run(&b, k, v, 0), 0);
      check_block(&b, k, v, 0);
      /* the real error is well below the range (not all zeros, say) */
      double err = 0;
      for (uint32_t i = 0; i < G * C; i++)
        err += fabs(kvs__h_to_f32(k[i], dt) - kvs__h_to_f32(b.ko[i], dt));
      ck_assert(err / (G * C) < 8.0 / ((1u << bits) - 1) / 2 + 0.01);
      free(k); free(v);
      qb_free(&b);
    }
  }
}
END_TEST

START_TEST(quant_sinks_and_outliers)
{
  uint32_t G = 32, C = 64;
  for (int bi = 0; bi < 5; bi++) {
    qbuf b;
    qb_init(&b, mkp(G, C, 16, all_bits[bi], all_bits[(bi + 2) % 5], 3, 2, KVS_DTYPE_F16));
    uint16_t *k = malloc(G * C * 2), *v = malloc(G * C * 2);
    fill(k, G * C, -1.f, 1.f, KVS_DTYPE_F16);
    fill(v, G * C, -1.f, 1.f, KVS_DTYPE_F16);
    /* a huge value in sink rows 0 and 17 must not widen anyone's range */
    k[0 * C + 5] = kvs__f32_to_f16(30000.f);
    v[17 * C + 9] = kvs__f32_to_f16(-20000.f);
    k[17 * C + 40] = 0x7bffu;
    /* planted outliers in a normal row, one a tie (same |x|, lower channel wins) */
    k[3 * C + 50] = kvs__f32_to_f16(500.f);
    k[3 * C + 10] = kvs__f32_to_f16(-400.f);
    k[3 * C + 20] = kvs__f32_to_f16(300.f);
    k[3 * C + 30] = kvs__f32_to_f16(-300.f);
    uint64_t mask = (1ull << 0) | (1ull << 17);
    ck_assert_int_eq(qb_run(&b, k, v, mask), 0);
    check_block(&b, k, v, mask);
    const kvs__qhdr *h = b.blk;
    ck_assert_uint_eq(h->sink_mask, mask);
    ck_assert_uint_eq(h->n_sinks, 2);
    ck_assert_uint_eq(h->rows, G);
    ck_assert(memcmp(b.rows[0], k, C * 2) == 0 && memcmp(b.rows[0] + C, v, C * 2) == 0);
    ck_assert(memcmp(b.rows[1], k + 17 * C, C * 2) == 0 && memcmp(b.rows[1] + C, v + 17 * C, C * 2) == 0);
    if (all_bits[bi] != 16) {
      const uint32_t *e = (const uint32_t *)((uint8_t *)b.blk + b.l.kout) + 3 * 3;
      ck_assert_uint_eq(e[0] & 0xffff, 10); /* sorted by channel; 30 lost the tie to 20 */
      ck_assert_uint_eq(e[1] & 0xffff, 20);
      ck_assert_uint_eq(e[2] & 0xffff, 50);
      for (uint32_t c = 0; c < C; c++) {
        if (c == 30) continue; /* the tie's loser stays in the range */
        float mx = fabsf(kvs__f16_to_f32(((const uint16_t *)((uint8_t *)b.blk + b.l.kscale))[c]));
        ck_assert(mx < 1.0f); /* range 2 / levels */
      }
    }
    /* partial dequantize of rows [16, 19) matches the whole */
    uint16_t ko[3 * 64], vo[3 * 64];
    ck_assert_int_eq(kvs__dequantize_block(&b.p, b.blk, (const uint16_t *const *)b.rows, 16, 19, ko, vo), 0);
    ck_assert(memcmp(ko, b.ko + 16 * C, sizeof ko) == 0 && memcmp(vo, b.vo + 16 * C, sizeof vo) == 0);
    free(k); free(v);
    qb_free(&b);
  }
}
END_TEST

START_TEST(quant_odd_sizes)
{
  static const uint32_t Gs[] = { 1, 7, 33, 64 };
  for (int gi = 0; gi < 4; gi++) {
    for (int bi = 0; bi < 5; bi++) {
      uint32_t G = Gs[gi], C = 15;
      qbuf b;
      qb_init(&b, mkp(G, C, 5, all_bits[bi], all_bits[4 - bi], 1, 1, KVS_DTYPE_F16));
      ck_assert_uint_eq(b.l.kstride, ((C * all_bits[bi] + 7) / 8 + 3) & ~3u);
      uint16_t *k = malloc(G * C * 2), *v = malloc(G * C * 2);
      fill(k, G * C, -2.f, 2.f, KVS_DTYPE_F16);
      fill(v, G * C, 0.f, 10.f, KVS_DTYPE_F16);
      uint64_t mask = G > 3 ? 0x5ull : 0;
      ck_assert_int_eq(qb_run(&b, k, v, mask), 0);
      check_block(&b, k, v, mask);
      /* padding bits past C*b in each row are zero */
      const uint8_t *kc = (const uint8_t *)b.blk + b.l.kcodes;
      uint32_t used = C * all_bits[bi];
      for (uint32_t r = 0; r < G; r++)
        for (uint32_t bit = used; bit < b.l.kstride * 8; bit++)
          ck_assert(!((kc[r * b.l.kstride + bit / 8] >> (bit % 8)) & 1u));
      free(k); free(v);
      qb_free(&b);
    }
  }
}
END_TEST

START_TEST(quant_constant_and_all_sink)
{
  uint32_t G = 8, C = 32;
  qbuf b;
  qb_init(&b, mkp(G, C, 8, 2, 3, 0, 0, KVS_DTYPE_F16));
  uint16_t *k = malloc(G * C * 2), *v = malloc(G * C * 2);
  for (uint32_t i = 0; i < G * C; i++) {
    k[i] = kvs__f32_to_f16(1.5f + (float)(i % C)); /* each channel constant over rows */
    v[i] = kvs__f32_to_f16(-0.75f);                /* every row constant */
  }
  ck_assert_int_eq(qb_run(&b, k, v, 0), 0);
  ck_assert(memcmp(k, b.ko, G * C * 2) == 0);
  ck_assert(memcmp(v, b.vo, G * C * 2) == 0);
  for (uint32_t c = 0; c < C; c++) ck_assert_uint_eq(((uint16_t *)((uint8_t *)b.blk + b.l.kscale))[c], 0);
  /* all rows sinks: scales and mins 0, no codes, rows exact */
  fill(k, G * C, -9.f, 9.f, KVS_DTYPE_F16);
  ck_assert_int_eq(qb_run(&b, k, v, 0xffull), 0);
  ck_assert(memcmp(k, b.ko, G * C * 2) == 0);
  const uint8_t *blk = b.blk;
  for (size_t i = b.l.kscale; i < b.l.total; i++) ck_assert_uint_eq(blk[i], 0);
  free(k); free(v);
  qb_free(&b);
}
END_TEST

START_TEST(quant_rejects)
{
  uint32_t G = 4, C = 16;
  qbuf b;
  qb_init(&b, mkp(G, C, 8, 4, 4, 0, 0, KVS_DTYPE_F16));
  uint16_t k[64], v[64];
  fill(k, 64, -1, 1, KVS_DTYPE_F16);
  fill(v, 64, -1, 1, KVS_DTYPE_F16);
  memset(b.blk, 0xab, b.l.total);
  v[33] = 0x7e00u; /* NaN */
  ck_assert_int_eq(kvs__quantize_block(&b.p, k, v, 0, b.blk, b.rows), KVS_ENAN);
  ck_assert_uint_eq(((uint8_t *)b.blk)[0], 0xab); /* nothing written */
  v[33] = 0;
  k[2] = 0xfc00u; /* -Inf, in a sink row too */
  ck_assert_int_eq(kvs__quantize_block(&b.p, k, v, 1, b.blk, b.rows), KVS_ENAN);
  k[2] = 0;
  b.p.dtype = KVS_DTYPE_BF16;
  k[5] = 0x7f80u;
  ck_assert_int_eq(kvs__quantize_block(&b.p, k, v, 0, b.blk, b.rows), KVS_ENAN);
  k[5] = kvs__f32_to_bf16(1e30f); /* finite bf16, but no fp16 scale holds it */
  ck_assert_int_eq(kvs__quantize_block(&b.p, k, v, 0, b.blk, b.rows), -ERANGE);
  b.p.dtype = KVS_DTYPE_F16;
  ck_assert_int_eq(kvs__quantize_block(&b.p, k, v, 1ull << 4, b.blk, b.rows), -EINVAL); /* row >= G */
  ck_assert_int_eq(kvs__quantize_block(&b.p, k, v, 1, b.blk, NULL), -EINVAL);
  kvs__qparams p = mkp(G, C, 8, 4, 4, 0, 0, KVS_DTYPE_F16);
  p.k_bits = 5; ck_assert_int_eq(kvs__qparams_check(&p), -EINVAL); p.k_bits = 4;
  p.v_group = 5; ck_assert_int_eq(kvs__qparams_check(&p), -EINVAL); p.v_group = 8;
  p.group = 0; ck_assert_int_eq(kvs__qparams_check(&p), -EINVAL); p.group = 65;
  ck_assert_int_eq(kvs__qparams_check(&p), -EINVAL); p.group = 64;
  p.dtype = 3; ck_assert_int_eq(kvs__qparams_check(&p), -EINVAL); p.dtype = KVS_DTYPE_F16;
  p.k_outliers = 2; ck_assert_int_eq(kvs__qparams_check(&p), -EINVAL); /* > 5% of 16 */
  p.k_outliers = 1; ck_assert_int_eq(kvs__qparams_check(&p), 0);
  /* header mismatch on dequantize */
  ck_assert_int_eq(kvs__quantize_block(&b.p, k, v, 0, b.blk, b.rows), 0);
  p = b.p; p.k_bits = 2;
  ck_assert_int_eq(kvs__dequantize_block(&p, b.blk, NULL, 0, G, b.ko, b.vo), -EINVAL);
  ck_assert_int_eq(kvs__dequantize_block(&b.p, b.blk, NULL, 2, 5, b.ko, b.vo), -EINVAL);
  qb_free(&b);
}
END_TEST

START_TEST(quant_layout_and_bpe)
{
  ck_assert_uint_eq(kvs__outlier_count(1024, 0.f), 0);
  ck_assert_uint_eq(kvs__outlier_count(1024, -1.f), 0);
  ck_assert_uint_eq(kvs__outlier_count(1024, NAN), 0);
  ck_assert_uint_eq(kvs__outlier_count(1024, 0.01f), 11);
  ck_assert_uint_eq(kvs__outlier_count(1000, 0.001f), 1);
  ck_assert_uint_eq(kvs__outlier_count(1024, 0.5f), 52); /* capped at 5% */
  kvs__qparams p = mkp(32, 1024, 128, 2, 2, 0, 0, KVS_DTYPE_F16);
  kvs__qlayout l;
  size_t t = kvs__qlayout_of(&p, &l);
  ck_assert_uint_eq(l.kstride, 256);
  ck_assert_uint_eq(l.kscale, 16);
  ck_assert_uint_eq(l.kmin, 16 + 2048);
  ck_assert_uint_eq(l.kcodes, 16 + 4096);
  ck_assert_uint_eq(l.vscale, l.kcodes + 32 * 256);
  ck_assert_uint_eq(l.vmin, l.vscale + 32 * 8 * 2);
  ck_assert_uint_eq(l.vcodes, l.vmin + 32 * 8 * 2);
  ck_assert_uint_eq(l.kout, l.vcodes + 32 * 256);
  ck_assert_uint_eq(l.vout, l.kout);
  ck_assert_uint_eq(t, l.vout);
  double b2 = kvs__bits_per_element(&p, 0);
  ck_assert(b2 > 2.0 && b2 < 2.7);
  ck_assert(kvs__bits_per_element(&p, 1) > b2);
  p.k_bits = p.v_bits = 16;
  p.k_outliers = 10; /* ignored for passthrough */
  t = kvs__qlayout_of(&p, &l);
  ck_assert_uint_eq(l.kstride, 2048);
  ck_assert_uint_eq(l.vout, t);
  double b16 = kvs__bits_per_element(&p, 0);
  ck_assert(b16 >= 16.0 && b16 < 17.0); /* scale sections stay, zeroed */
  p.k_bits = p.v_bits = 4;
  double b4 = kvs__bits_per_element(&p, 0);
  ck_assert(b4 > 4.0 + 10 * 32.0 / 1024 && b4 < 5.5);
  p.channels = 15; p.v_group = 15; p.k_bits = 3; p.k_outliers = 0;
  kvs__qlayout_of(&p, &l);
  ck_assert_uint_eq(l.kstride, 8);
  ck_assert(l.kmin % 16 == 0 && l.kcodes % 16 == 0 && l.vscale % 16 == 0 && l.vcodes % 16 == 0 && l.total % 16 == 0);
}
END_TEST

START_TEST(quant_bf16)
{
  uint32_t G = 16, C = 64;
  qbuf b;
  qb_init(&b, mkp(G, C, 32, 4, 2, 1, 1, KVS_DTYPE_BF16));
  uint16_t *k = malloc(G * C * 2), *v = malloc(G * C * 2);
  fill(k, G * C, -100.f, 100.f, KVS_DTYPE_BF16);
  fill(v, G * C, -1.f, 3.f, KVS_DTYPE_BF16);
  ck_assert_int_eq(qb_run(&b, k, v, 1ull << 15), 0);
  check_block(&b, k, v, 1ull << 15);
  free(k); free(v);
  qb_free(&b);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("quant");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, half_f16_exhaustive);
  tcase_add_test(tc, half_f32_rounding);
  tcase_add_test(tc, quant_error_bound);
  tcase_add_test(tc, quant_sinks_and_outliers);
  tcase_add_test(tc, quant_odd_sizes);
  tcase_add_test(tc, quant_constant_and_all_sink);
  tcase_add_test(tc, quant_rejects);
  tcase_add_test(tc, quant_layout_and_bpe);
  tcase_add_test(tc, quant_bf16);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
