/* SPDX-License-Identifier: MIT */
/* Document splitting and context packing; see corpus.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "eval/corpus.h"

static int push_id(kvs__corpus *c, size_t *cap, uint32_t id)
{
  if (c->n_ids == *cap) {
    size_t nc = *cap ? *cap * 2 : 4096;
    uint32_t *n = realloc(c->ids, nc * sizeof *n);
    if (!n)
      return -ENOMEM;
    c->ids = n;
    *cap = nc;
  }
  c->ids[c->n_ids++] = id;
  return 0;
}

/* Documents are separated by "\n\x1e\n" (eval/bpe.py read_docs, which
 * the training used): each piece loses its leading and trailing newlines,
 * and pieces holding only whitespace are dropped. */
static const unsigned char *find_sep(const unsigned char *s, size_t len, size_t from)
{
  for (size_t i = from; i + 3 <= len; i++)
    if (s[i] == '\n' && s[i + 1] == 0x1e && s[i + 2] == '\n')
      return s + i;
  return NULL;
}

static int is_space(unsigned char c)
{
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

int kvs__corpus_build(kvs__corpus *c, const kvs__tokenizer *t, const unsigned char *text,
                      size_t len, uint32_t bos, uint32_t ctx, uint32_t max_ctx)
{
  return kvs__corpus_build_pieces(c, t, text, len, bos, ctx, max_ctx, 0);
}

int kvs__corpus_build_pieces(kvs__corpus *c, const kvs__tokenizer *t, const unsigned char *text,
                             size_t len, uint32_t bos, uint32_t ctx, uint32_t max_ctx,
                             uint32_t piece)
{
  size_t cap = 0, pos = 0, dcap = 0, dn = 0;
  uint32_t *doc = NULL;
  int r;
  memset(c, 0, sizeof *c);
  if (ctx < 2 || piece == 1)
    return -EINVAL;
  while (pos <= len) {
    const unsigned char *sep = find_sep(text, len, pos);
    size_t end = sep ? (size_t)(sep - text) : len, after = sep ? end + 3 : len + 1;
    size_t b = pos, e = end, k;
    while (b < e && text[b] == '\n')
      b++;
    while (e > b && text[e - 1] == '\n')
      e--;
    for (k = b; k < e && is_space(text[k]); k++)
      ;
    if (k < e && piece == 0) {
      if ((r = push_id(c, &cap, bos)) < 0 ||
          (r = kvs__tok_encode(t, text + b, e - b, &c->ids, &c->n_ids, &cap)) < 0)
        goto fail;
      c->n_docs++;
    } else if (k < e) {
      /* pieces of at most `piece` tokens: BOS + piece - 1 document tokens */
      dn = 0;
      if ((r = kvs__tok_encode(t, text + b, e - b, &doc, &dn, &dcap)) < 0)
        goto fail;
      for (size_t i = 0; i < dn; i++) {
        if (i % (piece - 1) == 0 && (r = push_id(c, &cap, bos)) < 0)
          goto fail;
        if ((r = push_id(c, &cap, doc[i])) < 0)
          goto fail;
      }
      if (dn == 0 && (r = push_id(c, &cap, bos)) < 0)
        goto fail;
      c->n_docs++;
    }
    pos = after;
  }
  free(doc);
  doc = NULL;
  size_t nmax = c->n_ids / ctx + 1;
  c->ctx_start = malloc(nmax * sizeof *c->ctx_start);
  c->ctx_len = malloc(nmax * sizeof *c->ctx_len);
  if (!c->ctx_start || !c->ctx_len) {
    r = -ENOMEM;
    goto fail;
  }
  if (c->n_ids < ctx) {
    if (c->n_ids >= 2) {
      c->ctx_start[0] = 0;
      c->ctx_len[0] = (uint32_t)c->n_ids;
      c->n_ctx = 1;
    }
    return 0;
  }
  for (size_t s = 0; s + ctx <= c->n_ids && (max_ctx == 0 || c->n_ctx < max_ctx);) {
    c->ctx_start[c->n_ctx] = s;
    c->ctx_len[c->n_ctx] = ctx;
    c->n_ctx++;
    s += ctx;
    while (s < c->n_ids && c->ids[s] != bos)
      s++;
  }
  return 0;
fail:
  free(doc);
  kvs__corpus_free(c);
  return r;
}

void kvs__corpus_free(kvs__corpus *c)
{
  free(c->ids);
  free(c->ctx_start);
  free(c->ctx_len);
  memset(c, 0, sizeof *c);
}
