/* SPDX-License-Identifier: MIT */
/* Decode attention on tensor cores (sm_80+), for the common shape: head
 * dim 128, GQA groups of 1, 2 or 4 query heads, keys and values at 2 or 4
 * bits, G 16, 32 or 64, v_group a multiple of 32. attn.cu launches it
 * instead of kvs_attn_kernel where at_tc_ok says so; the split-K plan,
 * the workspace and the combine are the same. Design (HACKING.md
 * Decision 45):
 *
 * A warp owns whole blocks (tiles of 16 tokens) of its CUDA block's span
 * and keeps its own online softmax, whose running max moves only when a
 * score passes it by more than TC_LAZY; the four warps meet at the end.
 * Scores: S^T = K Q'^T as integer mma.m16n8k32 (codes u8 x digits s8,
 * s32 accumulate), the 16 tokens as rows, the 8 columns holding the g
 * queries twice: per block and query, q'_c = q_c scale_c is rounded to
 * an integer Q_c = rn(q'_c / S) with |Q| <= 32000 (S = max_c |q'_c| /
 * 32000: 15 bits relative to the block's largest product), split into a
 * high digit (columns 0-3) and a low one (4-7), so the products are
 * exact and one mma takes 32 channels:
 *   q . k = S (256 sum_c hi_c code_c + sum_c lo_c code_c) + sum_c q_c min_c.
 * The A operand is the codes themselves, one byte each (a shift and a
 * mask per 4 codes). The head dimension is a sum, so its order is free:
 * the channels of a thread's A bytes are those its codes already sit in,
 * and Q's digits follow that order. Values: O^T = V^T P'^T, dims as rows
 * (8 tiles of 16), tokens as k, in bf16 (p' spans far more than fp16's
 * exponent range) with p' = p scale_t 2^B split into a bf16 high part
 * and the rest, the codes as bf16 1 + code / 2^B (one shift and one
 * masked OR per pair), and
 *   sum_t p_t (min_t + s_t code) = sum_t p'_t (1 + code / 2^B)
 *                                  + sum_t p_t (min_t - 2^B s_t)
 * with the second sum (per query and value group) kept apart. Each
 * m-tile's rows lie in one value group (v_group a multiple of 32), so
 * the group's scale can ride on the B operand. (Integers do not suit the
 * values: p' changes scale every tile, and the int32 sums would need
 * converting and rescaling per tile.)
 *
 * Tiles holding a sink row, residual tokens or the end of the sequence
 * go through a scalar path (every row located at once; scores two lanes
 * a row, values into a per-warp fp32 accumulator kept at its own running
 * max); sparse
 * outliers correct scores and that accumulator with raw - dequantized,
 * as kvs_attn_kernel does (which is the faster of the two for them: see
 * at_tc_ok). No 16-bit K or V is written anywhere.
 *
 * A fast tile's codes are loaded one tile ahead: into registers, or at 2
 * bits into shared-memory stages by cp.async (tc_cfg, tc_stage). */
#ifndef KVS_KERNELS_ATTN_TC_CUH
#define KVS_KERNELS_ATTN_TC_CUH

#include "kernels/attn_dev.cuh"

#define TC_NW 4    /* warps per CUDA block */
#ifndef TC_SHARED
#define TC_SHARED __shared__ /* the CPU emulation makes them statics */
#endif
#define TC_D 128   /* head dim */
#define TC_LAZY 8.f /* how far a score may pass the running max before it moves */
/* Codes through shared-memory stages (cp.async, tc_stage) and 4 CUDA
 * blocks per SM (128 registers) for 2-bit keys and values; the other
 * widths load into registers with 3 blocks per SM (168 registers).
 * Measured (H200, HACKING Decision 45): 2 bits 32k x 64 1,028 -> 919 us,
 * 64k x 64 1,914 -> 1,729; 4 bits with stages were the same or slower (up
 * to 16 %) and spill with 4 blocks; stages with 3 blocks are slower at
 * both widths (the registers they free are what pays). */
template <int KB, int VB> struct tc_cfg {
  static constexpr bool CP = KB == 2 && VB == 2;
  static constexpr int MINB = CP ? 4 : 3;
};

#ifndef KVS_ATTN_EMU
/* D += A B, m16n8k16, A row-major bf16 (4 registers), B column-major
 * (2), D fp32 (4): the PTX fragment layouts. */
static __device__ __forceinline__ void tc_mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1)
{
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}
/* D += A B, m16n8k32, A row-major u8 (4 registers of 4), B column-major
 * s8 (2), D s32 (4): exact integer products. */
