/* Attention sinks measured in the model itself: token j is a sink when,
 * in more than half of the layers, at least half of the heads give it
 * more than KVS_SINK_K times the uniform share of attention. The share is
 * taken over all queries i >= j: sum_i a[i][j] / sum_i 1/(i+1). */
#ifndef KVS_EVAL_SINKSTAT_H
#define KVS_EVAL_SINKSTAT_H

#include <stdint.h>

#define KVS_SINK_K 4.0

/* recv: [L][H][n] attention received (summed over queries); flags[n] set to
 * 0/1. Returns the number of sinks. */
uint32_t kvs__sinks_measure(const double *recv, uint32_t L, uint32_t H, uint32_t n, double k,
                            uint8_t *flags);

#endif
