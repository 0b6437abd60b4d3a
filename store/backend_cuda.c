/* SPDX-License-Identifier: MIT */
/* The CUDA backend of the store: pool in cudaMalloc'd memory, kernels from
 * kernels/quant.cu. Host K/V go through a device staging buffer; block and
 * sink-row pointers given by the store point into the device pool. The
 * daemon is single-threaded, but the mutex keeps the staging buffers safe
 * should a worker thread ever call in. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "store/rec.h"
#include "store/store.h"
#include "kernels/cuda.h"

kvs__backend *kvs__backend_cuda_open(int device, char *errmsg);
void kvs__backend_cuda_close(kvs__backend *b);

#define KVS__CUDA_QSTREAMS 4

typedef struct cuda_priv {
  int device;
  pthread_mutex_t lock;
  kvs__cuda_ctx ctx;
  void *hbatch, *dbatch; /* batches: pinned host area and its device mirror */
  void *hmapped;         /* hbatch as the GPU addresses it (mapped), or NULL */
  size_t batch_bytes;
  size_t boff;           /* bytes of it that queued calls use (quantize_start) */
  int queued;            /* kernels queued and not waited for */
  /* queued calls take these in turn, so that a put's chunks run side by
   * side and fill the GPU (one stream: each chunk of 256 blocks a wave of
   * its own); blocking streams, so the wait's copy on the legacy stream
   * comes after all of them. NULL: the legacy stream alone. */
  cudaStream_t qs[KVS__CUDA_QSTREAMS];
  unsigned qnext;
  /* An open feed (quantize_open, Decision 51): its word, job and row-list
   * areas in the mapped batch area; quantize_start writes jobs there and
   * publishes them, no CUDA call. Any other call closes it first. */
  struct {
    int open;
    kvs__qparams p;
    kvs__cuda_feed *word;     /* host address */
    uint8_t *jobs;            /* host address of job 0 */
    size_t rows, rows_end;    /* row-list area, offsets into hbatch */
    uint32_t n, cap;
  } feed;
} cuda_priv;

static size_t align16(size_t x) { return (x + 15u) & ~(size_t)15u; }

static void feed_close(cuda_priv *c);

/* Calls that may wait on the GPU close an open feed first: its kernel
 * would otherwise wait for the host that waits for it. */
static void feed_end(cuda_priv *c)
{
  pthread_mutex_lock(&c->lock);
  feed_close(c);
  pthread_mutex_unlock(&c->lock);
}

static int cu_pool_alloc(kvs__backend *b, size_t bytes, void **base)
{
  cuda_priv *c = b->priv;
  feed_end(c);
  if (cudaSetDevice(c->device) != cudaSuccess || cudaMalloc(base, bytes) != cudaSuccess) {
    cudaGetLastError();
    *base = NULL;
    return -ENOMEM;
  }
  return 0;
}

static void cu_pool_free(kvs__backend *b, void *base)
{
  feed_end(b->priv);
  if (base) cudaFree(base);
}

static int cu_copy(kvs__backend *b, void *dst, const void *src, size_t n, int to_pool)
{
  cuda_priv *c = b->priv;
  feed_end(c);
  if (cudaSetDevice(c->device) != cudaSuccess ||
      cudaMemcpy(dst, src, n, to_pool ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost) !=
          cudaSuccess) {
    cudaGetLastError();
    return -EIO;
  }
  return 0;
}

/* Batches: one pinned host area mirrored by one device area, laid out as
 * [jobs][row-pointer lists][K tiles][V tiles]; one copy each way and one
 * launch per batch instead of several synchronous calls per block. Only
 * host-resident items take a tile and only blocks with sinks a row list,
 * so a batch of KVS_BATCH_DEV_MAX device items needs jobs and row
 * pointers only (about 200 KB), not tiles. The areas grow to the largest
 * batch seen (in powers of two) and are kept: no allocation per request. */
