/* SPDX-License-Identifier: MIT */
/* The CUDA driver API through dlopen (kernels/cudrv.h). cuda.h gives the
 * types and prototypes only; the functions come from libcuda.so.1 at run
 * time, so nothing here needs a driver at build or link time. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "kernels/cudrv.h"

#ifndef HAVE_CUDA

int kvs__cudrv_load(void) { return -ENOSYS; }
const char *kvs__cudrv_error(void) { return "built without CUDA"; }
int kvs__cudrv_count(int *n) { *n = 0; return -ENOSYS; }
int kvs__cudrv_uuid(int o, uint8_t u[KVS_GPU_UUID_BYTES]) { (void)o; (void)u; return -ENOSYS; }
int kvs__cudrv_current(int *o) { *o = -1; return -ENOSYS; }
int kvs__vmm_create(kvs__vmm *m, int o, uint64_t s, int *fd) { (void)m; (void)o; (void)s; *fd = -1; return -ENOSYS; }
int kvs__vmm_import(kvs__vmm *m, int fd, uint64_t s) { (void)m; (void)fd; (void)s; return -ENOSYS; }
void kvs__vmm_close(kvs__vmm *m) { (void)m; }
int kvs__vmm_to_host(const kvs__vmm *m, void *d, uint64_t o, size_t n) { (void)m; (void)d; (void)o; (void)n; return -ENOSYS; }
int kvs__vmm_from_host(const kvs__vmm *m, uint64_t o, const void *s, size_t n) { (void)m; (void)o; (void)s; (void)n; return -ENOSYS; }
int kvs__vmm_to_host_async(const kvs__vmm *m, void *st, void *d, uint64_t o, size_t n) { (void)m; (void)st; (void)d; (void)o; (void)n; return -ENOSYS; }
int kvs__vmm_from_host_async(const kvs__vmm *m, void *st, uint64_t o, const void *s, size_t n) { (void)m; (void)st; (void)o; (void)s; (void)n; return -ENOSYS; }
int kvs__cudrv_sync(const kvs__vmm *m) { (void)m; return -ENOSYS; }
int kvs__cudrv_sync_stream(const kvs__vmm *m, void *s) { (void)m; (void)s; return -ENOSYS; }
int kvs__cudrv_alloc(const kvs__vmm *m, uint64_t *p, size_t n) { (void)m; (void)n; *p = 0; return -ENOSYS; }
int kvs__cudrv_ctx_of(kvs__vmm *m, int o) { (void)m; (void)o; return -ENOSYS; }
int kvs__cudrv_htod(const kvs__vmm *m, uint64_t d, const void *s, size_t n) { (void)m; (void)d; (void)s; (void)n; return -ENOSYS; }
int kvs__cudrv_dtoh(const kvs__vmm *m, void *d, uint64_t s, size_t n) { (void)m; (void)d; (void)s; (void)n; return -ENOSYS; }
void kvs__cudrv_free(const kvs__vmm *m, uint64_t p) { (void)m; (void)p; }
int kvs__vmm_to_device(const kvs__vmm *m, uint64_t d, uint64_t o, size_t n) { (void)m; (void)d; (void)o; (void)n; return -ENOSYS; }
int kvs__cudrv_host_register(void *p, size_t n) { (void)p; (void)n; return -ENOSYS; }
int kvs__vmm_host_register(const kvs__vmm *m, void *p, size_t n) { (void)m; (void)p; (void)n; return -ENOSYS; }
void kvs__cudrv_host_unregister(void *p) { (void)p; }
int kvs__cudrv_event_record(const kvs__vmm *m, void **ev, void *s) { (void)m; (void)ev; (void)s; return -ENOSYS; }
int kvs__cudrv_event_wait(const kvs__vmm *m, void *ev) { (void)m; (void)ev; return -ENOSYS; }
void kvs__cudrv_event_free(const kvs__vmm *m, void *ev) { (void)m; (void)ev; }

int kvs__cudrv_granularity(int o, size_t *g) { (void)o; *g = 0; return -ENOSYS; }
int kvs__cudrv_reserve(int o, size_t b, size_t a, uint64_t *va) { (void)o; (void)b; (void)a; *va = 0; return -ENOSYS; }
void kvs__cudrv_unreserve(int o, uint64_t va, size_t b) { (void)o; (void)va; (void)b; }
int kvs__cudrv_chunk_create(int o, uint64_t va, size_t b, uint64_t *h) { (void)o; (void)va; (void)b; *h = 0; return -ENOSYS; }
void kvs__cudrv_chunk_destroy(int o, uint64_t va, size_t b, uint64_t h) { (void)o; (void)va; (void)b; (void)h; }
int kvs__cudrv_chunk_export(uint64_t h) { (void)h; return -ENOSYS; }
int kvs__cudrv_import_ro(int o, const int *f, uint32_t n, size_t c, uint64_t *va) { (void)o; (void)f; (void)n; (void)c; *va = 0; return -ENOSYS; }
void kvs__cudrv_unimport(int o, uint64_t va, uint32_t n, size_t c) { (void)o; (void)va; (void)n; (void)c; }
int kvs__cudrv_find_uuid(const uint8_t u[KVS_GPU_UUID_BYTES], int *o) { (void)u; *o = -1; return -ENOSYS; }

#else

#include <dlfcn.h>
#include <unistd.h>
#include <pthread.h>
#include <cuda.h>

#define XSTR(x) STR(x)
#define STR(x) #x
/* every entry point used, by the name cuda.h maps it to (_v2 ...) */
#define KVS__CU_FUNCS(X) \
  X(cuInit) X(cuGetErrorString) X(cuDeviceGetCount) X(cuDeviceGet) X(cuDeviceGetUuid) \
  X(cuDevicePrimaryCtxRetain) X(cuCtxSetCurrent) X(cuCtxGetCurrent) X(cuCtxGetDevice) \
  X(cuCtxSynchronize) X(cuMemGetAllocationGranularity) X(cuMemCreate) X(cuMemRelease) \
  X(cuMemExportToShareableHandle) X(cuMemImportFromShareableHandle) X(cuMemAddressReserve) \
  X(cuMemAddressFree) X(cuMemMap) X(cuMemUnmap) X(cuMemSetAccess) X(cuMemcpyDtoH) \
  X(cuMemcpyHtoD) X(cuMemHostRegister) X(cuMemHostUnregister) X(cuMemAlloc) X(cuMemFree) \
  X(cuMemcpyDtoDAsync) X(cuMemcpyDtoHAsync) X(cuMemcpyHtoDAsync) X(cuStreamSynchronize) \
  X(cuEventCreate) X(cuEventRecord) X(cuEventSynchronize) X(cuEventDestroy)

