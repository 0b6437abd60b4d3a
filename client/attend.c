/* SPDX-License-Identifier: MIT */
/* Block tables and decode attention in the client's process (Attend):
 * kvs_table_get asks the daemon once for where a seq's blocks lie, maps
 * the pool units it is passed read-only, and kvs_attend runs the C
 * reference (kernels/attn.c) over them, never writing 16-bit K/V. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client/attend_int.h"
#include "client/client_int.h"
#include "kernels/attn.h"
#include "proto/blocktable.h"

#define MAX_ROUNDS 4096u    /* table requests per kvs_table_get (fds come 64 a reply) */

static void umap_unmap(const umap *m)
{
  if (m->dev)
    kvs__cudrv_unimport(m->ordinal, (uint64_t)(uintptr_t)m->base, m->span, m->bytes / m->span);
  else
    munmap(m->base, m->bytes);
}

static void umap_put(umap *m)
{
  if (m && --m->refs == 0) {
    umap_unmap(m);
    free(m);
  }
}

void kvs__attn_close(kvs_client *c)
{
  kvs__umaps *u = c->umaps;
  if (!u)
    return;
  for (uint32_t i = 0; i < u->n; i++)
    umap_put(u->cur[i]);
  free(u->cur);
  kvs__attend_dev_close(u);
  free(u);
  c->umaps = NULL;
}

static int seterr(kvs_client *c, int r, const char *msg)
{
  snprintf(c->conn.errmsg, sizeof c->conn.errmsg, "table: %s", msg);
  return r;
}

/* Map span chunk fds contiguously, read-only, as the current unit: memfds
 * with mmap, or (ordinal >= 0) GPU pool chunks imported into GPU
 * ordinal's address space, read-only for it. */
