/* SPDX-License-Identifier: MIT */
/* CUDA decode attention over compressed blocks (contract: kernels/attn.h,
 * kernels/cuda.h). Two kernels: the tensor-core one (attn_tc.cuh, HACKING
 * Decision 45) for head dim 128, GQA 1/2/4 and 2/4-bit K and V, and the
 * one described here, on CUDA cores, for every shape. Split-K over the context as flash-decoding does: one
 * CUDA block per (span of tokens, sequence, KV head) carries all g query
 * heads of that KV head, so every packed byte is read once per step;
 * kvs_attn_combine merges the spans' partial (max, sum, accumulator).
 *
 * Inside a span, tokens go in chunks of CT. A thread owns one octet of 8
 * channels of the head and a slice of TPS consecutive tokens (same block
 * for G = 32), so it loads its 8 codes with one 2/3/4/8-byte load (a half
 * warp reads a row's head segment contiguously) and unpacks in registers.
 * Keys are never dequantized element by element:
 *   q . k = sum_c (q_c scale_c) code_c + sum_c q_c min_c
 * with the per-channel products computed once per block per thread (in
 * registers), and values likewise per token and group:
 *   sum_t p_t (min_tg + code_tc scale_tg)
 *     = sum_t (p_t scale_tg) code_tc + sum_t p_t min_tg.
 * Codes become floats by the exponent trick (0x4b000000 | code is the
 * float 2^23 + code), cheaper than an int-to-float conversion. Partial
 * scores of the octets of a token meet in shared memory; one thread per
 * token sums them and runs the online softmax in base 2 (q prescaled by
 * log2(e) / sqrt(d)). Sink rows, 16-bit widths and the residual are read
 * as raw rows; sparse outliers correct the score (keys) or a per-channel
 * shared accumulator (values) with raw - (min + code * scale).
 *
 * Difference to the C reference: the reference rounds each dequantized
 * element to the dtype (the values `get` returns); this kernel keeps them
 * in fp32, so each quantized element differs by at most half an ulp of the
 * dtype. tests/gpu/attn_test.cu bounds the output difference that causes. */
#include <cerrno>
#include <cmath>
#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>

#include "kernels/attn_dev.cuh"
#include "kernels/attn_tc.cuh"

/* The tensor-core kernel (attn_tc.cuh) where it takes the shape and is
 * the faster one; KVSINK_ATTN_TC=0: never (A/B runs against
 * kvs_attn_kernel), =1: wherever it can (outliers too: tests). */
static bool at_use_tc(const at_args &a, uint32_t g)
{
  static int mode = -1; /* 0 never, 1 default, 2 wherever it can */
  if (mode < 0) {
    const char *e = getenv("KVSINK_ATTN_TC");
    mode = e && !strcmp(e, "0") ? 0 : e && !strcmp(e, "1") ? 2 : 1;
  }
  return mode && at_tc_ok(a, g, mode == 2);
}

template <int KB, int VB, bool L1>
static void *at_tc_fn()
{
  return (void *)kvs_attn_tc<KB, VB, L1>;
}
/* The instance for a shape at_tc_ok took. */
static const void *at_tc_kernel(const at_args &a)
{
  const bool l1 = a.vg % TC_D == 0;
  if (a.kb == 2) {
    if (a.vb == 2) return l1 ? at_tc_fn<2, 2, true>() : at_tc_fn<2, 2, false>();
    return l1 ? at_tc_fn<2, 4, true>() : at_tc_fn<2, 4, false>();
  }
  if (a.vb == 2) return l1 ? at_tc_fn<4, 2, true>() : at_tc_fn<4, 2, false>();
  return l1 ? at_tc_fn<4, 4, true>() : at_tc_fn<4, 4, false>();
}

/* Dynamic shared memory of kvs_attn_kernel<GQ> raised past 48 KiB once
 * per device (the call costs host time on every step otherwise;
 * idempotent, so a race between threads only repeats it). */
template <int GQ>
static int at_smem_attr(size_t smem)
{
  static size_t smem_set[64];
  int dev = 0;
  if (smem <= 48u * 1024u) return 0;
  if (cudaGetDevice(&dev) != cudaSuccess) { cudaGetLastError(); return -EIO; }
  if (dev >= 0 && dev < 64 && smem <= smem_set[dev]) return 0;
  if (cudaFuncSetAttribute(kvs_attn_kernel<GQ>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem) !=
      cudaSuccess) {
    cudaGetLastError();
    return -EIO;
  }
  if (dev >= 0 && dev < 64) smem_set[dev] = smem;
  return 0;
}

/* CUDA blocks of kvs_attn_kernel<GQ> an SM runs at once. */
template <int GQ>
static int at_per_sm(const at_args &a, int *nb)
{
  const size_t smem = at_smem(a, GQ);
  if (at_smem_attr<GQ>(smem)) return -EIO;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(nb, kvs_attn_kernel<GQ>, AT_NT, smem) != cudaSuccess) {
    cudaGetLastError();
    return -EIO;
  }
  if (*nb < 1) *nb = 1;
  return 0;
}

