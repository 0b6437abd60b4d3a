/* CUDA quantize / dequantize of kvs blocks: the same bytes as the C
 * reference (kernels/quant.c, format in kernels/quant.h). One CUDA block
 * per quantized block; many blocks per launch through a job array.
 *
 * Float steps use the explicit _rn intrinsics so nvcc cannot contract
 * them into FMAs: the reference evaluates each step in fp32 separately. */
#include <cerrno>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "kernels/cuda.h"

#define KVS_CU_THREADS 256
#define KVS_CU_MAX_SMEM (200u * 1024u)

struct kvs_cu_args {
  uint32_t G, C, vg, kb, vb, nko, nvo, dtype, vsh;
  size_t kscale, kmin, kcodes, vscale, vmin, vcodes, kout, vout, total, kstride, vstride;
};

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

static __global__ void __launch_bounds__(KVS_CU_THREADS, 4)
kvs_quant_kernel(kvs_cu_args a, const kvs__cuda_qjob *jobs, int *st)
{
  extern __shared__ uint32_t sm[];
  const kvs__cuda_qjob J = jobs[blockIdx.x];
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
 * power-of-two widths, C and vg multiples of 8 and an aligned output. The
 * 8 codes sit in one aligned 16, 32, 64 or 128-bit piece of the row. */
static __device__ __forceinline__ void dq_octets(const kvs_cu_args &a, const uint8_t *blk,
                                                 const kvs__cuda_dqjob &J, uint64_t mask,
                                                 int isv, uint16_t *out)
{
  const uint32_t C = a.C, b = isv ? a.vb : a.kb, oct = C / 8u;
  const size_t n8 = (size_t)(J.r1 - J.r0) * oct;
  const uint8_t *codes = blk + (isv ? a.vcodes : a.kcodes);
  const size_t stride = isv ? a.vstride : a.kstride;
  const uint16_t *sc = (const uint16_t *)(blk + (isv ? a.vscale : a.kscale));
  const uint16_t *mn = (const uint16_t *)(blk + (isv ? a.vmin : a.kmin));
  const uint32_t ng = C / a.vg;
  for (size_t i = threadIdx.x; i < n8; i += blockDim.x) {
    uint32_t r = J.r0 + (uint32_t)(i / oct), c = (uint32_t)(i % oct) * 8u;
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
        else bits = *(const uint16_t *)(row + c / 4u);
        const uint32_t m = (1u << b) - 1u;
        if (isv) {
          uint32_t gi = r * ng + c / a.vg;
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
  }
}

static __global__ void __launch_bounds__(KVS_CU_THREADS)
kvs_dequant_kernel(kvs_cu_args a, const kvs__cuda_dqjob *jobs)
{
  const kvs__cuda_dqjob J = jobs[blockIdx.x];
  const uint8_t *blk = (const uint8_t *)J.block;
  const uint64_t mask = ((const kvs__qhdr *)blk)->sink_mask;
  const uint32_t C = a.C, tid = threadIdx.x, nt = blockDim.x;
  const size_t n = (size_t)(J.r1 - J.r0) * C;
  for (int side = 0; side < 2; side++) {
    uint16_t *out = side ? J.v_out : J.k_out;
    const uint32_t b = side ? a.vb : a.kb;
    if (((uintptr_t)out & 15u) == 0 && C % 8u == 0 && (b & (b - 1u)) == 0 &&
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

extern "C" int kvs__cuda_ctx_init(kvs__cuda_ctx *c)
{
  c->stream = NULL;
  c->d_status = NULL;
  if (cudaMalloc((void **)&c->d_status, sizeof(int)) != cudaSuccess) {
    cudaGetLastError();
    return -ENOMEM;
  }
  if (cudaMemset(c->d_status, 0, sizeof(int)) != cudaSuccess) {
    cudaFree(c->d_status);
    c->d_status = NULL;
    return -EIO;
  }
  return 0;
}

extern "C" void kvs__cuda_ctx_close(kvs__cuda_ctx *c)
{
  if (c->d_status) cudaFree(c->d_status);
  c->d_status = NULL;
}

extern "C" int kvs__cuda_finish(kvs__cuda_ctx *c)
{
  int st = 0;
  cudaStream_t s = (cudaStream_t)c->stream;
  if (cudaMemcpyAsync(&st, c->d_status, sizeof st, cudaMemcpyDeviceToHost, s) != cudaSuccess ||
      cudaStreamSynchronize(s) != cudaSuccess) {
    cudaGetLastError();
    return -EIO;
  }
  if (st && cudaMemsetAsync(c->d_status, 0, sizeof(int), s) != cudaSuccess) return -EIO;
  return st;
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
  if (smem > 48u * 1024u &&
      cudaFuncSetAttribute(kvs_quant_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           (int)smem) != cudaSuccess) {
    cudaGetLastError();
    return -EIO;
  }
  kvs_quant_kernel<<<n, KVS_CU_THREADS, smem, (cudaStream_t)c->stream>>>(a, d_jobs, c->d_status);
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
  kvs_dequant_kernel<<<n, KVS_CU_THREADS, 0, (cudaStream_t)c->stream>>>(a, d_jobs);
  if (cudaGetLastError() != cudaSuccess) return -EIO;
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
