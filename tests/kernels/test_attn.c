/* SPDX-License-Identifier: MIT */
/* Decode attention over compressed blocks (kernels/attn.c) against
 * dequantize-then-attend: kvs__dequantize_block, then attention in double.
 * Random data with planted sinks (large rows flagged as sinks) and planted
 * outliers (large elements the outlier picker keeps), every width, several
 * G, GQA ratios 1 and 4, odd and zero residuals, a single block, and no
 * block at all (residual only). */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/attn.h"
#include "kernels/half.h"
#include "kernels/quant.h"

static uint64_t rng_s = 0x243f6a8885a308d3ull;
static uint32_t rnd(void)
{
  rng_s ^= rng_s << 13; rng_s ^= rng_s >> 7; rng_s ^= rng_s << 17;
  return (uint32_t)(rng_s >> 11);
}
static double unif(void) { return ((double)(rnd() & 0xffffff) + 0.5) / 16777216.0; }
static float gauss(void) { return (float)(sqrt(-2.0 * log(unif())) * cos(6.283185307179586 * unif())); }

/* One sequence's data, kept for the double-precision side. */
struct tseq {
  uint32_t nb, nres;
  uint16_t *k, *v;          /* [nb*G + nres][C] as given to the quantizer */
  void **blk;               /* quantized parts */
  uint16_t **rows;          /* all sink rows of the seq */
  uint16_t ***rowp;         /* per block: its sink-row pointers */
  kvs__attn_block *views;
  kvs__attn_seq view;
};

struct tcase {
  uint32_t kb, vb, G, vg, kvh, d, g, out_frac_permille;
  kvs_dtype dt;
};

/* Fills K/V [n][C] with N(0,1) rows; rows flagged are sinks scaled by 8
 * (as massive-activation tokens are), and about one element in 64 of
 * the others by 10 (outliers). */
static void fill(uint16_t *x, uint32_t n, uint32_t C, const uint8_t *sink, int dt)
{
  for (uint32_t t = 0; t < n; t++)
    for (uint32_t c = 0; c < C; c++) {
      float f = gauss();
      if (sink[t]) f = 8.f * f + 4.f;
      else if ((rnd() & 63u) == 0) f *= 10.f;
      x[(size_t)t * C + c] = kvs__f32_to_h(f, dt);
    }
}

static void build(const struct tcase *tc, const kvs__qparams *p, uint32_t nb, uint32_t nres, struct tseq *s)
{
  const uint32_t G = p->group, C = p->channels, T = nb * G + nres;
  kvs__qlayout l;
  size_t tot = kvs__qlayout_of(p, &l);
  s->nb = nb;
  s->nres = nres;
  s->k = malloc(sizeof(uint16_t) * ((size_t)T * C + 1));
  s->v = malloc(sizeof(uint16_t) * ((size_t)T * C + 1));
  uint8_t *sink = calloc(T + 1, 1);
  /* token 0 always (PFN-1), then about one in eight; never in the residual */
  for (uint32_t t = 0; t < nb * G; t++) sink[t] = t == 0 || (rnd() & 7u) == 0;
  fill(s->k, T, C, sink, (int)tc->dt);
  fill(s->v, T, C, sink, (int)tc->dt);
  s->blk = calloc(nb + 1, sizeof *s->blk);
  s->rows = calloc((size_t)nb * G + 1, sizeof *s->rows);
  s->rowp = calloc(nb + 1, sizeof *s->rowp);
  s->views = calloc(nb + 1, sizeof *s->views);
  for (uint32_t b = 0; b < nb; b++) {
    uint64_t mask = 0;
    uint32_t ns = 0;
    for (uint32_t r = 0; r < G; r++)
      if (sink[b * G + r]) mask |= 1ull << r;
    s->rowp[b] = calloc(G + 1, sizeof(uint16_t *));
    for (uint32_t r = 0; r < G; r++)
      if ((mask >> r) & 1u) {
        s->rows[b * G + r] = malloc(kvs__sink_row_bytes(p));
        s->rowp[b][ns++] = s->rows[b * G + r];
      }
    s->blk[b] = malloc(tot);
    int rc = kvs__quantize_block(p, s->k + (size_t)b * G * C, s->v + (size_t)b * G * C, mask, s->blk[b],
                                 s->rowp[b]);
    ck_assert_int_eq(rc, 0);
    s->views[b] = (kvs__attn_block){s->blk[b], (const uint16_t *const *)s->rowp[b], mask};
  }
  s->view = (kvs__attn_seq){s->views, nb, nres, s->k + (size_t)nb * G * C, s->v + (size_t)nb * G * C};
  free(sink);
}

