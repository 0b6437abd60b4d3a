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
/* The same queued on m's context's legacy default stream, after what was
 * queued before; the data is there once kvs__cudrv_sync returns. Small
 * requests queue their copies and wait once, instead of once per copy
 * and again at the end. */
int kvs__vmm_to_host_async(const kvs__vmm *m, void *dst, uint64_t off, size_t n);
int kvs__vmm_from_host_async(const kvs__vmm *m, uint64_t off, const void *src, size_t n);
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

/* Page-lock host memory for faster copies (cuMemHostRegister). */
int kvs__cudrv_host_register(void *p, size_t n);
void kvs__cudrv_host_unregister(void *p);

#endif
