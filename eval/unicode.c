/* SPDX-License-Identifier: MIT */
/* Unicode classes and UTF-8 decoding for the GPT-2 pre-tokenizer. */
#include "eval/unicode.h"

static int in_ranges(const kvs__uni_range *r, unsigned n, uint32_t cp)
{
  unsigned lo = 0, hi = n;
  while (lo < hi) {
    unsigned mid = lo + (hi - lo) / 2;
    if (cp < r[mid].lo)
      hi = mid;
    else if (cp > r[mid].hi)
      lo = mid + 1;
    else
      return 1;
  }
  return 0;
}

int kvs__uni_class(uint32_t cp)
{
  if (cp < 0x80) { /* the hot path: ASCII */
    if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z')
      return KVS_UNI_L;
    if (cp >= '0' && cp <= '9')
      return KVS_UNI_N;
    if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D))
      return KVS_UNI_S;
    return KVS_UNI_P;
  }
  /* White_Space beyond ASCII (Unicode PropList) */
  if (cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
      cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000)
    return KVS_UNI_S;
  if (in_ranges(kvs__uni_letters, kvs__uni_letters_n, cp))
    return KVS_UNI_L;
  if (in_ranges(kvs__uni_numbers, kvs__uni_numbers_n, cp))
    return KVS_UNI_N;
  return KVS_UNI_P;
}

size_t kvs__utf8_next(const unsigned char *s, size_t n, uint32_t *cp)
{
  unsigned char c = s[0];
  size_t len;
  uint32_t v, min;
  if (c < 0x80) {
    *cp = c;
    return 1;
  }
  if ((c & 0xE0) == 0xC0) { len = 2; v = c & 0x1F; min = 0x80; }
  else if ((c & 0xF0) == 0xE0) { len = 3; v = c & 0x0F; min = 0x800; }
  else if ((c & 0xF8) == 0xF0) { len = 4; v = c & 0x07; min = 0x10000; }
  else goto bad;
  if (len > n)
    goto bad;
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xC0) != 0x80)
      goto bad;
    v = (v << 6) | (s[i] & 0x3F);
  }
  if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
    goto bad;
  *cp = v;
  return len;
bad:
  *cp = 0xFFFFFFFFu;
  return 1;
}
