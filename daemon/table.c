/* SPDX-License-Identifier: MIT */
/* Block tables: see daemon/table.h and kvsink-protocol(7), BLOCK TABLES. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/reply.h"
#include "daemon/table.h"
#include "kernels/cudrv.h"
#include "proto/blocktable.h"
#include "store/pool.h"


static uint64_t pad8(uint64_t x) { return (x + 7) / 8 * 8; }

void kvs__ops_table_drop_fds(kvs__sess_state *st)
{
  for (uint32_t i = 0; i < st->n_tbl_fds; i++)
    close(st->tbl_fds[i]);
  st->n_tbl_fds = 0;
}

/* Units of the table, each once (tbl_seen stamps them for this call). */
typedef struct ulist {
  kvs__tbl_unit *u;
  uint32_t n, cap;
} ulist;

static int note_unit(kvs__sess_state *st, ulist *ul, const kvs__pool_loc *l)
{
  if (st->tbl_seen[l->unit] == st->tbl_stamp)
    return 0;
  st->tbl_seen[l->unit] = st->tbl_stamp;
  if (ul->n == ul->cap) {
    uint32_t nc = ul->cap ? ul->cap * 2 : 64;
    kvs__tbl_unit *u = realloc(ul->u, nc * sizeof(*u));
    if (!u)
      return -ENOMEM;
    ul->u = u;
    ul->cap = nc;
  }
  ul->u[ul->n++] = (kvs__tbl_unit){l->unit, l->gen, l->span, st->tbl_sent[l->unit] != l->gen};
  return 0;
}

uint64_t kvs__ops_table_limit(const kvs__store *store, uint32_t max_chunks)
{
  if (max_chunks)
    return max_chunks;
  return kvs__store_exportable(store) == KVS_POOL_EXPORT_DEVICE ? kvs__store_nchunks(store)
                                                                : UINT64_MAX;
}

/* Open the read-only fds of the units marked has_fd (whole units, at most
 * KVS_TABLE_MAX_FDS); units left over lose has_fd and *more is set. At
 * most `limit` chunk fds over the session's life: -EDQUOT past it. */
static int export_units(kvs__store *store, kvs__sess_state *st, ulist *ul, uint64_t limit,
                        int *more)
{
  *more = 0;
  for (uint32_t i = 0; i < ul->n; i++) {
    kvs__tbl_unit *u = &ul->u[i];
    if (!u->has_fd)
      continue;
    if (*more || st->n_tbl_fds + u->span > KVS_TABLE_MAX_FDS) {
      if (u->span > KVS_TABLE_MAX_FDS)
        return -E2BIG;
      u->has_fd = 0;
      *more = 1;
      continue;
    }
    /* (units left for the next reply are counted there) */
    if (st->tbl_passed + st->n_tbl_fds + u->span > limit)
      return -EDQUOT;
    for (uint32_t c = 0; c < u->span; c++) {
      uint32_t gen = 0;
      int fd = kvs__store_chunk_export(store, u->unit + c, &gen);
      if (fd < 0)
        return fd;
      st->tbl_fds[st->n_tbl_fds++] = fd;
    }
  }
  return 0;
}

