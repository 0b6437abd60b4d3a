/* SPDX-License-Identifier: MIT */
// NaN / Inf scan of 16-bit K/V on the device: a put from a device segment
// is checked where it lies (the host path checks its host copy instead).
#include <cerrno>
#include <cuda_runtime.h>

#include "kernels/check.h"

// f16: exponent 0x7c00 all ones; bf16: 0x7f80 all ones.
static __global__ void nonfinite_kernel(const uint16_t *__restrict__ x, size_t n, uint16_t mask,
                                        int *flag)
{
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x, step = (size_t)gridDim.x * blockDim.x;
  int bad = 0;
  for (; i < n; i += step) bad |= (x[i] & mask) == mask;
  if (__syncthreads_or(bad) && threadIdx.x == 0) *flag = 1;
}

// 16-byte loads (8 values) when the input is 16-byte aligned: the 2-byte
// loads above bound the scan by instructions, not bandwidth, and the scan
// reads all of a bulk device put (Decision 36).
static __device__ __forceinline__ int bad2(uint32_t w, uint32_t m2)
{
  uint32_t t = w & m2;
  return (t & 0xffffu) == (m2 & 0xffffu) || (t >> 16) == (m2 >> 16);
}

static __global__ void nonfinite_kernel16(const uint4 *__restrict__ x, size_t n16, uint32_t m2,
                                          int *flag)
{
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x, step = (size_t)gridDim.x * blockDim.x;
  int bad = 0;
  for (; i < n16; i += step) {
    uint4 v = x[i];
    bad |= bad2(v.x, m2) | bad2(v.y, m2) | bad2(v.z, m2) | bad2(v.w, m2);
  }
  if (__syncthreads_or(bad) && threadIdx.x == 0) *flag = 1;
}

extern "C" int kvs__cuda_nonfinite(kvs__cuda_ctx *c, const uint16_t *d, size_t n, int bf16)
{
  if (n == 0) return 0;
  cudaStream_t s = (cudaStream_t)c->stream;
  if (cudaMemsetAsync(c->d_status, 0, sizeof(int), s) != cudaSuccess) goto fail;
  {
    const uint16_t m = bf16 ? 0x7f80 : 0x7c00;
    size_t head = ((uintptr_t)d & 15u) ? n : 0; /* unaligned: all with 2-byte loads */
    size_t n16 = (n - head) / 8, tail = n - head - n16 * 8;
    if (n16) {
      size_t blocks = (n16 + 255) / 256;
      if (blocks > 4096) blocks = 4096;
      nonfinite_kernel16<<<(unsigned)blocks, 256, 0, s>>>((const uint4 *)d, n16,
                                                         (uint32_t)m << 16 | m, c->d_status);
    }
    if (head || tail) {
      const uint16_t *r = head ? d : d + n16 * 8;
      size_t rn = head ? n : tail, blocks = (rn + 255) / 256;
      if (blocks > 2048) blocks = 2048;
      nonfinite_kernel<<<(unsigned)blocks, 256, 0, s>>>(r, rn, m, c->d_status);
    }
    if (cudaGetLastError() != cudaSuccess) goto fail;
    int h = 0;
    if (cudaMemcpyAsync(&h, c->d_status, sizeof h, cudaMemcpyDeviceToHost, s) != cudaSuccess ||
        cudaStreamSynchronize(s) != cudaSuccess)
      goto fail;
    if (cudaMemsetAsync(c->d_status, 0, sizeof(int), s) != cudaSuccess) goto fail;
    return h ? 1 : 0;
  }
fail:
  cudaGetLastError();
  return -EIO;
}
