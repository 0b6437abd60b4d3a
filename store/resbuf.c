/* SPDX-License-Identifier: MIT */
/* Page-locked allocations cost far more than malloc (the driver pins and
 * maps every page), so buffers are cut from chunks of 4 MiB or more and
 * recycled through a stack per size, never given back before close. */
#include <stdlib.h>

#include "store/resbuf.h"
#include "store/store.h"

#define CHUNK_MIN ((size_t)4 << 20)
#define STAGGER ((size_t)17 * 64)

static kvs__resbuf_class *class_of(kvs__resbuf *r, size_t bytes, int make)
{
  for (uint32_t i = 0; i < KVS_RESBUF_CLASSES; i++)
    if (r->cls[i].size == bytes) return &r->cls[i];
  if (!make) return NULL;
  for (uint32_t i = 0; i < KVS_RESBUF_CLASSES; i++)
    if (!r->cls[i].size) {
      r->cls[i].size = bytes;
      return &r->cls[i];
    }
  return NULL;
}

static int push(kvs__resbuf_class *c, void *p)
{
  if (c->nfree == c->cap) {
    size_t cap = c->cap ? 2 * c->cap : 64;
    void **s = realloc(c->free, cap * sizeof *s);
    if (!s) return -1;
    c->free = s;
    c->cap = cap;
  }
  c->free[c->nfree++] = p;
  return 0;
}

void *kvs__resbuf_get(kvs__resbuf *r, kvs__backend *b, size_t bytes)
{
  if (!b || !b->host_alloc || !b->host_free || bytes == 0) return NULL;
  bytes = (bytes + 63u) & ~(size_t)63u;
  kvs__resbuf_class *c = class_of(r, bytes, 1);
  if (!c) return NULL;
  if (!c->nfree) {
    /* a new chunk, cut into buffers of this class; the stack first, so
     * that every buffer cut has room there */
    /* buffers 17 cache lines apart beyond their size: at a stride of a
     * power of two (128 KiB for 2G rows of 1,024 channels) or a few lines
     * more, the rows a decode step writes in each layer's buffer and a
     * get reads back collide (cache sets and 4 KiB address aliasing
     * against the copy's other side): on the H200 host a 1-token get's
     * residual copy took 8.6-9.9 us at a stagger of 16 or 192 bytes,
     * 3.4-3.9 at 1,088 or 2,240, 4.2-5.4 from malloc'd buffers */
    const size_t stride = bytes + STAGGER;
    size_t n = CHUNK_MIN / stride ? CHUNK_MIN / stride : 1;
    if (c->cap < c->nfree + n) {
      void **s = realloc(c->free, (c->nfree + n) * sizeof *s);
      if (!s) return NULL;
      c->free = s;
      c->cap = c->nfree + n;
    }
    if (r->nchunks == r->capchunks) {
      size_t cap = r->capchunks ? 2 * r->capchunks : 16;
      void **s = realloc(r->chunks, cap * sizeof *s);
      if (!s) return NULL;
      r->chunks = s;
      size_t *z = realloc(r->chunk_bytes, cap * sizeof *z);
      if (!z) return NULL;
      r->chunk_bytes = z;
      r->capchunks = cap;
    }
    void *m = NULL;
    if (b->host_alloc(b, n * stride, &m) < 0 || !m) return NULL;
    r->chunk_bytes[r->nchunks] = n * stride;
    r->chunks[r->nchunks++] = m;
    for (size_t i = n; i-- > 0;) c->free[c->nfree++] = (char *)m + i * stride;
  }
  return c->free[--c->nfree];
}

void kvs__resbuf_put(kvs__resbuf *r, void *p, size_t bytes)
{
  if (!p) return;
  kvs__resbuf_class *c = class_of(r, (bytes + 63u) & ~(size_t)63u, 0);
  /* its class exists and its stack has room: it was cut there (a stack
   * that cannot grow loses the buffer until close, nothing worse) */
  if (c) push(c, p);
}

void kvs__resbuf_close(kvs__resbuf *r, kvs__backend *b)
{
  for (size_t i = 0; i < r->nchunks; i++) b->host_free(b, r->chunks[i], r->chunk_bytes[i]);
  free(r->chunks);
  free(r->chunk_bytes);
  for (uint32_t i = 0; i < KVS_RESBUF_CLASSES; i++) free(r->cls[i].free);
  *r = (kvs__resbuf){0};
}
