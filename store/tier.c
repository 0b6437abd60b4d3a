/* SPDX-License-Identifier: MIT */
/* Blocks as bytes for a second tier: serialize a cached block, import one
 * after checking all of it. The bytes may come back from another daemon
 * or a corrupted store, so import trusts nothing: the checksum catches
 * damage, and every field is checked against the space it goes into. */
#include <errno.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_int.h"

/* Header: magic, 13 little-endian u32 (format, the space's quantization
 * params, layer, sinks, part sizes), the u64 sink mask: 64 bytes. The
 * quantized part itself is the kernels' layout, host byte order. */
#define HDR 64u
#define SUM 16u
static const unsigned char magic[4] = {'K', 'V', 'S', 'B'};

static void put32(unsigned char *p, uint32_t x)
{
  for (int i = 0; i < 4; i++)
    p[i] = (unsigned char)(x >> (8 * i));
}
static uint32_t get32(const unsigned char *p)
{
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static size_t size_of(const kvs__space *sp, uint32_t n_sinks)
{
  return HDR + (size_t)sp->qp.group * 4u + sp->qbytes + (size_t)n_sinks * sp->rowbytes + SUM;
}

size_t kvs__block_serial_size(const kvs__block_view *v)
{
  return size_of(v->blk->sp, v->blk->n_sinks);
}

static void header(unsigned char *p, const kvs__space *sp, uint32_t layer, uint32_t n_sinks,
                   uint64_t mask)
{
  const kvs__qparams *q = &sp->qp;
  uint32_t f[13] = {KVS_BLOCK_FORMAT, q->group,      q->channels,   q->k_bits,  q->v_bits,
                    q->v_group,       q->k_outliers, q->v_outliers, (uint32_t)q->dtype,
                    layer,            n_sinks,       (uint32_t)sp->qbytes, (uint32_t)sp->rowbytes};
  memcpy(p, magic, 4);
  for (int i = 0; i < 13; i++)
    put32(p + 4 + 4 * i, f[i]);
  put32(p + 56, (uint32_t)mask);
  put32(p + 60, (uint32_t)(mask >> 32));
}

int kvs__block_serialize(const kvs__block_view *v, void *out, size_t cap)
{
  const kvs__block *b = v->blk;
  const kvs__space *sp = b->sp;
  size_t need = size_of(sp, b->n_sinks);
  if (!out || cap < need)
    return -ENOBUFS;
  unsigned char *p = out;
  header(p, sp, b->layer, b->n_sinks, b->sink_mask);
  size_t o = HDR;
  for (uint32_t i = 0; i < sp->qp.group; i++, o += 4)
    put32(p + o, b->grp->tok[i]);
  kvs__backend *be = sp->st->be;
  int rc = kvs__backend_copy(be, p + o, b->data, sp->qbytes, 0);
  o += sp->qbytes;
  for (uint32_t i = 0; rc == 0 && i < b->n_sinks; i++, o += sp->rowbytes)
    rc = kvs__backend_copy(be, p + o, b->rows[i], sp->rowbytes, 0);
  if (rc < 0)
    return rc;
  crypto_generichash(p + o, SUM, p, o, NULL, 0);
  return 0;
}

static int bad(char *errmsg, const char *fmt, ...)
{
  if (errmsg) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errmsg, KVS_STORE_ERRMSG, fmt, ap);
    va_end(ap);
  }
  return -EINVAL;
}

/* Dequantize the candidate on the host; the kernel checks the header and
 * outlier channels, and the output must be finite as a put's would be. */
static int trial(const kvs__space *sp, const unsigned char *q, const unsigned char *rows,
                 uint32_t n_sinks, char *errmsg)
{
  const uint32_t G = sp->qp.group, C = sp->qp.channels;
  size_t qa = (sp->qbytes + 63) / 64 * 64;
  void *blk = aligned_alloc(64, qa);
  uint16_t *rbuf = malloc(n_sinks ? (size_t)n_sinks * sp->rowbytes : 1);
  uint16_t *k = malloc((size_t)G * C * 2u), *v = malloc((size_t)G * C * 2u);
  const uint16_t *rp[KVS_QBLOCK_MAX_G];
  int rc = -ENOMEM;
  if (blk && rbuf && k && v) {
    memcpy(blk, q, sp->qbytes);
    memcpy(rbuf, rows, (size_t)n_sinks * sp->rowbytes);
    for (uint32_t i = 0; i < n_sinks; i++)
      rp[i] = rbuf + (size_t)i * sp->rowbytes / 2u;
    rc = kvs__dequantize_block(&sp->qp, blk, rp, 0, G, k, v);
    if (rc < 0)
      rc = bad(errmsg, "block does not decode (%d)", rc);
    else if (kvs__has_nonfinite(k, (size_t)G * C, sp->qp.dtype) ||
             kvs__has_nonfinite(v, (size_t)G * C, sp->qp.dtype))
      rc = bad(errmsg, "block decodes to NaN or Inf");
  }
  free(blk);
  free(rbuf);
  free(k);
  free(v);
  return rc;
}

