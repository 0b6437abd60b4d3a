/* SPDX-License-Identifier: MIT */
/* The kernels of kernels/attn.cu and their argument and split planning,
 * without the launchers, kept apart so that tests/kernels/attn_emu.cpp can
 * run the very same code on the CPU (a thread per CUDA thread) where no
 * GPU is present. The design is described at the top of attn.cu. */
#ifndef KVS_KERNELS_ATTN_DEV_CUH
#define KVS_KERNELS_ATTN_DEV_CUH

#include <cerrno>
#include <cmath>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/cuda.h"

#define AT_NT 128   /* threads per CUDA block */
#define AT_TPS 16   /* consecutive tokens per thread slice */
#ifndef AT_PB
#define AT_PB 8     /* tokens whose loads are issued together */
#endif
#ifndef AT_MINB
#define AT_MINB 4   /* CUDA blocks per SM the registers must allow (g <= 4): 4 (128
                     * registers) keeps the g = 4 kernel free of spills on sm_90; 5 spills */
#endif

struct at_args {
  uint32_t G, C, D, vg, kb, vb, nko, nvo, dt, nq, span, splits;
  uint32_t no, ns, ct, rs;  /* octets per head, slices, tokens per chunk, red row stride */
  size_t kscale, kmin, kcodes, vscale, vmin, vcodes, kout, vout, kstride, vstride;
  float qscale;
};

/* A CUDA block's share of split-K: tokens [t0, t1) of sequence si, and
 * the index of its first head's partial in the workspace (head h: + h *
 * splits). False when the share is empty, its partials then marked empty
 * (max -inf, sum 0) so the combine skips them; a sequence longer than the
 * plan covers sets -EINVAL. Both kernels start this way. */
static __device__ __forceinline__ bool at_share(const at_args &a, const kvs__attn_seq &S, uint32_t split, uint32_t j,
                                                uint32_t si, uint32_t tid, uint32_t gq, uint32_t &t0, uint32_t &t1,
                                                size_t &part, float *ws_ml, int *st)
{
  const uint32_t T = S.n_blocks * a.G + S.n_res;
  t0 = split * a.span;
  t1 = min(T, t0 + a.span);
  part = ((size_t)si * a.nq + (size_t)j * gq) * a.splits + split;
  if (split == 0 && tid == 0 && T > a.span * a.splits) atomicMin(st, -EINVAL);
  if (t0 < t1) return true;
  if (tid < gq) { ws_ml[2 * (part + tid * a.splits)] = -INFINITY; ws_ml[2 * (part + tid * a.splits) + 1] = 0.f; }
  return false;
}

static __device__ __forceinline__ float h2f(uint16_t h, uint32_t dt)
{
  if (dt == 2) return __bfloat162float(__ushort_as_bfloat16(h));
  return __half2float(__ushort_as_half(h));
}
static __device__ __forceinline__ float f16f(uint16_t h) { return __half2float(__ushort_as_half(h)); }
/* code -> float: the low mantissa bits of 2^23 */
static __device__ __forceinline__ float cf(uint32_t c) { return __uint_as_float(0x4b000000u | c) - 8388608.f; }

/* The packed bits of the octet at channel c0 (a multiple of 8) of a row,
 * for widths up to 4: one 16- or 32-bit load (3 bits: a second word only
 * where the octet crosses one), so a slice's loads can all be in flight
 * before any is used. */
template <int B>
static __device__ __forceinline__ uint32_t obits(const uint8_t *row, uint32_t c0)
{
  if (B == 2) return *(const uint16_t *)(row + c0 / 4u);
  if (B == 4) return *(const uint32_t *)(row + c0 / 2u);
  const uint32_t bit = 3u * c0, sh = bit & 31u;
  const uint32_t *w = (const uint32_t *)row + (bit >> 5);
  uint32_t x = w[0] >> sh;
  if (sh > 8u) x |= w[1] << (32u - sh);
  return x;
}
template <int B>
static __device__ __forceinline__ void unpack(uint32_t x, float f[8])
{
#pragma unroll
  for (int e = 0; e < 8; e++) f[e] = cf((x >> (B * e)) & ((1u << B) - 1u));
}

/* The fast paths' unpacking (B = 2 or 4): the octet's codes as
 * 1 + code / 2^B, two per half2 (low: code e, high: code e + 4), each
 * pair moved to the top of the mantissa of 1.0 by one shift and one
 * masked OR, then widened; where the codes meet their scales the 2^B and
 * the 1 are folded in (kscales1, v_phase). Two integer operations per
 * pair instead of two per code plus a subtraction, and no cancellation
 * worse than the codes' own range (the 1 is at most 2^B - 1 codes' worth). */
