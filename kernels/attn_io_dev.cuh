/* SPDX-License-Identifier: MIT */
/* The kernels of kernels/attn_io.cu (launched there), apart so that
 * tests/kernels/attn_emu.cpp runs them on the CPU too. */
#ifndef KVS_KERNELS_ATTN_IO_DEV_CUH
#define KVS_KERNELS_ATTN_IO_DEV_CUH

#include <stdint.h>
#include <cuda_fp16.h>

#include "kernels/attn.h"

#define KVS_GATHER_N 64u

struct gather_args {
  const kvs__attn_seq *src[KVS_GATHER_N];
};

static __global__ void kvs_gather(gather_args a, kvs__attn_seq *dst, uint32_t n)
{
  const uint32_t i = threadIdx.x;
  if (i < n) dst[i] = *a.src[i];
}

static __global__ void kvs_to_f32(float *dst, const uint16_t *src, size_t n, int bf16)
{
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    const uint16_t h = src[i];
    dst[i] = bf16 ? __uint_as_float((uint32_t)h << 16) : __half2float(__ushort_as_half(h));
  }
}

static __global__ void kvs_lse(const float *ml, uint32_t n, uint32_t splits, float *lse)
{
  const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; /* seq * n_q_heads + head */
  if (i >= n) return;
  const size_t base = (size_t)i * splits;
  float M = -INFINITY;
  for (uint32_t s = 0; s < splits; s++) M = fmaxf(M, ml[2 * (base + s)]);
  if (M == -INFINITY) { lse[i] = -INFINITY; return; }
  float L = 0.f;
  for (uint32_t s = 0; s < splits; s++) {
    const float m = ml[2 * (base + s)];
    if (m != -INFINITY) L += exp2f(m - M) * ml[2 * (base + s) + 1];
  }
  /* sum_t e^s_t = 2^M * L (scores in base 2) */
  lse[i] = L > 0.f ? (M + log2f(L)) * 0.6931471805599453f : -INFINITY;
}

#endif
