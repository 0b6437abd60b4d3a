/* SPDX-License-Identifier: MIT */
/* The CUDA quantize kernels (kernels/quant.cu: the fast kernel with and
 * without outliers, and the general one) run on the CPU against the C
 * reference (kernels/quant.c), so that make check covers their logic on
 * machines without a GPU: one std::thread per CUDA thread, std::barrier
 * for __syncthreads and for warp collectives, one CUDA block at a time.
 * Every byte of the block and of the sink rows must equal the
 * reference's. Timing, the memory model and cp.async's asynchrony are out
 * of its reach (tests/gpu/run.sh covers those). Built and run by
 * quant_emu.sh; `quant_emu N` runs the first N cases of each dtype only. */
#include <algorithm>
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <vector_functions.h>
#include <vector_types.h>

struct emu_dim { unsigned x, y, z; };
thread_local emu_dim threadIdx;
static emu_dim blockIdx, blockDim = {256, 1, 1}, gridDim = {1, 1, 1};
#include "tests/kernels/emu_host.h"
alignas(16) uint32_t fsm[(228u * 1024u) / 4u]; /* the kernels' extern __shared__ arrays */
alignas(16) uint32_t sm[(228u * 1024u) / 4u];

static std::barrier<> *bar;
static std::barrier<> *wbar[8];
static uint32_t wx[8][32];
static std::mutex amu;
static void __syncthreads() { bar->arrive_and_wait(); }
static void __syncwarp(unsigned = 0xffffffffu) { wbar[threadIdx.x / 32]->arrive_and_wait(); }

/* a warp collective: every lane posts v, f(posted, lane) is its result */
template <class F> static uint32_t coll(uint32_t v, F f)
{
  const unsigned w = threadIdx.x / 32, l = threadIdx.x % 32;
  wx[w][l] = v;
  wbar[w]->arrive_and_wait();
  uint32_t r = f(wx[w], l);
  wbar[w]->arrive_and_wait();
  return r;
}
static uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static uint32_t __shfl_sync(unsigned, uint32_t v, int s) { return coll(v, [&](uint32_t *x, unsigned) { return x[s & 31]; }); }
static float __shfl_sync(unsigned m, float v, int s) { return u2f(__shfl_sync(m, f2u(v), s)); }
static uint32_t __shfl_xor_sync(unsigned, uint32_t v, int o) { return coll(v, [&](uint32_t *x, unsigned l) { return x[(l ^ o) & 31]; }); }
static float __shfl_xor_sync(unsigned m, float v, int o) { return u2f(__shfl_xor_sync(m, f2u(v), o)); }
static uint32_t __shfl_up_sync(unsigned, uint32_t v, unsigned d)
{
  return coll(v, [&](uint32_t *x, unsigned l) { return l >= d ? x[l - d] : x[l]; });
}
static uint32_t __shfl_down_sync(unsigned, uint32_t v, unsigned d)
{
  return coll(v, [&](uint32_t *x, unsigned l) { return l + d < 32 ? x[l + d] : x[l]; });
}
static uint32_t __ballot_sync(unsigned, int p)
{
  return coll(p != 0, [&](uint32_t *x, unsigned) { uint32_t b = 0; for (int i = 0; i < 32; i++) b |= (x[i] & 1u) << i; return b; });
}
static int __any_sync(unsigned m, int p) { return __ballot_sync(m, p) != 0; }
static int __all_sync(unsigned m, int p) { return __ballot_sync(m, p) == 0xffffffffu; }
static uint32_t __reduce_add_sync(unsigned, uint32_t v)
{
  return coll(v, [&](uint32_t *x, unsigned) { uint32_t s = 0; for (int i = 0; i < 32; i++) s += x[i]; return s; });
}
static uint32_t __reduce_max_sync(unsigned, uint32_t v)
{
  return coll(v, [&](uint32_t *x, unsigned) { uint32_t s = 0; for (int i = 0; i < 32; i++) s = std::max(s, x[i]); return s; });
}
static uint32_t __reduce_min_sync(unsigned, uint32_t v)
{
  return coll(v, [&](uint32_t *x, unsigned) { uint32_t s = ~0u; for (int i = 0; i < 32; i++) s = std::min(s, x[i]); return s; });
}
static int atomicMin(int *p, int v) { std::lock_guard<std::mutex> g(amu); int o = *p; if (v < o) *p = v; return o; }
static uint32_t atomicAdd(uint32_t *p, uint32_t v) { std::lock_guard<std::mutex> g(amu); uint32_t o = *p; *p = o + v; return o; }
static int atomicAdd(int *p, int v) { std::lock_guard<std::mutex> g(amu); int o = *p; *p = o + v; return o; }
static void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
static void __threadfence_system() { std::atomic_thread_fence(std::memory_order_seq_cst); }
static uint32_t atomicAnd(uint32_t *p, uint32_t v) { std::lock_guard<std::mutex> g(amu); uint32_t o = *p; *p = o & v; return o; }
static uint32_t atomicOr(uint32_t *p, uint32_t v) { std::lock_guard<std::mutex> g(amu); uint32_t o = *p; *p = o | v; return o; }
static int __popc(uint32_t x) { return __builtin_popcount(x); }
static int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
static int __ffs(int x) { return __builtin_ffs(x); }
static uint32_t __brev(uint32_t x) { uint32_t r = 0; for (int i = 0; i < 32; i++) r |= ((x >> i) & 1u) << (31 - i); return r; }
static int __clz(int x) { return x ? __builtin_clz((unsigned)x) : 32; }
static uint32_t __vmaxu2(uint32_t a, uint32_t b)
{
  return std::max(a & 0xffffu, b & 0xffffu) | (std::max(a >> 16, b >> 16) << 16);
}
static uint32_t min(uint32_t a, uint32_t b) { return a < b ? a : b; }
static uint32_t max(uint32_t a, uint32_t b) { return a > b ? a : b; }
static uint16_t __ldg(const uint16_t *p) { return *p; }
static uint4 __ldg(const uint4 *p) { return *p; }
static float __fadd_rn(float a, float b) { volatile float r = a + b; return r; }
static float __fsub_rn(float a, float b) { volatile float r = a - b; return r; }
static float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }
static float __fdiv_rn(float a, float b) { volatile float r = a / b; return r; }
static float __frcp_rn(float a) { volatile float r = 1.0f / a; return r; }
static float __fadd_rd(float a, float b)
{
  double s = (double)a + (double)b; /* exact for the coder's operands */
  float r = (float)s;
  if ((double)r > s) r = nextafterf(r, -INFINITY);
  return r;
}
static uint32_t __float_as_uint(float f) { return f2u(f); }
static float __uint_as_float(uint32_t u) { return u2f(u); }
static float __int_as_float(int i) { return u2f((uint32_t)i); }

