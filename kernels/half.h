/* SPDX-License-Identifier: MIT */
/* fp16 / bf16 <-> fp32 conversions (round to nearest even), shared by the
 * reference kernels, the daemon and the eval forward pass. */
#ifndef KVS_KERNELS_HALF_H
#define KVS_KERNELS_HALF_H

#include <stddef.h>
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
/* c ? a : b as masks: gcc -O2 turns a ?: in a loop into a branch, which
 * stops vectorization. */
static inline uint32_t kvs__sel(int c, uint32_t a, uint32_t b)
{
  uint32_t m = 0u - (uint32_t)(c != 0);
  return (a & m) | (b & ~m);
}

/* The bodies are branch-free (compute every case, then select) so that
 * loops over arrays vectorize; they give the same bits as the plain
 * branchy versions for every input (tests/unit/test_quant_exact.c checks
 * them against a frozen copy). */
static inline float kvs__f16_to_f32_i(uint16_t h)
{
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t em = (uint32_t)(h & 0x7fffu) << 13; /* exponent and mantissa in fp32 position */
  uint32_t e = em & 0x0f800000u;
  /* normal: rebias 15 -> 127; Inf / NaN: exponent to all ones, payload kept */
  uint32_t n = em + kvs__sel(e == 0x0f800000u, 0x70000000u, 0x38000000u);
  /* zero or subnormal: 2^-14 * (1 + m/1024) - 2^-14 = m * 2^-24, exact */
  float s = kvs__bits_f(em + 0x38800000u) - 0x1p-14f;
  uint32_t r = kvs__sel(e == 0, kvs__f_bits(s), n);
  return kvs__bits_f(r | sign);
}

static inline uint16_t kvs__f32_to_f16_i(float f)
{
  uint32_t u = kvs__f_bits(f);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t a = u & 0x7fffffffu;
  /* normal: rebias the exponent, round the 13 dropped bits to even */
  uint32_t r = (a + 0xc8000fffu + ((a >> 13) & 1u)) >> 13; /* (15-127)<<23 plus rounding bias */
  /* below the smallest normal: the result is round(|f| * 2^24) ulps of
   * 2^-24; adding 0.5 and letting fp32 round does RNE for us */
  uint32_t s = kvs__f_bits(kvs__bits_f(a) + 0.5f) - 0x3f000000u;
  r = kvs__sel(a < 0x38800000u, s, r);
  r = kvs__sel(a >= 0x477ff000u, 0x7c00u, r); /* >= 65520 rounds to Inf; Inf */
  /* NaN made quiet so it cannot become Inf */
  r = kvs__sel(a > 0x7f800000u, 0x7e00u | ((a >> 13) & 0x3ffu), r);
  return (uint16_t)(r | sign);
}

static inline float kvs__bf16_to_f32_i(uint16_t h) { return kvs__bits_f((uint32_t)h << 16); }

static inline uint16_t kvs__f32_to_bf16_i(float f)
{
  uint32_t u = kvs__f_bits(f);
  uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16; /* RNE on the top half */
  uint32_t q = (u >> 16) | 0x40u;                      /* NaN: truncate, forced quiet */
  return (uint16_t)kvs__sel((u & 0x7fffffffu) > 0x7f800000u, q, r);
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

/* Arrays. gcc -O2 vectorizes only loops whose trip count it knows to be a
 * multiple of the vector width ("very cheap" cost model), hence the fixed
 * chunks of KVS__HCHUNK with a scalar tail. */
#define KVS__HCHUNK 16u

static inline void kvs__h_to_f32_n(float *dst, const uint16_t *src, size_t n, int dtype)
{
  size_t i = 0;
  if (dtype == 2) {
    for (; i + KVS__HCHUNK <= n; i += KVS__HCHUNK)
      for (unsigned j = 0; j < KVS__HCHUNK; j++) dst[i + j] = kvs__bf16_to_f32_i(src[i + j]);
  } else {
    for (; i + KVS__HCHUNK <= n; i += KVS__HCHUNK)
      for (unsigned j = 0; j < KVS__HCHUNK; j++) dst[i + j] = kvs__f16_to_f32_i(src[i + j]);
  }
  for (; i < n; i++) dst[i] = kvs__h_to_f32(src[i], dtype);
}

static inline void kvs__f32_to_h_n(uint16_t *dst, const float *src, size_t n, int dtype)
{
  size_t i = 0;
  if (dtype == 2) {
    for (; i + KVS__HCHUNK <= n; i += KVS__HCHUNK)
      for (unsigned j = 0; j < KVS__HCHUNK; j++) dst[i + j] = kvs__f32_to_bf16_i(src[i + j]);
  } else {
    for (; i + KVS__HCHUNK <= n; i += KVS__HCHUNK)
      for (unsigned j = 0; j < KVS__HCHUNK; j++) dst[i + j] = kvs__f32_to_f16_i(src[i + j]);
  }
  for (; i < n; i++) dst[i] = kvs__f32_to_h(src[i], dtype);
}

#endif