static __device__ __forceinline__ void tc_mma8(int (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1)
{
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  asm("mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}
static __device__ __forceinline__ uint32_t tc_perm(uint32_t x, uint32_t y, uint32_t s) { return __byte_perm(x, y, s); }
/* 16 bytes global -> shared without registers (cp.async, sm_80+), and the
 * groups that say when they have landed */
static __device__ __forceinline__ void tc_cp16(void *dst, const void *src)
{
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"((uint32_t)__cvta_generic_to_shared(dst)), "l"(src)
               : "memory");
#endif
}
static __device__ __forceinline__ void tc_cp_commit()
{
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
/* all but the newest group have landed (for this thread) */
static __device__ __forceinline__ void tc_cp_wait1()
{
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group 1;\n" ::: "memory");
#endif
}
/* two floats to a bf16 pair, round to nearest even (lo in the low half) */
static __device__ __forceinline__ uint32_t tc_bf2(float lo, float hi)
{
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t *>(&v);
}
#endif
/* 2^x for the softmax, x <= TC_LAZY: the hardware's approximation
 * (relative error about 2^-22, results under 2^-126 flushed to 0)
 * without exp2f's range fix-up around it */
static __device__ __forceinline__ float tc_ex2(float x)
{
#ifdef KVS_ATTN_EMU
  return exp2f(x);
#else
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
  return r;
#endif
}
static __device__ __forceinline__ float tc_lo(uint32_t u) { return __uint_as_float(u << 16); }
static __device__ __forceinline__ float tc_hi(uint32_t u) { return __uint_as_float(u & 0xffff0000u); }
/* x0, x1 as a bf16 pair: the high parts, or (lo) what they leave */
static __device__ __forceinline__ uint32_t tc_split(float x0, float x1, bool lo)
{
  const uint32_t h = tc_bf2(x0, x1);
  return lo ? tc_bf2(x0 - tc_lo(h), x1 - tc_hi(h)) : h;
}
/* Pair e of x as bf16 1 + code / 2^B: low half from code e of x's low
 * 16 bits, high half from code e of its high 16 bits (codes B bits
 * apart); bits of other codes fall outside the mask for every e. `one`
 * is 0x3f803f80 in a register the compiler cannot see through, so that
 * mask-and-or is one LOP3 (with both as immediates it takes two). */
template <int B>
static __device__ __forceinline__ uint32_t tc_pair(uint32_t x, int e, uint32_t one)
{
  constexpr int top = 7 - B;
  constexpr uint32_t m = ((1u << B) - 1u) << top, mask = m | (m << 16);
  const int sh = top - B * e;
  const uint32_t y = sh >= 0 ? x << sh : x >> -sh;
#ifdef KVS_ATTN_EMU
  return (y & mask) | one;
#else
  uint32_t r;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(r) : "r"(y), "n"(mask), "r"(one));
  return r;
#endif
}

/* 16-bit word h (0-3) of v, without indexing memory */
static __device__ __forceinline__ uint16_t tc_half(uint2 v, uint32_t h)
{
  return (uint16_t)((h < 2u ? v.x : v.y) >> (16u * (h & 1u)));
}

/* The queries in shared memory, [4][128] with rows 176 floats apart and
 * 4 more after every 32 channels: q' (once per block) reads 8 channels
 * of one query as two 16-byte loads, and each quarter-warp's loads fall
 * in 8 different 16-byte bank groups. */
#define TC_QR 176u
#define TC_QN (3u * TC_QR + TC_D + 12u)
static __device__ __forceinline__ uint32_t tc_qx(uint32_t qi, uint32_t c) { return qi * TC_QR + c + 4u * (c >> 5); }

struct tc_row { /* a row of a tile the scalar way (tc_rows) */
  const uint8_t *data;  /* its block (quantized rows) */
  const uint16_t *k, *v; /* 16-bit K and V (sink rows, the residual), else NULL */
  uint32_t r, ok;       /* row in the block; before t1 */
};

struct __align__(16) tc_warp { /* one warp's shared memory */
  float sc[4][16];         /* scores, then probabilities [query][token] */
  float al[4], wm[4];      /* this tile's rescale and running max per query */
  float qm[4], mx[4];      /* key constant of the block; max xacc is kept at */
  float qk[4];             /* the block's score per unit of the integer q' (tc_qprime) */
  float wb[4][4];          /* value constants [query][piece] */
  float xacc[4][TC_D];     /* scalar-path and outlier sums [query][channel] */
  uint4 ks[32];            /* register path: a block's key scales (lanes 0-15) and mins (16-31) of the head */
  uint2 vs[2][16];         /* a tile's value scales [0] and mins [1] of the head's groups, per row */
  tc_row rows[16];         /* a scalar tile's rows */
};

/* Shapes the tensor-core kernel can take (g: query heads per KV head).
 * It handles sparse outliers, but kvs_attn_kernel is faster with them
 * (H200, 32k x 8, 1 %: 1,350 against 1,716 us), so attn.cu sends them
 * there unless told otherwise (outliers = true). Its outlier code stays:
 * without it the compiler schedules the common path 13-20 % slower
 * (measured, same GPU, same run). */
static inline bool at_tc_ok(const at_args &a, uint32_t g, bool outliers)
{
  if (!outliers && (a.nko || a.nvo)) return false;
  return a.D == TC_D && (g == 1 || g == 2 || g == 4) && (a.kb == 2 || a.kb == 4) && (a.vb == 2 || a.vb == 4) &&
         a.G % 16u == 0 && 128u % a.G == 0 && (a.vg % TC_D == 0 || a.vg == 32u || a.vg == 64u) &&
         a.ct % 16u == 0;
}

/* The channels of a thread's 4 value pieces (4 channels each) within the
 * head: whole-head value groups (L1) give 16 consecutive channels per
 * thread group g; else piece i lies in the 32-channel chunk i. */
template <bool L1>
static __device__ __forceinline__ uint32_t tc_base(uint32_t g, int i)
{
  return L1 ? 16u * g + 4u * i : 32u * i + 4u * g;
}

/* Keys of a fast tile as integers: acc[m & 1] += codes x digits of q'
 * (tc_qprime) for mma m, rows g and g + 8 (k0: row g's 32 channels of
 * this thread, k1: row g + 8's). The A operand is the codes themselves,
 * one byte each, 4 a register: at 2 bits mma m takes codes m, m + 4,
 * m + 8, m + 12 of each 16-code word (a shift and a mask), at 4 bits word
 * m's even codes, then its odd ones. */
template <int KB>
static __device__ __forceinline__ void tc_keys(const uint32_t (&k0)[4], const uint32_t (&k1)[4],
                                               const uint32_t (&qb)[4][2], int (&acc)[2][4])
{
  constexpr uint32_t M = KB == 2 ? 0x03030303u : 0x0f0f0f0fu;
#pragma unroll
  for (int m = 0; m < 4; m++) {
    uint32_t a[4];
    if (KB == 2) {
      a[0] = (k0[0] >> (2 * m)) & M;
      a[1] = (k1[0] >> (2 * m)) & M;
      a[2] = (k0[1] >> (2 * m)) & M;
      a[3] = (k1[1] >> (2 * m)) & M;
    } else {
      a[0] = k0[m] & M;
      a[1] = k1[m] & M;
      a[2] = (k0[m] >> 4) & M;
      a[3] = (k1[m] >> 4) & M;
    }
    tc_mma8(acc[m & 1], a, qb[m][0], qb[m][1]);
  }
}

/* q' of a block for this thread's B fragments, as integers: per query,
 * Q_c = rn(q_c scale_c / S) with S = max_c |q_c scale_c| / 32000, so
 * |Q_c| <= 32000 splits into two s8 digits, hi = (Q + 128) >> 8
 * (columns 0-3: query g) and lo = Q - 256 hi (columns 4-7), and
 *   q . k = S (256 sum_c hi_c code_c + sum_c lo_c code_c) + sum_c q_c min_c.
 * S into X.qk, the last sum into X.qm. With R = Q + 128, hi is R's byte 1
 * and lo its byte 0 ^ 0x80: byte permutes pack them. Lanes g and g + 4
 * (lane ^ 16) need the same Q: each makes 16 of the 32 channels' digits,
 * both kinds, and hands its partner the kind it needs. */
template <int KB>
static __device__ __forceinline__ void tc_qprime(uint32_t g, uint32_t t, const float *qs, const uint4 *ks,
                                                 uint32_t (&qb)[4][2], tc_warp &X)
{
  const uint32_t qi = g & 3u;
  const bool lo = g >= 4u;
  float x[16], qm = 0.f, mx = 0.f;
#pragma unroll
  for (int i = 0; i < 2; i++) {
    const uint32_t o = (lo ? 2u : 0u) + i; /* this lane's octets: channels 32t + 16 lo .. + 15 */
    const uint4 su = ks[4u * t + o], mu = ks[16u + 4u * t + o];
    const uint16_t *sc = (const uint16_t *)&su, *mn = (const uint16_t *)&mu;
    const float4 *q4 = (const float4 *)&qs[tc_qx(qi, 32u * t + 8u * o)];
    const float4 qa = q4[0], qc = q4[1];
    const float qq[8] = {qa.x, qa.y, qa.z, qa.w, qc.x, qc.y, qc.z, qc.w};
#pragma unroll
    for (int e = 0; e < 8; e++) {
      x[8 * i + e] = qq[e] * f16f(sc[e]);
      qm = fmaf(qq[e], f16f(mn[e]), qm);
      mx = fmaxf(mx, fabsf(x[8 * i + e]));
    }
  }
  mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 16));
  mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
  mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
  const float inv = mx > 1e-30f ? 32000.f / mx : 0.f;
  /* R = rn(x inv) + 128 in the low 16 bits of a float in [2^23, 2^24),
   * whose unit is 1: adding 1.5 * 2^23 rounds to an integer (to nearest
   * even, as cvt.rni) without a conversion instruction */
  int r[16];
#pragma unroll
  for (int c = 0; c < 16; c++) r[c] = __float_as_int(fmaf(x[c], inv, 12582912.f + 128.f));
#pragma unroll
  for (int j = 0; j < 4; j++) {
    /* slot j: 2 bits, b0 (lo: b1) of mma j, channels 4i + j; 4 bits, b(j & 1) of
     * mma j / 2 (lo: + 2), channels 8 (j / 2) + 2i + (j & 1) */
    int ch[4];
#pragma unroll
    for (int i = 0; i < 4; i++) ch[i] = KB == 2 ? 4 * i + j : 8 * (j >> 1) + 2 * i + (j & 1);
    const uint32_t t01 = tc_perm((uint32_t)r[ch[0]], (uint32_t)r[ch[1]], 0x5140u);
    const uint32_t t23 = tc_perm((uint32_t)r[ch[2]], (uint32_t)r[ch[3]], 0x5140u);
    const uint32_t hw = tc_perm(t01, t23, 0x7632u), lw = tc_perm(t01, t23, 0x5410u) ^ 0x80808080u;
    const uint32_t own = lo ? lw : hw, got = __shfl_xor_sync(0xffffffffu, lo ? hw : lw, 16);
    if (KB == 2) {
      qb[j][0] = lo ? got : own;
      qb[j][1] = lo ? own : got;
    } else {
      qb[j >> 1][j & 1] = lo ? got : own;
      qb[2 + (j >> 1)][j & 1] = lo ? own : got;
    }
  }
  qm += __shfl_xor_sync(0xffffffffu, qm, 16);
  qm += __shfl_xor_sync(0xffffffffu, qm, 1);
  qm += __shfl_xor_sync(0xffffffffu, qm, 2);
  if (t == 0 && g < 4u) {
    X.qm[g] = qm;
    X.qk[g] = mx * (1.f / 32000.f);
  }
}