/* min/max.{f16,bf16}x2: a NaN half loses to a number, two NaNs give the
 * canonical NaN, -0 orders below +0 */
static float hbits2f(bool bf, uint32_t h)
{
  return bf ? u2f(h << 16) : __half2float(__ushort_as_half((unsigned short)h));
}
static uint32_t emu_hminmax2(bool bf, bool mx, uint32_t a, uint32_t b)
{
  uint32_t r = 0;
  for (int i = 0; i < 2; i++) {
    uint32_t x = (a >> (16 * i)) & 0xffffu, y = (b >> (16 * i)) & 0xffffu, z;
    float fx = hbits2f(bf, x), fy = hbits2f(bf, y);
    if (std::isnan(fx) && std::isnan(fy)) z = bf ? 0x7fffu : 0x7fffu;
    else if (std::isnan(fx)) z = y;
    else if (std::isnan(fy)) z = x;
    else if (fx == fy) z = ((x >> 15) != (y >> 15)) ? (mx ? (x >> 15 ? y : x) : (x >> 15 ? x : y)) : x;
    else z = (mx ? fx > fy : fx < fy) ? x : y;
    r |= z << (16 * i);
  }
  return r;
}

#define KVS_QUANT_EMU 1
#include "kernels/quant.cu"

extern "C" {
#include "kernels/half.h"
#include "kernels/sink.h"
}

/* Run CUDA block `block` of kern on job j (feed: of a grid of two, block
 * 0 the feed's watcher, block 1 the worker that takes every job; else of
 * a grid of `grid`). */
