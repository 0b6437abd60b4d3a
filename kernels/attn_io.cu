/* SPDX-License-Identifier: MIT */
/* Helpers around the decode-attention kernel (kernels/attn_io.h). */
#include <cerrno>
#include <cmath>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "kernels/attn_io.h"
#include "kernels/attn_io_dev.cuh"
#include "kernels/quant.h"

extern "C" int kvs__cuda_attn_gather(void *stream, kvs__attn_seq *d_dst, const uint64_t *src, uint32_t n)
{
  if (n && (!d_dst || !src)) return -EINVAL;
  for (uint32_t o = 0; o < n; o += KVS_GATHER_N) {
    gather_args a;
    const uint32_t m = n - o < KVS_GATHER_N ? n - o : KVS_GATHER_N;
    for (uint32_t i = 0; i < KVS_GATHER_N; i++)
      a.src[i] = i < m ? (const kvs__attn_seq *)(uintptr_t)src[o + i] : nullptr;
    kvs_gather<<<1, KVS_GATHER_N, 0, (cudaStream_t)stream>>>(a, d_dst + o, m);
    if (cudaGetLastError() != cudaSuccess) return -EIO;
  }
  return 0;
}

extern "C" int kvs__cuda_to_f32(void *stream, float *d_dst, const uint16_t *d_src, size_t n, int dtype)
{
  if (dtype != KVS_DTYPE_F16 && dtype != KVS_DTYPE_BF16) return -EINVAL;
  if (!n) return 0;
  if (!d_dst || !d_src) return -EINVAL;
  size_t blocks = (n + 255) / 256;
  if (blocks > 1024) blocks = 1024;
  kvs_to_f32<<<(unsigned)blocks, 256, 0, (cudaStream_t)stream>>>(d_dst, d_src, n, dtype == KVS_DTYPE_BF16);
  return cudaGetLastError() == cudaSuccess ? 0 : -EIO;
}

extern "C" int kvs__cuda_attn_lse(void *stream, const void *d_ws, uint32_t n_seqs, uint32_t n_q_heads,
                                  uint32_t splits, float *d_lse)
{
  const uint64_t n = (uint64_t)n_seqs * n_q_heads;
  if (!n) return 0;
  if (!d_ws || !d_lse || !splits || n > UINT32_MAX) return -EINVAL;
  kvs_lse<<<(unsigned)((n + 127) / 128), 128, 0, (cudaStream_t)stream>>>((const float *)d_ws, (uint32_t)n, splits,
                                                                        d_lse);
  return cudaGetLastError() == cudaSuccess ? 0 : -EIO;
}
