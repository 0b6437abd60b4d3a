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
    uint32_t layers = 0;
    for (uint32_t l = 0; l < L; l++) {
      uint32_t heads = 0;
      for (uint32_t h = 0; h < H; h++)
        if (recv[((size_t)l * H + h) * n + jj] > k * uni)
          heads++;
      if (2 * heads >= H)
        layers++;
    }
    flags[jj] = 2 * layers > L;
    total += flags[jj];
  }
  return total;
}