static int run_block(fq_kern_t kern, const kvs_cu_args &a, const kvs__cuda_qjob *j,
                     kvs_feed_arg feed = {}, unsigned block = 0, unsigned grid = 1)
{
  int st = 0;
  std::barrier<> b(256);
  bar = &b;
  std::vector<std::barrier<> *> wb;
  for (int w = 0; w < 8; w++) wbar[w] = new std::barrier<>(32);
  memset(fsm, 0xcd, sizeof fsm);
  memset(sm, 0xcd, sizeof sm);
  blockIdx = {block, 0, 0};
  gridDim = {feed.word ? 2u : grid, 1, 1};
  std::vector<std::thread> th;
  for (unsigned t = 0; t < 256; t++)
    th.emplace_back([&, t] {
      threadIdx = {t, 0, 0};
      kern(a, j, &st, feed);
    });
  for (auto &x : th) x.join();
  for (int w = 0; w < 8; w++) delete wbar[w];
  return st;
}

static uint64_t rng = 88172645463325252ull;
static uint64_t xr(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }
static float unif(void) { return (float)((xr() >> 11) * (1.0 / 9007199254740992.0)); }
static float gauss(void)
{
  float u = 1.f - unif() * (1.f - 1e-7f), v = unif();
  return sqrtf(-2.f * logf(u)) * cosf(6.2831853f * v);
}

static int failures, cases, copies;