static void drop(struct tseq *s, uint32_t G)
{
  for (uint32_t b = 0; b < s->nb; b++) { free(s->blk[b]); free(s->rowp[b]); }
  for (uint32_t i = 0; i < s->nb * G; i++) free(s->rows[i]);
  free(s->blk); free(s->rows); free(s->rowp); free(s->views); free(s->k); free(s->v);
}

/* Dequantize-then-attend in double for one sequence; returns in out
 * [n_q_heads][d] and the largest |v| per KV head in vmax. */
static void ref_attend(const struct tcase *tc, const kvs__qparams *p, const struct tseq *s, const float *q,
                       double *out, double *vmax)
{
  const uint32_t G = p->group, C = p->channels, T = s->nb * G + s->nres, d = tc->d;
  uint16_t *k = malloc(sizeof(uint16_t) * ((size_t)T * C + 1)), *v = malloc(sizeof(uint16_t) * ((size_t)T * C + 1));
  for (uint32_t b = 0; b < s->nb; b++)
    ck_assert_int_eq(kvs__dequantize_block(p, s->blk[b], (const uint16_t *const *)s->rowp[b], 0, G,
                                           k + (size_t)b * G * C, v + (size_t)b * G * C), 0);
  memcpy(k + (size_t)s->nb * G * C, s->view.res_k, sizeof(uint16_t) * s->nres * C);
  memcpy(v + (size_t)s->nb * G * C, s->view.res_v, sizeof(uint16_t) * s->nres * C);
  double *sc = malloc(sizeof(double) * (T + 1));
  for (uint32_t h = 0; h < tc->kvh * tc->g; h++) {
    uint32_t j = h / tc->g;
    double mx = -INFINITY, sum = 0;
    vmax[j] = 0;
    for (uint32_t t = 0; t < T; t++) {
      double dot = 0;
      for (uint32_t c = 0; c < d; c++)
        dot += (double)q[(size_t)h * d + c] * kvs__h_to_f32(k[(size_t)t * C + j * d + c], (int)tc->dt);
      sc[t] = dot / sqrt((double)d);
      if (sc[t] > mx) mx = sc[t];
    }
    for (uint32_t t = 0; t < T; t++) { sc[t] = exp(sc[t] - mx); sum += sc[t]; }
    for (uint32_t c = 0; c < d; c++) {
      double a = 0;
      for (uint32_t t = 0; t < T; t++) {
        double x = kvs__h_to_f32(v[(size_t)t * C + j * d + c], (int)tc->dt);
        a += sc[t] * x;
        if (fabs(x) > vmax[j]) vmax[j] = fabs(x);
      }
      out[(size_t)h * d + c] = T ? a / sum : 0.0;
    }
  }
  free(sc); free(k); free(v);
}

/* Runs one case over a batch of sequences of the given (blocks, residual)
 * lengths; returns the largest error seen relative to max |v|.
 *
 * Tolerance: both sides attend over the same dequantized values (fp32
 * holds every fp16/bf16 exactly), so the only differences are the fp32
 * rounding of the reference: a score is a d-term dot product, error below
 * d * 2^-24 * sum|q_c k_c| (at most about 1e-3 here, where sink rows are
 * 8x larger and q . k is largest, and far less in practice as the roundings do not line up);
 * a score error e moves the output by at most e * max|v| (the softmax
 * weights change by a factor exp(e) ~ 1 + e); the online softmax adds a
 * few 2^-24 per token. 2e-5 * max|v| is about ten times what is
 * observed (1.3e-6), and far below the smallest change a wrong code,
 * a lost outlier or a sink row read as quantized makes. */
