/* SPDX-License-Identifier: MIT */
/* Decode attention over the compressed cache: the C reference.
 *
 * For a batch of sequences with one query token each, per query head h:
 *   out[h] = softmax(q[h] . K^T / sqrt(d)) V
 * over every token a sequence holds in one layer: its quantized blocks
 * (format in quant.h) in order, then its 16-bit residual of n_res tokens.
 * GQA: n_q_heads = g * n_kv_heads, query head h reads KV head h / g (the
 * repeat-interleave convention of PyTorch and vLLM); KV head j is channels
 * [j*d, (j+1)*d) of a row, C = n_kv_heads * d = qparams.channels.
 *
 * The reference dequantizes one element at a time inside the dot products
 * (no 16-bit K/V is ever materialized, not even one block's): key x =
 * min_c + code * scale_c, value x = min_tg + code * scale_tg, rounded to
 * the dtype exactly as kvs__dequantize_block does, sparse outliers and
 * 16-bit sink rows taking precedence. So it sees the very values a `get`
 * returns, and differs from dequantize-then-attend only in summation
 * order. fp32 accumulation, online softmax (running max and sum), in
 * token order.
 *
 * Query and output are fp32 [n_seqs][n_q_heads][d]: the query is a few
 * hundred values per sequence, so its width costs nothing, and fp32 out
 * leaves the one rounding to the caller's dtype to the caller (the CUDA
 * kernel then matches the reference without a rounding step that hides
 * differences below half an ulp). A sequence with no token gives zeros.
 *
 * The CUDA kernel (attn.cu, kernels/cuda.h) takes the same views with
 * device pointers. */
#ifndef KVS_KERNELS_ATTN_H
#define KVS_KERNELS_ATTN_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/quant.h"

/* One quantized block as the store keeps it: the quantized part, and its
 * sink rows (K row then V row, 2*C words each, in increasing t; NULL when
 * sink_mask is 0). sink_mask must equal the header's. */
typedef struct kvs__attn_block {
  const void *data;
  const uint16_t *const *rows;
  uint64_t sink_mask;
} kvs__attn_block;

/* What one sequence holds in the layer: n_blocks full blocks of G tokens,
 * then n_res residual tokens, raw 16-bit rows [n_res][C] of K and of V. */
typedef struct kvs__attn_seq {
  const kvs__attn_block *blocks;
  uint32_t n_blocks;
  uint32_t n_res;
  const uint16_t *res_k, *res_v;
} kvs__attn_seq;

/* Shape of one call: the block format and the heads. */
typedef struct kvs__attn_shape {
  kvs__qparams qp;       /* qp.channels = n_kv_heads * head_dim */
  uint32_t n_kv_heads;
  uint32_t n_q_heads;    /* a multiple of n_kv_heads */
  uint32_t head_dim;
} kvs__attn_shape;

/* Check a shape: 0 or -EINVAL. */
int kvs__attn_shape_check(const kvs__attn_shape *s);

/* q, out: fp32 [n_seqs][n_q_heads][head_dim]. Returns 0, -EINVAL on a bad
 * shape, a block whose header disagrees with the shape or its view, or an
 * outlier channel out of range (nothing is written then for that
 * sequence's heads beyond what was computed before). */
int kvs__attn_decode(const kvs__attn_shape *s, const kvs__attn_seq *seqs, uint32_t n_seqs,
                     const float *q, float *out);

/* The same, also writing lse [n_seqs][n_q_heads] (may be NULL): the log
 * of each head's softmax denominator over the scaled scores (-INFINITY
 * for no token), so a caller can merge this result with attention over
 * tokens the views do not hold (as flash-decoding merges its splits). */
int kvs__attn_decode_lse(const kvs__attn_shape *s, const kvs__attn_seq *seqs, uint32_t n_seqs,
                         const float *q, float *out, float *lse);

#endif
