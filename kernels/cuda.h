/* CUDA launchers for the quantizer and sink prediction (kernels/quant.cu,
 * kernels/sink.cu). Plain C interface so the daemon (C) links them.
 *
 * All pointers in job arrays are device pointers; the job arrays
 * themselves live in device memory too. Every launcher checks
 * cudaGetLastError after its launches, synchronizes `stream` (0 = the
 * legacy default stream) and returns 0, KVS_ENAN (NaN/Inf in the input),
 * -ERANGE (a scale or min overflows fp16), -EINVAL (bad params) or -EIO
 * (any CUDA error). The block layout comes from kvs__qlayout_of() of the
 * C reference, so both sides agree on offsets by construction. */
#ifndef KVS_KERNELS_CUDA_H
#define KVS_KERNELS_CUDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "kernels/quant.h"

/* One block to quantize: k, v are [G][C] raw 16-bit; rows[i] receives the
 * i-th sink row (2*C words), rows may be NULL when sink_mask is 0. */
typedef struct kvs__cuda_qjob {
  const uint16_t *k, *v;
  void *block;
  uint16_t *const *rows;
  uint64_t sink_mask;
} kvs__cuda_qjob;

/* One block to dequantize: rows [r0, r1) into k_out / v_out ([r1-r0][C]). */
typedef struct kvs__cuda_dqjob {
  const void *block;
  const uint16_t *const *rows;
  uint16_t *k_out, *v_out;
  uint32_t r0, r1;
} kvs__cuda_dqjob;

/* Scratch the launchers need (a device status word); one per thread of
 * use. Returns 0 or -EIO / -ENOMEM. */
typedef struct kvs__cuda_ctx {
  int *d_status;        /* device int */
  void *stream;         /* cudaStream_t; NULL = default stream */
} kvs__cuda_ctx;

int kvs__cuda_ctx_init(kvs__cuda_ctx *c);
void kvs__cuda_ctx_close(kvs__cuda_ctx *c);

/* Quantize n jobs (device array) in one launch. */
int kvs__cuda_quantize(kvs__cuda_ctx *c, const kvs__qparams *p, const kvs__qlayout *l,
                       const kvs__cuda_qjob *d_jobs, uint32_t n);
/* Dequantize n jobs (device array) in one launch; max_rows bounds r1-r0. */
int kvs__cuda_dequantize(kvs__cuda_ctx *c, const kvs__qparams *p, const kvs__qlayout *l,
                         const kvs__cuda_dqjob *d_jobs, uint32_t n);
/* Same as above but without the final synchronize / status read: for
 * benchmarks that time many launches. Returns 0 or -EIO. */
int kvs__cuda_quantize_async(kvs__cuda_ctx *c, const kvs__qparams *p, const kvs__qlayout *l,
                             const kvs__cuda_qjob *d_jobs, uint32_t n);
int kvs__cuda_dequantize_async(kvs__cuda_ctx *c, const kvs__qparams *p, const kvs__qlayout *l,
                               const kvs__cuda_dqjob *d_jobs, uint32_t n);
/* Synchronize and read (then clear) the status word. */
int kvs__cuda_finish(kvs__cuda_ctx *c);

/* Sink prediction on device, same contract as kvs__predict_sinks():
 * d_act float [n][n_ch], d_flags u8 [n]. Returns the number flagged or a
 * negative code. */
int kvs__cuda_predict_sinks(kvs__cuda_ctx *c, const float *d_act, uint32_t n, uint32_t n_ch,
                            float tau, uint32_t budget, uint8_t *d_flags);

#ifdef __cplusplus
}
#endif

#endif
