/* SPDX-License-Identifier: MIT */
/* 16-bit K/V rows: the NaN/Inf scan, and the copy out of a client's
 * memory that scans as it copies. */
#ifndef KVS_STORE_ROWS_H
#define KVS_STORE_ROWS_H

#include <stddef.h>
#include <stdint.h>

#include <kvsink.h>

/* 1 when some value of x[0, n) is NaN or Inf (exponent all ones). */
int kvs__has_nonfinite(const uint16_t *x, size_t n, kvs_dtype dt);

/* dst[i] = src[i] for i < n, each value loaded once: what is checked is
 * what was stored, even if src (shared memory) changes meanwhile.
 * 1 when some stored value is NaN or Inf (all of them are stored). */
int kvs__copy_finite(uint16_t *restrict dst, const uint16_t *restrict src, size_t n,
                     kvs_dtype dt);

#endif
