/* Byte-level BPE encoder; the rules are in tokenizer.h / eval/TOKENIZER.md. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval/json.h"
#include "eval/tokenizer.h"
#include "eval/util.h"

#define TOK_MAX_FILE (256u << 20)
#define TOK_MAX_VOCAB (1u << 20)
#define TOK_MAX_LEN 4096u   /* bytes of one token */

struct kvs__tokenizer {
  uint32_t n_vocab, n_merges;
  unsigned char **bytes;  /* [n_vocab], NULL for specials */
  size_t *len;
  /* merge table: open addressing over (left << 32 | right) -> rank + 1 */
  uint64_t *mkey;
  uint32_t *mval;
  size_t mmask;
};

/* GPT-2 bytes_to_unicode: printable bytes map to themselves, the rest to
 * 256, 257, ... in byte order. */
static void byte_unicode_tables(uint32_t b2u[256], int u2b[512])
{
  uint32_t extra = 0;
  for (int i = 0; i < 512; i++)
    u2b[i] = -1;
  for (uint32_t b = 0; b < 256; b++) {
    int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    b2u[b] = printable ? b : 256 + extra++;
    u2b[b2u[b]] = (int)b;
  }
}

/* Decode a vocab string (UTF-8 of mapped code points) back to bytes. */
static int unmap(const char *s, const int u2b[512], unsigned char *out, size_t *n)
{
  const unsigned char *p = (const unsigned char *)s;
  size_t w = 0;
  while (*p) {
    uint32_t cp;
    if (p[0] < 0x80) {
      cp = p[0];
      p += 1;
    } else if ((p[0] & 0xE0) == 0xC0 && (p[1] & 0xC0) == 0x80) {
      cp = ((uint32_t)(p[0] & 0x1F) << 6) | (p[1] & 0x3F);
      p += 2;
    } else {
      return -EINVAL; /* mapped code points are all below 0x800 */
    }
    if (cp >= 512 || u2b[cp] < 0 || w >= TOK_MAX_LEN)
      return -EINVAL;
    out[w++] = (unsigned char)u2b[cp];
  }
  *n = w;
  return 0;
}

static uint64_t hash64(uint64_t x)
{
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

static uint64_t hash_bytes(const unsigned char *b, size_t n)
{
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < n; i++)
    h = (h ^ b[i]) * 1099511628211ULL;
  return h;
}

static uint32_t merge_rank(const kvs__tokenizer *t, uint32_t a, uint32_t b)
{
  uint64_t key = ((uint64_t)a << 32) | b;
  for (size_t i = hash64(key) & t->mmask;; i = (i + 1) & t->mmask) {
    if (!t->mval[i])
      return UINT32_MAX;
    if (t->mkey[i] == key)
      return t->mval[i] - 1;
  }
}

/* Vocabulary lookup by bytes, used only while loading. */
typedef struct vmap {
  uint32_t *slot; /* id + 1 */
  size_t mask;
} vmap;

static uint32_t vmap_find(const kvs__tokenizer *t, const vmap *m, const unsigned char *b, size_t n)
{
  for (size_t i = hash_bytes(b, n) & m->mask;; i = (i + 1) & m->mask) {
    uint32_t id = m->slot[i];
    if (!id)
      return UINT32_MAX;
    id--;
    if (t->len[id] == n && !memcmp(t->bytes[id], b, n))
      return id;
  }
}

