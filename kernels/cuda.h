/* SPDX-License-Identifier: MIT */
/* CUDA launchers for the quantizer and decode attention (kernels/quant.cu,
 * kernels/attn.cu). Plain C interface so the daemon (C) links them.
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

#include "kernels/attn.h"
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

/* Launch signals (kvs__cuda_wait, HACKING.md Decision 54): the last
 * CUDA block of a signalled launch writes its slot's word, in mapped
 * page-locked memory, so that the host learns of the end of the launches
 * since its last wait by reading memory instead of a copy and a
 * synchronize. One slot per launch; seq is the launch's number. */
#define KVS__CUDA_SIGNALS 64u
typedef struct kvs__cuda_signal {
  unsigned long long seq; /* written last */
  int status;             /* the status word when the launch ended */
  int pad;
} kvs__cuda_signal;
typedef struct kvs__cuda_sigs {
  kvs__cuda_signal *host;   /* mapped page-locked [KVS__CUDA_SIGNALS] */
  kvs__cuda_signal *dev;    /* the same, as the GPU addresses it */
  uint32_t *ctr;            /* device [KVS__CUDA_SIGNALS]: blocks done per launch */
  unsigned long long next;  /* the next launch's seq */
  uint32_t n;               /* slots taken since the last wait */
  int all;                  /* every launch since the last wait has a slot */
  int off;                  /* signals not used (the backend's A/B switch) */
} kvs__cuda_sigs;

/* Scratch the launchers need (a device status word); one per thread of
 * use. Returns 0 or -EIO / -ENOMEM. Copies of a context (another stream)
 * share its signals. */