static int batch_reserve(cuda_priv *c, size_t bytes)
{
  if (bytes <= c->batch_bytes) return 0;
  size_t cap = (size_t)1 << 16;
  while (cap < bytes) cap <<= 1;
  if (c->hbatch) cudaFreeHost(c->hbatch);
  if (c->dbatch) cudaFree(c->dbatch);
  c->hbatch = c->dbatch = c->hmapped = NULL;
  c->batch_bytes = 0;
  if (cudaHostAlloc(&c->hbatch, cap, cudaHostAllocMapped) != cudaSuccess ||
      cudaMalloc(&c->dbatch, cap) != cudaSuccess) {
    cudaGetLastError();
    if (c->hbatch) cudaFreeHost(c->hbatch);
    c->hbatch = c->dbatch = NULL;
    return -ENOMEM;
  }
  if (cudaHostGetDevicePointer(&c->hmapped, c->hbatch, 0) != cudaSuccess) {
    cudaGetLastError();
    c->hmapped = NULL; /* the copy up, as for host tiles */
  }
  c->batch_bytes = cap;
  return 0;
}

typedef struct batch_layout { size_t rows, k, v, total; } batch_layout;

/* n jobs of job bytes, nrows sink-row pointers, nh host tiles */
static int batch_layout_of(cuda_priv *c, const kvs__qparams *p, uint32_t n, size_t job,
                           size_t nrows, uint32_t nh, batch_layout *bl)
{
  size_t plane = align16((size_t)p->group * p->channels * 2u);
  bl->rows = align16(n * job);
  bl->k = align16(bl->rows + nrows * sizeof(void *));
  bl->v = bl->k + nh * plane;
  bl->total = bl->v + nh * plane;
  return batch_reserve(c, bl->total);
}

/* Items checked; *nh gets how many are host-resident. */
static int qitems_ok(const kvs__qparams *p, const kvs__qitem *it, uint32_t n, size_t *nrows,
                     uint32_t *nh)
{
  if (kvs__qparams_check(p) || n > KVS_BATCH_DEV_MAX) return -EINVAL;
  *nrows = 0;
  *nh = 0;
  for (uint32_t i = 0; i < n; i++) {
    if ((p->group < 64 && (it[i].sink_mask >> p->group)) || (it[i].sink_mask && !it[i].rows))
      return -EINVAL;
    *nrows += (size_t)__builtin_popcountll(it[i].sink_mask);
    *nh += !it[i].dev;
  }
  return *nh > KVS_BATCH_MAX ? -EINVAL : 0;
}

/* Lay a batch out after the part of the batch area that queued calls
 * still use (their copies up may not have run yet), copy it up and launch,
 * without waiting. With the lock held and the device set. */