int kvs__ops_table(kvs__store *store, kvs__sess_state *st, kvs__seq *seq, const kvs__req *rq,
                   uint32_t max_chunks, kvs__rep *rep)
{
  const int kind = kvs__store_exportable(store);
  if (!kind)
    return kvs__ops_fail(rep, -ENOTSUP,
                 "table: the pool is not exportable (a GPU pool without exportable VMM "
                 "chunks, or chunks that are not whole pages); use get");
  if (kind == KVS_POOL_EXPORT_DEVICE) {
    /* An importer of a CUDA allocation picks its own access: read-only
     * is libkvsink's choice, not enforced. So device chunks go only to a
     * namespace of one uid, whose blocks its clients could put anyway. */
    if (strcmp(st->ns, "shared") == 0)
      return kvs__ops_fail(rep, -EACCES,
                   "table: GPU pool chunks are not passed to the shared namespace (its "
                   "clients are several uids); use get");
    if (kvs__cudrv_uuid(kvs__store_gpu(store), rep->table_gpu) < 0)
      return kvs__ops_fail(rep, -EIO, "table: GPU of the pool unknown (%s)", kvs__cudrv_error());
    rep->table_device = 1;
  }
  const uint64_t limit = kvs__ops_table_limit(store, max_chunks);
  uint32_t nch = kvs__store_nchunks(store);
  if (!st->tbl_sent) {
    st->tbl_sent = calloc(nch, sizeof(uint32_t));
    st->tbl_seen = calloc(nch, sizeof(uint32_t));
    if (!st->tbl_sent || !st->tbl_seen)
      return kvs__ops_fail(rep, -ENOMEM, "table: out of memory");
  }
  if (++st->tbl_stamp == 0) {
    memset(st->tbl_seen, 0, nch * sizeof(uint32_t));
    st->tbl_stamp = 1;
  }
  const kvs__qparams *qp = kvs__space_qparams(st->space);
  const uint32_t lb = rq->layer_begin, nl = rq->layer_end - rq->layer_begin;
  const uint64_t rowb = (uint64_t)qp->channels * 2u;
  kvs__pool_loc *rows = malloc(64 * sizeof(*rows));
  ulist ul = {0};
  int r = rows ? 0 : -ENOMEM, more = 0;
  /* Pass 1: units, and the size of the table. */
  uint64_t size = sizeof(kvs__tbl_hdr) + (uint64_t)nl * sizeof(kvs__tbl_layer);
  for (uint32_t l = 0; r == 0 && l < nl; l++) {
    uint32_t nb, nres, nr;
    const uint16_t *rk, *rv;
    if ((r = kvs__seq_table_layer(seq, lb + l, &nb, &nres, &rk, &rv)) < 0)
      break;
    size += (uint64_t)nb * sizeof(kvs__tbl_block) + 2 * pad8(nres * rowb);
    for (uint32_t b = 0; r == 0 && b < nb; b++) {
      kvs__pool_loc d;
      uint64_t mask;
      if ((r = kvs__seq_table_block(seq, lb + l, b, &d, &mask, rows, &nr)) < 0)
        break;
      size += (uint64_t)nr * sizeof(kvs__tbl_loc);
      r = note_unit(st, &ul, &d);
      for (uint32_t i = 0; r == 0 && i < nr; i++)
        r = note_unit(st, &ul, &rows[i]);
    }
  }
  size += (uint64_t)ul.n * sizeof(kvs__tbl_unit);
  if (r == 0)
    r = export_units(store, st, &ul, limit, &more);
  if (r == -EDQUOT) {
    kvs__ops_fail(rep, r,
          "table: this session was passed %llu pool chunks, table_chunks allows %llu; "
          "reconnect (a new session) to take more tables",
          (unsigned long long)st->tbl_passed, (unsigned long long)limit);
    goto out;
  }
  if (r < 0) {
    kvs__ops_fail(rep, r, "table: %s", r == -E2BIG ? "a block spans more chunks than one reply passes"
                                           : kvs_strerror(r));
    goto out;
  }
  /* A reply that cannot pass every fd passes units only: ask again. */
  uint32_t nunits = ul.n;
  if (more) {
    uint32_t k = 0;
    for (uint32_t i = 0; i < ul.n; i++)
      if (ul.u[i].has_fd)
        ul.u[k++] = ul.u[i];
    nunits = k;
    size = sizeof(kvs__tbl_hdr) + (uint64_t)k * sizeof(kvs__tbl_unit);
  }
  if (size > rq->n_tokens || size > UINT32_MAX ||
      !kvs__segment_range_ok(&st->seg, rq->k_off, size, 8)) {
    r = kvs__ops_fail(rep, size > rq->n_tokens ? -ENOBUFS : KVS_ESEGMENT,
              "table: needs %llu bytes at offset %llu (room %u, segment %llu, 8-aligned)",
              (unsigned long long)size, (unsigned long long)rq->k_off, rq->n_tokens,
              (unsigned long long)st->seg.data);
    goto out;
  }
  /* Pass 2: write. The segment is the client's: written, never read back. */
  uint8_t *base = st->seg.base + rq->k_off;
  kvs__tbl_hdr h = {
    .magic = KVS_TABLE_MAGIC, .n_layers = more ? 0 : nl, .layer_begin = lb, .n_units = nunits,
    .chunk_bytes = kvs__store_chunk_bytes(store), .bytes = size,
    .block_bytes = kvs__space_block_bytes(st->space), .group = qp->group,
    .channels = qp->channels, .v_group = qp->v_group, .k_bits = qp->k_bits,
    .v_bits = qp->v_bits, .k_outliers = qp->k_outliers, .v_outliers = qp->v_outliers,
    .dtype = (uint32_t)qp->dtype,
  };
  memcpy(base, &h, sizeof h);
  uint64_t o = sizeof h;
  if (nunits) /* memcpy from NULL is undefined even for 0 bytes */
    memcpy(base + o, ul.u, (size_t)nunits * sizeof(kvs__tbl_unit));
  o += (uint64_t)nunits * sizeof(kvs__tbl_unit);
  uint64_t lo = o;
  o += (uint64_t)h.n_layers * sizeof(kvs__tbl_layer);
  for (uint32_t l = 0; l < h.n_layers; l++) {
    uint32_t nb, nres, nr;
    const uint16_t *rk, *rv;
    kvs__seq_table_layer(seq, lb + l, &nb, &nres, &rk, &rv);
    kvs__tbl_layer L = {.n_blocks = nb, .n_res = nres, .blocks = o};
    uint64_t ro = o + (uint64_t)nb * sizeof(kvs__tbl_block);
    for (uint32_t b = 0; b < nb; b++) {
      kvs__pool_loc d;
      kvs__tbl_block B;
      kvs__seq_table_block(seq, lb + l, b, &d, &B.sink_mask, rows, &nr);
      B.data = (kvs__tbl_loc){d.unit, d.gen, d.off};
      B.rows = ro;
      for (uint32_t i = 0; i < nr; i++) {
        kvs__tbl_loc x = {rows[i].unit, rows[i].gen, rows[i].off};
        memcpy(base + ro, &x, sizeof x);
        ro += sizeof x;
      }
      memcpy(base + o + (uint64_t)b * sizeof B, &B, sizeof B);
    }
    L.res_k = ro;
    L.res_v = ro + pad8(nres * rowb);
    if (nres) {
      memcpy(base + L.res_k, rk, nres * rowb);
      memcpy(base + L.res_v, rv, nres * rowb);
    }
    o = L.res_v + pad8(nres * rowb);
    memcpy(base + lo + (uint64_t)l * sizeof L, &L, sizeof L);
  }
  for (uint32_t i = 0; i < nunits; i++)
    if (ul.u[i].has_fd)
      st->tbl_sent[ul.u[i].unit] = ul.u[i].gen;
  st->tbl_passed += st->n_tbl_fds;
  rep->table_bytes = (uint32_t)size;
  rep->table_fds = st->n_tbl_fds;
  rep->table_more = more;
  r = 0;
out:
  if (r < 0)
    kvs__ops_table_drop_fds(st);
  free(rows);
  free(ul.u);
  return r;
}
