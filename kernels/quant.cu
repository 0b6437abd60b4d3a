/* SPDX-License-Identifier: MIT */
/* CUDA quantize / dequantize of kvs blocks: the same bytes as the C
 * reference (kernels/quant.c, format in kernels/quant.h). One CUDA block
 * per quantized block; many blocks per launch through a job array.
 *
 * Float steps use the explicit _rn intrinsics so nvcc cannot contract
 * them into FMAs: the reference evaluates each step in fp32 separately. */
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mutex>

#include "kernels/cuda.h"

#define KVS_CU_THREADS 256
#define KVS_CU_MAX_SMEM (200u * 1024u)

struct kvs_cu_args {
  uint32_t G, C, vg, kb, vb, nko, nvo, dtype, vsh;
  size_t kscale, kmin, kcodes, vscale, vmin, vcodes, kout, vout, total, kstride, vstride;
};

/* A launch's signal (kernels/cuda.h kvs__cuda_wait): its slot's block
 * counter and host word, and the launch's seq. ctr NULL: none. */
struct kvs_done_arg {
  uint32_t *ctr;
  kvs__cuda_signal *sig;
  unsigned long long seq;
};

/* A feed's kernel argument (the feed, below); done: the signal of a
 * kernel that is not a feed. */
struct kvs_feed_arg {
  const uint32_t *word;        /* the host's word (mapped) */
  unsigned long long *mirror;  /* device: gen << 32 | word */
  uint32_t *ctr;               /* device: [0] the next job to take, [1] workers done */
  uint32_t gen;
  kvs_done_arg done;
};

/* The end of a CUDA block of a signalled launch, called by every thread:
 * the block counts itself once all its threads are done (the barrier,
 * then thread 0's fence: their writes come first), and the last block of
 * the launch sets the counter back for the slot's next launch and writes
 * the status word and then the seq to the host's word. The same fences
 * as a last-block reduction: every block's writes (blocks, sink rows, a
 * get's output) and status are visible before the host sees the seq. */
static __device__ __forceinline__ void launch_done(const kvs_done_arg &d, int *st)
{
  if (!d.ctr) return;
  __syncthreads();
  if (threadIdx.x != 0) return;
  __threadfence();
  if (atomicAdd(d.ctr, 1u) != gridDim.x - 1u) return;
  __threadfence();
  *d.ctr = 0;
  const int s = st ? atomicAdd(st, 0) : 0;
  *(volatile int *)&d.sig->status = s;
  __threadfence_system();
  *(volatile unsigned long long *)&d.sig->seq = d.seq;
}


static __device__ __forceinline__ float h2f(uint16_t h, uint32_t dt)
{
  if (dt == 2) return __bfloat162float(__ushort_as_bfloat16(h));
  return __half2float(__ushort_as_half(h));
}
static __device__ __forceinline__ uint16_t f2h(float f, uint32_t dt)
{
  if (dt == 2) return __bfloat16_as_ushort(__float2bfloat16_rn(f));
  return __half_as_ushort(__float2half_rn(f));
}
static __device__ __forceinline__ uint16_t f2f16(float f) { return __half_as_ushort(__float2half_rn(f)); }
static __device__ __forceinline__ float f162f(uint16_t h) { return __half2float(__ushort_as_half(h)); }

/* NaN/Inf: exponent all ones. */
static __device__ __forceinline__ bool bad_bits(uint16_t h, uint32_t dt)
{
  return dt == 2 ? (h & 0x7f80u) == 0x7f80u : (h & 0x7c00u) == 0x7c00u;
}

/* Total order for outlier choice: larger |x| first, then lower channel.
 * |x| order equals the order of the magnitude bits for finite values. */
static __device__ __forceinline__ uint32_t okey(uint16_t h, uint32_t c)
{
  return ((uint32_t)(h & 0x7fffu) << 16) | (0xffffu - c);
}

static __device__ __forceinline__ void set_status(int *st, int code) { atomicMin(st, code); }

/* Scale and min of a range; writes fp16 values and returns inv (0 when the
 * scale is 0) and the fp16-rounded min as float. */
static __device__ __forceinline__ void range_params(float mn, float mx, bool any, uint32_t bits,
                                                    uint16_t *sc_h, uint16_t *mn_h, float *minf,
                                                    float *inv, int *st)
{
  if (!any) { mn = 0.f; mx = 0.f; }
  float levels = (float)((1u << bits) - 1u);
  float scale = __fdiv_rn(__fsub_rn(mx, mn), levels);
  uint16_t s = f2f16(scale), m = f2f16(mn);
  if ((s & 0x7c00u) == 0x7c00u || (m & 0x7c00u) == 0x7c00u) set_status(st, -ERANGE);
  float sf = f162f(s);
  *sc_h = s;
  *mn_h = m;
  *minf = f162f(m);
  *inv = sf == 0.f ? 0.f : __fdiv_rn(1.0f, sf);
}

static __device__ __forceinline__ uint32_t qcode(float x, float mn, float inv, uint32_t bits)
{
  if (inv == 0.f) return 0;
  float t = floorf(__fadd_rn(__fmul_rn(__fsub_rn(x, mn), inv), 0.5f));
  float hi = (float)((1u << bits) - 1u);
  t = fminf(fmaxf(t, 0.f), hi);
  return (uint32_t)t;
}

/* Outlier selection for one row by one warp: the n largest keys, written
 * sorted by channel, and the row's mask words (bit c = outlier). */
static __device__ void pick_outliers(const uint16_t *row, uint32_t C, uint32_t n, uint32_t dt,
                                     uint32_t *mask, uint32_t *out_entries, uint32_t lane)
{
  uint32_t thr = 0xffffffffu, kth = 0;
  (void)dt;
  for (uint32_t j = 0; j < n && j < C; j++) {
    uint32_t best = 0;
    for (uint32_t c = lane; c < C; c += 32) {
      uint32_t k = okey(row[c], c);
      if (k < thr && k > best) best = k;
    }
    for (int o = 16; o; o >>= 1) best = max(best, __shfl_xor_sync(0xffffffffu, best, o));
    thr = best;
    kth = best;
  }
  uint32_t pos = 0;
  for (uint32_t c0 = 0; c0 < C; c0 += 32) {
    uint32_t c = c0 + lane;
    uint16_t h = c < C ? row[c] : 0;
    bool sel = n && c < C && okey(h, c) >= kth;
    uint32_t bal = __ballot_sync(0xffffffffu, sel);
    if (sel) {
      uint32_t at = pos + __popc(bal & ((1u << lane) - 1u));
      out_entries[at] = (uint32_t)c | ((uint32_t)h << 16);
    }
    if (lane == 0) mask[c0 >> 5] = bal;
    pos += __popc(bal);
  }
}

/* Codes of one 32-bit word of a row stream; val(i) gives element i's code. */
template <typename F>
static __device__ __forceinline__ uint32_t pack_word(uint32_t w, uint32_t n, uint32_t b, F code)
{
  uint64_t lo = (uint64_t)w * 32u;
  uint32_t i0 = (uint32_t)(lo / b), i1 = (uint32_t)((lo + 32u + b - 1u) / b);
  if (i1 > n) i1 = n;
  uint32_t word = 0;
  for (uint32_t i = i0; i < i1; i++) {
    uint64_t p = (uint64_t)i * b;
    uint32_t cd = code(i);
    if (p >= lo) word |= cd << (uint32_t)(p - lo);
    else word |= cd >> (uint32_t)(lo - p);
  }
  return word;
}

/* All code words of one side. Power-of-two widths: a warp codes 32
 * consecutive elements (coalesced reads, conflict-free shared reads) and
 * ORs each word together with shuffles; 3 bits: one thread per word. */
template <typename F>
static __device__ __forceinline__ void codes_side(uint32_t *codes, uint32_t wpr, uint32_t b,
                                                  uint32_t G, uint32_t C, uint64_t mask,
                                                  uint32_t tid, uint32_t nt, F code)
{
  if ((b & (b - 1u)) == 0) {
    const uint32_t per = 32u / b, lane = tid & 31u, warp = tid >> 5, nw = nt >> 5;
    const uint32_t chunks = (wpr * per + 31u) / 32u;
#pragma unroll 4
    for (uint32_t t = warp; t < G * chunks; t += nw) {
      uint32_t r = t / chunks, c = (t % chunks) * 32u + lane;
      uint32_t v = 0;
      if (!((mask >> r) & 1u) && c < C) v = code(r, c) << ((lane % per) * b);
      for (uint32_t o = 1; o < per; o <<= 1) v |= __shfl_xor_sync(0xffffffffu, v, o);
      if (lane % per == 0 && c / per < wpr) codes[(size_t)r * wpr + c / per] = v;
    }
    return;
  }
  for (uint32_t i = tid; i < G * wpr; i += nt) {
    uint32_t r = i / wpr, w = i % wpr;
    codes[i] = ((mask >> r) & 1u) ? 0u : pack_word(w, C, b, [&](uint32_t c) { return code(r, c); });
  }
}

/* The general quantizer: any shape, any alignment (one CUDA block per job). */
static __device__ __forceinline__ void quant_general(const kvs_cu_args &a, const kvs__cuda_qjob &J,
                                                     int *st, uint32_t *sm)
{
  const uint32_t G = a.G, C = a.C, W = (C + 31u) / 32u, dt = a.dtype;
  const uint32_t tid = threadIdx.x, nt = blockDim.x, lane = tid & 31u, warp = tid >> 5,
                 nw = nt >> 5;
  const bool kraw = a.kb == 16, vraw = a.vb == 16;
  const uint32_t nko = kraw ? 0 : a.nko, nvo = vraw ? 0 : a.nvo;
  uint32_t *kmask = sm;                          /* [G][W] when nko */
  uint32_t *vmask = kmask + (nko ? G * W : 0);   /* [G][W] when nvo */
  float *kminf = (float *)(vmask + (nvo ? G * W : 0));
  float *kinv = kminf + C;
  float *vminf = kinv + C;                       /* [G][C/vg] when a.vsh */
  float *vinv = vminf + (a.vsh ? G * (C / a.vg) : 0);
  uint8_t *blk = (uint8_t *)J.block;
  const uint64_t mask = J.sink_mask;

  /* zero all but the code sections, which are written whole below */
  {
    uint32_t *w = (uint32_t *)blk;
    size_t nwd = a.total / 4u;
    size_t kc0 = a.kcodes / 4u, kc1 = (a.kcodes + (size_t)G * a.kstride) / 4u;
    size_t vc0 = a.vcodes / 4u, vc1 = (a.vcodes + (size_t)G * a.vstride) / 4u;
    for (size_t i = tid; i < nwd; i += nt)
      if (!(i >= kc0 && i < kc1) && !(i >= vc0 && i < vc1)) w[i] = 0;
    for (size_t i = nwd * 4u + tid; i < a.total; i += nt) blk[i] = 0;
  }
  __syncthreads();
  if (tid == 0) {
    kvs__qhdr *h = (kvs__qhdr *)blk;
    h->sink_mask = mask;
    h->n_sinks = (uint16_t)__popcll(mask);
    h->k_bits = (uint8_t)a.kb;
    h->v_bits = (uint8_t)a.vb;
    h->rows = G;
  }

  /* sink rows: raw copy, K then V */
  if (mask) {
    for (uint32_t r = 0; r < G; r++) {
      if (!((mask >> r) & 1u)) continue;
      uint16_t *dst = J.rows[__popcll(mask & ((1ull << r) - 1ull))];
      for (uint32_t c = tid; c < C; c += nt) {
        uint16_t kh = J.k[(size_t)r * C + c], vh = J.v[(size_t)r * C + c];
        if (bad_bits(kh, dt) || bad_bits(vh, dt)) set_status(st, KVS_ENAN);
        dst[c] = kh;
        dst[C + c] = vh;
      }
    }
  }

  /* outliers: one warp per row */
  if (nko || nvo) {
    for (uint32_t r = warp; r < G; r += nw) {
      if ((mask >> r) & 1u) {
        if (nko) for (uint32_t i = lane; i < W; i += 32) kmask[r * W + i] = 0;
        if (nvo) for (uint32_t i = lane; i < W; i += 32) vmask[r * W + i] = 0;
        continue;
      }
      if (nko)
        pick_outliers(J.k + (size_t)r * C, C, nko, dt, kmask + r * W,
                      (uint32_t *)(blk + a.kout) + (size_t)r * nko, lane);
      if (nvo)
        pick_outliers(J.v + (size_t)r * C, C, nvo, dt, vmask + r * W,
                      (uint32_t *)(blk + a.vout) + (size_t)r * nvo, lane);
    }
    __syncthreads();
  }

  /* keys: per-channel range over non-sink, non-outlier rows */
  if (!kraw) {
    uint16_t *ksc = (uint16_t *)(blk + a.kscale), *kmn = (uint16_t *)(blk + a.kmin);
    for (uint32_t c = tid; c < C; c += nt) {
      float mn = 0.f, mx = 0.f;
      bool any = false, bad = false;
      /* no early continue: the unrolled loads stay independent */
#pragma unroll 8
      for (uint32_t r = 0; r < G; r++) {
        bool skip = (mask >> r) & 1u;
        uint16_t h = skip ? (uint16_t)0 : __ldg(J.k + (size_t)r * C + c);
        bad |= bad_bits(h, dt);
        skip = skip || (nko && ((kmask[r * W + (c >> 5)] >> (c & 31u)) & 1u));
        if (skip) continue;
        float x = h2f(h, dt);
        /* strict compares keep the first of equal values (-0 vs +0), as
         * the reference's row-order scan does */
        if (!any) { mn = mx = x; any = true; }
        else { mn = x < mn ? x : mn; mx = x > mx ? x : mx; }
      }
      if (bad) set_status(st, KVS_ENAN);
      range_params(mn, mx, any, a.kb, &ksc[c], &kmn[c], &kminf[c], &kinv[c], st);
    }
  } else {
    for (uint32_t i = tid; i < G * C; i += nt)
      if (!((mask >> (i / C)) & 1u) && bad_bits(J.k[i], dt)) set_status(st, KVS_ENAN);
  }

  /* values: per row and group of vg channels, one warp per (row, group) */
  const uint32_t ng = C / a.vg;
  if (!vraw) {
    uint16_t *vsc = (uint16_t *)(blk + a.vscale), *vmn = (uint16_t *)(blk + a.vmin);
    for (uint32_t rg = warp; rg < G * ng; rg += nw) {
      uint32_t r = rg / ng, g = rg % ng;
      if ((mask >> r) & 1u) continue;
      const uint16_t *row = J.v + (size_t)r * C + (size_t)g * a.vg;
      /* (value, first channel) pairs: ties go to the lower channel so a
       * zero's sign is the one the reference's in-order scan keeps */
      float mn = 0.f, mx = 0.f;
      uint32_t imn = 0xffffffffu, imx = 0xffffffffu;
      bool any = false, bad = false;
#pragma unroll 4
      for (uint32_t j = lane; j < a.vg; j += 32) {
        uint16_t h = __ldg(row + j);
        uint32_t c = g * a.vg + j;
        bad |= bad_bits(h, dt);
        if (nvo && ((vmask[r * W + (c >> 5)] >> (c & 31u)) & 1u)) continue;
        float x = h2f(h, dt);
        if (!any) { mn = mx = x; imn = imx = j; any = true; }
        else {
          if (x < mn) { mn = x; imn = j; }
          if (x > mx) { mx = x; imx = j; }
        }
      }
      for (int o = 16; o; o >>= 1) {
        float mn2 = __shfl_xor_sync(0xffffffffu, mn, o), mx2 = __shfl_xor_sync(0xffffffffu, mx, o);
        uint32_t in2 = __shfl_xor_sync(0xffffffffu, imn, o), ix2 = __shfl_xor_sync(0xffffffffu, imx, o);
        if (in2 != 0xffffffffu && (imn == 0xffffffffu || mn2 < mn || (mn2 == mn && in2 < imn))) { mn = mn2; imn = in2; }
        if (ix2 != 0xffffffffu && (imx == 0xffffffffu || mx2 > mx || (mx2 == mx && ix2 < imx))) { mx = mx2; imx = ix2; }
      }
      any = __any_sync(0xffffffffu, any);
      if (__any_sync(0xffffffffu, bad) && lane == 0) set_status(st, KVS_ENAN);
      if (lane == 0) {
        float mf, inv;
        range_params(mn, mx, any, a.vb, &vsc[rg], &vmn[rg], &mf, &inv, st);
        if (a.vsh) { vminf[rg] = mf; vinv[rg] = inv; }
      }
    }
  } else {
    for (uint32_t i = tid; i < G * C; i += nt)
      if (!((mask >> (i / C)) & 1u) && bad_bits(J.v[i], dt)) set_status(st, KVS_ENAN);
  }
  __syncthreads();

  /* key codes */
  {
    const uint32_t b = a.kb;
    const uint16_t *kin = J.k;
    codes_side((uint32_t *)(blk + a.kcodes), (uint32_t)(a.kstride / 4u), b, G, C, mask, tid, nt,
               [&](uint32_t r, uint32_t c) {
                 uint16_t h = __ldg(kin + (size_t)r * C + c);
                 return b == 16 ? (uint32_t)h : qcode(h2f(h, dt), kminf[c], kinv[c], b);
               });
  }
  /* value codes */
  {
    const uint32_t b = a.vb, vg = a.vg;
    const uint16_t *vin = J.v;
    const uint16_t *vsc = (const uint16_t *)(blk + a.vscale), *vmn = (const uint16_t *)(blk + a.vmin);
    const bool vsh = a.vsh;
    codes_side((uint32_t *)(blk + a.vcodes), (uint32_t)(a.vstride / 4u), b, G, C, mask, tid, nt,
               [&](uint32_t r, uint32_t c) {
                 uint16_t h = __ldg(vin + (size_t)r * C + c);
                 if (b == 16) return (uint32_t)h;
                 uint32_t gi = r * ng + c / vg;
                 float mf, inv;
                 if (vsh) { mf = vminf[gi]; inv = vinv[gi]; }
                 else {
                   float sf = f162f(vsc[gi]);
                   mf = f162f(vmn[gi]);
                   inv = sf == 0.f ? 0.f : __fdiv_rn(1.0f, sf);
                 }
                 return qcode(h2f(h, dt), mf, inv, b);
               });
  }
}