static int quant_queue(cuda_priv *c, const kvs__qparams *p, const kvs__qitem *it, uint32_t n,
                       size_t nrows, uint32_t nh)
{
  kvs__qlayout l;
  kvs__qlayout_of(p, &l);
  feed_close(c);
  size_t plane = (size_t)p->group * p->channels * 2u, ps = align16(plane);
  size_t base = (c->boff + 255u) & ~(size_t)255u;
  batch_layout bl;
  bl.rows = align16(n * sizeof(kvs__cuda_qjob));
  bl.k = align16(bl.rows + nrows * sizeof(void *));
  bl.v = bl.k + nh * ps;
  bl.total = bl.v + nh * ps;
  if (base + bl.total > c->batch_bytes) {
    /* no room behind the queued batches: let them finish (the status
     * word keeps what they found), then start over at the area's start */
    if (c->queued && cudaDeviceSynchronize() != cudaSuccess) { /* every queue stream */
      cudaGetLastError();
      return -EIO;
    }
    c->boff = base = 0;
    if (batch_reserve(c, bl.total) < 0) return -ENOMEM;
  }
  /* Device items only (a device put): the kernel reads its jobs and row
   * lists where they are written, in mapped page-locked memory, so a
   * launch needs no copy call before it (each cost 5-11 us of the
   * daemon's time on the H200 host, four a bulk put: Decision 50).
   * Host tiles are copied up with the jobs. */
  const int mapped = nh == 0 && c->hmapped;
  uint8_t *h = (uint8_t *)c->hbatch + base,
          *d = (uint8_t *)(mapped ? c->hmapped : c->dbatch) + base;
  kvs__cuda_qjob *jobs = (kvs__cuda_qjob *)h;
  size_t ro = bl.rows;
  uint32_t hi = 0;
  for (uint32_t i = 0; i < n; i++) {
    uint32_t ns = (uint32_t)__builtin_popcountll(it[i].sink_mask);
    uint16_t *const *rows = ns ? (uint16_t *const *)(d + ro) : NULL;
    if (ns) memcpy(h + ro, it[i].rows, ns * sizeof(void *));
    ro += ns * sizeof(void *);
    const uint16_t *dk = it[i].k, *dv = it[i].v; /* dev: read where they are */
    if (!it[i].dev) {
      memcpy(h + bl.k + hi * ps, it[i].k, plane);
      memcpy(h + bl.v + hi * ps, it[i].v, plane);
      dk = (const uint16_t *)(d + bl.k + hi * ps);
      dv = (const uint16_t *)(d + bl.v + hi * ps);
      hi++;
    }
    jobs[i] = (kvs__cuda_qjob){ dk, dv, it[i].block, rows, it[i].sink_mask };
  }
  /* one copy up (jobs, row lists and the host tiles, if any), one launch */
  kvs__cuda_ctx qc = c->ctx;
  if (c->qs[0]) qc.stream = c->qs[c->qnext++ % KVS__CUDA_QSTREAMS];
  if (!mapped && cudaMemcpyAsync(d, h, nh ? bl.total : bl.k, cudaMemcpyHostToDevice,
                                 (cudaStream_t)qc.stream) != cudaSuccess) {
    cudaGetLastError();
    return -EIO;
  }
  int rc = kvs__cuda_quantize_async(&qc, p, &l, (const kvs__cuda_qjob *)d, n);
  c->queued = 1; /* even on a failed launch: the copy is queued */
  c->boff = base + bl.total;
  return rc;
}

/* No more jobs for the open feed: its kernel ends once it has coded the
 * ones it has. Every entry point but quantize_start calls this first, so
 * nothing waits on the GPU while the kernel waits for the host. */
static void feed_close(cuda_priv *c)
{
  if (!c->feed.open) return;
  __atomic_store_n(&c->feed.word->word, c->feed.n | KVS__CUDA_FEED_CLOSED, __ATOMIC_RELEASE);
  c->feed.open = 0;
}

/* Bytes of a feed of cap jobs: the word on a line of its own, the jobs
 * at KVS__CUDA_FEED_STRIDE, then the row lists, each hand-over's own
 * starting on a fresh line (so no line the kernel has read can change). */
static size_t feed_bytes(const kvs__qparams *p, uint32_t cap, size_t *jobs, size_t *rows)
{
  *jobs = KVS__CUDA_FEED_STRIDE;
  *rows = *jobs + (size_t)cap * KVS__CUDA_FEED_STRIDE;
  return *rows + (size_t)cap * (p->group * sizeof(void *) + KVS__CUDA_FEED_STRIDE);
}

/* Start the feed's kernel for up to n blocks of p's shape (capped at
 * KVS_BATCH_DEV_MAX; the rest go in batches). 1: open; 0: not (no
 * mapped batch area, kernels queued, or p has no fast kernel). */
