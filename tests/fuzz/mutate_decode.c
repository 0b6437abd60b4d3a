/* SPDX-License-Identifier: MIT */
/* Deterministic mutation test of the decoders, run by `make check`: take
 * valid frames of every op, apply 200k seeded random mutations (bit flips,
 * truncations, inserted bytes, msgpack length/type bytes and frame header
 * changes) and check that decoding never crashes, returns only documented
 * codes, always explains an error, and yields sane structs on success.
 * `mutate_decode --corpus DIR` writes the seed payloads for libFuzzer. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/proto.h"
#include "tests/fuzz/seeds.h"

#define ITERATIONS 200000
#define MAX_SEEDS 32

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(uint32_t n)
{
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (uint32_t)(rng % n);
}

static int fails;

static void check(int ok, const char *what, long iter)
{
  if (!ok && fails++ < 20)
    fprintf(stderr, "iteration %ld: %s\n", iter, what);
}

static int documented(int r)
{
  return r == 0 || r == -EBADMSG || r == -EPROTO || r == -E2BIG ||
         r == -EINVAL || r == -ENOMEM;
}

/* Bytes that change msgpack lengths and types the most. */
static const uint8_t hot[] = {
  0x00, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xc4,
  0xc6, 0xc9, 0xca, 0xcb, 0xcf, 0xd3, 0xd8, 0xd9, 0xdb, 0xdc, 0xdd, 0xde,
  0xdf, 0xe0, 0xff,
};

static size_t mutate(uint8_t *b, size_t len, size_t cap)
{
  int n = 1 + (int)rnd(4);
  for (int m = 0; m < n; m++) {
    switch (rnd(6)) {
    case 0: /* bit flip */
      if (len)
        b[rnd((uint32_t)len)] ^= (uint8_t)(1u << rnd(8));
      break;
    case 1: /* truncate */
      if (len)
        len = rnd((uint32_t)len + 1);
      break;
    case 2: { /* insert bytes */
      size_t k = 1 + rnd(8), at = len ? rnd((uint32_t)len + 1) : 0;
      if (len + k > cap)
        break;
      memmove(b + at + k, b + at, len - at);
      for (size_t i = 0; i < k; i++)
        b[at + i] = (uint8_t)rnd(256);
      len += k;
      break;
    }
    case 3: /* type / length byte */
      if (len)
        b[rnd((uint32_t)len)] = hot[rnd(sizeof(hot))];
      break;
    case 4: /* big-endian length after a str/bin/array/map header */
      if (len > 3) {
        size_t at = rnd((uint32_t)len - 2);
        b[at] = rnd(2) ? 0xff : 0x00;
        b[at + 1] = (uint8_t)rnd(256);
      }
      break;
    default: /* duplicate a slice at the end (trailing bytes, dup keys) */
      if (len) {
        size_t at = rnd((uint32_t)len), k = 1 + rnd((uint32_t)(len - at));
        if (len + k <= cap) {
          memmove(b + len, b + at, k);
          len += k;
        }
      }
      break;
    }
  }
  return len;
}