template <int B> struct at_pack1 { static constexpr bool ok = B == 2 || B == 4; };
template <int B>
static __device__ __forceinline__ void unpack1(uint32_t x, float f[8])
{
  if (B == 2) x = (x & 0xffu) | ((x & 0xff00u) << 8); /* codes 0-3: bits 0-7, 4-7: bits 16-23 */
  constexpr int top = 10 - B; /* the code's lowest bit in a half's mantissa */
  constexpr uint32_t m = ((1u << B) - 1u) << top, mask = m | (m << 16);
#pragma unroll
  for (int e = 0; e < 4; e++) {
    const int sh = top - B * e;
    uint32_t y = sh >= 0 ? x << sh : x >> -sh;
    y = (y & mask) | 0x3c003c00u;
    const float2 v = __half22float2(*reinterpret_cast<const __half2 *>(&y));
    f[e] = v.x;
    f[e + 4] = v.y;
  }
}

/* The 8 codes of the octet at channel c0 of a row, as floats. B = 16
 * gives the raw words converted by the dtype. */
template <int B>
static __device__ __forceinline__ void octet(const uint8_t *row, uint32_t c0, uint32_t dt, float f[8])
{
  if (B <= 4) {
    unpack<B <= 4 ? B : 4>(obits<B <= 4 ? B : 4>(row, c0), f);
  } else if (B == 8) {
    uint2 x = *(const uint2 *)(row + c0);
#pragma unroll
    for (int e = 0; e < 4; e++) {
      f[e] = cf((x.x >> (8 * e)) & 255u);
      f[4 + e] = cf((x.y >> (8 * e)) & 255u);
    }
  } else {
    uint4 x = *(const uint4 *)(row + 2u * c0);
    const uint16_t *h = (const uint16_t *)&x;
#pragma unroll
    for (int e = 0; e < 8; e++) f[e] = h2f(h[e], dt);
  }
}

/* Code i of a row for any width (outlier corrections only). */
static __device__ __forceinline__ uint32_t code_at(const uint8_t *row, uint32_t i, uint32_t b)
{
  const uint32_t bit = i * b, sh = bit & 31u;
  const uint32_t *w = (const uint32_t *)row + (bit >> 5);
  uint64_t x = w[0];
  if (sh + b > 32u) x |= (uint64_t)w[1] << 32;
  return (uint32_t)(x >> sh) & ((1u << b) - 1u);
}

/* Where token t of a sequence lies: a block row (blk, r) or a raw row. */
struct at_tok {
  const uint8_t *data;     /* block, NULL for the residual */
  const uint16_t *raw;     /* sink or residual row (K side), else NULL */
  uint32_t r;
};

struct at_cur {            /* the block a thread last looked at */
  uint32_t b;
  kvs__attn_block v;
};

static __device__ __forceinline__ at_tok locate(const at_args &a, const kvs__attn_seq &S, at_cur &cur, uint32_t t)
{
  at_tok k;
  const uint32_t nbt = S.n_blocks * a.G;
  if (t >= nbt) {
    k.data = NULL;
    k.raw = S.res_k + (size_t)(t - nbt) * a.C;
    k.r = 0;
    return k;
  }
  const uint32_t b = t / a.G;
  k.r = t - b * a.G;
  if (b != cur.b) { cur.b = b; cur.v = S.blocks[b]; }
  k.data = (const uint8_t *)cur.v.data;
  k.raw = ((cur.v.sink_mask >> k.r) & 1u) ? cur.v.rows[__popcll(cur.v.sink_mask & ((1ull << k.r) - 1ull))] : NULL;
  return k;
}

/* Per-channel key products of this thread's octet for one block:
 * w[h][e] = q[h][c] scale[c], qm[h] = sum_e q[h][c] min[c]. */
