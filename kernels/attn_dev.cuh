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
#ifndef AT_MINB_TC
#define AT_MINB_TC 3 /* the same for the tensor-core kernel (g = 4, at_fast): 4 (128
                       * registers) spills around the fallback paths */
#endif
#ifndef AT_MINB
#define AT_MINB 3   /* CUDA blocks per SM the registers must allow (g <= 4): 3 keeps
                     * the g = 4 kernel free of spills on sm_90 */
#endif

struct at_args {
  uint32_t G, C, D, vg, kb, vb, nko, nvo, dt, nq, span, splits;
  uint32_t no, ns, ct, rs;  /* octets per head, slices, tokens per chunk, red row stride */
  uint32_t fast;            /* the shape takes the tensor-core path (at_fast) */
  size_t kscale, kmin, kcodes, vscale, vmin, vcodes, kout, vout, kstride, vstride;
  float qscale;
};

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

template <int GQ, int KB>
static __device__ __forceinline__ void k_outl(const at_args &a, const kvs__attn_seq &S, uint32_t j, uint32_t ct0,
                                              uint32_t t1, const float *qs, float *red, int *st, bool slot0);
template <int GQ, int VB>
static __device__ __forceinline__ void v_outl(const at_args &a, const kvs__attn_seq &S, uint32_t j, uint32_t ct0,
                                              uint32_t t1, const float *ps, float *vcorr, int *st);

/* Keys of this thread's slice in the chunk: partial scores of its octet
 * into red[token][octet][h]. LIGHT: token by token only (the tensor-core
 * kernel's fallback, which keeps few registers). */
