/* SPDX-License-Identifier: MIT */
/* libkvsink utilities: version, 16-bit float arrays, the storage cost of
 * quantization settings. Thin wrappers over kernels/ so that tools and
 * applications need only <kvsink.h>. */
#include <errno.h>
#include <math.h>

#include <kvsink.h>
#include "kernels/half.h"
#include "kernels/quant.h"

/* the header's macros and configure's version are one fact: a release
 * that bumps one without the other does not build */
_Static_assert(sizeof KVS_VERSION_STRING == sizeof PACKAGE_VERSION, "kvsink.h version != configure's");

const char *kvs_version(void) { return PACKAGE_VERSION; }

void kvs_f16_from_f32(uint16_t *dst, const float *src, size_t n) { kvs__f32_to_h_n(dst, src, n, KVS_DTYPE_F16); }
void kvs_f16_to_f32(float *dst, const uint16_t *src, size_t n) { kvs__h_to_f32_n(dst, src, n, KVS_DTYPE_F16); }
void kvs_bf16_from_f32(uint16_t *dst, const float *src, size_t n) { kvs__f32_to_h_n(dst, src, n, KVS_DTYPE_BF16); }
void kvs_bf16_to_f32(float *dst, const uint16_t *src, size_t n) { kvs__h_to_f32_n(dst, src, n, KVS_DTYPE_BF16); }

int kvs_half_from_f32(uint16_t *dst, const float *src, size_t n, kvs_dtype dtype)
{
  if (dtype != KVS_DTYPE_F16 && dtype != KVS_DTYPE_BF16)
    return -EINVAL;
  kvs__f32_to_h_n(dst, src, n, (int)dtype);
  return 0;
}

int kvs_half_to_f32(float *dst, const uint16_t *src, size_t n, kvs_dtype dtype)
{
  if (dtype != KVS_DTYPE_F16 && dtype != KVS_DTYPE_BF16)
    return -EINVAL;
  kvs__h_to_f32_n(dst, src, n, (int)dtype);
  return 0;
}

int kvs_bits_per_element(const kvs_quant_settings *s, uint32_t n_sinks, double *bits)
{
  if (!s || !bits || s->k_bits < 0 || s->v_bits < 0 || !(s->outliers >= 0.0f) || !isfinite(s->outliers))
    return -EINVAL;
  uint32_t vg = s->v_group ? s->v_group : 32u;
  kvs__qparams p = {
    .group = s->group, .channels = s->channels, .v_group = vg,
    .k_bits = (uint32_t)s->k_bits, .v_bits = (uint32_t)s->v_bits,
    .k_outliers = kvs__outlier_count(s->channels, s->outliers),
    .dtype = s->dtype,
  };
  p.v_outliers = p.k_outliers;
  if (kvs__qparams_check(&p) < 0 || n_sinks > p.group)
    return -EINVAL;
  *bits = kvs__bits_per_element(&p, n_sinks);
  return 0;
}