#define TOL 2e-5

static double run_case(const struct tcase *tc, const uint32_t (*lens)[2], uint32_t n)
{
  kvs__attn_shape sh = {0};
  sh.qp = (kvs__qparams){tc->G, tc->kvh * tc->d, tc->vg, tc->kb, tc->vb, 0, 0, tc->dt};
  sh.qp.k_outliers = kvs__outlier_count(sh.qp.channels, (float)tc->out_frac_permille / 1000.f);
  sh.qp.v_outliers = sh.qp.k_outliers;
  sh.n_kv_heads = tc->kvh;
  sh.n_q_heads = tc->kvh * tc->g;
  sh.head_dim = tc->d;
  ck_assert_int_eq(kvs__attn_shape_check(&sh), 0);
  const size_t qn = (size_t)sh.n_q_heads * tc->d;
  struct tseq *s = calloc(n, sizeof *s);
  kvs__attn_seq *views = calloc(n, sizeof *views);
  float *q = malloc(sizeof(float) * qn * n), *out = malloc(sizeof(float) * qn * n);
  double *ref = malloc(sizeof(double) * qn), vmax[64], worst = 0;
  for (size_t i = 0; i < qn * n; i++) q[i] = gauss();
  for (uint32_t i = 0; i < n; i++) {
    build(tc, &sh.qp, lens[i][0], lens[i][1], &s[i]);
    views[i] = s[i].view;
  }
  ck_assert_int_eq(kvs__attn_decode(&sh, views, n, q, out), 0);
  for (uint32_t i = 0; i < n; i++) {
    ref_attend(tc, &sh.qp, &s[i], q + qn * i, ref, vmax);
    for (size_t e = 0; e < qn; e++) {
      uint32_t j = (uint32_t)(e / tc->d) / tc->g;
      double err = fabs((double)out[qn * i + e] - ref[e]) / (vmax[j] > 0 ? vmax[j] : 1.0);
      if (err > worst) worst = err;
      if (err > TOL)
        ck_abort_msg("k%u v%u G%u vg%u g%u d%u dt%d seq %u (blocks %u res %u) elem %zu: %.9g vs %.9g (err %.3g)",
                     tc->kb, tc->vb, tc->G, tc->vg, tc->g, tc->d, (int)tc->dt, i, lens[i][0], lens[i][1], e,
                     (double)out[qn * i + e], ref[e], err);
    }
  }
  for (uint32_t i = 0; i < n; i++) drop(&s[i], tc->G);
  free(s); free(views); free(q); free(out); free(ref);
  return worst;
}

/* Lengths: several blocks with an odd residual, zero residual, a single
 * block, residual only, and an empty sequence (gives zeros). */
static const uint32_t LENS[][2] = {{5, 7}, {3, 0}, {1, 0}, {0, 9}, {2, 1}, {0, 0}};
#define NLENS (sizeof LENS / sizeof LENS[0])

START_TEST(attn_widths)
{
  static const uint32_t bits[][2] = {{2, 2}, {3, 3}, {4, 4}, {8, 8}, {16, 16}, {2, 4}, {4, 2}, {3, 16}};
  double worst = 0;
  for (unsigned i = 0; i < sizeof bits / sizeof bits[0]; i++)
    for (uint32_t g = 1; g <= 4; g += 3) {
      struct tcase tc = {bits[i][0], bits[i][1], 32, 64, 2, 64, g, 10, KVS_DTYPE_F16};
      double w = run_case(&tc, LENS, NLENS);
      if (w > worst) worst = w;
    }
  printf("attn_widths: worst error %.3g of max|v| (tolerance %g)\n", worst, TOL);
  ck_assert(worst < TOL);
}
END_TEST

