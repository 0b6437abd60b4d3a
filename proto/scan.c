/* SPDX-License-Identifier: MIT */
/* Allocation-free msgpack structure walker: the decoder's first line of
 * defence, run before msgpack-c sees a byte. */
#include <errno.h>
#include <string.h>

#include "proto/internal.h"

static int need(size_t len, size_t pos, size_t n)
{
  return n <= len && pos <= len - n;
}

static uint64_t be(const uint8_t *p, int n)
{
  uint64_t v = 0;
  for (int i = 0; i < n; i++)
    v = (v << 8) | p[i];
  return v;
}

/* Skip `count` values (2*count for maps) after checking the count fits. */
static int skip_items(const uint8_t *p, size_t len, size_t *pos,
                      uint64_t count, int depth)
{
  if (depth >= KVS__MP_MAX_DEPTH)
    return -EBADMSG;
  /* every element takes at least one byte */
  if (count > len - *pos)
    return -EBADMSG;
  for (uint64_t i = 0; i < count; i++) {
    int r = kvs__mp_skip(p, len, pos, depth + 1);
    if (r < 0)
      return r;
  }
  return 0;
}

/* Skip a length-prefixed body: `lb` bytes of length, `extra` type bytes. */
static int skip_body(const uint8_t *p, size_t len, size_t *pos, int lb, int extra)
{
  if (!need(len, *pos, (size_t)lb))
    return -EBADMSG;
  uint64_t n = be(p + *pos, lb);
  *pos += (size_t)lb;
  if (n > len || !need(len, *pos, (size_t)n + (size_t)extra))
    return -EBADMSG;
  *pos += (size_t)n + (size_t)extra;
  return 0;
}

static int skip_fixed(size_t len, size_t *pos, size_t n)
{
  if (!need(len, *pos, n))
    return -EBADMSG;
  *pos += n;
  return 0;
}

int kvs__mp_skip(const uint8_t *p, size_t len, size_t *pos, int depth)
{
  if (*pos >= len)
    return -EBADMSG;
  uint8_t t = p[(*pos)++];
  if (t <= 0x7f || t >= 0xe0)
    return 0;
  if (t <= 0x8f)
    return skip_items(p, len, pos, 2u * (t & 0x0f), depth);
  if (t <= 0x9f)
    return skip_items(p, len, pos, t & 0x0f, depth);
  if (t <= 0xbf)
    return skip_fixed(len, pos, t & 0x1f);
  switch (t) {
  case 0xc0: case 0xc2: case 0xc3:
    return 0;
  case 0xc4: return skip_body(p, len, pos, 1, 0);
  case 0xc5: return skip_body(p, len, pos, 2, 0);
  case 0xc6: return skip_body(p, len, pos, 4, 0);
  case 0xc7: return skip_body(p, len, pos, 1, 1);
  case 0xc8: return skip_body(p, len, pos, 2, 1);
  case 0xc9: return skip_body(p, len, pos, 4, 1);
  case 0xca: return skip_fixed(len, pos, 4);
  case 0xcb: return skip_fixed(len, pos, 8);
  case 0xcc: case 0xd0: return skip_fixed(len, pos, 1);
  case 0xcd: case 0xd1: return skip_fixed(len, pos, 2);
  case 0xce: case 0xd2: return skip_fixed(len, pos, 4);
  case 0xcf: case 0xd3: return skip_fixed(len, pos, 8);
  case 0xd4: return skip_fixed(len, pos, 2);
  case 0xd5: return skip_fixed(len, pos, 3);
  case 0xd6: return skip_fixed(len, pos, 5);
  case 0xd7: return skip_fixed(len, pos, 9);
  case 0xd8: return skip_fixed(len, pos, 17);
  case 0xd9: return skip_body(p, len, pos, 1, 0);
  case 0xda: return skip_body(p, len, pos, 2, 0);
  case 0xdb: return skip_body(p, len, pos, 4, 0);
  case 0xdc: case 0xdd: {
    int lb = t == 0xdc ? 2 : 4;
    if (!need(len, *pos, (size_t)lb))
      return -EBADMSG;
    uint64_t n = be(p + *pos, lb);
    *pos += (size_t)lb;
    return skip_items(p, len, pos, n, depth);
  }
  case 0xde: case 0xdf: {
    int lb = t == 0xde ? 2 : 4;
    if (!need(len, *pos, (size_t)lb))
      return -EBADMSG;
    uint64_t n = be(p + *pos, lb);
    *pos += (size_t)lb;
    return skip_items(p, len, pos, 2 * n, depth);
  }
  default: /* 0xc1 is never used */
    return -EBADMSG;
  }
}

/* Read a str header at p[*pos]; returns 1 with the body span, 0 if not a str. */
static int str_at(const uint8_t *p, size_t len, size_t *pos, size_t *soff, size_t *slen)
{
  uint8_t t = p[*pos];
  int lb;
  if (t >= 0xa0 && t <= 0xbf) {
    *slen = t & 0x1f;
    *soff = *pos + 1;
    return 1;
  }
  if (t == 0xd9) lb = 1;
  else if (t == 0xda) lb = 2;
  else if (t == 0xdb) lb = 4;
  else return 0;
  *slen = (size_t)be(p + *pos + 1, lb);
  *soff = *pos + 1 + (size_t)lb;
  (void)len;
  return 1;
}

int kvs__mp_map_find_raw(const uint8_t *p, size_t len, const char *key,
                         size_t *off, size_t *vlen)
{
  size_t pos = 0, klen = strlen(key);
  uint64_t n;
  uint8_t t = p[pos++];
  if (t >= 0x80 && t <= 0x8f) {
    n = t & 0x0f;
  } else if (t == 0xde || t == 0xdf) {
    int lb = t == 0xde ? 2 : 4;
    n = be(p + pos, lb);
    pos += (size_t)lb;
  } else {
    return 0;
  }
  for (uint64_t i = 0; i < n; i++) {
    size_t kpos = pos, soff, slen;
    if (kvs__mp_skip(p, len, &pos, 1) < 0)
      return 0;
    int match = str_at(p, len, &kpos, &soff, &slen) && slen == klen &&
                memcmp(p + soff, key, klen) == 0;
    size_t vpos = pos;
    if (kvs__mp_skip(p, len, &pos, 1) < 0)
      return 0;
    if (match) {
      *off = vpos;
      *vlen = pos - vpos;
      return 1;
    }
  }
  return 0;
}