static struct {
#define X(f) __typeof__(f) *f;
  KVS__CU_FUNCS(X)
#undef X
} cu;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int load_rc = -ENOSYS;
static _Thread_local char errbuf[160];

const char *kvs__cudrv_error(void) { return errbuf[0] ? errbuf : "no error"; }

static void load(void)
{
  void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    snprintf(errbuf, sizeof errbuf, "no CUDA driver: %s", dlerror());
    return;
  }
#define X(f)                                                   \
  if (!(cu.f = (__typeof__(f) *)dlsym(h, XSTR(f)))) {          \
    snprintf(errbuf, sizeof errbuf, "driver lacks %s", XSTR(f)); \
    return;                                                    \
  }
  KVS__CU_FUNCS(X)
#undef X
  CUresult r = cu.cuInit(0);
  if (r != CUDA_SUCCESS) {
    snprintf(errbuf, sizeof errbuf, "cuInit failed (%d)", (int)r);
    return;
  }
  load_rc = 0;
}

int kvs__cudrv_load(void)
{
  pthread_once(&once, load);
  return load_rc;
}

/* Record a failed call; -EIO. */
static int fail(const char *what, CUresult r)
{
  const char *s = NULL;
  if (cu.cuGetErrorString) cu.cuGetErrorString(r, &s);
  snprintf(errbuf, sizeof errbuf, "%s: %s (%d)", what, s ? s : "unknown error", (int)r);
  return r == CUDA_ERROR_OUT_OF_MEMORY ? -ENOMEM : -EIO;
}
#define CU(call, what) do { CUresult r_ = (call); if (r_ != CUDA_SUCCESS) return fail(what, r_); } while (0)

