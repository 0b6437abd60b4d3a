/* SPDX-License-Identifier: MIT */
/* GPU test and benchmark of kernels/quant.cu.
 *   gpu_test check   compare with the C reference (kernels/quant.c, sink.c)
 *   gpu_test bench   quantize / dequantize throughput vs cudaMemcpy D2D
 *   gpu_test prof    one launch of each at T=4096, 2 bits, for a profiler
 *   gpu_test launch  the host's time in a bulk put's launch calls (4 x 256
 *                    jobs, then a finish) per width, next to an empty
 *                    kernel with the same parameters, with and without
 *                    64 KB of dynamic shared memory
 * KVS_BENCH_T=N in the environment: bench (and prof) at T=N only.
 * Exit status 1 on any mismatch. Built by tests/gpu/run.sh. */
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <vector>
#include <algorithm>

#include <cuda_runtime.h>

#include "kernels/cuda.h"
extern "C" {
#include "kernels/half.h"
#include "kernels/sink.h"
}
#define LAYOUT kvs__qlayout_of

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { \
  fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); exit(2); } } while (0)

static uint64_t rng = 88172645463325252ull;
static uint64_t xr(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }
static float unif(void) { return (float)((xr() >> 11) * (1.0 / 9007199254740992.0)); }
static float gauss(void)
{
  /* u in (0, 1]: u > 1 would make the log positive and the root NaN */
  float u = 1.f - unif() * (1.f - 1e-7f), v = unif();
  return sqrtf(-2.f * logf(u)) * cosf(6.2831853f * v);
}

static int failures;
#define FAIL(...) do { failures++; printf("FAIL: " __VA_ARGS__); printf("\n"); } while (0)

static uint32_t get_code(const uint8_t *row, uint32_t i, uint32_t b)
{
  uint64_t p = (uint64_t)i * b, v = 0;
  for (uint32_t k = 0; k < 8 && (p >> 3) + k < (p >> 3) + 5; k++) v |= (uint64_t)row[(p >> 3) + k] << (8 * k);
  return (uint32_t)(v >> (p & 7)) & (b >= 32 ? 0xffffffffu : (1u << b) - 1u);
}

struct stats { uint64_t codes, off_by_one; };

