/* SPDX-License-Identifier: MIT */
/* The CUDA driver API, loaded at run time with dlopen("libcuda.so.1"), so
 * kvsinkd and libkvsink run (and fall back to host segments) on machines
 * without a driver. Used for device segments (docs/DESIGN.md, Data flow 4):
 * cuMemCreate allocations exported as POSIX file descriptors.
 * Built only with CUDA headers present (HAVE_CUDA); otherwise every call
 * answers -ENOSYS. Errors: -ENOSYS no driver, -ENODEV no such GPU, -EIO a
 * driver call failed (kvs__cudrv_error() says which). */
#ifndef KVS_KERNELS_CUDRV_H
#define KVS_KERNELS_CUDRV_H

#include <stddef.h>
#include <stdint.h>

#define KVS_GPU_UUID_BYTES 16u

/* Load the driver and cuInit once; 0 or -ENOSYS. Thread-safe. */
int kvs__cudrv_load(void);
/* Text of the last failure in this thread (static storage). */
const char *kvs__cudrv_error(void);

int kvs__cudrv_count(int *n);
int kvs__cudrv_uuid(int ordinal, uint8_t uuid[KVS_GPU_UUID_BYTES]);
/* Ordinal of the GPU of the calling thread's current context; without one,
 * device 0's primary context is made current (as the runtime does). */
int kvs__cudrv_current(int *ordinal);

/* One VMM allocation mapped read-write for its GPU in this process. */
typedef struct kvs__vmm {
  uint64_t ptr;            /* CUdeviceptr, 0 = none */
  uint64_t size;           /* granularity-rounded */
  uint64_t handle;         /* CUmemGenericAllocationHandle */
  void *ctx;               /* CUcontext used for copies and syncs */
  int ordinal;
} kvs__vmm;

/* Allocate size bytes (rounded up to the granularity) on GPU ordinal,
 * exportable as a POSIX fd, and map it here. *fd_out gets the exported fd
 * (the caller closes it). The context is the GPU's primary one. */
int kvs__vmm_create(kvs__vmm *m, int ordinal, uint64_t size, int *fd_out);
/* Import an exported fd of size bytes and map it on the current GPU; the
 * fd can be closed afterwards. */
int kvs__vmm_import(kvs__vmm *m, int fd, uint64_t size);
/* Unmap, release the address range and the allocation. Safe on zeroed m. */
void kvs__vmm_close(kvs__vmm *m);

/* Copies on m's context; they return when the data is there. */
int kvs__vmm_to_host(const kvs__vmm *m, void *dst, uint64_t off, size_t n);
int kvs__vmm_from_host(const kvs__vmm *m, uint64_t off, const void *src, size_t n);
/* The same queued on stream (a CUstream of m's context; NULL: the legacy
 * default stream), after what was queued there before; the data is there
 * once that stream (or the context) is synchronized. Small requests
 * queue their copies and wait once, instead of once per copy and again
 * at the end. */
int kvs__vmm_to_host_async(const kvs__vmm *m, void *stream, void *dst, uint64_t off, size_t n);
int kvs__vmm_from_host_async(const kvs__vmm *m, void *stream, uint64_t off, const void *src,
                             size_t n);
/* A kvs__vmm without memory that names GPU ordinal's primary context,
 * for the calls below (staging of host-segment sessions). */
int kvs__cudrv_ctx_of(kvs__vmm *m, int ordinal);
/* Host <-> device copies on m's context, synchronous. */
int kvs__cudrv_htod(const kvs__vmm *m, uint64_t dst, const void *src, size_t n);
int kvs__cudrv_dtoh(const kvs__vmm *m, void *dst, uint64_t src, size_t n);
/* Device memory on m's GPU and context (cuMemAlloc); 0 or -errno. */
int kvs__cudrv_alloc(const kvs__vmm *m, uint64_t *dptr, size_t n);
void kvs__cudrv_free(const kvs__vmm *m, uint64_t dptr);
/* Copy n bytes at off in m to device address dst (same GPU), in stream
 * order on m's context (kernels queued after it see the data). */
int kvs__vmm_to_device(const kvs__vmm *m, uint64_t dst, uint64_t off, size_t n);
/* Wait for everything queued in m's context (or the current one: NULL). */
int kvs__cudrv_sync(const kvs__vmm *m);
/* Wait for one stream (a CUstream of m's context) only. */
int kvs__cudrv_sync_stream(const kvs__vmm *m, void *stream);

/* Pieces of a memory made of several VMM allocations in one reserved
 * range (exportable GPU pools, Attend: one allocation per pool chunk, each
 * exported on its own). Every call makes GPU ordinal's primary context
 * current first. Handles are CUmemGenericAllocationHandle values. */
/* Granularity of POSIX-fd exportable allocations on GPU ordinal. */
int kvs__cudrv_granularity(int ordinal, size_t *gran);
/* Reserve (and free) bytes of device address space on GPU ordinal. */
int kvs__cudrv_reserve(int ordinal, size_t bytes, size_t align, uint64_t *va);
void kvs__cudrv_unreserve(int ordinal, uint64_t va, size_t bytes);
/* A fresh allocation of bytes (a granularity multiple), exportable as a
 * POSIX fd, mapped read-write at va (inside a reservation). On error
 * nothing is left allocated or mapped. */
int kvs__cudrv_chunk_create(int ordinal, uint64_t va, size_t bytes, uint64_t *handle);
/* Unmap [va, va + bytes) and release handle (the memory lives on while an
 * importer maps it). */
void kvs__cudrv_chunk_destroy(int ordinal, uint64_t va, size_t bytes, uint64_t handle);
/* A new fd of handle (the caller passes and closes it). */
int kvs__cudrv_chunk_export(uint64_t handle);
/* Import n fds of chunk bytes each (chunk a granularity multiple) and map
 * them contiguously at a fresh reservation on GPU ordinal, READ-ONLY for
 * that GPU (CU_MEM_ACCESS_FLAGS_PROT_READ). *va gets the address; the fds
 * may be closed afterwards. On error nothing is left mapped. */
int kvs__cudrv_import_ro(int ordinal, const int *fds, uint32_t n, size_t chunk, uint64_t *va);
/* Undo kvs__cudrv_import_ro after the context finished every kernel that
 * reads it (synchronizes the context first). */
void kvs__cudrv_unimport(int ordinal, uint64_t va, uint32_t n, size_t chunk);
/* The ordinal of the GPU with this UUID, or -ENODEV. */
int kvs__cudrv_find_uuid(const uint8_t uuid[KVS_GPU_UUID_BYTES], int *ordinal);

/* Page-lock host memory for faster copies (cuMemHostRegister). */
int kvs__cudrv_host_register(void *p, size_t n);
/* The same with m's context made current first. */
int kvs__vmm_host_register(const kvs__vmm *m, void *p, size_t n);
/* An event (a CUevent of m's context, created into *ev when NULL)
 * recorded on stream; waited for; synchronized and destroyed. */
int kvs__cudrv_event_record(const kvs__vmm *m, void **ev, void *stream);
int kvs__cudrv_event_wait(const kvs__vmm *m, void *ev);
void kvs__cudrv_event_free(const kvs__vmm *m, void *ev);
void kvs__cudrv_host_unregister(void *p);

#endif
