/* SPDX-License-Identifier: MIT */
/* GPU test and benchmark of kernels/attn.cu (decode attention over
 * compressed blocks). Built and run by tests/gpu/attn.sh.
 *   attn_test check        CUDA kernel vs the C reference (kernels/attn.c)
 *   attn_test bench CSV    time per decode step at 2/3/4 bits, contexts
 *                          4k..128k, batch 1/8/64, 32 query / 8 KV heads,
 *                          head dim 128; one CSV row per combination
 * Exit status 1 on any mismatch. */
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "kernels/cuda.h"
extern "C" {
#include "kernels/half.h"
}

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { \
  fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); exit(2); } } while (0)

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return (uint32_t)(rng >> 11); }
static double unif(void) { return ((double)(rnd() & 0xffffff) + 0.5) / 16777216.0; }
static float gauss(void) { return (float)(sqrt(-2.0 * log(unif())) * cos(6.283185307179586 * unif())); }

static int failures;

/* One arena on the host mirrored at one device address: pointers stored
 * inside it (views, sink-row lists) are device pointers. */
struct arena {
  uint8_t *h = nullptr, *d = nullptr;
  size_t cap = 0, used = 0;
  explicit arena(size_t n) : cap(n) {
    h = (uint8_t *)calloc(n, 1);
    CK(cudaMalloc((void **)&d, n));
  }
  ~arena() { free(h); cudaFree(d); }
  size_t take(size_t n, size_t align = 256) {
    used = (used + align - 1) / align * align;
    size_t o = used;
    used += n;
    if (used > cap) { fprintf(stderr, "arena full\n"); exit(2); }
    return o;
  }
  template <typename T> T *hp(size_t o) { return (T *)(h + o); }
  template <typename T> T *dp(size_t o) { return (T *)(d + o); }
  void upload() { CK(cudaMemcpy(d, h, used, cudaMemcpyHostToDevice)); }
};

struct tcase {
  uint32_t kb, vb, G, vg, kvh, d, g, out_permille;
  kvs_dtype dt;
  uint32_t sinks = 7; /* a row is a sink with odds 1 in sinks + 1 (and row 0) */
};

/* K/V rows N(0,1); sink rows 8x + 4 (massive activations), about one
 * element in 64 of the others 10x (outliers). */
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

/* Tolerance. The kernel dequantizes keys and values in fp32 without the
 * reference's rounding to the dtype, so each quantized element differs by
 * at most eps = 2^-(p+1) of itself (p = 10 mantissa bits for fp16, 7 for
 * bf16). A score then moves by at most delta = eps * sum_c |q_c k_c| /
 * sqrt(d) (max over the quantized rows), the softmax weights by a factor
 * within exp(+-2 delta), so an output moves by at most
 * (exp(2 delta) - 1) * max|v| + eps * max|v|. Sink rows, 16-bit widths
 * and the residual are exact on both sides; for every row both sides sum
 * a d-term dot product in fp32 in different orders, which adds
 * d * 2^-23 * sum_c |q_c k_c| / sqrt(d) to delta (the classic bound for
 * two recursive sums), and the T-term softmax sums add 2 T 2^-24 * max|v|
 * (at least 1e-5 * max|v|; the host test sees 1.3e-6 against double). */
static double case_bound(const tcase &tc, const kvs__qparams &p, const std::vector<uint16_t> &kdq,
                         const std::vector<uint8_t> &quantized, uint32_t T, const float *q, uint32_t h,
                         double vmax)
{
  const double pbits = tc.dt == KVS_DTYPE_BF16 ? 7 : 10, eps = ldexp(1.0, -(int)pbits - 1);
  const uint32_t d = tc.d, j = h / tc.g, C = p.channels;
  double delta = 0;
  for (uint32_t t = 0; t < T; t++) {
    double s = 0;
    for (uint32_t c = 0; c < d; c++)
      s += fabs((double)q[(size_t)h * d + c] * kvs__h_to_f32(kdq[(size_t)t * C + j * d + c], (int)tc.dt));
    double e = (tc.kb != 16 && quantized[t] ? eps : 0) + d * ldexp(1.0, -23);
    delta = std::max(delta, e * s / sqrt((double)d));
  }
  const double sums = std::max(1e-5, 2.0 * T * ldexp(1.0, -24)); /* T-term fp32 sums on both sides */
  return (exp(2 * delta) - 1) * vmax + (tc.vb != 16 ? eps : 0) * vmax + sums * vmax;
}

