/* SPDX-License-Identifier: MIT */
/* Device segments in the request layer (daemon/ops_dev.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/log.h"
#include "daemon/ops_dev.h"
#include "daemon/reply.h"


int kvs__opsdev_pool(const kvs__ops_env *env, kvs__sess_state *st, const kvs__hello *h)
{
  const kvs__devset *d = env->devs;
  int dev = h->has_gpu && d ? kvs__devseg_choose(h->gpu_uuid, d->uuid, d->n) : -1;
  st->store = dev >= 0 ? d->store[dev] : env->store;
  st->backend = dev >= 0 ? d->backend[dev] : env->backend;
  return dev;
}

void kvs__opsdev_hello(const kvs__ops_env *env, kvs__sess_state *st, const kvs__hello *h,
                       int dev, uint64_t seg_size, kvs__rep *rep)
{
  const kvs__devset *d = env->devs;
  if (dev >= 0 && d->devseg[dev]) {
    uint64_t dsz = h->dev_seg_size ? h->dev_seg_size : seg_size;
    if (dsz > env->cfg->max_segment_size) dsz = env->cfg->max_segment_size;
    if (kvs__devseg_open(&st->dseg, d->ordinal[dev], dsz) < 0) {
      kvs__warn("session %llu: no device segment on cuda:%d (%s); host segment only",
                (unsigned long long)st->id, d->ordinal[dev], kvs__cudrv_error());
      kvs__devseg_close(&st->dseg);
    }
  }
  /* a host segment on a GPU pool: pinned, so K/V go up in one DMA copy */
  if (!st->dseg.vmm.ptr && st->backend && st->backend->dev_io && d && d->n) {
    int ord = dev >= 0 ? d->ordinal[dev] : d->ordinal[0];
    if (kvs__devseg_pin_host(&st->dseg, ord, st->seg.base, (size_t)st->seg.size) < 0)
      kvs__info("session %llu: memfd not page-locked (%s)", (unsigned long long)st->id,
                kvs__cudrv_error());
  }
  /* device staging: counted per GPU against device_staging */
  if (d && d->n && (st->dseg.vmm.ptr || st->dseg.pinned)) {
    st->dseg.staged = (uint64_t *)&d->staged[dev >= 0 ? dev : 0]; /* the server's, mutable */
    st->dseg.stage_limit = env->cfg->device_staging;
  }
  rep->seg_device = st->dseg.vmm.ptr != 0;
  rep->dev_seg_size = st->dseg.vmm.size;
}

/* Puts and gets of at least a group of tokens on a GPU pool work from
 * device memory; smaller ones (decode steps: the rows wait in the 16-bit
 * residual in host memory anyway) take one small copy through the host,
 * which costs less than the device-side checks and launches. */
static int bulk_on_gpu(const kvs__sess_state *st, uint32_t n)
{
  return st->backend && st->backend->dev_io && n >= st->key.group;
}

static int dev_range(const kvs__sess_state *st, kvs__rep *rep, const char *what, uint64_t off,
                     uint64_t len, uint64_t align)
{
  if (!st->dseg.vmm.ptr)
    return kvs__ops_fail(rep, KVS_ESEGMENT, "%s: this session has no device segment", what);
  if (len == UINT64_MAX || !kvs__devseg_range_ok(&st->dseg, off, len, align))
    return kvs__ops_fail(rep, KVS_ESEGMENT,
                "%s: offset %llu + %llu bytes outside the %llu-byte device segment or not "
                "%llu-aligned",
                what, (unsigned long long)off, (unsigned long long)len,
                (unsigned long long)st->dseg.vmm.size, (unsigned long long)align);
  return 0;
}

static size_t up256(uint64_t x) { return (size_t)((x + 255u) & ~(uint64_t)255u); }

/* Read once: what a put reads leaves the client's memory in one copy per
 * tensor into daemon memory (device staging on a GPU pool for bulk puts,
 * host staging otherwise) and is used from there; or, for a bulk put from
 * a device segment whose kernel loads each element once (the load is the
 * copy: kvs__space_reads_once), straight from the segment (Decision 36). */
