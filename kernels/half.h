/* fp16 / bf16 <-> fp32 conversions (round to nearest even), shared by the
 * reference kernels, the daemon and the eval forward pass. */
#ifndef KVS_KERNELS_HALF_H
#define KVS_KERNELS_HALF_H

#include <stdint.h>

float kvs__f16_to_f32(uint16_t h);
uint16_t kvs__f32_to_f16(float f);
float kvs__bf16_to_f32(uint16_t h);
uint16_t kvs__f32_to_bf16(float f);

/* dtype: kvs_dtype value (1 fp16, 2 bf16). */
static inline float kvs__h_to_f32(uint16_t h, int dtype)
{
  return dtype == 2 ? kvs__bf16_to_f32(h) : kvs__f16_to_f32(h);
}
static inline uint16_t kvs__f32_to_h(float f, int dtype)
{
  return dtype == 2 ? kvs__f32_to_bf16(f) : kvs__f32_to_f16(f);
}

#endif