static int cu_quantize_open(kvs__backend *b, const kvs__qparams *p, uint32_t n)
{
  cuda_priv *c = b->priv;
  if (kvs__qparams_check(p) || n == 0) return -EINVAL;
  if (!kvs__cuda_quant_reads_once(p)) return 0;
  const uint32_t cap = n < KVS_BATCH_DEV_MAX ? n : KVS_BATCH_DEV_MAX;
  size_t jo, ro, bytes = feed_bytes(p, cap, &jo, &ro);
  pthread_mutex_lock(&c->lock);
  feed_close(c);
  int rc = cudaSetDevice(c->device) == cudaSuccess ? 0 : -EIO;
  if (rc == 0 && c->queued) goto out; /* the area is in use: batches, as before */
  if (rc == 0 && bytes > c->batch_bytes) rc = batch_reserve(c, bytes);
  if (rc || !c->hmapped) goto out;
  kvs__qlayout l;
  kvs__qlayout_of(p, &l);
  c->feed.word = (kvs__cuda_feed *)c->hbatch;
  c->feed.word->word = 0;
  c->feed.jobs = (uint8_t *)c->hbatch + jo;
  c->feed.rows = ro;
  c->feed.rows_end = bytes;
  c->feed.n = 0;
  c->feed.cap = cap;
  c->feed.p = *p;
  rc = kvs__cuda_quantize_feed(&c->ctx, p, &l, (uint8_t *)c->hmapped + jo,
                               (const kvs__cuda_feed *)c->hmapped, cap);
  if (rc == -EOPNOTSUPP) {
    rc = 0;
    goto out;
  }
  c->queued = 1; /* a failed launch shows in the wait, too */
  c->boff = bytes;
  if (rc == 0) c->feed.open = rc = 1;
out:
  pthread_mutex_unlock(&c->lock);
  return rc;
}

/* Hand n checked dev items to the open feed: 0, or 1 when they do not
 * fit (the caller closes it and queues a batch). */
static int feed_put(cuda_priv *c, const kvs__qparams *p, const kvs__qitem *it, uint32_t n,
                    size_t nrows)
{
  size_t ro = (c->feed.rows + KVS__CUDA_FEED_STRIDE - 1) & ~(size_t)(KVS__CUDA_FEED_STRIDE - 1);
  if (memcmp(p, &c->feed.p, sizeof *p) || n > c->feed.cap - c->feed.n ||
      ro + nrows * sizeof(void *) > c->feed.rows_end)
    return 1;
  uint8_t *h = c->hbatch, *d = c->hmapped;
  for (uint32_t i = 0; i < n; i++) {
    uint32_t ns = (uint32_t)__builtin_popcountll(it[i].sink_mask);
    uint16_t *const *rows = ns ? (uint16_t *const *)(d + ro) : NULL;
    if (ns) memcpy(h + ro, it[i].rows, ns * sizeof(void *));
    ro += ns * sizeof(void *);
    kvs__cuda_qjob j = { it[i].k, it[i].v, it[i].block, rows, it[i].sink_mask };
    memcpy(c->feed.jobs + (size_t)(c->feed.n + i) * KVS__CUDA_FEED_STRIDE, &j, sizeof j);
  }
  c->feed.rows = ro;
  c->feed.n += n;
  /* the jobs are written before the count that hands them over */
  __atomic_store_n(&c->feed.word->word, c->feed.n, __ATOMIC_RELEASE);
  return 0;
}

/* Wait for everything queued; the status word of all of it. */
static int quant_wait(cuda_priv *c)
{
  feed_close(c);
  /* the launch signals when every launch since the last wait has one
   * (a feed has none): Decision 54 */
  int rc = kvs__cuda_wait(&c->ctx);
  c->queued = 0;
  c->boff = 0;
  return rc;
}

/* One copy up, one launch, one synchronize (kvs__cuda_finish reads the
 * status word, which covers batches queued before it too). */
