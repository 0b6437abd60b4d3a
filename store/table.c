/* SPDX-License-Identifier: MIT */
/* Block tables (Attend): where a seq's blocks and sink rows lie in an
 * exportable pool, for the daemon to hand to the client that owns the
 * seq. The seq's own references pin every block it lists. */
#include <errno.h>

#include "store/store_int.h"

int kvs__seq_table_layer(const kvs__seq *q, uint32_t layer, uint32_t *n_blocks, uint32_t *n_res,
                         const uint16_t **rk, const uint16_t **rv)
{
  if (!q || layer >= q->sp->key.n_layers)
    return -EINVAL;
  const kvs__seq_layer *L = &q->l[layer];
  *n_blocks = L->nblk;
  *n_res = L->len - L->nblk * q->sp->qp.group;
  *rk = L->rk;
  *rv = L->rv;
  return 0;
}

int kvs__seq_table_block(const kvs__seq *q, uint32_t layer, uint32_t i, kvs__pool_loc *data,
                         uint64_t *sink_mask, kvs__pool_loc *rows, uint32_t *n_rows)
{
  if (!q || layer >= q->sp->key.n_layers || i >= q->l[layer].nblk)
    return -EINVAL;
  const kvs__block *b = q->l[layer].blk[i];
  kvs__pool *p = q->sp->st->pool;
  int rc = kvs__pool_locate(p, b->data, data);
  if (rc < 0)
    return rc;
  *sink_mask = b->sink_mask;
  *n_rows = b->n_sinks;
  for (uint32_t r = 0; r < b->n_sinks; r++)
    if ((rc = kvs__pool_locate(p, b->rows[r], &rows[r])) < 0)
      return rc;
  return 0;
}

size_t kvs__space_block_bytes(const kvs__space *sp) { return sp->qbytes; }
uint32_t kvs__store_nchunks(const kvs__store *s) { return kvs__pool_nchunks(s->pool); }
size_t kvs__store_chunk_bytes(const kvs__store *s) { return kvs__pool_chunk_bytes(s->pool); }
int kvs__store_exportable(const kvs__store *s) { return kvs__pool_exportable(s->pool); }
int kvs__store_gpu(const kvs__store *s) { return kvs__pool_gpu(s->pool); }
uint32_t kvs__store_chunk_gen(const kvs__store *s, uint32_t chunk)
{
  return kvs__pool_chunk_gen(s->pool, chunk);
}
int kvs__store_chunk_export(kvs__store *s, uint32_t chunk, uint32_t *gen)
{
  return kvs__pool_chunk_export(s->pool, chunk, gen);
}
