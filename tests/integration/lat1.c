/* SPDX-License-Identifier: MIT */
/* lat1 SOCK [ITERS [LAYERS [BITS]]]: the decode-step round trip through a host
 * segment, without a GPU: median and p99 of a ping, a 1-token put (LAYERS
 * x 8 KV heads x 128, fp16, K and V; default 32 layers, 4 bits) and a get,
 * and where the slow ones are (every G-th put completes a block per layer).
 * The host-segment twin of tests/gpu/devseg_test's latency mode; built on
 * demand (make tests/integration/lat1), not part of make check. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <kvsink.h>

static double now(void)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e6 + (double)t.tv_nsec * 1e-3;
}

static int cmpd(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void say(const char *what, double *v, int n)
{
  qsort(v, (size_t)n, sizeof *v, cmpd);
  printf("  %-8s median %8.1f us  p90 %8.1f  p99 %8.1f  max %8.1f\n", what, v[n / 2],
         v[n * 9 / 10], v[n * 99 / 100], v[n - 1]);
}

int main(int argc, char **argv)
{
  if (argc < 2) {
    fprintf(stderr, "usage: lat1 SOCK [ITERS [LAYERS [BITS]]]\n");
    return 2;
  }
  int iters = argc > 2 ? atoi(argv[2]) : 2000;
  uint32_t L = argc > 3 ? (uint32_t)atoi(argv[3]) : 32;
  int bits = argc > 4 ? atoi(argv[4]) : 4;
  if (iters < 100 || L == 0 || !KVS_BITS_VALID(bits)) return 2;
  kvs_model m = {"lat1", L, 8, 128, KVS_DTYPE_F16};
  kvs_options o;
  kvs_options_init(&o);
  o.k_bits = o.v_bits = bits;
  o.policy = KVS_POLICY_PFN;
  o.pfn = 1;
  o.outliers = 0;
  o.seg_size = 4u << 20;
  char salt[32];
  o.salt_len = (size_t)snprintf(salt, sizeof salt, "lat1-%d", (int)getpid());
  memcpy(o.salt, salt, o.salt_len);
  kvs_client *c;
  int r = kvs_connect(&c, argv[1], &m, &o);
  if (r < 0) {
    fprintf(stderr, "connect: %s\n", kvs_strerror(r));
    return 1;
  }
  size_t b = kvs_kv_bytes(c, 1, 0, L);
  uint16_t *seg = kvs_segment(c, NULL);
  for (size_t i = 0; i < b; i++) seg[i] = 0x3c00; /* fp16 1.0, K and V */
  double *tp = malloc(sizeof(double) * (size_t)iters), *tg = malloc(sizeof(double) * (size_t)iters),
         *tq = malloc(sizeof(double) * (size_t)iters), *tt = malloc(sizeof(double) * (size_t)iters);
  int slow = 0;
  double slow_us = 0;
  for (int i = 0; i < iters; i++) {
    uint32_t tok = (uint32_t)i;
    kvs_put_args a = {.seq = 1, .start = (uint32_t)i, .tokens = &tok, .n_tokens = 1,
                      .layer_end = L, .k_off = 0, .v_off = b};
    double t0 = now();
    r = kvs_put(c, &a, NULL);
    double t1 = now();
    if (r == 0) r = kvs_get(c, 1, (uint32_t)i, 1, 0, L, 2 * b, 3 * b);
    double t2 = now();
    if (r == 0) r = kvs_ping(c);
    double t3 = now();
    if (r < 0) {
      fprintf(stderr, "#%d: %s (%s)\n", i, kvs_strerror(r), kvs_last_error(c));
      return 1;
    }
    tp[i] = t1 - t0;
    tg[i] = t2 - t1;
    tq[i] = t3 - t2;
    tt[i] = t2 - t0;
    if (tp[i] > slow_us) {
      slow_us = tp[i];
      slow = i;
    }
  }
  printf("lat1: %d iterations, 1 token x %u layers x 8 x 128 fp16 (K+V %zu bytes), %d bits, "
         "host segment\n", iters, L, 2 * b, bits);
  say("ping", tq, iters);
  say("put", tp, iters);
  say("get", tg, iters);
  say("put+get", tt, iters);
  printf("  slowest put: #%d (%.0f us; a group is G = %u tokens)\n", slow, slow_us,
         kvs_get_info(c)->group);
  kvs_close(c);
  return 0;
}