template <int GQ>
static __device__ __forceinline__ void kscales(const at_args &a, const uint8_t *data, uint32_t c0, uint32_t lc,
                                               const float *qs, float (&w)[GQ][8], float (&qm)[GQ])
{
  uint4 su = *(const uint4 *)(data + a.kscale + 2u * c0), mu = *(const uint4 *)(data + a.kmin + 2u * c0);
  const uint16_t *sc = (const uint16_t *)&su, *mn = (const uint16_t *)&mu;
#pragma unroll
  for (int h = 0; h < GQ; h++) {
    float m = 0.f;
#pragma unroll
    for (int e = 0; e < 8; e++) {
      float qv = qs[h * a.D + lc + e];
      w[h][e] = qv * f16f(sc[e]);
      m = fmaf(qv, f16f(mn[e]), m);
    }
    qm[h] = m;
  }
}

/* kscales for codes unpacked as 1 + code / 2^B: w' = 2^B w and
 * qm' = qm - sum w', so that qm' + w' . (1 + code / 2^B) = qm + w . code. */
template <int GQ, int B>
static __device__ __forceinline__ void kscales1(const at_args &a, const uint8_t *data, uint32_t c0, uint32_t lc,
                                                const float *qs, float (&w)[GQ][8], float (&qm)[GQ])
{
  kscales<GQ>(a, data, c0, lc, qs, w, qm);
#pragma unroll
  for (int h = 0; h < GQ; h++) {
    float sum = 0.f;
#pragma unroll
    for (int e = 0; e < 8; e++) {
      w[h][e] *= (float)(1u << B);
      sum += w[h][e];
    }
    qm[h] -= sum;
  }
}

/* The common case of a slice: TPS tokens, all quantized rows of one block
 * (no sink among them), width up to 4. Returns the block's view there. */
template <int B>
static __device__ __forceinline__ bool slice_fast(const at_args &a, const kvs__attn_seq &S, uint32_t tb,
                                                  uint32_t t1, at_cur &cur)
{
  if (B > 4 || tb + AT_TPS > t1 || tb + AT_TPS > S.n_blocks * a.G) return false;
  const uint32_t b = tb / a.G, r0 = tb - b * a.G;
  if (r0 + AT_TPS > a.G) return false;
  cur.b = b;
  cur.v = S.blocks[b];
  return ((cur.v.sink_mask >> r0) & ((1ull << AT_TPS) - 1ull)) == 0;
}

/* Keys of this thread's slice in the chunk: partial scores of its octet
 * into red[token][octet][h]. */
