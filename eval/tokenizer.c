/* SPDX-License-Identifier: MIT */
/* Byte-level BPE encoder over a Hugging Face tokenizer.json; the rules
 * are in tokenizer.h, eval/TOKENIZER.md and EVAL.md "Standard checkpoints". */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval/json.h"
#include "eval/tokenizer.h"
#include "eval/unicode.h"
#include "eval/util.h"

#define TOK_MAX_FILE (256u << 20)
#define TOK_MAX_VOCAB (1u << 22)
#define TOK_MAX_LEN 4096u   /* bytes of one token */
#define TOK_MAX_ADDED 4096u

typedef struct added_tok {
  uint32_t id;
  unsigned char *s;
  size_t len;
} added_tok;

struct kvs__tokenizer {
  uint32_t n_vocab, n_merges;
  unsigned char **bytes;  /* [n_vocab], NULL for added tokens and unused ids */
  size_t *len;
  uint32_t byte_id[256];  /* the token of each single byte */
  /* merge table: open addressing over (left << 32 | right) -> rank + 1, result */
  uint64_t *mkey;
  uint32_t *mval, *mres;
  size_t mmask;
  /* bytes -> id of the regular vocabulary */
  uint32_t *vslot;        /* id + 1 */
  size_t vmask;
  int pretok;             /* KVS_PRETOK_* */
  int prefix_space;       /* ByteLevel add_prefix_space */
  int ignore_merges;      /* BPE ignore_merges: a chunk that is a token is that token */
  size_t n_added;
  added_tok *added;       /* split out of the text before pre-tokenizing (HF mode) */
};

/* GPT-2 bytes_to_unicode: printable bytes map to themselves, the rest to
 * 256, 257, ... in byte order. */