static int cu_quantize_n(kvs__backend *b, const kvs__qparams *p, const kvs__qitem *it,
                         uint32_t n)
{
  cuda_priv *c = b->priv;
  size_t nrows;
  uint32_t nh;
  int rc = qitems_ok(p, it, n, &nrows, &nh);
  if (rc) return rc;
  pthread_mutex_lock(&c->lock);
  /* several pools: each call on its own GPU */
  rc = cudaSetDevice(c->device) == cudaSuccess ? 0 : -EIO;
  if (rc == 0 && n) rc = quant_queue(c, p, it, n, nrows, nh);
  if (c->queued) {
    int w = quant_wait(c);
    if (rc == 0) rc = w;
  }
  pthread_mutex_unlock(&c->lock);
  return rc;
}

/* Device-resident items only, queued (HACKING.md Decision 36). */
static int cu_quantize_start(kvs__backend *b, const kvs__qparams *p, const kvs__qitem *it,
                             uint32_t n)
{
  cuda_priv *c = b->priv;
  size_t nrows;
  uint32_t nh;
  if (n == 0) return 0;
  int rc = qitems_ok(p, it, n, &nrows, &nh);
  if (rc == 0 && nh) rc = -EINVAL;
  if (rc) return rc;
  pthread_mutex_lock(&c->lock);
  /* an open feed takes them without a CUDA call */
  if (c->feed.open && feed_put(c, p, it, n, nrows) == 0) {
    pthread_mutex_unlock(&c->lock);
    return 0;
  }
  rc = cudaSetDevice(c->device) == cudaSuccess ? 0 : -EIO;
  if (rc == 0) rc = quant_queue(c, p, it, n, nrows, nh);
  pthread_mutex_unlock(&c->lock);
  return rc;
}

static int cu_quantize_wait(kvs__backend *b)
{
  cuda_priv *c = b->priv;
  pthread_mutex_lock(&c->lock);
  int rc = cudaSetDevice(c->device) == cudaSuccess ? 0 : -EIO;
  if (c->queued) {
    int w = quant_wait(c);
    if (rc == 0) rc = w;
  }
  pthread_mutex_unlock(&c->lock);
  return rc;
}