static int load_vocab(kvs__tokenizer *t, const kvs__json *vocab, const kvs__json *added,
                      const int u2b[512], char *errmsg)
{
  unsigned char buf[TOK_MAX_LEN];
  uint32_t n = 0;
  for (size_t i = 0; i < vocab->n; i++) {
    const kvs__json *v = vocab->items[i];
    if (v->type != KVS_J_NUM || v->num < 0 || v->num >= TOK_MAX_VOCAB || v->num != (uint32_t)v->num) {
      snprintf(errmsg, 256, "tokenizer: bad id for vocab entry %zu", i);
      return -EINVAL;
    }
    if ((uint32_t)v->num + 1 > n)
      n = (uint32_t)v->num + 1;
  }
  if (n < KVS_TOK_MERGE0 || n != vocab->n + (kvs__json_get(vocab, "<|bos|>") ? 0 : 2)) {
    snprintf(errmsg, 256, "tokenizer: vocabulary ids are not 0..%u without gaps", n ? n - 1 : 0);
    return -EINVAL;
  }
  t->n_vocab = n;
  t->bytes = calloc(n, sizeof *t->bytes);
  t->len = calloc(n, sizeof *t->len);
  if (!t->bytes || !t->len)
    return -ENOMEM;
  for (size_t i = 0; i < vocab->n; i++) {
    const kvs__json *v = vocab->items[i];
    uint32_t id = (uint32_t)v->num;
    size_t len;
    if (id < KVS_TOK_BYTE0)
      continue; /* specials, checked below */
    if (unmap(v->key, u2b, buf, &len) < 0 || len == 0) {
      snprintf(errmsg, 256, "tokenizer: vocab entry %u is not a byte-level string", id);
      return -EINVAL;
    }
    if (t->bytes[id]) {
      snprintf(errmsg, 256, "tokenizer: id %u appears twice", id);
      return -EINVAL;
    }
    if (id < KVS_TOK_MERGE0 && (len != 1 || buf[0] != id - KVS_TOK_BYTE0)) {
      snprintf(errmsg, 256, "tokenizer: id %u is not byte %u", id, id - KVS_TOK_BYTE0);
      return -EINVAL;
    }
    t->bytes[id] = malloc(len);
    if (!t->bytes[id])
      return -ENOMEM;
    memcpy(t->bytes[id], buf, len);
    t->len[id] = len;
  }
  for (uint32_t id = KVS_TOK_BYTE0; id < n; id++)
    if (!t->bytes[id]) {
      snprintf(errmsg, 256, "tokenizer: id %u missing", id);
      return -EINVAL;
    }
  /* the two specials must be declared as added tokens with these names */
  static const char *const special[2] = {"<|bos|>", "<|eos|>"};
  for (uint32_t s = 0; s < 2; s++) {
    int found = 0;
    for (size_t i = 0; added && added->type == KVS_J_ARR && i < added->n; i++) {
      long id;
      const kvs__json *c = kvs__json_get(added->items[i], "content");
      if (kvs__json_get_int(added->items[i], "id", 0, TOK_MAX_VOCAB, &id) == 0 &&
          (uint32_t)id == s && c && c->type == KVS_J_STR && !strcmp(c->str, special[s]))
        found = 1;
    }
    if (!found) {
      snprintf(errmsg, 256, "tokenizer: added token %u is not %s", s, special[s]);
      return -EINVAL;
    }
  }
  return 0;
}

static int split_merge(const kvs__json *m, const char **a, const char **b, char *tmp, size_t tmpsz)
{
  if (m->type == KVS_J_ARR) {
    if (m->n != 2 || m->items[0]->type != KVS_J_STR || m->items[1]->type != KVS_J_STR)
      return -EINVAL;
    *a = m->items[0]->str;
    *b = m->items[1]->str;
    return 0;
  }
  if (m->type != KVS_J_STR)
    return -EINVAL;
  size_t n = strlen(m->str);
  const char *sp = strchr(m->str, ' ');
  if (!sp || n + 1 > tmpsz || strchr(sp + 1, ' '))
    return -EINVAL;
  memcpy(tmp, m->str, n + 1);
  tmp[sp - m->str] = 0;
  *a = tmp;
  *b = tmp + (sp - m->str) + 1;
  return 0;
}