template <int GQ, int KB, bool LIGHT = false>
static __device__ __forceinline__ void k_phase(const at_args &a, const kvs__attn_seq &S, uint32_t j, uint32_t ct0,
                                               uint32_t t1, const float *qs, float *red, int *st)
{
  constexpr int KB4 = KB <= 4 ? KB : 4;
  constexpr int PB = KB == 2 ? AT_TPS : AT_PB; /* 2-bit loads are small: more in flight */
  const uint32_t tid = threadIdx.x, o = tid % a.no, s = tid / a.no, lc = 8u * o, c0 = j * a.D + lc;
  const uint32_t tb = ct0 + s * AT_TPS;
  if (tb >= t1) return;
  const uint32_t n = min((uint32_t)AT_TPS, t1 - tb);
  float *rd = red + (size_t)(s * AT_TPS) * a.rs + o * GQ; /* token i: rd + i * rs */
  at_cur cur = {0xffffffffu, {nullptr, nullptr, 0}};
  float w[GQ][8], qm[GQ];
  if (!LIGHT && slice_fast<KB>(a, S, tb, t1, cur)) {
    const uint8_t *data = (const uint8_t *)cur.v.data;
    const uint8_t *row = data + a.kcodes + (size_t)(tb - cur.b * a.G) * a.kstride;
    kscales<GQ>(a, data, c0, lc, qs, w, qm);
    /* loads of a batch all in flight before the first is used */
#pragma unroll
    for (int i0 = 0; i0 < AT_TPS; i0 += PB) {
      uint32_t bits[PB];
#pragma unroll
      for (int i = 0; i < PB; i++) bits[i] = obits<KB4>(row + (i0 + i) * a.kstride, c0);
#pragma unroll
      for (int i = 0; i < PB; i++) {
        float x[8];
        unpack<KB4>(bits[i], x);
#pragma unroll
        for (int h = 0; h < GQ; h++) {
          float acc = qm[h];
#pragma unroll
          for (int e = 0; e < 8; e++) acc = fmaf(w[h][e], x[e], acc);
          rd[(i0 + i) * a.rs + h] = acc;
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
      for (int h = 0; h < GQ; h++) rd[i * a.rs + h] = part[h];
    }
  }
  k_outl<GQ, KB>(a, S, j, ct0, t1, qs, red, st, false);
}

/* Key outliers of this thread's slice: the octets of a token share its
 * list; each corrects its own slot of red with q . (raw - dequantized), or
 * slot 0 (atomically) where the warp took the tensor-core path. */
template <int GQ, int KB>
static __device__ __forceinline__ void k_outl(const at_args &a, const kvs__attn_seq &S, uint32_t j, uint32_t ct0,
                                              uint32_t t1, const float *qs, float *red, int *st, bool slot0)
{
  if constexpr (KB != 16) {
    const uint32_t tid = threadIdx.x, o = tid % a.no, s = tid / a.no;
    const uint32_t tb = ct0 + s * AT_TPS, nbt = S.n_blocks * a.G;
    if (!a.nko || tb >= t1) return;
    const uint32_t n = min((uint32_t)AT_TPS, t1 - tb);
    float *rd = red + (size_t)(s * AT_TPS) * a.rs + (slot0 ? 0u : o * GQ);
    at_cur cur = {0xffffffffu, {nullptr, nullptr, 0}};
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
        for (int h = 0; h < GQ; h++) {
          const float cx = qs[h * a.D + (c - j * a.D)] * dx;
          if (slot0) atomicAdd(&rd[i * a.rs + h], cx);
          else rd[i * a.rs + h] += cx;
        }
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
        unpack<VB4>(bits[i], x);
        const float scf = f16f(sc[i]), mnf = f16f(mn[i]);
#pragma unroll
        for (int h = 0; h < GQ; h++) {
          const float p = pp[(i0 + i) * GQ + h], q = p * scf;
          bias[h] = fmaf(p, mnf, bias[h]);
#pragma unroll
          for (int e = 0; e < 8; e++) acc[h][e] = fmaf(q, x[e], acc[h][e]);
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
  v_outl<GQ, VB>(a, S, j, ct0, t1, ps, vcorr, st);
}

/* Value outliers of this thread's slice: p (raw - dequantized) into the
 * shared per-channel accumulator vcorr. */
template <int GQ, int VB>
static __device__ __forceinline__ void v_outl(const at_args &a, const kvs__attn_seq &S, uint32_t j, uint32_t ct0,
                                              uint32_t t1, const float *ps, float *vcorr, int *st)
{
  if constexpr (VB != 16) {
    const uint32_t tid = threadIdx.x, o = tid % a.no, s = tid / a.no;
    const uint32_t tb = ct0 + s * AT_TPS, nbt = S.n_blocks * a.G, ng = a.C / a.vg;
    if (!a.nvo || tb >= t1) return;
    const uint32_t n = min((uint32_t)AT_TPS, t1 - tb);
    const float *pp = ps + (size_t)(s * AT_TPS) * GQ;
    at_cur cur = {0xffffffffu, {nullptr, nullptr, 0}};
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

/* ---- the tensor-core path ------------------------------------------------
 * Taken by whole warps (AT_NT / 32 warps, warp w owning tokens [32w, 32w+32)
 * of a chunk: slices 2w and 2w + 1 at head_dim 128) where those 32 tokens
 * are quantized rows of one block with no sink, for g = 4, head_dim 128,
 * 2- or 4-bit keys and values, v_group a multiple of 128 (at_fast).
 * Codes are small integers, exact in bf16; the per-channel key scales are
 * folded into q (q'_c = q_c scale_c, base-2 softmax units) and the
 * per-token value scales into p (p'_t = p_t scale_t), and both are split
 * into bf16 hi + lo parts (q' = hi + lo within 2^-18 |q'|), which fill the
 * 8 columns (keys) or rows (values) of an m16n8k16 bf16 mma with fp32
 * accumulation: heads 0-3 hi, 4-7 lo.
 *   keys:   S[t][n] = sum_c code[t][c] q'[n][c], tokens as the 16 rows;
 *           score = S[t][h] + S[t][h + 4] + sum_c q_c min_c
 *   values: O[n][c] = sum_t p'[n][t] code[t][c], rows 8-15 zero;
 *           out = O[h][c] + O[h + 4][c] + sum_t p_t min_t
 * The order of channels (keys) and tokens (values) inside an mma's k
 * dimension is free as long as both operands agree: each lane unpacks
 * the codes of the words it loads and pairs them with the matching q' or
 * p'. The GPU runs mma.sync through inline PTX (sm_80 and later); the
 * emulator (tests/kernels/attn_emu.cpp) compiles at_mma's portable body,
 * which computes the same fragments with warp shuffles (fp32 products of
 * bf16 values are exact; only the order of the fp32 sums differs). */

/* bf16 bits of x, round to nearest even (finite x) */
static __device__ __forceinline__ uint32_t bf_rn(float x)
{
  uint32_t u = __float_as_uint(x);
  return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}
/* two floats into a bf16 pair, x0 in the low half */
static __device__ __forceinline__ uint32_t bf_pack(float x0, float x1)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(x1), "f"(x0));
  return r;
#else
  return bf_rn(x0) | bf_rn(x1) << 16;
#endif
}
static __device__ __forceinline__ float bf_lo(uint32_t x) { return __uint_as_float(x << 16); }
static __device__ __forceinline__ float bf_hi(uint32_t x) { return __uint_as_float(x & 0xffff0000u); }
/* part 0: the bf16 pair nearest (x0, x1); part 1: the pair nearest the
 * remainders */
static __device__ __forceinline__ uint32_t bf_split(float x0, float x1, bool lo)
{
  const uint32_t h = bf_pack(x0, x1);
  return lo ? bf_pack(x0 - bf_lo(h), x1 - bf_hi(h)) : h;
}
/* (0x4300 | c) is the bf16 128 + c (c < 128): minus 128, exact */
static __device__ __forceinline__ uint32_t bf_codes(uint32_t x)
{
  x |= 0x43004300u;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  uint32_t r;
  asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(r) : "r"(x), "r"(0x3f803f80u), "r"(0xc300c300u));
  return r;
#else
  return bf_rn(bf_lo(x) - 128.f) | bf_rn(bf_hi(x) - 128.f) << 16;
#endif
}

/* c += A B for one m16n8k16 bf16 tile (fragments as the PTX ISA lays
 * them out: a0 rows g, k 2t..2t+1; a1 rows g + 8; a2, a3 k + 8; b0 k
 * 2t..2t+1, column g; b1 k + 8; c0, c1 row g columns 2t, 2t + 1; c2, c3
 * row g + 8; g = lane / 4, t = lane % 4). */
static __device__ __forceinline__ void at_mma(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                              uint32_t b0, uint32_t b1)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#else
  const uint32_t lane = threadIdx.x & 31u, g = lane >> 2, t = lane & 3u;
  for (uint32_t kk = 0; kk < 4; kk++) {
    const uint32_t A0 = __shfl_sync(0xffffffffu, a0, 4 * g + kk), A1 = __shfl_sync(0xffffffffu, a1, 4 * g + kk);
    const uint32_t A2 = __shfl_sync(0xffffffffu, a2, 4 * g + kk), A3 = __shfl_sync(0xffffffffu, a3, 4 * g + kk);
    const uint32_t B00 = __shfl_sync(0xffffffffu, b0, 8 * t + kk), B10 = __shfl_sync(0xffffffffu, b1, 8 * t + kk);
    const uint32_t B01 = __shfl_sync(0xffffffffu, b0, 8 * t + 4 + kk), B11 = __shfl_sync(0xffffffffu, b1, 8 * t + 4 + kk);
    c[0] += bf_lo(A0) * bf_lo(B00) + bf_hi(A0) * bf_hi(B00) + bf_lo(A2) * bf_lo(B10) + bf_hi(A2) * bf_hi(B10);
    c[1] += bf_lo(A0) * bf_lo(B01) + bf_hi(A0) * bf_hi(B01) + bf_lo(A2) * bf_lo(B11) + bf_hi(A2) * bf_hi(B11);
    c[2] += bf_lo(A1) * bf_lo(B00) + bf_hi(A1) * bf_hi(B00) + bf_lo(A3) * bf_lo(B10) + bf_hi(A3) * bf_hi(B10);
    c[3] += bf_lo(A1) * bf_lo(B01) + bf_hi(A1) * bf_hi(B01) + bf_lo(A3) * bf_lo(B11) + bf_hi(A3) * bf_hi(B11);
  }
#endif
}

/* An L2 prefetch (nothing in the emulator). */
static __device__ __forceinline__ void at_prefetch(const void *p)
{
#if defined(__CUDA_ARCH__)
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
#else
  (void)p;
#endif
}

/* The shape takes the tensor-core path. */
static bool at_fast(const at_args &a, uint32_t gq)
{
  return gq == 4 && a.D == 128 && (a.kb == 2 || a.kb == 4) && (a.vb == 2 || a.vb == 4) && a.vg % 128u == 0 &&
         a.kstride % 16u == 0 && a.vstride % 16u == 0 && a.kcodes % 16u == 0 && a.vcodes % 16u == 0 &&
         a.kscale % 16u == 0 && a.kmin % 16u == 0;
}

/* The block holding tokens [tw, tw + 32) as quantized rows, or NULL. */
static __device__ __forceinline__ const uint8_t *warp_block(const at_args &a, const kvs__attn_seq &S, uint32_t tw,
                                                            uint32_t t1, uint32_t *r0)
{
  if (tw + 32u > t1 || tw + 32u > S.n_blocks * a.G) return nullptr;
  const uint32_t b = tw / a.G, r = tw - b * a.G;
  if (r + 32u > a.G) return nullptr;
  const kvs__attn_block v = S.blocks[b];
  if ((v.sink_mask >> r) & 0xffffffffull) return nullptr;
  *r0 = r;
  return (const uint8_t *)v.data;
}

/* element i of a vector, i known at compile time after unrolling */
static __device__ __forceinline__ float f4e(const float4 &v, uint32_t i)
{
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}
/* 16-bit word i (0..7) of a uint4 */
static __device__ __forceinline__ uint16_t u4h(const uint4 &v, uint32_t i)
{
  const uint32_t w = (i >> 1) == 0 ? v.x : (i >> 1) == 1 ? v.y : (i >> 1) == 2 ? v.z : v.w;
  return (uint16_t)(w >> (16u * (i & 1u)));
}

/* Pair jp (0..15) of a lane's 32 key channels: the first channel (from
 * the head's start); the second is 4 (4-bit) or 8 (2-bit) above. Lane
 * quad t holds channels [32t, 32t + 32) as words of B bits. */
template <int B>
static __device__ __forceinline__ uint32_t kpair_ch(uint32_t t, uint32_t jp)
{
  return B == 4 ? 8u * (4u * t + (jp >> 2)) + (jp & 3u) : 16u * (2u * t + (jp >> 3)) + (jp & 7u);
}
/* the bf16 pair of codes (pair jp) from a lane's words x */
template <int B>
static __device__ __forceinline__ uint32_t kpair_codes(const uint32_t (&x)[4], uint32_t jp)
{
  return B == 4 ? bf_codes((x[jp >> 2] >> (4u * (jp & 3u))) & 0x000f000fu)
                : bf_codes((x[jp >> 3] >> (2u * (jp & 7u))) & 0x00030003u);
}

/* Scores of the warp's 32 tokens (rows r0.. of block data) into red
 * slot 0 (red[token][0..3]); tk0 = the first token's index in the chunk. */
template <int KB>
static __device__ __forceinline__ void k_mma(const at_args &a, const uint8_t *data, uint32_t r0, uint32_t j,
                                             uint32_t tk0, const float *qs, float *red)
{
  const uint32_t lane = threadIdx.x & 31u, g = lane >> 2, t = lane & 3u, hq = g & 3u, c0 = j * 128u;
  const bool lo = g >= 4;
  /* the lane's 32 channels [32t, 32t + 32): scales, mins, q, in 16-byte loads */
  const uint4 *ksc = (const uint4 *)(data + a.kscale + 2u * (c0 + 32u * t));
  const uint4 *kmn = (const uint4 *)(data + a.kmin + 2u * (c0 + 32u * t));
  const float4 *qh = (const float4 *)(qs + hq * 128u + 32u * t);
  uint4 sc4[4], mn4[4];
  float4 q4[8];
#pragma unroll
  for (int i = 0; i < 4; i++) { sc4[i] = ksc[i]; mn4[i] = kmn[i]; }
#pragma unroll
  for (int i = 0; i < 8; i++) q4[i] = qh[i];
  uint32_t bq[16];
  float qm = 0.f;
#pragma unroll
  for (uint32_t jp = 0; jp < 16; jp++) {
    const uint32_t c1 = kpair_ch<KB>(t, jp) - 32u * t, c2 = c1 + (KB == 4 ? 4u : 8u);
    const float q1 = f4e(q4[c1 >> 2], c1 & 3u), q2 = f4e(q4[c2 >> 2], c2 & 3u);
    bq[jp] = bf_split(q1 * f16f(u4h(sc4[c1 >> 3], c1 & 7u)), q2 * f16f(u4h(sc4[c2 >> 3], c2 & 7u)), lo);
    qm = fmaf(q1, f16f(u4h(mn4[c1 >> 3], c1 & 7u)), qm);
    qm = fmaf(q2, f16f(u4h(mn4[c2 >> 3], c2 & 7u)), qm);
  }
  qm += __shfl_xor_sync(0xffffffffu, qm, 1);
  qm += __shfl_xor_sync(0xffffffffu, qm, 2); /* sum_c q[hq][c] min[c] */
  const float qm0 = __shfl_sync(0xffffffffu, qm, 8u * (t & 1u)), qm1 = __shfl_sync(0xffffffffu, qm, 8u * (t & 1u) + 4u);
  const uint8_t *kc = data + a.kcodes + (size_t)r0 * a.kstride + c0 * KB / 8u + t * (KB * 4u);
#pragma unroll
  for (uint32_t tt = 0; tt < 2; tt++) {
    uint32_t xa[4], xb[4];
    const uint8_t *ra = kc + (size_t)(16u * tt + g) * a.kstride, *rb = ra + 8u * a.kstride;
    if (KB == 4) {
      const uint4 ua = *(const uint4 *)ra, ub = *(const uint4 *)rb;
      xa[0] = ua.x; xa[1] = ua.y; xa[2] = ua.z; xa[3] = ua.w;
      xb[0] = ub.x; xb[1] = ub.y; xb[2] = ub.z; xb[3] = ub.w;
    } else {
      const uint2 ua = *(const uint2 *)ra, ub = *(const uint2 *)rb;
      xa[0] = ua.x; xa[1] = ua.y; xa[2] = xa[3] = 0;
      xb[0] = ub.x; xb[1] = ub.y; xb[2] = xb[3] = 0;
    }
    float c[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (uint32_t m = 0; m < 8; m++)
      at_mma(c, kpair_codes<KB>(xa, 2 * m), kpair_codes<KB>(xb, 2 * m), kpair_codes<KB>(xa, 2 * m + 1),
             kpair_codes<KB>(xb, 2 * m + 1), bq[2 * m], bq[2 * m + 1]);
    /* columns 2t, 2t + 1: quads 0-1 hold the hi parts of heads 2t.., 2-3 the lo parts */
    float o[4];
#pragma unroll
    for (int i = 0; i < 4; i++) o[i] = c[i] + __shfl_xor_sync(0xffffffffu, c[i], 2);
    if (t < 2) {
      float *r = red + (size_t)(tk0 + 16u * tt + g) * a.rs + 2u * t;
      r[0] = o[0] + qm0;
      r[1] = o[1] + qm1;
      r[8u * a.rs] = o[2] + qm0;
      r[8u * a.rs + 1] = o[3] + qm1;
    }
  }
}

/* Values of the warp's 32 tokens: acc[i][0..1] += O rows g, columns of
 * n-tile i (channels 32t + i and 32t + 16 + i); bias += p min for head
 * g & 3. ps: the chunk's p [token][4], tk0 the first token. */
template <int VB>
static __device__ __forceinline__ void v_mma(const at_args &a, const uint8_t *data, uint32_t r0, uint32_t j,
                                             uint32_t tk0, const float *ps, float (&acc)[16][2], float &bias)
{
  const uint32_t lane = threadIdx.x & 31u, g = lane >> 2, t = lane & 3u, hq = g & 3u, c0 = j * 128u;
  const uint32_t ng = a.C / a.vg, gi = c0 / a.vg;
  const bool lo = g >= 4;
  const uint16_t *vsc = (const uint16_t *)(data + a.vscale) + gi, *vmn = (const uint16_t *)(data + a.vmin) + gi;
  const uint8_t *vc = data + a.vcodes + c0 * VB / 8u + g * (VB * 2u);
#pragma unroll
  for (uint32_t tt = 0; tt < 2; tt++) {
    /* k slots 2t, 2t + 1, 2t + 8, 2t + 9: tokens 16 tt + those */
    float pv[4];
    uint32_t w[4][2];
#pragma unroll
    for (uint32_t i = 0; i < 4; i++) {
      const uint32_t tr = 16u * tt + 2u * t + (i & 1u) + 8u * (i >> 1), r = r0 + tr;
      const float p = ps[(tk0 + tr) * 4u + hq];
      pv[i] = p * f16f(vsc[(size_t)r * ng]);
      bias = fmaf(p, f16f(vmn[(size_t)r * ng]), bias);
      const uint8_t *row = vc + (size_t)r * a.vstride;
      if (VB == 4) {
        const uint2 u = *(const uint2 *)row;
        w[i][0] = u.x; w[i][1] = u.y;
      } else {
        w[i][0] = *(const uint32_t *)row; w[i][1] = 0;
      }
    }
    const uint32_t a0 = bf_split(pv[0], pv[1], lo), a2 = bf_split(pv[2], pv[3], lo);
#pragma unroll
    for (uint32_t i = 0; i < 16; i++) {
      /* code i of the lane's 16 channels of tokens (0, 1) and (2, 3) */
      uint32_t b[2];
#pragma unroll
      for (uint32_t pr = 0; pr < 2; pr++) {
        const uint32_t x0 = w[2 * pr][VB == 4 ? i >> 3 : 0], x1 = w[2 * pr + 1][VB == 4 ? i >> 3 : 0];
        const uint32_t e = VB == 4 ? i & 7u : i;
        const uint32_t half = VB == 4 ? e >> 2 : e >> 3, sh = VB == 4 ? 4u * (e & 3u) : 2u * (e & 7u);
        const uint32_t m = half ? (x0 >> 16) | (x1 & 0xffff0000u) : (x0 & 0xffffu) | (x1 << 16);
        b[pr] = bf_codes((m >> sh) & (VB == 4 ? 0x000f000fu : 0x00030003u));
      }
      float c[4] = {acc[i][0], acc[i][1], 0.f, 0.f};
      at_mma(c, a0, 0u, a2, 0u, b[0], b[1]);
      acc[i][0] = c[0];
      acc[i][1] = c[1];
    }
  }
}

/* Outliers of a tensor-core warp's slice (16 rows of one block from
 * row0, no sink): keys add q . (raw - dequantized) into the token's score
 * (red slot 0), values p (raw - dequantized) into vcorr. Loads of 8 rows
 * are issued together before any is used (the list entries, then the
 * codes, scales and mins they name), so a slice waits for two round trips
 * per AT_OB rows instead of one per row and entry. */
#ifndef AT_OB
#define AT_OB 4 /* 8 spills on sm_80 */
#endif
template <int GQ, int B, bool KEYS>
static __device__ __forceinline__ void outl_fast(const at_args &a, const uint8_t *data, uint32_t row0, uint32_t j,
                                                 const float *qs, float *red, const float *pp, float *vcorr, int *st)
{
  const uint32_t o = threadIdx.x % a.no, nout = KEYS ? a.nko : a.nvo, ng = a.C / a.vg;
  const uint32_t *ent = (const uint32_t *)(data + (KEYS ? a.kout : a.vout));
  const uint8_t *codes = data + (KEYS ? a.kcodes : a.vcodes);
  const size_t stride = KEYS ? a.kstride : a.vstride;
  for (uint32_t m = o; m < nout; m += a.no)
    for (uint32_t i0 = 0; i0 < AT_TPS; i0 += AT_OB) {
      uint32_t en[AT_OB];
#pragma unroll
      for (uint32_t i = 0; i < AT_OB; i++) en[i] = ent[(size_t)(row0 + i0 + i) * nout + m];
      float dx[AT_OB];
#pragma unroll
      for (uint32_t i = 0; i < AT_OB; i++) {
        const uint32_t r = row0 + i0 + i, c = min(en[i] & 0xffffu, a.C - 1u);
        const uint16_t sc = KEYS ? ((const uint16_t *)(data + a.kscale))[c]
                                 : ((const uint16_t *)(data + a.vscale))[(size_t)r * ng + c / a.vg];
        const uint16_t mn = KEYS ? ((const uint16_t *)(data + a.kmin))[c]
                                 : ((const uint16_t *)(data + a.vmin))[(size_t)r * ng + c / a.vg];
        const float dq = f16f(mn) + (float)code_at(codes + (size_t)r * stride, c, B) * f16f(sc);
        dx[i] = h2f((uint16_t)(en[i] >> 16), a.dt) - dq;
      }
#pragma unroll
      for (uint32_t i = 0; i < AT_OB; i++) {
        const uint32_t c = en[i] & 0xffffu;
        if (c >= a.C) { atomicMin(st, -EINVAL); continue; }
        if (c < j * a.D || c >= j * a.D + a.D) continue;
        const uint32_t lc = c - j * a.D, tk = i0 + i;
#pragma unroll
        for (int h = 0; h < GQ; h++) {
          if (KEYS) atomicAdd(&red[tk * a.rs + h], qs[h * a.D + lc] * dx[i]);
          else atomicAdd(&vcorr[h * a.D + lc], pp[tk * GQ + h] * dx[i]);
        }
      }
    }
}

/* FAST kernel, a warp off the tensor-core path (a sink among its tokens,
 * the residual, a chunk's end): this thread's slice token by token, p v
 * added into vcorr (few registers: the tensor-core accumulators stay
 * live). Then the slice's value outliers. */
template <int GQ, int VB>
static __device__ __forceinline__ void v_slow(const at_args &a, const kvs__attn_seq &S, uint32_t j, uint32_t ct0,
                                              uint32_t t1, const float *ps, float *vcorr, int *st)
{
  const uint32_t tid = threadIdx.x, o = tid % a.no, s = tid / a.no, lc = 8u * o, c0 = j * a.D + lc;
  const uint32_t tb = ct0 + s * AT_TPS, nbt = S.n_blocks * a.G, ng = a.C / a.vg, gi = c0 / a.vg;
  if (tb >= t1) return;
  const uint32_t n = min((uint32_t)AT_TPS, t1 - tb);
  const float *pp = ps + (size_t)(s * AT_TPS) * GQ;
  at_cur cur = {0xffffffffu, {nullptr, nullptr, 0}};
  for (uint32_t i = 0; i < n; i++) {
    const uint32_t t = tb + i;
    at_tok k = locate(a, S, cur, t);
    float x[8];
    if (k.raw) {
      const uint16_t *vr = k.data ? k.raw + a.C : S.res_v + (size_t)(t - nbt) * a.C;
      uint4 u = *(const uint4 *)(vr + c0);
      const uint16_t *h = (const uint16_t *)&u;
#pragma unroll
      for (int e = 0; e < 8; e++) x[e] = h2f(h[e], a.dt);
    } else {
      octet<VB>(k.data + a.vcodes + k.r * a.vstride, c0, a.dt, x);
      const uint16_t *vsc = (const uint16_t *)(k.data + a.vscale) + (size_t)k.r * ng;
      const uint16_t *vmn = (const uint16_t *)(k.data + a.vmin) + (size_t)k.r * ng;
      const float scf = f16f(vsc[gi]), mnf = f16f(vmn[gi]);
#pragma unroll
      for (int e = 0; e < 8; e++) x[e] = mnf + x[e] * scf;
    }
#pragma unroll
    for (int h = 0; h < GQ; h++) {
      const float p = pp[i * GQ + h];
#pragma unroll
      for (int e = 0; e < 8; e++) atomicAdd(&vcorr[h * a.D + lc + e], p * x[e]);
    }
  }
  v_outl<GQ, VB>(a, S, j, ct0, t1, ps, vcorr, st);
}

/* Shared floats of one CUDA block: qs [GQ][D], ps [CT][GQ], vcorr [GQ][D],
 * red [CT][rs], per-warp max and sum [4][GQ] each, running m and l, the
 * warps' tensor-core flags [4]. */
static size_t at_smem(const at_args &a, uint32_t gq)
{
  return sizeof(float) * ((size_t)2 * gq * a.D + (size_t)a.ct * gq + (size_t)a.ct * a.rs + 8u * gq + 2u * gq + 4u);
}

template <int GQ, bool FAST>
static __global__ void __launch_bounds__(AT_NT, GQ == 8 ? 2 : (FAST ? AT_MINB_TC : AT_MINB))
kvs_attn_kernel(at_args a, const kvs__attn_seq *seqs, const float *q, float *ws_acc, float *ws_ml, int *st)
{
  extern __shared__ float sm[];
  const uint32_t split = blockIdx.x, j = blockIdx.y, si = blockIdx.z, tid = threadIdx.x;
  const uint32_t D = a.D, lane = tid & 31u, warp = tid >> 5;
  const kvs__attn_seq S = seqs[si];
  const uint32_t T = S.n_blocks * a.G + S.n_res;
  const uint32_t t0 = split * a.span, t1 = min(T, t0 + a.span);
  const size_t part = ((size_t)si * a.nq + (size_t)j * GQ) * a.splits + split; /* head h: + h * splits */
  if (split == 0 && tid == 0 && T > a.span * a.splits) atomicMin(st, -EINVAL);
  if (t0 >= t1) {
    if (tid < GQ) { ws_ml[2 * (part + tid * a.splits)] = -INFINITY; ws_ml[2 * (part + tid * a.splits) + 1] = 0.f; }
    return;
  }
  float *qs = sm, *ps = qs + GQ * D, *vcorr = ps + a.ct * GQ, *red = vcorr + GQ * D;
  float *wmax = red + a.ct * a.rs, *wsum = wmax + 4 * GQ, *mrun = wsum + 4 * GQ, *lrun = mrun + GQ;
  int *wf = (int *)(lrun + GQ); /* warp w took the tensor-core path this chunk */
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
  /* FAST: the tensor-core accumulators (v_mma) of head (lane / 4) & 3;
   * the other tokens go through the CUDA-core code into vcorr */
  float facc[16][2], fbias = 0.f;
#pragma unroll
  for (int i = 0; i < 16; i++) facc[i][0] = facc[i][1] = 0.f;
  const uint32_t hq = (lane >> 2) & 3u;
  __syncthreads();

  for (uint32_t ct0 = t0; ct0 < t1; ct0 += a.ct) {
    const uint8_t *wdata = nullptr;
    uint32_t wr0 = 0;
    if constexpr (FAST) {
      wdata = warp_block(a, S, ct0 + 32u * warp, t1, &wr0);
      /* the block of the warp's tokens in the next chunk, for its prefetch */
      const uint32_t tn = ct0 + a.ct + 32u * warp;
      const uint8_t *ndata =
          tn + 32u <= S.n_blocks * a.G && tn % a.G + 32u <= a.G ? (const uint8_t *)S.blocks[tn / a.G].data : nullptr;
      if (wdata) {
        /* the values' codes, scales and mins of this chunk into L2 while
         * the keys are read and the softmax runs */
        at_prefetch(wdata + a.vcodes + (size_t)(wr0 + lane) * a.vstride + j * 128u * a.vb / 8u);
        if (lane < 8u)
          at_prefetch(wdata + (lane < 4u ? a.vscale : a.vmin) + 2u * ((size_t)wr0 * (a.C / a.vg)) + 128u * (lane & 3u));
        if (a.kb == 4) k_mma<4>(a, wdata, wr0, j, 32u * warp, qs, red);
        else k_mma<2>(a, wdata, wr0, j, 32u * warp, qs, red);
        if (a.nko) {
          __syncwarp();
          const uint32_t sl = tid / a.no; /* this thread's slice: rows wr0 + 16 (sl & 1) .. */
          float *rd = red + (size_t)(sl * AT_TPS) * a.rs;
          if (a.kb == 4) outl_fast<GQ, 4, true>(a, wdata, wr0 + 16u * (sl & 1u), j, qs, rd, nullptr, nullptr, st);
          else outl_fast<GQ, 2, true>(a, wdata, wr0 + 16u * (sl & 1u), j, qs, rd, nullptr, nullptr, st);
        }
        if (ndata) /* the keys of the next chunk */
          at_prefetch(ndata + a.kcodes + (size_t)((tn % a.G) + lane) * a.kstride + j * 128u * a.kb / 8u);
      } else if (a.kb == 4) {
        k_phase<GQ, 4, true>(a, S, j, ct0, t1, qs, red, st);
      } else {
        k_phase<GQ, 2, true>(a, S, j, ct0, t1, qs, red, st);
      }
      if (lane == 0) wf[warp] = wdata != nullptr;
    } else {
      k_dispatch<GQ>(a, S, j, ct0, t1, qs, red, st);
    }
    __syncthreads();
    /* one thread per token: its score, the chunk's max per head */
    float lmax[GQ];
#pragma unroll
    for (int h = 0; h < GQ; h++) lmax[h] = -INFINITY;
    for (uint32_t tk = tid; tk < a.ct; tk += AT_NT) {
      const bool in = ct0 + tk < t1;
      const uint32_t no = FAST && wf[tk / 32u] ? 1u : a.no; /* tensor-core scores are whole */
#pragma unroll
      for (int h = 0; h < GQ; h++) {
        float sc = 0.f;
        for (uint32_t o = 0; o < no; o++) sc += red[tk * a.rs + o * GQ + h];
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
    if constexpr (FAST) {
      float alq = al[0];
#pragma unroll
      for (int h = 1; h < GQ; h++) alq = hq == (uint32_t)h ? al[h] : alq;
      fbias *= alq;
#pragma unroll
      for (int i = 0; i < 16; i++) {
        facc[i][0] *= alq;
        facc[i][1] *= alq;
      }
      if (wdata) {
        if (a.vb == 4) v_mma<4>(a, wdata, wr0, j, 32u * warp, ps, facc, fbias);
        else v_mma<2>(a, wdata, wr0, j, 32u * warp, ps, facc, fbias);
        if (a.nvo) {
          const uint32_t sl = tid / a.no;
          const float *pp = ps + (size_t)(sl * AT_TPS) * GQ;
          if (a.vb == 4) outl_fast<GQ, 4, false>(a, wdata, wr0 + 16u * (sl & 1u), j, qs, nullptr, pp, vcorr, st);
          else outl_fast<GQ, 2, false>(a, wdata, wr0 + 16u * (sl & 1u), j, qs, nullptr, pp, vcorr, st);
        }
      } else if (a.vb == 4) {
        v_slow<GQ, 4>(a, S, j, ct0, t1, ps, vcorr, st);
      } else {
        v_slow<GQ, 2>(a, S, j, ct0, t1, ps, vcorr, st);
      }
    } else {
#pragma unroll
      for (int h = 0; h < GQ; h++) {
        bias[h] *= al[h];
#pragma unroll
        for (int e = 0; e < 8; e++) acc[h][e] *= al[h];
      }
      v_dispatch<GQ>(a, S, j, ct0, t1, ps, vcorr, acc, bias, st);
    }
    __syncthreads();
  }

  /* the slices' (FAST: the warps') accumulators meet in red [slice][h][D] */
  uint32_t nsl = a.ns;
  if constexpr (FAST) {
    nsl = AT_NT / 32u;
    fbias += __shfl_xor_sync(0xffffffffu, fbias, 1);
    fbias += __shfl_xor_sync(0xffffffffu, fbias, 2);
    const uint32_t g = lane >> 2, t = lane & 3u;
#pragma unroll
    for (int i = 0; i < 16; i++)
#pragma unroll
      for (int k = 0; k < 2; k++) {
        const float x = facc[i][k] + __shfl_xor_sync(0xffffffffu, facc[i][k], 16); /* hi + lo rows */
        if (g < 4) red[((size_t)warp * GQ + g) * D + 32u * t + 16u * k + i] = x + fbias;
      }
  } else {
    const uint32_t o = tid % a.no, s = tid / a.no;
#pragma unroll
    for (int h = 0; h < GQ; h++)
#pragma unroll
      for (int e = 0; e < 8; e++) red[((size_t)s * GQ + h) * D + 8u * o + e] = acc[h][e] + bias[h];
  }
  __syncthreads();
  for (uint32_t i = tid; i < GQ * D; i += AT_NT) {
    const uint32_t h = i / D, c = i % D;
    float x = vcorr[i];
    for (uint32_t sl = 0; sl < nsl; sl++) x += red[((size_t)sl * GQ + h) * D + c];
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
  a->fast = at_fast(*a, g);
  return 0;
}

/* Spans of whole chunks. The CUDA blocks run in waves of `slots` (three
 * per SM fit at g <= 4, two at g = 8); a step takes about (waves) x (span
 * + one chunk of fixed cost per block), so take the split count that
 * minimizes that among 1 .. 16 waves' worth (fewer splits on ties: less
 * for the combine kernel to read). */
static int at_plan(const at_args &a, uint32_t n_seqs, uint32_t n_kv, uint32_t max_tokens, uint32_t nsm,
                   uint32_t *span_out, uint32_t *splits_out)
{
  const uint64_t pairs = (uint64_t)(n_seqs ? n_seqs : 1) * n_kv;
  const uint64_t slots = (uint64_t)(a.nq / n_kv >= 8 ? 2u : 3u) * (nsm ? nsm : 1);
  const uint64_t T = max_tokens ? max_tokens : 1;
  uint64_t best_span = 0, best_splits = 0, best_cost = ~0ull;
  const uint64_t hi = (16u * slots + pairs - 1u) / pairs;
  for (uint64_t want = 1; want <= hi; want++) {
    uint64_t span = (T + want - 1u) / want;
    span = (span + a.ct - 1u) / a.ct * a.ct;
    const uint64_t splits = (T + span - 1u) / span;
    if (splits != want && want > 1) continue; /* the same plan as a smaller want */
    const uint64_t cost = (splits * pairs + slots - 1u) / slots * (span + a.ct);
    if (cost < best_cost) { best_cost = cost; best_span = span; best_splits = splits; }
  }
  if (best_splits > 65535u || best_span > 0xffffffffu) return -EINVAL;
  *span_out = (uint32_t)best_span;
  *splits_out = (uint32_t)best_splits;
  return 0;
}

#endif
