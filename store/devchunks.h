/* SPDX-License-Identifier: MIT */
/* Pool memory made of one CUDA VMM allocation per chunk (exportable GPU
 * pools, Attend): the chunks are mapped one after the other in one
 * reserved device range, so the store still sees one contiguous pool, and
 * each chunk can be exported alone as a POSIX fd (kernels/cudrv.c). */
#ifndef KVS_STORE_DEVCHUNKS_H
#define KVS_STORE_DEVCHUNKS_H

#include <stddef.h>

typedef struct kvs__devchunks kvs__devchunks;

/* n chunks of chunk bytes on GPU ordinal at *base. -ENOTSUP when chunk is
 * not a multiple of the export granularity, -ENOSYS without a driver,
 * -ENOMEM / -EIO; nothing is left behind on error. */
int kvs__devchunks_map(int ordinal, size_t n, size_t chunk, void **base, kvs__devchunks **out);
void kvs__devchunks_unmap(kvs__devchunks *d);
/* A new fd of chunk i's allocation (the caller passes and closes it). */
int kvs__devchunks_export(kvs__devchunks *d, size_t i);
/* Give chunk i a fresh allocation at the same address (its contents are
 * lost); the old allocation lives on only in importers' mappings. On
 * error the chunk has no memory (-ENOMEM, -EIO): never use it again. */
int kvs__devchunks_replace(kvs__devchunks *d, size_t i);
int kvs__devchunks_ordinal(const kvs__devchunks *d);

#endif
