/* SPDX-License-Identifier: MIT */
/* Decode steps of a device session through a page-locked tail of the host
 * segment (HACKING.md Decision 50). A put or get of fewer tokens than a
 * group goes through host memory in kvsinkd anyway (its rows wait in the
 * 16-bit residual), so the copy between the device segment and host
 * memory is done here, in the client's own context and stream: the copy
 * up doubles as the ordering wait of a put, and kvsinkd never touches the
 * GPU for it (no synchronize of its own, no switch between the contexts).
 * The daemon sees a host request and checks it as it checks any. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/client_int.h"

static size_t up(size_t x, size_t a) { return (x + a - 1) & ~(a - 1); }

size_t kvs__stage_extra(const kvs_client *c)
{
  return c->want_dev ? KVS__STAGE_BYTES : 0;
}

void kvs__stage_open(kvs_client *c)
{
  c->stage_off = c->stage_size = 0;
  c->info.seg_size = c->seg_end;
  const char *e = getenv("KVSINK_DEVICE_STAGE"); /* "0": kvsinkd's path (A/B runs) */
  if (!c->dseg.ptr || !c->seg || c->seg_end < 2 * (size_t)KVS__STAGE_BYTES || (e && !strcmp(e, "0")))
    return;
  /* below the fast area, if there is one (the segment's last bytes) */
  const size_t off = (c->seg_end - KVS__STAGE_BYTES) & ~(size_t)4095u;
  /* page-locked for the client's context: DMA both ways, no bounce */
  if (kvs__vmm_host_register(&c->dseg, (char *)c->seg + off, c->seg_end - off) < 0)
    return; /* pageable copies would cost more than kvsinkd's path */
  c->stage_off = off;
  c->stage_size = c->seg_end - off;
  c->info.seg_size = off; /* the caller's part of the host segment */
}

void kvs__stage_close(kvs_client *c)
{
  kvs__cudrv_event_free(&c->dseg, c->stage_ev); /* waits for its copies first */
  c->stage_ev = NULL;
  c->stage_busy = 0;
  if (c->stage_size)
    kvs__cudrv_host_unregister((char *)c->seg + c->stage_off);
  c->stage_off = c->stage_size = 0;
}

/* [off, off + n) inside the device segment with alignment a; otherwise
 * kvsinkd's path runs and reports the error as it always does. */
static int dev_ok(const kvs_client *c, uint64_t off, size_t n, size_t a)
{
  return off % a == 0 && off <= c->dseg.size && n <= c->dseg.size - off;
}

/* The stage free again: a get's copies queued on the caller's stream
 * (kvs__stage_get_done) have read it. */
static int stage_free(kvs_client *c)
{
  if (!c->stage_busy)
    return 0;
  int r = kvs__cudrv_event_wait(&c->dseg, c->stage_ev);
  if (r < 0) {
    snprintf(c->conn.errmsg, sizeof c->conn.errmsg, "waiting for the last copies: %s",
             kvs__cudrv_error());
    return r;
  }
  c->stage_busy = 0;
  return 0;
}

/* K and V between the stage (K then V) and the device segment, on
 * stream: one copy when they are adjacent in the segment too. */
static int copy_kv(kvs_client *c, void *st, int up, char *s, uint64_t k_off, uint64_t v_off,
                   size_t kvb)
{
  if (v_off == k_off + kvb)
    return up ? kvs__vmm_from_host_async(&c->dseg, st, k_off, s, 2 * kvb)
              : kvs__vmm_to_host_async(&c->dseg, st, s, k_off, 2 * kvb);
  int r = up ? kvs__vmm_from_host_async(&c->dseg, st, k_off, s, kvb)
             : kvs__vmm_to_host_async(&c->dseg, st, s, k_off, kvb);
  if (r == 0)
    r = up ? kvs__vmm_from_host_async(&c->dseg, st, v_off, s + kvb, kvb)
           : kvs__vmm_to_host_async(&c->dseg, st, s + kvb, v_off, kvb);
  return r;
}

/* kvb (K bytes of n tokens) when the request is small and fits the
 * stage, else 0. */
static size_t small_kv(const kvs_client *c, uint32_t n, size_t kvb)
{
  if (!c->stage_size || n == 0 || n >= c->info.group)
    return 0;
  return kvb && 2 * kvb <= c->stage_size ? kvb : 0;
}

int kvs__stage_put(kvs_client *c, const kvs_put_args *a, size_t k_bytes, kvs__req *rq)
{
  const size_t kvb = small_kv(c, a->n_tokens, k_bytes);
  if (!kvb || a->act_channels > KVS_MAX_ACT_CHANNELS)
    return 0;
  const size_t ab = (size_t)a->n_tokens * a->act_channels * 4u, ao = up(2 * kvb, 16);
  if (ao + ab > c->stage_size || !dev_ok(c, a->k_off, kvb, 2) || !dev_ok(c, a->v_off, kvb, 2) ||
      (ab && !dev_ok(c, a->act_off, ab, 4)))
    return 0;
  char *s = (char *)c->seg + c->stage_off;
  void *st = c->dev_stream;
  int r = stage_free(c);
  if (r < 0)
    return r;
  /* ordering as for a device put (kvs_put_device): the named stream's
   * work comes before the copies queued on it; without one, the whole
   * context's, then the copies on the legacy stream */
  r = st ? 0 : kvs__cudrv_sync(&c->dseg);
  if (r == 0) r = copy_kv(c, st, 0, s, a->k_off, a->v_off, kvb);
  if (r == 0 && ab) r = kvs__vmm_to_host_async(&c->dseg, st, s + ao, a->act_off, ab);
  if (r == 0) r = kvs__cudrv_sync_stream(&c->dseg, st);
  if (r < 0) {
    snprintf(c->conn.errmsg, sizeof c->conn.errmsg, "copying from the device segment: %s",
             kvs__cudrv_error());
    return r;
  }
  rq->k_off = c->stage_off;
  rq->v_off = c->stage_off + kvb;
  rq->act_off = ab ? c->stage_off + ao : 0;
  rq->dev = 0;
  return 1;
}

size_t kvs__stage_get(kvs_client *c, uint32_t n, size_t k_bytes, uint64_t k_off, uint64_t v_off,
                      kvs__req *rq)
{
  const size_t kvb = small_kv(c, n, k_bytes);
  if (!kvb || !dev_ok(c, k_off, kvb, 2) || !dev_ok(c, v_off, kvb, 2) || stage_free(c) < 0)
    return 0; /* (a failed wait leaves the stage alone: kvsinkd's path) */
  rq->k_off = c->stage_off;
  rq->v_off = c->stage_off + kvb;
  rq->dev = 0;
  return kvb;
}

int kvs__stage_get_done(kvs_client *c, size_t kvb, uint64_t k_off, uint64_t v_off)
{
  char *s = (char *)c->seg + c->stage_off;
  void *st = c->dev_stream;
  int r = copy_kv(c, st, 1, s, k_off, v_off, kvb);
  /* with a stream named, the copies are queued on it, as cudaMemcpyAsync
   * would: its later work sees the rows; the stage is waited for before
   * its next use. Without one, return once the rows are there, as a
   * device get does. */
  if (r == 0 && st && (r = kvs__cudrv_event_record(&c->dseg, &c->stage_ev, st)) == 0)
    c->stage_busy = 1;
  else if (r == 0)
    r = kvs__cudrv_sync_stream(&c->dseg, st);
  if (r < 0)
    snprintf(c->conn.errmsg, sizeof c->conn.errmsg, "copying into the device segment: %s",
             kvs__cudrv_error());
  return r;
}