/* feed: unused (the store feeds fast kernels only, kvs__cuda_quantize_feed) */
static __global__ void __launch_bounds__(KVS_CU_THREADS, 4)
kvs_quant_kernel(kvs_cu_args a, const kvs__cuda_qjob *jobs, int *st, kvs_feed_arg f)
{
  extern __shared__ uint32_t sm[];
  quant_general(a, jobs[blockIdx.x], st, sm);
  launch_done(f.done, st);
}

/* ---- Fast path -------------------------------------------------------
 * For C a multiple of 256 up to 1024 and value groups of 8..256 channels
 * dividing 256 (the common shapes: 8 KV heads x 128), 16-byte aligned
 * inputs and block. One CUDA block of 256 threads per job:
 *   1. the K tile [G][C] goes to shared memory with cp.async (read once);
 *   2. meanwhile each warp takes V rows into registers (lane l holds the
 *      octets l + 32j of the row: channels 256j + 8l .. +7), picks the
 *      row's outliers, reduces group ranges with shuffles, writes codes;
 *   3. K outliers: a warp per row of the shared tile;
 *   4. K ranges: a thread per (octet, row part) keeps 8 channels; the
 *      parts of one octet sit in one warp and combine with shuffles;
 *      then the same thread writes its codes.
 * Every byte of the block is written once (no zeroing pass).
 *
 * Ties: the reference scans in order with strict compares, so a minimum
 * of +0/-0 is the first zero met; partial minima combine "left wins
 * unless the right is strictly smaller", which is associative. The sign
 * of a zero maximum never reaches the output once it is made +0 (scale =
 * (max - min) is then exactly what the reference computes), so maxima
 * use fmaxf. Codes: floor(min(max(y, 0), hi)) through an fp32 add of
 * 2^23 rounded down, y = (x - min) * inv + 0.5 in separate _rn steps. */

#define KVS_FQ_NJ 4    /* octets per lane and row: C <= 1024 */
#define KVS_FQ_CAP 48  /* outlier candidates per warp before the exact fallback */

struct fq_warp {
  uint32_t lm[32], key[KVS_FQ_CAP + 4], ent[KVS_FQ_CAP];  /* key 16-byte aligned */
};

template <bool BF> static __device__ __forceinline__ void unpack2(uint32_t w, float &lo, float &hi)
{
  if (BF) {
    lo = __uint_as_float(w << 16);
    hi = __uint_as_float(w & 0xffff0000u);
  } else {
    __half2 h = *reinterpret_cast<const __half2 *>(&w);
    float2 f = __half22float2(h);
    lo = f.x;
    hi = f.y;
  }
}

template <bool BF> static __device__ __forceinline__ void unpack8(const uint4 &q, float (&x)[8])
{
  unpack2<BF>(q.x, x[0], x[1]);
  unpack2<BF>(q.y, x[2], x[3]);
  unpack2<BF>(q.z, x[4], x[5]);
  unpack2<BF>(q.w, x[6], x[7]);
}

static __device__ __forceinline__ uint32_t qword(const uint4 &q, int k)
{
  return k == 0 ? q.x : k == 1 ? q.y : k == 2 ? q.z : q.w;
}

/* NaN/Inf: running u16x2 max of the exponent fields. */
template <bool BF> static __device__ __forceinline__ uint32_t expmax8(uint32_t acc, const uint4 &q)
{
  const uint32_t m = BF ? 0x7f807f80u : 0x7c007c00u;
  acc = __vmaxu2(acc, q.x & m);
  acc = __vmaxu2(acc, q.y & m);
  acc = __vmaxu2(acc, q.z & m);
  return __vmaxu2(acc, q.w & m);
}
template <bool BF> static __device__ __forceinline__ bool exp_bad(uint32_t acc)
{
  const uint32_t e = BF ? 0x7f80u : 0x7c00u;
  return (acc & 0xffffu) == e || (acc >> 16) == e;
}

/* 0x4B000000 + code: y clamped to [0, hi], floored by an add rounded down. */
static __device__ __forceinline__ uint32_t qbits(float x, float mn, float inv, float hi)
{
  float y = __fadd_rn(__fmul_rn(__fsub_rn(x, mn), inv), 0.5f);
  y = fminf(fmaxf(y, 0.f), hi);
  return __float_as_uint(__fadd_rd(y, 8388608.f));
}

/* Pack 8 codes (qbits form) of B bits: lo holds bits 0..31, hi 32..63. */
template <int B> static __device__ __forceinline__ void pack8(const uint32_t (&u)[8], uint32_t &lo,
                                                               uint32_t &hi)
{
  lo = 0;
  hi = 0;
  if constexpr (B == 16) return;
  uint32_t klo = 0, khi = 0;
#pragma unroll
  for (int i = 0; i < 8; i++) {
    const int s = i * B;
    if (s < 32) {
      lo += u[i] << s;
      klo += 0x4B000000u << s;
    } else {
      hi += u[i] << (s - 32);
      khi += 0x4B000000u << (s - 32);
    }
  }
  lo -= klo;
  hi -= khi;
}

/* Store the 8 codes of octet o of a row (B = 3: 4 consecutive lanes hold 4
 * consecutive octets and write 3 words; every lane must call). */
template <int B> static __device__ __forceinline__ void store_octet(uint8_t *row, uint32_t o,
                                                                     uint32_t lo, uint32_t hi,
                                                                     bool valid)
{
  if (B == 3) {
    uint32_t nx = __shfl_down_sync(0xffffffffu, lo, 1);
    uint32_t q = o & 3u;
    if (valid && q < 3u)
      *(uint32_t *)(row + (o >> 2) * 12u + q * 4u) = (lo >> (8u * q)) | (nx << (24u - 8u * q));
    return;
  }
  if (!valid) return;
  if (B == 2) *(uint16_t *)(row + o * 2u) = (uint16_t)lo;
  else if (B == 4) *(uint32_t *)(row + o * 4u) = lo;
  else *(uint2 *)(row + o * 8u) = make_uint2(lo, hi);
}

/* The codes of one octet of 16-bit values, packed (lo, hw as pack8):
 * one range for all eight (a value row's group) ... */
template <bool BF, int B>
static __device__ __forceinline__ void code_octet(const uint4 &q, float minf, float inv, float hi,
                                                  uint32_t &lo, uint32_t &hw)
{
  float x[8];
  unpack8<BF>(q, x);
  uint32_t u[8];
#pragma unroll
  for (int i = 0; i < 8; i++) u[i] = qbits(x[i], minf, inv, hi);
  pack8<B>(u, lo, hw);
}

/* ... or a range per channel (key columns). */
template <bool BF, int B>
static __device__ __forceinline__ void code_octet_ch(const uint4 &q, const float (&minf)[8],
                                                     const float (&inv)[8], uint32_t &lo, uint32_t &hw)
{
  float x[8];
  unpack8<BF>(q, x);
  uint32_t u[8];
#pragma unroll
  for (int i = 0; i < 8; i++) u[i] = qbits(x[i], minf[i], inv[i], (float)((1u << B) - 1u));
  pack8<B>(u, lo, hw);
}

/* Range of a member set -> stored fp16 scale/min and the coder's min/inv. */
static __device__ __forceinline__ void fq_range(float mn, float mx, float levels, uint16_t &sc_h,
                                                uint16_t &mn_h, float &minf, float &inv, bool &erange)
{
  if (!(mn <= mx)) { mn = 0.f; mx = 0.f; }  /* no member */
  mx = __fadd_rn(mx, 0.f);                    /* -0 -> +0, see above */
  float scale = __fdiv_rn(__fsub_rn(mx, mn), levels);
  uint16_t s = f2f16(scale), m = f2f16(mn);
  erange |= (s & 0x7c00u) == 0x7c00u || (m & 0x7c00u) == 0x7c00u;
  float sf = f162f(s);
  sc_h = s;
  mn_h = m;
  minf = f162f(m);
  inv = sf == 0.f ? 0.f : __frcp_rn(sf);
}

/* left-biased minimum: the right side wins only when strictly smaller */
static __device__ __forceinline__ float lmin(float left, float right) { return right < left ? right : left; }

/* Write a sink row part (C words) from 8-word pieces. */
static __device__ __forceinline__ void sink_put(uint16_t *dst, uint32_t o, const uint4 &q)
{
  if (((uintptr_t)dst & 15u) == 0) {
    *(uint4 *)(dst + o * 8u) = q;
  } else {
    const uint16_t *h = (const uint16_t *)&q;
    for (int i = 0; i < 8; i++) dst[o * 8u + i] = h[i];
  }
}

/* V codes of one row without outliers: per = vg / 8 lanes per group. */
template <bool BF, int B>
static __device__ __forceinline__ void fq_vrow(const kvs_cu_args &a, uint8_t *blk, uint32_t r,
                                               const uint4 (&d)[KVS_FQ_NJ], uint32_t nj,
                                               uint32_t lane, bool &erange)
{
  uint8_t *crow = blk + a.vcodes + (size_t)r * a.vstride;
  if (B == 16) {
#pragma unroll
    for (int j = 0; j < KVS_FQ_NJ; j++)
      if (j < (int)nj) *(uint4 *)(crow + (32u * j + lane) * 16u) = d[j];
    return;
  }
  const uint32_t per = a.vg >> 3, ng = a.C / a.vg;
  const float hi = (float)((1u << B) - 1u);
  uint16_t *vsc = (uint16_t *)(blk + a.vscale) + (size_t)r * ng;
  uint16_t *vmn = (uint16_t *)(blk + a.vmin) + (size_t)r * ng;
  float gmn[KVS_FQ_NJ], gmx[KVS_FQ_NJ];
#pragma unroll
  for (int j = 0; j < KVS_FQ_NJ; j++) {
    float x[8];
    unpack8<BF>(d[j], x);
    float mn = __int_as_float(0x7f800000), mx = -__int_as_float(0x7f800000);
#pragma unroll
    for (int i = 0; i < 8; i++) {
      mn = x[i] < mn ? x[i] : mn;
      mx = fmaxf(mx, x[i]);
    }
    gmn[j] = mn;
    gmx[j] = mx;
  }
  for (uint32_t s = 1; s < per; s <<= 1) {
#pragma unroll
    for (int j = 0; j < KVS_FQ_NJ; j++) {
      float omn = __shfl_xor_sync(0xffffffffu, gmn[j], s);
      float omx = __shfl_xor_sync(0xffffffffu, gmx[j], s);
      gmn[j] = (lane & s) ? lmin(omn, gmn[j]) : lmin(gmn[j], omn);
      gmx[j] = fmaxf(gmx[j], omx);
    }
  }
#pragma unroll
  for (int j = 0; j < KVS_FQ_NJ; j++) {
    if (j >= (int)nj) continue;
    uint16_t sh, mh;
    float minf, inv;
    fq_range(gmn[j], gmx[j], hi, sh, mh, minf, inv, erange);
    const uint32_t o = 32u * j + lane;
    if ((lane & (per - 1u)) == 0) {
      uint32_t g = (o * 8u) / a.vg;
      vsc[g] = sh;
      vmn[g] = mh;
    }
    uint32_t lo, hw;
    code_octet<BF, B>(d[j], minf, inv, hi, lo, hw);
    store_octet<B>(crow, o, lo, hw, true);
  }
}

