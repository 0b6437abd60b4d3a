/* SPDX-License-Identifier: MIT */
/* NaN / Inf scan on the device (kernels/check.cu); apart from cuda.h so
 * that the kernels of quant.cu need not be rebuilt for it. */
#ifndef KVS_KERNELS_CHECK_H
#define KVS_KERNELS_CHECK_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

/* 1 when any of the n 16-bit values at device address d is NaN or Inf
 * (bf16 nonzero: bfloat16, else fp16), 0 when none, or -EIO. Uses c's
 * status word and stream; synchronous. */
int kvs__cuda_nonfinite(kvs__cuda_ctx *c, const uint16_t *d, size_t n, int bf16);

#ifdef __cplusplus
}
#endif

#endif