static void one_case(const char *name, const kvs__qparams &p, const std::vector<uint16_t> &k,
                     const std::vector<uint16_t> &v, uint64_t mask, bool fast_only)
{
  kvs__qlayout l;
  if (kvs__qparams_check(&p)) { printf("FAIL: %s: reference rejects params\n", name); failures++; return; }
  size_t tot = kvs__qlayout_of(&p, &l);
  kvs_cu_args a;
  if (fill_args(&p, &l, &a)) { printf("FAIL: %s: fill_args\n", name); failures++; return; }
  quant_smem_v(&a);
  fq_kern_t kern = kvs_quant_kernel;
  if (fast_ok(a)) {
    const bool out = (a.kb != 16 && a.nko) || (a.vb != 16 && a.nvo);
    kern = fq_pick(a.dtype == KVS_DTYPE_BF16, KVS_FQ_NJT && a.C == 256u * KVS_FQ_NJ, out);
  } else if (fast_only) {
    return;
  }
  cases++;
  uint32_t ns = (uint32_t)__builtin_popcountll(mask);
  size_t rowb = kvs__sink_row_bytes(&p);
  std::vector<uint8_t> rb(tot + 64, 0xa5);
  uint8_t *gb = (uint8_t *)aligned_alloc(16, (tot + 64 + 15) & ~(size_t)15);
  memset(gb, 0x5a, tot + 64);
  std::vector<uint16_t> rrows(ns ? ns * rowb / 2 : 1), grows(ns ? ns * rowb / 2 + 8 : 8, 0x5a5a);
  std::vector<uint16_t *> rptr(ns ? ns : 1), gptr(ns ? ns : 1);
  for (uint32_t i = 0; i < ns; i++) {
    rptr[i] = rrows.data() + i * rowb / 2;
    gptr[i] = grows.data() + i * rowb / 2;
  }
  int rrc = kvs__quantize_block(&p, k.data(), v.data(), mask, rb.data(), ns ? rptr.data() : NULL);
  size_t n = k.size();
  uint16_t *dk = (uint16_t *)aligned_alloc(16, (n * 2 + 15) & ~(size_t)15);
  uint16_t *dv = (uint16_t *)aligned_alloc(16, (n * 2 + 15) & ~(size_t)15);
  memcpy(dk, k.data(), n * 2);
  memcpy(dv, v.data(), n * 2);
  kvs__cuda_qjob j = {dk, dv, gb, ns ? gptr.data() : NULL, mask};
  int grc = run_block(kern, a, &j);
  /* every other fast case without outliers (the feed's kernels) also
   * goes through a feed of two jobs (the same
   * input into two blocks): the block's loop over jobs, its shared
   * memory reused, must give the same bytes both times */
  const bool outl = (a.kb != 16 && a.nko) || (a.vb != 16 && a.nvo);
  if (kern != kvs_quant_kernel && !outl && cases % 2 == 0) {
    alignas(16) uint8_t fj[2 * KVS__CUDA_FEED_STRIDE];
    uint8_t *gb2 = (uint8_t *)aligned_alloc(16, (tot + 64 + 15) & ~(size_t)15);
    std::vector<uint16_t> grows2(ns ? ns * rowb / 2 + 8 : 8, 0x5a5a);
    std::vector<uint16_t *> gptr2(ns ? ns : 1);
    for (uint32_t i = 0; i < ns; i++) gptr2[i] = grows2.data() + i * rowb / 2;
    memset(gb2, 0x5a, tot + 64);
    memset(fj, 0xee, sizeof fj);
    kvs__cuda_qjob j2 = {dk, dv, gb2, ns ? gptr2.data() : NULL, mask};
    memcpy(fj, &j, sizeof j);
    memcpy(fj + KVS__CUDA_FEED_STRIDE, &j2, sizeof j2);
    kvs__cuda_feed f = {2u | KVS__CUDA_FEED_CLOSED};
    unsigned long long mirror = 0;
    uint32_t ctr[2] = {0, 0};
    memset(gb, 0x5a, tot + 64);
    fq_kern_t fk = fq_pick(a.dtype == KVS_DTYPE_BF16, KVS_FQ_NJT && a.C == 256u * KVS_FQ_NJ, false, true);
    const kvs_feed_arg fa = {&f.word, &mirror, ctr, 7};
    /* the watcher (block 0) first: it mirrors the word and ends, and the
     * worker finds its jobs in the mirror; or the worker first, as when
     * the GPU has not run block 0: after the stall it reads the host's
     * word itself */
    const bool worker_first = cases % 4 == 0;
    int frc = 0;
    if (!worker_first) {
      frc = run_block(fk, a, (const kvs__cuda_qjob *)fj, fa, 0);
      if (frc || mirror != (7ull << 32 | f.word)) { printf("FAIL: %s: feed watcher rc %d mirror %llx\n", name, frc, mirror); failures++; }
    }
    frc = run_block(fk, a, (const kvs__cuda_qjob *)fj, fa, 1);
    if (worker_first && mirror != 0) { printf("FAIL: %s: the worker wrote the mirror\n", name); failures++; }
    /* the last worker out set the counters back for the next feed */
    if (ctr[0] || ctr[1]) { printf("FAIL: %s: feed counters left at %u %u\n", name, ctr[0], ctr[1]); failures++; }
    if (frc != grc) { printf("FAIL: %s: feed rc %d, one job %d\n", name, frc, grc); failures++; }
    else if (!frc && (memcmp(gb, gb2, tot + 64) || (ns && memcmp(grows.data(), grows2.data(), ns * rowb)))) {
      printf("FAIL: %s: the feed's two blocks differ\n", name);
      failures++;
    }
    free(gb2);
  }
  /* every third case also runs as both blocks of a signalled launch of
   * two (kvs__cuda_wait, Decision 54): the first block to end counts
   * itself and leaves the host's word alone; the last sets the counter
   * back and writes the status, then the seq; the bytes are the same */
  if (cases % 3 == 1) {
    uint8_t *gb3 = (uint8_t *)aligned_alloc(16, (tot + 64 + 15) & ~(size_t)15);
    std::vector<uint16_t> grows3(ns ? ns * rowb / 2 + 8 : 8, 0x5a5a);
    std::vector<uint16_t *> gptr3(ns ? ns : 1);
    for (uint32_t i = 0; i < ns; i++) gptr3[i] = grows3.data() + i * rowb / 2;
    memset(gb3, 0x5a, tot + 64);
    const kvs__cuda_qjob j3[2] = {{dk, dv, gb3, ns ? gptr3.data() : NULL, mask},
                                  {dk, dv, gb3, ns ? gptr3.data() : NULL, mask}};
    uint32_t dctr = 0;
    kvs__cuda_signal sig = {0, 0, 0};
    kvs_feed_arg fa{};
    fa.done = kvs_done_arg{&dctr, &sig, 42};
    run_block(kern, a, j3, fa, 0, 2);
    if (dctr != 1 || sig.seq != 0) { printf("FAIL: %s: the first of two signalled blocks: counter %u seq %llu\n", name, dctr, sig.seq); failures++; }
    const int s1 = run_block(kern, a, j3, fa, 1, 2);
    if (dctr != 0 || sig.seq != 42 || sig.status != s1 || s1 != grc) {
      printf("FAIL: %s: the last signalled block: counter %u seq %llu status %d (rc %d, one block %d)\n", name,
             dctr, sig.seq, sig.status, s1, grc);
      failures++;
    } else if (!grc && (memcmp(gb, gb3, tot + 64) || (ns && memcmp(grows.data(), grows3.data(), ns * rowb)))) {
      printf("FAIL: %s: a signalled launch's bytes differ\n", name);
      failures++;
    }
    free(gb3);
  }
  /* 16/16 bits: the copy kernel too (Decision 56), all its CUDA blocks
   * for this job, the block 16-byte aligned and (every other case) not:
   * the same bytes and status as the reference's */
  if (cp16_ok(a)) {
    const uint32_t P = cp16_parts(a), off = cases % 2 ? 2u : 0u;
    copies++;
    uint8_t *gb4 = (uint8_t *)aligned_alloc(16, (tot + 80 + 15) & ~(size_t)15);
    std::vector<uint16_t> grows4(ns ? ns * rowb / 2 + 8 : 8, 0x5a5a);
    std::vector<uint16_t *> gptr4(ns ? ns : 1);
    for (uint32_t i = 0; i < ns; i++) gptr4[i] = grows4.data() + i * rowb / 2;
    memset(gb4, 0x5a, tot + 80);
    const kvs__cuda_qjob j4 = {dk, dv, gb4 + off, ns ? gptr4.data() : NULL, mask};
    int crc = 0;
    for (uint32_t b = 0; b < P; b++) {
      const int r = run_block(kvs_copy16_kernel, a, &j4, {}, b, P);
      crc = r < crc ? r : crc;
    }
    if (crc != rrc) { printf("FAIL: %s: copy16 rc %d, reference %d\n", name, crc, rrc); failures++; }
    else if (!rrc && (memcmp(rb.data(), gb4 + off, tot) || gb4[off + tot] != 0x5a || (off && gb4[0] != 0x5a) ||
                      (ns && memcmp(rrows.data(), grows4.data(), ns * rowb)))) {
      printf("FAIL: %s: copy16 bytes differ (block at +%u)\n", name, off);
      failures++;
    }
    free(gb4);
  }
  if (rrc != grc) {
    printf("FAIL: %s: rc reference %d emulated %d\n", name, rrc, grc);
    failures++;
  } else if (!rrc) {
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < tot; i++)
      if (rb[i] != gb[i]) { if (!bad) first = i; bad++; }
    if (gb[tot] != 0x5a) { printf("FAIL: %s: wrote past the block\n", name); failures++; }
    if (bad) {
      const char *sec = first >= l.vout ? "vout" : first >= l.kout ? "kout" : first >= l.vcodes ? "vcodes"
                      : first >= l.vmin ? "vmin" : first >= l.vscale ? "vscale" : first >= l.kcodes ? "kcodes"
                      : first >= l.kmin ? "kmin" : first >= l.kscale ? "kscale" : "header";
      printf("FAIL: %s: %zu bytes differ (first at %zu, %s: ref %02x emu %02x)\n", name, bad, first, sec,
             rb[first], gb[first]);
      failures++;
    }
    if (ns && memcmp(rrows.data(), grows.data(), ns * rowb)) { printf("FAIL: %s: sink rows differ\n", name); failures++; }
  }
  free(gb);
  free(dk);
  free(dv);
}

