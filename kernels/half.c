/* SPDX-License-Identifier: MIT */
/* fp16 / bf16 <-> fp32, round to nearest even; the bodies are the inline
 * ones in half.h. */
#include "kernels/half.h"

float kvs__f16_to_f32(uint16_t h) { return kvs__f16_to_f32_i(h); }
uint16_t kvs__f32_to_f16(float f) { return kvs__f32_to_f16_i(f); }
float kvs__bf16_to_f32(uint16_t h) { return kvs__bf16_to_f32_i(h); }
uint16_t kvs__f32_to_bf16(float f) { return kvs__f32_to_bf16_i(f); }