static void run_case(const tcase &tc, const std::vector<std::pair<uint32_t, uint32_t>> &lens, kvs__cuda_ctx &ctx,
                     double &worst_rel)
{
  kvs__attn_shape sh{};
  sh.qp = kvs__qparams{tc.G, tc.kvh * tc.d, tc.vg, tc.kb, tc.vb, 0, 0, tc.dt};
  sh.qp.k_outliers = sh.qp.v_outliers = kvs__outlier_count(sh.qp.channels, tc.out_permille / 1000.f);
  sh.n_kv_heads = tc.kvh;
  sh.n_q_heads = tc.kvh * tc.g;
  sh.head_dim = tc.d;
  const uint32_t G = tc.G, C = sh.qp.channels, n = (uint32_t)lens.size(), nq = sh.n_q_heads;
  kvs__qlayout l;
  const size_t tot = kvs__qlayout_of(&sh.qp, &l), rowb = kvs__sink_row_bytes(&sh.qp);
  arena A(256u << 20);
  std::vector<std::vector<kvs__attn_block>> hviews(n);
  std::vector<std::vector<const uint16_t *>> hrows(n);
  std::vector<kvs__attn_seq> hseq(n);
  std::vector<std::vector<uint16_t>> K(n), V(n);   /* the dequantized (get) values, for the bound */
  std::vector<std::vector<uint8_t>> quant(n);
  size_t dseq_off = A.take(sizeof(kvs__attn_seq) * n);
  uint32_t max_t = 0;
  for (uint32_t i = 0; i < n; i++) {
    const uint32_t nb = lens[i].first, nres = lens[i].second, T = nb * G + nres;
    max_t = std::max(max_t, T);
    std::vector<uint16_t> k((size_t)T * C + 1), v((size_t)T * C + 1);
    std::vector<uint8_t> sink(T + 1, 0);
    for (uint32_t t = 0; t < nb * G; t++) sink[t] = t == 0 || (rnd() & tc.sinks) == 0;
    fill(k.data(), T, C, sink.data(), (int)tc.dt);
    fill(v.data(), T, C, sink.data(), (int)tc.dt);
    K[i].assign((size_t)T * C + 1, 0);
    V[i].assign((size_t)T * C + 1, 0);
    quant[i].assign(T + 1, 0);
    size_t vo = A.take(sizeof(kvs__attn_block) * (nb + 1));
    hviews[i].resize(nb);
    hrows[i].clear();
    hrows[i].reserve((size_t)nb * G);
    for (uint32_t b = 0; b < nb; b++) {
      uint64_t mask = 0;
      for (uint32_t r = 0; r < G; r++)
        if (sink[b * G + r]) mask |= 1ull << r;
      uint32_t ns = (uint32_t)__builtin_popcountll(mask);
      size_t bo = A.take(tot), lo = A.take(sizeof(uint16_t *) * (ns + 1), 16);
      std::vector<uint16_t *> hr(ns + 1);
      for (uint32_t r = 0; r < ns; r++) {
        size_t ro = A.take(rowb, 16);
        hr[r] = A.hp<uint16_t>(ro);
        A.hp<uint16_t *>(lo)[r] = A.dp<uint16_t>(ro);
      }
      if (kvs__quantize_block(&sh.qp, k.data() + (size_t)b * G * C, v.data() + (size_t)b * G * C, mask,
                              A.hp<void>(bo), hr.data())) {
        printf("FAIL: quantize\n");
        failures++;
        return;
      }
      kvs__dequantize_block(&sh.qp, A.hp<void>(bo), (const uint16_t *const *)hr.data(), 0, G,
                            K[i].data() + (size_t)b * G * C, V[i].data() + (size_t)b * G * C);
      for (uint32_t r = 0; r < G; r++) quant[i][b * G + r] = !sink[b * G + r];
      /* host view: host pointers; a copy of the row list lives in hrows */
      size_t first = hrows[i].size();
      for (uint32_t r = 0; r < ns; r++) hrows[i].push_back(hr[r]);
      hviews[i][b] = kvs__attn_block{A.hp<void>(bo), ns ? hrows[i].data() + first : nullptr, mask};
      A.hp<kvs__attn_block>(vo)[b] = kvs__attn_block{A.dp<void>(bo), ns ? A.dp<const uint16_t *>(lo) : nullptr, mask};
    }
    size_t rk = A.take(sizeof(uint16_t) * ((size_t)nres * C + 8), 16), rv = A.take(sizeof(uint16_t) * ((size_t)nres * C + 8), 16);
    memcpy(A.hp<uint16_t>(rk), k.data() + (size_t)nb * G * C, sizeof(uint16_t) * nres * C);
    memcpy(A.hp<uint16_t>(rv), v.data() + (size_t)nb * G * C, sizeof(uint16_t) * nres * C);
    memcpy(K[i].data() + (size_t)nb * G * C, k.data() + (size_t)nb * G * C, sizeof(uint16_t) * nres * C);
    memcpy(V[i].data() + (size_t)nb * G * C, v.data() + (size_t)nb * G * C, sizeof(uint16_t) * nres * C);
    hseq[i] = kvs__attn_seq{hviews[i].data(), nb, nres, A.hp<uint16_t>(rk), A.hp<uint16_t>(rv)};
    A.hp<kvs__attn_seq>(dseq_off)[i] =
        kvs__attn_seq{A.dp<kvs__attn_block>(vo), nb, nres, A.dp<uint16_t>(rk), A.dp<uint16_t>(rv)};
  }
  const size_t qn = (size_t)nq * tc.d;
  std::vector<float> q(qn * n), ref(qn * n), got(qn * n);
  for (auto &x : q) x = gauss();
  size_t qo = A.take(sizeof(float) * qn * n), oo = A.take(sizeof(float) * qn * n);
  memcpy(A.hp<float>(qo), q.data(), sizeof(float) * qn * n);
  kvs__cuda_attn_plan pl;
  if (kvs__cuda_attn_make_plan(&sh, n, max_t, &pl)) { printf("FAIL: plan\n"); failures++; return; }
  size_t wo = A.take(pl.ws_bytes + 16);
  A.upload();
  int rc = kvs__cuda_attn_decode(&ctx, &sh, &pl, A.dp<kvs__attn_seq>(dseq_off), A.dp<float>(qo), A.dp<float>(oo),
                                 A.dp<void>(wo));
  int rr = kvs__attn_decode(&sh, hseq.data(), n, q.data(), ref.data());
  if (rc || rr) {
    printf("FAIL: k%u v%u G%u g%u d%u: cuda %d, reference %d\n", tc.kb, tc.vb, tc.G, tc.g, tc.d, rc, rr);
    failures++;
    return;
  }
  CK(cudaMemcpy(got.data(), A.dp<float>(oo), sizeof(float) * qn * n, cudaMemcpyDeviceToHost));
  double worst = 0, worst_bound_frac = 0;
  for (uint32_t i = 0; i < n; i++) {
    const uint32_t T = lens[i].first * G + lens[i].second;
    for (uint32_t h = 0; h < nq; h++) {
      const uint32_t j = h / tc.g;
      double vmax = 0;
      for (uint32_t t = 0; t < T; t++)
        for (uint32_t c = 0; c < tc.d; c++)
          vmax = std::max(vmax, (double)fabsf(kvs__h_to_f32(V[i][(size_t)t * C + j * tc.d + c], (int)tc.dt)));
      double bound = case_bound(tc, sh.qp, K[i], quant[i], T, q.data() + qn * i, h, vmax) + 1e-30;
      for (uint32_t c = 0; c < tc.d; c++) {
        size_t e = qn * i + (size_t)h * tc.d + c;
        double err = fabs((double)got[e] - ref[e]);
        worst = std::max(worst, vmax > 0 ? err / vmax : err);
        worst_bound_frac = std::max(worst_bound_frac, err / bound);
        if (!(err <= bound)) {
          if (failures < 20)
            printf("FAIL: k%u v%u G%u vg%u g%u d%u dt%d seq %u (T %u) head %u ch %u: cuda %.8g ref %.8g err %.3g bound %.3g\n",
                   tc.kb, tc.vb, tc.G, tc.vg, tc.g, tc.d, (int)tc.dt, i, T, h, c, got[e], ref[e], err, bound);
          failures++;
        }
      }
    }
  }
  worst_rel = std::max(worst_rel, worst);
  printf("  k%-2u v%-2u G%-2u vg%-3u g%u d%-3u %s outl %u.%u%%: splits %u span %u  max err %.3g of max|v|, %.0f%% of bound\n",
         tc.kb, tc.vb, tc.G, tc.vg, tc.g, tc.d, tc.dt == KVS_DTYPE_BF16 ? "bf16" : "fp16", tc.out_permille / 10,
         tc.out_permille % 10, pl.splits, pl.span, worst, 100 * worst_bound_frac);
}