int kvs__cudrv_count(int *n)
{
  *n = 0;
  int rc = kvs__cudrv_load();
  if (rc) return rc;
  CU(cu.cuDeviceGetCount(n), "cuDeviceGetCount");
  return 0;
}

int kvs__cudrv_uuid(int ordinal, uint8_t uuid[KVS_GPU_UUID_BYTES])
{
  int n, rc = kvs__cudrv_count(&n);
  if (rc) return rc;
  if (ordinal < 0 || ordinal >= n) return -ENODEV;
  CUdevice d;
  CUuuid u;
  CU(cu.cuDeviceGet(&d, ordinal), "cuDeviceGet");
  CU(cu.cuDeviceGetUuid(&u, d), "cuDeviceGetUuid");
  memcpy(uuid, u.bytes, KVS_GPU_UUID_BYTES);
  return 0;
}

/* Make ordinal's primary context current; *ctx gets it. */
static int primary(int ordinal, CUcontext *ctx)
{
  CUdevice d;
  CU(cu.cuDeviceGet(&d, ordinal), "cuDeviceGet");
  CU(cu.cuDevicePrimaryCtxRetain(ctx, d), "cuDevicePrimaryCtxRetain");
  CU(cu.cuCtxSetCurrent(*ctx), "cuCtxSetCurrent");
  return 0;
}

int kvs__cudrv_current(int *ordinal)
{
  *ordinal = -1;
  int n, rc = kvs__cudrv_count(&n);
  if (rc) return rc;
  if (n == 0) return -ENODEV;
  CUcontext ctx = NULL;
  CU(cu.cuCtxGetCurrent(&ctx), "cuCtxGetCurrent");
  if (!ctx && (rc = primary(0, &ctx))) return rc;
  CUdevice d;
  CU(cu.cuCtxGetDevice(&d), "cuCtxGetDevice");
  *ordinal = (int)d;
  return 0;
}

static void prop_of(CUmemAllocationProp *p, int ordinal)
{
  memset(p, 0, sizeof *p);
  p->type = CU_MEM_ALLOCATION_TYPE_PINNED;
  p->requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
  p->location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  p->location.id = ordinal;
}

/* Reserve a range for handle h of m->size bytes, map it, allow read-write. */
static int map_rw(kvs__vmm *m, CUmemGenericAllocationHandle h, size_t align)
{
  CUdeviceptr p = 0;
  CU(cu.cuMemAddressReserve(&p, (size_t)m->size, align, 0, 0), "cuMemAddressReserve");
  CUresult r = cu.cuMemMap(p, (size_t)m->size, 0, h, 0);
  if (r != CUDA_SUCCESS) {
    cu.cuMemAddressFree(p, (size_t)m->size);
    return fail("cuMemMap", r);
  }
  CUmemAccessDesc a;
  memset(&a, 0, sizeof a);
  a.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  a.location.id = m->ordinal;
  a.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
  r = cu.cuMemSetAccess(p, (size_t)m->size, &a, 1);
  if (r != CUDA_SUCCESS) {
    cu.cuMemUnmap(p, (size_t)m->size);
    cu.cuMemAddressFree(p, (size_t)m->size);
    return fail("cuMemSetAccess", r);
  }
  m->ptr = (uint64_t)p;
  return 0;
}