/* Values of a fast tile. vr[i]: token 4t + i's codes of this thread's
 * pieces (L1: all 16 channels, 64 or 32 bits; else piece p in bits
 * 16p (4 bits) or 8p (2 bits) of a 64-bit word); pb: B fragments per
 * piece. */
template <int VB, bool L1>
static __device__ __forceinline__ void tc_values(const uint2 (&vr)[4], const uint32_t (&pb)[4][2], uint32_t one,
                                                 float (&o)[8][4])
{
#pragma unroll
  for (int i = 0; i < 4; i++) {
    uint32_t x01, x23; /* piece i of tokens (4t, 4t+1) and (4t+2, 4t+3), A low, B high */
    if (VB == 4) {
      const uint32_t sel = (i & 1) ? 0x7632u : 0x5410u; /* piece i: half i & 1 of word i / 2 */
      x01 = tc_perm(i < 2 ? vr[0].x : vr[0].y, i < 2 ? vr[1].x : vr[1].y, sel);
      x23 = tc_perm(i < 2 ? vr[2].x : vr[2].y, i < 2 ? vr[3].x : vr[3].y, sel);
    } else {
      const uint32_t sel = (uint32_t)i * 0x1111u + 0x4400u; /* bytes: A.i A.i B.i B.i */
      x01 = tc_perm(vr[0].x, vr[1].x, sel);
      x23 = tc_perm(vr[2].x, vr[3].x, sel);
    }
    const int pi = L1 ? 0 : i;
#pragma unroll
    for (int u = 0; u < 2; u++) {
      const uint32_t a[4] = {tc_pair<VB>(x01, 2 * u, one), tc_pair<VB>(x01, 2 * u + 1, one), tc_pair<VB>(x23, 2 * u, one),
                             tc_pair<VB>(x23, 2 * u + 1, one)};
      tc_mma(o[2 * i + u], a, pb[pi][0], pb[pi][1]);
    }
  }
}

/* Bring the warp's xacc to the running maxima in wm (lane: channels
 * 4 lane .. 4 lane + 3). */
static __device__ __forceinline__ void tc_xsync(tc_warp &X, uint32_t lane)
{
#pragma unroll
  for (int q = 0; q < 4; q++) {
    const float m = X.wm[q], mo = X.mx[q];
    if (mo != m) {
      const float f = mo == -INFINITY ? 0.f : exp2f(mo - m);
#pragma unroll
      for (int e = 0; e < 4; e++) X.xacc[q][4u * lane + e] *= f;
    }
  }
  __syncwarp();
  if (lane < 4u) X.mx[lane] = X.wm[lane];
  __syncwarp();
}

