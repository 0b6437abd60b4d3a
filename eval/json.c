/* SPDX-License-Identifier: MIT */
/* Strict recursive-descent JSON reader; see json.h. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval/json.h"

#define JSON_MAX_DEPTH 64

typedef struct jp {
  const char *s;
  size_t len, pos;
  char *err;
} jp;

static int fail(jp *p, const char *what)
{
  if (p->err)
    snprintf(p->err, 256, "json: %s at byte %zu", what, p->pos);
  return -EINVAL;
}

static void skip_ws(jp *p)
{
  while (p->pos < p->len) {
    char c = p->s[p->pos];
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
      break;
    p->pos++;
  }
}

static int put_utf8(char *o, size_t *w, uint32_t cp)
{
  if (cp == 0)
    return -1;
  if (cp < 0x80) {
    o[(*w)++] = (char)cp;
  } else if (cp < 0x800) {
    o[(*w)++] = (char)(0xC0 | (cp >> 6));
    o[(*w)++] = (char)(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    o[(*w)++] = (char)(0xE0 | (cp >> 12));
    o[(*w)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[(*w)++] = (char)(0x80 | (cp & 0x3F));
  } else {
    o[(*w)++] = (char)(0xF0 | (cp >> 18));
    o[(*w)++] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[(*w)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[(*w)++] = (char)(0x80 | (cp & 0x3F));
  }
  return 0;
}

static int hex4(jp *p, uint32_t *out)
{
  uint32_t v = 0;
  if (p->len - p->pos < 4)
    return fail(p, "short \\u escape");
  for (int i = 0; i < 4; i++) {
    char c = p->s[p->pos++];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= (uint32_t)(c - '0');
    else if (c >= 'a' && c <= 'f') v |= (uint32_t)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v |= (uint32_t)(c - 'A' + 10);
    else return fail(p, "bad \\u escape");
  }
  *out = v;
  return 0;
}

/* p->pos is at the opening quote. The decoded string is never longer than
 * its encoding, so one allocation of the raw length suffices. */