int kvs__vmm_create(kvs__vmm *m, int ordinal, uint64_t size, int *fd_out)
{
  memset(m, 0, sizeof *m);
  *fd_out = -1;
  int n, rc = kvs__cudrv_count(&n);
  if (rc) return rc;
  if (ordinal < 0 || ordinal >= n) return -ENODEV;
  if (size == 0) return -EINVAL;
  CUcontext ctx;
  if ((rc = primary(ordinal, &ctx))) return rc;
  CUmemAllocationProp p;
  prop_of(&p, ordinal);
  size_t gran = 0;
  CU(cu.cuMemGetAllocationGranularity(&gran, &p, CU_MEM_ALLOC_GRANULARITY_MINIMUM),
     "cuMemGetAllocationGranularity");
  if (gran == 0 || size > UINT64_MAX - gran) return -EINVAL;
  m->size = (size + gran - 1) / gran * gran;
  m->ordinal = ordinal;
  m->ctx = ctx;
  CUmemGenericAllocationHandle h;
  CU(cu.cuMemCreate(&h, (size_t)m->size, &p, 0), "cuMemCreate");
  int fd = -1;
  CUresult r = cu.cuMemExportToShareableHandle(&fd, h, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0);
  if (r != CUDA_SUCCESS) {
    cu.cuMemRelease(h);
    return fail("cuMemExportToShareableHandle", r);
  }
  if ((rc = map_rw(m, h, gran))) {
    cu.cuMemRelease(h);
    close(fd);
    return rc;
  }
  m->handle = (uint64_t)h;
  *fd_out = fd;
  return 0;
}

int kvs__vmm_import(kvs__vmm *m, int fd, uint64_t size)
{
  memset(m, 0, sizeof *m);
  int ordinal, rc = kvs__cudrv_current(&ordinal);
  if (rc) return rc;
  if (size == 0) return -EINVAL;
  CUcontext ctx = NULL;
  CU(cu.cuCtxGetCurrent(&ctx), "cuCtxGetCurrent");
  CUmemGenericAllocationHandle h;
  CU(cu.cuMemImportFromShareableHandle(&h, (void *)(intptr_t)fd,
                                       CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR),
     "cuMemImportFromShareableHandle");
  CUmemAllocationProp p;
  prop_of(&p, ordinal);
  size_t gran = 0;
  CUresult r = cu.cuMemGetAllocationGranularity(&gran, &p, CU_MEM_ALLOC_GRANULARITY_MINIMUM);
  if (r != CUDA_SUCCESS || gran == 0 || size % gran) {
    cu.cuMemRelease(h);
    return r != CUDA_SUCCESS ? fail("cuMemGetAllocationGranularity", r) : -EINVAL;
  }
  m->size = size;
  m->ordinal = ordinal;
  m->ctx = ctx;
  if ((rc = map_rw(m, h, gran))) {
    cu.cuMemRelease(h);
    return rc;
  }
  m->handle = (uint64_t)h;
  return 0;
}

void kvs__vmm_close(kvs__vmm *m)
{
  if (!m || !m->ptr || kvs__cudrv_load()) return;
  if (m->ctx) cu.cuCtxSetCurrent((CUcontext)m->ctx);
  cu.cuMemUnmap((CUdeviceptr)m->ptr, (size_t)m->size);
  cu.cuMemAddressFree((CUdeviceptr)m->ptr, (size_t)m->size);
  cu.cuMemRelease((CUmemGenericAllocationHandle)m->handle);
  memset(m, 0, sizeof *m);
}

static int range_ok(const kvs__vmm *m, uint64_t off, size_t n)
{
  return m->ptr && off <= m->size && n <= m->size - off;
}