extern "C" int kvs__cuda_attn_make_plan(const kvs__attn_shape *s, uint32_t n_seqs, uint32_t max_tokens,
                                   kvs__cuda_attn_plan *pl)
{
  at_args a;
  if (!pl || at_fill(s, &a)) return -EINVAL;
  int dev = 0, nsm = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&nsm, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
    cudaGetLastError();
    return -EIO;
  }
  int per_sm = 1, rc = 0;
  const uint32_t g = s->n_q_heads / s->n_kv_heads;
  if (at_use_tc(a, g)) {
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, at_tc_kernel(a), TC_NW * 32, 0) != cudaSuccess) {
      cudaGetLastError();
      return -EIO;
    }
    if (per_sm < 1) per_sm = 1;
    /* The plan's cost model takes a CUDA block's time as independent of
     * how many share an SM. For the tensor-core kernel that holds up to 3
     * (2/2 bits fit 4: the fourth fills stalls rather than adding an equal
     * share), so it plans waves of 3 an SM (H200, 2 bits: 128k x 1 95 -> 108
     * us planned for 4, 99 for 3; 128k x 64 3,721 -> 3,548; HACKING
     * Decision 45). */
    if (per_sm > 3) per_sm = 3;
  } else switch (g) {
  case 1: rc = at_per_sm<1>(a, &per_sm); break;
  case 2: rc = at_per_sm<2>(a, &per_sm); break;
  case 4: rc = at_per_sm<4>(a, &per_sm); break;
  default: rc = at_per_sm<8>(a, &per_sm); break;
  }
  if (rc) return rc;
  uint32_t span, splits;
  if (at_plan(a, n_seqs, s->n_kv_heads, max_tokens, (uint32_t)nsm * (uint32_t)per_sm, &span, &splits))
    return -EINVAL;
  pl->n_seqs = n_seqs;
  pl->max_tokens = max_tokens;
  pl->span = span;
  pl->splits = splits;
  const size_t parts = (size_t)n_seqs * s->n_q_heads * splits;
  pl->ws_bytes = parts * sizeof(float) * (2u + s->head_dim);
  return 0;
}

template <int GQ>
static int at_launch(const at_args &a, uint32_t nkv, uint32_t n_seqs, cudaStream_t st, const kvs__attn_seq *seqs,
                     const float *q, float *ws_acc, float *ws_ml, int *d_status)
{
  const size_t smem = at_smem(a, GQ);
  if (at_smem_attr<GQ>(smem)) return -EIO;
  dim3 grid(a.splits, nkv, n_seqs);
  kvs_attn_kernel<GQ><<<grid, AT_NT, smem, st>>>(a, seqs, q, ws_acc, ws_ml, d_status);
  return cudaGetLastError() == cudaSuccess ? 0 : -EIO;
}

extern "C" int kvs__cuda_attn_decode_async(kvs__cuda_ctx *c, const kvs__attn_shape *s,
                                           const kvs__cuda_attn_plan *pl, const kvs__attn_seq *d_seqs,
                                           const float *d_q, float *d_out, void *d_ws)
{
  at_args a;
  if (!c || !pl || at_fill(s, &a)) return -EINVAL;
  if (pl->n_seqs == 0) return 0;
  if (!d_seqs || !d_q || !d_out || !d_ws || pl->span == 0 || pl->span % a.ct || pl->splits == 0 ||
      pl->n_seqs > 65535u)
    return -EINVAL;
  a.span = pl->span;
  a.splits = pl->splits;
  const size_t parts = (size_t)pl->n_seqs * a.nq * a.splits;
  float *ws_ml = (float *)d_ws, *ws_acc = ws_ml + 2u * parts;
  cudaStream_t st = (cudaStream_t)c->stream;
  const uint32_t g = s->n_q_heads / s->n_kv_heads;
  int rc;
  if (at_use_tc(a, g)) {
    void *args[] = {&a, (void *)&d_seqs, (void *)&d_q, &ws_acc, &ws_ml, &c->d_status};
    rc = cudaLaunchKernel(at_tc_kernel(a), dim3(a.splits, s->n_kv_heads, pl->n_seqs), dim3(TC_NW * 32), args, 0,
                          st) == cudaSuccess ? 0 : -EIO;
    if (rc) cudaGetLastError();
  } else switch (g) {
  case 1: rc = at_launch<1>(a, s->n_kv_heads, pl->n_seqs, st, d_seqs, d_q, ws_acc, ws_ml, c->d_status); break;
  case 2: rc = at_launch<2>(a, s->n_kv_heads, pl->n_seqs, st, d_seqs, d_q, ws_acc, ws_ml, c->d_status); break;
  case 4: rc = at_launch<4>(a, s->n_kv_heads, pl->n_seqs, st, d_seqs, d_q, ws_acc, ws_ml, c->d_status); break;
  default: rc = at_launch<8>(a, s->n_kv_heads, pl->n_seqs, st, d_seqs, d_q, ws_acc, ws_ml, c->d_status); break;
  }
  if (rc) return rc;
  kvs_attn_combine<<<dim3(a.nq, pl->n_seqs), a.D < 128u ? a.D : 128u, 0, st>>>(ws_acc, ws_ml, a.splits, a.D,
                                                                               a.nq, d_out);
  if (cudaGetLastError() != cudaSuccess) return -EIO;
  return 0;
}

extern "C" int kvs__cuda_attn_decode(kvs__cuda_ctx *c, const kvs__attn_shape *s, const kvs__cuda_attn_plan *pl,
                                     const kvs__attn_seq *d_seqs, const float *d_q, float *d_out, void *d_ws)
{
  int rc = kvs__cuda_attn_decode_async(c, s, pl, d_seqs, d_q, d_out, d_ws);
  if (rc) return rc;
  return kvs__cuda_finish(c);
}