int kvs__space_import(kvs__space *sp, const uint32_t *prefix, uint32_t n_prefix,
                      const void *bytes, size_t len, char *errmsg)
{
  if (errmsg)
    errmsg[0] = 0;
  if (!sp || !prefix || !bytes)
    return -EINVAL;
  kvs__store *st = sp->st;
  const uint32_t G = sp->qp.group;
  if (n_prefix == 0 || n_prefix % G || n_prefix > KVS_STORE_MAX_TOKENS)
    return bad(errmsg, "prefix of %u tokens is not 1..%u whole groups", n_prefix,
               KVS_STORE_MAX_TOKENS / G);
  const unsigned char *p = bytes;
  if (len < HDR + SUM || memcmp(p, magic, 4) != 0)
    return bad(errmsg, "not a serialized block");
  unsigned char sum[SUM];
  crypto_generichash(sum, SUM, p, len - SUM, NULL, 0);
  if (sodium_memcmp(sum, p + len - SUM, SUM) != 0)
    return bad(errmsg, "checksum mismatch");
  if (get32(p + 4) != KVS_BLOCK_FORMAT)
    return bad(errmsg, "block format %u, not %u", get32(p + 4), KVS_BLOCK_FORMAT);
  uint32_t layer = get32(p + 40), ns = get32(p + 44);
  uint64_t mask = (uint64_t)get32(p + 56) | (uint64_t)get32(p + 60) << 32;
  /* Same params as the space: compare the header we would write. */
  unsigned char want[HDR];
  header(want, sp, layer, ns, mask);
  if (memcmp(p, want, HDR) != 0)
    return bad(errmsg, "block parameters differ from the space's");
  if (layer >= sp->key.n_layers)
    return bad(errmsg, "layer %u outside 0..%u", layer, sp->key.n_layers);
  if ((G < 64 && (mask >> G)) || (uint32_t)__builtin_popcountll(mask) != ns)
    return bad(errmsg, "sink mask does not fit %u rows and %u sinks", G, ns);
  if (len != size_of(sp, ns))
    return bad(errmsg, "%zu bytes, a block of this space has %zu", len, size_of(sp, ns));
  const unsigned char *tok = p + HDR, *q = tok + (size_t)G * 4u, *rows = q + sp->qbytes;
  for (uint32_t i = 0; i < G; i++)
    if (get32(tok + 4u * i) != prefix[n_prefix - G + i])
      return bad(errmsg, "token ids differ from the prefix's last group");
  kvs__qhdr qh;
  memcpy(&qh, q, sizeof(qh));
  if (qh.sink_mask != mask || qh.n_sinks != ns)
    return bad(errmsg, "quantized header disagrees with the sink mask");
  int rc = trial(sp, q, rows, ns, errmsg);
  if (rc < 0)
    return rc;

  /* Its identity in this store, from the prefix. */
  const uint32_t g = n_prefix / G - 1;
  kvs__h128 h = {0, 0}, parent = {0, 0};
  for (uint32_t i = 0; i <= g; i++) {
    parent = h;
    h = kvs__chain_next(sp, i ? &parent : NULL, prefix + (size_t)i * G);
  }
  if (g == 0)
    parent = (kvs__h128){0, 0};
  if (kvs__index_reserve(st->ix, 1) < 0)
    return -ENOMEM;
  uint32_t ids[KVS_QBLOCK_MAX_G];
  for (uint32_t i = 0; i < G; i++)
    ids[i] = get32(tok + 4u * i);
  /* Taken: this block, or (a collision) another group that keeps the
   * key; an import is no use private. */
  int taken;
  kvs__group *grp = kvs__grp_claim(sp, h, parent, g, ids, 1, &taken);
  if (!grp)
    return taken ? -EEXIST : -ENOMEM;
  if (grp->blk[layer])
    return -EEXIST;
  kvs__block *b;
  rc = kvs__blk_new(grp, layer, mask, &b);
  if (rc == -ENOSPC) {
    st->put_nospc++;
    return rc;
  }
  if (rc < 0)
    return rc;
  rc = kvs__backend_copy(st->be, b->data, q, sp->qbytes, 1);
  for (uint32_t i = 0; rc == 0 && i < ns; i++)
    rc = kvs__backend_copy(st->be, b->rows[i], rows + (size_t)i * sp->rowbytes, sp->rowbytes, 1);
  if (rc < 0) {
    kvs__blk_unclaim(b);
    return rc;
  }
  kvs__blk_publish(b);
  return 0;
}

static void h128_bytes(kvs__h128 h, uint8_t out[16])
{
  memcpy(out, &h.lo, 8);
  memcpy(out + 8, &h.hi, 8);
}

int kvs__space_chain(kvs__space *sp, const uint32_t *tokens, uint32_t n, uint8_t (*ids)[16],
                     uint32_t *local)
{
  if (!sp || !local || (n && (!tokens || !ids)) || n > KVS_STORE_MAX_TOKENS)
    return -EINVAL;
  const uint32_t G = sp->qp.group, nl = sp->key.n_layers, ng = n / G;
  kvs__h128 h = {0, 0}, parent = {0, 0};
  int missing = 0;
  *local = 0;
  for (uint32_t g = 0; g < ng; g++) {
    parent = h;
    h = kvs__chain_next(sp, g ? &parent : NULL, tokens + (size_t)g * G);
    h128_bytes(h, ids[g]);
    for (uint32_t l = 0; !missing && l < nl; l++)
      if (!kvs__blk_find(sp, h, parent, l, tokens + (size_t)g * G))
        missing = 1;
    if (!missing)
      *local = g + 1;
  }
  return 0;
}

void kvs__space_id(const kvs__space *sp, uint8_t out[16]) { h128_bytes(sp->seed, out); }
const kvs__space_key *kvs__space_key_of(const kvs__space *sp) { return &sp->key; }

void kvs__block_space_id(const kvs__block_view *v, uint8_t out[16])
{
  kvs__space_id(v->blk->sp, out);
}
