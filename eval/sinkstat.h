/* SPDX-License-Identifier: MIT */
/* Attention sinks measured in the model itself (eval/EVAL.md, "Measured
 * attention sinks"). For token j, each (layer, head) compares the
 * attention j receives from distant queries with the uniform share:
 *   r = sum_i a[i][j] / sum_i 1/(i+1)   over queries i >= j + D.
 * Token j is a sink when r > k in at least a third of all layers x heads
 * (KVS_SINK_HEAD_DIV), and at least KVS_SINK_MIN_QUERIES distant
 * queries exist (j + D + KVS_SINK_MIN_QUERIES <= n).
 * - Near queries (i < j + D) are left out: attention to the last few
 *   tokens is local, not a sink.
 * - The minimum number of queries rejects the end of a context, where a
 *   ratio over a handful of queries is noise (with 1..128 distant queries,
 *   ordinary tokens reached r > 4 in up to 29 of 48 heads on kvsink-tiny);
 *   the last D + KVS_SINK_MIN_QUERIES tokens are never sinks.
 * - Heads are counted over all layers together: on kvsink-tiny sinks are
 *   strong in some layers (0, 6, 7: 6 of 6 heads) and absent in others
 *   (4, 5), so "most heads in most layers" missed position 0. */
#ifndef KVS_EVAL_SINKSTAT_H
#define KVS_EVAL_SINKSTAT_H

#include <stdint.h>

#define KVS_SINK_K 4.0
#define KVS_SINK_MIN_DIST 32u
#define KVS_SINK_MIN_QUERIES 128u
#define KVS_SINK_HEAD_DIV 3u   /* at least 1/KVS_SINK_HEAD_DIV of layers x heads */

/* recv: [L][H][n] attention received from queries i >= j + KVS_SINK_MIN_DIST
 * (summed); flags[n] set to 0/1. Returns the number of sinks. */
uint32_t kvs__sinks_measure(const double *recv, uint32_t L, uint32_t H, uint32_t n, double k,
                            uint8_t *flags);

#endif
