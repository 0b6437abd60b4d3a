/* SPDX-License-Identifier: MIT */
#include "store/hash.h"

#include <string.h>

/* Final avalanche of splitmix64 / murmur3 fmix64. */
static uint64_t mix64(uint64_t x)
{
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

static uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

uint64_t kvs__hash64(const void *data, size_t len, uint64_t seed)
{
  const unsigned char *p = data;
  uint64_t h = mix64(seed ^ 0x9e3779b97f4a7c15ull) ^ (uint64_t)len;
  while (len >= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    h = rotl(h ^ mix64(w + 0x632be59bd9b4e019ull), 27) * 0x9e3779b97f4a7c15ull + 0x85ebca6bull;
    p += 8;
    len -= 8;
  }
  if (len) {
    uint64_t w = 0;
    memcpy(&w, p, len);
    /* The tail length is folded in so "ab" and "ab\0" differ. */
    h = rotl(h ^ mix64(w ^ ((uint64_t)len << 56)), 31) * 0xc2b2ae3d27d4eb4full;
  }
  return mix64(h);
}