START_TEST(attn_groups_and_shapes)
{
  /* G from 1 to 64; value groups of 8 and of a whole row; head dim 128 */
  static const struct tcase cases[] = {
    {2, 2, 8, 8, 2, 32, 4, 10, KVS_DTYPE_F16},
    {3, 3, 7, 32, 2, 32, 1, 10, KVS_DTYPE_BF16},
    {4, 4, 64, 256, 2, 128, 4, 10, KVS_DTYPE_F16},
    {2, 3, 1, 16, 1, 64, 4, 0, KVS_DTYPE_BF16},
    {4, 2, 32, 128, 4, 128, 4, 0, KVS_DTYPE_F16},
    {8, 4, 17, 32, 2, 96, 1, 50, KVS_DTYPE_BF16},
  };
  for (unsigned i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i], LENS, NLENS);
}
END_TEST

/* The comparison can tell: one changed outlier moves the output far
 * outside TOL; headers or masks that disagree with the shape are refused. */
START_TEST(attn_detects_corruption)
{
  struct tcase tc = {4, 4, 32, 64, 1, 64, 1, 10, KVS_DTYPE_F16};
  kvs__attn_shape sh = {0};
  sh.qp = (kvs__qparams){tc.G, tc.d, tc.vg, tc.kb, tc.vb, 0, 0, tc.dt};
  sh.qp.k_outliers = sh.qp.v_outliers = kvs__outlier_count(tc.d, 0.01f);
  sh.n_kv_heads = 1; sh.n_q_heads = 1; sh.head_dim = tc.d;
  struct tseq s;
  build(&tc, &sh.qp, 2, 3, &s);
  /* q = 0: every token weighs the same, so one changed value shows */
  float q[64] = {0}, a[64], b[64];
  ck_assert_int_eq(kvs__attn_decode(&sh, &s.view, 1, q, a), 0);
  /* a V outlier of row 1 of block 0 (row 0 is a sink) changes value */
  kvs__qlayout l;
  kvs__qlayout_of(&sh.qp, &l);
  uint32_t *e = (uint32_t *)((uint8_t *)s.blk[0] + l.vout) + sh.qp.v_outliers;
  if (!((s.views[0].sink_mask >> 1) & 1u)) {
    uint32_t old = *e;
    *e = (old & 0xffffu) | ((uint32_t)kvs__f32_to_f16(kvs__f16_to_f32((uint16_t)(old >> 16)) + 50.f) << 16);
    ck_assert_int_eq(kvs__attn_decode(&sh, &s.view, 1, q, b), 0);
    double diff = 0;
    for (int i = 0; i < 64; i++) diff = fmax(diff, fabs((double)a[i] - b[i]));
    ck_assert(diff > 10 * TOL);
    *e = old;
  }
  /* a header that disagrees with the shape, or a view mask that disagrees
   * with the header */
  ((kvs__qhdr *)s.blk[1])->k_bits = 2;
  ck_assert_int_eq(kvs__attn_decode(&sh, &s.view, 1, q, b), -EINVAL);
  ((kvs__qhdr *)s.blk[1])->k_bits = 4;
  s.views[0].sink_mask ^= 2u;
  ck_assert_int_eq(kvs__attn_decode(&sh, &s.view, 1, q, b), -EINVAL);
  s.views[0].sink_mask ^= 2u;
  /* a bad shape */
  sh.n_q_heads = 3; sh.n_kv_heads = 2;
  ck_assert_int_eq(kvs__attn_decode(&sh, &s.view, 1, q, b), -EINVAL);
  drop(&s, tc.G);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("attn");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, attn_widths);
  tcase_add_test(tc, attn_groups_and_shapes);
  tcase_add_test(tc, attn_detects_corruption);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int nf = srunner_ntests_failed(sr);
  srunner_free(sr);
  return nf ? 1 : 0;
}