static int parse_string(jp *p, char **out)
{
  size_t start = ++p->pos, end = start;
  while (end < p->len && p->s[end] != '"') {
    if (p->s[end] == '\\')
      end++;
    end++;
  }
  if (end >= p->len)
    return fail(p, "unterminated string");
  char *o = malloc(end - start + 1);
  size_t w = 0;
  if (!o)
    return -ENOMEM;
  while (p->pos < end) {
    unsigned char c = (unsigned char)p->s[p->pos];
    if (c < 0x20) {
      free(o);
      return fail(p, "control character in string");
    }
    if (c != '\\') {
      if (c == 0) {
        free(o);
        return fail(p, "NUL in string");
      }
      o[w++] = (char)c;
      p->pos++;
      continue;
    }
    p->pos++;
    char e = p->s[p->pos++];
    uint32_t cp;
    switch (e) {
    case '"': o[w++] = '"'; break;
    case '\\': o[w++] = '\\'; break;
    case '/': o[w++] = '/'; break;
    case 'b': o[w++] = '\b'; break;
    case 'f': o[w++] = '\f'; break;
    case 'n': o[w++] = '\n'; break;
    case 'r': o[w++] = '\r'; break;
    case 't': o[w++] = '\t'; break;
    case 'u':
      if (hex4(p, &cp) < 0)
        goto bad;
      if (cp >= 0xD800 && cp < 0xDC00) {
        uint32_t lo;
        if (p->pos + 2 > end || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u')
          goto bad_sur;
        p->pos += 2;
        if (hex4(p, &lo) < 0)
          goto bad;
        if (lo < 0xDC00 || lo >= 0xE000)
          goto bad_sur;
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
      } else if (cp >= 0xDC00 && cp < 0xE000) {
        goto bad_sur;
      }
      if (put_utf8(o, &w, cp) < 0) {
        free(o);
        return fail(p, "NUL in string");
      }
      break;
    default:
      free(o);
      return fail(p, "bad escape");
    }
  }
  o[w] = 0;
  p->pos = end + 1;
  *out = o;
  return 0;
bad_sur:
  free(o);
  return fail(p, "bad surrogate pair");
bad:
  free(o);
  return -EINVAL;
}

static int parse_number(jp *p, double *out)
{
  size_t i = p->pos;
  if (i < p->len && p->s[i] == '-')
    i++;
  if (i >= p->len || p->s[i] < '0' || p->s[i] > '9')
    return fail(p, "bad number");
  if (p->s[i] == '0') {
    i++;
  } else {
    while (i < p->len && p->s[i] >= '0' && p->s[i] <= '9')
      i++;
  }
  if (i < p->len && p->s[i] == '.') {
    i++;
    if (i >= p->len || p->s[i] < '0' || p->s[i] > '9')
      return fail(p, "bad fraction");
    while (i < p->len && p->s[i] >= '0' && p->s[i] <= '9')
      i++;
  }
  if (i < p->len && (p->s[i] == 'e' || p->s[i] == 'E')) {
    i++;
    if (i < p->len && (p->s[i] == '+' || p->s[i] == '-'))
      i++;
    if (i >= p->len || p->s[i] < '0' || p->s[i] > '9')
      return fail(p, "bad exponent");
    while (i < p->len && p->s[i] >= '0' && p->s[i] <= '9')
      i++;
  }
  char buf[64];
  if (i - p->pos >= sizeof buf)
    return fail(p, "number too long");
  memcpy(buf, p->s + p->pos, i - p->pos);
  buf[i - p->pos] = 0;
  *out = strtod(buf, NULL);
  if (!isfinite(*out))
    return fail(p, "number out of range");
  p->pos = i;
  return 0;
}

static int push(kvs__json *j, kvs__json *child, size_t *cap)
{
  if (j->n == *cap) {
    size_t nc = *cap ? *cap * 2 : 8;
    kvs__json **ni = realloc(j->items, nc * sizeof *ni);
    if (!ni)
      return -ENOMEM;
    j->items = ni;
    *cap = nc;
  }
  j->items[j->n++] = child;
  return 0;
}

static int parse_value(jp *p, kvs__json **out, int depth);

static int parse_container(jp *p, kvs__json *j, int depth)
{
  char close = j->type == KVS_J_OBJ ? '}' : ']';
  size_t cap = 0;
  int r;
  p->pos++;
  skip_ws(p);
  if (p->pos < p->len && p->s[p->pos] == close) {
    p->pos++;
    return 0;
  }
  for (;;) {
    char *key = NULL;
    kvs__json *child;
    skip_ws(p);
    if (j->type == KVS_J_OBJ) {
      if (p->pos >= p->len || p->s[p->pos] != '"')
        return fail(p, "expected member name");
      if ((r = parse_string(p, &key)) < 0)
        return r;
      skip_ws(p);
      if (p->pos >= p->len || p->s[p->pos] != ':') {
        free(key);
        return fail(p, "expected ':'");
      }
      p->pos++;
    }
    if ((r = parse_value(p, &child, depth + 1)) < 0) {
      free(key);
      return r;
    }
    child->key = key;
    if ((r = push(j, child, &cap)) < 0) {
      kvs__json_free(child);
      return r;
    }
    skip_ws(p);
    if (p->pos >= p->len)
      return fail(p, "unterminated container");
    if (p->s[p->pos] == ',') {
      p->pos++;
      continue;
    }
    if (p->s[p->pos] == close) {
      p->pos++;
      return 0;
    }
    return fail(p, "expected ',' or close");
  }
}

static int parse_value(jp *p, kvs__json **out, int depth)
{
  int r = 0;
  if (depth > JSON_MAX_DEPTH)
    return fail(p, "nesting too deep");
  skip_ws(p);
  if (p->pos >= p->len)
    return fail(p, "unexpected end");
  kvs__json *j = calloc(1, sizeof *j);
  if (!j)
    return -ENOMEM;
  char c = p->s[p->pos];
  if (c == '{' || c == '[') {
    j->type = c == '{' ? KVS_J_OBJ : KVS_J_ARR;
    r = parse_container(p, j, depth);
  } else if (c == '"') {
    j->type = KVS_J_STR;
    r = parse_string(p, &j->str);
  } else if (c == '-' || (c >= '0' && c <= '9')) {
    j->type = KVS_J_NUM;
    r = parse_number(p, &j->num);
  } else if (p->len - p->pos >= 4 && !memcmp(p->s + p->pos, "true", 4)) {
    j->type = KVS_J_TRUE;
    p->pos += 4;
  } else if (p->len - p->pos >= 5 && !memcmp(p->s + p->pos, "false", 5)) {
    j->type = KVS_J_FALSE;
    p->pos += 5;
  } else if (p->len - p->pos >= 4 && !memcmp(p->s + p->pos, "null", 4)) {
    j->type = KVS_J_NULL;
    p->pos += 4;
  } else {
    r = fail(p, "unexpected character");
  }
  if (r < 0) {
    kvs__json_free(j);
    return r;
  }
  *out = j;
  return 0;
}

int kvs__json_parse(const char *text, size_t len, kvs__json **out, char *errmsg)
{
  jp p = {text, len, 0, errmsg};
  kvs__json *j;
  int r = parse_value(&p, &j, 0);
  if (r < 0)
    return r;
  skip_ws(&p);
  if (p.pos != len) {
    kvs__json_free(j);
    return fail(&p, "trailing data");
  }
  *out = j;
  return 0;
}

void kvs__json_free(kvs__json *j)
{
  if (!j)
    return;
  for (size_t i = 0; i < j->n; i++)
    kvs__json_free(j->items[i]);
  free(j->items);
  free(j->str);
  free(j->key);
  free(j);
}

const kvs__json *kvs__json_get(const kvs__json *j, const char *key)
{
  if (!j || j->type != KVS_J_OBJ)
    return NULL;
  for (size_t i = 0; i < j->n; i++)
    if (!strcmp(j->items[i]->key, key))
      return j->items[i];
  return NULL;
}

int kvs__json_get_num(const kvs__json *j, const char *key, double *out)
{
  const kvs__json *v = kvs__json_get(j, key);
  if (!v || v->type != KVS_J_NUM)
    return -EINVAL;
  *out = v->num;
  return 0;
}

int kvs__json_get_int(const kvs__json *j, const char *key, long lo, long hi, long *out)
{
  double d;
  if (kvs__json_get_num(j, key, &d) < 0 || d != floor(d) || d < (double)lo || d > (double)hi)
    return -EINVAL;
  *out = (long)d;
  return 0;
}