int kvs__opsdev_put_src(kvs__sess_state *st, const kvs__req *rq, uint64_t kvb, uint64_t ab,
                        const uint16_t **kp, const uint16_t **vp, const float **act, int *on_dev,
                        kvs__rep *rep)
{
  kvs__devseg *d = &st->dseg;
  int bulk = bulk_on_gpu(st, rq->n_tokens), r = 0;
  *on_dev = 0;
  size_t ko = up256(ab), vo = ko + up256(kvb);
  /* over device_staging: the host path (slower, same result) */
  if (bulk && !kvs__devseg_dstage_ok(d, vo + (size_t)kvb)) bulk = 0;
  if (rq->dev) {
    if ((kvb && ((r = dev_range(st, rep, "k", rq->k_off, kvb, 2)) < 0 ||
                 (r = dev_range(st, rep, "v", rq->v_off, kvb, 2)) < 0)) ||
        (ab && (r = dev_range(st, rep, "act", rq->act_off, ab, 4)) < 0) ||
        (!kvb && !ab && (r = dev_range(st, rep, "put", 0, 0, 1)) < 0))
      return r;
    if (bulk_on_gpu(st, rq->n_tokens) && st->space &&
        (!kvb || kvs__space_reads_once(st->space, kvs__devseg_ptr(d, rq->k_off),
                                       kvs__devseg_ptr(d, rq->v_off)))) {
      /* no copy, no scan: the kernel checks what it loads, residual rows
       * and the summary go to host memory once (the store) */
      *kp = kvb ? kvs__devseg_ptr(d, rq->k_off) : NULL;
      *vp = kvb ? kvs__devseg_ptr(d, rq->v_off) : NULL;
      *act = ab ? kvs__devseg_ptr(d, rq->act_off) : NULL;
      *on_dev = 1;
      return 0;
    }
    uint8_t *p;
    if (bulk) {
      /* one device-to-device copy into the daemon's own device memory */
      p = kvs__devseg_dstage(d, vo + (size_t)kvb);
      r = p ? 0 : -ENOMEM;
      if (r == 0 && ab) r = kvs__devseg_to_dstage(d, 0, rq->act_off, (size_t)ab);
      if (r == 0 && kvb) r = kvs__devseg_to_dstage(d, ko, rq->k_off, (size_t)kvb);
      if (r == 0 && kvb) r = kvs__devseg_to_dstage(d, vo, rq->v_off, (size_t)kvb);
      *on_dev = 1;
    } else {
      /* into pinned host staging (kept per session): K and V adjacent
       * there, one copy when they are adjacent in the segment too; the
       * copies are queued and waited for once */
      vo = ko + (size_t)kvb;
      p = kvs__devseg_stage(d, vo + (size_t)kvb);
      r = p ? 0 : -ENOMEM;
      if (r == 0 && ab) r = kvs__devseg_to_host_async(d, p, rq->act_off, (size_t)ab);
      if (r == 0 && kvb && rq->v_off == rq->k_off + kvb)
        r = kvs__devseg_to_host_async(d, p + ko, rq->k_off, 2 * (size_t)kvb);
      else if (r == 0 && kvb) {
        r = kvs__devseg_to_host_async(d, p + ko, rq->k_off, (size_t)kvb);
        if (r == 0) r = kvs__devseg_to_host_async(d, p + vo, rq->v_off, (size_t)kvb);
      }
      if (r == 0 && (ab || kvb)) r = kvs__devseg_sync(d);
    }
    if (r < 0)
      return kvs__ops_fail(rep, r, "put: reading the device segment: %s",
                  r == -ENOMEM ? "out of memory" : kvs__cudrv_error());
    *kp = kvb ? (const uint16_t *)(p + ko) : NULL;
    *vp = kvb ? (const uint16_t *)(p + vo) : NULL;
    *act = ab ? (const float *)p : NULL;
    return 0;
  }
  if (!d->pinned || !bulk || (!kvb && !ab)) return 0;
  /* a pinned memfd: one DMA copy up per tensor */
  uint8_t *p = kvs__devseg_dstage(d, vo + (size_t)kvb);
  r = p ? 0 : -ENOMEM;
  if (r == 0 && ab) r = kvs__devseg_host_to_dstage(d, 0, *act, (size_t)ab);
  if (r == 0 && kvb) r = kvs__devseg_host_to_dstage(d, ko, *kp, (size_t)kvb);
  if (r == 0 && kvb) r = kvs__devseg_host_to_dstage(d, vo, *vp, (size_t)kvb);
  if (r < 0)
    return kvs__ops_fail(rep, r, "put: copying to the GPU: %s",
                r == -ENOMEM ? "out of memory" : kvs__cudrv_error());
  *kp = kvb ? (const uint16_t *)(p + ko) : NULL;
  *vp = kvb ? (const uint16_t *)(p + vo) : NULL;
  if (ab) *act = (const float *)p;
  *on_dev = 1;
  return 0;
}