template <int GQ, int KB>
static __device__ __forceinline__ void k_phase(const at_args &a, const kvs__attn_seq &S, uint32_t j, uint32_t ct0,
                                               uint32_t t1, const float *qs, float *red, int *st)
{
  constexpr int KB4 = KB <= 4 ? KB : 4;
  constexpr int PB = KB == 2 ? AT_TPS : AT_PB; /* 2-bit loads are small: more in flight */
  const uint32_t tid = threadIdx.x, o = tid % a.no, s = tid / a.no, lc = 8u * o, c0 = j * a.D + lc;
  const uint32_t tb = ct0 + s * AT_TPS, nbt = S.n_blocks * a.G;
  if (tb >= t1) return;
  const uint32_t n = min((uint32_t)AT_TPS, t1 - tb);
  /* red [token][h][octet]: a warp's 16 octets write 16 consecutive words
   * (no bank conflicts); token i, head h: rd[i * rs + h * no] */
  float *rd = red + (size_t)(s * AT_TPS) * a.rs + o;
  at_cur cur = {0xffffffffu, {nullptr, nullptr, 0}};
  float w[GQ][8], qm[GQ];
  if (slice_fast<KB>(a, S, tb, t1, cur)) {
    const uint8_t *data = (const uint8_t *)cur.v.data;
    const uint8_t *row = data + a.kcodes + (size_t)(tb - cur.b * a.G) * a.kstride;
    if constexpr (at_pack1<KB>::ok) kscales1<GQ, KB>(a, data, c0, lc, qs, w, qm);
    else kscales<GQ>(a, data, c0, lc, qs, w, qm);
    /* loads of a batch all in flight before the first is used */
#pragma unroll
    for (int i0 = 0; i0 < AT_TPS; i0 += PB) {
      uint32_t bits[PB];
#pragma unroll
      for (int i = 0; i < PB; i++) bits[i] = obits<KB4>(row + (i0 + i) * a.kstride, c0);
#pragma unroll
      for (int i = 0; i < PB; i++) {
        float x[8];
        if constexpr (at_pack1<KB>::ok) unpack1<KB4>(bits[i], x);
        else unpack<KB4>(bits[i], x);
#pragma unroll
        for (int h = 0; h < GQ; h++) {
          float acc = qm[h];
#pragma unroll
          for (int e = 0; e < 8; e++) acc = fmaf(w[h][e], x[e], acc);
          rd[(i0 + i) * a.rs + h * a.no] = acc;
        }
      }
    }
  } else {
    uint32_t wb = 0xffffffffu; /* block whose products w, qm hold */
    for (uint32_t i = 0; i < n; i++) {
      at_tok k = locate(a, S, cur, tb + i);
      float x[8], part[GQ];
      if (k.raw || KB == 16) {
        if (k.raw) {
          uint4 u = *(const uint4 *)(k.raw + c0);
          const uint16_t *h = (const uint16_t *)&u;
#pragma unroll
          for (int e = 0; e < 8; e++) x[e] = h2f(h[e], a.dt);
        } else {
          octet<16>(k.data + a.kcodes + k.r * a.kstride, c0, a.dt, x);
        }
#pragma unroll
        for (int h = 0; h < GQ; h++) {
          float acc = 0.f;
#pragma unroll
          for (int e = 0; e < 8; e++) acc = fmaf(qs[h * a.D + lc + e], x[e], acc);
          part[h] = acc;
        }
      } else {
        if (cur.b != wb) { wb = cur.b; kscales<GQ>(a, k.data, c0, lc, qs, w, qm); }
        octet<KB>(k.data + a.kcodes + k.r * a.kstride, c0, a.dt, x);
#pragma unroll
        for (int h = 0; h < GQ; h++) {
          float acc = qm[h];
#pragma unroll
          for (int e = 0; e < 8; e++) acc = fmaf(w[h][e], x[e], acc);
          part[h] = acc;
        }
      }
#pragma unroll
      for (int h = 0; h < GQ; h++) rd[i * a.rs + h * a.no] = part[h];
    }
  }
  if constexpr (KB != 16) {
    if (!a.nko) return;
    /* outliers: the octets of a token share its list; each corrects its own
     * slot with q . (raw - dequantized) */
    for (uint32_t i = 0; i < n && tb + i < nbt; i++) {
      at_tok k = locate(a, S, cur, tb + i);
      if (k.raw) continue;
      const uint32_t *ent = (const uint32_t *)(k.data + a.kout) + (size_t)k.r * a.nko;
      for (uint32_t m = o; m < a.nko; m += a.no) {
        uint32_t en = ent[m], c = en & 0xffffu;
        if (c >= a.C) { atomicMin(st, -EINVAL); continue; }
        if (c < j * a.D || c >= j * a.D + a.D) continue;
        uint32_t code = code_at(k.data + a.kcodes + k.r * a.kstride, c, KB);
        float dq = f16f(((const uint16_t *)(k.data + a.kmin))[c]) +
                   (float)code * f16f(((const uint16_t *)(k.data + a.kscale))[c]);
        float dx = h2f((uint16_t)(en >> 16), a.dt) - dq;
#pragma unroll
        for (int h = 0; h < GQ; h++) rd[i * a.rs + h * a.no] += qs[h * a.D + (c - j * a.D)] * dx;
      }
    }
  }
}

/* Values of this thread's slice: acc[h][e] += (p scale) code and
 * bias[h] += p min; outliers into vcorr[h][c]. */