/* K ranges and codes without key outliers for the thread's octet o over
 * its rows [r0, r0+rpp). */
template <bool BF, int B>
static __device__ __forceinline__ void fq_kcols(const kvs_cu_args &a, const kvs__cuda_qjob &J,
                                                uint8_t *blk, const uint4 *tile, uint32_t o,
                                                uint32_t r0, uint32_t rpp, uint32_t opw,
                                                uint32_t lane, bool first, bool &bad, bool &erange)
{
  const uint32_t G = a.G, C = a.C, O = C / 8u;
  const uint64_t mask = J.sink_mask;
  float mn[8], mx[8];
  uint32_t ex = 0;
#pragma unroll
  for (int i = 0; i < 8; i++) { mn[i] = __int_as_float(0x7f800000); mx[i] = -mn[i]; }
  for (uint32_t t = 0; t < rpp; t++) {
    const uint32_t r = r0 + t;
    if (r >= G) break;
    uint4 q = tile[(size_t)r * O + o];
    ex = expmax8<BF>(ex, q);
    if (B == 16 || ((mask >> r) & 1u)) continue;
    float x[8];
    unpack8<BF>(q, x);
#pragma unroll
    for (int i = 0; i < 8; i++) {
      mn[i] = x[i] < mn[i] ? x[i] : mn[i];
      mx[i] = fmaxf(mx[i], x[i]);
    }
  }
  bad |= exp_bad<BF>(ex);
  /* combine the parts of this octet (lanes opw apart), left part first */
  for (uint32_t s = opw; s < 32u; s <<= 1) {
#pragma unroll
    for (int i = 0; i < 8; i++) {
      float omn = __shfl_xor_sync(0xffffffffu, mn[i], s);
      float omx = __shfl_xor_sync(0xffffffffu, mx[i], s);
      mn[i] = (lane & s) ? lmin(omn, mn[i]) : lmin(mn[i], omn);
      mx[i] = fmaxf(mx[i], omx);
    }
  }
  float minf[8], inv[8];
  if (B != 16) {
    const float hi = (float)((1u << B) - 1u);
    uint16_t sh[8], mh[8];
#pragma unroll
    for (int i = 0; i < 8; i++) fq_range(mn[i], mx[i], hi, sh[i], mh[i], minf[i], inv[i], erange);
    if (first) {
      uint4 s4, m4;
      s4.x = sh[0] | ((uint32_t)sh[1] << 16); s4.y = sh[2] | ((uint32_t)sh[3] << 16);
      s4.z = sh[4] | ((uint32_t)sh[5] << 16); s4.w = sh[6] | ((uint32_t)sh[7] << 16);
      m4.x = mh[0] | ((uint32_t)mh[1] << 16); m4.y = mh[2] | ((uint32_t)mh[3] << 16);
      m4.z = mh[4] | ((uint32_t)mh[5] << 16); m4.w = mh[6] | ((uint32_t)mh[7] << 16);
      *(uint4 *)(blk + a.kscale + o * 16u) = s4;
      *(uint4 *)(blk + a.kmin + o * 16u) = m4;
    }
  } else if (first) {
    *(uint4 *)(blk + a.kscale + o * 16u) = make_uint4(0, 0, 0, 0);
    *(uint4 *)(blk + a.kmin + o * 16u) = make_uint4(0, 0, 0, 0);
  }
  /* codes (and the K half of sink rows); all lanes run rpp steps for B = 3 */
  for (uint32_t t = 0; t < rpp; t++) {
    const uint32_t r = r0 + t;
    const bool valid = r < G;
    uint4 q = valid ? tile[(size_t)r * O + o] : make_uint4(0, 0, 0, 0);
    const bool sink = valid && ((mask >> r) & 1u);
    uint8_t *crow = blk + a.kcodes + (size_t)(valid ? r : 0) * a.kstride;
    if (sink) sink_put(J.rows[__popcll(mask & ((1ull << r) - 1ull))], o, q);
    if (B == 16) {
      if (valid) *(uint4 *)(crow + o * 16u) = sink ? make_uint4(0, 0, 0, 0) : q;
      continue;
    }
    uint32_t lo = 0, hw = 0;
    if (!sink) {
      code_octet_ch<BF, B>(q, minf, inv, lo, hw);
    }
    store_octet<B>(crow, o, lo, hw, valid);
  }
}

/* ---- Outlier path (the kernels with OUT). Fewer instructions per element
 * than masking each element (the path it replaced; H200, 1 % outliers:
 * 50-53 % of a D2D copy instead of 45-48 %):
 * - selection bits in a per-lane layout that costs one shift and one
 *   logic op per word: bit k = half 0 of word k, bit 16 + k = half 1
 *   (word k = channels 256(k/4) + 8 lane + 2(k%4) + {0,1});
 * - NaN/Inf of a row from its magnitude maximum (needed for the pick
 *   anyway): an exponent of all ones is exactly a magnitude >= that field;
 * - ranges as packed fp16/bf16 min/max (min.f16x2 and friends, exact) on
 *   words whose outliers are replaced by a NaN (ignored by min/max), so no
 *   per-element mask tests and no conversions; keys: the NaN goes into the
 *   shared tile and the original comes back from the entries before the
 *   codes. Packed min orders -0 below +0, the reference keeps the first
 *   zero: a range whose minimum is zero takes the first zero's sign by an
 *   exact scan (rare: a range with no negative member and a zero). */
