/* SPDX-License-Identifier: MIT */
/* Device segments of sessions (daemon/devseg.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/devseg.h"

int kvs__devset_add(kvs__devset *s, int ordinal, struct kvs__store *st, struct kvs__backend *b)
{
  if (s->n == KVS_MAX_DEVICES) return -E2BIG;
  size_t i = s->n;
  int r = kvs__cudrv_uuid(ordinal, s->uuid[i]);
  if (r < 0) memset(s->uuid[i], 0, 16); /* never matches a client's */
  s->devseg[i] = r == 0;
  s->ordinal[i] = ordinal;
  s->store[i] = st;
  s->backend[i] = b;
  s->n++;
  return r;
}

void kvs__devseg_init(kvs__devseg *d)
{
  memset(d, 0, sizeof *d);
  d->fd = -1;
}

int kvs__devseg_open(kvs__devseg *d, int ordinal, uint64_t size)
{
  kvs__devseg_init(d);
  return kvs__vmm_create(&d->vmm, ordinal, size, &d->fd);
}

static void stage_free(kvs__devseg *d)
{
  if (d->stage_pinned) kvs__cudrv_host_unregister(d->stage);
  free(d->stage);
  d->stage = NULL;
  d->stage_cap = 0;
  d->stage_pinned = 0;
}

static size_t dstage_round(size_t n)
{
  return (n + ((size_t)1 << 20) - 1) & ~(((size_t)1 << 20) - 1);
}

static void dstage_free(kvs__devseg *d)
{
  kvs__cudrv_free(&d->vmm, d->dstage);
  if (d->staged) *d->staged -= d->dstage_cap;
  d->dstage = 0;
  d->dstage_cap = 0;
}

void kvs__devseg_close(kvs__devseg *d)
{
  if (d->fd >= 0) close(d->fd);
  d->fd = -1;
  dstage_free(d);
  if (d->pinned) kvs__cudrv_host_unregister(d->pinned); /* before the memfd is unmapped */
  d->pinned = NULL;
  kvs__vmm_close(&d->vmm);
  stage_free(d);
}

int kvs__devseg_range_ok(const kvs__devseg *d, uint64_t off, uint64_t len, uint64_t align)
{
  if (!d->vmm.ptr) return 0;
  if (align > 1 && off % align) return 0;
  if (off > d->vmm.size) return 0;
  return len <= d->vmm.size - off;
}

void *kvs__devseg_stage(kvs__devseg *d, size_t n)
{
  if (n <= d->stage_cap) return d->stage;
  stage_free(d);
  size_t cap = (n + 4095u) & ~(size_t)4095u;
  void *p = NULL;
  if (posix_memalign(&p, 4096, cap)) return NULL;
  d->stage = p;
  d->stage_cap = cap;
  /* page-locked: the copies run at DMA speed, without the driver's bounce */
  d->stage_pinned = kvs__cudrv_host_register(p, cap) == 0;
  return p;
}

int kvs__devseg_to_host(kvs__devseg *d, void *dst, uint64_t off, size_t n)
{
  return kvs__vmm_to_host(&d->vmm, dst, off, n);
}

int kvs__devseg_from_host(kvs__devseg *d, uint64_t off, const void *src, size_t n)
{
  return kvs__vmm_from_host(&d->vmm, off, src, n);
}

int kvs__devseg_to_host_async(kvs__devseg *d, void *dst, uint64_t off, size_t n)
{
  return kvs__vmm_to_host_async(&d->vmm, NULL, dst, off, n);
}

int kvs__devseg_from_host_async(kvs__devseg *d, uint64_t off, const void *src, size_t n)
{
  return kvs__vmm_from_host_async(&d->vmm, NULL, off, src, n);
}

int kvs__devseg_sync(kvs__devseg *d)
{
  return kvs__cudrv_sync(&d->vmm);
}

int kvs__devseg_dstage_ok(const kvs__devseg *d, size_t n)
{
  if (n <= d->dstage_cap) return 1;
  if (!d->staged) return 1;
  uint64_t cap = dstage_round(n);
  return *d->staged - d->dstage_cap + cap <= d->stage_limit;
}

/* Kept per session (grown, never shrunk, released at close): no allocation
 * per request once the largest request was seen. */
void *kvs__devseg_dstage(kvs__devseg *d, size_t n)
{
  if (n > d->dstage_cap) {
    if (!kvs__devseg_dstage_ok(d, n)) return NULL;
    dstage_free(d);
    size_t cap = dstage_round(n);
    if (kvs__cudrv_alloc(&d->vmm, &d->dstage, cap) < 0) return NULL;
    d->dstage_cap = cap;
    if (d->staged) *d->staged += cap;
  }
  return (void *)(uintptr_t)d->dstage;
}

int kvs__devseg_to_dstage(kvs__devseg *d, size_t dst_off, uint64_t off, size_t n)
{
  if (dst_off > d->dstage_cap || n > d->dstage_cap - dst_off) return -EINVAL;
  return kvs__vmm_to_device(&d->vmm, d->dstage + dst_off, off, n);
}

void *kvs__devseg_ptr(const kvs__devseg *d, uint64_t off)
{
  return (void *)(uintptr_t)(d->vmm.ptr + off);
}

int kvs__devseg_pin_host(kvs__devseg *d, int ordinal, void *base, size_t size)
{
  kvs__vmm ctx;
  int r = kvs__cudrv_ctx_of(&ctx, ordinal);
  if (r < 0) return r;
  if ((r = kvs__cudrv_host_register(base, size)) < 0) return r;
  d->vmm = ctx; /* a context, no device segment (ptr stays 0) */
  d->pinned = base;
  return 0;
}

int kvs__devseg_host_to_dstage(kvs__devseg *d, size_t dst_off, const void *src, size_t n)
{
  if (dst_off > d->dstage_cap || n > d->dstage_cap - dst_off) return -EINVAL;
  return kvs__cudrv_htod(&d->vmm, d->dstage + dst_off, src, n);
}

int kvs__devseg_dstage_to_host(kvs__devseg *d, void *dst, size_t src_off, size_t n)
{
  if (src_off > d->dstage_cap || n > d->dstage_cap - src_off) return -EINVAL;
  return kvs__cudrv_dtoh(&d->vmm, dst, d->dstage + src_off, n);
}
