/* SPDX-License-Identifier: MIT */
/* The store's own time per bulk put and get, without a GPU: what kvsinkd
 * spends on the host around the kernels for the shape of issue 11's
 * benchmark (1,024 tokens x 32 layers x 8 KV heads x 128, G = 32, PFN 1:
 * 1,024 blocks per put), phase by phase (kvs__store_prof).
 *   bench_put [ITERS [BITS [POOL_MIB [null|host [cold]]]]]
 *   (defaults 20, 16, 1024, both; cold: no filling first)
 * Two backends: "null", a device-path backend whose kernels do nothing
 * (so only the bookkeeping is timed: hashing, index, slots, items), and
 * "host", the C reference (the real quantize on the CPU). Each iteration
 * puts a new sequence of new token ids, gets it back and frees it, as
 * tests/gpu/devseg_test bench does. Untimed puts first fill the pool until
 * blocks are evicted, so the timed ones see a daemon's steady state
 * (blocks recycled, a full index). Prints figures only (no pass/fail):
 * `make check` builds it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/half.h"
#include "store/store.h"

static int null_quantize_n(kvs__backend *b, const kvs__qparams *p, const kvs__qitem *it, uint32_t n)
{
  (void)b, (void)p, (void)it, (void)n;
  return 0;
}

static int null_dequantize_n(kvs__backend *b, const kvs__qparams *p, const kvs__dqitem *it,
                             uint32_t n)
{
  (void)b, (void)p, (void)it, (void)n;
  return 0;
}

static int null_wait(kvs__backend *b)
{
  (void)b;
  return 0;
}

static double now(void)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void run(const char *name, kvs__backend *be, int dev, int iters, uint32_t bits,
                size_t pool_mib, int cold)
{
  const uint32_t L = 32, H = 8, D = 128, C = H * D, n = 1024;
  kvs__store *s = NULL;
  kvs__store_opts o = {.pool_bytes = pool_mib << 20, .backend = be};
  if (kvs__store_init(&s, &o) < 0) {
    fprintf(stderr, "store init failed\n");
    exit(1);
  }
  kvs__space_key key;
  memset(&key, 0, sizeof key);
  strcpy(key.ns, "uid:1000");
  strcpy(key.model_id, "bench");
  key.n_layers = L;
  key.n_kv_heads = H;
  key.head_dim = D;
  key.dtype = KVS_DTYPE_F16;
  key.group = 32;
  key.k_bits = key.v_bits = bits;
  key.policy = KVS_POLICY_PFN;
  key.pfn = 1;
  key.v_group = 32;
  kvs__space *sp;
  if (kvs__space_ref(s, &key, NULL, &sp) < 0) {
    fprintf(stderr, "space failed\n");
    exit(1);
  }
  size_t e = (size_t)L * n * C;
  uint16_t *k = malloc(e * 2), *v = malloc(e * 2), *ko = malloc(e * 2), *vo = malloc(e * 2);
  uint32_t *tok = malloc(n * sizeof *tok), seed = 7;
  if (!k || !v || !ko || !vo || !tok) {
    fprintf(stderr, "out of memory\n");
    exit(1);
  }
  uint16_t val[4000];
  for (uint32_t i = 0; i < 4000; i++) val[i] = kvs__f32_to_f16((float)i / 1000.0f - 2.0f);
  for (size_t i = 0; i < e; i++) {
    seed = seed * 1664525u + 1013904223u;
    k[i] = val[(seed >> 8) % 4000];
    v[i] = val[(seed >> 12) % 4000];
  }
  kvs__store_prof prof;
  memset(&prof, 0, sizeof prof);
  double tput = 0, tget = 0;
  char err[KVS_STORE_ERRMSG];
  int warm = !cold;
  for (int it = 0; it <= iters; it++) {
    kvs__seq *q;
    static uint32_t base;
    for (uint32_t i = 0; i < n; i++) tok[i] = base + i;
    base += n;
    if (kvs__seq_new(sp, &q) < 0) exit(1);
    if (warm) {
      kvs__store_stats w;
      kvs__store_stats_get(s, &w);
      warm = w.evictions == 0 && base < (1u << 30);
      it = 0;
    }
    kvs__store_set_prof(s, it ? &prof : NULL); /* untimed until full, and one more */
    double t0 = now();
    int r = (dev ? kvs__seq_put_dev : kvs__seq_put)(q, 0, tok, n, 0, L, k, v, NULL, 0, NULL, err);
    double t1 = now();
    if (r == 0) r = (dev ? kvs__seq_get_dev : kvs__seq_get)(q, 0, n, 0, L, ko, vo, err);
    double t2 = now();
    if (r < 0) {
      fprintf(stderr, "%s: %d (%s)\n", name, r, err);
      exit(1);
    }
    kvs__seq_free(q);
    if (it) {
      tput += t1 - t0;
      tget += t2 - t1;
    }
  }
  kvs__store_set_prof(s, NULL);
  kvs__store_stats st;
  kvs__store_stats_get(s, &st);
  printf("%-5s %2u bits: put %8.1f us (%6.1f ns/block) | get %8.1f us (%6.1f ns/block) | "
         "%llu evictions\n",
         name, bits, 1e6 * tput / iters, 1e9 * tput / iters / (double)(prof.put_blocks / iters),
         1e6 * tget / iters, 1e9 * tget / iters / (double)(prof.get_blocks / iters),
         (unsigned long long)st.evictions);
  printf("      ");
  for (int p = 0; p < KVS_PROF_N; p++)
    if (prof.calls[p])
      printf(" %s %.1f", kvs__store_prof_name(p), (double)prof.ns[p] / 1e3 / iters);
  printf("  (us per op)\n");
  kvs__space_unref(sp);
  kvs__store_close(s);
  free(k);
  free(v);
  free(ko);
  free(vo);
  free(tok);
}

int main(int argc, char **argv)
{
  int iters = argc > 1 ? atoi(argv[1]) : 20;
  uint32_t bits = argc > 2 ? (uint32_t)atoi(argv[2]) : 16;
  size_t pool = argc > 3 ? (size_t)atol(argv[3]) : 1024;
  if (iters < 1) iters = 1;
  kvs__backend null = kvs__backend_host;
  null.name = "null";
  null.dev_io = 1;
  null.quantize_n = null_quantize_n;
  null.dequantize_n = null_dequantize_n;
  null.quantize_start = null_quantize_n; /* the queued path, as the CUDA backend's */
  null.quantize_wait = null_wait;
  const char *only = argc > 4 ? argv[4] : "";
  int cold = argc > 5 && !strcmp(argv[5], "cold");
  if (strcmp(only, "host")) run("null", &null, 1, iters, bits, pool, cold);
  if (strcmp(only, "null"))
    run("host", &kvs__backend_host, 0, iters > 5 ? 5 : iters, bits, pool, cold);
  return 0;
}
