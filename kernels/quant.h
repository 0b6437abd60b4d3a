/* SPDX-License-Identifier: MIT */
/* The quantized block format and its C reference implementation.
 *
 * This file is the definition: the CUDA kernels (quant.cu) must produce the
 * same bytes (codes may differ by one step where float evaluation order
 * differs; tests/gpu states the fraction).
 *
 * A block holds G tokens (rows) of one layer, C = kv_heads * head_dim
 * channels per row, for K and V. Inputs and 16-bit outputs are raw 16-bit
 * words of the model dtype (fp16 or bf16), row-major [G][C].
 *
 * Layout of the fixed-size quantized part (offsets from kvs__qlayout; every
 * section starts 16-byte aligned):
 *   header    kvs__qhdr (sink mask, counts)
 *   kscale[C], kmin[C]           fp16, keys per channel over the G rows
 *   kcodes[G][kstride]           key codes, k_bits each
 *   vscale[G][C/vg], vmin[...]   fp16, values per row over groups of vg channels
 *   vcodes[G][vstride]           value codes, v_bits each
 *   kout[G][n_kout], vout[G][n_vout]  sparse outliers {u16 channel, u16 raw}
 * Codes of a row form a little-endian bit stream: element i occupies bits
 * [i*b, i*b + b); a row's stride is ceil(C*b/8) rounded up to 4 bytes.
 * Dequantized x = min + code * scale (fp32 arithmetic, then rounded to the
 * dtype). code = clamp(floor((x - min) * (1/scale) + 0.5), 0, 2^b - 1) using
 * the fp16-rounded scale and min; scale = (max - min) / (2^b - 1), and a
 * zero range gives scale 0 and code 0.
 *
 * Sink rows (bit t of the mask set) are stored outside the block as raw
 * 16-bit rows (K row then V row, 2*C words each, in increasing t), have no
 * codes or outliers, and are excluded from every min/max. Outliers are the
 * n_out largest |x| of each non-sink row (ties: lower channel first), kept
 * as raw 16-bit, excluded from the min/max, written back on dequantize;
 * entries are sorted by channel.
 *
 * Decisions where the above is silent (the C reference does exactly this):
 * - Scales and mins are fp16 for both dtypes; a bf16 range beyond fp16
 *   gives -ERANGE. scale is computed in fp32 as (max - min) / (2^b - 1)
 *   then rounded to fp16; 1/scale is the fp32 reciprocal of the fp16
 *   scale; no fused multiply-add in code or dequantize arithmetic.
 * - The header is written in full (sink_mask, n_sinks = popcount, k_bits,
 *   v_bits, rows = G); every byte of the block that is not a code is
 *   zero unless written, and code bits past C*b in a row are zero. Sink
 *   rows have all-zero codes and no outlier entries (their slots are 0).
 * - A range with no member (all rows sinks, or every element an outlier)
 *   stores scale 0 and min 0.
 * - Outlier order: larger |x| by the magnitude bits of the 16-bit word,
 *   ties to the lower channel. Entries are a u32 `channel | raw << 16`.
 * - bits 16 is passthrough: codes are the raw 16-bit words, stride =
 *   2*C rounded up to 4 bytes as for every width, scale/min sections
 *   exist but stay 0, and k/v_outliers are ignored (no outlier sections).
 * - kvs__outlier_count(C, f) = min(C, ceilf(f * C)) in fp32 with f
 *   capped at 0.05 (DESIGN's range is 0.1-1 %; 5 % leaves headroom);
 *   kvs__qparams_check rejects k/v_outliers above that cap (-EINVAL),
 *   as well as G outside 1..64, C outside 1..65536, vg not dividing C.
 * - kvs__quantize_block checks every input word (sink rows too) for
 *   NaN/Inf before it writes anything, and returns -EINVAL for mask bits
 *   at or above G. kvs__dequantize_block returns -EINVAL when the header
 *   does not match the params or an outlier channel is out of range. */
#ifndef KVS_KERNELS_QUANT_H
#define KVS_KERNELS_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include <kvsink.h>

#define KVS_QBLOCK_MAX_G 64u   /* sink mask is 64 bits */

typedef struct kvs__qparams {
  uint32_t group;     /* G: rows per block, 1..64 */
  uint32_t channels;  /* C = kv_heads * head_dim */
  uint32_t v_group;   /* vg: channels per value group; divides C */
  uint32_t k_bits, v_bits;   /* 2, 3, 4, 8; 16 = raw passthrough */
  uint32_t k_outliers, v_outliers; /* per-row outlier count (kvs__outlier_count) */
  kvs_dtype dtype;
} kvs__qparams;

typedef struct kvs__qhdr {
  uint64_t sink_mask;
  uint16_t n_sinks;
  uint8_t k_bits, v_bits;
  uint32_t rows;      /* G */
} kvs__qhdr;

typedef struct kvs__qlayout {
  size_t kscale, kmin, kcodes, vscale, vmin, vcodes, kout, vout, total;
  size_t kstride, vstride;   /* bytes per row of codes */
} kvs__qlayout;

/* Check params: returns 0 or -EINVAL. */
int kvs__qparams_check(const kvs__qparams *p);
/* Fill the layout; returns total bytes of the quantized part. */
size_t kvs__qlayout_of(const kvs__qparams *p, kvs__qlayout *l);
/* Outliers per row for a fraction f of C channels (0 when f <= 0). */
uint32_t kvs__outlier_count(uint32_t channels, float fraction);
/* Bytes of one sink row (K and V, 16-bit). */
static inline size_t kvs__sink_row_bytes(const kvs__qparams *p) { return (size_t)p->channels * 2u * 2u; }

/* Quantize G rows of K and V. sink_rows[i] receives the i-th sink row
 * (2*C words); it may be NULL when the mask is 0. Returns 0, KVS_ENAN on
 * NaN/Inf anywhere in the input, -ERANGE when a scale overflows fp16,
 * -EINVAL on bad params. */
int kvs__quantize_block(const kvs__qparams *p, const uint16_t *k, const uint16_t *v,
                        uint64_t sink_mask, void *block, uint16_t *const *sink_rows);

/* Dequantize rows [r0, r1) of a block into k_out/v_out ([r1-r0][C], raw
 * 16-bit of p->dtype). sink_rows as written by kvs__quantize_block. */
int kvs__dequantize_block(const kvs__qparams *p, const void *block,
                          const uint16_t *const *sink_rows, uint32_t r0, uint32_t r1,
                          uint16_t *k_out, uint16_t *v_out);

/* Average stored bits per K/V element of a block with n_sinks sink rows
 * (all metadata, outliers and sink rows counted). */
double kvs__bits_per_element(const kvs__qparams *p, uint32_t n_sinks);

#endif
