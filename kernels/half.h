/* fp16 / bf16 <-> fp32 conversions (round to nearest even), shared by the
 * reference kernels, the daemon and the eval forward pass. */
#ifndef KVS_KERNELS_HALF_H
#define KVS_KERNELS_HALF_H

#include <stdint.h>
#include <string.h>

float kvs__f16_to_f32(uint16_t h);
uint16_t kvs__f32_to_f16(float f);
float kvs__bf16_to_f32(uint16_t h);
uint16_t kvs__f32_to_bf16(float f);

/* Inline bodies of the above, for hot loops in other files (the quantizer,
 * the eval forward pass); the functions above are these. */
static inline uint32_t kvs__f_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float kvs__bits_f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static inline float kvs__f16_to_f32_i(uint16_t h)
{
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  if (exp == 0x1fu) /* Inf / NaN: keep the payload, NaN stays NaN */
    return kvs__bits_f(sign | 0x7f800000u | (man << 13));
  if (exp == 0) {
    /* zero or subnormal: man * 2^-24 is exact in fp32 */
    float f = (float)man * 0x1p-24f;
    return sign ? -f : f;
  }
  return kvs__bits_f(sign | ((exp + 112u) << 23) | (man << 13));
}

static inline uint16_t kvs__f32_to_f16_i(float f)
{
  uint32_t u = kvs__f_bits(f);
  uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
  uint32_t a = u & 0x7fffffffu;
  if (a >= 0x7f800000u) /* Inf, or NaN made quiet so it cannot become Inf */
    return sign | (a == 0x7f800000u ? 0x7c00u : (uint16_t)(0x7e00u | ((a >> 13) & 0x3ffu)));
  if (a >= 0x477ff000u) /* >= 65520 rounds to Inf */
    return sign | 0x7c00u;
  if (a < 0x38800000u) {
    /* below the smallest normal: result is round(|f| * 2^24) ulps of 2^-24;
     * adding 0.5 and letting fp32 round does RNE for us */
    float r = kvs__bits_f(a) + 0.5f;
    return sign | (uint16_t)(kvs__f_bits(r) - 0x3f000000u);
  }
  /* normal: rebias the exponent, round the 13 dropped bits to even */
  uint32_t odd = (a >> 13) & 1u;
  a += 0xc8000fffu + odd; /* (15-127)<<23 plus rounding bias */
  return sign | (uint16_t)(a >> 13);
}

static inline float kvs__bf16_to_f32_i(uint16_t h) { return kvs__bits_f((uint32_t)h << 16); }

static inline uint16_t kvs__f32_to_bf16_i(float f)
{
  uint32_t u = kvs__f_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: truncate, forced quiet */
    return (uint16_t)((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

/* dtype: kvs_dtype value (1 fp16, 2 bf16). */
static inline float kvs__h_to_f32(uint16_t h, int dtype)
{
  return dtype == 2 ? kvs__bf16_to_f32_i(h) : kvs__f16_to_f32_i(h);
}
static inline uint16_t kvs__f32_to_h(float f, int dtype)
{
  return dtype == 2 ? kvs__f32_to_bf16_i(f) : kvs__f32_to_f16_i(f);
}

#endif