int kvs__opsdev_get_dst(kvs__sess_state *st, const kvs__req *rq, uint64_t kvb, uint16_t **kp,
                        uint16_t **vp, kvs__opsdev_get *g, kvs__rep *rep)
{
  kvs__devseg *d = &st->dseg;
  int bulk = bulk_on_gpu(st, rq->n_tokens), r;
  memset(g, 0, sizeof *g);
  if (rq->dev) {
    if ((r = dev_range(st, rep, "k", rq->k_off, kvb, 2)) < 0 ||
        (r = dev_range(st, rep, "v", rq->v_off, kvb, 2)) < 0)
      return r;
    if (!kvb) return 0;
    if (bulk) {
      /* dequantized straight into the segment */
      *kp = kvs__devseg_ptr(d, rq->k_off);
      *vp = kvs__devseg_ptr(d, rq->v_off);
      g->on_dev = 1;
      return 0;
    }
    uint16_t *p = kvs__devseg_stage(d, 2 * (size_t)kvb);
    if (!p) return kvs__ops_fail(rep, -ENOMEM, "get: out of memory for staging");
    *kp = p;
    *vp = p + kvb / 2;
    g->up = 1;
    return 0;
  }
  if (!d->pinned || !bulk || !*kp || !kvs__devseg_dstage_ok(d, 2 * (size_t)kvb)) return 0;
  uint8_t *p = kvs__devseg_dstage(d, 2 * (size_t)kvb);
  if (!p) return kvs__ops_fail(rep, -ENOMEM, "get: out of GPU memory for staging");
  g->hk = *kp;
  g->hv = *vp;
  *kp = (uint16_t *)p;
  *vp = (uint16_t *)(p + kvb);
  g->on_dev = 1;
  g->down = 1;
  return 0;
}

static int get_sync(void)
{
  static int v = -1;
  if (v < 0) {
    const char *e = getenv("KVSINK_GET_SYNC");
    v = e && !strcmp(e, "1");
  }
  return v;
}

int kvs__opsdev_get_done(kvs__sess_state *st, const kvs__req *rq, uint64_t kvb, uint16_t *kp,
                         uint16_t *vp, const kvs__opsdev_get *g, kvs__rep *rep)
{
  kvs__devseg *d = &st->dseg;
  int r = 0;
  if (g->down) {
    r = kvs__devseg_dstage_to_host(d, g->hk, 0, (size_t)kvb);
    if (r == 0) r = kvs__devseg_dstage_to_host(d, g->hv, (size_t)kvb, (size_t)kvb);
    if (r < 0) return kvs__ops_fail(rep, r, "get: copying from the GPU: %s", kvs__cudrv_error());
    return 0;
  }
  if (!rq->dev || !kp) return 0;
  /* dequantized into the segment: kvs__seq_get_dev returned once all of
   * it was written (its kernels and copies waited for), so the reply can
   * go now (KVSINK_GET_SYNC=1: a context synchronize first, as before;
   * for A/B runs, Decision 48) */
  if (!g->up && !get_sync()) return 0;
  /* queued from the pinned stage, waited for once below */
  if (g->up && rq->v_off == rq->k_off + kvb) /* the stage holds K then V */
    r = kvs__devseg_from_host_async(d, rq->k_off, kp, 2 * (size_t)kvb);
  else if (g->up) {
    r = kvs__devseg_from_host_async(d, rq->k_off, kp, (size_t)kvb);
    if (r == 0) r = kvs__devseg_from_host_async(d, rq->v_off, vp, (size_t)kvb);
  }
  /* the reply goes out only once the data is in the segment */
  if (r == 0) r = kvs__devseg_sync(d);
  if (r < 0) return kvs__ops_fail(rep, r, "get: writing the device segment: %s", kvs__cudrv_error());
  return 0;
}

size_t kvs__opsdev_stores(const kvs__ops_env *env, kvs__store **out)
{
  size_t n = 0;
  out[n++] = env->store;
  for (size_t i = 0; env->devs && i < env->devs->n; i++)
    if (env->devs->store[i] != env->store) out[n++] = env->devs->store[i];
  return n;
}