template <int GQ, int VB>
static __device__ __forceinline__ void v_phase(const at_args &a, const kvs__attn_seq &S, uint32_t j, uint32_t ct0,
                                               uint32_t t1, const float *ps, float *vcorr, float (&acc)[GQ][8],
                                               float (&bias)[GQ], int *st)
{
  constexpr int VB4 = VB <= 4 ? VB : 4;
  constexpr int PB = AT_PB; /* with acc live, 16 would spill at g = 4 */
  const uint32_t tid = threadIdx.x, o = tid % a.no, s = tid / a.no, lc = 8u * o, c0 = j * a.D + lc;
  const uint32_t tb = ct0 + s * AT_TPS, nbt = S.n_blocks * a.G, ng = a.C / a.vg, gi = c0 / a.vg;
  if (tb >= t1) return;
  const uint32_t n = min((uint32_t)AT_TPS, t1 - tb);
  const float *pp = ps + (size_t)(s * AT_TPS) * GQ; /* token i: pp + i * GQ */
  at_cur cur = {0xffffffffu, {nullptr, nullptr, 0}};
  if (slice_fast<VB>(a, S, tb, t1, cur)) {
    const uint8_t *data = (const uint8_t *)cur.v.data;
    const uint32_t r0 = tb - cur.b * a.G;
    const uint8_t *row = data + a.vcodes + (size_t)r0 * a.vstride;
    const uint16_t *vsc = (const uint16_t *)(data + a.vscale) + (size_t)r0 * ng + gi;
    const uint16_t *vmn = (const uint16_t *)(data + a.vmin) + (size_t)r0 * ng + gi;
#pragma unroll
    for (int i0 = 0; i0 < AT_TPS; i0 += PB) {
      uint32_t bits[PB];
      uint16_t sc[PB], mn[PB];
#pragma unroll
      for (int i = 0; i < PB; i++) {
        bits[i] = obits<VB4>(row + (i0 + i) * a.vstride, c0);
        sc[i] = vsc[(i0 + i) * ng];
        mn[i] = vmn[(i0 + i) * ng];
      }
#pragma unroll
      for (int i = 0; i < PB; i++) {
        float x[8];
        const float mnf = f16f(mn[i]);
        if constexpr (at_pack1<VB>::ok) {
          /* x = 1 + code / 2^B: q = 2^B p scale, and the 1's share off the bias */
          unpack1<VB4>(bits[i], x);
          const float scf = f16f(sc[i]) * (float)(1u << VB);
#pragma unroll
          for (int h = 0; h < GQ; h++) {
            const float p = pp[(i0 + i) * GQ + h], q = p * scf;
            bias[h] = fmaf(p, mnf, bias[h]) - q;
#pragma unroll
            for (int e = 0; e < 8; e++) acc[h][e] = fmaf(q, x[e], acc[h][e]);
          }
        } else {
          unpack<VB4>(bits[i], x);
          const float scf = f16f(sc[i]);
#pragma unroll
          for (int h = 0; h < GQ; h++) {
            const float p = pp[(i0 + i) * GQ + h], q = p * scf;
            bias[h] = fmaf(p, mnf, bias[h]);
#pragma unroll
            for (int e = 0; e < 8; e++) acc[h][e] = fmaf(q, x[e], acc[h][e]);
          }
        }
      }
    }
  } else {
    for (uint32_t i = 0; i < n; i++) {
      const uint32_t t = tb + i;
      at_tok k = locate(a, S, cur, t);
      float x[8];
      if (k.raw || VB == 16) {
        if (k.raw) {
          /* sink rows: V after K; the residual: its own array */
          const uint16_t *vr = k.data ? k.raw + a.C : S.res_v + (size_t)(t - nbt) * a.C;
          uint4 u = *(const uint4 *)(vr + c0);
          const uint16_t *h = (const uint16_t *)&u;
#pragma unroll
          for (int e = 0; e < 8; e++) x[e] = h2f(h[e], a.dt);
        } else {
          octet<16>(k.data + a.vcodes + k.r * a.vstride, c0, a.dt, x);
        }
#pragma unroll
        for (int h = 0; h < GQ; h++) {
          const float p = pp[i * GQ + h];
#pragma unroll
          for (int e = 0; e < 8; e++) acc[h][e] = fmaf(p, x[e], acc[h][e]);
        }
        continue;
      }
      octet<VB>(k.data + a.vcodes + k.r * a.vstride, c0, a.dt, x);
      const uint16_t *vsc = (const uint16_t *)(k.data + a.vscale) + (size_t)k.r * ng;
      const uint16_t *vmn = (const uint16_t *)(k.data + a.vmin) + (size_t)k.r * ng;
      const float scf = f16f(vsc[gi]), mnf = f16f(vmn[gi]);
#pragma unroll
      for (int h = 0; h < GQ; h++) {
        const float p = pp[i * GQ + h], q = p * scf;
        bias[h] = fmaf(p, mnf, bias[h]);
#pragma unroll
        for (int e = 0; e < 8; e++) acc[h][e] = fmaf(q, x[e], acc[h][e]);
      }
    }
  }
  if constexpr (VB != 16) {
    if (!a.nvo) return;
    for (uint32_t i = 0; i < n && tb + i < nbt; i++) {
      at_tok k = locate(a, S, cur, tb + i);
      if (k.raw) continue;
      const uint8_t *row = k.data + a.vcodes + k.r * a.vstride;
      const uint16_t *vsc = (const uint16_t *)(k.data + a.vscale) + (size_t)k.r * ng;
      const uint16_t *vmn = (const uint16_t *)(k.data + a.vmin) + (size_t)k.r * ng;
      const uint32_t *ent = (const uint32_t *)(k.data + a.vout) + (size_t)k.r * a.nvo;
      for (uint32_t m = o; m < a.nvo; m += a.no) {
        uint32_t en = ent[m], c = en & 0xffffu;
        if (c >= a.C) { atomicMin(st, -EINVAL); continue; }
        if (c < j * a.D || c >= j * a.D + a.D) continue;
        float dq = f16f(vmn[c / a.vg]) + (float)code_at(row, c, VB) * f16f(vsc[c / a.vg]);
        float dx = h2f((uint16_t)(en >> 16), a.dt) - dq;
#pragma unroll
        for (int h = 0; h < GQ; h++) atomicAdd(&vcorr[h * a.D + (c - j * a.D)], pp[i * GQ + h] * dx);
      }
    }
  }
}