int kvs__vmm_to_host(const kvs__vmm *m, void *dst, uint64_t off, size_t n)
{
  if (!range_ok(m, off, n)) return -EINVAL;
  if (n == 0) return 0;
  CU(cu.cuCtxSetCurrent((CUcontext)m->ctx), "cuCtxSetCurrent");
  CU(cu.cuMemcpyDtoH(dst, (CUdeviceptr)(m->ptr + off), n), "cuMemcpyDtoH");
  return 0;
}

int kvs__vmm_from_host(const kvs__vmm *m, uint64_t off, const void *src, size_t n)
{
  if (!range_ok(m, off, n)) return -EINVAL;
  if (n == 0) return 0;
  CU(cu.cuCtxSetCurrent((CUcontext)m->ctx), "cuCtxSetCurrent");
  CU(cu.cuMemcpyHtoD((CUdeviceptr)(m->ptr + off), src, n), "cuMemcpyHtoD");
  return 0;
}

int kvs__vmm_to_host_async(const kvs__vmm *m, void *stream, void *dst, uint64_t off, size_t n)
{
  if (!range_ok(m, off, n)) return -EINVAL;
  if (n == 0) return 0;
  CU(cu.cuCtxSetCurrent((CUcontext)m->ctx), "cuCtxSetCurrent");
  CU(cu.cuMemcpyDtoHAsync(dst, (CUdeviceptr)(m->ptr + off), n, (CUstream)stream), "cuMemcpyDtoHAsync");
  return 0;
}

int kvs__vmm_from_host_async(const kvs__vmm *m, void *stream, uint64_t off, const void *src,
                             size_t n)
{
  if (!range_ok(m, off, n)) return -EINVAL;
  if (n == 0) return 0;
  CU(cu.cuCtxSetCurrent((CUcontext)m->ctx), "cuCtxSetCurrent");
  CU(cu.cuMemcpyHtoDAsync((CUdeviceptr)(m->ptr + off), src, n, (CUstream)stream), "cuMemcpyHtoDAsync");
  return 0;
}

int kvs__cudrv_ctx_of(kvs__vmm *m, int ordinal)
{
  memset(m, 0, sizeof *m);
  int n, rc = kvs__cudrv_count(&n);
  if (rc) return rc;
  if (ordinal < 0 || ordinal >= n) return -ENODEV;
  CUcontext ctx;
  if ((rc = primary(ordinal, &ctx))) return rc;
  m->ctx = ctx;
  m->ordinal = ordinal;
  return 0;
}

int kvs__cudrv_htod(const kvs__vmm *m, uint64_t dst, const void *src, size_t n)
{
  if (!m->ctx || kvs__cudrv_load()) return -ENOSYS;
  if (n == 0) return 0;
  CU(cu.cuCtxSetCurrent((CUcontext)m->ctx), "cuCtxSetCurrent");
  CU(cu.cuMemcpyHtoD((CUdeviceptr)dst, src, n), "cuMemcpyHtoD");
  return 0;
}

int kvs__cudrv_dtoh(const kvs__vmm *m, void *dst, uint64_t src, size_t n)
{
  if (!m->ctx || kvs__cudrv_load()) return -ENOSYS;
  if (n == 0) return 0;
  CU(cu.cuCtxSetCurrent((CUcontext)m->ctx), "cuCtxSetCurrent");
  CU(cu.cuMemcpyDtoH(dst, (CUdeviceptr)src, n), "cuMemcpyDtoH");
  return 0;
}

int kvs__cudrv_alloc(const kvs__vmm *m, uint64_t *dptr, size_t n)
{
  *dptr = 0;
  if (!m->ctx || kvs__cudrv_load()) return -ENOSYS;
  CU(cu.cuCtxSetCurrent((CUcontext)m->ctx), "cuCtxSetCurrent");
  CUdeviceptr p;
  CU(cu.cuMemAlloc(&p, n), "cuMemAlloc");
  *dptr = (uint64_t)p;
  return 0;
}

