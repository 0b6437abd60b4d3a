/* SPDX-License-Identifier: MIT */
/* Small CUDA helpers around the decode-attention kernel (kernels/attn.cu)
 * for clients that call it on their own stream (libkvsink's
 * kvs_attend_device): the batch's views gathered from per-table device
 * records, the query widened to fp32, and the softmax log-denominator
 * from the split-K workspace. All enqueue on `stream` (a cudaStream_t; NULL
 * = the legacy default stream) and return 0, -EINVAL or -EIO (a launch
 * failed); nothing synchronizes. */
#ifndef KVS_KERNELS_ATTN_IO_H
#define KVS_KERNELS_ATTN_IO_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/attn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* dst[i] = *src[i] for i < n: src are device addresses of kvs__attn_seq
 * records (passed by value in the launches, 64 a launch). */
int kvs__cuda_attn_gather(void *stream, kvs__attn_seq *d_dst, const uint64_t *src, uint32_t n);
/* dst[i] = (float)src[i], src 16-bit of dtype (KVS_DTYPE_F16 or _BF16). */
int kvs__cuda_to_f32(void *stream, float *d_dst, const uint16_t *d_src, size_t n, int dtype);
/* lse[i][h] (natural log of head h's softmax denominator over the scaled
 * scores; -INFINITY without tokens) from the workspace of the decode launch
 * of plan (n_seqs, splits) and n_q_heads that ran before it on stream.
 * Reads the workspace as kernels/attn_dev.cuh writes it: the first 2 *
 * n_seqs * n_q_heads * splits floats are (max, sum) pairs in base 2, pair
 * (i * n_q_heads + h) * splits + split. */
int kvs__cuda_attn_lse(void *stream, const void *d_ws, uint32_t n_seqs, uint32_t n_q_heads,
                       uint32_t splits, float *d_lse);

#ifdef __cplusplus
}
#endif

#endif