static int check(void)
{
  kvs__cuda_ctx ctx;
  if (kvs__cuda_ctx_init(&ctx)) { printf("FAIL: ctx\n"); return 1; }
  /* several blocks with an odd residual, zero residual, one block,
   * residual only, an empty sequence, and a long one (split-K) */
  const std::vector<std::pair<uint32_t, uint32_t>> lens = {{5, 7}, {3, 0}, {1, 0}, {0, 9}, {2, 1}, {0, 0}, {200, 13}};
  const tcase cases[] = {
    {2, 2, 32, 128, 2, 128, 4, 0, KVS_DTYPE_F16},  {3, 3, 32, 128, 2, 128, 4, 0, KVS_DTYPE_F16},
    {4, 4, 32, 128, 2, 128, 4, 0, KVS_DTYPE_F16},  {8, 8, 32, 128, 2, 128, 4, 0, KVS_DTYPE_F16},
    {16, 16, 32, 128, 2, 128, 4, 0, KVS_DTYPE_F16}, {2, 4, 32, 64, 2, 128, 1, 10, KVS_DTYPE_F16},
    {4, 2, 32, 32, 2, 64, 4, 10, KVS_DTYPE_BF16},  {3, 3, 16, 64, 4, 64, 2, 10, KVS_DTYPE_F16},
    {2, 2, 7, 32, 2, 32, 8, 10, KVS_DTYPE_F16},    {3, 16, 64, 256, 1, 256, 4, 10, KVS_DTYPE_BF16},
    {2, 3, 17, 8, 2, 128, 4, 50, KVS_DTYPE_F16},   {4, 4, 32, 128, 8, 128, 4, 10, KVS_DTYPE_BF16},
    {2, 2, 32, 128, 8, 128, 4, 10, KVS_DTYPE_F16},  {3, 3, 1, 64, 2, 64, 4, 0, KVS_DTYPE_F16},
    /* the tensor-core kernel's shapes (kernels/attn_tc.cuh) with rare
     * sinks, so that most 16-token tiles take its fast path: every width
     * pair, value groups of the whole head and of 32/64 channels, G
     * 16/32/64, GQA 1/2/4, outliers, bf16 */
    {4, 4, 32, 128, 8, 128, 4, 0, KVS_DTYPE_F16, 255},  {2, 2, 32, 128, 8, 128, 4, 0, KVS_DTYPE_F16, 255},
    {2, 4, 16, 32, 2, 128, 2, 10, KVS_DTYPE_F16, 255},  {4, 2, 64, 64, 2, 128, 1, 20, KVS_DTYPE_BF16, 255},
    {4, 4, 32, 32, 8, 128, 4, 10, KVS_DTYPE_BF16, 255}, {2, 2, 32, 256, 2, 128, 4, 0, KVS_DTYPE_BF16, 255},
  };
  double worst = 0;
  for (const tcase &tc : cases) run_case(tc, lens, ctx, worst);
  kvs__cuda_ctx_close(&ctx);
  printf("attn check: %s, worst error %.3g of max|v|\n", failures ? "FAILED" : "ok", worst);
  return failures ? 1 : 0;
}