void kvs__cudrv_free(const kvs__vmm *m, uint64_t dptr)
{
  if (!dptr || !m->ctx || kvs__cudrv_load()) return;
  cu.cuCtxSetCurrent((CUcontext)m->ctx);
  cu.cuMemFree((CUdeviceptr)dptr);
}

int kvs__vmm_to_device(const kvs__vmm *m, uint64_t dst, uint64_t off, size_t n)
{
  if (!range_ok(m, off, n)) return -EINVAL;
  if (n == 0) return 0;
  CU(cu.cuCtxSetCurrent((CUcontext)m->ctx), "cuCtxSetCurrent");
  /* the legacy default stream: ordered before the backend's kernels */
  CU(cu.cuMemcpyDtoDAsync((CUdeviceptr)dst, (CUdeviceptr)(m->ptr + off), n, NULL),
     "cuMemcpyDtoDAsync");
  return 0;
}

int kvs__cudrv_sync(const kvs__vmm *m)
{
  int rc = kvs__cudrv_load();
  if (rc) return rc;
  if (m && m->ctx) CU(cu.cuCtxSetCurrent((CUcontext)m->ctx), "cuCtxSetCurrent");
  CU(cu.cuCtxSynchronize(), "cuCtxSynchronize");
  return 0;
}

int kvs__cudrv_sync_stream(const kvs__vmm *m, void *stream)
{
  int rc = kvs__cudrv_load();
  if (rc) return rc;
  if (m && m->ctx) CU(cu.cuCtxSetCurrent((CUcontext)m->ctx), "cuCtxSetCurrent");
  CU(cu.cuStreamSynchronize((CUstream)stream), "cuStreamSynchronize");
  return 0;
}

int kvs__cudrv_host_register(void *p, size_t n)
{
  int rc = kvs__cudrv_load();
  if (rc) return rc;
  CU(cu.cuMemHostRegister(p, n, CU_MEMHOSTREGISTER_PORTABLE), "cuMemHostRegister");
  return 0;
}

int kvs__cudrv_event_record(const kvs__vmm *m, void **ev, void *stream)
{
  int rc = kvs__cudrv_load();
  if (rc) return rc;
  CU(cu.cuCtxSetCurrent((CUcontext)m->ctx), "cuCtxSetCurrent");
  if (!*ev) CU(cu.cuEventCreate((CUevent *)ev, CU_EVENT_DISABLE_TIMING), "cuEventCreate");
  CU(cu.cuEventRecord((CUevent)*ev, (CUstream)stream), "cuEventRecord");
  return 0;
}

int kvs__cudrv_event_wait(const kvs__vmm *m, void *ev)
{
  int rc = kvs__cudrv_load();
  if (rc) return rc;
  CU(cu.cuCtxSetCurrent((CUcontext)m->ctx), "cuCtxSetCurrent");
  CU(cu.cuEventSynchronize((CUevent)ev), "cuEventSynchronize");
  return 0;
}

void kvs__cudrv_event_free(const kvs__vmm *m, void *ev)
{
  if (!ev || kvs__cudrv_load()) return;
  if (m->ctx && cu.cuCtxSetCurrent((CUcontext)m->ctx) == CUDA_SUCCESS)
    cu.cuEventSynchronize((CUevent)ev);
  cu.cuEventDestroy((CUevent)ev);
}

int kvs__vmm_host_register(const kvs__vmm *m, void *p, size_t n)
{
  int rc = kvs__cudrv_load();
  if (rc) return rc;
  CU(cu.cuCtxSetCurrent((CUcontext)m->ctx), "cuCtxSetCurrent");
  CU(cu.cuMemHostRegister(p, n, CU_MEMHOSTREGISTER_PORTABLE), "cuMemHostRegister");
  return 0;
}

void kvs__cudrv_host_unregister(void *p)
{
  if (p && kvs__cudrv_load() == 0) cu.cuMemHostUnregister(p);
}

/* ---- pools of VMM chunks (exportable GPU pools) ---- */