static void run_one(const uint8_t *p, size_t len, int is_rep, long iter)
{
  char msg[KVS_MAX_ERRMSG];
  int r;

  memset(msg, 0, sizeof(msg));
  if (is_rep) {
    kvs__rep rep;
    r = kvs__decode_rep((const char *)p, len, &rep, msg);
    check(documented(r), "undocumented reply decode code", iter);
    if (r == 0) {
      check(rep.n_sink_channels <= KVS_MAX_ACT_CHANNELS, "sink_channels", iter);
      check(!rep.n_spaces || rep.spaces, "spaces", iter);
      check(rep.n_spaces <= KVS_MAX_LIST_ITEMS, "spaces limit", iter);
      check(!rep.n_profiles || rep.profiles, "profiles", iter);
      for (uint32_t i = 0; i < rep.n_profiles; i++)
        check(rep.profiles[i].n_channels <= KVS_MAX_ACT_CHANNELS, "profile channels", iter);
      check(memchr(rep.errmsg, 0, sizeof(rep.errmsg)) != NULL, "errmsg unterminated", iter);
      kvs__rep_free(&rep);
    }
  } else {
    kvs__req req;
    r = kvs__decode_req((const char *)p, len, &req, msg);
    check(documented(r), "undocumented request decode code", iter);
    if (r == 0) {
      check(req.op > KVS_OP_INVALID && req.op < KVS_OP__COUNT, "op", iter);
      check(req.layer_begin <= req.layer_end && req.layer_end <= KVS_MAX_LAYERS,
            "layers", iter);
      if (req.op == KVS_OP_PUT || req.op == KVS_OP_LOOKUP)
        check(req.n_tokens <= KVS_MAX_TOKENS_PER_PUT && (!req.n_tokens || req.tokens),
              "tokens", iter);
      if (req.op == KVS_OP_HELLO && req.hello.version == KVS_PROTO_VERSION)
        check(strlen(req.hello.model_id) >= 1 && req.hello.n_layers >= 1 &&
              req.hello.n_layers <= KVS_MAX_LAYERS, "hello model", iter);
      kvs__req_free(&req);
    }
  }
  if (r < 0)
    check(msg[0] != '\0' && memchr(msg, 0, sizeof(msg)) != NULL, "empty errmsg", iter);
}

static int write_corpus(const char *dir, kvs__seed *s, int n)
{
  for (int i = 0; i < n; i++) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/seed-%02d-%s", dir, i, s[i].is_rep ? "rep" : "req");
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(s[i].frame + 4, 1, s[i].len - 4, f) != s[i].len - 4) {
      perror(path);
      return 1;
    }
    fclose(f);
  }
  return 0;
}

int main(int argc, char **argv)
{
  kvs__seed seeds[MAX_SEEDS];
  int n = kvs__fuzz_seeds(seeds, MAX_SEEDS);
  if (n < 2 * (KVS_OP__COUNT - 1)) {
    fprintf(stderr, "seed encoding failed: %d\n", n);
    return 1;
  }
  if (argc == 3 && strcmp(argv[1], "--corpus") == 0) {
    int r = write_corpus(argv[2], seeds, n);
    kvs__fuzz_seeds_free(seeds, n);
    return r;
  }

  /* the unmutated seeds must decode */
  for (int i = 0; i < n; i++) {
    char msg[KVS_MAX_ERRMSG];
    const char *p = seeds[i].frame + 4;
    size_t len = seeds[i].len - 4;
    int r;
    if (seeds[i].is_rep) {
      kvs__rep rep;
      r = kvs__decode_rep(p, len, &rep, msg);
      kvs__rep_free(&rep);
    } else {
      kvs__req req;
      r = kvs__decode_req(p, len, &req, msg);
      kvs__req_free(&req);
    }
    if (r != 0) {
      fprintf(stderr, "seed %d does not decode: %d %s\n", i, r, msg);
      return 1;
    }
  }

  size_t cap = 1;
  for (int i = 0; i < n; i++)
    if (seeds[i].len * 2 + 64 > cap)
      cap = seeds[i].len * 2 + 64;
  uint8_t *buf = malloc(cap);
  if (!buf)
    return 1;
  long accepted = 0;
  for (long it = 0; accepted < ITERATIONS; it++) {
    const kvs__seed *s = &seeds[rnd((uint32_t)n)];
    size_t len = s->len;
    memcpy(buf, s->frame, len);
    len = mutate(buf, len, cap);
    if (len < 4) /* not even a header: nothing to decode */
      continue;
    /* a reader trusts the (possibly mutated) header up to what arrived */
    size_t want = kvs__frame_get_len(buf);
    size_t plen = len - 4 < want ? len - 4 : want;
    run_one(buf + 4, plen, s->is_rep, it);
    /* and the same bytes through the other decoder */
    run_one(buf + 4, plen, !s->is_rep, it);
    accepted++;
  }
  free(buf);
  kvs__fuzz_seeds_free(seeds, n);
  printf("%ld mutated frames decoded, %d failures\n", accepted, fails);
  return fails ? 1 : 0;
}