static void byte_unicode_tables(int u2b[512])
{
  uint32_t extra = 0;
  for (int i = 0; i < 512; i++)
    u2b[i] = -1;
  for (uint32_t b = 0; b < 256; b++) {
    int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    u2b[printable ? b : 256 + extra++] = (int)b;
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

/* Rank of merge (a, b), UINT32_MAX when there is none; *res its token. */
static uint32_t merge_rank(const kvs__tokenizer *t, uint32_t a, uint32_t b, uint32_t *res)
{
  uint64_t key = ((uint64_t)a << 32) | b;
  for (size_t i = hash64(key) & t->mmask;; i = (i + 1) & t->mmask) {
    if (!t->mval[i])
      return UINT32_MAX;
    if (t->mkey[i] == key) {
      *res = t->mres[i];
      return t->mval[i] - 1;
    }
  }
}

static uint32_t vocab_find(const kvs__tokenizer *t, const unsigned char *b, size_t n)
{
  for (size_t i = hash_bytes(b, n) & t->vmask;; i = (i + 1) & t->vmask) {
    uint32_t id = t->vslot[i];
    if (!id)
      return UINT32_MAX;
    id--;
    if (t->len[id] == n && !memcmp(t->bytes[id], b, n))
      return id;
  }
}

static const added_tok *added_by_id(const kvs__tokenizer *t, uint32_t id)
{
  for (size_t i = 0; i < t->n_added; i++)
    if (t->added[i].id == id)
      return &t->added[i];
  return NULL;
}

static int load_added(kvs__tokenizer *t, const kvs__json *added, uint32_t *max_id, char *errmsg)
{
  if (!added || added->type == KVS_J_NULL)
    return 0;
  if (added->type != KVS_J_ARR || added->n > TOK_MAX_ADDED) {
    snprintf(errmsg, 256, "tokenizer: added_tokens is not a list (of at most %u)", TOK_MAX_ADDED);
    return -EINVAL;
  }
  t->added = calloc(added->n ? added->n : 1, sizeof *t->added);
  if (!t->added)
    return -ENOMEM;
  for (size_t i = 0; i < added->n; i++) {
    long id;
    const kvs__json *c = kvs__json_get(added->items[i], "content");
    if (kvs__json_get_int(added->items[i], "id", 0, TOK_MAX_VOCAB - 1, &id) < 0 || !c ||
        c->type != KVS_J_STR || !c->str[0]) {
      snprintf(errmsg, 256, "tokenizer: added token %zu has no id or content", i);
      return -EINVAL;
    }
    if (added_by_id(t, (uint32_t)id)) {
      snprintf(errmsg, 256, "tokenizer: added token id %ld appears twice", id);
      return -EINVAL;
    }
    added_tok *a = &t->added[t->n_added++];
    a->id = (uint32_t)id;
    a->len = strlen(c->str);
    a->s = (unsigned char *)strdup(c->str);
    if (!a->s)
      return -ENOMEM;
    if ((uint32_t)id + 1 > *max_id)
      *max_id = (uint32_t)id + 1;
  }
  return 0;
}

/* Vocabulary: any ids, every regular entry a byte-level string, all 256
 * single bytes present, no two entries with the same bytes. */
static int load_vocab(kvs__tokenizer *t, const kvs__json *vocab, const int u2b[512], char *errmsg)
{
  unsigned char buf[TOK_MAX_LEN];
  uint32_t n = t->n_vocab;
  for (size_t i = 0; i < vocab->n; i++) {
    const kvs__json *v = vocab->items[i];
    if (v->type != KVS_J_NUM || v->num < 0 || v->num >= TOK_MAX_VOCAB || v->num != (uint32_t)v->num) {
      snprintf(errmsg, 256, "tokenizer: bad id for vocab entry %zu", i);
      return -EINVAL;
    }
    if ((uint32_t)v->num + 1 > n)
      n = (uint32_t)v->num + 1;
  }
  t->n_vocab = n;
  t->bytes = calloc(n, sizeof *t->bytes);
  t->len = calloc(n, sizeof *t->len);
  size_t cap = 1;
  while (cap < 2 * (size_t)n)
    cap <<= 1;
  t->vslot = calloc(cap, sizeof *t->vslot);
  t->vmask = cap - 1;
  if (!t->bytes || !t->len || !t->vslot)
    return -ENOMEM;
  for (size_t i = 0; i < vocab->n; i++) {
    const kvs__json *v = vocab->items[i];
    uint32_t id = (uint32_t)v->num;
    size_t len;
    const added_tok *a = added_by_id(t, id);
    if (a && !strcmp((const char *)a->s, v->key))
      continue; /* a special / added token: matched in the text, never built by merges */
    if (unmap(v->key, u2b, buf, &len) < 0 || len == 0) {
      snprintf(errmsg, 256, "tokenizer: vocab entry %u is not a byte-level string", id);
      return -EINVAL;
    }
    if (t->bytes[id] || a) {
      snprintf(errmsg, 256, "tokenizer: id %u appears twice", id);
      return -EINVAL;
    }
    if (vocab_find(t, buf, len) != UINT32_MAX) {
      snprintf(errmsg, 256, "tokenizer: id %u duplicates another token", id);
      return -EINVAL;
    }
    t->bytes[id] = malloc(len);
    if (!t->bytes[id])
      return -ENOMEM;
    memcpy(t->bytes[id], buf, len);
    t->len[id] = len;
    size_t s = hash_bytes(buf, len) & t->vmask;
    while (t->vslot[s])
      s = (s + 1) & t->vmask;
    t->vslot[s] = id + 1;
  }
  for (unsigned b = 0; b < 256; b++) {
    unsigned char c = (unsigned char)b;
    if ((t->byte_id[b] = vocab_find(t, &c, 1)) == UINT32_MAX) {
      snprintf(errmsg, 256, "tokenizer: byte 0x%02x has no token (not a byte-level BPE)", b);
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

/* Merges in rank order, as ["a", "b"] lists or "a b" strings; each joins
 * two tokens into a third, all in the vocabulary. */
static int load_merges(kvs__tokenizer *t, const kvs__json *merges, const int u2b[512], char *errmsg)
{
  size_t cap = 1;
  char tmp[4 * TOK_MAX_LEN];
  unsigned char ba[TOK_MAX_LEN], bb[TOK_MAX_LEN], cat[2 * TOK_MAX_LEN];

  if (merges->n >= t->n_vocab) {
    snprintf(errmsg, 256, "tokenizer: %zu merges for %u tokens", merges->n, t->n_vocab);
    return -EINVAL;
  }
  while (cap < 2 * (merges->n + 1))
    cap <<= 1;
  t->mkey = calloc(cap, sizeof *t->mkey);
  t->mval = calloc(cap, sizeof *t->mval);
  t->mres = calloc(cap, sizeof *t->mres);
  t->mmask = cap - 1;
  if (!t->mkey || !t->mval || !t->mres)
    return -ENOMEM;
  for (uint32_t r = 0; r < merges->n; r++) {
    const char *sa, *sb;
    size_t la, lb;
    uint32_t a, b, id;
    if (split_merge(merges->items[r], &sa, &sb, tmp, sizeof tmp) < 0 ||
        unmap(sa, u2b, ba, &la) < 0 || unmap(sb, u2b, bb, &lb) < 0) {
      snprintf(errmsg, 256, "tokenizer: merge %u is malformed", r);
      return -EINVAL;
    }
    memcpy(cat, ba, la);
    memcpy(cat + la, bb, lb);
    a = vocab_find(t, ba, la);
    b = vocab_find(t, bb, lb);
    id = vocab_find(t, cat, la + lb);
    if (a == UINT32_MAX || b == UINT32_MAX || id == UINT32_MAX) {
      snprintf(errmsg, 256, "tokenizer: merge %u joins tokens not in the vocabulary", r);
      return -EINVAL;
    }
    uint64_t key = ((uint64_t)a << 32) | b;
    size_t i = hash64(key) & t->mmask;
    while (t->mval[i]) {
      if (t->mkey[i] == key) {
        snprintf(errmsg, 256, "tokenizer: merge %u repeats a pair", r);
        return -EINVAL;
      }
      i = (i + 1) & t->mmask;
    }
    t->mkey[i] = key;
    t->mval[i] = r + 1;
    t->mres[i] = id;
  }
  t->n_merges = (uint32_t)merges->n;
  return 0;
}

static int is_bool(const kvs__json *j, const char *key, int dflt)
{
  const kvs__json *v = kvs__json_get(j, key);
  return !v ? dflt : v->type == KVS_J_TRUE;
}

/* The pre-tokenizer: ours (absent or "kvsink_bytes") or a GPT-2 style
 * ByteLevel with its regex; nothing else is guessed at. */
static int load_pretok(kvs__tokenizer *t, const kvs__json *root, const char *path, char *errmsg)
{
  const kvs__json *pt = kvs__json_get(root, "pre_tokenizer");
  const kvs__json *norm = kvs__json_get(root, "normalizer");
  const kvs__json *type = kvs__json_get(pt, "type");
  if (norm && norm->type != KVS_J_NULL) {
    snprintf(errmsg, 256, "%.160s: normalizers are not supported", path);
    return -EINVAL;
  }
  if (!pt || pt->type == KVS_J_NULL || (type && type->type == KVS_J_STR &&
                                         !strcmp(type->str, "kvsink_bytes"))) {
    t->pretok = KVS_PRETOK_KVSINK;
    return 0;
  }
  if (type && type->type == KVS_J_STR && !strcmp(type->str, "ByteLevel") &&
      is_bool(pt, "use_regex", 1)) {
    t->pretok = KVS_PRETOK_GPT2;
    t->prefix_space = is_bool(pt, "add_prefix_space", 0);
    return 0;
  }
  snprintf(errmsg, 256, "%.120s: pre_tokenizer %.40s is not supported (ByteLevel with the GPT-2 regex is)",
           path, type && type->type == KVS_J_STR ? type->str : "?");
  return -EINVAL;
}

int kvs__tok_load(kvs__tokenizer **out, const char *path, char *errmsg)
{
  char *text = NULL;
  size_t len;
  kvs__json *root = NULL;
  kvs__tokenizer *t = NULL;
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
  if (is_bool(model, "byte_fallback", 0)) {
    snprintf(errmsg, 256, "%s: byte_fallback BPE (SentencePiece style) is not supported", path);
    goto out;
  }
  t = calloc(1, sizeof *t);
  if (!t) {
    r = -ENOMEM;
    goto out;
  }
  t->ignore_merges = is_bool(model, "ignore_merges", 0);
  byte_unicode_tables(u2b);
  if ((r = load_pretok(t, root, path, errmsg)) < 0 ||
      (r = load_added(t, kvs__json_get(root, "added_tokens"), &t->n_vocab, errmsg)) < 0 ||
      (r = load_vocab(t, vocab, u2b, errmsg)) < 0 || (r = load_merges(t, merges, u2b, errmsg)) < 0)
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
  for (size_t i = 0; i < t->n_added; i++)
    free(t->added[i].s);
  free(t->added);
  free(t->bytes);
  free(t->len);
  free(t->mkey);
  free(t->mval);
  free(t->mres);
  free(t->vslot);
  free(t);
}

uint32_t kvs__tok_vocab_size(const kvs__tokenizer *t) { return t->n_vocab; }

int kvs__tok_pretok_kind(const kvs__tokenizer *t) { return t->pretok; }

const unsigned char *kvs__tok_bytes(const kvs__tokenizer *t, uint32_t id, size_t *len)
{
  if (id >= t->n_vocab || !t->bytes[id])
    return NULL;
  *len = t->len[id];
  return t->bytes[id];
}

uint32_t kvs__tok_special(const kvs__tokenizer *t, const char *content)
{
  for (size_t i = 0; i < t->n_added; i++)
    if (!strcmp((const char *)t->added[i].s, content))
      return t->added[i].id;
  return UINT32_MAX;
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

/* Class of the code point at i and its length. */
static int cp_at(const unsigned char *s, size_t n, size_t i, size_t *len)
{
  uint32_t cp;
  *len = kvs__utf8_next(s + i, n - i, &cp);
  return kvs__uni_class(cp);
}

/* End of the run of class c starting at i. */
static size_t run_end(const unsigned char *s, size_t n, size_t i, int c)
{
  size_t l;
  while (i < n && cp_at(s, n, i, &l) == c)
    i += l;
  return i;
}

/* The contraction at i ('s 't 're 've 'm 'll 'd), its length or 0. */
static size_t contraction(const unsigned char *s, size_t n, size_t i)
{
  static const char *const c[] = {"s", "t", "re", "ve", "m", "ll", "d"};
  if (s[i] != '\'')
    return 0;
  for (size_t k = 0; k < sizeof c / sizeof c[0]; k++) {
    size_t l = strlen(c[k]);
    if (i + 1 + l <= n && !memcmp(s + i + 1, c[k], l))
      return 1 + l;
  }
  return 0;
}

/* GPT-2's pattern, alternatives in order, on code points:
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
void kvs__tok_pretokenize_gpt2(const unsigned char *s, size_t n,
                               void (*cb)(void *ctx, size_t begin, size_t end), void *ctx)
{
  size_t i = 0, l, l2;
  while (i < n) {
    size_t e = contraction(s, n, i);
    int c = cp_at(s, n, i, &l);
    if (e) {
      e += i;
    } else if (c != KVS_UNI_S) {
      e = run_end(s, n, i + l, c);
    } else if (s[i] == ' ' && i + 1 < n && cp_at(s, n, i + 1, &l2) != KVS_UNI_S) {
      e = run_end(s, n, i + 1 + l2, cp_at(s, n, i + 1, &l2));
    } else {
      size_t j = run_end(s, n, i, KVS_UNI_S), last = i;
      /* \s+(?!\S): the run, less its last code point when a non-space follows */
      for (size_t k = i; k < j; k += l2) {
        last = k;
        cp_at(s, n, k, &l2);
      }
      e = (j < n && last > i) ? last : j;
    }
    cb(ctx, i, e);
    i = e;
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

static int emit(enc_ctx *c, const uint32_t *w, size_t m)
{
  if (*c->n + m > *c->cap) {
    size_t nc = *c->cap ? *c->cap : 1024;
    while (nc < *c->n + m)
      nc *= 2;
    uint32_t *ni = realloc(*c->ids, nc * sizeof *ni);
    if (!ni)
      return c->err = -ENOMEM;
    *c->ids = ni;
    *c->cap = nc;
  }
  memcpy(*c->ids + *c->n, w, m * sizeof *w);
  *c->n += m;
  return 0;
}

static void encode_chunk(void *vctx, size_t b, size_t e)
{
  enc_ctx *c = vctx;
  const kvs__tokenizer *t = c->t;
  size_t m = e - b;
  if (c->err)
    return;
  if (t->ignore_merges) {
    uint32_t id = vocab_find(t, c->s + b, m);
    if (id != UINT32_MAX) {
      emit(c, &id, 1);
      return;
    }
  }
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
    w[i] = t->byte_id[c->s[b + i]];
  /* Repeatedly merge the lowest-ranked adjacent pair (leftmost on ties).
   * Chunks are words, so the quadratic scan is cheap. */
  while (m > 1) {
    uint32_t best = UINT32_MAX, best_res = 0, res;
    size_t at = 0;
    for (size_t i = 0; i + 1 < m; i++) {
      uint32_t r = merge_rank(t, w[i], w[i + 1], &res);
      if (r < best) {
        best = r;
        best_res = res;
        at = i;
      }
    }
    if (best == UINT32_MAX)
      break;
    w[at] = best_res;
    memmove(w + at + 1, w + at + 2, (m - at - 2) * sizeof *w);
    m--;
  }
  emit(c, w, m);
}

static void encode_plain(enc_ctx *c, const unsigned char *s, size_t len)
{
  c->s = s;
  if (c->t->pretok == KVS_PRETOK_GPT2)
    kvs__tok_pretokenize_gpt2(s, len, encode_chunk, c);
  else
    kvs__tok_pretokenize(s, len, encode_chunk, c);
}

/* The added token that starts at s[0..n), longest first; NULL if none. */
static const added_tok *added_at(const kvs__tokenizer *t, const unsigned char *s, size_t n)
{
  const added_tok *best = NULL;
  for (size_t i = 0; i < t->n_added; i++) {
    const added_tok *a = &t->added[i];
    if (a->len <= n && a->s[0] == s[0] && !memcmp(a->s, s, a->len) && (!best || a->len > best->len))
      best = a;
  }
  return best;
}

int kvs__tok_encode(const kvs__tokenizer *t, const unsigned char *text, size_t len,
                    uint32_t **ids, size_t *n, size_t *cap)
{
  enc_ctx c = {t, text, ids, n, cap, NULL, 0, 0};
  unsigned char *tmp = NULL;
  if (t->pretok == KVS_PRETOK_KVSINK) {
    /* bpe.py's rules: added tokens are never matched in the text */
    encode_plain(&c, text, len);
    free(c.work);
    return c.err;
  }
  if (t->prefix_space && len && text[0] != ' ') {
    if (!(tmp = malloc(len + 1)))
      return -ENOMEM;
    tmp[0] = ' ';
    memcpy(tmp + 1, text, len);
    text = tmp;
    len++;
  }
  /* as the tokenizers library does: added tokens are cut out of the text
   * first, the pieces between them are pre-tokenized and merged */
  size_t from = 0;
  for (size_t i = 0; i < len && !c.err;) {
    const added_tok *a = t->n_added ? added_at(t, text + i, len - i) : NULL;
    if (!a) {
      i++;
      continue;
    }
    encode_plain(&c, text + from, i - from);
    if (!c.err)
      emit(&c, &a->id, 1);
    i += a->len;
    from = i;
  }
  if (!c.err)
    encode_plain(&c, text + from, len - from);
  free(c.work);
  free(tmp);
  return c.err;
}
