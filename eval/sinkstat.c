/* SPDX-License-Identifier: MIT */
/* Measured attention sinks; see sinkstat.h. */
#include <stdlib.h>

#include "eval/sinkstat.h"

uint32_t kvs__sinks_measure(const double *recv, uint32_t L, uint32_t H, uint32_t n, double k,
                            uint8_t *flags)
{
  uint32_t total = 0;
  double uni = 0;
  /* walk j downwards so the uniform share sum_{i>=j+D} 1/(i+1) accumulates */
  for (uint32_t jj = n; jj-- > 0;) {
    if ((uint64_t)jj + KVS_SINK_MIN_DIST < n)
      uni += 1.0 / ((double)jj + KVS_SINK_MIN_DIST + 1.0);
    flags[jj] = 0;
    if ((uint64_t)jj + KVS_SINK_MIN_DIST + KVS_SINK_MIN_QUERIES > n)
      continue;
    uint32_t heads = 0;
    for (uint32_t lh = 0; lh < L * H; lh++)
      if (recv[(size_t)lh * n + jj] > k * uni)
        heads++;
    flags[jj] = (uint64_t)KVS_SINK_HEAD_DIV * heads >= (uint64_t)L * H;
    total += flags[jj];
  }
  return total;
}