static int cu_dequantize_n(kvs__backend *b, const kvs__qparams *p, const kvs__dqitem *it,
                           uint32_t n)
{
  cuda_priv *c = b->priv;
  kvs__qlayout l;
  if (n == 0) return 0;
  if (kvs__qparams_check(p) || n > KVS_BATCH_DEV_MAX) return -EINVAL;
  size_t nrows = 0, outb = 0;
  uint32_t nh = 0;
  for (uint32_t i = 0; i < n; i++) {
    if (it[i].r0 >= it[i].r1 || it[i].r1 > p->group || (it[i].sink_mask && !it[i].rows))
      return -EINVAL;
    nrows += (size_t)__builtin_popcountll(it[i].sink_mask);
    nh += !it[i].dev;
    /* host outputs packed: only rows r0..r1 come back (a decode step's
     * get of a just-completed group reads one row per layer, not G) */
    if (!it[i].dev) outb += align16((size_t)(it[i].r1 - it[i].r0) * p->channels * 2u);
  }
  if (nh > KVS_BATCH_MAX) return -EINVAL;
  kvs__qlayout_of(p, &l);
  pthread_mutex_lock(&c->lock);
  feed_close(c);
  batch_layout bl;
  /* the batch area is the queued quantize calls' until they are waited for */
  int rc = c->queued ? -EBUSY : cudaSetDevice(c->device) == cudaSuccess ? 0 : -EIO;
  if (rc == 0) rc = batch_layout_of(c, p, n, sizeof(kvs__cuda_dqjob), nrows, 0, &bl);
  if (rc == 0) {
    bl.v = bl.k + outb;
    bl.total = bl.v + outb;
    rc = batch_reserve(c, bl.total);
  }
  if (rc) goto out;
  uint8_t *h = c->hbatch, *d = c->dbatch;
  kvs__cuda_dqjob *jobs = (kvs__cuda_dqjob *)h;
  size_t ro = bl.rows, oo = 0;
  for (uint32_t i = 0; i < n; i++) {
    uint32_t ns = (uint32_t)__builtin_popcountll(it[i].sink_mask);
    const uint16_t *const *rows = ns ? (const uint16_t *const *)(d + ro) : NULL;
    if (ns) memcpy(h + ro, it[i].rows, ns * sizeof(void *));
    ro += ns * sizeof(void *);
    /* dev: rows r0..r1 land in the output directly */
    uint16_t *ok = it[i].k_out, *ov = it[i].v_out;
    if (!it[i].dev) {
      ok = (uint16_t *)(d + bl.k + oo);
      ov = (uint16_t *)(d + bl.v + oo);
      oo += align16((size_t)(it[i].r1 - it[i].r0) * p->channels * 2u);
    }
    jobs[i] = (kvs__cuda_dqjob){ it[i].block, rows, ok, ov, it[i].r0, it[i].r1 };
  }
  rc = -EIO;
  if (cudaMemcpyAsync(d, h, bl.k, cudaMemcpyHostToDevice, 0) != cudaSuccess) {
    cudaGetLastError();
    goto out;
  }
  /* the dequantize kernel sets no status word: the wait (its launch
   * signal, else a synchronize, Decision 54) shows a failed launch or
   * kernel; then the copy down of host items' rows */
  rc = kvs__cuda_dequantize_async(&c->ctx, p, &l, (const kvs__cuda_dqjob *)d, n);
  if (rc == 0) rc = kvs__cuda_wait(&c->ctx);
  if (rc || !nh) goto out;
  if (cudaMemcpy(h + bl.k, d + bl.k, bl.total - bl.k, cudaMemcpyDeviceToHost) != cudaSuccess) {
    cudaGetLastError();
    rc = -EIO;
    goto out;
  }
  oo = 0;
  for (uint32_t i = 0; i < n; i++) {
    size_t bytes = (size_t)(it[i].r1 - it[i].r0) * p->channels * 2u;
    if (it[i].dev) continue;
    memcpy(it[i].k_out, h + bl.k + oo, bytes);
    memcpy(it[i].v_out, h + bl.v + oo, bytes);
    oo += align16(bytes);
  }
out:
  pthread_mutex_unlock(&c->lock);
  return rc;
}

/* Copies up from pageable memory (cu_copy: a get's residual rows) may
 * return before their DMA is done; the legacy stream orders them. */
static int cu_sync(kvs__backend *b)
{
  cuda_priv *c = b->priv;
  pthread_mutex_lock(&c->lock);
  feed_close(c);
  int rc = cudaSetDevice(c->device) == cudaSuccess ? kvs__cuda_sync(&c->ctx) : -EIO;
  pthread_mutex_unlock(&c->lock);
  return rc;
}

/* Device-resident input (device segments): the fast kernel on 16-byte
 * aligned tiles reads once (kvs__cuda_quant_reads_once); tiles start at
 * multiples of C elements from k and v, and C is a multiple of 256 there. */
/* Page-locked host memory mapped for the device at the same address
 * (unified addressing), for decode residuals the kernels read in place
 * (store/resbuf.c). Transparent huge pages where the kernel gives them,
 * then registered: cudaHostAlloc's 4 KiB pages made every 1-token get
 * that reads 64 rows from as many buffers 3-4 us slower in TLB misses
 * (H200 host). */
static int cu_host_alloc(kvs__backend *b, size_t bytes, void **p)
{
  cuda_priv *c = b->priv;
  *p = NULL;
  bytes = (bytes + ((size_t)2 << 20) - 1) & ~(((size_t)2 << 20) - 1);
  unsigned char *a = kvs__map_huge(bytes);
  if (!a) return -ENOMEM;
  void *d = NULL;
  pthread_mutex_lock(&c->lock);
  int rc = cudaSetDevice(c->device) == cudaSuccess &&
                   cudaHostRegister(a, bytes, cudaHostRegisterMapped | cudaHostRegisterPortable) ==
                       cudaSuccess
               ? 0
               : -ENOMEM;
  if (rc == 0 && (cudaHostGetDevicePointer(&d, a, 0) != cudaSuccess || d != (void *)a)) {
    cudaHostUnregister(a); /* a kernel could not read it by this address */
    rc = -ENOTSUP;
  }
  if (rc) cudaGetLastError();
  pthread_mutex_unlock(&c->lock);
  if (rc) {
    kvs__unmap_huge(a, bytes);
    return rc;
  }
  *p = a;
  return 0;
}