/* One case: quantize on both sides, compare bytes; dequantize on both. */
static void one_case(const char *name, const kvs__qparams &p, const std::vector<uint16_t> &k,
                     const std::vector<uint16_t> &v, uint64_t mask, int expect_rc, stats &S,
                     bool misalign = false)
{
  kvs__qlayout l;
  if (kvs__qparams_check(&p)) { FAIL("%s: reference rejects params", name); return; }
  size_t tot = LAYOUT(&p, &l);
  uint32_t G = p.group, C = p.channels, ns = (uint32_t)__builtin_popcountll(mask);
  size_t rowb = kvs__sink_row_bytes(&p), plane = (size_t)G * C * 2;
  std::vector<uint8_t> rb(tot + 64, 0xa5), gb(tot + 64, 0x5a);
  std::vector<uint16_t> rrows(ns ? ns * rowb / 2 : 1), grows(ns ? ns * rowb / 2 : 1);
  std::vector<uint16_t *> rptr(ns ? ns : 1);
  for (uint32_t i = 0; i < ns; i++) rptr[i] = rrows.data() + i * rowb / 2;
  int rrc = kvs__quantize_block(&p, k.data(), v.data(), mask, rb.data(), ns ? rptr.data() : NULL);

  kvs__cuda_ctx ctx;
  if (kvs__cuda_ctx_init(&ctx)) { FAIL("ctx"); return; }
  uint8_t *dk, *dv, *dblk, *drows, *djob, *dptr, *dout;
  CK(cudaMalloc(&dk, plane + 16)); CK(cudaMalloc(&dv, plane)); CK(cudaMalloc(&dblk, tot + 64));
  CK(cudaMalloc(&drows, ns * rowb + 16)); CK(cudaMalloc(&djob, 256)); CK(cudaMalloc(&dptr, 64 * 8));
  CK(cudaMalloc(&dout, 2 * plane + 16));
  CK(cudaMemcpy(dk + (misalign ? 2 : 0), k.data(), plane, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dv, v.data(), plane, cudaMemcpyHostToDevice));
  CK(cudaMemset(dblk, 0x5a, tot + 64));
  std::vector<uint16_t *> dp(64);
  for (uint32_t i = 0; i < ns; i++) dp[i] = (uint16_t *)(drows + i * rowb);
  CK(cudaMemcpy(dptr, dp.data(), 64 * 8, cudaMemcpyHostToDevice));
  kvs__cuda_qjob qj = {(uint16_t *)(dk + (misalign ? 2 : 0)), (uint16_t *)dv, dblk, ns ? (uint16_t *const *)dptr : NULL, mask};
  CK(cudaMemcpy(djob, &qj, sizeof qj, cudaMemcpyHostToDevice));
  int grc = kvs__cuda_quantize(&ctx, &p, &l, (kvs__cuda_qjob *)djob, 1);
  if (rrc != expect_rc || grc != expect_rc) {
    FAIL("%s: rc reference %d gpu %d expected %d", name, rrc, grc, expect_rc);
    goto out;
  }
  if (rrc) goto out;
  CK(cudaMemcpy(gb.data(), dblk, tot + 64, cudaMemcpyDeviceToHost));
  if (ns) CK(cudaMemcpy(grows.data(), drows, ns * rowb, cudaMemcpyDeviceToHost));
  if (memcmp(rb.data() + tot, gb.data() + tot, 0) != 0 || gb[tot] != 0x5a) FAIL("%s: gpu wrote past block end", name);
  if (ns && memcmp(rrows.data(), grows.data(), ns * rowb)) FAIL("%s: sink rows differ", name);
  {
    /* everything but codes bytewise; codes elementwise within one step */
    std::vector<uint8_t> mk(tot, 1);
    for (size_t i = l.kcodes; i < l.kcodes + G * l.kstride; i++) mk[i] = 0;
    for (size_t i = l.vcodes; i < l.vcodes + G * l.vstride; i++) mk[i] = 0;
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < tot; i++)
      if (mk[i] && rb[i] != gb[i]) { if (!bad) first = i; bad++; }
    if (bad) FAIL("%s: %zu metadata/outlier bytes differ (first at %zu: ref %02x gpu %02x)", name, bad, first, rb[first], gb[first]);
    for (int side = 0; side < 2; side++) {
      size_t off = side ? l.vcodes : l.kcodes, st = side ? l.vstride : l.kstride;
      uint32_t b = side ? p.v_bits : p.k_bits;
      for (uint32_t r = 0; r < G; r++) {
        const uint8_t *a = rb.data() + off + r * st, *g = gb.data() + off + r * st;
        for (uint32_t c = 0; c < C; c++) {
          uint32_t ca = get_code(a, c, b), cg = get_code(g, c, b);
          S.codes++;
          if (ca == cg) continue;
          if ((ca > cg ? ca - cg : cg - ca) == 1 && b != 16) S.off_by_one++;
          else { FAIL("%s: %s code r%u c%u ref %u gpu %u", name, side ? "V" : "K", r, c, ca, cg); goto out; }
        }
        /* padding bits past C*b must be zero on both */
        for (size_t j = ((size_t)C * b + 7) / 8; j < st; j++)
          if (g[j] != a[j]) { FAIL("%s: padding differs", name); goto out; }
      }
    }
  }
  /* dequantize the reference block on both sides: must be bitwise equal */
  {
    uint32_t r0 = (uint32_t)(xr() % G), r1 = r0 + 1 + (uint32_t)(xr() % (G - r0));
    if (xr() & 1) { r0 = 0; r1 = G; }
    size_t n = (size_t)(r1 - r0) * C;
    std::vector<uint16_t> rk(n), rv(n), gk(n), gv(n);
    int dr = kvs__dequantize_block(&p, rb.data(), ns ? rptr.data() : NULL, r0, r1, rk.data(), rv.data());
    CK(cudaMemcpy(dblk, rb.data(), tot, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(drows, rrows.data(), ns * rowb, cudaMemcpyHostToDevice));
    /* odd output offset exercises the unaligned store path */
    uint16_t *ok = (uint16_t *)dout + (xr() & 1), *ov = (uint16_t *)(dout + plane + 4);
    kvs__cuda_dqjob dj = {dblk, ns ? (const uint16_t *const *)dptr : NULL, ok, ov, r0, r1};
    CK(cudaMemcpy(djob, &dj, sizeof dj, cudaMemcpyHostToDevice));
    int gr = kvs__cuda_dequantize(&ctx, &p, &l, (kvs__cuda_dqjob *)djob, 1);
    if (dr || gr) { FAIL("%s: dequantize rc ref %d gpu %d", name, dr, gr); goto out; }
    CK(cudaMemcpy(gk.data(), ok, n * 2, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(gv.data(), ov, n * 2, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; i++)
      if (rk[i] != gk[i] || rv[i] != gv[i]) {
        FAIL("%s: dequantized rows [%u,%u) differ at %zu (K %04x/%04x V %04x/%04x)", name, r0, r1, i,
             rk[i], gk[i], rv[i], gv[i]);
        break;
      }
  }
out:
  kvs__cuda_ctx_close(&ctx);
  cudaFree(dk); cudaFree(dv); cudaFree(dblk); cudaFree(drows); cudaFree(djob); cudaFree(dptr); cudaFree(dout);
}

static uint16_t enc(float x, int dt) { return kvs__f32_to_h(x, dt); }

/* The feed (kernels/cuda.h, HACKING.md Decision 51): the kernel is
 * launched first, the host writes jobs into mapped page-locked memory and
 * hands them over a few at a time while it runs (more jobs than the GPU
 * holds blocks, so blocks take several); the blocks must equal those of
 * one ordinary launch over the same jobs. Then a feed closed with no job
 * ends at once with status 0. */
static void feed_check(void)
{
  const uint32_t G = 32, C = 1024, N = 1000;
  for (kvs_dtype dt : {KVS_DTYPE_F16, KVS_DTYPE_BF16}) {
    const uint32_t outl = 0;
    kvs__qparams p = {G, C, 128, 4, 2, outl, outl, dt};
    kvs__qlayout l;
    size_t tot = (LAYOUT(&p, &l) + 255) & ~(size_t)255, plane = (size_t)G * C * 2;
    std::vector<uint16_t> h(plane / 2 * 2 * 64);
    for (auto &x : h) x = kvs__f32_to_h(gauss(), dt);
    uint16_t *in;
    uint8_t *b1, *b2;
    CK(cudaMalloc(&in, h.size() * 2));
    CK(cudaMemcpy(in, h.data(), h.size() * 2, cudaMemcpyHostToDevice));
    CK(cudaMalloc(&b1, N * tot)); CK(cudaMalloc(&b2, N * tot));
    CK(cudaMemset(b1, 0x11, N * tot)); CK(cudaMemset(b2, 0x22, N * tot));
    uint8_t *area, *darea;
    const size_t jo = KVS__CUDA_FEED_STRIDE;
    CK(cudaHostAlloc((void **)&area, jo + (size_t)N * KVS__CUDA_FEED_STRIDE, cudaHostAllocMapped));
    CK(cudaHostGetDevicePointer((void **)&darea, area, 0));
    std::vector<kvs__cuda_qjob> jobs(N);
    for (uint32_t j = 0; j < N; j++) {
      const uint16_t *k = in + (size_t)(j % 64) * (plane / 2 * 2), *v = k + plane / 2;
      jobs[j] = {k, v, b1 + (size_t)j * tot, NULL, 0};
    }
    kvs__cuda_ctx ctx;
    if (kvs__cuda_ctx_init(&ctx)) { FAIL("feed: ctx"); return; }
    kvs__cuda_qjob *dj;
    CK(cudaMalloc(&dj, N * sizeof *dj));
    CK(cudaMemcpy(dj, jobs.data(), N * sizeof *dj, cudaMemcpyHostToDevice));
    int rc1 = kvs__cuda_quantize(&ctx, &p, &l, dj, N);
    kvs__cuda_feed *w = (kvs__cuda_feed *)area;
    w->word = 0;
    int rc2 = kvs__cuda_quantize_feed(&ctx, &p, &l, darea + jo, (const kvs__cuda_feed *)darea, N);
    for (uint32_t j = 0; j < N && !rc2;) {
      uint32_t m = std::min(N - j, 1 + (uint32_t)(xr() % 40));
      for (uint32_t i = j; i < j + m; i++) {
        kvs__cuda_qjob q = jobs[i];
        q.block = b2 + (size_t)i * tot;
        memcpy(area + jo + (size_t)i * KVS__CUDA_FEED_STRIDE, &q, sizeof q);
      }
      j += m;
      __atomic_store_n(&w->word, j, __ATOMIC_RELEASE);
      if (xr() % 4 == 0) { volatile uint64_t spin = 0; while (spin < 20000) spin = spin + 1; }
    }
    __atomic_store_n(&w->word, N | KVS__CUDA_FEED_CLOSED, __ATOMIC_RELEASE);
    if (!rc2) rc2 = kvs__cuda_finish(&ctx);
    std::vector<uint8_t> o1(N * tot), o2(N * tot);
    CK(cudaMemcpy(o1.data(), b1, N * tot, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(o2.data(), b2, N * tot, cudaMemcpyDeviceToHost));
    size_t bad = 0;
    for (uint32_t j = 0; j < N; j++) bad += memcmp(o1.data() + (size_t)j * tot, o2.data() + (size_t)j * tot, l.total) != 0;
    if (rc1 || rc2 || bad) FAIL("feed: rc launch %d feed %d, %zu of %u blocks differ", rc1, rc2, bad, N);
    /* closed empty */
    w->word = KVS__CUDA_FEED_CLOSED;
    int rc3 = kvs__cuda_quantize_feed(&ctx, &p, &l, darea + jo, (const kvs__cuda_feed *)darea, N);
    if (!rc3) rc3 = kvs__cuda_finish(&ctx);
    if (rc3) FAIL("feed closed empty: %d", rc3);
    printf("feed %s: %u jobs handed over while the kernel ran, %zu blocks differ from one launch%s\n",
           dt == KVS_DTYPE_BF16 ? "bf16" : "fp16", N, bad, rc3 ? "" : "; an empty feed ends with 0");
    /* outliers: no feed (the caller launches per chunk) */
    p.k_outliers = p.v_outliers = 10;
    LAYOUT(&p, &l);
    int rc4 = kvs__cuda_quantize_feed(&ctx, &p, &l, darea + jo, (const kvs__cuda_feed *)darea, N);
    if (rc4 != -EOPNOTSUPP) FAIL("feed with outliers: %d, expected -EOPNOTSUPP", rc4);
    kvs__cuda_ctx_close(&ctx);
    cudaFree(in); cudaFree(b1); cudaFree(b2); cudaFree(dj); cudaFreeHost(area);
  }
}

static int check(void)
{
  struct cfg { uint32_t G, C, vg, kb, vb, ko, vo; };
  const cfg cfgs[] = {
    {32, 1024, 128, 2, 2, 0, 0}, {32, 1024, 128, 4, 4, 10, 10}, {32, 1024, 32, 3, 3, 2, 2},
    {32, 1024, 64, 8, 8, 1, 1},  {31, 200, 40, 2, 4, 2, 1},     {64, 96, 96, 3, 2, 0, 3},
    {1, 64, 64, 4, 4, 1, 1},     {17, 130, 13, 3, 8, 5, 0},     {32, 256, 128, 16, 2, 0, 2},
    {32, 256, 128, 4, 16, 3, 0}, {64, 4096, 128, 2, 2, 41, 41}, {8, 33, 11, 8, 3, 2, 1},
    /* shapes of the fast kernel (C % 256 == 0, C <= 1024, vg | 256) */
    {32, 1024, 32, 3, 8, 10, 3}, {64, 1024, 64, 8, 3, 51, 51}, {16, 512, 256, 2, 4, 3, 0},
    {32, 768, 8, 4, 2, 0, 7},    {7, 256, 16, 16, 3, 0, 2},    {32, 1024, 128, 2, 16, 5, 0},
    {33, 1024, 128, 4, 2, 1, 32},
    /* both 16-bit: the dequantize kernel's copy path */
    {32, 1024, 128, 16, 16, 0, 0}, {5, 64, 64, 16, 16, 0, 0},
  };
  stats S = {0, 0};
  int n_cases = 0;
  for (int dt = 1; dt <= 2; dt++)
    for (const cfg &c : cfgs)
      for (int kind = 0; kind < 7; kind++) {
        kvs__qparams p = {c.G, c.C, c.vg, c.kb, c.vb, c.ko, c.vo, (kvs_dtype)dt};
        size_t n = (size_t)c.G * c.C;
        std::vector<uint16_t> k(n), v(n);
        uint64_t mask = 0, full = c.G == 64 ? ~0ull : ((1ull << c.G) - 1);
        const char *kn[] = {"random", "constant-rows", "huge-outliers", "all-sink", "random-sinks",
                            "nan", "inf"};
        for (size_t i = 0; i < n; i++) {
          float a = gauss(), b = gauss();
          if (kind == 0 && xr() % 16 == 0) { a = (xr() & 1) ? -0.f : 0.f; b = (xr() & 1) ? -0.f : 0.f; }
          if (kind == 1) { a = (float)(i / c.C % 5) - 2.f; b = 0.5f; }
          if (kind == 2 && xr() % 50 == 0) { a *= 3000.f; b *= -1000.f; }
          k[i] = enc(a * 1.5f + 0.3f, dt);
          v[i] = enc(b, dt);
        }
        if (kind == 3) mask = full;
        if (kind == 4 || kind == 2) mask = xr() & xr() & full;
        int expect = 0;
        if (kind == 5) { (xr() & 1 ? k : v)[xr() % n] = dt == 2 ? 0x7fc0 : 0x7e00; }
        if (kind == 6) {
          size_t at = xr() % n;
          (xr() & 1 ? k : v)[at] = dt == 2 ? 0xff80 : 0xfc00;
          if (xr() & 1) mask |= 1ull << (at / c.C);  /* Inf inside a sink row too */
        }
        if (kind >= 5) expect = KVS_ENAN;
        char name[160];
        snprintf(name, sizeof name, "%s G%u C%u vg%u k%u v%u ko%u vo%u %s", dt == 2 ? "bf16" : "fp16",
                 c.G, c.C, c.vg, c.kb, c.vb, c.ko, c.vo, kn[kind]);
        /* now and then a K plane 2 bytes off 16-byte alignment */
        one_case(name, p, k, v, mask, expect, S, kind == 4 && (c.C & 1) == 0);
        n_cases++;
      }
  printf("check: %d cases, %llu codes compared, %llu (%.6f%%) differ by one step, %d failures\n",
         n_cases, (unsigned long long)S.codes, (unsigned long long)S.off_by_one,
         S.codes ? 100.0 * S.off_by_one / S.codes : 0.0, failures);

  feed_check();
  printf("check: %s (%d failures)\n", failures ? "FAILED" : "passed", failures);
  return failures ? 1 : 0;
}

/* Benchmark: L layers x H heads x D dim, T tokens, fp16, G = 32. */
static int bench(bool prof)
{
  const uint32_t L = 32, H = 8, D = 128, G = 32, C = H * D;
  const uint32_t Ts_all[] = {4096, 8192, 16384, 32768}, Ts_prof[] = {4096};
  std::vector<uint32_t> Ts = prof ? std::vector<uint32_t>(Ts_prof, Ts_prof + 1)
                                  : std::vector<uint32_t>(Ts_all, Ts_all + 4);
  /* KVS_BENCH_T=8192: one context length only (quicker device runs) */
  if (const char *e = getenv("KVS_BENCH_T")) Ts = {(uint32_t)atoi(e)};
  const std::vector<uint32_t> bitss = prof ? std::vector<uint32_t>{2u} : std::vector<uint32_t>{2u, 3u, 4u, 8u, 16u};
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  printf("bench: device %s, %u layers x %u KV heads x dim %u, G=%u, fp16\n", prop.name, L, H, D, G);
  kvs__cuda_ctx ctx;
  if (kvs__cuda_ctx_init(&ctx)) return 1;
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));
  for (uint32_t T : Ts) {
    size_t nb = (size_t)L * T / G, plane = (size_t)G * C * 2, bytes = nb * plane * 2; /* K+V */
    uint16_t *in, *out;
    CK(cudaMalloc(&in, bytes)); CK(cudaMalloc(&out, bytes));
    {
      std::vector<uint16_t> h(1u << 22);
      for (auto &x : h) x = kvs__f32_to_f16(gauss());
      for (size_t o = 0; o < bytes / 2; o += h.size())
        CK(cudaMemcpy(in + o, h.data(), std::min(h.size(), bytes / 2 - o) * 2, cudaMemcpyHostToDevice));
    }
    auto time = [&](auto fn) {
      fn();
      CK(cudaDeviceSynchronize());
      if (prof) return 1.f;  /* one launch each, for a profiler */
      float best = 1e30f;
      for (int it = 0; it < 5; it++) {
        CK(cudaEventRecord(e0));
        fn();
        CK(cudaEventRecord(e1));
        CK(cudaEventSynchronize(e1));
        float ms; CK(cudaEventElapsedTime(&ms, e0, e1));
        best = std::min(best, ms);
      }
      return best;
    };
    float tcopy = time([&] { CK(cudaMemcpyAsync(out, in, bytes, cudaMemcpyDeviceToDevice)); });
    double gb = bytes / 1e9, copy_gbs = gb / (tcopy / 1e3);
    printf("T=%-6u %.2f GB of K+V: D2D copy %.3f ms = %.0f GB/s\n", T, gb, tcopy, copy_gbs);
    for (uint32_t bits : bitss) for (uint32_t outl : {0u, 10u}) {
      if (bits == 16 && outl) continue; /* 16-bit rows have no outliers */
      kvs__qparams p = {G, C, 128, bits, bits, outl, outl, KVS_DTYPE_F16};
      kvs__qlayout l;
      size_t tot = (LAYOUT(&p, &l) + 255) & ~(size_t)255;
      uint8_t *blocks;
      kvs__cuda_qjob *dq; kvs__cuda_dqjob *dd;
      CK(cudaMalloc(&blocks, nb * tot));
      CK(cudaMalloc(&dq, nb * sizeof *dq)); CK(cudaMalloc(&dd, nb * sizeof *dd));
      std::vector<kvs__cuda_qjob> hq(nb); std::vector<kvs__cuda_dqjob> hd(nb);
      for (size_t b = 0; b < nb; b++) {
        /* block b = layer b / (T/G), token group b % (T/G): K and V planes */
        hq[b] = {in + b * (plane / 2), in + bytes / 4 + b * (plane / 2), blocks + b * tot, NULL, 0};
        hd[b] = {blocks + b * tot, NULL, out + b * (plane / 2), out + bytes / 4 + b * (plane / 2), 0, G};
      }
      CK(cudaMemcpy(dq, hq.data(), nb * sizeof *dq, cudaMemcpyHostToDevice));
      CK(cudaMemcpy(dd, hd.data(), nb * sizeof *dd, cudaMemcpyHostToDevice));
      int rc = 0;
      float tq = time([&] { rc |= kvs__cuda_quantize_async(&ctx, &p, &l, dq, (uint32_t)nb); });
      rc |= kvs__cuda_finish(&ctx);
      float td = time([&] { rc |= kvs__cuda_dequantize_async(&ctx, &p, &l, dd, (uint32_t)nb); });
      rc |= kvs__cuda_finish(&ctx);
      if (rc) {
        /* say whether the input really holds NaN/Inf, then go on */
        std::vector<uint16_t> h(bytes / 2);
        CK(cudaMemcpy(h.data(), in, bytes, cudaMemcpyDeviceToHost));
        size_t nbad = 0;
        for (uint16_t x : h) nbad += (x & 0x7c00u) == 0x7c00u;
        printf("bench: T=%u %u-bit launch failed %d (input has %zu NaN/Inf)\n", T, bits, rc, nbad);
        failures++;
      }
      if (!outl) {
        /* the feed (Decision 51) with every job handed over before the
         * launch: the persistent loop's own cost against one launch */
        uint8_t *area, *darea;
        CK(cudaHostAlloc((void **)&area, (nb + 1) * KVS__CUDA_FEED_STRIDE, cudaHostAllocMapped));
        CK(cudaHostGetDevicePointer((void **)&darea, area, 0));
        for (size_t b = 0; b < nb; b++) memcpy(area + (b + 1) * KVS__CUDA_FEED_STRIDE, &hq[b], sizeof hq[b]);
        ((kvs__cuda_feed *)area)->word = (uint32_t)nb | KVS__CUDA_FEED_CLOSED;
        float tf = time([&] {
          rc |= kvs__cuda_quantize_feed(&ctx, &p, &l, darea + KVS__CUDA_FEED_STRIDE, (const kvs__cuda_feed *)darea,
                                        (uint32_t)nb);
        });
        rc |= kvs__cuda_finish(&ctx);
        /* the same with word and jobs in device memory (no host reads) */
        uint8_t *dev;
        CK(cudaMalloc(&dev, (nb + 1) * KVS__CUDA_FEED_STRIDE));
        CK(cudaMemcpy(dev, area, (nb + 1) * KVS__CUDA_FEED_STRIDE, cudaMemcpyHostToDevice));
        float td2 = time([&] {
          rc |= kvs__cuda_quantize_feed(&ctx, &p, &l, dev + KVS__CUDA_FEED_STRIDE, (const kvs__cuda_feed *)dev,
                                        (uint32_t)nb);
        });
        rc |= kvs__cuda_finish(&ctx);
        printf("T=%-6u %u-bit feed (all handed over first) %.3f ms (%.0f%% of copy; one launch %.0f%%; "
               "word and jobs in device memory %.0f%%)\n", T, bits,
               tf, 100.0 * tcopy / tf, 100.0 * tcopy / tq, 100.0 * tcopy / td2);
        cudaFreeHost(area);
        cudaFree(dev);
      }
      printf("T=%-6u %u-bit outliers=%-2u quantize %.3f ms %.0f GB/s (%.0f%% of copy)  "
             "dequantize %.3f ms %.0f GB/s (%.0f%% of copy)  block %zu B\n",
             T, bits, outl, tq, gb / (tq / 1e3), 100.0 * tcopy / tq, td, gb / (td / 1e3),
             100.0 * tcopy / td, (size_t)l.total);
      cudaFree(blocks); cudaFree(dq); cudaFree(dd);
    }
    cudaFree(in); cudaFree(out);
  }
  kvs__cuda_ctx_close(&ctx);
  return failures ? 1 : 0;
}

/* ---- launch: where a put's launch calls spend the host's time ---- */
struct nop_args { uint32_t w[12]; size_t z[12]; };
struct nop_feed { void *p[4]; uint32_t u[4]; };
static __global__ void nop_kernel(nop_args, const void *, int *, nop_feed) {}

static double host_us(void)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec * 1e-3;
}