template <int GQ>
static __device__ __forceinline__ void k_dispatch(const at_args &a, const kvs__attn_seq &S, uint32_t j, uint32_t ct0,
                                                  uint32_t t1, const float *qs, float *red, int *st)
{
  switch (a.kb) {
  case 2: k_phase<GQ, 2>(a, S, j, ct0, t1, qs, red, st); break;
  case 3: k_phase<GQ, 3>(a, S, j, ct0, t1, qs, red, st); break;
  case 4: k_phase<GQ, 4>(a, S, j, ct0, t1, qs, red, st); break;
  case 8: k_phase<GQ, 8>(a, S, j, ct0, t1, qs, red, st); break;
  default: k_phase<GQ, 16>(a, S, j, ct0, t1, qs, red, st); break;
  }
}

template <int GQ>
static __device__ __forceinline__ void v_dispatch(const at_args &a, const kvs__attn_seq &S, uint32_t j, uint32_t ct0,
                                                  uint32_t t1, const float *ps, float *vcorr, float (&acc)[GQ][8],
                                                  float (&bias)[GQ], int *st)
{
  switch (a.vb) {
  case 2: v_phase<GQ, 2>(a, S, j, ct0, t1, ps, vcorr, acc, bias, st); break;
  case 3: v_phase<GQ, 3>(a, S, j, ct0, t1, ps, vcorr, acc, bias, st); break;
  case 4: v_phase<GQ, 4>(a, S, j, ct0, t1, ps, vcorr, acc, bias, st); break;
  case 8: v_phase<GQ, 8>(a, S, j, ct0, t1, ps, vcorr, acc, bias, st); break;
  default: v_phase<GQ, 16>(a, S, j, ct0, t1, ps, vcorr, acc, bias, st); break;
  }
}

/* Shared floats of one CUDA block: qs [GQ][D], ps [CT][GQ], vcorr [GQ][D],
 * red [CT][rs], per-warp max and sum [4][GQ] each, running m and l. */
static size_t at_smem(const at_args &a, uint32_t gq)
{
  return sizeof(float) * ((size_t)2 * gq * a.D + (size_t)a.ct * gq + (size_t)a.ct * a.rs + 8u * gq + 2u * gq);
}