static int map_unit(kvs_client *c, const kvs__tbl_unit *tu, const int *fds, size_t chunk,
                    int ordinal)
{
  if (tu->span == 0 || chunk == 0 || tu->span > SIZE_MAX / chunk || tu->unit >= UINT32_MAX - 1)
    return seterr(c, -EPROTO, "bad unit");
  size_t bytes = (size_t)tu->span * chunk;
  uint8_t *b = NULL;
  if (ordinal >= 0) {
    uint64_t va = 0;
    int r = kvs__cudrv_import_ro(ordinal, fds, tu->span, chunk, &va);
    if (r < 0) {
      snprintf(c->conn.errmsg, sizeof c->conn.errmsg, "table: cannot import a GPU pool chunk: %s",
               kvs__cudrv_error());
      return r;
    }
    b = (uint8_t *)(uintptr_t)va;
    goto mapped;
  }
  for (uint32_t i = 0; i < tu->span; i++) {
    struct stat st;
    if (fstat(fds[i], &st) < 0 || !S_ISREG(st.st_mode) || st.st_size < 0 ||
        (uint64_t)st.st_size < chunk)
      return seterr(c, -EPROTO, "a chunk fd is not the announced size");
  }
  b = mmap(NULL, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (b == MAP_FAILED)
    return seterr(c, -errno, "cannot reserve address space");
  for (uint32_t i = 0; i < tu->span; i++)
    if (mmap(b + (size_t)i * chunk, chunk, PROT_READ, MAP_SHARED | MAP_FIXED, fds[i], 0) ==
        MAP_FAILED) {
      int e = errno;
      munmap(b, bytes);
      return seterr(c, -e, "cannot map a pool chunk");
    }
mapped:;
  kvs__umaps *u = c->umaps;
  umap probe = {tu->unit, tu->gen, 1, b, bytes, ordinal >= 0, ordinal, tu->span};
  if (tu->unit >= u->n) {
    uint32_t nn = tu->unit + 1;
    umap **cur = realloc(u->cur, nn * sizeof(*cur));
    if (!cur) {
      umap_unmap(&probe);
      return -ENOMEM;
    }
    memset(cur + u->n, 0, (nn - u->n) * sizeof(*cur));
    u->cur = cur;
    u->n = nn;
  }
  umap *m = malloc(sizeof *m);
  if (!m) {
    umap_unmap(&probe);
    return -ENOMEM;
  }
  *m = probe;
  umap_put(u->cur[tu->unit]);   /* an older generation: tables may still hold it */
  u->cur[tu->unit] = m;
  return 0;
}

/* One table request; fds of new units mapped. *more: ask again.
 * *ordinal: -1 for host pool chunks, else the GPU (by the reply's UUID)
 * whose pool chunks the units are. */
static int table_round(kvs_client *c, uint64_t seq, uint32_t lb, uint32_t le, size_t off,
                       size_t len, uint32_t *bytes, int *more, int *ordinal)
{
  kvs__req req;
  kvs__rep rep;
  int fds[KVS_TABLE_MAX_FDS];
  uint32_t nfd = 0;
  memset(&req, 0, sizeof req);
  req.op = KVS_OP_TABLE;
  req.seq = seq;
  req.layer_begin = lb;
  req.layer_end = le;
  req.k_off = off;
  req.n_tokens = len > UINT32_MAX ? UINT32_MAX : (uint32_t)len;
  int r = kvs__conn_call_fds(&c->conn, &req, &rep, fds, KVS_TABLE_MAX_FDS, &nfd);
  kvs__rep_free(&rep);
  if (r < 0)
    return r;
  kvs__tbl_hdr h;
  *ordinal = -1;
  if (rep.table_device) {
    /* the GPU pool's chunks: imported on the GPU the daemon names */
    r = kvs__cudrv_find_uuid(rep.table_gpu, ordinal);
    if (r < 0) {
      snprintf(c->conn.errmsg, sizeof c->conn.errmsg,
               "table: the pool's chunks are on a GPU this process cannot use (%s)",
               r == -ENODEV ? "no GPU with that UUID here" : kvs__cudrv_error());
      r = r == -ENODEV ? -ENODEV : -ENOTSUP;
      goto out;
    }
  }
  if (rep.table_fds != nfd) {
    r = seterr(c, -EPROTO, "reply fd count differs from the fds received");
    goto out;
  }
  if (rep.table_bytes < sizeof h || rep.table_bytes > len) {
    r = seterr(c, -EPROTO, "table size out of range");
    goto out;
  }
  memcpy(&h, (uint8_t *)c->seg + off, sizeof h);
  if (h.magic != KVS_TABLE_MAGIC || h.bytes != rep.table_bytes ||
      h.n_units > (rep.table_bytes - sizeof h) / sizeof(kvs__tbl_unit)) {
    r = seterr(c, -EPROTO, "bad table header");
    goto out;
  }
  uint32_t used = 0;
  for (uint32_t i = 0; i < h.n_units; i++) {
    kvs__tbl_unit tu;
    memcpy(&tu, (uint8_t *)c->seg + off + sizeof h + (size_t)i * sizeof tu, sizeof tu);
    if (!tu.has_fd)
      continue;
    if (tu.span > nfd - used) {
      r = seterr(c, -EPROTO, "table names more fds than were passed");
      goto out;
    }
    if ((r = map_unit(c, &tu, fds + used, (size_t)h.chunk_bytes, *ordinal)) < 0)
      goto out;
    used += tu.span;
  }
  if (used != nfd)
    r = seterr(c, -EPROTO, "fds passed that no unit names");
  *bytes = rep.table_bytes;
  *more = rep.table_more;
out:
  for (uint32_t i = 0; i < nfd; i++)
    close(fds[i]);
  return r;
}

/* The current mapping of loc, with [off, off + n) inside it, held by t. */
static const uint8_t *resolve(kvs_client *c, kvs_table *t, const kvs__tbl_loc *l, size_t n,
                              size_t align)
{
  kvs__umaps *u = c->umaps;
  if (l->unit >= u->n || !u->cur[l->unit] || u->cur[l->unit]->gen != l->gen)
    return NULL;
  umap *m = u->cur[l->unit];
  if (l->off > m->bytes || n > m->bytes - l->off || l->off % align)
    return NULL;
  uint32_t i;
  for (i = 0; i < t->nmaps && t->maps[i] != m; i++)
    ;
  if (i == t->nmaps) {
    umap **mm = realloc(t->maps, (t->nmaps + 1) * sizeof(*mm));
    if (!mm)
      return NULL;
    t->maps = mm;
    t->maps[t->nmaps++] = m;
    m->refs++;
  }
  return m->base + l->off;
}

void kvs_table_free(kvs_table *t)
{
  if (!t)
    return;
  for (uint32_t l = 0; t->L && l < t->nl; l++) {
    free(t->L[l].blk);
    free(t->L[l].rows);
  }
  free(t->L);
  kvs__table_dev_free(t); /* before the units it points into */
  for (uint32_t i = 0; i < t->nmaps; i++)
    umap_put(t->maps[i]);
  free(t->maps);
  free(t->copy);
  free(t);
}

/* in the copy: [o, o + n) inside the table's bytes, o aligned */
static int in_table(uint64_t bytes, uint64_t o, uint64_t n, uint64_t align)
{
  return o <= bytes && n <= bytes - o && o % align == 0;
}

static int build(kvs_client *c, kvs_table *t, const kvs__tbl_hdr *h, uint32_t lb, uint32_t le)
{
  const uint64_t B = h->bytes;
  const uint8_t *p = t->copy;
  kvs__qparams *qp = &t->qp;
  *qp = (kvs__qparams){h->group, h->channels, h->v_group, h->k_bits, h->v_bits,
                       h->k_outliers, h->v_outliers, (kvs_dtype)h->dtype};
  kvs__qlayout ql;
  if (kvs__qparams_check(qp) < 0 || qp->dtype != c->model.dtype ||
      qp->channels != c->model.n_kv_heads * c->model.head_dim ||
      kvs__qlayout_of(qp, &ql) != h->block_bytes || h->layer_begin != lb ||
      h->n_layers != le - lb)
    return seterr(c, -EPROTO, "table does not match the session's model and settings");
  t->n_kv_heads = c->model.n_kv_heads;
  t->head_dim = c->model.head_dim;
  t->lb = lb;
  t->nl = h->n_layers;
  t->L = calloc(t->nl ? t->nl : 1, sizeof(*t->L));
  if (!t->L)
    return -ENOMEM;
  const uint64_t rowb = (uint64_t)qp->channels * 2u;
  uint64_t lo = sizeof *h + (uint64_t)h->n_units * sizeof(kvs__tbl_unit);
  if (!in_table(B, lo, (uint64_t)t->nl * sizeof(kvs__tbl_layer), 8))
    return seterr(c, -EPROTO, "layer records outside the table");
  for (uint32_t l = 0; l < t->nl; l++) {
    kvs__tbl_layer L;
    memcpy(&L, p + lo + (uint64_t)l * sizeof L, sizeof L);
    tlayer *x = &t->L[l];
    if (!in_table(B, L.blocks, (uint64_t)L.n_blocks * sizeof(kvs__tbl_block), 8) ||
        !in_table(B, L.res_k, L.n_res * rowb, 8) || !in_table(B, L.res_v, L.n_res * rowb, 8))
      return seterr(c, -EPROTO, "layer data outside the table");
    x->nb = L.n_blocks;
    x->nres = L.n_res;
    x->rk = (const uint16_t *)(p + L.res_k);
    x->rv = (const uint16_t *)(p + L.res_v);
    x->blk = calloc(x->nb ? x->nb : 1, sizeof(*x->blk));
    uint64_t nrows = 0;
    for (uint32_t b = 0; b < x->nb; b++) {
      kvs__tbl_block tb;
      memcpy(&tb, p + L.blocks + (uint64_t)b * sizeof tb, sizeof tb);
      nrows += (uint64_t)__builtin_popcountll(tb.sink_mask);
    }
    x->rows = calloc(nrows ? nrows : 1, sizeof(*x->rows));
    if (!x->blk || !x->rows)
      return -ENOMEM;
    uint64_t ri = 0;
    for (uint32_t b = 0; b < x->nb; b++) {
      kvs__tbl_block tb;
      memcpy(&tb, p + L.blocks + (uint64_t)b * sizeof tb, sizeof tb);
      uint32_t nr = (uint32_t)__builtin_popcountll(tb.sink_mask);
      if ((qp->group < 64 && (tb.sink_mask >> qp->group)) ||
          !in_table(B, tb.rows, (uint64_t)nr * sizeof(kvs__tbl_loc), 8))
        return seterr(c, -EPROTO, "bad sink rows");
      const void *d = resolve(c, t, &tb.data, (size_t)h->block_bytes, 8);
      if (!d)
        return seterr(c, -EPROTO, "a block lies outside the mapped pool units");
      x->blk[b].data = d;
      x->blk[b].sink_mask = tb.sink_mask;
      x->blk[b].rows = nr ? &x->rows[ri] : NULL;
      for (uint32_t i = 0; i < nr; i++) {
        kvs__tbl_loc rl;
        memcpy(&rl, p + tb.rows + (uint64_t)i * sizeof rl, sizeof rl);
        const void *rp = resolve(c, t, &rl, (size_t)(2 * rowb), 2);
        if (!rp)
          return seterr(c, -EPROTO, "a sink row lies outside the mapped pool units");
        x->rows[ri++] = rp;
      }
    }
  }
  return 0;
}

int kvs_table_get(kvs_client *c, uint64_t seq, uint32_t lb, uint32_t le, size_t scratch_off,
                  size_t scratch_len, kvs_table **out)
{
  if (!c || !out || lb > le || le > c->model.n_layers || !c->seg ||
      scratch_off > c->info.seg_size || scratch_len > c->info.seg_size - scratch_off)
    return -EINVAL;
  *out = NULL;
  if (!c->umaps && !(c->umaps = calloc(1, sizeof(*c->umaps))))
    return -ENOMEM;
  uint32_t bytes = 0;
  int more = 1, r = 0, ord = -1;
  for (uint32_t i = 0; more; i++) {
    int o;
    if (i == MAX_ROUNDS)
      return seterr(c, -EPROTO, "the daemon keeps passing fds");
    if ((r = table_round(c, seq, lb, le, scratch_off, scratch_len, &bytes, &more, &o)) < 0)
      return r;
    if (i && o != ord)
      return seterr(c, -EPROTO, "the pool changed kind between replies");
    ord = o;
  }
  kvs_table *t = calloc(1, sizeof *t);
  if (!t || !(t->copy = malloc(bytes))) {
    free(t);
    return -ENOMEM;
  }
  memcpy(t->copy, (uint8_t *)c->seg + scratch_off, bytes);
  t->dev = ord >= 0;
  t->ordinal = ord;
  kvs__tbl_hdr h;
  memcpy(&h, t->copy, sizeof h);
  if (h.bytes != bytes)
    r = seterr(c, -EPROTO, "table changed while it was read");
  if (r == 0)
    r = build(c, t, &h, lb, le);
  if (r == 0 && t->dev && (r = kvs__table_dev_upload(t)) < 0)
    snprintf(c->conn.errmsg, sizeof c->conn.errmsg,
             "table: cannot copy the table to the GPU (%s)", kvs_strerror(r));
  if (r < 0) {
    kvs_table_free(t);
    return r;
  }
  c->conn.errmsg[0] = '\0';
  *out = t;
  return 0;
}

uint32_t kvs_table_tokens(const kvs_table *t, uint32_t layer)
{
  if (!t || layer < t->lb || layer - t->lb >= t->nl)
    return 0;
  const tlayer *x = &t->L[layer - t->lb];
  return x->nb * t->qp.group + x->nres;
}

int kvs_attend(kvs_client *c, kvs_table *const *tables, uint32_t n_seqs, uint32_t layer,
               const void *q, int q_dtype, uint32_t n_q_heads, float *out)
{
  return kvs_attend_lse(c, tables, n_seqs, layer, q, q_dtype, n_q_heads, out, NULL);
}

int kvs_attend_lse(kvs_client *c, kvs_table *const *tables, uint32_t n_seqs, uint32_t layer,
                   const void *q, int q_dtype, uint32_t n_q_heads, float *out, float *lse)
{
  if (!c || (n_seqs && (!tables || !q || !out)))
    return -EINVAL;
  if (n_seqs == 0)
    return 0;
  const kvs_table *t0 = tables[0];
  if (!t0)
    return -EINVAL;
  kvs__attn_shape s = {t0->qp, t0->n_kv_heads, n_q_heads, t0->head_dim};
  if (kvs__attn_shape_check(&s) < 0)
    return -EINVAL;
  size_t nq = (size_t)n_seqs * n_q_heads * t0->head_dim;
  kvs__attn_seq *seqs = calloc(n_seqs, sizeof(*seqs));
  float *qf = NULL;
  int r = seqs ? 0 : -ENOMEM;
  for (uint32_t i = 0; r == 0 && i < n_seqs; i++) {
    const kvs_table *t = tables[i];
    if (!t || memcmp(&t->qp, &t0->qp, sizeof t->qp) || t->n_kv_heads != t0->n_kv_heads ||
        layer < t->lb || layer - t->lb >= t->nl) {
      r = -EINVAL;
      break;
    }
    if (t->dev) { /* its blocks are GPU memory: kvs_attend_device reads them */
      r = seterr(c, -EINVAL, "a table of a GPU pool: use kvs_attend_device");
      break;
    }
    const tlayer *x = &t->L[layer - t->lb];
    seqs[i] = (kvs__attn_seq){x->blk, x->nb, x->nres, x->rk, x->rv};
  }
  if (r == 0 && q_dtype != KVS_DTYPE_F32) {
    if (q_dtype != KVS_DTYPE_F16 && q_dtype != KVS_DTYPE_BF16)
      r = -EINVAL;
    else if (!(qf = malloc(nq * sizeof(float))))
      r = -ENOMEM;
    else
      r = kvs_half_to_f32(qf, q, nq, (kvs_dtype)q_dtype);
  }
  if (r == 0)
    r = kvs__attn_decode_lse(&s, seqs, n_seqs, qf ? qf : q, out, lse);
  free(qf);
  free(seqs);
  return r;
}