/* ---- benchmark ---------------------------------------------------------- */

/* K/V [n][C] fp16, N(0,1)-ish from a hash (sum of uniforms), seeded. */
static __global__ void gen_kv(__half *x, size_t n, uint32_t seed)
{
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    uint32_t h = (uint32_t)i * 0x9e3779b1u ^ seed * 0x85ebca6bu ^ (uint32_t)(i >> 32);
    float s = 0.f;
    for (int r = 0; r < 4; r++) {
      h ^= h >> 15; h *= 0x2c1b3c6du; h ^= h >> 12; h *= 0x297a2d39u; h ^= h >> 15;
      s += (float)(h & 0xffffu) * (1.f / 65536.f);
    }
    x[i] = __float2half((s - 2.f) * 1.7320508f);
  }
}

static float median(std::vector<float> v)
{
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

static int bench(const char *csv)
{
  FILE *f = fopen(csv, "w");
  if (!f) { perror(csv); return 2; }
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  kvs__cuda_ctx ctx;
  if (kvs__cuda_ctx_init(&ctx)) return 2;
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  /* copy bandwidth: read + write bytes per second of a 2 GiB D2D copy */
  double bw;
  {
    size_t nb = (size_t)2 << 30;
    void *a, *b;
    CK(cudaMalloc(&a, nb));
    CK(cudaMalloc(&b, nb));
    CK(cudaMemset(a, 1, nb));
    std::vector<float> ts;
    for (int r = 0; r < 8; r++) {
      CK(cudaEventRecord(e0));
      CK(cudaMemcpyAsync(b, a, nb, cudaMemcpyDeviceToDevice));
      CK(cudaEventRecord(e1));
      CK(cudaEventSynchronize(e1));
      float ms;
      CK(cudaEventElapsedTime(&ms, e0, e1));
      if (r) ts.push_back(ms);
    }
    bw = 2.0 * nb / (median(ts) / 1e3);
    CK(cudaFree(a));
    CK(cudaFree(b));
  }
  printf("device %s, D2D copy %.0f GB/s (read + write)\n", prop.name, bw / 1e9);
  fprintf(f, "device,%s\ncopy_bw_gbs,%.1f\nbits,T,B,us,bytes,limit_us\n", prop.name, bw / 1e9);

  const uint32_t KVH = 8, QH = 32, D = 128, C = KVH * D, G = 32;
  /* ATTN_PLAIN=1: no sink row and no residual (what those cost) */
  const bool plain = getenv("ATTN_PLAIN") != nullptr;
  const uint32_t NRES = plain ? 0 : 31;
  const uint32_t Ts[] = {4096, 16384, 32768, 65536, 131072}, Bs[] = {1, 8, 64}, bits_[] = {2, 3, 4};
  const uint32_t STAGE = 1024; /* blocks generated and quantized per launch */
  __half *sk, *sv;
  CK(cudaMalloc((void **)&sk, (size_t)STAGE * G * C * 2));
  CK(cudaMalloc((void **)&sv, (size_t)STAGE * G * C * 2));
  kvs__cuda_qjob *djobs;
  CK(cudaMalloc((void **)&djobs, sizeof(kvs__cuda_qjob) * STAGE));
  std::vector<kvs__cuda_qjob> jobs(STAGE);
  /* the grid without outliers; then 2 and 4 bits with 1 % outliers at
   * 32k x 8 (their cost: each KV head's CUDA block scans a row's list) */
  struct cfg { uint32_t bits, permille; bool grid; };
  /* ATTN_ONLY=BITS:T:B runs that case alone (for a profiler) */
  unsigned only_bits = 0, only_T = 0, only_B = 0;
  const char *ov = getenv("ATTN_ONLY");
  const bool only = ov && sscanf(ov, "%u:%u:%u", &only_bits, &only_T, &only_B) == 3;
  const cfg cfgs[] = {{bits_[0], 0, true}, {bits_[1], 0, true}, {bits_[2], 0, true}, {2, 10, false}, {4, 10, false}};
  for (const cfg &cf : cfgs) {
    const uint32_t bits = cf.bits;
    kvs__attn_shape sh{};
    sh.qp = kvs__qparams{G, C, D, bits, bits, 0, 0, KVS_DTYPE_F16};
    sh.qp.k_outliers = sh.qp.v_outliers = kvs__outlier_count(C, cf.permille / 1000.f);
    sh.n_kv_heads = KVH;
    sh.n_q_heads = QH;
    sh.head_dim = D;
    kvs__qlayout l;
    const size_t tot = kvs__qlayout_of(&sh.qp, &l), rowb = kvs__sink_row_bytes(&sh.qp);
    char label[32];
    snprintf(label, sizeof label, cf.permille ? "%u+%u.%u%%out" : "%u", bits, cf.permille / 10, cf.permille % 10);
    for (uint32_t T : Ts)
      for (uint32_t B : Bs) {
        if (!cf.grid && (T != 32768 || B != 8)) continue;
        if (only && (only_bits != bits || only_T != T || only_B != B || cf.permille)) continue;
        const uint32_t nb = T / G - 1, T1 = nb * G + NRES; /* a 31-token residual, as mid-group decoding has */
        const size_t nblk = (size_t)nb * B;
        /* pool: blocks, one sink row per sequence (token 0, PFN-1), its
         * one-entry row list, views, residuals, q/out, workspace */
        kvs__cuda_attn_plan pl;
        if (kvs__cuda_attn_make_plan(&sh, B, T1, &pl)) { fprintf(stderr, "plan failed\n"); return 2; }
        size_t need = nblk * tot + (size_t)B * (rowb + 64 + 2 * (size_t)NRES * C * 2 + sizeof(kvs__attn_seq)) +
                      nblk * sizeof(kvs__attn_block) + (size_t)B * QH * D * 8 + pl.ws_bytes + (64u << 20);
        size_t fr, tt;
        CK(cudaMemGetInfo(&fr, &tt));
        if (need > fr * 0.9) {
          printf("bits %s T %u B %u: skipped, needs %.1f GB of %.1f GB free\n", label, T, B, need / 1e9, fr / 1e9);
          fprintf(f, "%s,%u,%u,skip,%zu,\n", label, T, B, need);
          continue;
        }
        uint8_t *pool;
        CK(cudaMalloc((void **)&pool, need));
        uint8_t *blocks = pool;
        uint8_t *p = blocks + nblk * tot;
        auto carve = [&](size_t n) { uint8_t *r = p; p += (n + 255) / 256 * 256; return r; };
        uint16_t *rows = (uint16_t *)carve((size_t)B * rowb);
        uint16_t **rowlist = (uint16_t **)carve(sizeof(uint16_t *) * B);
        kvs__attn_block *views = (kvs__attn_block *)carve(nblk * sizeof(kvs__attn_block));
        kvs__attn_seq *seqs = (kvs__attn_seq *)carve(sizeof(kvs__attn_seq) * B);
        __half *res = (__half *)carve((size_t)B * 2 * NRES * C * 2);
        float *q = (float *)carve((size_t)B * QH * D * 4), *out = (float *)carve((size_t)B * QH * D * 4);
        void *ws = carve(pl.ws_bytes);
        /* host-built tables */
        std::vector<uint16_t *> hrl(B);
        std::vector<kvs__attn_block> hv(nblk);
        std::vector<kvs__attn_seq> hs(B);
        for (uint32_t s = 0; s < B; s++) {
          hrl[s] = rows + (size_t)s * rowb / 2;
          for (uint32_t b = 0; b < nb; b++) {
            size_t i = (size_t)s * nb + b;
            hv[i] = kvs__attn_block{blocks + i * tot, b == 0 && !plain ? (const uint16_t *const *)(rowlist + s) : nullptr,
                                    b == 0 && !plain ? 1ull : 0ull};
          }
          hs[s] = kvs__attn_seq{views + (size_t)s * nb, nb, NRES, (const uint16_t *)(res + (size_t)s * 2 * NRES * C),
                                (const uint16_t *)(res + (size_t)s * 2 * NRES * C + (size_t)NRES * C)};
        }
        CK(cudaMemcpy(rowlist, hrl.data(), sizeof(uint16_t *) * B, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(views, hv.data(), nblk * sizeof(kvs__attn_block), cudaMemcpyHostToDevice));
        CK(cudaMemcpy(seqs, hs.data(), sizeof(kvs__attn_seq) * B, cudaMemcpyHostToDevice));
        gen_kv<<<1024, 256>>>(res, (size_t)B * 2 * NRES * C, 7u);
        CK(cudaGetLastError());
        {
          std::vector<float> hq((size_t)B * QH * D);
          for (auto &x : hq) x = gauss();
          CK(cudaMemcpy(q, hq.data(), hq.size() * 4, cudaMemcpyHostToDevice));
        }
        /* quantize every block from fresh random K/V, STAGE at a time */
        for (size_t b0 = 0; b0 < nblk; b0 += STAGE) {
          uint32_t m = (uint32_t)std::min<size_t>(STAGE, nblk - b0);
          gen_kv<<<2048, 256>>>(sk, (size_t)m * G * C, (uint32_t)(2 * b0 + 1));
          gen_kv<<<2048, 256>>>(sv, (size_t)m * G * C, (uint32_t)(2 * b0 + 2));
          CK(cudaGetLastError());
          for (uint32_t i = 0; i < m; i++) {
            size_t bi = b0 + i;
            bool first = bi % nb == 0 && !plain;
            jobs[i] = kvs__cuda_qjob{(const uint16_t *)(sk + (size_t)i * G * C), (const uint16_t *)(sv + (size_t)i * G * C),
                                     blocks + bi * tot, first ? (uint16_t *const *)(rowlist + bi / nb) : nullptr,
                                     first ? 1ull : 0ull};
          }
          CK(cudaMemcpy(djobs, jobs.data(), sizeof(kvs__cuda_qjob) * m, cudaMemcpyHostToDevice));
          int rc = kvs__cuda_quantize(&ctx, &sh.qp, &l, djobs, m);
          if (rc) { fprintf(stderr, "quantize: %d\n", rc); return 2; }
        }
        int rc = kvs__cuda_attn_decode(&ctx, &sh, &pl, seqs, q, out, ws);
        if (rc) { fprintf(stderr, "attn: %d\n", rc); return 2; }
        std::vector<float> ts;
        for (int r = 0; r < 23; r++) {
          CK(cudaEventRecord(e0));
          rc = kvs__cuda_attn_decode_async(&ctx, &sh, &pl, seqs, q, out, ws);
          CK(cudaEventRecord(e1));
          CK(cudaEventSynchronize(e1));
          if (rc) { fprintf(stderr, "attn: %d\n", rc); return 2; }
          float ms;
          CK(cudaEventElapsedTime(&ms, e0, e1));
          if (r >= 3) ts.push_back(ms);
        }
        /* bytes a step must read: the blocks, sink rows, residual, views */
        double bytes = (double)nblk * tot + (double)B * rowb + (double)B * 2 * NRES * C * 2 +
                       (double)nblk * sizeof(kvs__attn_block);
        double us = median(ts) * 1e3, lim = bytes / bw * 1e6;
        printf("bits %s T %-6u B %-2u: %9.1f us  %.3f GB read  limit %8.1f us (%.0f%%)  splits %u\n", label, T, B, us,
               bytes / 1e9, lim, 100 * lim / us, pl.splits);
        fprintf(f, "%s,%u,%u,%.2f,%.0f,%.2f\n", label, T, B, us, bytes, lim);
        fflush(f);
        CK(cudaFree(pool));
      }
  }
  fclose(f);
  kvs__cuda_ctx_close(&ctx);
  return 0;
}

int main(int argc, char **argv)
{
  if (argc >= 2 && !strcmp(argv[1], "check")) return check();
  if (argc >= 3 && !strcmp(argv[1], "bench")) return bench(argv[2]);
  fprintf(stderr, "usage: attn_test check | bench CSV\n");
  return 2;
}
