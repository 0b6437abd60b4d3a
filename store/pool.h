/* The slab pool: one backend allocation carved into equal chunks; each
 * chunk in use serves one slot size (a class). A class whose slot is larger
 * than a chunk takes a run of contiguous chunks per slot ("span"). All
 * metadata lives in host memory since the pool itself may be GPU memory. */
#ifndef KVS_DAEMON_POOL_H
#define KVS_DAEMON_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

#define KVS_POOL_ALIGN 64u
#define KVS_POOL_MAX_CLASSES 64u

typedef struct kvs__pool kvs__pool;

/* chunk_bytes 0 = 2 MiB (at most pool_bytes / 64); rounded up to
 * KVS_POOL_ALIGN. Slots larger than a chunk span several chunks. */
int kvs__pool_init(kvs__pool **out, kvs__backend *be, size_t pool_bytes, size_t chunk_bytes);
void kvs__pool_close(kvs__pool *p);
/* Class id (>= 0) for slots of slot_bytes, created on first use; each
 * call takes a reference, dropped with kvs__pool_class_put (then, once the
 * last goes, the id may serve another size). -EINVAL for 0, -E2BIG when
 * one slot cannot fit in the pool, -ENOSPC when all class ids are taken. */
int kvs__pool_class(kvs__pool *p, size_t slot_bytes);
void kvs__pool_class_put(kvs__pool *p, int cls);
/* A free slot of class cls or -ENOSPC (no free slot and no free chunks). */
int kvs__pool_alloc(kvs__pool *p, int cls, void **slot);
void kvs__pool_free(kvs__pool *p, void *slot);

size_t kvs__pool_bytes(const kvs__pool *p);       /* capacity (whole chunks) */
size_t kvs__pool_used_bytes(const kvs__pool *p);  /* bytes of slots in use */
size_t kvs__pool_free_bytes(const kvs__pool *p);  /* bytes of free chunks */

#endif