typedef struct kvs__cuda_ctx {
  int *d_status;        /* device int */
  void *stream;         /* cudaStream_t; NULL = default stream */
  int *h_status;        /* page-locked host int for the status read, or NULL */
  void *d_feed;         /* device word a feed's kernel mirrors the host's in */
  uint32_t feed_gen;    /* feeds launched (tags the mirror) */
  kvs__cuda_sigs *sig;  /* NULL: none (kvs__cuda_wait is kvs__cuda_finish) */
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
 * benchmarks that time many launches, and for the store's queued puts
 * (backend quantize_start); kvs__cuda_finish then reads the status of all
 * launches since the last one. Returns 0, -EINVAL or -EIO. */
int kvs__cuda_quantize_async(kvs__cuda_ctx *c, const kvs__qparams *p, const kvs__qlayout *l,
                             const kvs__cuda_qjob *d_jobs, uint32_t n);
int kvs__cuda_dequantize_async(kvs__cuda_ctx *c, const kvs__qparams *p, const kvs__qlayout *l,
                               const kvs__cuda_dqjob *d_jobs, uint32_t n);
/* The feed (HACKING.md Decision 51): a quantize kernel launched before its
 * jobs exist. word lives where host and GPU both reach it (mapped
 * page-locked memory): the host writes job j at d_jobs + j *
 * KVS__CUDA_FEED_STRIDE (mapped too), then stores the count of jobs
 * written (release); KVS__CUDA_FEED_CLOSED set means no more will come.
 * The kernel ends once every job below the final count is coded; a feed
 * not closed within KVS__CUDA_FEED_TIMEOUT_NS ends with -ETIMEDOUT in
 * the status. One feed at a time per context (its d_feed word). */
typedef struct kvs__cuda_feed {
  uint32_t word;
} kvs__cuda_feed;
#define KVS__CUDA_FEED_CLOSED 0x80000000u
#define KVS__CUDA_FEED_COUNT 0x7fffffffu
#define KVS__CUDA_FEED_STRIDE 128u
#define KVS__CUDA_FEED_TIMEOUT_NS 5000000000ull
/* Launch the fast kernel of p's shape over a feed of at most max_jobs
 * jobs, on the context's stream, without waiting: at most as many CUDA
 * blocks as the GPU holds at once. -EOPNOTSUPP: p's shape has no fast
 * kernel, or has outliers (quantize in batches instead). */
int kvs__cuda_quantize_feed(kvs__cuda_ctx *c, const kvs__qparams *p, const kvs__qlayout *l,
                            const void *d_jobs, const kvs__cuda_feed *d_feed, uint32_t max_jobs);
/* Synchronize and read (then clear) the status word. */
int kvs__cuda_finish(kvs__cuda_ctx *c);
/* kvs__cuda_finish for a caller whose only GPU work since the last wait
 * is kvs__cuda_quantize_async / kvs__cuda_dequantize_async launches (and
 * copies queued before them on their streams): when each of those
 * launches has a signal, it waits for their signals (spinning on host
 * memory, no CUDA call) and returns the status they carry; otherwise, or
 * when the signals have not all come within KVS__CUDA_SIGNAL_SPIN_NS, it
 * is kvs__cuda_finish. */
#define KVS__CUDA_SIGNAL_SPIN_NS 2000000ull
int kvs__cuda_wait(kvs__cuda_ctx *c);
/* Synchronize only (the dequantize kernel sets no status word): 0 or
 * -EIO. */
int kvs__cuda_sync(kvs__cuda_ctx *c);
/* 1 when kvs__cuda_quantize of p's shape loads every input element of a
 * job once from global memory (its NaN/Inf check and its codes come from
 * that one load) as long as the job's k, v and block are 16-byte aligned:
 * then the input may be memory another process writes (a device segment)
 * without a copy first (HACKING.md Decision 36). 0 otherwise. */
int kvs__cuda_quant_reads_once(const kvs__qparams *p);

/* Decode attention (kernels/attn.cu), the contract of kvs__attn_decode
 * with device pointers: d_seqs is a device array of views whose blocks,
 * sink-row lists, rows and residuals are device memory; q and out are
 * device fp32 [n_seqs][n_q_heads][head_dim]. Split-K over the context
 * (flash-decoding): one CUDA block per (span of tokens, sequence, KV head)
 * with all the head's query heads writes a partial max/sum/accumulator to
 * the workspace; a second kernel combines the spans.
 * Shapes the kernel takes (else -EINVAL; the C reference takes any):
 * head_dim 32, 64, 128 or 256; n_q_heads / n_kv_heads 1, 2, 4 or 8;
 * v_group a multiple of 8 (head dim 128, GQA 1/2/4, 2/4-bit K and V, G
 * 16/32/64, v_group 32, 64 or a multiple of 128 and no outliers run on tensor cores,
 * HACKING.md Decision 45). Keys and values are dequantized to fp32 without
 * the rounding to the dtype that the reference applies (see attn.cu). */
typedef struct kvs__cuda_attn_plan {
  uint32_t n_seqs, max_tokens;  /* as planned for */
  uint32_t span, splits;        /* tokens per CUDA block, spans per sequence */
  size_t ws_bytes;              /* device workspace the launch needs */
} kvs__cuda_attn_plan;

/* Plan a launch for n_seqs sequences of at most max_tokens tokens each
 * (blocks * G + residual) on the current device. 0 or -EINVAL / -EIO. */
int kvs__cuda_attn_make_plan(const kvs__attn_shape *s, uint32_t n_seqs, uint32_t max_tokens,
                        kvs__cuda_attn_plan *pl);
/* Launch (no synchronize). A sequence longer than pl->max_tokens, or an
 * outlier channel out of range, sets the status word to -EINVAL
 * (kvs__cuda_finish reads it). Returns 0, -EINVAL or -EIO. */
int kvs__cuda_attn_decode_async(kvs__cuda_ctx *c, const kvs__attn_shape *s, const kvs__cuda_attn_plan *pl,
                                const kvs__attn_seq *d_seqs, const float *d_q, float *d_out, void *d_ws);
/* The same, then kvs__cuda_finish. */
int kvs__cuda_attn_decode(kvs__cuda_ctx *c, const kvs__attn_shape *s, const kvs__cuda_attn_plan *pl,
                          const kvs__attn_seq *d_seqs, const float *d_q, float *d_out, void *d_ws);

#ifdef __cplusplus
}
#endif

#endif