static double med(std::vector<double> v)
{
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

static int launch_bench(void)
{
  const uint32_t L = 32, G = 32, C = 1024, chunk = 256, nb = 1024, reps = 300;
  const size_t plane = (size_t)G * C * 2;
  uint16_t *in;
  CK(cudaMalloc(&in, nb * plane * 2));
  CK(cudaMemset(in, 0, nb * plane * 2));
  kvs__cuda_ctx ctx;
  if (kvs__cuda_ctx_init(&ctx)) return 1;
  cudaStream_t st;
  CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  ctx.stream = st;
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  printf("launch: device %s, %u blocks a put in launches of %u, %u puts, median us (host clock)\n",
         prop.name, nb, chunk, reps);
  (void)L;
  /* empty kernels with the quantize kernel's parameter size */
  for (int smem : {0, 64 * 1024}) {
    if (smem) CK(cudaFuncSetAttribute(nop_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    std::vector<double> first, rest, fin;
    for (uint32_t r = 0; r < reps; r++) {
      for (uint32_t c = 0; c < nb / chunk; c++) {
        double t0 = host_us();
        nop_kernel<<<chunk, 256, smem, st>>>(nop_args{}, in, nullptr, nop_feed{});
        double t1 = host_us();
        (c ? rest : first).push_back(t1 - t0);
      }
      double t0 = host_us();
      CK(cudaStreamSynchronize(st));
      fin.push_back(host_us() - t0);
    }
    printf("empty kernel, %2d KB shared: first launch %.1f, later ones %.1f, synchronize %.1f\n",
           smem / 1024, med(first), med(rest), med(fin));
  }
  /* the launches on one stream (each chunk waits for the one before),
   * or on four in turn as kvsinkd's CUDA backend does (created as it
   * does, blocking: ordered with the legacy stream; or non-blocking) */
  cudaStream_t qs[2][4];
  for (int i = 0; i < 4; i++) {
    CK(cudaStreamCreate(&qs[0][i]));
    CK(cudaStreamCreateWithFlags(&qs[1][i], cudaStreamNonBlocking));
  }
  for (int mode = 0; mode < 3; mode++)
  for (uint32_t bits : {16u, 8u, 4u, 2u}) {
    if (mode && bits != 16u && bits != 4u) continue;
    kvs__qparams p = {G, C, 128, bits, bits, 0, 0, KVS_DTYPE_F16};
    kvs__qlayout l;
    size_t tot = (LAYOUT(&p, &l) + 255) & ~(size_t)255;
    uint8_t *blocks;
    kvs__cuda_qjob *dq;
    CK(cudaMalloc(&blocks, nb * tot));
    CK(cudaMalloc(&dq, nb * sizeof *dq));
    std::vector<kvs__cuda_qjob> hq(nb);
    for (size_t b = 0; b < nb; b++)
      hq[b] = {in + b * (plane / 2), in + nb * plane / 2 + b * (plane / 2), blocks + b * tot, NULL, 0};
    CK(cudaMemcpy(dq, hq.data(), nb * sizeof *dq, cudaMemcpyHostToDevice));
    std::vector<double> first, rest, fin;
    int rc = 0;
    for (uint32_t r = 0; r < reps; r++) {
      for (uint32_t c = 0; c < nb / chunk; c++) {
        kvs__cuda_ctx qc = ctx;
        if (mode) qc.stream = qs[mode - 1][c % 4];
        double t0 = host_us();
        rc |= kvs__cuda_quantize_async(&qc, &p, &l, dq + c * chunk, chunk);
        double t1 = host_us();
        (c ? rest : first).push_back(t1 - t0);
      }
      double t0 = host_us();
      if (mode) CK(cudaDeviceSynchronize());
      rc |= kvs__cuda_finish(&ctx);
      fin.push_back(host_us() - t0);
    }
    if (rc) { printf("FAIL: launch: %u bits: %d\n", bits, rc); failures++; }
    printf("%2u-bit quantize, %s: first launch %.1f, later ones %.1f, finish %.1f\n", bits,
           mode == 0 ? "one stream" : mode == 1 ? "4 streams (blocking)" : "4 streams (non-blocking)",
           med(first), med(rest), med(fin));
    cudaFree(blocks);
    cudaFree(dq);
  }
  for (int i = 0; i < 4; i++) {
    cudaStreamDestroy(qs[0][i]);
    cudaStreamDestroy(qs[1][i]);
  }
  kvs__cuda_ctx_close(&ctx);
  cudaStreamDestroy(st);
  cudaFree(in);
  return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) { fprintf(stderr, "no GPU\n"); return 77; }
  if (argc > 1 && !strcmp(argv[1], "bench")) return bench(false);
  /* gpu_test prof: one launch of each kernel at T=4096, 2 bits (for ncu) */
  if (argc > 1 && !strcmp(argv[1], "prof")) return bench(true);
  if (argc > 1 && !strcmp(argv[1], "launch")) return launch_bench();
  return check();
}
