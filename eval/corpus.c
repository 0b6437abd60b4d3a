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

/* A separator is a line that is exactly "\x1e". The newline that ends the
 * line before it belongs to the separator, not to the document. */
static size_t next_sep(const unsigned char *s, size_t len, size_t from, size_t *after)
{
  for (size_t i = from; i < len; i++) {
    if (s[i] != 0x1e || (i > 0 && s[i - 1] != '\n') || (i + 1 < len && s[i + 1] != '\n'))
      continue;
    *after = i + 1 < len ? i + 2 : len;
    return i > from ? i - 1 : i;
  }
  *after = len;
  return len;
}

int kvs__corpus_build(kvs__corpus *c, const kvs__tokenizer *t, const unsigned char *text,
                      size_t len, uint32_t bos, uint32_t ctx, uint32_t max_ctx)
{
  size_t cap = 0, pos = 0;
  int r;
  memset(c, 0, sizeof *c);
  if (ctx < 2)
    return -EINVAL;
  while (pos < len) {
    size_t after, end = next_sep(text, len, pos, &after);
    if (end > pos) {
      if ((r = push_id(c, &cap, bos)) < 0 ||
          (r = kvs__tok_encode(t, text + pos, end - pos, &c->ids, &c->n_ids, &cap)) < 0)
        goto fail;
      c->n_docs++;
    }
    pos = after;
  }
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
