/* Attention sinks measured in the model itself: token j is a sink when,
 * in more than half of the layers, at least half of the heads give it
 * more than KVS_SINK_K times the uniform share of attention from distant
 * queries: sum_i a[i][j] / sum_i 1/(i+1) over queries i >= j + D. Near
 * queries are left out because local attention (to the last few tokens)
 * is not a sink; the last D tokens of a context are never sinks. */
#ifndef KVS_EVAL_SINKSTAT_H
#define KVS_EVAL_SINKSTAT_H

#include <stdint.h>

#define KVS_SINK_K 4.0
#define KVS_SINK_MIN_DIST 32u

/* recv: [L][H][n] attention received from queries i >= j + KVS_SINK_MIN_DIST
 * (summed); flags[n] set to
 * 0/1. Returns the number of sinks. */
uint32_t kvs__sinks_measure(const double *recv, uint32_t L, uint32_t H, uint32_t n, double k,
                            uint8_t *flags);

#endif