#ifndef KVS_QUANT_EMU
template <bool BF> static __device__ __forceinline__ uint32_t hmin2u(uint32_t a, uint32_t b)
{
  uint32_t r;
  if (BF) asm("min.bf16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  else asm("min.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  return r;
}
template <bool BF> static __device__ __forceinline__ uint32_t hmax2u(uint32_t a, uint32_t b)
{
  uint32_t r;
  if (BF) asm("max.bf16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  else asm("max.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  return r;
}
#else
/* the CPU emulation (tests/kernels/quant_emu.cpp) defines these */
template <bool BF> static uint32_t hmin2u(uint32_t a, uint32_t b) { return emu_hminmax2(BF, false, a, b); }
template <bool BF> static uint32_t hmax2u(uint32_t a, uint32_t b) { return emu_hminmax2(BF, true, a, b); }
#endif
/* +Inf / -Inf in both halves */
template <bool BF> static __device__ __forceinline__ uint32_t hinf2(bool neg)
{
  const uint32_t e = BF ? 0x7f807f80u : 0x7c007c00u;
  return neg ? (e | 0x80008000u) : e;
}
/* NaN where the selection set marks word k's halves */
static __device__ __forceinline__ uint32_t nanmask(uint32_t sb, int k)
{
  return ((sb >> k) & 0x10001u) * 0x7fffu;
}

/* The exact pick (more than 32 outliers or too many candidates): bisection
 * for the n-th largest key, then channel-order compaction; selection set
 * as fq_outliers. Not inlined: its registers would spill on the common
 * path. It takes the lane's octets from dl, the caller's copy in local
 * memory, not from the row in global memory: a V row read twice from a
 * device segment could change in between (Decision 36). */
static __device__ __noinline__ uint32_t fq_exact(const uint4 *dl, uint32_t nj, uint32_t n,
                                                 uint32_t *ent, uint32_t lane)
{
  const uint32_t full = 0xffffffffu;
  constexpr int NW = KVS_FQ_NJ * 4;
  uint4 d[KVS_FQ_NJ];
#pragma unroll
  for (int j = 0; j < KVS_FQ_NJ; j++) d[j] = j < (int)nj ? dl[j] : make_uint4(0, 0, 0, 0);
#define WA(k) ((k) / 4 < (int)nj ? qword(d[(k) / 4], (k) % 4) & 0x7fff7fffu : 0u)
  uint32_t T = 0;
  for (int bit = 30; bit >= 0; bit--) {
    uint32_t t = T | (1u << bit), cnt = 0;
#pragma unroll
    for (int k = 0; k < NW; k++) {
      if (k / 4 >= (int)nj) continue;
      const uint32_t c0 = 256u * (k / 4) + 8u * lane + 2u * (k % 4);
      const uint32_t wak = WA(k);
      cnt += (((wak & 0xffffu) << 16) | (0xffffu - c0)) >= t;
      cnt += ((wak & 0xffff0000u) | (0xffffu - c0 - 1u)) >= t;
    }
    if (__reduce_add_sync(full, cnt) >= n) T = t;
  }
  uint32_t sb = 0, base = 0;
#pragma unroll
  for (int j = 0; j < KVS_FQ_NJ; j++) {
    if (j >= (int)nj) continue;
    uint32_t bits = 0;
#pragma unroll
    for (int i = 0; i < 8; i++) {
      uint32_t mag = (WA(4 * j + i / 2) >> (16 * (i & 1))) & 0x7fffu;
      uint32_t c = 256u * j + 8u * lane + i;
      bits |= (uint32_t)(((mag << 16) | (0xffffu - c)) >= T) << i;
    }
    uint32_t cnt = __popc(bits), incl = cnt;
    for (int o = 1; o < 32; o <<= 1) {
      uint32_t y = __shfl_up_sync(full, incl, o);
      if (lane >= (uint32_t)o) incl += y;
    }
    uint32_t at = base + incl - cnt;
#pragma unroll
    for (int i = 0; i < 8; i++)
      if ((bits >> i) & 1u) {
        uint32_t raw = (qword(d[j], i >> 1) >> (16 * (i & 1))) & 0xffffu;
        ent[at + __popc(bits & ((1u << i) - 1u))] = (256u * j + 8u * lane + i) | (raw << 16);
        sb |= 1u << (4 * j + i / 2 + 16 * (i & 1));
      }
    base += __shfl_sync(full, incl, 31);
  }
  return sb;
#undef WA
}

/* Bit i of x (16 bits) to bit 2i. */
static __device__ __forceinline__ uint32_t spread16(uint32_t x)
{
  x = (x | (x << 8)) & 0x00ff00ffu;
  x = (x | (x << 4)) & 0x0f0f0f0fu;
  x = (x | (x << 2)) & 0x33333333u;
  return (x | (x << 1)) & 0x55555555u;
}

/* Outliers of one row held by a warp (d[j] = octet lane + 32j). Writes
 * the n entries sorted by channel to ent, sets bad on a NaN/Inf in the row
 * and returns this lane's selection set (layout above). 1 <= n <= C.
 * Candidates are the elements at or above the n-th largest lane maximum
 * (at least n, usually a few more); they go to shared memory in channel
 * order (a per-octet count scan), so that once each knows its rank the
 * selected ones are in place by a ballot, and the few dropped leave the
 * selection set by an atomic. */
template <bool BF>
static __device__ __forceinline__ uint32_t fq_outliers(const uint4 (&d)[KVS_FQ_NJ], uint32_t nj,
                                                       uint32_t n, uint32_t *ent, fq_warp *ws,
                                                       uint32_t lane, bool &bad)
{
  const uint32_t full = 0xffffffffu;
  constexpr int NW = KVS_FQ_NJ * 4;
#define WA(k) ((k) / 4 < (int)nj ? qword(d[(k) / 4], (k) % 4) & 0x7fff7fffu : 0u)
  uint32_t M = 0;
#pragma unroll
  for (int k = 0; k < NW; k++) M = __vmaxu2(M, WA(k));
  M = max(M & 0xffffu, M >> 16);
  bad |= M >= (BF ? 0x7f80u : 0x7c00u);
  if (n <= 32u) {
    /* Lm = the n-th largest lane maximum (at least n elements reach it):
     * the largest M that at least n lane maxima reach. All lanes compare
     * against all 32 in shared memory at once (no serial loop). The key
     * area is free here: the reduction below waits for every lane's reads. */
    ws->key[lane] = M;
    __syncwarp();
    const uint4 *mq = (const uint4 *)ws->key;
    uint32_t ge = 0;
#pragma unroll
    for (int t = 0; t < 8; t++) {
      const uint4 q = mq[t];
      ge += (q.x >= M) + (q.y >= M) + (q.z >= M) + (q.w >= M);
    }
    const uint32_t Lm = __reduce_max_sync(full, ge >= n ? M : 0u);
    /* candidates (magnitude >= Lm): bit 15 / 31 of (mag + 0x8000 - Lm) per
     * half, moved to bit k / 16 + k */
    const uint32_t add = (0x8000u - Lm) * 0x10001u;
    uint32_t cb = 0;
#pragma unroll
    for (int k = 0; k < NW; k++) cb |= ((WA(k) + add) & 0x80008000u) >> (15 - k);
    const uint32_t m = __reduce_add_sync(full, __popc(cb));
    if (m <= KVS_FQ_CAP) {
      /* channel order within the lane: bit 8j + i = channel 256j + 8 lane + i */
      const uint32_t co = spread16(cb & 0xffffu) | (spread16(cb >> 16) << 1);
      /* candidates per octet j in byte j; scanned over the lanes (sums <= m
       * < 256: no carries between bytes) */
      uint32_t p = co - ((co >> 1) & 0x55555555u);
      p = (p & 0x33333333u) + ((p >> 2) & 0x33333333u);
      p = (p + (p >> 4)) & 0x0f0f0f0fu;
      uint32_t incl = p;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const uint32_t y = __shfl_up_sync(full, incl, o);
        if (lane >= (uint32_t)o) incl += y;
      }
      /* byte j: the slot of this lane's first candidate of octet j */
      const uint32_t start = __shfl_sync(full, incl, 31) * 0x01010100u + incl - p;
      uint32_t cs = co;
      while (cs) {
        const uint32_t bi = __ffs(cs) - 1u, j = bi >> 3, kk = bi >> 1, h = bi & 1u;
        cs &= cs - 1u;
        const bool b0 = kk & 1u, b1 = kk & 2u, b2 = kk & 4u, b3 = kk & 8u;
        uint32_t sj[KVS_FQ_NJ];
#pragma unroll
        for (int jj = 0; jj < KVS_FQ_NJ; jj++) {
          const uint32_t lo = b0 ? d[jj].y : d[jj].x, hi = b0 ? d[jj].w : d[jj].z;
          sj[jj] = b1 ? hi : lo;
        }
        const uint32_t wsel = b3 ? (b2 ? sj[3] : sj[2]) : (b2 ? sj[1] : sj[0]);
        const uint32_t raw = (wsel >> (16u * h)) & 0xffffu;
        const uint32_t c = 256u * j + 8u * lane + (bi & 7u);
        const uint32_t slot = ((start >> (8u * j)) & 0xffu) + __popc((co >> (8u * j)) & ((1u << (bi & 7u)) - 1u));
        ws->key[slot] = ((raw & 0x7fffu) << 16) | (0xffffu - c);
        ws->ent[slot] = c | (raw << 16);
      }
      if (lane < 4) ws->key[m + lane] = 0;
      ws->lm[lane] = cb;
      __syncwarp();
      /* rank = keys above (keys are distinct): the n largest have rank < n;
       * slots are in channel order, so a ballot places the entries */
      const uint4 *k4 = (const uint4 *)ws->key;
      const uint32_t m4 = (m + 3u) / 4u;
      uint32_t before = 0;
      for (uint32_t i0 = 0; i0 < m; i0 += 32) {
        const uint32_t i = i0 + lane;
        const uint32_t ki = i < m ? ws->key[i] : 0xffffffffu;
        uint32_t r = 0;
        for (uint32_t t = 0; t < m4; t++) {
          const uint4 q = k4[t];
          r += (q.x > ki) + (q.y > ki) + (q.z > ki) + (q.w > ki);
        }
        const bool sel = i < m && r < n;
        const uint32_t bs = __ballot_sync(full, sel);
        if (i < m) {
          const uint32_t e = ws->ent[i], c = e & 0xffffu;
          if (sel) ent[before + __popc(bs & ((1u << lane) - 1u))] = e;
          else atomicAnd(&ws->lm[(c >> 3) & 31u], ~(1u << (4u * (c >> 8) + ((c & 7u) >> 1) + 16u * (c & 1u))));
        }
        before += __popc(bs);
      }
      __syncwarp();
      const uint32_t sb = ws->lm[lane];
      __syncwarp();
      return sb;
    }
  }
  uint4 dl[KVS_FQ_NJ];
#pragma unroll
  for (int j = 0; j < KVS_FQ_NJ; j++) dl[j] = d[j];
  return fq_exact(dl, nj, n, ent, lane);
#undef WA
}

/* fq_vrow with packed ranges over the NaN-masked words (sb: selection set). */
template <bool BF, int B>
static __device__ __forceinline__ void fq_vrow_out(const kvs_cu_args &a, uint8_t *blk, uint32_t r,
                                                   const uint4 (&d)[KVS_FQ_NJ], uint32_t nj,
                                                   uint32_t sb, uint32_t lane, bool &erange)
{
  uint8_t *crow = blk + a.vcodes + (size_t)r * a.vstride;
  const uint32_t per = a.vg >> 3, ng = a.C / a.vg;
  const float hi = (float)((1u << B) - 1u);
  uint16_t *vsc = (uint16_t *)(blk + a.vscale) + (size_t)r * ng;
  uint16_t *vmn = (uint16_t *)(blk + a.vmin) + (size_t)r * ng;
  float gmn[KVS_FQ_NJ], gmx[KVS_FQ_NJ];
#pragma unroll
  for (int j = 0; j < KVS_FQ_NJ; j++) {
    const uint32_t w0 = d[j].x | nanmask(sb, 4 * j), w1 = d[j].y | nanmask(sb, 4 * j + 1);
    const uint32_t w2 = d[j].z | nanmask(sb, 4 * j + 2), w3 = d[j].w | nanmask(sb, 4 * j + 3);
    uint32_t mn2 = hmin2u<BF>(hmin2u<BF>(w0, w1), hmin2u<BF>(w2, w3));
    uint32_t mx2 = hmax2u<BF>(hmax2u<BF>(w0, w1), hmax2u<BF>(w2, w3));
    mn2 = hmin2u<BF>(mn2, hinf2<BF>(false));  /* all NaN: no member, +Inf */
    mx2 = hmax2u<BF>(mx2, hinf2<BF>(true));
    float a0, a1, b0, b1;
    unpack2<BF>(mn2, a0, a1);
    unpack2<BF>(mx2, b0, b1);
    gmn[j] = fminf(a0, a1);
    gmx[j] = fmaxf(b0, b1);
  }
  for (uint32_t s = 1; s < per; s <<= 1) {
#pragma unroll
    for (int j = 0; j < KVS_FQ_NJ; j++) {
      float omn = __shfl_xor_sync(0xffffffffu, gmn[j], s);
      float omx = __shfl_xor_sync(0xffffffffu, gmx[j], s);
      gmn[j] = fminf(gmn[j], omn);
      gmx[j] = fmaxf(gmx[j], omx);
    }
  }
  /* a zero minimum: the sign of the group's first zero member */
#pragma unroll
  for (int j = 0; j < KVS_FQ_NJ; j++) {
    if (j >= (int)nj || !__any_sync(0xffffffffu, gmn[j] == 0.f)) continue;
    uint32_t z = 8u;
    for (int i = 7; i >= 0; i--) {
      const uint32_t h = (qword(d[j], i >> 1) >> (16 * (i & 1))) & 0xffffu;
      const bool mem = !((sb >> (4 * j + i / 2 + 16 * (i & 1))) & 1u);
      if (mem && (h & 0x7fffu) == 0) z = (uint32_t)i | (h >> 15 << 4);
    }
    const uint32_t g0 = lane & ~(per - 1u);
    const uint32_t gm = (per >= 32u ? 0xffffffffu : ((1u << per) - 1u)) << g0;
    const uint32_t b = __ballot_sync(0xffffffffu, z != 8u) & gm;
    const uint32_t zs = __shfl_sync(0xffffffffu, z, b ? __ffs(b) - 1 : lane);
    if (gmn[j] == 0.f && b) gmn[j] = (zs >> 4) ? -0.f : 0.f;
  }
  /* ranges: with 4 or more lanes to a group, lane t of the group works
   * out octet t's range only and the others take it by shuffle (one
   * division and reciprocal per lane instead of one per octet) */
  float rmin[KVS_FQ_NJ], rinv[KVS_FQ_NJ];
  if (per >= 4u) {
    static_assert(KVS_FQ_NJ == 4, "one octet for each of a group's first 4 lanes");
    const uint32_t t = lane & 3u, g0 = lane & ~(per - 1u);
    const float mnt = t == 0 ? gmn[0] : t == 1 ? gmn[1] : t == 2 ? gmn[2] : gmn[3];
    const float mxt = t == 0 ? gmx[0] : t == 1 ? gmx[1] : t == 2 ? gmx[2] : gmx[3];
    uint16_t sh, mh;
    float minf, inv;
    fq_range(mnt, mxt, hi, sh, mh, minf, inv, erange);
    if ((lane & (per - 1u)) < 4u && t < nj) {
      const uint32_t g = ((32u * t + lane) * 8u) / a.vg;
      vsc[g] = sh;
      vmn[g] = mh;
    }
#pragma unroll
    for (int j = 0; j < KVS_FQ_NJ; j++) {
      rmin[j] = __shfl_sync(0xffffffffu, minf, g0 + j);
      rinv[j] = __shfl_sync(0xffffffffu, inv, g0 + j);
    }
  } else {
#pragma unroll
    for (int j = 0; j < KVS_FQ_NJ; j++) {
      rmin[j] = 0.f;
      rinv[j] = 0.f;
      if (j >= (int)nj) continue;
      uint16_t sh, mh;
      fq_range(gmn[j], gmx[j], hi, sh, mh, rmin[j], rinv[j], erange);
      if ((lane & (per - 1u)) == 0) {
        const uint32_t g = ((32u * j + lane) * 8u) / a.vg;
        vsc[g] = sh;
        vmn[g] = mh;
      }
    }
  }
#pragma unroll
  for (int j = 0; j < KVS_FQ_NJ; j++) {
    if (j >= (int)nj) continue;
    const uint32_t o = 32u * j + lane;
    const float minf = rmin[j], inv = rinv[j];
    uint32_t lo, hw;
    code_octet<BF, B>(d[j], minf, inv, hi, lo, hw);
    store_octet<B>(crow, o, lo, hw, true);
  }
}

/* Key ranges of the thread's octet o over rows [r0, r0 + rpp) of the tile,
 * whose outliers hold a NaN: packed min/max, parts combined, zero minima
 * signed by an exact scan; scale/min written by the first part. */
template <bool BF, int B>
static __device__ __forceinline__ void fq_krange_out(const kvs_cu_args &a, uint64_t mask, uint8_t *blk,
                                                     const uint4 *tile, uint32_t o, uint32_t r0,
                                                     uint32_t rpp, uint32_t opw, uint32_t lane,
                                                     bool first, bool &bad, bool &erange,
                                                     float (&minf)[8], float (&inv)[8])
{
  const uint32_t G = a.G, O = a.C / 8u;
  uint32_t mn2[4], mx2[4], ex = 0;
#pragma unroll
  for (int k = 0; k < 4; k++) { mn2[k] = hinf2<BF>(false); mx2[k] = hinf2<BF>(true); }
  for (uint32_t t = 0; t < rpp; t++) {
    const uint32_t r = r0 + t;
    if (r >= G) break;
    const uint4 q = tile[(size_t)r * O + o];
    if ((mask >> r) & 1u) { ex = expmax8<BF>(ex, q); continue; }  /* the pick checked the others */
#pragma unroll
    for (int k = 0; k < 4; k++) {
      mn2[k] = hmin2u<BF>(mn2[k], qword(q, k));
      mx2[k] = hmax2u<BF>(mx2[k], qword(q, k));
    }
  }
  bad |= exp_bad<BF>(ex);
  float mn[8], mx[8];
#pragma unroll
  for (int k = 0; k < 4; k++) {
    unpack2<BF>(mn2[k], mn[2 * k], mn[2 * k + 1]);
    unpack2<BF>(mx2[k], mx[2 * k], mx[2 * k + 1]);
  }
  for (uint32_t s = opw; s < 32u; s <<= 1) {
#pragma unroll
    for (int i = 0; i < 8; i++) {
      float omn = __shfl_xor_sync(0xffffffffu, mn[i], s);
      float omx = __shfl_xor_sync(0xffffffffu, mx[i], s);
      mn[i] = fminf(mn[i], omn);
      mx[i] = fmaxf(mx[i], omx);
    }
  }
  const float hi = (float)((1u << B) - 1u);
  uint16_t sh[8], mh[8];
#pragma unroll
  for (int i = 0; i < 8; i++) {
    if (first && mn[i] == 0.f) {
      /* first zero member of channel 8 o + i in row order (outliers are NaN) */
      const uint16_t *col = (const uint16_t *)tile + 8u * o + i;
      for (uint32_t r = 0; r < G; r++) {
        if ((mask >> r) & 1u) continue;
        const uint16_t h = col[(size_t)r * a.C];
        if ((h & 0x7fffu) == 0) { mn[i] = (h >> 15) ? -0.f : 0.f; break; }
      }
    }
    fq_range(mn[i], mx[i], hi, sh[i], mh[i], minf[i], inv[i], erange);
  }
  if (first) {
    uint4 s4, m4;
    s4.x = sh[0] | ((uint32_t)sh[1] << 16); s4.y = sh[2] | ((uint32_t)sh[3] << 16);
    s4.z = sh[4] | ((uint32_t)sh[5] << 16); s4.w = sh[6] | ((uint32_t)sh[7] << 16);
    m4.x = mh[0] | ((uint32_t)mh[1] << 16); m4.y = mh[2] | ((uint32_t)mh[3] << 16);
    m4.z = mh[4] | ((uint32_t)mh[5] << 16); m4.w = mh[6] | ((uint32_t)mh[7] << 16);
    *(uint4 *)(blk + a.kscale + o * 16u) = s4;
    *(uint4 *)(blk + a.kmin + o * 16u) = m4;
  }
}

/* Key codes (and the K half of sink rows) from the restored tile. */
template <bool BF, int B>
static __device__ __forceinline__ void fq_kcodes_out(const kvs_cu_args &a, const kvs__cuda_qjob &J,
                                                     uint8_t *blk, const uint4 *tile, uint32_t o,
                                                     uint32_t r0, uint32_t rpp,
                                                     const float (&minf)[8], const float (&inv)[8])
{
  const uint32_t G = a.G, O = a.C / 8u;
  const uint64_t mask = J.sink_mask;
  for (uint32_t t = 0; t < rpp; t++) {
    const uint32_t r = r0 + t;
    const bool valid = r < G;
    uint4 q = valid ? tile[(size_t)r * O + o] : make_uint4(0, 0, 0, 0);
    const bool sink = valid && ((mask >> r) & 1u);
    uint8_t *crow = blk + a.kcodes + (size_t)(valid ? r : 0) * a.kstride;
    if (sink) sink_put(J.rows[__popcll(mask & ((1ull << r) - 1ull))], o, q);
    uint32_t lo = 0, hw = 0;
    if (!sink) {
      code_octet_ch<BF, B>(q, minf, inv, lo, hw);
    }
    store_octet<B>(crow, o, lo, hw, valid);
  }
}

/* cp.async.wait_group takes an immediate: at most n of this thread's
 * groups still pending (n < 8: G <= 64, 8 warps). */
#ifndef KVS_QUANT_EMU
static __device__ __forceinline__ void cp_async_wait(uint32_t n)
{
  switch (n) {
    case 0: asm volatile("cp.async.wait_group 0;\n" ::: "memory"); break;
    case 1: asm volatile("cp.async.wait_group 1;\n" ::: "memory"); break;
    case 2: asm volatile("cp.async.wait_group 2;\n" ::: "memory"); break;
    case 3: asm volatile("cp.async.wait_group 3;\n" ::: "memory"); break;
    case 4: asm volatile("cp.async.wait_group 4;\n" ::: "memory"); break;
    case 5: asm volatile("cp.async.wait_group 5;\n" ::: "memory"); break;
    case 6: asm volatile("cp.async.wait_group 6;\n" ::: "memory"); break;
    default: asm volatile("cp.async.wait_group 7;\n" ::: "memory"); break;
  }
}
static __device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }
static __device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
/* 16 bytes global -> shared, asynchronously */
static __device__ __forceinline__ void cp_async16(uint4 *dst, const uint4 *src)
{
  uint32_t sa = (uint32_t)__cvta_generic_to_shared(dst);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(sa),
               "l"(__cvta_generic_to_global(src)) : "memory");
}
#else
static void cp_async_wait(uint32_t) {}
static void cp_async_wait_all() {}
static void cp_async_commit() {}
static void cp_async16(uint4 *dst, const uint4 *src) { *dst = *src; }
#endif