static int load_merges(kvs__tokenizer *t, const kvs__json *merges, const int u2b[512], char *errmsg)
{
  vmap vm = {0};
  size_t cap = 1;
  int r = -EINVAL;
  char tmp[4 * TOK_MAX_LEN];
  unsigned char ba[TOK_MAX_LEN], bb[TOK_MAX_LEN], cat[2 * TOK_MAX_LEN];

  if (merges->n != t->n_vocab - KVS_TOK_MERGE0) {
    snprintf(errmsg, 256, "tokenizer: %zu merges for %u tokens (want vocab - 258)", merges->n,
             t->n_vocab);
    return -EINVAL;
  }
  while (cap < 2 * (size_t)t->n_vocab)
    cap <<= 1;
  vm.slot = calloc(cap, sizeof *vm.slot);
  vm.mask = cap - 1;
  cap = 1;
  while (cap < 2 * (merges->n + 1))
    cap <<= 1;
  t->mkey = calloc(cap, sizeof *t->mkey);
  t->mval = calloc(cap, sizeof *t->mval);
  t->mmask = cap - 1;
  if (!vm.slot || !t->mkey || !t->mval) {
    r = -ENOMEM;
    goto out;
  }
  for (uint32_t id = KVS_TOK_BYTE0; id < t->n_vocab; id++) {
    size_t i = hash_bytes(t->bytes[id], t->len[id]) & vm.mask;
    if (vmap_find(t, &vm, t->bytes[id], t->len[id]) != UINT32_MAX) {
      snprintf(errmsg, 256, "tokenizer: id %u duplicates another token", id);
      goto out;
    }
    while (vm.slot[i])
      i = (i + 1) & vm.mask;
    vm.slot[i] = id + 1;
  }
  for (uint32_t r_ = 0; r_ < merges->n; r_++) {
    const char *sa, *sb;
    size_t la, lb;
    uint32_t a, b, id = KVS_TOK_MERGE0 + r_;
    if (split_merge(merges->items[r_], &sa, &sb, tmp, sizeof tmp) < 0 ||
        unmap(sa, u2b, ba, &la) < 0 || unmap(sb, u2b, bb, &lb) < 0) {
      snprintf(errmsg, 256, "tokenizer: merge %u is malformed", r_);
      goto out;
    }
    a = vmap_find(t, &vm, ba, la);
    b = vmap_find(t, &vm, bb, lb);
    memcpy(cat, ba, la);
    memcpy(cat + la, bb, lb);
    if (a == UINT32_MAX || b == UINT32_MAX || a >= id || b >= id || t->len[id] != la + lb ||
        memcmp(t->bytes[id], cat, la + lb)) {
      snprintf(errmsg, 256, "tokenizer: merge %u does not create id %u from earlier ids", r_, id);
      goto out;
    }
    uint64_t key = ((uint64_t)a << 32) | b;
    size_t i = hash64(key) & t->mmask;
    while (t->mval[i]) {
      if (t->mkey[i] == key) {
        snprintf(errmsg, 256, "tokenizer: merge %u repeats a pair", r_);
        goto out;
      }
      i = (i + 1) & t->mmask;
    }
    t->mkey[i] = key;
    t->mval[i] = r_ + 1;
  }
  t->n_merges = (uint32_t)merges->n;
  r = 0;
out:
  free(vm.slot);
  return r;
}

int kvs__tok_load(kvs__tokenizer **out, const char *path, char *errmsg)
{
  char *text = NULL;
  size_t len;
  kvs__json *root = NULL;
  kvs__tokenizer *t = NULL;
  uint32_t b2u[256];
  int u2b[512];
  int r = kvs__read_file(path, TOK_MAX_FILE, &text, &len);
  if (r < 0) {
    snprintf(errmsg, 256, "%s: %s", path, strerror(-r));
    return r;
  }
  if ((r = kvs__json_parse(text, len, &root, errmsg)) < 0)
    goto out;
  const kvs__json *model = kvs__json_get(root, "model");
  const kvs__json *type = kvs__json_get(model, "type");
  const kvs__json *vocab = kvs__json_get(model, "vocab");
  const kvs__json *merges = kvs__json_get(model, "merges");
  r = -EINVAL;
  if (!type || type->type != KVS_J_STR || strcmp(type->str, "BPE") || !vocab ||
      vocab->type != KVS_J_OBJ || !merges || merges->type != KVS_J_ARR) {
    snprintf(errmsg, 256, "%s: model is not a BPE with vocab and merges", path);
    goto out;
  }
  t = calloc(1, sizeof *t);
  if (!t) {
    r = -ENOMEM;
    goto out;
  }
  byte_unicode_tables(b2u, u2b);
  if ((r = load_vocab(t, vocab, kvs__json_get(root, "added_tokens"), u2b, errmsg)) < 0 ||
      (r = load_merges(t, merges, u2b, errmsg)) < 0)
    goto out;
  *out = t;
  t = NULL;
out:
  kvs__tok_free(t);
  kvs__json_free(root);
  free(text);
  return r;
}

