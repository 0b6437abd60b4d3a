/* bench_quant: host quantize / dequantize throughput of one block shape,
 * next to memcpy of the same bytes, and sink prediction's cost relative to
 * quantization. Usage: bench_quant [G C vg] (default 32 1024 128). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/half.h"
#include "kernels/quant.h"
#include "kernels/sink.h"

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

/* Seconds per call of fn, run for about `budget` seconds. */
#define TIME_IT(budget, per_call, body)                                  \
  do {                                                                   \
    unsigned n_ = 0;                                                     \
    double t0_ = now(), t_;                                              \
    do { body; n_++; t_ = now() - t0_; } while (t_ < (budget));          \
    (per_call) = t_ / n_;                                                \
  } while (0)

int main(int argc, char **argv)
{
  uint32_t G = 32, C = 1024, vg = 128;
  if (argc == 4) { G = (uint32_t)atoi(argv[1]); C = (uint32_t)atoi(argv[2]); vg = (uint32_t)atoi(argv[3]); }
  size_t n = (size_t)G * C, bytes = 2u * n * 2u; /* K and V, 16-bit */
  uint16_t *k = malloc(n * 2), *v = malloc(n * 2), *ko = malloc(n * 2), *vo = malloc(n * 2);
  uint8_t *cpy = malloc(bytes), *src = malloc(bytes);
  if (!k || !v || !ko || !vo || !cpy || !src) return 1;
  for (size_t i = 0; i < n; i++) { k[i] = kvs__f32_to_f16(4 * frand()); v[i] = kvs__f32_to_f16(frand()); }
  memcpy(src, k, n * 2);
  memcpy(src + n * 2, v, n * 2);
  double t_cpy;
  TIME_IT(0.3, t_cpy, { memcpy(cpy, src, bytes); src[0] ^= cpy[1]; });
  printf("block G=%u C=%u vg=%u, %zu bytes of 16-bit K+V per block\n", G, C, vg, bytes);
  printf("memcpy            %8.2f GB/s\n", bytes / t_cpy / 1e9);
  static const uint32_t bits[] = { 2, 4 };
  for (int bi = 0; bi < 2; bi++) {
    kvs__qparams p = { G, C, vg, bits[bi], bits[bi], 0, 0, KVS_DTYPE_F16 };
    kvs__qlayout l;
    void *blk = malloc(kvs__qlayout_of(&p, &l));
    double tq, td;
    TIME_IT(0.5, tq, { if (kvs__quantize_block(&p, k, v, 0, blk, NULL)) return 1; });
    TIME_IT(0.5, td, { if (kvs__dequantize_block(&p, blk, NULL, 0, G, ko, vo)) return 1; });
    printf("%u-bit quantize    %8.2f GB/s (%.1f us/block)\n", bits[bi], bytes / tq / 1e9, tq * 1e6);
    printf("%u-bit dequantize  %8.2f GB/s (%.1f us/block)\n", bits[bi], bytes / td / 1e9, td * 1e6);
    if (bi == 0) {
      /* prediction for the same G tokens, 8 summary channels (the default
       * max of C*); done once per token, quantization once per layer */
      float act[64 * 8];
      uint8_t flags[64];
      for (uint32_t i = 0; i < G * 8; i++) act[i] = frand();
      act[3] = 100.f;
      double tp;
      TIME_IT(0.3, tp, { memset(flags, 0, G); if (kvs__predict_sinks(act, G, 8, 10.f, 16, flags) < 0) return 1; });
      printf("predict_sinks     %.3f us per %u tokens = %.3f%% of one layer's 2-bit quantize\n", tp * 1e6, G,
             100.0 * tp / tq);
    }
    free(blk);
  }
  free(k); free(v); free(ko); free(vo); free(cpy); free(src);
  return 0;
}