static void cu_host_free(kvs__backend *b, void *p, size_t bytes)
{
  cuda_priv *c = b->priv;
  pthread_mutex_lock(&c->lock);
  cudaHostUnregister(p);
  cudaGetLastError();
  pthread_mutex_unlock(&c->lock);
  kvs__unmap_huge(p, bytes);
}

static int cu_reads_once(kvs__backend *b, const kvs__qparams *p, const void *k, const void *v)
{
  (void)b;
  return (((uintptr_t)k | (uintptr_t)v) & 15u) == 0 && kvs__cuda_quant_reads_once(p);
}

/* The single-block entry points are batches of one. */
static int cu_quantize(kvs__backend *b, const kvs__qparams *p, const uint16_t *k,
                       const uint16_t *v, uint64_t sink_mask, void *block, uint16_t *const *rows)
{
  kvs__qitem it = { k, v, sink_mask, block, rows, 0 };
  return cu_quantize_n(b, p, &it, 1);
}

static int cu_dequantize(kvs__backend *b, const kvs__qparams *p, const void *block,
                         const uint16_t *const *rows, uint32_t r0, uint32_t r1, uint16_t *k_out,
                         uint16_t *v_out)
{
  kvs__qhdr h;
  if (r0 > r1) return -EINVAL;
  if (r0 == r1) return 0;
  feed_end(b->priv);
  /* the row-pointer count comes from the block's own header */
  if (cudaMemcpy(&h, block, sizeof h, cudaMemcpyDeviceToHost) != cudaSuccess) {
    cudaGetLastError();
    return -EIO;
  }
  kvs__dqitem it = { block, rows, h.sink_mask, r0, r1, k_out, v_out, 0 };
  return cu_dequantize_n(b, p, &it, 1);
}

