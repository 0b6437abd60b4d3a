/* The CUDA decode-attention kernels (kernels/attn_dev.cuh, the code
 * attn.cu launches) run on the CPU against the C reference
 * (kernels/attn.c), so that make check covers their logic on machines
 * without a GPU: one std::thread per CUDA thread, std::barrier for
 * __syncthreads and for warp shuffles, one CUDA block at a time.
 * Timing and memory-model effects of the GPU are out of its reach
 * (tests/gpu/attn.sh covers those). Built and run by attn_emu.sh. */
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cmath>
#include <thread>
#include <barrier>
#include <mutex>
#include <vector>
#include <algorithm>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
struct emu_dim { unsigned x, y, z; };
thread_local emu_dim threadIdx, blockIdx;
emu_dim blockDim, gridDim;
#include "tests/kernels/emu_host.h"
float sm[1 << 17]; /* the kernel's extern __shared__ array: one CUDA block at a time */
static std::barrier<> *bar;
static std::barrier<> *wbar[4];
static float wx[4][32];
static std::mutex amu;
static void __syncthreads() { bar->arrive_and_wait(); }
static float __shfl_xor_sync(unsigned, float v, int off)
{
  int w = threadIdx.x / 32, l = threadIdx.x % 32;
  wx[w][l] = v;
  wbar[w]->arrive_and_wait();
  float r = wx[w][l ^ off];
  wbar[w]->arrive_and_wait();
  return r;
}
static uint32_t __shfl_xor_sync(unsigned m, uint32_t v, int off)
{
  float f, r;
  memcpy(&f, &v, 4);
  r = __shfl_xor_sync(m, f, off);
  memcpy(&v, &r, 4);
  return v;
}
static int __any_sync(unsigned, int p)
{
  int w = threadIdx.x / 32, l = threadIdx.x % 32, r = 0;
  wx[w][l] = p ? 1.f : 0.f;
  wbar[w]->arrive_and_wait();
  for (int i = 0; i < 32; i++) r |= wx[w][i] != 0.f;
  wbar[w]->arrive_and_wait();
  return r;
}
static int atomicMin(int *p, int v) { std::lock_guard<std::mutex> g(amu); int o = *p; if (v < o) *p = v; return o; }
static float atomicAdd(float *p, float v) { std::lock_guard<std::mutex> g(amu); float o = *p; *p = o + v; return o; }
static int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
static float __uint_as_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static uint32_t min(uint32_t a, uint32_t b) { return a < b ? a : b; }
static void __syncwarp() { wbar[threadIdx.x / 32]->arrive_and_wait(); }
/* The tensor-core kernel's three device primitives (kernels/attn_tc.cuh):
 * mma.m16n8k16 (and the integer m16n8k32) through the PTX fragment layouts (every lane posts its
 * registers, each computes its own accumulators), byte permute and bf16
 * rounding (to nearest even). */
