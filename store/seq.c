/* SPDX-License-Identifier: MIT */
/* Sequences: new, free, length, get and lookup (Decision 7). The put is
 * in put.c. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_int.h"

int kvs__fail(char *errmsg, int rc, const char *fmt, ...)
{
  if (errmsg) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errmsg, KVS_STORE_ERRMSG, fmt, ap);
    va_end(ap);
  }
  return rc;
}

int kvs__grow(void **p, uint32_t *cap, uint32_t n, size_t sz)
{
  if (n <= *cap)
    return 0;
  uint32_t c = *cap ? *cap : 16;
  while (c < n)
    c = c > UINT32_MAX / 2 ? n : c * 2;
  void *q = realloc(*p, (size_t)c * sz);
  if (!q)
    return -ENOMEM;
  *p = q;
  *cap = c;
  return 0;
}

int kvs__seq_new(kvs__space *sp, kvs__seq **out)
{
  if (!sp || !out)
    return -EINVAL;
  kvs__seq *q = calloc(1, sizeof(*q));
  if (!q)
    return -ENOMEM;
  q->l = calloc(sp->key.n_layers, sizeof(*q->l));
  if (!q->l) {
    free(q);
    return -ENOMEM;
  }
  q->sp = sp;
  sp->refs++;
  sp->seqs++;
  kvs__store *st = sp->st;
  st->nseqs++;
  q->next = st->seqs;
  if (st->seqs)
    st->seqs->prev = q;
  st->seqs = q;
  *out = q;
  return 0;
}

void kvs__res_free(kvs__store *st, kvs__seq_layer *L, uint32_t channels)
{
  if (L->rpin) {
    size_t bytes = (size_t)L->rcap * channels * 2u;
    kvs__resbuf_put(&st->resbuf, L->rk, bytes);
    kvs__resbuf_put(&st->resbuf, L->rv, bytes);
  } else {
    free(L->rk);
    free(L->rv);
  }
  L->rk = L->rv = NULL;
  L->rcap = L->rpin = 0;
}

void kvs__seq_free(kvs__seq *q)
{
  if (!q)
    return;
  kvs__space *sp = q->sp;
  kvs__store *st = sp->st;
  for (uint32_t l = 0; l < sp->key.n_layers; l++) {
    for (uint32_t i = 0; i < q->l[l].nblk; i++)
      kvs__blk_unref(q->l[l].blk[i]);
    free(q->l[l].blk);
    kvs__res_free(st, &q->l[l], sp->qp.channels);
  }
  if (q->prev)
    q->prev->next = q->next;
  else
    st->seqs = q->next;
  if (q->next)
    q->next->prev = q->prev;
  st->nseqs--;
  st->res_bytes -= q->res_bytes;
  sp->seqs--;
  free(q->l);
  free(q->tok);
  free(q->flag);
  free(q->chain);
  free(q);
  kvs__space_unref_internal(sp);
}

uint32_t kvs__seq_len(const kvs__seq *q)
{
  uint32_t m = UINT32_MAX;
  for (uint32_t l = 0; l < q->sp->key.n_layers; l++)
    if (q->l[l].len < m)
      m = q->l[l].len;
  return m;
}

int kvs__pfn_flag(const kvs__space *sp, uint32_t t)
{
  return sp->key.policy != KVS_POLICY_NONE && t < sp->key.pfn;
}

static int seq_get(kvs__seq *q, uint32_t start, uint32_t n, uint32_t lb, uint32_t le,
                   uint16_t *k, uint16_t *v, int dev, char *errmsg)
{
  if (errmsg)
    errmsg[0] = 0;
  if (!q)
    return -EINVAL;
  kvs__space *sp = q->sp;
  kvs__store *st = sp->st;
  if (dev && !st->be->dev_io)
    return kvs__fail(errmsg, -EOPNOTSUPP, "the %s backend cannot write device memory", st->be->name);
  const uint32_t nl = sp->key.n_layers, G = sp->qp.group, C = sp->qp.channels;
  if (lb > le || le > nl)
    return kvs__fail(errmsg, -EINVAL, "layer range [%u, %u) outside 0..%u", lb, le, nl);
  if (n && le > lb && (!k || !v))
    return kvs__fail(errmsg, -EINVAL, "no output buffers");
  uint64_t end = (uint64_t)start + n;
  for (uint32_t l = lb; l < le; l++)
    if (end > q->l[l].len)
      return kvs__fail(errmsg, -EINVAL, "tokens [%u, %llu) beyond layer %u length %u", start,
                  (unsigned long long)end, l, q->l[l].len);
  /* Blocks are dequantized in batches (KVS_BATCH_MAX into host memory;
   * into device memory KVS_BATCH_DEV_MAX, so a bulk device get is one
   * launch and one synchronize), residual rows copied. */
  kvs__dqitem stack_items[KVS_BATCH_MAX], *items = stack_items;
  uint32_t cap = KVS_BATCH_MAX;
  if (dev && n >= G) {
    uint64_t want = (uint64_t)(le - lb) * (n / G + 2);
    cap = want < KVS_BATCH_DEV_MAX ? (uint32_t)want : KVS_BATCH_DEV_MAX;
    if (cap > KVS_BATCH_MAX && !(items = malloc(cap * sizeof *items)))
      return kvs__fail(errmsg, -ENOMEM, "out of memory");
    if (cap <= KVS_BATCH_MAX) {
      items = stack_items;
      cap = KVS_BATCH_MAX;
    }
  }
  int rc = 0, tail = 0; /* tail: a residual copy up since the last dequantize call */
  uint32_t m = 0;
  uint64_t t0 = kvs__prof_now(st), tk = 0, tr = 0, t1, nblk = 0;
  for (uint32_t l = lb; l < le; l++) {
    const kvs__seq_layer *L = &q->l[l];
    uint32_t qend = L->nblk * G, t = start;
    while (t < end) {
      size_t o = ((size_t)(l - lb) * n + (t - start)) * C;
      if (t < qend) {
        uint32_t g = t / G, r0 = t % G, r1 = G;
        if ((uint64_t)g * G + r1 > end)
          r1 = (uint32_t)(end - (uint64_t)g * G);
        const kvs__block *b = L->blk[g];
        items[m++] = (kvs__dqitem){b->data, (const uint16_t *const *)b->rows, b->sink_mask, r0, r1,
                                   k + o, v + o, dev};
        nblk++;
        if (m == cap) {
          t1 = kvs__prof_now(st);
          rc = kvs__backend_dequantize_n(st->be, &sp->qp, items, m);
          tk += kvs__prof_now(st) - t1;
          m = 0;
          tail = 0;
          if (rc < 0) {
            rc = kvs__fail(errmsg, rc, "dequantization failed");
            goto out;
          }
        }
        t = g * G + r1;
      } else {
        size_t rows = (size_t)(end - t), ro = (size_t)(t - qend) * C;
        t1 = kvs__prof_now(st);
        if (dev) {
          /* residual rows live in host memory: copy them up */
          rc = kvs__backend_copy(st->be, k + o, L->rk + ro, rows * C * 2u, 1);
          if (rc == 0)
            rc = kvs__backend_copy(st->be, v + o, L->rv + ro, rows * C * 2u, 1);
          tail = 1;
          if (rc < 0) {
            rc = kvs__fail(errmsg, rc, "copy to device memory failed");
            goto out;
          }
        } else {
          memcpy(k + o, L->rk + ro, rows * C * 2u);
          memcpy(v + o, L->rv + ro, rows * C * 2u);
        }
        tr += kvs__prof_now(st) - t1;
        t = (uint32_t)end;
      }
    }
  }
  t1 = kvs__prof_now(st);
  if (m && (rc = kvs__backend_dequantize_n(st->be, &sp->qp, items, m)) < 0) {
    rc = kvs__fail(errmsg, rc, "dequantization failed");
    goto out;
  }
  tk += kvs__prof_now(st) - t1;
  /* the last residual copies came after the last launch (or there was
   * none): nothing waited for them yet */
  if (m)
    tail = 0;
  if (tail && st->be->sync) {
    t1 = kvs__prof_now(st);
    rc = st->be->sync(st->be);
    tr += kvs__prof_now(st) - t1;
    if (rc < 0) {
      rc = kvs__fail(errmsg, rc, "copy to device memory failed");
      goto out;
    }
  }
  st->gets++;
  st->bytes_out += (uint64_t)(le - lb) * n * C * 2u * 2u;