/* ordinal's primary context current (retained once per ordinal: the pool
 * and the imports keep it for the life of the process) */
static int ctx_on(int ordinal)
{
  static CUcontext ctxs[64];
  int n, rc = kvs__cudrv_count(&n);
  if (rc) return rc;
  if (ordinal < 0 || ordinal >= n || ordinal >= 64) return -ENODEV;
  if (!ctxs[ordinal]) {
    CUcontext c;
    if ((rc = primary(ordinal, &c))) return rc;
    ctxs[ordinal] = c;
    return 0;
  }
  CU(cu.cuCtxSetCurrent(ctxs[ordinal]), "cuCtxSetCurrent");
  return 0;
}

int kvs__cudrv_granularity(int ordinal, size_t *gran)
{
  *gran = 0;
  int rc = ctx_on(ordinal);
  if (rc) return rc;
  CUmemAllocationProp p;
  prop_of(&p, ordinal);
  CU(cu.cuMemGetAllocationGranularity(gran, &p, CU_MEM_ALLOC_GRANULARITY_MINIMUM),
     "cuMemGetAllocationGranularity");
  return *gran ? 0 : -EIO;
}

int kvs__cudrv_reserve(int ordinal, size_t bytes, size_t align, uint64_t *va)
{
  *va = 0;
  int rc = ctx_on(ordinal);
  if (rc) return rc;
  CUdeviceptr p = 0;
  CU(cu.cuMemAddressReserve(&p, bytes, align, 0, 0), "cuMemAddressReserve");
  *va = (uint64_t)p;
  return 0;
}

void kvs__cudrv_unreserve(int ordinal, uint64_t va, size_t bytes)
{
  if (va && ctx_on(ordinal) == 0) cu.cuMemAddressFree((CUdeviceptr)va, bytes);
}

static int set_access(int ordinal, uint64_t va, size_t bytes, CUmemAccess_flags f)
{
  CUmemAccessDesc a;
  memset(&a, 0, sizeof a);
  a.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  a.location.id = ordinal;
  a.flags = f;
  CU(cu.cuMemSetAccess((CUdeviceptr)va, bytes, &a, 1), "cuMemSetAccess");
  return 0;
}

int kvs__cudrv_chunk_create(int ordinal, uint64_t va, size_t bytes, uint64_t *handle)
{
  *handle = 0;
  int rc = ctx_on(ordinal);
  if (rc) return rc;
  CUmemAllocationProp p;
  prop_of(&p, ordinal);
  CUmemGenericAllocationHandle h;
  CU(cu.cuMemCreate(&h, bytes, &p, 0), "cuMemCreate");
  CUresult r = cu.cuMemMap((CUdeviceptr)va, bytes, 0, h, 0);
  if (r != CUDA_SUCCESS) {
    cu.cuMemRelease(h);
    return fail("cuMemMap", r);
  }
  if ((rc = set_access(ordinal, va, bytes, CU_MEM_ACCESS_FLAGS_PROT_READWRITE))) {
    cu.cuMemUnmap((CUdeviceptr)va, bytes);
    cu.cuMemRelease(h);
    return rc;
  }
  *handle = (uint64_t)h;
  return 0;
}

void kvs__cudrv_chunk_destroy(int ordinal, uint64_t va, size_t bytes, uint64_t handle)
{
  if (ctx_on(ordinal)) return;
  cu.cuMemUnmap((CUdeviceptr)va, bytes);
  cu.cuMemRelease((CUmemGenericAllocationHandle)handle);
}

int kvs__cudrv_chunk_export(uint64_t handle)
{
  int rc = kvs__cudrv_load();
  if (rc) return rc;
  int fd = -1;
  CU(cu.cuMemExportToShareableHandle(&fd, (CUmemGenericAllocationHandle)handle,
                                     CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0),
     "cuMemExportToShareableHandle");
  return fd >= 0 ? fd : -EIO;
}