#define KVS_ATTN_EMU 1
#define TC_SHARED static
static uint32_t mma_a[4][32][4], mma_b[4][32][2];
static float bf(uint32_t pair, int hi) { uint32_t u = hi ? pair & 0xffff0000u : pair << 16; float f; memcpy(&f, &u, 4); return f; }
static void tc_mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1)
{
  const int w = threadIdx.x / 32, l = threadIdx.x % 32, g = l / 4, t = l % 4;
  for (int i = 0; i < 4; i++) mma_a[w][l][i] = a[i];
  mma_b[w][l][0] = b0; mma_b[w][l][1] = b1;
  wbar[w]->arrive_and_wait();
  auto A = [&](int r, int k) { return bf(mma_a[w][(r % 8) * 4 + (k % 8) / 2][(r >= 8) + 2 * (k >= 8)], k % 2); };
  auto B = [&](int k, int n) { return bf(mma_b[w][n * 4 + (k % 8) / 2][k >= 8], k % 2); };
  for (int e = 0; e < 4; e++) {
    const int r = g + 8 * (e >> 1), n = 2 * t + (e & 1);
    double s = 0;
    for (int k = 0; k < 16; k++) s += (double)A(r, k) * B(k, n);
    d[e] += (float)s;
  }
  wbar[w]->arrive_and_wait();
}
/* mma.m16n8k32 u8 x s8 -> s32, the same way */
static void tc_mma8(int (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1)
{
  const int w = threadIdx.x / 32, l = threadIdx.x % 32, g = l / 4, t = l % 4;
  for (int i = 0; i < 4; i++) mma_a[w][l][i] = a[i];
  mma_b[w][l][0] = b0; mma_b[w][l][1] = b1;
  wbar[w]->arrive_and_wait();
  auto A = [&](int r, int k) { return (int)(uint8_t)(mma_a[w][(r % 8) * 4 + (k % 16) / 4][(r >= 8) + 2 * (k >= 16)] >> (8 * (k % 4))); };
  auto B = [&](int k, int n) { return (int)(int8_t)(uint8_t)(mma_b[w][n * 4 + (k % 16) / 4][k >= 16] >> (8 * (k % 4))); };
  for (int e = 0; e < 4; e++) {
    const int r = g + 8 * (e >> 1), n = 2 * t + (e & 1);
    int s = 0;
    for (int k = 0; k < 32; k++) s += A(r, k) * B(k, n);
    d[e] += s;
  }
  wbar[w]->arrive_and_wait();
}
static int __float_as_int(float x) { int i; memcpy(&i, &x, 4); return i; }
static uint32_t tc_perm(uint32_t x, uint32_t y, uint32_t s)
{
  const uint64_t v = (uint64_t)y << 32 | x;
  uint32_t r = 0;
  for (int i = 0; i < 4; i++) r |= (uint32_t)((v >> (8 * ((s >> (4 * i)) & 7u))) & 0xffu) << (8 * i);
  return r;
}
static uint32_t bf16_rne(float f)
{
  uint32_t u;
  memcpy(&u, &f, 4);
  return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16; /* finite inputs only */
}
static uint32_t tc_bf2(float lo, float hi) { return bf16_rne(lo) | bf16_rne(hi) << 16; }
/* cp.async: the copy at once (the stage is read only after the wait and a
 * barrier on the GPU too) */
static void tc_cp16(void *dst, const void *src) { memcpy(dst, src, 16); }
static void tc_cp_commit() {}
static void tc_cp_wait1() {}
#include "kernels/attn_dev.cuh"
#include "kernels/attn_tc.cuh"
#include "kernels/attn_io_dev.cuh" /* kvs_attend_device's helpers: lse, q to fp32 */
extern "C" {
#include "kernels/half.h"
}

/* One launch: every CUDA block in turn, 128 threads each; then the
 * combine kernel, which has no barrier, one thread after the other. */
template <int GQ>
static void run(const at_args &a, uint32_t nkv, uint32_t n, const kvs__attn_seq *seqs, const float *q, float *out, float *ws_acc, float *ws_ml, int *st)
{
  blockDim = {128, 1, 1};
  gridDim = {a.splits, nkv, n};
  for (uint32_t z = 0; z < n; z++)
    for (uint32_t y = 0; y < nkv; y++)
      for (uint32_t x = 0; x < a.splits; x++) {
        std::barrier<> b(128);
        std::barrier<> w0(32), w1(32), w2(32), w3(32);
        bar = &b; wbar[0] = &w0; wbar[1] = &w1; wbar[2] = &w2; wbar[3] = &w3;
        memset(sm, 0xff, sizeof sm); /* NaN garbage: uninitialized reads show */
        std::vector<std::thread> th;
        for (unsigned t = 0; t < 128; t++)
          th.emplace_back([&, t] { threadIdx = {t, 0, 0}; blockIdx = {x, y, z}; kvs_attn_kernel<GQ>(a, seqs, q, ws_acc, ws_ml, st); });
        for (auto &t : th) t.join();
      }
  for (uint32_t z = 0; z < n; z++)
    for (uint32_t h = 0; h < a.nq; h++) {
      unsigned nt = a.D < 128 ? a.D : 128;
      for (unsigned t = 0; t < nt; t++) {
        threadIdx = {t, 0, 0}; blockIdx = {h, z, 0}; blockDim = {nt, 1, 1};
        kvs_attn_combine(ws_acc, ws_ml, a.splits, a.D, a.nq, out);
      }
    }
}

/* The same for kvs_attn_tc (4 warps of 32, static shared memory). */
template <int KB, int VB, bool L1>
static void run_tc_(const at_args &a, uint32_t nkv, uint32_t n, const kvs__attn_seq *seqs, const float *q, float *out, float *ws_acc, float *ws_ml, int *st)
{
  blockDim = {TC_NW * 32, 1, 1};
  gridDim = {a.splits, nkv, n};
  for (uint32_t z = 0; z < n; z++)
    for (uint32_t y = 0; y < nkv; y++)
      for (uint32_t x = 0; x < a.splits; x++) {
        std::barrier<> b(TC_NW * 32);
        std::barrier<> w0(32), w1(32), w2(32), w3(32);
        bar = &b; wbar[0] = &w0; wbar[1] = &w1; wbar[2] = &w2; wbar[3] = &w3;
        std::vector<std::thread> th;
        for (unsigned t = 0; t < TC_NW * 32; t++)
          th.emplace_back([&, t] { threadIdx = {t, 0, 0}; blockIdx = {x, y, z}; kvs_attn_tc<KB, VB, L1>(a, seqs, q, ws_acc, ws_ml, st); });
        for (auto &t : th) t.join();
      }
  for (uint32_t z = 0; z < n; z++)
    for (uint32_t h = 0; h < a.nq; h++)
      for (unsigned t = 0; t < 128; t++) {
        threadIdx = {t, 0, 0}; blockIdx = {h, z, 0}; blockDim = {128, 1, 1};
        kvs_attn_combine(ws_acc, ws_ml, a.splits, a.D, a.nq, out);
      }
}
static void run_tc(const at_args &a, uint32_t nkv, uint32_t n, const kvs__attn_seq *seqs, const float *q, float *out, float *ws_acc, float *ws_ml, int *st)
{
  const bool l1 = a.vg % TC_D == 0;
#define TC_RUN(K, V) (l1 ? run_tc_<K, V, true>(a, nkv, n, seqs, q, out, ws_acc, ws_ml, st) : run_tc_<K, V, false>(a, nkv, n, seqs, q, out, ws_acc, ws_ml, st))
  if (a.kb == 2) { if (a.vb == 2) TC_RUN(2, 2); else TC_RUN(2, 4); }
  else { if (a.vb == 2) TC_RUN(4, 2); else TC_RUN(4, 4); }
#undef TC_RUN
}

static uint64_t rng = 0x243f6a8885a308d3ull;
static uint32_t rnd() { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return (uint32_t)(rng >> 11); }
static double unif() { return ((double)(rnd() & 0xffffff) + 0.5) / 16777216.0; }
static float gauss() { return (float)(sqrt(-2.0 * log(unif())) * cos(6.283185307179586 * unif())); }
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
struct tc_ { uint32_t kb, vb, G, vg, kvh, d, g, perm; kvs_dtype dt; };
int main(int argc, char **argv)
{
  std::vector<std::pair<uint32_t,uint32_t>> lens = {{5, 7}, {3, 0}, {1, 0}, {0, 9}, {2, 1}, {0, 0}, {40, 13}};
  tc_ cases[] = {
    {2, 2, 32, 128, 2, 128, 4, 0, KVS_DTYPE_F16}, {3, 3, 32, 128, 2, 128, 4, 10, KVS_DTYPE_F16},
    {4, 4, 32, 64, 2, 128, 4, 10, KVS_DTYPE_F16}, {8, 8, 32, 128, 2, 64, 2, 10, KVS_DTYPE_F16},
    {16, 16, 32, 128, 2, 128, 4, 0, KVS_DTYPE_F16}, {2, 4, 32, 64, 2, 128, 1, 10, KVS_DTYPE_F16},
    {4, 2, 32, 32, 2, 64, 4, 10, KVS_DTYPE_BF16}, {2, 2, 7, 32, 2, 32, 8, 10, KVS_DTYPE_F16},
    {3, 16, 64, 256, 1, 256, 4, 10, KVS_DTYPE_BF16}, {2, 3, 17, 8, 2, 128, 4, 50, KVS_DTYPE_F16},
    {3, 3, 1, 64, 2, 64, 4, 0, KVS_DTYPE_F16},
    /* shapes the tensor-core kernel takes: every width pair, both value
     * layouts (whole-head and 32-channel groups), G 16/32/64, g 1/2/4,
     * outliers, bf16 */
    {4, 4, 32, 128, 2, 128, 4, 0, KVS_DTYPE_F16}, {2, 4, 16, 32, 2, 128, 2, 10, KVS_DTYPE_F16},
    {4, 2, 64, 64, 2, 128, 1, 20, KVS_DTYPE_BF16}, {2, 2, 32, 256, 2, 128, 4, 10, KVS_DTYPE_BF16},
    /* 2/2 bits take the staged (cp.async) path: its 32- and 64-channel
     * value groups, G 16 and 64 */
    {2, 2, 16, 32, 2, 128, 2, 0, KVS_DTYPE_F16}, {2, 2, 64, 64, 2, 128, 4, 10, KVS_DTYPE_BF16},
  };
  int bad = 0;
  unsigned only = argc > 1 ? atoi(argv[1]) : 999;
  for (unsigned ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
    if (only != 999 && ci != only) continue;
    const tc_ &tc = cases[ci];
    kvs__attn_shape sh{};
    sh.qp = kvs__qparams{tc.G, tc.kvh * tc.d, tc.vg, tc.kb, tc.vb, 0, 0, tc.dt};
    sh.qp.k_outliers = sh.qp.v_outliers = kvs__outlier_count(sh.qp.channels, tc.perm / 1000.f);
    sh.n_kv_heads = tc.kvh; sh.n_q_heads = tc.kvh * tc.g; sh.head_dim = tc.d;
    const uint32_t G = tc.G, C = sh.qp.channels, n = lens.size();
    kvs__qlayout l; size_t tot = kvs__qlayout_of(&sh.qp, &l);
    std::vector<kvs__attn_seq> seqs(n);
  std::vector<std::vector<uint16_t>> KD(n), VD(n); std::vector<std::vector<uint8_t>> QZ(n);
    uint32_t maxt = 0;
    for (uint32_t i = 0; i < n; i++) {
      uint32_t nb = lens[i].first, nres = lens[i].second, T = nb * G + nres;
      maxt = std::max(maxt, T);
      uint16_t *k = (uint16_t *)aligned_alloc(64, ((size_t)T * C * 2 + 64) / 64 * 64), *v = (uint16_t *)aligned_alloc(64, ((size_t)T * C * 2 + 64) / 64 * 64);
      std::vector<uint8_t> sink(T + 1, 0);
      /* the last cases: sinks rare, so that most 16-token tiles have none (the tensor cores' fast path) */
      for (uint32_t t = 0; t < nb * G; t++) sink[t] = t == 0 || (rnd() & (ci >= 11 ? 255u : 7u)) == 0;
      fill(k, T, C, sink.data(), tc.dt); fill(v, T, C, sink.data(), tc.dt);
      kvs__attn_block *views = new kvs__attn_block[nb + 1];
      KD[i].assign((size_t)T*C+1,0); VD[i].assign((size_t)T*C+1,0); QZ[i].assign(T+1,0);
      memcpy(KD[i].data()+(size_t)nb*G*C, k+(size_t)nb*G*C, 2ull*nres*C); memcpy(VD[i].data()+(size_t)nb*G*C, v+(size_t)nb*G*C, 2ull*nres*C);
      for (uint32_t b = 0; b < nb; b++) {
        uint64_t mask = 0;
        for (uint32_t r = 0; r < G; r++) if (sink[b * G + r]) mask |= 1ull << r;
        uint16_t **rows = new uint16_t *[G + 1];
        uint32_t ns = 0;
        for (uint32_t r = 0; r < G; r++) if ((mask >> r) & 1) rows[ns++] = (uint16_t *)aligned_alloc(64, (kvs__sink_row_bytes(&sh.qp) + 63) / 64 * 64);
        void *blk = aligned_alloc(256, (tot + 255) / 256 * 256);
        if (kvs__quantize_block(&sh.qp, k + (size_t)b * G * C, v + (size_t)b * G * C, mask, blk, rows)) { printf("quant fail\n"); return 1; }
        views[b] = kvs__attn_block{blk, (const uint16_t *const *)rows, mask};
        kvs__dequantize_block(&sh.qp, blk, (const uint16_t *const *)rows, 0, G, KD[i].data()+(size_t)b*G*C, VD[i].data()+(size_t)b*G*C);
        for (uint32_t r = 0; r < G; r++) QZ[i][b*G+r] = !((mask>>r)&1);
      }
      seqs[i] = kvs__attn_seq{views, nb, nres, k + (size_t)nb * G * C, v + (size_t)nb * G * C};
    }
    const size_t qn = (size_t)sh.n_q_heads * tc.d;
    std::vector<float> q(qn * n), ref(qn * n), out(qn * n, NAN), lref(n * sh.n_q_heads), lse(n * sh.n_q_heads, NAN);
    for (auto &x : q) x = gauss();
    if (kvs__attn_decode_lse(&sh, seqs.data(), n, q.data(), ref.data(), lref.data())) { printf("ref fail\n"); return 1; }
    at_args a;
    if (at_fill(&sh, &a)) { printf("at_fill refused\n"); return 1; }
    /* split as kvs__cuda_attn_make_plan does on an H100 (132 SMs) */
    if (at_plan(a, n, tc.kvh, maxt, 132 * 3, &a.span, &a.splits)) { printf("FAIL: plan\n"); return 1; }
    /* kvs_attn_kernel, then the tensor-core kernel where it takes the shape */
    for (int tcv = 0; tcv < 2; tcv++) {
    if (tcv && !at_tc_ok(a, tc.g, true)) break; /* outliers too (KVSINK_ATTN_TC=1) */
    /* the tensor-core kernel on long spans too (few slots: few splits), so
     * that its warps go through many tiles and both load buffers */
    if (tcv && at_plan(a, n, tc.kvh, maxt, 2, &a.span, &a.splits)) { printf("FAIL: plan\n"); return 1; }
    size_t parts = (size_t)n * a.nq * a.splits;
    std::vector<float> ws(parts * (2 + tc.d), NAN);
    std::fill(out.begin(), out.end(), NAN);
    int st = 0;
    if (tcv) run_tc(a, tc.kvh, n, seqs.data(), q.data(), out.data(), ws.data() + 2 * parts, ws.data(), &st);
    else switch (tc.g) {
    case 1: run<1>(a, tc.kvh, n, seqs.data(), q.data(), out.data(), ws.data() + 2 * parts, ws.data(), &st); break;
    case 2: run<2>(a, tc.kvh, n, seqs.data(), q.data(), out.data(), ws.data() + 2 * parts, ws.data(), &st); break;
    case 4: run<4>(a, tc.kvh, n, seqs.data(), q.data(), out.data(), ws.data() + 2 * parts, ws.data(), &st); break;
    default: run<8>(a, tc.kvh, n, seqs.data(), q.data(), out.data(), ws.data() + 2 * parts, ws.data(), &st); break;
    }
    /* kvs_attend_device's lse from the workspace (kvs_lse), one thread
     * per (seq, head) */
    blockDim = {128, 1, 1};
    for (uint32_t i = 0; i < n * a.nq; i++) {
      blockIdx = {i / 128, 0, 0}; threadIdx = {i % 128, 0, 0};
      kvs_lse(ws.data(), n * a.nq, a.splits, lse.data());
    }
    double lworst = 0;
    int lbad = 0;
    /* the bound of tests/gpu/attn_test.cu (derived there): the kernel
     * keeps dequantized values in fp32 where the reference rounds them
     * to the dtype, and sums in other orders */
    double worst = 0, frac = 0;
    for (uint32_t i = 0; i < n; i++)
      for (uint32_t h = 0; h < sh.n_q_heads; h++) {
        uint32_t j = h / tc.g, T = lens[i].first * G + lens[i].second, d = tc.d;
        double vmax = 0, eps = ldexp(1.0, tc.dt == KVS_DTYPE_BF16 ? -8 : -11), delta = 0;
        for (uint32_t t = 0; t < T; t++) {
          double sacc = 0;
          for (uint32_t c = 0; c < d; c++) {
            vmax = std::max(vmax, (double)fabsf(kvs__h_to_f32(VD[i][(size_t)t*C + j*d + c], tc.dt)));
            sacc += fabs((double)q[qn*i + h*d + c] * kvs__h_to_f32(KD[i][(size_t)t*C + j*d + c], tc.dt));
          }
          double e = (tc.kb != 16 && QZ[i][t] ? eps : 0) + d * ldexp(1.0, -23);
          delta = std::max(delta, e * sacc / sqrt((double)d));
        }
        double sums = std::max(1e-5, 2.0 * T * ldexp(1.0, -24));
        double bound = (exp(2*delta)-1)*vmax + (tc.vb != 16 ? eps : 0)*vmax + sums*vmax + 1e-30;
        /* lse: every score moves by at most delta; fp32 sums and the log */
        const float lr = lref[(size_t)i * sh.n_q_heads + h], lg = lse[(size_t)i * sh.n_q_heads + h];
        if (T == 0) {
          if (!(lr == -INFINITY && lg == -INFINITY)) lbad++;
        } else {
          double le = fabs((double)lg - lr), lb = delta + 4.0 * T * ldexp(1.0, -24) + fabs(lr) * ldexp(1.0, -21) + 1e-6;
          if (!(le <= lb)) lbad++;
          lworst = std::max(lworst, le);
        }
        for (uint32_t c = 0; c < tc.d; c++) {
          double e = fabs((double)out[qn * i + h * tc.d + c] - ref[qn * i + h * tc.d + c]);
          if (!(e <= 1e30)) e = 1e30;
          worst = std::max(worst, e / (vmax > 0 ? vmax : 1));
          frac = std::max(frac, e / bound);
        }
      }
    if (!(frac <= 1)) bad++;
    if (lbad) bad++;
    printf("case %u%s k%u v%u G%u vg%u g%u d%u %s out%u: splits %u span %u st %d  max err %.3g of max|v|, %.0f%% of bound; lse max err %.3g%s\n", ci, tcv ? " (tensor cores)" : "", tc.kb, tc.vb, tc.G, tc.vg, tc.g, tc.d,
           tc.dt == KVS_DTYPE_BF16 ? "bf16" : "fp16", tc.perm, a.splits, a.span, st, worst, 100 * frac, lworst,
           (lbad || !(frac <= 1)) ? " FAIL" : "");
    if (st) bad++;
    }
  }
  /* q widened on the device (kvs_to_f32) == kvs_half_to_f32, every 16-bit pattern */
  {
    std::vector<uint16_t> hx(65536);
    std::vector<float> d(65536), r(65536);
    for (uint32_t i = 0; i < 65536; i++) hx[i] = (uint16_t)i;
    for (int dt = KVS_DTYPE_F16; dt <= KVS_DTYPE_BF16; dt++) {
      gridDim = {4, 1, 1}; blockDim = {256, 1, 1};
      for (uint32_t bx = 0; bx < 4; bx++)
        for (uint32_t t = 0; t < 256; t++) {
          blockIdx = {bx, 0, 0}; threadIdx = {t, 0, 0};
          kvs_to_f32(d.data(), hx.data(), 65536, dt == KVS_DTYPE_BF16);
        }
      kvs__h_to_f32_n(r.data(), hx.data(), 65536, dt);
      for (uint32_t i = 0; i < 65536; i++)
        if (!(std::isnan(d[i]) && std::isnan(r[i])) && memcmp(&d[i], &r[i], 4)) {
          printf("FAIL: kvs_to_f32 dtype %d, 0x%04x: %g, host %g\n", dt, i, d[i], r[i]);
          bad++;
          break;
        }
    }
    printf("q to fp32 (fp16 and bf16, all 65536 patterns each): checked against the host conversion\n");
  }
  return bad ? 1 : 0;
}
