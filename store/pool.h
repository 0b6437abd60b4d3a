/* SPDX-License-Identifier: MIT */
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
#define KVS_POOL_MAX_CLASSES 256u  /* two per space (blocks, sink rows) */

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
/* The same for one owner (a space): classes of different owners never
 * share a chunk, so a chunk handed to a client holds one space's blocks
 * only. kvs__pool_class is owner 0. */
int kvs__pool_class_owned(kvs__pool *p, size_t slot_bytes, uint64_t owner);
void kvs__pool_class_put(kvs__pool *p, int cls);
/* A free slot of class cls or -ENOSPC (no free slot and no free chunks). */
int kvs__pool_alloc(kvs__pool *p, int cls, void **slot);
void kvs__pool_free(kvs__pool *p, void *slot);
/* Slots per unit of class cls. */
uint32_t kvs__pool_class_slots(const kvs__pool *p, int cls);
/* Slots freed so far: while it stays the same, a class that had no slot
 * to give still has none (only frees make room). */
uint64_t kvs__pool_frees(const kvs__pool *p);

size_t kvs__pool_bytes(const kvs__pool *p);       /* capacity (whole chunks) */
size_t kvs__pool_used_bytes(const kvs__pool *p);  /* bytes of slots in use */
size_t kvs__pool_free_bytes(const kvs__pool *p);  /* bytes of free chunks */

/* Exportable pools (the host backend): chunk i is its own memfd, mapped
 * at base + i * chunk. A slot lies in a unit (its first chunk `unit`,
 * `span` chunks) at byte `off` of the unit; `gen` names the unit's
 * current memfd (a chunk gets a new one, gen + 1, when it is reused after
 * its fd was exported, so a client's old mapping never shows another
 * space's data). */
typedef struct kvs__pool_loc {
  uint32_t unit, gen, span;
  uint64_t off;
} kvs__pool_loc;
/* 0, -ENOTSUP (pool not exportable), -EINVAL (not a slot in use). */
int kvs__pool_locate(const kvs__pool *p, const void *slot, kvs__pool_loc *loc);
/* A new read-only (O_RDONLY) fd of chunk's memfd, or an exported fd of
 * its VMM allocation (GPU: the importer picks its access, read-only in
 * libkvsink), for the caller to pass and close; marks the chunk exported.
 * *gen gets its generation. */
int kvs__pool_chunk_export(kvs__pool *p, uint32_t chunk, uint32_t *gen);
uint32_t kvs__pool_nchunks(const kvs__pool *p);
size_t kvs__pool_chunk_bytes(const kvs__pool *p);
/* 0 (one allocation), KVS_POOL_EXPORT_HOST (memfd chunks) or
 * KVS_POOL_EXPORT_DEVICE (a CUDA VMM allocation per chunk, exported as a
 * POSIX fd; kvs__pool_gpu names the GPU ordinal, else -1). */
#define KVS_POOL_EXPORT_HOST 1
#define KVS_POOL_EXPORT_DEVICE 2
int kvs__pool_exportable(const kvs__pool *p);
int kvs__pool_gpu(const kvs__pool *p);
uint32_t kvs__pool_chunk_gen(const kvs__pool *p, uint32_t chunk);

#endif
