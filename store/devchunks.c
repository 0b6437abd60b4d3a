/* SPDX-License-Identifier: MIT */
#include "store/devchunks.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "kernels/cudrv.h"

struct kvs__devchunks {
  int ordinal;
  size_t n, chunk;
  uint64_t va;
  uint64_t *h;              /* per chunk: its allocation handle, 0 = none */
};

int kvs__devchunks_map(int ordinal, size_t n, size_t chunk, void **base, kvs__devchunks **out)
{
  size_t gran = 0;
  int rc = kvs__cudrv_granularity(ordinal, &gran);
  if (rc)
    return rc;
  if (n == 0 || chunk == 0 || chunk % gran || n > SIZE_MAX / chunk)
    return -ENOTSUP;
  kvs__devchunks *d = calloc(1, sizeof *d);
  if (!d || !(d->h = calloc(n, sizeof *d->h))) {
    free(d);
    return -ENOMEM;
  }
  d->ordinal = ordinal;
  d->n = n;
  d->chunk = chunk;
  if ((rc = kvs__cudrv_reserve(ordinal, n * chunk, gran, &d->va)) == 0)
    for (size_t i = 0; i < n && rc == 0; i++)
      rc = kvs__cudrv_chunk_create(ordinal, d->va + i * chunk, chunk, &d->h[i]);
  if (rc) {
    kvs__devchunks_unmap(d);
    return rc;
  }
  *base = (void *)(uintptr_t)d->va;
  *out = d;
  return 0;
}

void kvs__devchunks_unmap(kvs__devchunks *d)
{
  if (!d)
    return;
  for (size_t i = 0; i < d->n; i++)
    if (d->h[i])
      kvs__cudrv_chunk_destroy(d->ordinal, d->va + i * d->chunk, d->chunk, d->h[i]);
  kvs__cudrv_unreserve(d->ordinal, d->va, d->n * d->chunk);
  free(d->h);
  free(d);
}

int kvs__devchunks_export(kvs__devchunks *d, size_t i)
{
  if (!d || i >= d->n || !d->h[i])
    return -EINVAL;
  return kvs__cudrv_chunk_export(d->h[i]);
}

int kvs__devchunks_replace(kvs__devchunks *d, size_t i)
{
  if (!d || i >= d->n || !d->h[i])
    return -EINVAL;
  /* The old one goes first: when no importer holds it any more its memory
   * is back before the new one is taken. */
  kvs__cudrv_chunk_destroy(d->ordinal, d->va + i * d->chunk, d->chunk, d->h[i]);
  d->h[i] = 0;
  return kvs__cudrv_chunk_create(d->ordinal, d->va + i * d->chunk, d->chunk, &d->h[i]);
}

int kvs__devchunks_ordinal(const kvs__devchunks *d) { return d ? d->ordinal : -1; }