void kvs__tok_free(kvs__tokenizer *t)
{
  if (!t)
    return;
  for (uint32_t i = 0; t->bytes && i < t->n_vocab; i++)
    free(t->bytes[i]);
  free(t->bytes);
  free(t->len);
  free(t->mkey);
  free(t->mval);
  free(t);
}

uint32_t kvs__tok_vocab_size(const kvs__tokenizer *t) { return t->n_vocab; }

const unsigned char *kvs__tok_bytes(const kvs__tokenizer *t, uint32_t id, size_t *len)
{
  if (id >= t->n_vocab || !t->bytes[id])
    return NULL;
  *len = t->len[id];
  return t->bytes[id];
}

enum { CL_L, CL_D, CL_S, CL_P };

static int byte_class(unsigned char c)
{
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80)
    return CL_L;
  if (c >= '0' && c <= '9')
    return CL_D;
  if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f')
    return CL_S;
  return CL_P;
}

/* End of the non-space chunk starting at i (L run, one D, or P run). */
static size_t word_end(const unsigned char *s, size_t n, size_t i)
{
  int c = byte_class(s[i]);
  if (c == CL_D)
    return i + 1;
  size_t j = i + 1;
  while (j < n && byte_class(s[j]) == c)
    j++;
  return j;
}

void kvs__tok_pretokenize(const unsigned char *s, size_t n,
                          void (*cb)(void *ctx, size_t begin, size_t end), void *ctx)
{
  size_t i = 0;
  while (i < n) {
    if (byte_class(s[i]) != CL_S) {
      size_t j = word_end(s, n, i);
      cb(ctx, i, j);
      i = j;
      continue;
    }
    size_t j = i;
    while (j < n && byte_class(s[j]) == CL_S)
      j++;
    if (j < n && s[j - 1] == ' ') {
      if (j - i > 1) {
        cb(ctx, i, j - 1);
        i = j - 1;
      } else {
        size_t e = word_end(s, n, j);
        cb(ctx, i, e);
        i = e;
      }
    } else {
      cb(ctx, i, j);
      i = j;
    }
  }
}

typedef struct enc_ctx {
  const kvs__tokenizer *t;
  const unsigned char *s;
  uint32_t **ids;
  size_t *n, *cap;
  uint32_t *work;
  size_t work_cap;
  int err;
} enc_ctx;

static void encode_chunk(void *vctx, size_t b, size_t e)
{
  enc_ctx *c = vctx;
  size_t m = e - b;
  if (c->err)
    return;
  if (m > c->work_cap) {
    uint32_t *w = realloc(c->work, m * sizeof *w);
    if (!w) {
      c->err = -ENOMEM;
      return;
    }
    c->work = w;
    c->work_cap = m;
  }
  uint32_t *w = c->work;
  for (size_t i = 0; i < m; i++)
    w[i] = KVS_TOK_BYTE0 + c->s[b + i];
  /* Repeatedly merge the lowest-ranked adjacent pair (leftmost on ties).
   * Chunks are words, so the quadratic scan is cheap. */
  while (m > 1) {
    uint32_t best = UINT32_MAX;
    size_t at = 0;
    for (size_t i = 0; i + 1 < m; i++) {
      uint32_t r = merge_rank(c->t, w[i], w[i + 1]);
      if (r < best) {
        best = r;
        at = i;
      }
    }
    if (best == UINT32_MAX)
      break;
    w[at] = KVS_TOK_MERGE0 + best;
    memmove(w + at + 1, w + at + 2, (m - at - 2) * sizeof *w);
    m--;
  }
  if (*c->n + m > *c->cap) {
    size_t nc = *c->cap ? *c->cap : 1024;
    while (nc < *c->n + m)
      nc *= 2;
    uint32_t *ni = realloc(*c->ids, nc * sizeof *ni);
    if (!ni) {
      c->err = -ENOMEM;
      return;
    }
    *c->ids = ni;
    *c->cap = nc;
  }
  memcpy(*c->ids + *c->n, w, m * sizeof *w);
  *c->n += m;
}

int kvs__tok_encode(const kvs__tokenizer *t, const unsigned char *text, size_t len,
                    uint32_t **ids, size_t *n, size_t *cap)
{
  enc_ctx c = {t, text, ids, n, cap, NULL, 0, 0};
  kvs__tok_pretokenize(text, len, encode_chunk, &c);
  free(c.work);
  return c.err;
}