/* Key outliers of tile row r, once this warp's copy of it is in (at most
 * `pending` of the warp's later rows still on the way): the entries, and
 * a NaN at the outliers in the tile so that the ranges skip them. Each
 * lane reads the octets it copied itself (32j + lane). */
template <bool BF>
static __device__ __forceinline__ void fq_kpick(const kvs_cu_args &a, uint64_t mask, uint8_t *blk,
                                                uint4 *tile, uint32_t r, uint32_t pending, uint32_t nj,
                                                uint32_t nko, fq_warp *ws, uint32_t lane, bool &bad)
{
  cp_async_wait(pending);
  const uint32_t O = a.C / 8u;
  uint32_t *ent = (uint32_t *)(blk + a.kout) + (size_t)r * nko;
  if ((mask >> r) & 1u) {
    for (uint32_t i = lane; i < nko; i += 32) ent[i] = 0;
    return;
  }
  uint4 d[KVS_FQ_NJ];
#pragma unroll
  for (int j = 0; j < KVS_FQ_NJ; j++)
    d[j] = j < (int)nj ? tile[(size_t)r * O + 32u * j + lane] : make_uint4(0, 0, 0, 0);
  const uint32_t sb = fq_outliers<BF>(d, nj, nko, ent, ws, lane, bad);
  if (sb) {
#pragma unroll
    for (int j = 0; j < KVS_FQ_NJ; j++)
      if (j < (int)nj)
        tile[(size_t)r * O + 32u * j + lane] =
            make_uint4(d[j].x | nanmask(sb, 4 * j), d[j].y | nanmask(sb, 4 * j + 1),
                       d[j].z | nanmask(sb, 4 * j + 2), d[j].w | nanmask(sb, 4 * j + 3));
  }
}

/* Blocks per multiprocessor the register budget aims at (64 KB of tile
 * each: 3 fit in shared memory). */
#ifndef KVS_FQ_OUT_MINB
#define KVS_FQ_OUT_MINB 3
#endif
#ifndef KVS_FQ_NJT
#define KVS_FQ_NJT 1   /* C = 1024 gets its own instance (octets per lane a constant) */
#endif
/* OUT: the outlier path above (3 blocks per multiprocessor, 80 registers:
 * spills around the exact pick's call; the registers of 2 blocks, with or
 * without the next V row prefetched, measured no faster on an H200). */
template <bool BF, bool OUT, int NJT>
static __device__ __forceinline__ void fq_job(const kvs_cu_args &a, const kvs__cuda_qjob &J, int *st)
{
  extern __shared__ __align__(16) uint32_t fsm[];
  if ((((uintptr_t)J.k | (uintptr_t)J.v | (uintptr_t)J.block) & 15u) != 0) {
    quant_general(a, J, st, fsm);
    return;
  }
  const uint32_t G = a.G, C = a.C, O = C / 8u, nj = NJT ? (uint32_t)NJT : C / 256u;
  const uint32_t tid = threadIdx.x, lane = tid & 31u, warp = tid >> 5;
  const uint64_t mask = J.sink_mask;
  const uint32_t nko = a.kb == 16 ? 0 : a.nko, nvo = a.vb == 16 ? 0 : a.nvo;
  uint8_t *blk = (uint8_t *)J.block;
  uint4 *tile = (uint4 *)fsm;
  /* after the tile, when OUT: [G][32] words no longer used (the key
   * outlier mask of the masked path; kept, the layout is the one measured),
   * then a fq_warp per warp */
  fq_warp *wsa = (fq_warp *)((uint32_t *)(tile + (size_t)G * O) + (OUT ? G * 32u : 0u));
  fq_warp *ws = wsa + warp;
  bool bad = false, erange = false;

  /* 1. K tile -> shared memory. With key outliers each warp copies the
   * rows it picks (warp + 8t), one group per row, so that after its value
   * rows (step 2) it picks each as soon as it is in (step 3). */
  const bool kpick = OUT && nko;
  const uint32_t rpw = (G + KVS_CU_THREADS / 32 - 1) / (KVS_CU_THREADS / 32);  /* rows per warp */
  if (kpick) {
    const uint4 *src = (const uint4 *)J.k;
    for (uint32_t t = 0; t < rpw; t++) {
      const uint32_t r = warp + t * (KVS_CU_THREADS / 32);
      if (r < G)
        for (uint32_t i = r * O + lane; i < (r + 1) * O; i += 32) cp_async16(tile + i, src + i);
      cp_async_commit();
    }
  } else {
    const uint4 *src = (const uint4 *)J.k;
    const uint32_t n16 = G * O;
    for (uint32_t i = tid; i < n16; i += KVS_CU_THREADS) cp_async16(tile + i, src + i);
    cp_async_commit();
  }
  /* header and the alignment gaps between sections */
  if (tid == 0) {
    uint4 h;
    h.x = (uint32_t)mask;
    h.y = (uint32_t)(mask >> 32);
    h.z = (uint32_t)__popcll(mask) | (a.kb << 16) | (a.vb << 24);
    h.w = G;
    *(uint4 *)blk = h;
  } else if (tid <= 8) {
    const uint32_t ng = C / a.vg;
    size_t s0 = 0, e0 = 0, nx = 0;
    switch (tid) {
      case 1: s0 = a.kscale; e0 = s0 + 2u * C; nx = a.kmin; break;
      case 2: s0 = a.kmin; e0 = s0 + 2u * C; nx = a.kcodes; break;
      case 3: s0 = a.kcodes; e0 = s0 + (size_t)G * a.kstride; nx = a.vscale; break;
      case 4: s0 = a.vscale; e0 = s0 + 2u * (size_t)G * ng; nx = a.vmin; break;
      case 5: s0 = a.vmin; e0 = s0 + 2u * (size_t)G * ng; nx = a.vcodes; break;
      case 6: s0 = a.vcodes; e0 = s0 + (size_t)G * a.vstride; nx = a.kout; break;
      case 7: s0 = a.kout; e0 = s0 + 4u * (size_t)G * nko; nx = a.vout; break;
      default: s0 = a.vout; e0 = s0 + 4u * (size_t)G * nvo; nx = a.total; break;
    }
    for (size_t i = e0; i < nx; i++) blk[i] = 0;
  }

  /* 2. values: a warp per row, straight from global memory */
  {
    const uint32_t vb = a.vb, ng = C / a.vg;
    /* without outliers the warp's next row is loaded while this one is
     * coded; with them there is no register room for it (measured slower) */
    constexpr bool PF = !OUT;
    /* with outliers the pick finds a non-sink row's NaN/Inf */
    const bool vpick = OUT && nvo;
    uint4 dn[KVS_FQ_NJ];
    if constexpr (PF) {
#pragma unroll
      for (int j = 0; j < KVS_FQ_NJ; j++)
        dn[j] = j < (int)nj && warp < G ? __ldg((const uint4 *)(J.v + (size_t)warp * C) + 32u * j + lane)
                                        : make_uint4(0, 0, 0, 0);
    }
    for (uint32_t r = warp; r < G; r += KVS_CU_THREADS / 32) {
      uint4 d[KVS_FQ_NJ];
      uint32_t ex = 0;
      const bool chk = !vpick || ((mask >> r) & 1u);
      if constexpr (PF) {
        const uint32_t rn = r + KVS_CU_THREADS / 32;
#pragma unroll
        for (int j = 0; j < KVS_FQ_NJ; j++) {
          d[j] = dn[j];
          dn[j] = j < (int)nj && rn < G ? __ldg((const uint4 *)(J.v + (size_t)rn * C) + 32u * j + lane)
                                        : make_uint4(0, 0, 0, 0);
          if (chk) ex = expmax8<BF>(ex, d[j]);
        }
      } else {
        const uint4 *src = (const uint4 *)(J.v + (size_t)r * C);
#pragma unroll
        for (int j = 0; j < KVS_FQ_NJ; j++) {
          d[j] = j < (int)nj ? __ldg(src + 32u * j + lane) : make_uint4(0, 0, 0, 0);
          if (chk) ex = expmax8<BF>(ex, d[j]);
        }
      }
      bad |= exp_bad<BF>(ex);
      if ((mask >> r) & 1u) {
        uint16_t *dst = J.rows[__popcll(mask & ((1ull << r) - 1ull))] + C;
        uint8_t *crow = blk + a.vcodes + (size_t)r * a.vstride;
#pragma unroll
        for (int j = 0; j < KVS_FQ_NJ; j++)
          if (j < (int)nj) sink_put(dst, 32u * j + lane, d[j]);
        for (uint32_t i = lane; i < a.vstride / 4u; i += 32) ((uint32_t *)crow)[i] = 0;
        for (uint32_t i = lane; i < ng; i += 32) {
          ((uint16_t *)(blk + a.vscale))[(size_t)r * ng + i] = 0;
          ((uint16_t *)(blk + a.vmin))[(size_t)r * ng + i] = 0;
        }
        for (uint32_t i = lane; i < nvo; i += 32) ((uint32_t *)(blk + a.vout))[(size_t)r * nvo + i] = 0;
        continue;
      }
      if (vpick) {
        const uint32_t sb =
            fq_outliers<BF>(d, nj, nvo, (uint32_t *)(blk + a.vout) + (size_t)r * nvo, ws, lane, bad);
        switch (vb) {
          case 2: fq_vrow_out<BF, 2>(a, blk, r, d, nj, sb, lane, erange); break;
          case 3: fq_vrow_out<BF, 3>(a, blk, r, d, nj, sb, lane, erange); break;
          case 4: fq_vrow_out<BF, 4>(a, blk, r, d, nj, sb, lane, erange); break;
          default: fq_vrow_out<BF, 8>(a, blk, r, d, nj, sb, lane, erange); break;  /* nvo: not 16 */
        }
        continue;
      }
      switch (vb) {
        case 2: fq_vrow<BF, 2>(a, blk, r, d, nj, lane, erange); break;
        case 3: fq_vrow<BF, 3>(a, blk, r, d, nj, lane, erange); break;
        case 4: fq_vrow<BF, 4>(a, blk, r, d, nj, lane, erange); break;
        case 8: fq_vrow<BF, 8>(a, blk, r, d, nj, lane, erange); break;
        default: {
          fq_vrow<BF, 16>(a, blk, r, d, nj, lane, erange);
          for (uint32_t i = lane; i < ng; i += 32) {
            ((uint16_t *)(blk + a.vscale))[(size_t)r * ng + i] = 0;
            ((uint16_t *)(blk + a.vmin))[(size_t)r * ng + i] = 0;
          }
        }
      }
    }
  }
  /* 3. key outliers: each warp picks its own rows as they come in, with
   * no barrier before (a pick between the value rows, KVS_FQ_KINTER in
   * the measured variant, ran slower: more registers spilled) */
  if (kpick)
    for (uint32_t r = warp, t = 0; r < G; r += KVS_CU_THREADS / 32, t++)
      fq_kpick<BF>(a, mask, blk, tile, r, rpw - 1u - t, nj, nko, ws, lane, bad);
  cp_async_wait_all();
  __syncthreads();

  /* 4. keys with outliers: ranges over the NaN-masked tile, the outliers
   * put back, then the codes */
  if (OUT && nko) {
    const uint32_t P = nj == 1 ? 8u : nj == 2 ? 4u : 2u, opw = 32u / P;
    const bool part = warp < nj * P;
    const uint32_t p = lane / opw, o = warp * opw + (lane % opw);
    const uint32_t rpp = (G + P - 1u) / P, r0 = p * rpp;
    float minf[8], inv[8];
    if (part) {
      switch (a.kb) {
        case 2: fq_krange_out<BF, 2>(a, mask, blk, tile, o, r0, rpp, opw, lane, p == 0, bad, erange, minf, inv); break;
        case 3: fq_krange_out<BF, 3>(a, mask, blk, tile, o, r0, rpp, opw, lane, p == 0, bad, erange, minf, inv); break;
        case 4: fq_krange_out<BF, 4>(a, mask, blk, tile, o, r0, rpp, opw, lane, p == 0, bad, erange, minf, inv); break;
        default: fq_krange_out<BF, 8>(a, mask, blk, tile, o, r0, rpp, opw, lane, p == 0, bad, erange, minf, inv); break;
      }
    }
    __syncthreads();
    {
      const uint32_t *ent = (const uint32_t *)(blk + a.kout);
      uint16_t *t16 = (uint16_t *)tile;
      for (uint32_t i = tid; i < G * nko; i += KVS_CU_THREADS) {
        const uint32_t r = i / nko;
        if ((mask >> r) & 1u) continue;
        const uint32_t e = ent[i];
        t16[(size_t)r * C + (e & 0xffffu)] = (uint16_t)(e >> 16);
      }
    }
    __syncthreads();
    if (part) {
      switch (a.kb) {
        case 2: fq_kcodes_out<BF, 2>(a, J, blk, tile, o, r0, rpp, minf, inv); break;
        case 3: fq_kcodes_out<BF, 3>(a, J, blk, tile, o, r0, rpp, minf, inv); break;
        case 4: fq_kcodes_out<BF, 4>(a, J, blk, tile, o, r0, rpp, minf, inv); break;
        default: fq_kcodes_out<BF, 8>(a, J, blk, tile, o, r0, rpp, minf, inv); break;
      }
    }
    if (bad) set_status(st, KVS_ENAN);
    if (erange) set_status(st, -ERANGE);
    return;
  }

  /* 4. keys without outliers: parts P (power of two, nj * P <= 8 warps), octets per warp
   * opw = 32 / P; lane = part * opw + octet in warp */
  {
    const uint32_t P = nj == 1 ? 8u : nj == 2 ? 4u : 2u, opw = 32u / P;
    if (warp < nj * P) {
      const uint32_t p = lane / opw, o = warp * opw + (lane % opw);
      const uint32_t rpp = (G + P - 1u) / P, r0 = p * rpp;
      switch (a.kb) {
        case 2: fq_kcols<BF, 2>(a, J, blk, tile, o, r0, rpp, opw, lane, p == 0, bad, erange); break;
        case 3: fq_kcols<BF, 3>(a, J, blk, tile, o, r0, rpp, opw, lane, p == 0, bad, erange); break;
        case 4: fq_kcols<BF, 4>(a, J, blk, tile, o, r0, rpp, opw, lane, p == 0, bad, erange); break;
        case 8: fq_kcols<BF, 8>(a, J, blk, tile, o, r0, rpp, opw, lane, p == 0, bad, erange); break;
        default: fq_kcols<BF, 16>(a, J, blk, tile, o, r0, rpp, opw, lane, p == 0, bad, erange); break;
      }
    }
  }
  if (bad) set_status(st, KVS_ENAN);
  if (erange) set_status(st, -ERANGE);
}