/* Where each row of a tile the scalar way lies (tc_rows): lane i < 16
 * looks token tb + i up once; rows past t1 repeat token tb's (their
 * probabilities are 0), so the loops below need no test per row. */
static __device__ __forceinline__ void tc_rows(const at_args &a, const kvs__attn_seq &S, uint32_t tb, uint32_t t1,
                                               uint32_t lane, tc_warp &X)
{
  if (lane < 16u) {
    const uint32_t tt = tb + lane, src = tt < t1 ? tt : tb, nbt = S.n_blocks * a.G;
    at_cur cur = {0xffffffffu, {nullptr, nullptr, 0}};
    const at_tok k = locate(a, S, cur, src);
    tc_row R;
    R.data = k.data;
    R.r = k.r;
    R.ok = tt < t1;
    R.k = k.raw;
    R.v = !k.raw ? nullptr : k.data ? k.raw + a.C : S.res_v + (size_t)(src - nbt) * a.C;
    X.rows[lane] = R;
  }
  __syncwarp();
}

/* Scores of a tile the scalar way (sink rows, residual, the quantized
 * rows around them), all rows at once: lane 2i + h takes row i's
 * channels 64h .. 64h + 63; -inf past t1. */
template <int KB>
static __device__ __forceinline__ void tc_keys_slow(const at_args &a, uint32_t j, uint32_t lane, const float *qs,
                                                    tc_warp &X)
{
  const uint32_t i = lane >> 1, h = lane & 1u, c0 = j * TC_D + 64u * h;
  const tc_row R = X.rows[i];
  float part[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll(KB == 2 ? 1 : 2) /* registers: measured best (HACKING Decision 45) */
  for (uint32_t o = 0; o < 8u; o++) {
    float x[8];
    if (R.k) {
      const uint4 u = *(const uint4 *)(R.k + c0 + 8u * o);
      const uint16_t *hv = (const uint16_t *)&u;
#pragma unroll
      for (int e = 0; e < 8; e++) x[e] = h2f(hv[e], a.dt);
    } else {
      const uint8_t *row = R.data + a.kcodes + (size_t)R.r * a.kstride;
      const uint4 su = *(const uint4 *)((const uint16_t *)(R.data + a.kscale) + c0 + 8u * o);
      const uint4 mu = *(const uint4 *)((const uint16_t *)(R.data + a.kmin) + c0 + 8u * o);
      const uint16_t *sc = (const uint16_t *)&su, *mn = (const uint16_t *)&mu;
      /* 8 codes: 16 bits (2-bit) or 32 (4-bit) */
      const uint32_t w = KB == 2 ? (uint32_t)((const uint16_t *)row)[(c0 + 8u * o) >> 3]
                                 : ((const uint32_t *)row)[(c0 + 8u * o) >> 3];
#pragma unroll
      for (int e = 0; e < 8; e++) x[e] = f16f(mn[e]) + (float)((w >> (KB * e)) & ((1u << KB) - 1u)) * f16f(sc[e]);
    }
#pragma unroll
    for (int q = 0; q < 4; q++) {
      const float4 *q4 = (const float4 *)&qs[tc_qx((uint32_t)q, 64u * h + 8u * o)];
      const float4 qa = q4[0], qc = q4[1];
      part[q] = fmaf(qa.x, x[0], fmaf(qa.y, x[1], fmaf(qa.z, x[2], fmaf(qa.w, x[3], part[q]))));
      part[q] = fmaf(qc.x, x[4], fmaf(qc.y, x[5], fmaf(qc.z, x[6], fmaf(qc.w, x[7], part[q]))));
    }
  }
#pragma unroll
  for (int q = 0; q < 4; q++) part[q] += __shfl_xor_sync(0xffffffffu, part[q], 1);
  if (h == 0u)
#pragma unroll
    for (int q = 0; q < 4; q++) X.sc[q][i] = R.ok ? part[q] : -INFINITY;
}

/* Values of a tile the scalar way, into xacc (already at wm): lane l
 * takes channels 4l .. 4l + 3 of every row (rows past t1 have p = 0). */
template <int VB>
static __device__ __forceinline__ void tc_values_slow(const at_args &a, uint32_t j, uint32_t lane, uint32_t gq,
                                                      tc_warp &X)
{
  const uint32_t c0 = j * TC_D + 4u * lane, ng = a.C / a.vg, gi = c0 / a.vg; /* 4 channels, one group */
  float acc[4][4] = {};
#pragma unroll 1
  for (uint32_t i = 0; i < 16u; i++) {
    const tc_row R = X.rows[i];
    float x[4];
    if (R.v) {
      const uint2 u = *(const uint2 *)(R.v + c0);
      x[0] = h2f((uint16_t)u.x, a.dt); x[1] = h2f((uint16_t)(u.x >> 16), a.dt);
      x[2] = h2f((uint16_t)u.y, a.dt); x[3] = h2f((uint16_t)(u.y >> 16), a.dt);
    } else {
      const uint8_t *row = R.data + a.vcodes + (size_t)R.r * a.vstride;
      const float s = f16f(((const uint16_t *)(R.data + a.vscale))[(size_t)R.r * ng + gi]);
      const float m = f16f(((const uint16_t *)(R.data + a.vmin))[(size_t)R.r * ng + gi]);
      const uint32_t w = VB == 2 ? (uint32_t)row[c0 >> 2] : (uint32_t)((const uint16_t *)row)[c0 >> 2];
#pragma unroll
      for (int e = 0; e < 4; e++) x[e] = m + (float)((w >> (VB * e)) & ((1u << VB) - 1u)) * s;
    }
#pragma unroll
    for (int q = 0; q < 4; q++) {
      const float p = (uint32_t)q < gq ? X.sc[q][i] : 0.f;
#pragma unroll
      for (int e = 0; e < 4; e++) acc[q][e] = fmaf(p, x[e], acc[q][e]);
    }
  }
#pragma unroll
  for (int q = 0; q < 4; q++)
#pragma unroll
    for (int e = 0; e < 4; e++) X.xacc[q][4u * lane + e] += acc[q][e];
}

/* Sparse outliers of a tile's quantized rows: keys correct the scores
 * (before the softmax), values xacc (after it; xacc at wm). */
template <int B, bool KEYS>
static __device__ __forceinline__ void tc_outliers(const at_args &a, const kvs__attn_seq &S, uint32_t j, uint32_t tb,
                                                   uint32_t t1, uint32_t lane, uint32_t gq, const float *qs,
                                                   tc_warp &X, int *st)
{
  const uint32_t nbt = S.n_blocks * a.G, no = KEYS ? a.nko : a.nvo, ng = a.C / a.vg;
  at_cur cur = {0xffffffffu, {nullptr, nullptr, 0}};
  for (uint32_t idx = lane; idx < 16u * no; idx += 32u) {
    const uint32_t i = idx / no, m = idx - i * no, tt = tb + i;
    if (tt >= t1 || tt >= nbt) continue;
    const at_tok k = locate(a, S, cur, tt);
    if (k.raw) continue;
    const uint32_t en = ((const uint32_t *)(k.data + (KEYS ? a.kout : a.vout)))[(size_t)k.r * no + m];
    const uint32_t c = en & 0xffffu;
    if (c >= a.C) { atomicMin(st, -EINVAL); continue; }
    if (c < j * TC_D || c >= j * TC_D + TC_D) continue;
    float dq;
    if (KEYS) {
      const uint32_t code = code_at(k.data + a.kcodes + (size_t)k.r * a.kstride, c, B);
      dq = f16f(((const uint16_t *)(k.data + a.kmin))[c]) + (float)code * f16f(((const uint16_t *)(k.data + a.kscale))[c]);
    } else {
      const uint16_t *vs = (const uint16_t *)(k.data + a.vscale) + (size_t)k.r * ng;
      const uint16_t *vm = (const uint16_t *)(k.data + a.vmin) + (size_t)k.r * ng;
      dq = f16f(vm[c / a.vg]) + (float)code_at(k.data + a.vcodes + (size_t)k.r * a.vstride, c, B) * f16f(vs[c / a.vg]);
    }
    const float dx = h2f((uint16_t)(en >> 16), a.dt) - dq;
    for (uint32_t q = 0; q < gq; q++) {
      if (KEYS) atomicAdd(&X.sc[q][i], qs[tc_qx(q, c - j * TC_D)] * dx);
      else atomicAdd(&X.xacc[q][c - j * TC_D], X.sc[q][i] * dx);
    }
  }
}

/* Where a warp's tile lies: its block's data and sink mask, read a tile
 * ahead of the loads that need them (so nothing waits on a chain of two
 * global loads). */
struct tc_view {
  const uint8_t *data;
  uint64_t mask;
};
/* Staged path (tc_cfg::CP): a fast tile's codes (and its block's key
 * scales) come into shared memory by cp.async while the tile before it is
 * computed, one stage per tile in turn (two a warp); only what the loop
 * needs to steer stays in registers. Stage layout: key codes [16 rows][16 KB bytes] (the head's
 * slice, rows in order), value codes [16][16 VB] with row 4t + i in slot
 * 4i + t (so that a value read, row 4t + i of every thread t, falls in
 * distinct banks), then the block's key scales (lanes 0-15) and mins
 * (16-31) of the head as 32 x 16 bytes (newblk). */
template <int KB, int VB> struct tc_stage {
  static constexpr uint32_t K = 0, V = 256u * KB, KS = 256u * (KB + VB), BYTES = 256u * (KB + VB) + 512u;
};
struct tc_pre {
  uint32_t tb, b, r0;
  bool fast, newblk;
  uint2 vs;              /* the tile's value scales or mins of one row */
  /* without stages (register path): the codes themselves */
  uint32_t k0[4], k1[4]; /* key codes of rows g and g + 8 (this thread's 32 channels) */
  uint2 vr[4];           /* value codes of rows 4t .. 4t + 3 (this thread's pieces) */
  uint4 ks;              /* the block's key scales or mins (newblk) */
};

/* Constants of a CUDA block's loads, computed once (no division per tile).
 * Offsets within a block are 32-bit (a block is far below 4 GiB): a
 * tile's addresses are then one 32-bit multiply-add and one wide add each,
 * not 64-bit arithmetic per row. */
struct tc_geo {
  uint32_t gsh;   /* log2 G */
  uint32_t ng;    /* value groups per row */
  uint32_t g0;    /* the head's first value group */
  uint32_t one;   /* 0x3f803f80, opaque (tc_pair) */
  uint32_t koff, voff, vsoff, ksoff; /* this lane's sources in a block (row r0 = 0) */
  uint32_t kd, vd;                   /* and its destinations in a stage (register path: unused) */
  uint32_t kst, vst, vsst;           /* bytes per row: key codes, value codes, value scales */
};

/* This thread's 32 channels of key rows g (at r) and g + 8 (at r8), the
 * codes of the mma's A operand; from global memory or a stage. */
template <int KB>
static __device__ __forceinline__ void tc_krows(const uint8_t *r, const uint8_t *r8, uint32_t (&k0)[4],
                                                uint32_t (&k1)[4])
{
  if (KB == 4) {
    const uint4 x0 = *(const uint4 *)r, x1 = *(const uint4 *)r8;
    k0[0] = x0.x; k0[1] = x0.y; k0[2] = x0.z; k0[3] = x0.w;
    k1[0] = x1.x; k1[1] = x1.y; k1[2] = x1.z; k1[3] = x1.w;
  } else {
    const uint2 x0 = *(const uint2 *)r, x1 = *(const uint2 *)r8;
    k0[0] = x0.x; k0[1] = x0.y; k0[2] = k0[3] = 0u;
    k1[0] = x1.x; k1[1] = x1.y; k1[2] = k1[3] = 0u;
  }
}
/* Thread group g's value codes of the head's row at r (L1, all 16
 * channels; else piece p in bits 16p (4 bits) or 8p (2 bits)). */
template <int VB, bool L1>
static __device__ __forceinline__ uint2 tc_vrow(const uint8_t *r, uint32_t g)
{
  if (L1) return VB == 4 ? *(const uint2 *)(r + 8u * g) : make_uint2(*(const uint32_t *)(r + 4u * g), 0u);
  if (VB == 4)
    return make_uint2((uint32_t)*(const uint16_t *)(r + 2u * g) | (uint32_t)*(const uint16_t *)(r + 16u + 2u * g) << 16,
                      (uint32_t)*(const uint16_t *)(r + 32u + 2u * g) | (uint32_t)*(const uint16_t *)(r + 48u + 2u * g) << 16);
  return make_uint2((uint32_t)r[g] | (uint32_t)r[8u + g] << 8 | (uint32_t)r[16u + g] << 16 | (uint32_t)r[24u + g] << 24, 0u);
}

/* Start a tile's loads (fast tiles only). CP: copies into stage stg, 16
 * bytes a lane per 2 bits of keys and of values, the key scales on a new
 * block; else into P's registers. */
template <int KB, int VB, bool L1, bool CP>
static __device__ __forceinline__ void tc_load(const at_args &a, const tc_geo &ge, uint32_t tb, uint32_t nbt,
                                               const tc_view &v, uint32_t lane, uint32_t &lastb, uint8_t *stg,
                                               tc_pre &P)
{
  typedef tc_stage<KB, VB> SG;
  P.tb = tb;
  P.fast = tb + 16u <= nbt && v.data;
  if (P.fast) {
    P.b = tb >> ge.gsh;
    P.r0 = tb & (a.G - 1u);
    P.fast = ((v.mask >> P.r0) & 0xffffull) == 0;
  }
  P.newblk = false;
  if (!P.fast) return;
  const uint8_t *data = v.data;
  const uint32_t r0 = P.r0;
  const uint32_t ko = ge.koff + r0 * ge.kst, vo = ge.voff + r0 * ge.vst;
  if (CP) {
    tc_cp16(stg + SG::K + ge.kd, data + ko);
    if (KB == 4) tc_cp16(stg + SG::K + ge.kd + 512u, data + (ko + 8u * ge.kst));
    tc_cp16(stg + SG::V + ge.vd, data + vo);
    if (VB == 4) tc_cp16(stg + SG::V + ge.vd + 128u, data + (vo + 8u * ge.vst));
  } else {
    tc_krows<KB>(data + ko, data + (ko + 8u * ge.kst), P.k0, P.k1);
#pragma unroll
    for (int i = 0; i < 4; i++) P.vr[i] = tc_vrow<VB, L1>(data + (vo + (uint32_t)i * ge.vst), lane >> 2);
  }
  /* value scales (lanes 0-15) and mins (16-31) of row r0 + lane % 16: the head's groups */
  {
    const uint16_t *vp = (const uint16_t *)(data + (ge.vsoff + r0 * ge.vsst));
    if (L1) P.vs = make_uint2(*vp, 0u);
    else if (a.vg == 64u) P.vs = make_uint2(*(const uint32_t *)vp, 0u);
    else P.vs = *(const uint2 *)vp;
  }
  if (P.b != lastb) {
    lastb = P.b;
    P.newblk = true;
    if (CP) tc_cp16(stg + SG::KS + 16u * lane, data + ge.ksoff);
    else P.ks = *(const uint4 *)(data + ge.ksoff);
  }
}

/* A fast tile's codes from its stage: keys of rows g and g + 8 (this
 * thread's 32 channels), values of rows 4t .. 4t + 3 (its pieces: L1, all
 * 16 channels; else piece p in bits 16p (4 bits) or 8p (2 bits)). */
template <int KB, int VB>
static __device__ __forceinline__ void tc_keys_in(const uint8_t *stg, uint32_t g, uint32_t t, uint32_t (&k0)[4],
                                                  uint32_t (&k1)[4])
{
  constexpr uint32_t R = 16u * KB; /* bytes a row */
  const uint8_t *sk = stg + tc_stage<KB, VB>::K + 4u * KB * t; /* 32 channels */
  tc_krows<KB>(sk + R * g, sk + R * (g + 8u), k0, k1);
}
template <int KB, int VB, bool L1>
static __device__ __forceinline__ void tc_values_in(const uint8_t *stg, uint32_t g, uint32_t t, uint2 (&vr)[4])
{
  constexpr uint32_t R = 16u * VB; /* bytes a row */
#pragma unroll
  for (int i = 0; i < 4; i++) vr[i] = tc_vrow<VB, L1>(stg + tc_stage<KB, VB>::V + (4u * i + t) * R, g);
}

template <int KB, int VB, bool L1>
static __global__ void __launch_bounds__(TC_NW * 32, tc_cfg<KB, VB>::MINB)
kvs_attn_tc(at_args a, const kvs__attn_seq *seqs, const float *q, float *ws_acc, float *ws_ml, int *st)
{
  TC_SHARED __align__(16) float qs[TC_QN];
  TC_SHARED tc_warp W[TC_NW];
  TC_SHARED float fm[TC_NW][4], fl[TC_NW][4];
  constexpr bool CP = tc_cfg<KB, VB>::CP;
  TC_SHARED __align__(16) uint8_t stg[TC_NW][2][CP ? tc_stage<KB, VB>::BYTES : 16u];
  const uint32_t split = blockIdx.x, j = blockIdx.y, si = blockIdx.z, tid = threadIdx.x;
  const uint32_t lane = tid & 31u, w = tid >> 5, g = lane >> 2, t = lane & 3u, gq = a.nq / gridDim.y;
  const kvs__attn_seq S = seqs[si];
  const uint32_t nbt = S.n_blocks * a.G;
  uint32_t t0, t1;
  size_t part;
  if (!at_share(a, S, split, j, si, tid, gq, t0, t1, part, ws_ml, st)) return;
  tc_warp &X = W[w];
  const float *qh = q + ((size_t)si * a.nq + (size_t)j * gq) * TC_D;
  for (uint32_t i = tid; i < 4u * TC_D; i += TC_NW * 32u) qs[tc_qx(i / TC_D, i % TC_D)] = i / TC_D < gq ? qh[i] * a.qscale : 0.f;
  for (uint32_t i = lane; i < 4u * TC_D; i += 32u) X.xacc[i / TC_D][i % TC_D] = 0.f;
  if (lane < 4u) { X.mx[lane] = -INFINITY; X.wm[lane] = -INFINITY; }
  __syncthreads();

  const uint32_t tpb = a.G >> 4, ntile = (t1 - t0 + 15u) >> 4;
  uint32_t lg[4]; /* the value group of each piece among the head's */
#pragma unroll
  for (int i = 0; i < 4; i++) lg[i] = L1 ? 0u : 32u * i / a.vg;
  float o[8][4] = {}, bias[4] = {}, m_run = -INFINITY, l_run = 0.f;
  uint32_t qb[4][2] = {};

  /* this warp's tiles: the blocks w, w + 4, ... of the span, in order;
   * views two tiles ahead, copies one ahead, into two stages in turn */
  tc_geo ge;
  ge.gsh = 0;
  while ((1u << ge.gsh) < a.G) ge.gsh++;
  ge.ng = a.C / a.vg;
  ge.g0 = j * TC_D / a.vg;
  ge.one = 0x3f803f80u | (a.G >> 7); /* G <= 64: the constant, but not to the compiler */
  ge.kst = (uint32_t)a.kstride;
  ge.vst = (uint32_t)a.vstride;
  ge.vsst = 2u * ge.ng;
  /* the lane's 16 bytes: key row lane / KB, chunk lane % KB (and row + 8
   * at 4 bits); value row r = lane / VB into slot 4 (r % 4) + r / 4 */
  if (CP) {
    const uint32_t kr = lane / KB, vr = lane / VB;
    ge.koff = (uint32_t)a.kcodes + kr * ge.kst + j * (16u * KB) + 16u * (lane % KB);
    ge.kd = 16u * lane;
    ge.voff = (uint32_t)a.vcodes + vr * ge.vst + j * (16u * VB) + 16u * (lane % VB);
    ge.vd = (4u * (vr & 3u) + (vr >> 2)) * (16u * VB) + 16u * (lane % VB);
  } else { /* rows g (and g + 8) of the keys, 4t .. 4t + 3 of the values */
    ge.koff = (uint32_t)a.kcodes + g * ge.kst + j * (TC_D * KB / 8) + t * (32 * KB / 8);
    ge.voff = (uint32_t)a.vcodes + 4u * t * ge.vst + j * (TC_D * VB / 8);
    ge.kd = ge.vd = 0u;
  }
  ge.vsoff = (uint32_t)(lane < 16u ? a.vscale : a.vmin) + 2u * ((lane & 15u) * ge.ng + ge.g0);
  ge.ksoff = (uint32_t)(lane < 16u ? a.kscale : a.kmin) + 2u * (j * TC_D + 8u * (lane & 15u));
  auto next_k = [&](uint32_t k) { k++; return (k & (tpb - 1u)) ? k : k + (TC_NW - 1u) * tpb; };
  auto view_of = [&](uint32_t k) {
    tc_view v = {nullptr, 0};
    const uint32_t tb = t0 + 16u * k;
    if (k < ntile && tb + 16u <= nbt) {
      const kvs__attn_block bv = S.blocks[tb >> ge.gsh];
      v.data = (const uint8_t *)bv.data;
      v.mask = bv.sink_mask;
    }
    return v;
  };
  uint32_t kc = w * tpb, kn = next_k(kc), lastb = 0xffffffffu;
  tc_view vn = view_of(kn);
  tc_pre P0, P1;
  uint8_t *const s0 = stg[w][0], *const s1 = stg[w][1];
  if (kc < ntile) tc_load<KB, VB, L1, CP>(a, ge, t0 + 16u * kc, nbt, view_of(kc), lane, lastb, s0, P0);
  if (CP) tc_cp_commit();
  /* one tile: C computed (from stage cs) while N is copied (into ns);
   * false once the warp is done */
  auto step = [&](const tc_pre &C, tc_pre &N, const uint8_t *cs, uint8_t *ns) -> bool {
    if (kc >= ntile) return false;
    const uint32_t kn2 = next_k(kn);
    /* a block's later tiles share its view (next_k stays in the block) */
    const tc_view vn2 = (kn2 & (tpb - 1u)) ? vn : view_of(kn2);
    if (kn < ntile) tc_load<KB, VB, L1, CP>(a, ge, t0 + 16u * kn, nbt, vn, lane, lastb, ns, N);
    if (CP) {
      tc_cp_commit();
      tc_cp_wait1(); /* C's copies are in (this lane's; the warp's after the barrier) */
      __syncwarp();
    }
    const uint32_t tb = C.tb;
    const bool fast = C.fast;
    if (fast) {
      if (C.newblk) {
        if (!CP) {
          X.ks[lane] = C.ks;
          __syncwarp();
        }
        tc_qprime<KB>(g, t, qs, CP ? (const uint4 *)(cs + tc_stage<KB, VB>::KS) : X.ks, qb, X);
      }
      X.vs[lane >> 4][lane & 15u] = C.vs;
      __syncwarp();
      int acc[2][4] = {};
      {
        if (CP) {
          uint32_t k0[4], k1[4];
          tc_keys_in<KB, VB>(cs, g, t, k0, k1);
          tc_keys<KB>(k0, k1, qb, acc);
        } else {
          tc_keys<KB>(C.k0, C.k1, qb, acc);
        }
      }
      float c[4];
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int v = acc[0][e] + acc[1][e];
        const int u = (int)__shfl_xor_sync(0xffffffffu, (uint32_t)v, 2); /* lanes t < 2: the lo digits' sums */
        c[e] = (float)(v * 256 + u);
      }
      if (t < 2u) {
        const float qa = X.qm[2u * t], qc = X.qm[2u * t + 1u], sa = X.qk[2u * t], sc = X.qk[2u * t + 1u];
        X.sc[2u * t][g] = fmaf(c[0], sa, qa);
        X.sc[2u * t + 1u][g] = fmaf(c[1], sc, qc);
        X.sc[2u * t][g + 8u] = fmaf(c[2], sa, qa);
        X.sc[2u * t + 1u][g + 8u] = fmaf(c[3], sc, qc);
      }
    } else {
      tc_rows(a, S, tb, t1, lane, X);
      tc_keys_slow<KB>(a, j, lane, qs, X);
    }
    if (a.nko && tb < nbt) {
      __syncwarp();
      tc_outliers<KB, true>(a, S, j, tb, t1, lane, gq, qs, X, st);
    }
    __syncwarp();
    /* online softmax: lane takes query lane / 8, tokens lane % 8 and + 8.
     * The running max moves only when a score passes it by more than
     * TC_LAZY (log2 units; probabilities up to 2^TC_LAZY are fine in fp32
     * and bf16), so after the first tiles a tile takes one vote: no max
     * reduction, no rescale. l_run is this lane's part of its query's
     * sum (the 8 lanes are added at the end). */
    {
      const uint32_t ql = lane >> 3, i0 = lane & 7u;
      const float s0 = X.sc[ql][i0], s1 = X.sc[ql][i0 + 8u];
      const bool moved = __any_sync(0xffffffffu, fmaxf(s0, s1) > m_run + TC_LAZY);
      float al = 1.f;
      if (moved) {
        float mt = fmaxf(s0, s1);
        for (int off = 1; off < 8; off <<= 1) mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, off));
        const float mn = mt > m_run + TC_LAZY ? mt : m_run;
        al = mn == m_run ? 1.f : m_run == -INFINITY ? 0.f : tc_ex2(m_run - mn);
        l_run *= al;
        m_run = mn;
      }
      const float p0 = tc_ex2(s0 - m_run), p1 = tc_ex2(s1 - m_run);
      l_run += p0 + p1;
      __syncwarp();
      X.sc[ql][i0] = ql < gq ? p0 : 0.f;
      X.sc[ql][i0 + 8u] = ql < gq ? p1 : 0.f;
      if (moved && i0 == 0) { X.al[ql] = al; X.wm[ql] = m_run; }
      __syncwarp();
      if (moved && (X.al[0] != 1.f || X.al[1] != 1.f || X.al[2] != 1.f || X.al[3] != 1.f)) {
        const float a0 = X.al[(2u * t) & 3u], a1 = X.al[(2u * t + 1u) & 3u], ab = X.al[g & 3u];
#pragma unroll
        for (int mt = 0; mt < 8; mt++) { o[mt][0] *= a0; o[mt][1] *= a1; o[mt][2] *= a0; o[mt][3] *= a1; }
#pragma unroll
        for (int i = 0; i < 4; i++) bias[i] *= ab;
      }
    }
    if (fast) {
      /* B fragments: p' = p scale 2^B of tokens 4t .. 4t + 3 for query g & 3, per piece group */
      const float4 pv = *(const float4 *)&X.sc[g & 3u][4u * t];
      const float p[4] = {pv.x, pv.y, pv.z, pv.w};
      const bool lo = g >= 4u;
      uint32_t pb[4][2];
      uint2 su[4], mu[4];
#pragma unroll
      for (int i = 0; i < 4; i++) { su[i] = X.vs[0][4u * t + i]; mu[i] = X.vs[1][4u * t + i]; }
#pragma unroll
      for (int pi = 0; pi < (L1 ? 1 : 4); pi++) {
        float x[4];
#pragma unroll
        for (int i = 0; i < 4; i++) {
          const float s = f16f(tc_half(su[i], lg[pi])) * (float)(1u << VB);
          x[i] = p[i] * s;
          bias[pi] = fmaf(p[i], f16f(tc_half(mu[i], lg[pi])) - s, bias[pi]);
        }
        pb[pi][0] = tc_split(x[0], x[1], lo);
        pb[pi][1] = tc_split(x[2], x[3], lo);
      }
      if (CP) {
        uint2 vr[4];
        tc_values_in<KB, VB, L1>(cs, g, t, vr);
        tc_values<VB, L1>(vr, pb, ge.one, o);
      } else {
        tc_values<VB, L1>(C.vr, pb, ge.one, o);
      }
    }
    if (!fast || a.nvo) {
      tc_xsync(X, lane);
      if (!fast) tc_values_slow<VB>(a, j, lane, gq, X);
      if (a.nvo && tb < nbt) {
        __syncwarp();
        tc_outliers<VB, false>(a, S, j, tb, t1, lane, gq, qs, X, st);
      }
    }
    __syncwarp();
    kc = kn;
    kn = kn2;
    vn = vn2;
    return true;
  };
  while (step(P0, P1, s0, s1) && step(P1, P0, s1, s0)) {
  }

  /* this warp's sums into its xacc at its running max, then the warps meet */
  tc_xsync(X, lane);