template <int GQ>
static __global__ void __launch_bounds__(AT_NT, GQ == 8 ? 2 : AT_MINB)
kvs_attn_kernel(at_args a, const kvs__attn_seq *seqs, const float *q, float *ws_acc, float *ws_ml, int *st)
{
  extern __shared__ float sm[];
  const uint32_t split = blockIdx.x, j = blockIdx.y, si = blockIdx.z, tid = threadIdx.x;
  const uint32_t D = a.D, lane = tid & 31u, warp = tid >> 5;
  const kvs__attn_seq S = seqs[si];
  uint32_t t0, t1;
  size_t part;
  if (!at_share(a, S, split, j, si, tid, GQ, t0, t1, part, ws_ml, st)) return;
  float *qs = sm, *ps = qs + GQ * D, *vcorr = ps + a.ct * GQ, *red = vcorr + GQ * D;
  float *wmax = red + a.ct * a.rs, *wsum = wmax + 4 * GQ, *mrun = wsum + 4 * GQ, *lrun = mrun + GQ;
  const float *qh = q + ((size_t)si * a.nq + (size_t)j * GQ) * D;
  for (uint32_t i = tid; i < GQ * D; i += AT_NT) { qs[i] = qh[i] * a.qscale; vcorr[i] = 0.f; }
  if (tid < GQ) { mrun[tid] = -INFINITY; lrun[tid] = 0.f; }
  float acc[GQ][8], bias[GQ];
#pragma unroll
  for (int h = 0; h < GQ; h++) {
    bias[h] = 0.f;
#pragma unroll
    for (int e = 0; e < 8; e++) acc[h][e] = 0.f;
  }
  __syncthreads();

  for (uint32_t ct0 = t0; ct0 < t1; ct0 += a.ct) {
    k_dispatch<GQ>(a, S, j, ct0, t1, qs, red, st);
    __syncthreads();
    /* one thread per token: its score, the chunk's max per head */
    float lmax[GQ];
#pragma unroll
    for (int h = 0; h < GQ; h++) lmax[h] = -INFINITY;
    for (uint32_t tk = tid; tk < a.ct; tk += AT_NT) {
      const bool in = ct0 + tk < t1;
#pragma unroll
      for (int h = 0; h < GQ; h++) {
        float sc = 0.f;
        for (uint32_t o = 0; o < a.no; o++) sc += red[tk * a.rs + h * a.no + o];
        sc = in ? sc : -INFINITY;
        ps[tk * GQ + h] = sc;
        lmax[h] = fmaxf(lmax[h], sc);
      }
    }
#pragma unroll
    for (int h = 0; h < GQ; h++) {
      for (int off = 16; off; off >>= 1) lmax[h] = fmaxf(lmax[h], __shfl_xor_sync(0xffffffffu, lmax[h], off));
      if (lane == 0) wmax[warp * GQ + h] = lmax[h];
    }
    __syncthreads();
    float mnew[GQ], lsum[GQ];
#pragma unroll
    for (int h = 0; h < GQ; h++) {
      float m = mrun[h];
      for (int w = 0; w < AT_NT / 32; w++) m = fmaxf(m, wmax[w * GQ + h]);
      mnew[h] = m;
      lsum[h] = 0.f;
    }
    for (uint32_t tk = tid; tk < a.ct; tk += AT_NT)
#pragma unroll
      for (int h = 0; h < GQ; h++) {
        float p = exp2f(ps[tk * GQ + h] - mnew[h]); /* -inf for tokens past the end: 0 */
        ps[tk * GQ + h] = p;
        lsum[h] += p;
      }
    float al[GQ];
#pragma unroll
    for (int h = 0; h < GQ; h++) {
      for (int off = 16; off; off >>= 1) lsum[h] += __shfl_xor_sync(0xffffffffu, lsum[h], off);
      if (lane == 0) wsum[warp * GQ + h] = lsum[h];
      al[h] = exp2f(mrun[h] - mnew[h]); /* 0 on the first chunk */
    }
#pragma unroll
    for (int h = 0; h < GQ; h++)
      for (uint32_t c = tid; c < D; c += AT_NT) vcorr[h * D + c] *= al[h];
    __syncthreads();
    if (tid < GQ) { /* from shared, not al[tid] / mnew[tid]: registers have no dynamic index */
      float l = 0.f, mo = mrun[tid], mn = mo;
      for (int w = 0; w < AT_NT / 32; w++) {
        l += wsum[w * GQ + tid];
        mn = fmaxf(mn, wmax[w * GQ + tid]);
      }
      lrun[tid] = lrun[tid] * exp2f(mo - mn) + l;
      mrun[tid] = mn;
    }
#pragma unroll
    for (int h = 0; h < GQ; h++) {
      bias[h] *= al[h];
#pragma unroll
      for (int e = 0; e < 8; e++) acc[h][e] *= al[h];
    }
    v_dispatch<GQ>(a, S, j, ct0, t1, ps, vcorr, acc, bias, st);
    __syncthreads();
  }

  /* the slices' accumulators meet in red [slice][h][D] */
  const uint32_t o = tid % a.no, s = tid / a.no;
#pragma unroll
  for (int h = 0; h < GQ; h++)
#pragma unroll
    for (int e = 0; e < 8; e++) red[((size_t)s * GQ + h) * D + 8u * o + e] = acc[h][e] + bias[h];
  __syncthreads();
  for (uint32_t i = tid; i < GQ * D; i += AT_NT) {
    const uint32_t h = i / D, c = i % D;
    float x = vcorr[i];
    for (uint32_t sl = 0; sl < a.ns; sl++) x += red[((size_t)sl * GQ + h) * D + c];
    ws_acc[(part + (size_t)h * a.splits) * D + c] = x;
  }
  if (tid < GQ) {
    ws_ml[2 * (part + tid * a.splits)] = mrun[tid];
    ws_ml[2 * (part + tid * a.splits) + 1] = lrun[tid];
  }
}

