/* SPDX-License-Identifier: MIT */
/* The host backend: the pool is plain aligned host memory and the kernels
 * are the C reference. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "store/pool.h"
#include "store/store.h"

static int host_pool_alloc(kvs__backend *b, size_t bytes, void **base)
{
  (void)b;
  size_t n = (bytes + KVS_POOL_ALIGN - 1) / KVS_POOL_ALIGN * KVS_POOL_ALIGN;
  void *p = aligned_alloc(KVS_POOL_ALIGN, n ? n : KVS_POOL_ALIGN);
  if (!p)
    return -ENOMEM;
  *base = p;
  return 0;
}

static void host_pool_free(kvs__backend *b, void *base)
{
  (void)b;
  free(base);
}

static int host_quantize(kvs__backend *b, const kvs__qparams *p, const uint16_t *k,
                         const uint16_t *v, uint64_t sink_mask, void *block,
                         uint16_t *const *rows)
{
  (void)b;
  return kvs__quantize_block(p, k, v, sink_mask, block, rows);
}

static int host_dequantize(kvs__backend *b, const kvs__qparams *p, const void *block,
                           const uint16_t *const *rows, uint32_t r0, uint32_t r1,
                           uint16_t *k_out, uint16_t *v_out)
{
  (void)b;
  return kvs__dequantize_block(p, block, rows, r0, r1, k_out, v_out);
}

kvs__backend kvs__backend_host = {
  .name = "host",
  .pool_alloc = host_pool_alloc,
  .pool_free = host_pool_free,
  .quantize = host_quantize,
  .dequantize = host_dequantize,
  .priv = NULL,
};

int kvs__backend_copy(kvs__backend *b, void *dst, const void *src, size_t n, int to_pool)
{
  if (b->copy)
    return b->copy(b, dst, src, n, to_pool);
  memcpy(dst, src, n);
  return 0;
}

int kvs__backend_quantize_n(kvs__backend *b, const kvs__qparams *p, const kvs__qitem *it,
                            uint32_t n)
{
  /* device memory only for a backend that reads it */
  for (uint32_t i = 0; i < n && !b->dev_io; i++)
    if (it[i].dev)
      return -EOPNOTSUPP;
  if (b->quantize_n)
    return b->quantize_n(b, p, it, n);
  for (uint32_t i = 0; i < n; i++) {
    int rc = b->quantize(b, p, it[i].k, it[i].v, it[i].sink_mask, it[i].block, it[i].rows);
    if (rc < 0)
      return rc;
  }
  return 0;
}

int kvs__backend_dequantize_n(kvs__backend *b, const kvs__qparams *p, const kvs__dqitem *it,
                              uint32_t n)
{
  for (uint32_t i = 0; i < n && !b->dev_io; i++)
    if (it[i].dev)
      return -EOPNOTSUPP;
  if (b->dequantize_n)
    return b->dequantize_n(b, p, it, n);
  for (uint32_t i = 0; i < n; i++) {
    int rc = b->dequantize(b, p, it[i].block, it[i].rows, it[i].r0, it[i].r1, it[i].k_out,
                           it[i].v_out);
    if (rc < 0)
      return rc;
  }
  return 0;
}