int main(int argc, char **argv)
{
  const int limit = argc > 1 ? atoi(argv[1]) : 1 << 30;
  struct cfg { uint32_t G, C, vg, kb, vb, ko, vo; };
  /* gpu_test's shapes, the fast kernel's ones first, then a few of the
   * general kernel's */
  const cfg cfgs[] = {
    {32, 1024, 128, 4, 4, 10, 10}, {32, 1024, 128, 2, 2, 10, 10}, {32, 1024, 32, 3, 3, 2, 2},
    {32, 1024, 64, 8, 8, 1, 1},    {32, 1024, 32, 3, 8, 10, 3},   {64, 1024, 64, 8, 3, 51, 51},
    {16, 512, 256, 2, 4, 3, 0},    {32, 768, 8, 4, 2, 0, 7},      {7, 256, 16, 16, 3, 0, 2},
    {32, 1024, 128, 2, 16, 5, 0},  {33, 1024, 128, 4, 2, 1, 32},  {32, 256, 128, 16, 2, 0, 2},
    {32, 256, 128, 4, 16, 3, 0},   {32, 1024, 128, 2, 2, 0, 0},   {32, 512, 128, 4, 4, 20, 24},
    {32, 1024, 128, 2, 2, 30, 31}, {32, 1024, 128, 16, 16, 0, 0}, {31, 200, 40, 2, 4, 2, 1},
    {17, 130, 13, 3, 8, 5, 0},     {5, 64, 64, 16, 16, 0, 0},
  };
  const char *kn[] = {"random", "constant-rows", "huge-outliers", "all-sink", "random-sinks", "nan", "inf",
                      "scaled-rows", "lane-cluster", "ties", "subnormal", "zeros", "channel-outliers"};
  const int nkinds = (int)(sizeof kn / sizeof *kn);
  for (int dt = 1; dt <= 2; dt++) {
    int done = 0;
    for (const cfg &c : cfgs)
      for (int kind = 0; kind < nkinds; kind++) {
        if (done++ >= limit) break;
        kvs__qparams p = {c.G, c.C, c.vg, c.kb, c.vb, c.ko, c.vo, (kvs_dtype)dt};
        size_t n = (size_t)c.G * c.C;
        std::vector<uint16_t> k(n), v(n);
        uint64_t mask = 0, full = c.G == 64 ? ~0ull : ((1ull << c.G) - 1);
        const uint32_t hot = (uint32_t)(xr() % 32);
        for (size_t i = 0; i < n; i++) {
          const uint32_t r = (uint32_t)(i / c.C), ch = (uint32_t)(i % c.C);
          float a = gauss(), b = gauss();
          if (kind == 0 && xr() % 16 == 0) { a = (xr() & 1) ? -0.f : 0.f; b = (xr() & 1) ? -0.f : 0.f; }
          if (kind == 1) { a = (float)(i / c.C % 5) - 2.f; b = 0.5f; }
          if (kind == 2 && xr() % 50 == 0) { a *= 3000.f; b *= -1000.f; }
          if (kind == 7) { float s = ldexpf(1.f, (int)((r * 7) % 11) - 5); a *= s; b *= s; }
          if (kind == 8 && ((ch >> 3) & 31) == hot) { a *= 8.f; b *= 6.f; }
          if (kind == 9) { a = (float)((int)(xr() % 7) - 3); b = (float)((int)(xr() % 5) - 2) * 0.25f; }
          if (kind == 10) { a = gauss() * 1e-6f; b = gauss() * 1e-39f; }
          if (kind == 11) { a = (xr() & 1) ? -0.f : 0.f; b = 0.f; }
          if (kind == 12 && ch % 97 == 5) { a *= 20.f; b *= 15.f; }
          k[i] = kvs__f32_to_h(a * 1.5f + (kind == 10 || kind == 11 ? 0.f : 0.3f), dt);
          v[i] = kvs__f32_to_h(b, dt);
        }
        if (kind == 3) mask = full;
        if (kind == 4 || kind == 2) mask = xr() & xr() & full;
        if (kind == 5) { (xr() & 1 ? k : v)[xr() % n] = dt == 2 ? 0x7fc0 : 0x7e00; }
        if (kind == 6) {
          size_t at = xr() % n;
          (xr() & 1 ? k : v)[at] = dt == 2 ? 0xff80 : 0xfc00;
          if (xr() & 1) mask |= 1ull << (at / c.C);
        }
        char name[160];
        snprintf(name, sizeof name, "%s G%u C%u vg%u k%u v%u ko%u vo%u %s", dt == 2 ? "bf16" : "fp16", c.G, c.C,
                 c.vg, c.kb, c.vb, c.ko, c.vo, kn[kind]);
        one_case(name, p, k, v, mask, false);
      }
  }
  printf("quant_emu: %d cases (%d of them also by copy16), %d failures\n", cases, copies, failures);
  if (!copies) { printf("FAIL: no case took the copy kernel\n"); failures++; }
  printf("%d passed, %d failed\n", cases - failures, failures);
  return failures ? 1 : 0;
}
