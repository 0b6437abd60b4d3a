/* SPDX-License-Identifier: MIT */
/* bench_quant: host quantize / dequantize throughput of one block shape at
 * every width, next to memcpy of the same bytes, and sink prediction's cost
 * relative to quantization.
 * Usage: bench_quant [G C vg [outlier_fraction [sink_mask [bf16]]]]
 * (default 32 1024 128 0 0: fp16, no outliers, no sinks).
 * Each figure is the median of REPS timed runs of about 20 ms (the host
 * may be shared: medians, with the best run next to them). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/half.h"
#include "kernels/quant.h"
#include "kernels/sink.h"

#define REPS 11

static double now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t rs = 88172645463325252ull;
static float frand(void)
{
  rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17;
  return (float)(rs >> 40) / 16777216.0f * 2.f - 1.f;
}

static int cmp_d(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Seconds per call of body: median (and best) of REPS runs of ~budget. */
#define TIME_IT(budget, med, best, body)                                 \
  do {                                                                   \
    double s_[REPS];                                                     \
    for (int r_ = 0; r_ < REPS; r_++) {                                  \
      unsigned n_ = 0;                                                   \
      double t0_ = now(), t_;                                            \
      do { body; n_++; t_ = now() - t0_; } while (t_ < (budget));        \
      s_[r_] = t_ / n_;                                                  \
    }                                                                    \
    qsort(s_, REPS, sizeof *s_, cmp_d);                                  \
    (med) = s_[REPS / 2];                                                \
    (best) = s_[0];                                                      \
  } while (0)

int main(int argc, char **argv)
{
  uint32_t G = 32, C = 1024, vg = 128;
  float outl = 0.f;
  uint64_t mask = 0;
  kvs_dtype dt = KVS_DTYPE_F16;
  if (argc >= 4) { G = (uint32_t)atoi(argv[1]); C = (uint32_t)atoi(argv[2]); vg = (uint32_t)atoi(argv[3]); }
  if (argc >= 5) outl = (float)atof(argv[4]);
  if (argc >= 6) mask = strtoull(argv[5], NULL, 0);
  if (argc >= 7 && strcmp(argv[6], "bf16") == 0) dt = KVS_DTYPE_BF16;
  size_t n = (size_t)G * C, bytes = 2u * n * 2u; /* K and V, 16-bit */
  uint16_t *k = malloc(n * 2), *v = malloc(n * 2), *ko = malloc(n * 2), *vo = malloc(n * 2);
  uint8_t *cpy = malloc(bytes), *src = malloc(bytes);
  uint16_t *rows[64];
  for (int i = 0; i < 64; i++) rows[i] = malloc(4u * C);
  if (!k || !v || !ko || !vo || !cpy || !src || !rows[63]) return 1;
  for (size_t i = 0; i < n; i++) { k[i] = kvs__f32_to_h(4 * frand(), dt); v[i] = kvs__f32_to_h(frand(), dt); }
  memcpy(src, k, n * 2);
  memcpy(src + n * 2, v, n * 2);
  double t_cpy, b_cpy;
  TIME_IT(0.02, t_cpy, b_cpy, { memcpy(cpy, src, bytes); src[0] ^= cpy[1]; });
  uint32_t no = kvs__outlier_count(C, outl);
  printf("block G=%u C=%u vg=%u %s, %u outliers per row, sink mask %#llx; %zu bytes of 16-bit K+V per block\n", G,
         C, vg, dt == KVS_DTYPE_BF16 ? "bf16" : "fp16", no, (unsigned long long)mask, bytes);
  printf("memcpy            %8.2f GB/s (best %.2f)\n", bytes / t_cpy / 1e9, bytes / b_cpy / 1e9);
  static const uint32_t bits[] = { 2, 3, 4, 8, 16 };
  for (int bi = 0; bi < 5; bi++) {
    kvs__qparams p = { G, C, vg, bits[bi], bits[bi], no, no, dt };
    kvs__qlayout l;
    if (kvs__qparams_check(&p)) { fprintf(stderr, "bad params\n"); return 2; }
    void *blk = malloc(kvs__qlayout_of(&p, &l));
    double tq, td, bq, bd;
    TIME_IT(0.02, tq, bq, { if (kvs__quantize_block(&p, k, v, mask, blk, rows)) return 1; });
    TIME_IT(0.02, td, bd, { if (kvs__dequantize_block(&p, blk, (const uint16_t *const *)rows, 0, G, ko, vo)) return 1; });
    printf("%2u-bit quantize    %8.3f GB/s (%6.1f us/block, best %.3f GB/s)\n", bits[bi], bytes / tq / 1e9, tq * 1e6,
           bytes / bq / 1e9);
    printf("%2u-bit dequantize  %8.3f GB/s (%6.1f us/block, best %.3f GB/s)\n", bits[bi], bytes / td / 1e9, td * 1e6,
           bytes / bd / 1e9);
    if (bi == 0) {
      /* prediction for the same G tokens, 8 summary channels (the default
       * max of C*); done once per token, quantization once per layer */
      float act[64 * 8];
      uint8_t flags[64];
      for (uint32_t i = 0; i < G * 8; i++) act[i] = frand();
      act[3] = 100.f;
      double tp, bp;
      TIME_IT(0.005, tp, bp, { memset(flags, 0, G); if (kvs__predict_sinks(act, G, 8, 10.f, 16, flags) < 0) return 1; });
      (void)bp;
      printf("predict_sinks     %.3f us per %u tokens = %.3f%% of one layer's 2-bit quantize\n", tp * 1e6, G,
             100.0 * tp / tq);
    }
    free(blk);
  }
  free(k); free(v); free(ko); free(vo); free(cpy); free(src);
  for (int i = 0; i < 64; i++) free(rows[i]);
  return 0;
}