out:
  if (items != stack_items)
    free(items);
  if (st->prof) {
    kvs__store_prof *p = st->prof;
    uint64_t all = kvs__prof_now(st) - t0;
    p->ns[KVS_PROF_GET] += all;
    p->ns[KVS_PROF_GET_KERNEL] += tk;
    p->ns[KVS_PROF_GET_RESIDUAL] += tr;
    p->ns[KVS_PROF_GET_ITEMS] += all - tk - tr;
    p->calls[KVS_PROF_GET]++;
    p->calls[KVS_PROF_GET_KERNEL]++;
    p->calls[KVS_PROF_GET_RESIDUAL]++;
    p->calls[KVS_PROF_GET_ITEMS]++;
    p->get_blocks += nblk;
  }
  return rc;
}

int kvs__seq_get(kvs__seq *q, uint32_t start, uint32_t n, uint32_t lb, uint32_t le,
                 uint16_t *k, uint16_t *v, char *errmsg)
{
  return seq_get(q, start, n, lb, le, k, v, 0, errmsg);
}

int kvs__seq_get_dev(kvs__seq *q, uint32_t start, uint32_t n, uint32_t lb, uint32_t le,
                     uint16_t *k, uint16_t *v, char *errmsg)
{
  return seq_get(q, start, n, lb, le, k, v, 1, errmsg);
}