static int import_ro(int ordinal, const int *fds, uint32_t n, size_t chunk, uint64_t *va);

/* A client's thread keeps the context it had (its current CUDA device). */
int kvs__cudrv_import_ro(int ordinal, const int *fds, uint32_t n, size_t chunk, uint64_t *va)
{
  *va = 0;
  CUcontext saved = NULL;
  int rc = kvs__cudrv_load();
  if (rc) return rc;
  CU(cu.cuCtxGetCurrent(&saved), "cuCtxGetCurrent");
  rc = import_ro(ordinal, fds, n, chunk, va);
  cu.cuCtxSetCurrent(saved);
  return rc;
}

static int import_ro(int ordinal, const int *fds, uint32_t n, size_t chunk, uint64_t *va)
{
  size_t gran = 0;
  int rc = kvs__cudrv_granularity(ordinal, &gran);
  if (rc) return rc;
  if (n == 0 || chunk == 0 || chunk % gran || n > SIZE_MAX / chunk) return -EINVAL;
  const size_t bytes = (size_t)n * chunk;
  CUdeviceptr base = 0;
  CU(cu.cuMemAddressReserve(&base, bytes, gran, 0, 0), "cuMemAddressReserve");
  uint32_t i;
  CUresult r = CUDA_SUCCESS;
  const char *what = NULL;
  for (i = 0; i < n; i++) {
    CUmemGenericAllocationHandle h;
    r = cu.cuMemImportFromShareableHandle(&h, (void *)(intptr_t)fds[i],
                                          CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
    if (r != CUDA_SUCCESS) { what = "cuMemImportFromShareableHandle"; break; }
    /* the mapping keeps the memory; the handle can go at once */
    r = cu.cuMemMap(base + (size_t)i * chunk, chunk, 0, h, 0);
    cu.cuMemRelease(h);
    if (r != CUDA_SUCCESS) { what = "cuMemMap"; break; }
  }
  if (what) {
    rc = fail(what, r);
    while (i-- > 0) cu.cuMemUnmap(base + (size_t)i * chunk, chunk);
    cu.cuMemAddressFree(base, bytes);
    return rc;
  }
  /* read-only for the GPU: kernels here can read the blocks, not write */
  if ((rc = set_access(ordinal, (uint64_t)base, bytes, CU_MEM_ACCESS_FLAGS_PROT_READ))) {
    for (i = 0; i < n; i++) cu.cuMemUnmap(base + (size_t)i * chunk, chunk);
    cu.cuMemAddressFree(base, bytes);
    return rc;
  }
  *va = (uint64_t)base;
  return 0;
}

void kvs__cudrv_unimport(int ordinal, uint64_t va, uint32_t n, size_t chunk)
{
  CUcontext saved = NULL;
  if (!va || kvs__cudrv_load() || cu.cuCtxGetCurrent(&saved) != CUDA_SUCCESS) return;
  if (ctx_on(ordinal) == 0) {
    cu.cuCtxSynchronize(); /* no kernel may still read what goes away */
    for (uint32_t i = 0; i < n; i++) cu.cuMemUnmap((CUdeviceptr)va + (size_t)i * chunk, chunk);
    cu.cuMemAddressFree((CUdeviceptr)va, (size_t)n * chunk);
  }
  cu.cuCtxSetCurrent(saved);
}

int kvs__cudrv_find_uuid(const uint8_t uuid[KVS_GPU_UUID_BYTES], int *ordinal)
{
  *ordinal = -1;
  int n, rc = kvs__cudrv_count(&n);
  if (rc) return rc;
  for (int i = 0; i < n; i++) {
    uint8_t u[KVS_GPU_UUID_BYTES];
    if (kvs__cudrv_uuid(i, u) == 0 && memcmp(u, uuid, sizeof u) == 0) {
      *ordinal = i;
      return 0;
    }
  }
  return -ENODEV;
}

#endif
