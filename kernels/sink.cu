/* CUDA sink prediction: same contract as kvs__predict_sinks (sink.h).
 * Pass 1 computes each token's max |act| and compacts the candidates
 * (above tau); pass 2 ranks candidates among themselves (larger first,
 * ties: earlier token) and flags those ranked below the budget. Sinks
 * are rare, so the quadratic rank over candidates stays small. */
#include <cerrno>
#include <cuda_runtime.h>

#include "kernels/cuda.h"

struct kvs_cand { float m; uint32_t t; };

static __global__ void sink_scan(const float *act, uint32_t n, uint32_t n_ch, float tau,
                                 kvs_cand *cand, uint32_t *n_cand, int *st)
{
  uint32_t t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= n) return;
  float m = 0.f;
  bool bad = false;
  for (uint32_t c = 0; c < n_ch; c++) {
    float x = act[(size_t)t * n_ch + c];
    if (!isfinite(x)) bad = true;
    m = fmaxf(m, fabsf(x));
  }
  if (bad) { atomicMin(st, KVS_ENAN); return; }
  if (m > tau) {
    uint32_t i = atomicAdd(n_cand, 1u);
    cand[i] = kvs_cand{m, t};
  }
}

static __global__ void sink_rank(const kvs_cand *cand, const uint32_t *n_cand, uint32_t budget,
                                 uint8_t *flags, uint32_t *n_flag)
{
  uint32_t nc = *n_cand;
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < nc; i += gridDim.x * blockDim.x) {
    kvs_cand a = cand[i];
    uint32_t rank = 0;
    for (uint32_t j = 0; j < nc && rank < budget; j++) {
      kvs_cand b = cand[j];
      if (b.m > a.m || (b.m == a.m && b.t < a.t)) rank++;
    }
    if (rank < budget) {
      flags[a.t] = 1;
      atomicAdd(n_flag, 1u);
    }
  }
}

extern "C" int kvs__cuda_predict_sinks(kvs__cuda_ctx *c, const float *d_act, uint32_t n,
                                       uint32_t n_ch, float tau, uint32_t budget,
                                       uint8_t *d_flags)
{
  if (n == 0) return 0;
  if (!d_act || !d_flags || n_ch == 0) return -EINVAL;
  cudaStream_t s = (cudaStream_t)c->stream;
  kvs_cand *cand = NULL;
  uint32_t *cnt = NULL, h[2] = {0, 0};
  int rc = -EIO;
  if (cudaMallocAsync((void **)&cand, (size_t)n * sizeof *cand, s) != cudaSuccess ||
      cudaMallocAsync((void **)&cnt, 2 * sizeof *cnt, s) != cudaSuccess)
    goto out;
  if (cudaMemsetAsync(cnt, 0, 2 * sizeof *cnt, s) != cudaSuccess) goto out;
  sink_scan<<<(n + 255u) / 256u, 256, 0, s>>>(d_act, n, n_ch, tau, cand, cnt, c->d_status);
  if (cudaGetLastError() != cudaSuccess) goto out;
  if (budget) {
    sink_rank<<<(n + 255u) / 256u < 64u ? (n + 255u) / 256u : 64u, 256, 0, s>>>(cand, cnt, budget,
                                                                                d_flags, cnt + 1);
    if (cudaGetLastError() != cudaSuccess) goto out;
  }
  if (cudaMemcpyAsync(h, cnt, sizeof h, cudaMemcpyDeviceToHost, s) != cudaSuccess) goto out;
  rc = kvs__cuda_finish(c);
  if (rc == 0) rc = (int)h[1];
out:
  cudaGetLastError();
  if (cand) cudaFreeAsync(cand, s);
  if (cnt) cudaFreeAsync(cnt, s);
  return rc;
}