/* ---- The feed (HACKING.md Decision 51) --------------------------------
 * A bulk device put launches one kernel before its host work and hands it
 * jobs as it claims blocks: the host writes job j (at a stride of
 * KVS__CUDA_FEED_STRIDE, so no cache line holds two hand-overs) and then
 * the count in the feed word (a release store) in mapped page-locked
 * memory. Reads of that memory are slow and few at a time (loads of it
 * from every block made the kernel 15 times slower on an H200), so block
 * 0 alone watches the word and copies it, tagged with the launch's
 * generation, into a device word (mirror) that the other blocks watch;
 * a worker (every other block) takes the next job index from a device
 * counter when it is free (a fixed share per block left fast blocks idle
 * behind slow ones: 72 % of a copy with every job there).
 * Block 0 ends when it sees the feed closed (KVS__CUDA_FEED_CLOSED); a
 * worker, when its next job is past the final count. A feed left open
 * past KVS__CUDA_FEED_TIMEOUT_NS sets -ETIMEDOUT and ends instead of
 * holding the GPU. */
__shared__ uint32_t kvs_feed_go;
#define KVS__CUDA_FEED_STALL_NS 200000ull /* a worker reads the host's word itself after this */

#ifdef KVS_QUANT_EMU
#include <atomic>
static uint32_t feed_load_sys(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static unsigned long long feed_load_gpu(const unsigned long long *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static void feed_store_gpu(unsigned long long *p, unsigned long long v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
/* the emulation's feeds come closed; its clock jumps 100 us a reading,
 * so that a worker run before the watcher takes the stall path */
static uint64_t feed_clock(void)
{
  static std::atomic<uint64_t> t{0};
  return t += 100000;
}
static void feed_sleep(uint32_t) {}
static void feed_fence_sys(void) {}
static void feed_fence_gpu(void) {}
#else
static __device__ __forceinline__ uint32_t feed_load_sys(const uint32_t *p)
{
  uint32_t v;
  asm volatile("ld.relaxed.sys.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
static __device__ __forceinline__ unsigned long long feed_load_gpu(const unsigned long long *p)
{
  unsigned long long v;
  asm volatile("ld.relaxed.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
}
static __device__ __forceinline__ void feed_store_gpu(unsigned long long *p, unsigned long long v)
{
  asm volatile("st.relaxed.gpu.global.u64 [%0], %1;" : : "l"(p), "l"(v) : "memory");
}
/* host release -> block 0 (system scope) -> workers (GPU scope) */
static __device__ __forceinline__ void feed_fence_sys(void) { asm volatile("fence.acq_rel.sys;" ::: "memory"); }
static __device__ __forceinline__ void feed_fence_gpu(void) { asm volatile("fence.acq_rel.gpu;" ::: "memory"); }
static __device__ __forceinline__ uint64_t feed_clock(void)
{
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
static __device__ __forceinline__ void feed_sleep(uint32_t ns) { __nanosleep(ns); }
#endif

/* Block 0's thread 0: copy the word into the mirror as it changes, until
 * it is closed. */
static __device__ __forceinline__ void feed_watch(const kvs_feed_arg &f, int *st)
{
  uint32_t last = ~0u;
  const uint64_t t0 = feed_clock();
  for (;;) {
    const uint32_t w = feed_load_sys(f.word);
    if (w != last) {
      feed_fence_sys();
      feed_store_gpu(f.mirror, (unsigned long long)f.gen << 32 | w);
      last = w;
    }
    if (w & KVS__CUDA_FEED_CLOSED) return;
    if (feed_clock() - t0 > KVS__CUDA_FEED_TIMEOUT_NS) {
      set_status(st, -ETIMEDOUT);
      feed_store_gpu(f.mirror, (unsigned long long)f.gen << 32 | KVS__CUDA_FEED_CLOSED);
      return;
    }
    feed_sleep(200);
  }
}

/* The next job for this block (thread 0 takes the next index, so that a
 * block that is free takes the next job handed over: no block waits for
 * a job while another lies untaken), once it has come (every thread
 * gets it), or UINT32_MAX: the feed closed without it. */
static __device__ __forceinline__ uint32_t feed_next(const kvs_feed_arg &f, int *st)
{
  if (threadIdx.x == 0) {
    const uint32_t j = atomicAdd(&f.ctr[0], 1u);
    uint32_t go = 0, ns = 32;
    const uint64_t t0 = feed_clock();
    uint64_t stall = KVS__CUDA_FEED_STALL_NS;
    for (;;) {
      const unsigned long long m = feed_load_gpu(f.mirror);
      uint32_t w = (uint32_t)(m >> 32) == f.gen ? (uint32_t)m : 0u;
      /* block 0 should have mirrored the word within microseconds; if
       * the GPU has not run it (fewer blocks resident than the occupancy
       * said, under MPS limits), read the host's word itself, slowly */
      if (!(w & KVS__CUDA_FEED_CLOSED) && j >= (w & KVS__CUDA_FEED_COUNT) &&
          feed_clock() - t0 > stall) {
        stall += 10000; /* then every 10 us at most: such reads are few at a time */
        w = feed_load_sys(f.word);
        if (j < (w & KVS__CUDA_FEED_COUNT)) { feed_fence_sys(); go = 1; break; }
      }
      if (j < (w & KVS__CUDA_FEED_COUNT)) { feed_fence_gpu(); go = 1; break; }
      if (w & KVS__CUDA_FEED_CLOSED) break;
      if (feed_clock() - t0 > KVS__CUDA_FEED_TIMEOUT_NS) { set_status(st, -ETIMEDOUT); break; }
      feed_sleep(ns);
      if (ns < 256) ns *= 2;
    }
    kvs_feed_go = go ? j : UINT32_MAX;
  }
  __syncthreads();
  return kvs_feed_go;
}

/* One job per CUDA block. (feed: unused.) The job is read where it lies
 * (through a reference), so the compiler may load its fields again
 * rather than hold them in registers. */
template <bool BF, bool OUT, int NJT>
static __global__ void __launch_bounds__(KVS_CU_THREADS, OUT ? KVS_FQ_OUT_MINB : 3)
kvs_fquant_kernel(kvs_cu_args a, const kvs__cuda_qjob *jobs, int *st, kvs_feed_arg f)
{
  fq_job<BF, OUT, NJT>(a, jobs[blockIdx.x], st);
  launch_done(f.done, st);
}

/* ---- 16-bit blocks by copy (K and V both 16 bits; Decision 56) --------
 * Such a block is its rows as they came, in place: the header, zeros
 * where the scales, minima and sink rows would be, the K rows, the V
 * rows (the C reference's raw_row). So it needs no tile and no warp per
 * row: each CUDA block copies 1/P of one job's block, 16 bytes a thread
 * and step, four steps' loads in flight before their stores; the sink
 * rows go to their own slots (K words then V words, as sink_rows). The
 * NaN/Inf check covers every input word, sink rows too, as any_bad does.
 * Jobs whose K, V or block are not 16-byte aligned take 2-byte steps. */
static __host__ __device__ __forceinline__ uint32_t cp16_parts(const kvs_cu_args &a)
{
  const uint32_t nu = (uint32_t)(a.total / 16u);
  return (nu + KVS_CU_THREADS * 16u - 1u) / (KVS_CU_THREADS * 16u);
}

static __device__ __forceinline__ uint32_t cp16_bad(const uint4 &q, uint32_t e, uint32_t one)
{
  return (((q.x & e) + one) | ((q.y & e) + one) | ((q.z & e) + one) | ((q.w & e) + one)) & 0x80008000u;
}
static __device__ __forceinline__ uint32_t cp16_bad(uint16_t h, uint32_t e, uint32_t one)
{
  return ((h & e) + one) & 0x8000u;
}
static __device__ __forceinline__ void cp16_row(uint16_t *dst, uint32_t o, const uint4 &q) { sink_put(dst, o, q); }
static __device__ __forceinline__ void cp16_row(uint16_t *dst, uint32_t o, uint16_t h) { dst[o] = h; }
static __device__ __forceinline__ void cp16_zero(uint4 &q) { q = make_uint4(0, 0, 0, 0); }
static __device__ __forceinline__ void cp16_zero(uint16_t &h) { h = 0; }
/* unit u (< 16 / sizeof(T)) of the header */
static __device__ __forceinline__ void cp16_hdr(uint4 &q, uint32_t, const uint4 &h) { q = h; }
static __device__ __forceinline__ void cp16_hdr(uint16_t &x, uint32_t u, const uint4 &h)
{
  const uint32_t w = u < 2 ? h.x : u < 4 ? h.y : u < 6 ? h.z : h.w;
  x = (uint16_t)(w >> (16u * (u & 1u)));
}

/* Part `part` of P of block J, in units T (uint4 or uint16_t): the loads
 * of four units a thread first, then their checks and stores. */
template <typename T>
static __device__ __forceinline__ void cp16_part(const kvs_cu_args &a, const kvs__cuda_qjob &J, uint32_t part,
                                                 uint32_t P, uint32_t &bad)
{
  constexpr uint32_t E = 16u / sizeof(T); /* units per 16 bytes */
  const uint32_t nu = (uint32_t)(a.total / sizeof(T)), per = (nu + P - 1u) / P, u0 = part * per;
  const uint32_t u1 = min(nu, u0 + per);
  const bool bf = a.dtype == KVS_DTYPE_BF16;
  const uint32_t e = bf ? 0x7f807f80u : 0x7c007c00u, one = bf ? 0x00800080u : 0x04000400u;
  const uint32_t rowu = 2u * a.C / (uint32_t)sizeof(T);
  const uint32_t kc = (uint32_t)(a.kcodes / sizeof(T)), vc = (uint32_t)(a.vcodes / sizeof(T));
  const uint32_t ke = kc + a.G * rowu, ve = vc + a.G * rowu;
  const uint64_t mask = J.sink_mask;
  const T *ks = (const T *)J.k, *vs = (const T *)J.v;
  T *blk = (T *)J.block;
  const uint4 hdr = make_uint4((uint32_t)mask, (uint32_t)(mask >> 32),
                               (uint32_t)__popcll(mask) | (a.kb << 16) | (a.vb << 24), a.G);
  for (uint32_t b0 = u0 + threadIdx.x; b0 < u1; b0 += KVS_CU_THREADS * 4u) {
    T x0, x1, x2, x3;
    uint32_t w0, w1, w2, w3; /* 1 + input unit index (V: + G rows), 0 else */
#define CP16_LOAD(X, W, I)                                   \
    {                                                        \
      const uint32_t u = b0 + (I) * KVS_CU_THREADS;          \
      W = 0;                                                 \
      cp16_zero(X);                                          \
      if (u < u1) {                                          \
        if (u >= kc && u < ke) { W = u - kc + 1u; X = ks[u - kc]; }                    \
        else if (u >= vc && u < ve) { W = u - vc + 1u + a.G * rowu; X = vs[u - vc]; } \
        else if (u < E) cp16_hdr(X, u, hdr);                                          \
      }                                                      \
    }
    CP16_LOAD(x0, w0, 0) CP16_LOAD(x1, w1, 1) CP16_LOAD(x2, w2, 2) CP16_LOAD(x3, w3, 3)
#undef CP16_LOAD
#define CP16_STORE(X, W, I)                                  \
    {                                                        \
      const uint32_t u = b0 + (I) * KVS_CU_THREADS;          \
      if (u < u1) {                                          \
        if (W) {                                             \
          bad |= cp16_bad(X, e, one);                        \
          const bool isv = W > a.G * rowu;                   \
          const uint32_t i = W - 1u - (isv ? a.G * rowu : 0u), r = mask ? i / rowu : 0u; \
          if ((mask >> r) & 1u) {                            \
            cp16_row(J.rows[__popcll(mask & ((1ull << r) - 1ull))] + (isv ? a.C : 0u), i - r * rowu, X); \
            cp16_zero(X);                                    \
          }                                                  \
        }                                                    \
        blk[u] = X;                                          \
      }                                                      \
    }
    CP16_STORE(x0, w0, 0) CP16_STORE(x1, w1, 1) CP16_STORE(x2, w2, 2) CP16_STORE(x3, w3, 3)
#undef CP16_STORE
  }
}

static __global__ void __launch_bounds__(KVS_CU_THREADS)
kvs_copy16_kernel(kvs_cu_args a, const kvs__cuda_qjob *jobs, int *st, kvs_feed_arg f)
{
  const uint32_t P = cp16_parts(a), part = blockIdx.x % P;
  const kvs__cuda_qjob J = jobs[blockIdx.x / P];
  uint32_t bad = 0;
  if ((((uintptr_t)J.k | (uintptr_t)J.v | (uintptr_t)J.block) & 15u) == 0) cp16_part<uint4>(a, J, part, P, bad);
  else cp16_part<uint16_t>(a, J, part, P, bad);
  if (bad) set_status(st, KVS_ENAN);
  launch_done(f.done, st);
}

/* Params the copy takes: 16/16 bits, whole 16-byte rows, sections
 * 16-byte aligned (kvs__qlayout_of aligns them). */
static bool cp16_ok(const kvs_cu_args &a)
{
  return a.kb == 16 && a.vb == 16 && a.C % 8u == 0 && a.kstride == 2u * a.C && a.vstride == 2u * a.C &&
         (a.kcodes & 15u) == 0 && (a.vcodes & 15u) == 0 && (a.total & 15u) == 0 && a.G <= 64u &&
         cp16_parts(a) <= 64u;
}

/* The jobs of a feed, at KVS__CUDA_FEED_STRIDE (block 0 watches). */
template <bool BF, bool OUT, int NJT>
static __global__ void __launch_bounds__(KVS_CU_THREADS, OUT ? KVS_FQ_OUT_MINB : 3)
kvs_fquant_feed_kernel(kvs_cu_args a, const kvs__cuda_qjob *jobs, int *st, kvs_feed_arg f)
{
  if (blockIdx.x == 0) {
    if (threadIdx.x == 0) feed_watch(f, st);
    return;
  }
  for (uint32_t j; (j = feed_next(f, st)) != UINT32_MAX;) {
    fq_job<BF, OUT, NJT>(a, *(const kvs__cuda_qjob *)((const uint8_t *)jobs + (size_t)j * KVS__CUDA_FEED_STRIDE), st);
    __syncthreads(); /* shared memory (kvs_feed_go too) is the next job's */
  }
  /* the last worker out sets the counters back for the next feed (which
   * the stream orders after this kernel): every other worker has taken
   * its last index by then */
  if (threadIdx.x == 0 && atomicAdd(&f.ctr[1], 1u) == gridDim.x - 2u) {
    f.ctr[0] = 0;
    f.ctr[1] = 0;
  }
}

static __device__ __forceinline__ uint32_t read_code(const uint32_t *row, uint32_t c, uint32_t b)
{
  uint64_t p = (uint64_t)c * b;
  uint32_t w = (uint32_t)(p >> 5), s = (uint32_t)(p & 31u);
  uint64_t v = row[w];
  if (s + b > 32u) v |= (uint64_t)row[w + 1] << 32;
  return (uint32_t)(v >> s) & ((b == 32u) ? 0xffffffffu : ((1u << b) - 1u));
}

/* One element of the dequantized output. */
static __device__ __forceinline__ uint16_t dq_elem(const kvs_cu_args &a, const uint8_t *blk,
                                                   const kvs__cuda_dqjob &J, uint64_t mask,
                                                   bool isv, uint32_t r, uint32_t c)
{
  const uint32_t C = a.C;
  if ((mask >> r) & 1u) {
    const uint16_t *src = J.rows[__popcll(mask & ((1ull << r) - 1ull))];
    return src[(isv ? C : 0u) + c];
  }
  uint32_t b = isv ? a.vb : a.kb;
  const uint32_t *row = (const uint32_t *)(blk + (isv ? a.vcodes + r * a.vstride : a.kcodes + r * a.kstride));
  uint32_t code = read_code(row, c, b);
  if (b == 16) return (uint16_t)code;
  uint32_t si = isv ? r * (C / a.vg) + c / a.vg : c;
  const uint16_t *sc = (const uint16_t *)(blk + (isv ? a.vscale : a.kscale));
  const uint16_t *mn = (const uint16_t *)(blk + (isv ? a.vmin : a.kmin));
  float x = __fadd_rn(f162f(mn[si]), __fmul_rn((float)code, f162f(sc[si])));
  return f2h(x, a.dtype);
}

/* Fast path: 8 consecutive elements per step (one 16-byte store), for
 * power-of-two widths and 3, C and vg multiples of 8 and an aligned output.
 * The 8 codes sit in one aligned 16, 32, 64 or 128-bit piece of the row
 * (3 bits: 3 bytes). */
static __device__ __forceinline__ void dq_octets(const kvs_cu_args &a, const uint8_t *blk,
                                                 const kvs__cuda_dqjob &J, uint64_t mask,
                                                 int isv, uint16_t *out)
{
  const uint32_t C = a.C, b = isv ? a.vb : a.kb, oct = C / 8u;
  /* 32-bit counters, the row and column stepped without a division per
   * octet (a 64-bit i / oct, i % oct cost about as much as the stores) */
  const uint32_t n8 = (J.r1 - J.r0) * oct, step = blockDim.x, dr = step / oct, dc = step % oct;
  const uint8_t *codes = blk + (isv ? a.vcodes : a.kcodes);
  const size_t stride = isv ? a.vstride : a.kstride;
  const uint16_t *sc = (const uint16_t *)(blk + (isv ? a.vscale : a.kscale));
  const uint16_t *mn = (const uint16_t *)(blk + (isv ? a.vmin : a.kmin));
  const uint32_t ng = C / a.vg, gsh = (a.vg & (a.vg - 1u)) == 0 ? (uint32_t)(__ffs(a.vg) - 1) : 32u;
  uint32_t r = J.r0 + threadIdx.x / oct, co = threadIdx.x % oct;
  for (uint32_t i = threadIdx.x; i < n8; i += step) {
    const uint32_t c = co * 8u;
    union { uint4 q; uint16_t h[8]; } u;
    uint16_t *o = u.h;
    if ((mask >> r) & 1u) {
      const uint16_t *src = J.rows[__popcll(mask & ((1ull << r) - 1ull))] + (isv ? C : 0u) + c;
      for (int j = 0; j < 8; j++) o[j] = src[j];
    } else {
      const uint8_t *row = codes + (size_t)r * stride;
      if (b == 16) {
        u.q = *(const uint4 *)(row + (size_t)c * 2u);
      } else {
        uint64_t bits;
        if (b == 8) bits = *(const uint64_t *)(row + c);
        else if (b == 4) bits = *(const uint32_t *)(row + c / 2u);
        else if (b == 3) {
          const uint8_t *p3 = row + (c / 8u) * 3u;  /* 24 bits, byte aligned */
          bits = (uint32_t)p3[0] | ((uint32_t)p3[1] << 8) | ((uint32_t)p3[2] << 16);
        } else bits = *(const uint16_t *)(row + c / 4u);
        const uint32_t m = (1u << b) - 1u;
        if (isv) {
          uint32_t gi = r * ng + (gsh < 32u ? c >> gsh : c / a.vg);
          float sf = f162f(sc[gi]), mf = f162f(mn[gi]);
          for (int j = 0; j < 8; j++)
            o[j] = f2h(__fadd_rn(mf, __fmul_rn((float)((uint32_t)(bits >> (j * b)) & m), sf)), a.dtype);
        } else {
          uint4 s4 = *(const uint4 *)(sc + c), m4 = *(const uint4 *)(mn + c);
          const uint16_t *s8 = (const uint16_t *)&s4, *m8 = (const uint16_t *)&m4;
          for (int j = 0; j < 8; j++)
            o[j] = f2h(__fadd_rn(f162f(m8[j]), __fmul_rn((float)((uint32_t)(bits >> (j * b)) & m),
                                                         f162f(s8[j]))), a.dtype);
        }
      }
    }
    *(uint4 *)(out + (size_t)(r - J.r0) * C + c) = u.q;
    co += dc; /* the next octet of this thread: step / oct rows on */
    r += dr;
    if (co >= oct) { co -= oct; r++; }
  }
}

static __device__ __forceinline__ void dq_job(const kvs_cu_args &a, const kvs__cuda_dqjob &J)
{
  const uint8_t *blk = (const uint8_t *)J.block;
  const uint64_t mask = ((const kvs__qhdr *)blk)->sink_mask;
  const uint32_t C = a.C, tid = threadIdx.x, nt = blockDim.x;
  const size_t n = (size_t)(J.r1 - J.r0) * C;
  for (int side = 0; side < 2; side++) {
    uint16_t *out = side ? J.v_out : J.k_out;
    const uint32_t b = side ? a.vb : a.kb;
    if (((uintptr_t)out & 15u) == 0 && C % 8u == 0 && ((b & (b - 1u)) == 0 || b == 3u) &&
        (!side || a.vg % 8u == 0)) {
      dq_octets(a, blk, J, mask, side, out);
    } else if (((uintptr_t)out & 3u) == 0) {
      for (size_t e = 2 * (size_t)tid; e < n; e += 2 * (size_t)nt) {
        uint32_t r = J.r0 + (uint32_t)(e / C), c = (uint32_t)(e % C);
        uint16_t lo = dq_elem(a, blk, J, mask, side, r, c);
        if (e + 1 < n) {
          uint32_t r2 = c + 1 < C ? r : r + 1, c2 = c + 1 < C ? c + 1 : 0;
          uint16_t hi = dq_elem(a, blk, J, mask, side, r2, c2);
          *(uint32_t *)(out + e) = (uint32_t)lo | ((uint32_t)hi << 16);
        } else {
          out[e] = lo;
        }
      }
    } else {
      for (size_t e = tid; e < n; e += nt)
        out[e] = dq_elem(a, blk, J, mask, side, J.r0 + (uint32_t)(e / C), (uint32_t)(e % C));
    }
  }
  const uint32_t nko = a.kb == 16 ? 0 : a.nko, nvo = a.vb == 16 ? 0 : a.nvo;
  if (!nko && !nvo) return;
  __syncthreads();
  /* outliers overwrite their positions */
  for (int side = 0; side < 2; side++) {
    uint32_t no = side ? nvo : nko;
    if (!no) continue;
    const uint32_t *ent = (const uint32_t *)(blk + (side ? a.vout : a.kout));
    uint16_t *out = side ? J.v_out : J.k_out;
    for (uint32_t i = tid; i < (J.r1 - J.r0) * no; i += nt) {
      uint32_t r = J.r0 + i / no;
      if ((mask >> r) & 1u) continue;
      uint32_t e = ent[(size_t)r * no + i % no];
      uint32_t c = e & 0xffffu;
      if (c < C) out[(size_t)(r - J.r0) * C + c] = (uint16_t)(e >> 16);
    }
  }
}

static __global__ void __launch_bounds__(KVS_CU_THREADS)
kvs_dequant_kernel(kvs_cu_args a, const kvs__cuda_dqjob *jobs, kvs_done_arg d)
{
  const kvs__cuda_dqjob J = jobs[blockIdx.x];
  dq_job(a, J);
  launch_done(d, nullptr);
}

static int fill_args(const kvs__qparams *p, const kvs__qlayout *l, kvs_cu_args *a)
{
  if (!p || !l || p->group == 0 || p->group > KVS_QBLOCK_MAX_G || p->channels == 0 ||
      p->channels > 65536u || p->v_group == 0 || p->channels % p->v_group)
    return -EINVAL;
  uint32_t kb = p->k_bits, vb = p->v_bits;
  if (!(kb == 2 || kb == 3 || kb == 4 || kb == 8 || kb == 16)) return -EINVAL;
  if (!(vb == 2 || vb == 3 || vb == 4 || vb == 8 || vb == 16)) return -EINVAL;
  if (p->dtype != KVS_DTYPE_F16 && p->dtype != KVS_DTYPE_BF16) return -EINVAL;
  if (p->k_outliers > p->channels || p->v_outliers > p->channels) return -EINVAL;
  if ((l->kstride & 3u) || (l->vstride & 3u) || (l->kcodes & 3u) || (l->vcodes & 3u)) return -EINVAL;
  *a = kvs_cu_args{p->group, p->channels, p->v_group, kb, vb, p->k_outliers, p->v_outliers,
                   (uint32_t)p->dtype, 0, l->kscale, l->kmin, l->kcodes, l->vscale, l->vmin,
                   l->vcodes, l->kout, l->vout, l->total, l->kstride, l->vstride};
  return 0;
}

static size_t quant_smem(const kvs_cu_args &a)
{
  size_t W = (a.C + 31u) / 32u, s = 0;
  if (a.kb != 16 && a.nko) s += (size_t)a.G * W * 4u;
  if (a.vb != 16 && a.nvo) s += (size_t)a.G * W * 4u;
  return s + (size_t)a.C * 8u;
}

/* Value ranges go to shared memory too when they fit. */
static size_t quant_smem_v(kvs_cu_args *a)
{
  size_t base = quant_smem(*a), v = (size_t)a->G * (a->C / a->vg) * 8u;
  a->vsh = a->vb != 16 && base + v <= KVS_CU_MAX_SMEM;
  return a->vsh ? base + v : base;
}

/* Shapes the fast kernel takes (16-byte alignment is checked per job). */
static bool fast_ok(const kvs_cu_args &a)
{
  return a.C % 256u == 0 && a.C <= 256u * KVS_FQ_NJ && a.vg % 8u == 0 && 256u % a.vg == 0 &&
         (a.kcodes & 15u) == 0 && (a.kscale & 15u) == 0 && (a.kmin & 15u) == 0 &&
         (a.vcodes & 15u) == 0 && (size_t)a.G * a.C * 2u <= 160u * 1024u;
}

static size_t fast_smem(const kvs_cu_args &a, bool out)
{
  size_t s = (size_t)a.G * a.C * 2u;
  /* the unused [G][32] words: see kvs_fquant_kernel */
  if (out) s += (size_t)a.G * 32u * 4u + (KVS_CU_THREADS / 32) * sizeof(fq_warp);
  return s;
}

typedef void (*fq_kern_t)(kvs_cu_args, const kvs__cuda_qjob *, int *, kvs_feed_arg);

template <bool BF, int NJT> static fq_kern_t fq_pick_n(bool out, bool feed)
{
  if (feed) return out ? nullptr : kvs_fquant_feed_kernel<BF, false, NJT>;
  return out ? kvs_fquant_kernel<BF, true, NJT> : kvs_fquant_kernel<BF, false, NJT>;
}

static fq_kern_t fq_pick(bool bf, bool big, bool out, bool feed = false)
{
  if (big) return bf ? fq_pick_n<true, KVS_FQ_NJ>(out, feed) : fq_pick_n<false, KVS_FQ_NJ>(out, feed);
  return bf ? fq_pick_n<true, 0>(out, feed) : fq_pick_n<false, 0>(out, feed);
}

/* The fast kernel reads once: K goes to shared memory with cp.async and
 * V rows into registers, one load per element, and everything (the NaN /
 * Inf check and the exact outlier pick included) works from that copy.
 * quant_general reads its input several times (ranges, outliers, codes),
 * so it is not eligible; the fast kernel falls back to it for misaligned
 * jobs, which the caller rules out. */
#ifndef KVS_QUANT_EMU
extern "C" int kvs__cuda_quant_reads_once(const kvs__qparams *p)
{
  kvs__qlayout l;
  kvs_cu_args a;
  if (!p || kvs__qparams_check(p)) return 0;
  kvs__qlayout_of(p, &l);
  return fill_args(p, &l, &a) == 0 && fast_ok(a) && fast_smem(a, (a.kb != 16 && a.nko) || (a.vb != 16 && a.nvo)) <= KVS_CU_MAX_SMEM;
}

/* The signal slots (kvs__cuda_wait); without them (no mapped memory)
 * every wait is a finish. */
static void sigs_init(kvs__cuda_ctx *c)
{
  kvs__cuda_sigs *g = (kvs__cuda_sigs *)calloc(1, sizeof *g);
  if (!g) return;
  const size_t hb = KVS__CUDA_SIGNALS * sizeof(kvs__cuda_signal);
  if (cudaHostAlloc((void **)&g->host, hb, cudaHostAllocMapped) != cudaSuccess) g->host = NULL;
  else if (cudaHostGetDevicePointer((void **)&g->dev, g->host, 0) != cudaSuccess) g->dev = NULL;
  if (g->dev && cudaMalloc((void **)&g->ctr, KVS__CUDA_SIGNALS * sizeof(uint32_t)) != cudaSuccess) g->ctr = NULL;
  if (g->ctr && cudaMemset(g->ctr, 0, KVS__CUDA_SIGNALS * sizeof(uint32_t)) != cudaSuccess) {
    cudaFree(g->ctr);
    g->ctr = NULL;
  }
  if (!g->ctr) {
    cudaGetLastError();
    if (g->host) cudaFreeHost(g->host);
    free(g);
    return;
  }
  memset(g->host, 0, hb);
  g->next = 1; /* 0: a slot never written */
  g->all = 1;
  c->sig = g;
}

static void sigs_close(kvs__cuda_ctx *c)
{
  kvs__cuda_sigs *g = c->sig;
  c->sig = NULL;
  if (!g) return;
  cudaFree(g->ctr);
  cudaFreeHost(g->host);
  free(g);
}

/* The next launch's signal, or none (then the next wait is a finish). */
static kvs_done_arg sig_take(kvs__cuda_ctx *c)
{
  kvs__cuda_sigs *g = c->sig;
  if (!g || g->off || g->n == KVS__CUDA_SIGNALS) {
    if (g) g->all = 0;
    return kvs_done_arg{};
  }
  const uint32_t i = g->n++;
  return kvs_done_arg{g->ctr + i, g->dev + i, g->next++};
}

/* A launch without a signal (a feed) or whose slot will never be
 * written (it failed): the next wait is a finish. */
static void sig_none(kvs__cuda_ctx *c)
{
  if (c->sig) c->sig->all = 0;
}

static void sig_reset(kvs__cuda_ctx *c)
{
  if (!c->sig) return;
  c->sig->n = 0;
  c->sig->all = 1;
}

extern "C" int kvs__cuda_ctx_init(kvs__cuda_ctx *c)
{
  c->stream = NULL;
  c->d_status = NULL;
  c->h_status = NULL;
  c->sig = NULL;
  if (cudaMalloc((void **)&c->d_status, sizeof(int)) != cudaSuccess) {
    cudaGetLastError();
    return -ENOMEM;
  }
  if (cudaMemset(c->d_status, 0, sizeof(int)) != cudaSuccess) {
    cudaFree(c->d_status);
    c->d_status = NULL;
    return -EIO;
  }
  /* the feed's mirror word (generation 0 = never launched), then its
   * two counters (kvs_feed_arg) */
  c->d_feed = NULL;
  c->feed_gen = 0;
  if (cudaMalloc(&c->d_feed, 2 * sizeof(unsigned long long)) != cudaSuccess ||
      cudaMemset(c->d_feed, 0, 2 * sizeof(unsigned long long)) != cudaSuccess) {
    cudaGetLastError();
    if (c->d_feed) cudaFree(c->d_feed);
    cudaFree(c->d_status);
    c->d_feed = NULL;
    c->d_status = NULL;
    return -ENOMEM;
  }
  /* page-locked: the status read is a DMA, not a copy through a bounce
   * buffer (optional: without it kvs__cuda_finish reads into the stack) */
  if (cudaHostAlloc((void **)&c->h_status, sizeof(int), cudaHostAllocDefault) != cudaSuccess) {
    cudaGetLastError();
    c->h_status = NULL;
  }
  sigs_init(c);
  return 0;
}

extern "C" void kvs__cuda_ctx_close(kvs__cuda_ctx *c)
{
  sigs_close(c);
  if (c->d_status) cudaFree(c->d_status);
  if (c->h_status) cudaFreeHost(c->h_status);
  if (c->d_feed) cudaFree(c->d_feed);
  c->d_status = NULL;
  c->h_status = NULL;
  c->d_feed = NULL;
}

extern "C" int kvs__cuda_finish(kvs__cuda_ctx *c)
{
  int st = 0, *hs = c->h_status ? c->h_status : &st;
  sig_reset(c); /* everything before it is done when it returns */
  cudaStream_t s = (cudaStream_t)c->stream;
  if (cudaMemcpyAsync(hs, c->d_status, sizeof st, cudaMemcpyDeviceToHost, s) != cudaSuccess ||
      cudaStreamSynchronize(s) != cudaSuccess) {
    cudaGetLastError();
    return -EIO;
  }
  st = *hs;
  if (st && cudaMemsetAsync(c->d_status, 0, sizeof(int), s) != cudaSuccess) return -EIO;
  return st;
}

static uint64_t mono_ns(void)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

extern "C" int kvs__cuda_wait(kvs__cuda_ctx *c)
{
  kvs__cuda_sigs *g = c->sig;
  if (!g || !g->all || !g->n) return kvs__cuda_finish(c);
  /* slot i carries seq first + i; the seq is written after the status */
  const unsigned long long first = g->next - g->n;
  uint64_t t0 = 0;
  int st = 0;
  for (uint32_t i = 0, spins = 0; i < g->n;) {
    const volatile kvs__cuda_signal *w = &g->host[i];
    if (w->seq == first + i) {
      __atomic_thread_fence(__ATOMIC_ACQUIRE);
      const int s = w->status;
      if (s < st) st = s;
      i++;
      continue;
    }
    if ((++spins & 1023u) == 0) {
      /* a kernel that faulted never signals: after a while the ordinary
       * synchronize (which reports the fault) */
      const uint64_t t = mono_ns();
      if (!t0) t0 = t;
      else if (t - t0 > KVS__CUDA_SIGNAL_SPIN_NS) return kvs__cuda_finish(c);
    }
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
  sig_reset(c);
  /* as kvs__cuda_finish: the status word back to 0 behind the launches */
  if (st && cudaMemsetAsync(c->d_status, 0, sizeof(int), (cudaStream_t)c->stream) != cudaSuccess) return -EIO;
  return st;
}

extern "C" int kvs__cuda_sync(kvs__cuda_ctx *c)
{
  if (cudaStreamSynchronize((cudaStream_t)c->stream) != cudaSuccess) {
    cudaGetLastError();
    return -EIO;
  }
  return 0;
}

/* The launch attributes a quantize kernel needs, set once per kernel and
 * device (each cudaFuncSetAttribute is a driver call, and a bulk put
 * launches up to four times): largest carveout (fast kernels), dynamic
 * shared memory up to smem. Entries are never removed; past the table's
 * size the calls are simply made every time. */
static int quant_attrs(const void *kern, bool carve, size_t smem, int *resident = nullptr)
{
  struct ent { const void *k; int dev; bool carve; size_t smem; int resident; };
  static ent tab[64];
  static unsigned n;
  static std::mutex mu;
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) { cudaGetLastError(); return -EIO; }
  std::lock_guard<std::mutex> g(mu);
  ent *e = nullptr;
  for (unsigned i = 0; i < n && !e; i++)
    if (tab[i].k == kern && tab[i].dev == dev) e = &tab[i];
  if (e && (e->carve || !carve) && e->smem >= smem && (!resident || e->resident)) {
    if (resident) *resident = e->resident;
    return 0;
  }
  if (carve && cudaFuncSetAttribute(kern, cudaFuncAttributePreferredSharedMemoryCarveout,
                                    (int)cudaSharedmemCarveoutMaxShared) != cudaSuccess) {
    cudaGetLastError();
    return -EIO;
  }
  if (smem > 48u * 1024u &&
      cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem) != cudaSuccess) {
    cudaGetLastError();
    return -EIO;
  }
  /* blocks of this kernel the whole GPU holds at once (a feed's grid) */
  int per_sm = 0, sms = 0;
  if (resident &&
      (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kern, KVS_CU_THREADS, smem) != cudaSuccess ||
       cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)) {
    cudaGetLastError();
    return -EIO;
  }
  if (resident) *resident = per_sm * sms;
  if (!e && n < sizeof tab / sizeof tab[0]) e = &tab[n++], *e = ent{kern, dev, false, 0, 0};
  if (e) {
    e->carve = e->carve || carve;
    if (smem > e->smem) e->smem = smem, e->resident = 0;
    if (resident && smem == e->smem) e->resident = *resident;
  }
  return 0;
}

static bool copy16_on(void)
{
  static int on = -1;
  if (on < 0) {
    const char *e = getenv("KVSINK_COPY16");
    on = !(e && !strcmp(e, "0"));
  }
  return on;
}

extern "C" int kvs__cuda_quantize_async(kvs__cuda_ctx *c, const kvs__qparams *p,
                                        const kvs__qlayout *l, const kvs__cuda_qjob *d_jobs,
                                        uint32_t n)
{
  kvs_cu_args a;
  int rc = fill_args(p, l, &a);
  if (rc) return rc;
  if (n == 0) return 0;
  size_t smem = quant_smem_v(&a);
  if (smem > KVS_CU_MAX_SMEM) return -EINVAL;
  fq_kern_t kern = kvs_quant_kernel;
  const bool fast = fast_ok(a);
  if (fast) {
    const bool bf = a.dtype == KVS_DTYPE_BF16;
    const bool out = (a.kb != 16 && a.nko) || (a.vb != 16 && a.nvo);
    size_t fs = fast_smem(a, out);
    const bool big = KVS_FQ_NJT && a.C == 256u * KVS_FQ_NJ;
    kern = fq_pick(bf, big, out);
    if (fs > smem) smem = fs;
  }
  /* 16/16 bits: the copy, P CUDA blocks a job, no shared memory
   * (KVSINK_COPY16=0: the quantize kernel, for A/B runs) */
  uint32_t grid = n;
  if (cp16_ok(a) && copy16_on()) {
    kern = kvs_copy16_kernel;
    grid = n * cp16_parts(a);
    smem = 0;
  } else if (quant_attrs((const void *)kern, fast, smem)) {
    /* fast kernels: the largest shared-memory carveout (3 blocks of ~64-73 KB) */
    return -EIO;
  }
  kvs_feed_arg f{};
  f.done = sig_take(c);
  kern<<<grid, KVS_CU_THREADS, smem, (cudaStream_t)c->stream>>>(a, d_jobs, c->d_status, f);
  if (cudaGetLastError() != cudaSuccess) {
    sig_none(c);
    return -EIO;
  }
  return 0;
}

extern "C" int kvs__cuda_quantize_feed(kvs__cuda_ctx *c, const kvs__qparams *p, const kvs__qlayout *l,
                                       const void *d_jobs, const kvs__cuda_feed *d_feed,
                                       uint32_t max_jobs)
{
  kvs_cu_args a;
  int rc = fill_args(p, l, &a);
  if (rc) return rc;
  if (!fast_ok(a)) return -EOPNOTSUPP;
  if (max_jobs == 0 || max_jobs > KVS__CUDA_FEED_COUNT) return -EINVAL;
  /* not with outliers: in a loop that path spills ~850 bytes a thread
   * (against 70 in one job per block); those puts launch per chunk */
  const bool out = (a.kb != 16 && a.nko) || (a.vb != 16 && a.nvo);
  if (out) return -EOPNOTSUPP;
  size_t smem = quant_smem_v(&a), fs = fast_smem(a, out);
  if (fs > smem) smem = fs;
  if (smem > KVS_CU_MAX_SMEM) return -EINVAL;
  fq_kern_t kern = fq_pick(a.dtype == KVS_DTYPE_BF16, KVS_FQ_NJT && a.C == 256u * KVS_FQ_NJ, out, true);
  int resident = 0;
  if (quant_attrs((const void *)kern, true, smem, &resident)) return -EIO;
  /* no more blocks than the GPU holds at once (one not yet resident
   * would wait for blocks that wait for the host); block 0 watches */
  if (resident < 2) return -EOPNOTSUPP;
  const uint32_t grid = (uint32_t)resident - 1u < max_jobs ? (uint32_t)resident : max_jobs + 1u;
  if (++c->feed_gen == 0) c->feed_gen = 1; /* 0: the mirror's first contents */
  kvs_feed_arg f = {&d_feed->word, (unsigned long long *)c->d_feed,
                    (uint32_t *)((unsigned long long *)c->d_feed + 1), c->feed_gen, {}};
  sig_none(c); /* a feed sends no signal: the next wait is a finish */
  kern<<<grid, KVS_CU_THREADS, smem, (cudaStream_t)c->stream>>>(a, (const kvs__cuda_qjob *)d_jobs,
                                                                 c->d_status, f);
  if (cudaGetLastError() != cudaSuccess) return -EIO;
  return 0;
}

extern "C" int kvs__cuda_quantize(kvs__cuda_ctx *c, const kvs__qparams *p, const kvs__qlayout *l,
                                  const kvs__cuda_qjob *d_jobs, uint32_t n)
{
  int rc = kvs__cuda_quantize_async(c, p, l, d_jobs, n);
  if (rc) return rc;
  return kvs__cuda_finish(c);
}

extern "C" int kvs__cuda_dequantize_async(kvs__cuda_ctx *c, const kvs__qparams *p,
                                          const kvs__qlayout *l, const kvs__cuda_dqjob *d_jobs,
                                          uint32_t n)
{
  kvs_cu_args a;
  int rc = fill_args(p, l, &a);
  if (rc) return rc;
  if (n == 0) return 0;
  kvs_dequant_kernel<<<n, KVS_CU_THREADS, 0, (cudaStream_t)c->stream>>>(a, d_jobs, sig_take(c));
  if (cudaGetLastError() != cudaSuccess) {
    sig_none(c);
    return -EIO;
  }
  return 0;
}

extern "C" int kvs__cuda_dequantize(kvs__cuda_ctx *c, const kvs__qparams *p,
                                    const kvs__qlayout *l, const kvs__cuda_dqjob *d_jobs,
                                    uint32_t n)
{
  int rc = kvs__cuda_dequantize_async(c, p, l, d_jobs, n);
  if (rc) return rc;
  return kvs__cuda_finish(c);
}
#endif /* KVS_QUANT_EMU */