/* One CUDA block per (query head, sequence): merge the spans. */
static __global__ void kvs_attn_combine(const float *ws_acc, const float *ws_ml, uint32_t splits, uint32_t D,
                                        uint32_t nq, float *out)
{
  const size_t base = ((size_t)blockIdx.y * nq + blockIdx.x) * splits;
  float M = -INFINITY;
  for (uint32_t s = 0; s < splits; s++) M = fmaxf(M, ws_ml[2 * (base + s)]);
  for (uint32_t c = threadIdx.x; c < D; c += blockDim.x) {
    float L = 0.f, x = 0.f;
    for (uint32_t s = 0; s < splits; s++) {
      float m = ws_ml[2 * (base + s)];
      if (m == -INFINITY) continue; /* an empty span: its accumulator was never written */
      float w = exp2f(m - M);
      L += w * ws_ml[2 * (base + s) + 1];
      x += w * ws_acc[(base + s) * D + c];
    }
    out[((size_t)blockIdx.y * nq + blockIdx.x) * D + c] = L > 0.f ? x / L : 0.f;
  }
}

static int at_fill(const kvs__attn_shape *s, at_args *a)
{
  if (kvs__attn_shape_check(s)) return -EINVAL;
  const uint32_t D = s->head_dim, g = s->n_q_heads / s->n_kv_heads;
  if (!(D == 32 || D == 64 || D == 128 || D == 256) || !(g == 1 || g == 2 || g == 4 || g == 8) ||
      s->qp.v_group % 8u)
    return -EINVAL;
  kvs__qlayout l;
  kvs__qlayout_of(&s->qp, &l);
  a->G = s->qp.group; a->C = s->qp.channels; a->D = D; a->vg = s->qp.v_group;
  a->kb = s->qp.k_bits; a->vb = s->qp.v_bits;
  a->nko = a->kb == 16 ? 0 : s->qp.k_outliers;
  a->nvo = a->vb == 16 ? 0 : s->qp.v_outliers;
  a->dt = (uint32_t)s->qp.dtype; a->nq = s->n_q_heads;
  a->no = D / 8u; a->ns = AT_NT / a->no; a->ct = a->ns * AT_TPS; a->rs = a->no * g + 1u;
  a->kscale = l.kscale; a->kmin = l.kmin; a->kcodes = l.kcodes; a->vscale = l.vscale; a->vmin = l.vmin;
  a->vcodes = l.vcodes; a->kout = l.kout; a->vout = l.vout; a->kstride = l.kstride; a->vstride = l.vstride;
  a->qscale = (float)(1.4426950408889634 / sqrt((double)D));
  a->span = a->splits = 0;
  return 0;
}

/* Spans: the CUDA blocks of every (sequence, KV head) pair and split
 * run `slots` at a time (blocks per SM x SMs); among split counts, the one
 * whose whole waves x span (in chunks, plus half a chunk for a block's own
 * start and end) is least, ties to fewer splits (less to combine). A last
 * wave that is mostly empty costs as much as a full one. */
static int at_plan(const at_args &a, uint32_t n_seqs, uint32_t n_kv, uint32_t max_tokens, uint32_t slots,
                   uint32_t *span_out, uint32_t *splits_out)
{
  const uint64_t pairs = (uint64_t)(n_seqs ? n_seqs : 1) * n_kv;
  const uint64_t chunks = max_tokens ? ((uint64_t)max_tokens + a.ct - 1u) / a.ct : 1u;
  if (!slots) slots = 1;
  uint64_t best_span = chunks, best_splits = 1;
  double best = -1.0;
  const uint64_t most = chunks < 65535u ? chunks : 65535u;
  for (uint64_t s = 1; s <= most; s++) {
    const uint64_t span = (chunks + s - 1u) / s, n = (chunks + span - 1u) / span;
    if (n != s) continue; /* the same split as a smaller s */
    const uint64_t waves = (pairs * n + slots - 1u) / slots;
    const double cost = (double)waves * ((double)span + 0.5);
    if (best < 0 || cost < best) { best = cost; best_span = span; best_splits = n; }
  }
  const uint64_t span = best_span * a.ct;
  if (span > 0xffffffffu) return -EINVAL;
  *span_out = (uint32_t)span;
  *splits_out = (uint32_t)best_splits;
  return 0;
}

#endif