int kvs__space_lookup(kvs__space *sp, const uint32_t *tokens, uint32_t n, kvs__seq *bind,
                      uint32_t *cached)
{
  if (!sp || !cached || (n && !tokens))
    return -EINVAL;
  if (n > KVS_STORE_MAX_TOKENS)
    return -EINVAL;
  kvs__store *st = sp->st;
  const uint32_t nl = sp->key.n_layers, G = sp->qp.group;
  if (bind) {
    if (bind->sp != sp || bind->ntok != 0)
      return -EINVAL;
    for (uint32_t l = 0; l < nl; l++)
      if (bind->l[l].len)
        return -EINVAL;
  }
  const kvs__h128 none = {0, 0};
  uint32_t ng = n / G, found = 0;
  kvs__h128 *ch = malloc(sizeof(*ch) * (ng ? ng : 1));
  kvs__group **gr = malloc(sizeof(*gr) * (ng ? ng : 1));
  if (!ch || !gr) {
    free(ch);
    free(gr);
    return -ENOMEM;
  }
  /* one look-up per group: its record holds every layer's block */
  for (; found < ng; found++) {
    ch[found] = kvs__chain_next(sp, found ? &ch[found - 1] : NULL, tokens + (size_t)found * G);
    gr[found] = kvs__grp_find(sp, ch[found], found ? ch[found - 1] : none,
                              tokens + (size_t)found * G);
    uint32_t l = 0;
    while (l < nl && kvs__grp_block(gr[found], l))
      l++;
    if (l < nl)
      break;
  }
  const uint32_t hit = found * G;
  if (bind && found) {
    int rc = 0;
    if (kvs__grow((void **)&bind->tok, &bind->tokcap, hit, sizeof(*bind->tok)) < 0 ||
        kvs__grow((void **)&bind->chain, &bind->chaincap, found, sizeof(*bind->chain)) < 0)
      rc = -ENOMEM;
    if (rc == 0) {
      void *f = realloc(bind->flag, bind->tokcap);
      if (!f)
        rc = -ENOMEM;
      else
        bind->flag = f;
    }
    for (uint32_t l = 0; rc == 0 && l < nl; l++)
      if (kvs__grow((void **)&bind->l[l].blk, &bind->l[l].blkcap, found, sizeof(kvs__block *)) < 0)
        rc = -ENOMEM;
    if (rc < 0) {
      free(ch);
      free(gr);
      return rc;
    }
    for (uint32_t l = 0; l < nl; l++) {
      kvs__seq_layer *L = &bind->l[l];
      for (uint32_t g = 0; g < found; g++) {
        kvs__block *b = kvs__grp_block(gr[g], l);
        kvs__blk_ref(b);
        L->blk[g] = b;
        if (l == 0)
          for (uint32_t r = 0; r < G; r++)
            bind->flag[g * G + r] = (uint8_t)((b->sink_mask >> r) & 1u);
      }
      L->nblk = found;
      L->len = hit;
    }
    memcpy(bind->tok, tokens, (size_t)hit * sizeof(*tokens));
    memcpy(bind->chain, ch, (size_t)found * sizeof(*ch));
    bind->ntok = bind->known = hit;
    bind->nchain = found;
    bind->npred = 0;
    for (uint32_t t = 0; t < hit; t++)
      bind->npred += bind->flag[t] && !kvs__pfn_flag(sp, t);
  } else {
    /* A hit is a use: keep those blocks young. */
    for (uint32_t g = 0; g < found; g++)
      for (uint32_t l = 0; l < nl; l++)
        kvs__blk_touch(kvs__grp_block(gr[g], l));
  }
  free(ch);
  free(gr);
  st->lookups++;
  st->lookup_tokens += n;
  st->lookup_hit_tokens += hit;
  *cached = hit;
  return 0;
}