#pragma unroll
  for (int i = 0; i < 4; i++) {
    bias[i] += __shfl_xor_sync(0xffffffffu, bias[i], 1);
    bias[i] += __shfl_xor_sync(0xffffffffu, bias[i], 2);
  }
  if (t == 0 && g < 4u)
#pragma unroll
    for (int i = 0; i < 4; i++) X.wb[g][i] = bias[i];
#pragma unroll
  for (int mt = 0; mt < 8; mt++)
#pragma unroll
    for (int e = 0; e < 4; e++) o[mt][e] += __shfl_xor_sync(0xffffffffu, o[mt][e], 2);
  __syncwarp();
  if (t < 2u) {
    const uint32_t q0 = 2u * t, q1 = q0 + 1u;
#pragma unroll
    for (int mt = 0; mt < 8; mt++) {
      const int pi = mt >> 1;
      const uint32_t d0 = tc_base<L1>(g, pi) + 2u * (mt & 1), d1 = d0 + 1u, bi = L1 ? 0u : (uint32_t)pi;
      if (q0 < gq) { X.xacc[q0][d0] += o[mt][0] + X.wb[q0][bi]; X.xacc[q0][d1] += o[mt][2] + X.wb[q0][bi]; }
      if (q1 < gq) { X.xacc[q1][d0] += o[mt][1] + X.wb[q1][bi]; X.xacc[q1][d1] += o[mt][3] + X.wb[q1][bi]; }
    }
  }
  for (int off = 1; off < 8; off <<= 1) l_run += __shfl_xor_sync(0xffffffffu, l_run, off);
  if ((lane & 7u) == 0) { fm[w][lane >> 3] = m_run; fl[w][lane >> 3] = l_run; }
  __syncthreads();
  for (uint32_t i = tid; i < gq * TC_D; i += TC_NW * 32u) {
    const uint32_t h = i / TC_D, c = i % TC_D;
    float M = -INFINITY, x = 0.f;
    for (int v = 0; v < TC_NW; v++) M = fmaxf(M, fm[v][h]);
    for (int v = 0; v < TC_NW; v++)
      if (fm[v][h] != -INFINITY) x += W[v].xacc[h][c] * exp2f(fm[v][h] - M);
    ws_acc[(part + (size_t)h * a.splits) * TC_D + c] = x;
  }
  if (tid < gq) {
    float M = -INFINITY, L = 0.f;
    for (int v = 0; v < TC_NW; v++) M = fmaxf(M, fm[v][tid]);
    for (int v = 0; v < TC_NW; v++)
      if (fm[v][tid] != -INFINITY) L += fl[v][tid] * exp2f(fm[v][tid] - M);
    ws_ml[2 * (part + tid * a.splits)] = M;
    ws_ml[2 * (part + tid * a.splits) + 1] = L;
  }
}

#endif