kvs__backend *kvs__backend_cuda_open(int device, char *errmsg)
{
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    snprintf(errmsg, 256, "no usable CUDA device: %s",
             e != cudaSuccess ? cudaGetErrorString(e) : "none found");
    cudaGetLastError();
    return NULL;
  }
  if (device < 0 || device >= n) {
    snprintf(errmsg, 256, "CUDA device %d out of range (%d present)", device, n);
    return NULL;
  }
  if ((e = cudaSetDevice(device)) != cudaSuccess) {
    snprintf(errmsg, 256, "cudaSetDevice(%d): %s", device, cudaGetErrorString(e));
    cudaGetLastError();
    return NULL;
  }
  kvs__backend *b = calloc(1, sizeof *b);
  cuda_priv *c = calloc(1, sizeof *c);
  if (!b || !c) {
    free(b);
    free(c);
    snprintf(errmsg, 256, "out of memory");
    return NULL;
  }
  c->device = device;
  int rc = kvs__cuda_ctx_init(&c->ctx);
  if (rc) {
    snprintf(errmsg, 256, "CUDA device %d: cannot allocate scratch (%s)", device, strerror(-rc));
    free(b);
    free(c);
    return NULL;
  }
  /* KVSINK_QUEUE_STREAMS=1 (A/B, Decision 50): every launch on the legacy stream */
  const char *one = getenv("KVSINK_QUEUE_STREAMS");
  for (int i = 0; i < KVS__CUDA_QSTREAMS && !(one && !strcmp(one, "1")); i++)
    if (cudaStreamCreate(&c->qs[i]) != cudaSuccess) { /* the legacy stream alone */
      cudaGetLastError();
      for (int j = 0; j < i; j++) cudaStreamDestroy(c->qs[j]);
      memset(c->qs, 0, sizeof c->qs);
      break;
    }
  pthread_mutex_init(&c->lock, NULL);
  b->name = "cuda";
  b->pool_alloc = cu_pool_alloc;
  b->pool_free = cu_pool_free;
  b->quantize = cu_quantize;
  b->dequantize = cu_dequantize;
  b->copy = cu_copy;
  b->quantize_n = cu_quantize_n;
  b->dequantize_n = cu_dequantize_n;
  b->dev_io = 1;
  b->reads_once = cu_reads_once;
  b->quantize_start = cu_quantize_start;
  b->quantize_wait = cu_quantize_wait;
  b->quantize_open = cu_quantize_open;
  b->sync = cu_sync;
  b->host_alloc = cu_host_alloc;
  b->host_free = cu_host_free;
  /* A/B switches for tests/gpu (HACKING.md Decision 36), not settings:
   * KVSINK_DEV_INPLACE=0 stages every device put (no quantizing in place),
   * KVSINK_PUT_QUEUE=0 quantizes a put's blocks in one launch at the end */
  const char *ab = getenv("KVSINK_DEV_INPLACE");
  if (ab && !strcmp(ab, "0")) b->reads_once = NULL;
  ab = getenv("KVSINK_PUT_QUEUE");
  if (ab && !strcmp(ab, "0")) b->quantize_start = NULL, b->quantize_wait = NULL, b->quantize_open = NULL;
  /* (Decision 51) the feed only with KVSINK_PUT_FEED=1: no faster than
   * a launch per chunk in one process, and its waiting blocks hold every
   * SM while the host claims (other processes' kernels would wait) */
  ab = getenv("KVSINK_PUT_FEED");
  if (!(ab && !strcmp(ab, "1"))) b->quantize_open = NULL;
  /* (Decision 50) KVSINK_PUT_PIPE=0 claims all of a put's groups before
   * queueing, KVSINK_PUT_CHUNK=N queues N blocks a launch */
  ab = getenv("KVSINK_PUT_PIPE");
  b->queue_late = ab && !strcmp(ab, "0");
  /* (Decision 53) KVSINK_RESIDUAL_PINNED=0: decode residuals in
   * malloc'd memory, copied up when their group completes */
  ab = getenv("KVSINK_RESIDUAL_PINNED");
  if (ab && !strcmp(ab, "0")) b->host_alloc = NULL, b->host_free = NULL;
  /* (Decision 54) KVSINK_LAUNCH_SIGNAL=0: waits synchronize, as before */
  ab = getenv("KVSINK_LAUNCH_SIGNAL");
  if (ab && !strcmp(ab, "0") && c->ctx.sig) c->ctx.sig->off = 1;
  ab = getenv("KVSINK_PUT_CHUNK");
  b->queue_chunk = ab ? (uint32_t)strtoul(ab, NULL, 10) : 0;
  b->chunk_gpu = device + 1; /* the pool: a VMM allocation per chunk (Attend) */
  b->priv = c;
  return b;
}

void kvs__backend_cuda_close(kvs__backend *b)
{
  if (!b) return;
  cuda_priv *c = b->priv;
  if (c->feed.open) { /* (a put always waits; this is the last guard) */
    feed_close(c);
    cudaDeviceSynchronize();
  }
  kvs__cuda_ctx_close(&c->ctx);
  for (int i = 0; i < KVS__CUDA_QSTREAMS; i++)
    if (c->qs[i]) cudaStreamDestroy(c->qs[i]);
  if (c->hbatch) cudaFreeHost(c->hbatch);
  if (c->dbatch) cudaFree(c->dbatch);
  pthread_mutex_destroy(&c->lock);
  free(c);
  free(b);
}
