/* SPDX-License-Identifier: MIT */
/* kvs-itest: multi-process integration checks against a real kvsinkd,
 * driven by tests/integration/client-*.sh. Every mode exits 0 on success,
 * 1 on a failed check (with a message on stderr). Data are deterministic:
 * a hash of (seed, layer, position, index, K/V), so any process can
 * regenerate what another one stored. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <kvsink.h>
#include "proto/fastarea.h"
#include "proto/proto.h" /* limits */

enum { L = 4, H = 2, D = 32, LOOP_GROUPS = 96 };

static const char *sock;

#define FAIL(...) do { fprintf(stderr, "kvs-itest: " __VA_ARGS__); fputc('\n', stderr); exit(1); } while (0)

static uint16_t val(uint32_t seed, uint32_t l, uint32_t pos, uint32_t i, uint32_t kv)
{
  uint64_t x = ((uint64_t)seed << 40) ^ ((uint64_t)l << 32) ^ ((uint64_t)pos << 12) ^ (i << 1) ^ kv;
  x ^= x >> 33; x *= 0xff51afd7ed558ccdULL; x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL; x ^= x >> 33;
  /* fp16 in [-2, 2): sign, exponent 13..15, random mantissa; no NaN/Inf */
  return (uint16_t)(((x & 1) << 15) | ((13 + (x >> 1) % 3) << 10) | ((x >> 8) & 0x3ff));
}

static uint32_t tok(uint32_t seed, uint32_t pos)
{
  return seed * 100003u + pos * 7u + 1;
}

static kvs_client *conn(const char *model_id)
{
  kvs_model m = {model_id, L, H, D, KVS_DTYPE_F16};
  kvs_options o;
  kvs_client *c;
  kvs_options_init(&o);
  o.k_bits = o.v_bits = 4;
  o.policy = KVS_POLICY_PFN;
  o.seg_size = 16u << 20;
  /* $KVS_ITEST_SALT: the cache salt of every connection (client-salt.sh) */
  const char *salt = getenv("KVS_ITEST_SALT");
  if (salt && *salt) {
    o.salt_len = strlen(salt) < KVS_MAX_SALT ? strlen(salt) : KVS_MAX_SALT;
    memcpy(o.salt, salt, o.salt_len);
  }
  int r = kvs_connect(&c, sock, &m, &o);
  if (r < 0)
    FAIL("connect: %s", kvs_strerror(r));
  return c;
}

/* Write K at 0 and V after it for tokens [start, start+n) of all layers. */
static size_t fill(kvs_client *c, uint32_t seed, uint32_t start, uint32_t n, uint32_t *tokens)
{
  size_t kvb = kvs_kv_bytes(c, n, 0, L), sz;
  uint16_t *seg = kvs_segment(c, &sz);
  if (4 * kvb > sz)
    FAIL("segment too small for %u tokens", n);
  for (uint32_t l = 0; l < L; l++)
    for (uint32_t t = 0; t < n; t++)
      for (uint32_t i = 0; i < H * D; i++) {
        size_t j = ((size_t)l * n + t) * H * D + i;
        seg[j] = val(seed, l, start + t, i, 0);
        seg[kvb / 2 + j] = val(seed, l, start + t, i, 1);
      }
  for (uint32_t t = 0; t < n; t++)
    tokens[t] = tok(seed, start + t);
  return kvb;
}

/* Put tokens [start, start+n) of seed into seq, in one request. */
static int put(kvs_client *c, uint64_t seq, uint32_t seed, uint32_t start, uint32_t n)
{
  uint32_t *tokens = malloc(sizeof(uint32_t) * n);
  if (!tokens)
    FAIL("out of memory");
  size_t kvb = fill(c, seed, start, n, tokens);
  kvs_put_args a = {.seq = seq, .start = start, .tokens = tokens, .n_tokens = n,
                    .layer_begin = 0, .layer_end = L, .k_off = 0, .v_off = kvb};
  int r = kvs_put(c, &a, NULL);
  free(tokens);
  return r;
}

/* Get tokens [0, n) of seq into a fresh buffer (K then V). */
static uint8_t *get(kvs_client *c, uint64_t seq, uint32_t n, size_t *len)
{
  size_t kvb = kvs_kv_bytes(c, n, 0, L), sz;
  uint8_t *seg = kvs_segment(c, &sz);
  int r = kvs_get(c, seq, 0, n, 0, L, 2 * kvb, 3 * kvb);
  if (r < 0)
    FAIL("get seq %llu: %s (%s)", (unsigned long long)seq, kvs_strerror(r), kvs_last_error(c));
  uint8_t *b = malloc(2 * kvb);
  if (!b)
    FAIL("out of memory");
  memcpy(b, seg + 2 * kvb, 2 * kvb);
  *len = 2 * kvb;
  return b;
}

/* Read-back must reconstruct the generated data: at 4 bits the step is
 * range / 15 and the RMS error about step / sqrt(12), some 6 % of the
 * data's RMS for these values; 0.15 leaves headroom and still fails on
 * any wrong block (about 1.4 for unrelated data). */
static void check_close(kvs_client *c, const uint8_t *got, uint32_t seed, uint32_t n)
{
  uint32_t *tokens = malloc(sizeof(uint32_t) * n);
  size_t kvb = fill(c, seed, 0, n, tokens);
  const uint16_t *ref = kvs_segment(c, NULL);
  const uint16_t *g = (const uint16_t *)got;
  double se = 0, ss = 0;
  for (size_t i = 0; i < kvb; i++) {
    uint16_t a = ref[i], b = g[i];
    /* compare fp16 via their float values */
    float fa = ldexpf((float)((a & 0x3ff) | 0x400), ((a >> 10) & 0x1f) - 25) * ((a >> 15) ? -1 : 1);
    float fb = (b & 0x7c00) ? ldexpf((float)((b & 0x3ff) | 0x400), ((b >> 10) & 0x1f) - 25)
                            : ldexpf((float)(b & 0x3ff), -24);
    if ((b & 0x7c00) == 0x7c00)
      FAIL("read back NaN/Inf");
    fb *= (b >> 15) ? -1 : 1;
    se += (double)(fa - fb) * (fa - fb);
    ss += (double)fa * fa;
  }
  free(tokens);
  if (!(sqrt(se / ss) < 0.15))
    FAIL("seed %u: read-back differs from what was stored (rel RMS %.3f)", seed, sqrt(se / ss));
}

static void write_file(const char *path, const uint8_t *b, size_t n)
{
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "wb");
  if (!f || fwrite(b, 1, n, f) != n || fclose(f) != 0 || rename(tmp, path) != 0)
    FAIL("write %s: %s", path, strerror(errno));
}

static uint8_t *wait_file(const char *path, size_t *n)
{
  struct stat st;
  for (int i = 0; stat(path, &st) != 0; i++) {
    if (i > 600)
      FAIL("%s never appeared", path);
    usleep(50000);
  }
  FILE *f = fopen(path, "rb");
  uint8_t *b = malloc((size_t)st.st_size + 1);
  if (!f || !b || fread(b, 1, (size_t)st.st_size, f) != (size_t)st.st_size)
    FAIL("read %s", path);
  fclose(f);
  *n = (size_t)st.st_size;
  return b;
}

/* store SEED BLOCKS MARKER: put a prefix of BLOCKS whole blocks, read it
 * back, publish the read-back in MARKER; then store and check its own. */
static int m_store(uint32_t seed, uint32_t blocks, const char *marker)
{
  kvs_client *c = conn("itest");
  uint32_t n = blocks * kvs_get_info(c)->group;
  /* in two puts: the second continues the seq */
  int r = put(c, 1, seed, 0, n / 2);
  if (r == 0)
    r = put(c, 1, seed, n / 2, n - n / 2);
  if (r < 0)
    FAIL("store: %s (%s)", kvs_strerror(r), kvs_last_error(c));
  size_t len;
  uint8_t *b = get(c, 1, n, &len);
  check_close(c, b, seed, n);
  write_file(marker, b, len);
  free(b);
  kvs_close(c);
  return 0;
}

/* share SEED BLOCKS MARKER OWNSEED: wait for the prefix, bind it, compare
 * bitwise; concurrently store and read an own sequence. */
static int m_share(uint32_t seed, uint32_t blocks, const char *marker, uint32_t own)
{
  kvs_client *c = conn("itest");
  uint32_t g = kvs_get_info(c)->group, n = blocks * g;
  /* own sequence first, so it overlaps with the other clients' work */
  int r = put(c, 2, own, 0, n);
  if (r < 0)
    FAIL("own put: %s (%s)", kvs_strerror(r), kvs_last_error(c));
  size_t len, rlen;
  uint8_t *b = get(c, 2, n, &len);
  check_close(c, b, own, n);
  free(b);
  uint8_t *ref = wait_file(marker, &rlen);
  uint32_t *tokens = malloc(sizeof(uint32_t) * n);
  for (uint32_t t = 0; t < n; t++)
    tokens[t] = tok(seed, t);
  r = kvs_lookup(c, 1, tokens, n, 1);
  if (r != (int)n)
    FAIL("lookup found %d of %u tokens (%s)", r, n, r < 0 ? kvs_strerror(r) : "partial");
  b = get(c, 1, n, &len);
  if (len != rlen || memcmp(b, ref, len) != 0)
    FAIL("shared prefix differs from the storing client's read-back");
  /* the bound seq continues after the cached prefix */
  r = put(c, 1, seed, n, g);
  if (r < 0)
    FAIL("put after bound prefix: %s (%s)", kvs_strerror(r), kvs_last_error(c));
  free(b);
  free(ref);
  free(tokens);
  kvs_close(c);
  return 0;
}

/* putloop SEED: append one group per put to a seq of LOOP_GROUPS groups,
 * then start over (until killed). After each acknowledged put of the first
 * seq it prints how many groups are stored, so the killer knows what the
 * cache must hold. */
static int m_putloop(uint32_t seed)
{
  alarm(120); /* the script kills us long before; never outlive a broken one */
  kvs_client *c = conn("itest");
  uint32_t g = kvs_get_info(c)->group;
  for (uint64_t seq = 1;; seq++) {
    for (uint32_t k = 0; k < LOOP_GROUPS; k++) {
      int r = put(c, seq, seed, k * g, g);
      if (r < 0)
        FAIL("putloop: %s (%s)", kvs_strerror(r), kvs_last_error(c));
      if (seq == 1) {
        printf("acked %u\n", k + 1);
        fflush(stdout);
      }
    }
    kvs_release(c, seq);
  }
}

/* verify SEED [--expect MIN[:MAX]]: what the cache holds for seed is whole
 * blocks, between MIN and MAX groups (default: at least one), and equals
 * what a fresh space (same settings, other model id) gives for the same
 * data. */
static int m_verify(uint32_t seed, uint32_t min_groups, uint32_t max_groups)
{
  kvs_client *c = conn("itest"), *ref = conn("itest-ref");
  uint32_t g = kvs_get_info(c)->group, n = LOOP_GROUPS * g;
  uint32_t tokens[KVS_MAX_TOKENS_PER_PUT];
  if (n > KVS_MAX_TOKENS_PER_PUT)
    FAIL("group too large");
  for (uint32_t t = 0; t < n; t++)
    tokens[t] = tok(seed, t);
  int found = kvs_lookup(c, 1, tokens, n, 0);
  if (found < 0 || found % (int)g != 0 || found > (int)n)
    FAIL("lookup: %d (not whole blocks)", found);
  int bound = kvs_lookup(c, 1, tokens, n, 1);
  if (bound < found)
    FAIL("bind found %d after lookup found %d", bound, found);
  printf("cached %d tokens (%d groups; expected %u..%u)\n", bound, bound / (int)g, min_groups, max_groups);
  if (bound != found)
    FAIL("bind found %d, lookup %d: the cache changed with no writer", bound, found);
  if (bound < (int)(min_groups * g) || bound > (int)(max_groups * g))
    FAIL("cached %d tokens, expected %u..%u groups of %u", bound, min_groups, max_groups, g);
  size_t len, rlen;
  uint8_t *b = get(c, 1, (uint32_t)bound, &len);
  int r = put(ref, 1, seed, 0, (uint32_t)bound);
  if (r < 0)
    FAIL("reference put: %s (%s)", kvs_strerror(r), kvs_last_error(ref));
  uint8_t *rb = get(ref, 1, (uint32_t)bound, &rlen);
  if (len != rlen || memcmp(b, rb, len) != 0)
    FAIL("cached blocks differ from a reference store of the same data");
  kvs_release(ref, 1);
  free(b);
  free(rb);
  kvs_close(ref);
  kvs_close(c);
  return 0;
}

/* probe SEED BLOCKS all|none: the prefix `store SEED BLOCKS` wrote, seen
 * from this process's namespace: lookup without and with bind must both
 * find all of its tokens, or none; found data must read back right, and with nothing found
 * a get of the bound seq must read nothing (tests/integration/isolation.sh). */
static int m_probe(uint32_t seed, uint32_t blocks, int all)
{
  kvs_client *c = conn("itest");
  uint32_t n = blocks * kvs_get_info(c)->group, expect = all ? n : 0;
  uint32_t *tokens = malloc(sizeof(uint32_t) * n);
  if (!tokens)
    FAIL("out of memory");
  for (uint32_t t = 0; t < n; t++)
    tokens[t] = tok(seed, t);
  int f = kvs_lookup(c, 1, tokens, n, 0);
  int b = kvs_lookup(c, 1, tokens, n, 1);
  printf("probe: lookup %d, bind %d tokens of %u (expected %u)\n", f, b, n, expect);
  if (f != (int)expect || b != (int)expect)
    FAIL("lookup found %d, bind %d, expected %u", f, b, expect);
  if (expect > 0) {
    size_t len;
    uint8_t *got = get(c, 1, expect, &len);
    check_close(c, got, seed, expect);
    free(got);
  } else {
    size_t kvb = kvs_kv_bytes(c, 1, 0, L);
    int r = kvs_get(c, 1, 0, 1, 0, L, 0, kvb);
    if (r >= 0)
      FAIL("get of another namespace's prefix succeeded");
  }
  free(tokens);
  kvs_close(c);
  return 0;
}

/* evict NSEQ: store many sequences (released at once), check that found
 * prefixes read back right; then fill the pool with pinned seqs until
 * -ENOSPC, and check that a refused put succeeds after a release. */
static int m_evict(uint32_t nseq)
{
  kvs_client *c = conn("itest"), *p = conn("itest");
  uint32_t g = kvs_get_info(c)->group, n = 4 * g;
  uint8_t **keep = calloc(nseq, sizeof *keep);
  size_t len = 0;
  for (uint32_t s = 0; s < nseq; s++) {
    int r = put(c, 1, 5000 + s, 0, n);
    if (r < 0)
      FAIL("evict store %u: %s (%s)", s, kvs_strerror(r), kvs_last_error(c));
    keep[s] = get(c, 1, n, &len);
    kvs_release(c, 1);
  }
  uint32_t *tokens = malloc(sizeof(uint32_t) * n);
  int hits = 0;
  for (uint32_t s = 0; s < nseq; s++) {
    for (uint32_t t = 0; t < n; t++)
      tokens[t] = tok(5000 + s, t);
    int f = kvs_lookup(c, 1, tokens, n, 1);
    if (f < 0 || f % (int)g != 0)
      FAIL("lookup %u: %d", s, f);
    if (f > 0) {
      size_t l2, part = len / 2 / n * (size_t)f; /* bytes of K for f tokens */
      uint8_t *b = get(c, 1, (uint32_t)f, &l2);
      /* K and V of the first f tokens, layer by layer */
      for (uint32_t kv = 0; kv < 2; kv++)
        for (uint32_t l = 0; l < L; l++) {
          size_t row = part / L;
          if (memcmp(b + kv * part + l * row, keep[s] + kv * (len / 2) + l * (len / 2 / L), row))
            FAIL("seq %u: found prefix reads back wrong data", s);
        }
      free(b);
      hits++;
    }
    kvs_release(c, 1);
  }
  printf("%d of %u sequences still cached\n", hits, nseq);
  /* LRU keeps the latest ones: none found means nothing was checked */
  if (hits == 0)
    FAIL("no stored sequence found again: nothing read back was checked");
  /* pin until the pool is full */
  uint64_t seq;
  int r = 0;
  for (seq = 1; seq < KVS_MAX_SEQS_PER_CLIENT; seq++) {
    r = put(p, seq, 900000 + (uint32_t)seq, 0, n);
    if (r < 0)
      break;
  }
  if (r != -ENOSPC)
    FAIL("filling the pool ended with %d (%s), expected -ENOSPC", r, kvs_strerror(r));
  if (seq < 2)
    FAIL("not even one sequence fit");
  /* c's seq 7 holds one group, so the refused put is a continuation */
  r = put(c, 7, 42, 0, g);
  if (r != -ENOSPC && r < 0)
    FAIL("first group: %s", kvs_strerror(r));
  int r2 = put(c, 7, 42, r == 0 ? g : 0, n);
  if (r2 != -ENOSPC)
    FAIL("put into a full pinned pool gave %d, expected -ENOSPC", r2);
  printf("refused: %s (%s)\n", kvs_strerror(r2), kvs_last_error(c));
  if (kvs_ping(c) != 0)
    FAIL("session unusable after -ENOSPC");
  for (uint64_t s = 1; s < seq; s++)
    kvs_release(p, s);
  r2 = put(c, 7, 42, r == 0 ? g : 0, n);
  if (r2 < 0)
    FAIL("put after release elsewhere: %s (%s)", kvs_strerror(r2), kvs_last_error(c));
  for (uint32_t s = 0; s < nseq; s++)
    free(keep[s]);
  free(keep);
  free(tokens);
  kvs_close(p);
  kvs_close(c);
  return 0;
}

static void expect_err(kvs_client *c, int r, int want, const char *what)
{
  printf("%s: %d %s (%s)\n", what, r, kvs_strerror(r), kvs_last_error(c));
  if (r >= 0)
    FAIL("%s succeeded", what);
  if (want && r != want)
    FAIL("%s gave %s, expected %s", what, kvs_strerror(r), kvs_strerror(want));
  if (kvs_last_error(c)[0] == '\0')
    FAIL("%s: no error text", what);
  int p = kvs_ping(c);
  if (p != 0)
    FAIL("session unusable after %s: %s", what, kvs_strerror(p));
}

/* errors: bad requests come back as errors and the session goes on. */
static int m_errors(void)
{
  kvs_client *c = conn("itest");
  uint32_t g = kvs_get_info(c)->group;
  size_t sz;
  kvs_segment(c, &sz);
  uint32_t tokens[16];
  for (uint32_t t = 0; t < 16; t++)
    tokens[t] = tok(77, t);
  kvs_put_args a = {.seq = 3, .start = 0, .tokens = tokens, .n_tokens = 16,
                    .layer_begin = 0, .layer_end = L, .k_off = sz - 8, .v_off = 0};
  expect_err(c, kvs_put(c, &a, NULL), KVS_ESEGMENT, "put with K beyond the segment");
  a.k_off = 0;
  a.v_off = (size_t)-1 - 4;
  expect_err(c, kvs_put(c, &a, NULL), KVS_ESEGMENT, "put with V offset overflowing");
  a.v_off = kvs_kv_bytes(c, 16, 0, L);
  expect_err(c, kvs_get(c, 999, 0, 16, 0, L, 0, a.v_off), -ENOENT, "get of an unknown seq");
  int r = put(c, 3, 77, 0, g);
  if (r < 0)
    FAIL("valid put: %s (%s)", kvs_strerror(r), kvs_last_error(c));
  expect_err(c, put(c, 3, 77, g + 1, 4), -EINVAL, "put at a wrong start");
  expect_err(c, kvs_get(c, 3, 0, g, 0, L, sz - 2, 0), KVS_ESEGMENT, "get into a range beyond the segment");
  expect_err(c, kvs_get(c, 3, 0, g + 5, 0, L, 0, 0), 0, "get beyond the seq length");
  a.start = g;
  a.layer_begin = 0;
  a.layer_end = L + 1;
  expect_err(c, kvs_put(c, &a, NULL), 0, "put of a layer beyond the model");
  a.layer_end = L;
  uint32_t *many = calloc(KVS_MAX_TOKENS_PER_PUT + 1, sizeof *many);
  a.tokens = many;
  a.n_tokens = KVS_MAX_TOKENS_PER_PUT + 1;
  expect_err(c, kvs_put(c, &a, NULL), 0, "put of too many tokens");
  free(many);
  expect_err(c, kvs_release(c, 999), -ENOENT, "release of an unknown seq");
  r = put(c, 3, 77, g, g);
  if (r < 0)
    FAIL("session cannot continue its seq: %s (%s)", kvs_strerror(r), kvs_last_error(c));
  size_t len;
  uint8_t *b = get(c, 3, 2 * g, &len);
  check_close(c, b, 77, 2 * g);
  free(b);
  kvs_close(c);
  puts("errors ok");
  return 0;
}

/* The fast area scribbled on (proto/fastarea.h; run with KVSINK_BUSY_POLL_US
 * set so that libkvsink uses it): requests of length 0 and over the
 * limit get an error in the area and the session goes on; garbage bytes
 * close the session as a malformed frame on the socket does, and
 * kvs_reconnect() brings a working one. kvsinkd must poll the areas
 * (busy_poll_us) for the scribbles to be taken without a bell. */
static int fast_scribble(uint8_t *a, uint32_t len, const void *body, uint32_t seq)
{
  if (body) memcpy(a + KVS_FAST_REQ, body, len);
  __atomic_store_n((uint32_t *)(a + KVS_FAST_REQ_LEN), len, __ATOMIC_RELEASE);
  __atomic_store_n((uint32_t *)(a + KVS_FAST_REQ_SEQ), seq, __ATOMIC_RELEASE);
  for (int i = 0; i < 20000; i++) { /* 2 s */
    if (__atomic_load_n((uint32_t *)(a + KVS_FAST_REP_SEQ), __ATOMIC_ACQUIRE) == seq) return 0;
    usleep(100);
  }
  return -1;
}

static int m_fasthostile(void)
{
  kvs_client *c = conn("fast-hostile");
  size_t size = 0;
  uint8_t *a = (uint8_t *)kvs_segment(c, &size) + size; /* the area follows the caller's part */
  if (kvs_ping(c) < 0) FAIL("ping: %s", kvs_last_error(c));
  uint32_t seq = __atomic_load_n((uint32_t *)(a + KVS_FAST_REQ_SEQ), __ATOMIC_ACQUIRE);
  if (seq == 0) FAIL("no request went through the fast area (is busy-polling on both sides?)");
  /* length 0, then over the limit: an error reply in the area */
  if (fast_scribble(a, 0, NULL, seq + 1000) < 0) FAIL("no reply to a request of length 0");
  uint32_t rl = __atomic_load_n((uint32_t *)(a + KVS_FAST_REP_LEN), __ATOMIC_ACQUIRE);
  if (rl == 0 || rl > KVS_FAST_REP_MAX) FAIL("reply of %u bytes to a request of length 0", rl);
  if (fast_scribble(a, KVS_FAST_REQ_MAX + 1, NULL, seq + 2000) < 0) FAIL("no reply to an oversize request");
  /* the session goes on: libkvsink's next request counts on from its own seq */
  for (int i = 0; i < 10; i++)
    if (kvs_ping(c) < 0) FAIL("ping after bad lengths: %s", kvs_last_error(c));
  /* garbage: the session is closed */
  const uint8_t junk[8] = {0xc1, 0xc1, 0xff, 0x00, 0x91, 0xc1, 0x80, 0x00};
  seq = __atomic_load_n((uint32_t *)(a + KVS_FAST_REQ_SEQ), __ATOMIC_ACQUIRE);
  fast_scribble(a, sizeof junk, junk, seq + 3000);
  int r = kvs_ping(c);
  if (r == 0) FAIL("the session survived a malformed request in the fast area");
  if ((r = kvs_reconnect(c)) < 0) FAIL("reconnect: %s", kvs_strerror(r));
  for (int i = 0; i < 10; i++)
    if (kvs_ping(c) < 0) FAIL("ping after reconnect: %s", kvs_last_error(c));
  kvs_close(c);
  printf("fasthostile ok\n");
  return 0;
}

int main(int argc, char **argv)
{
  if (argc < 3) {
    fprintf(stderr, "usage: kvs-itest SOCKET store|share|putloop|verify [--expect MIN[:MAX]]|probe|evict|errors ARGS\n");
    return 2;
  }
  sock = argv[1];
  const char *m = argv[2];
  unsigned long a1 = argc > 3 ? strtoul(argv[3], NULL, 10) : 0;
  unsigned long a2 = argc > 4 ? strtoul(argv[4], NULL, 10) : 0;
  if (strcmp(m, "store") == 0 && argc == 6)
    return m_store((uint32_t)a1, (uint32_t)a2, argv[5]);
  if (strcmp(m, "share") == 0 && argc == 7)
    return m_share((uint32_t)a1, (uint32_t)a2, argv[5], (uint32_t)strtoul(argv[6], NULL, 10));
  if (strcmp(m, "putloop") == 0 && argc == 4)
    return m_putloop((uint32_t)a1);
  if (strcmp(m, "verify") == 0 && argc == 4)
    return m_verify((uint32_t)a1, 1, LOOP_GROUPS);
  if (strcmp(m, "verify") == 0 && argc == 6 && strcmp(argv[4], "--expect") == 0) {
    char *e;
    unsigned long lo = strtoul(argv[5], &e, 10), hi = lo;
    if (*e == ':')
      hi = strtoul(e + 1, &e, 10);
    if (*e || hi < lo || hi > LOOP_GROUPS)
      FAIL("--expect MIN[:MAX] groups, MAX <= %d", LOOP_GROUPS);
    return m_verify((uint32_t)a1, (uint32_t)lo, (uint32_t)hi);
  }
  if (strcmp(m, "probe") == 0 && argc == 6 && (!strcmp(argv[5], "all") || !strcmp(argv[5], "none")))
    return m_probe((uint32_t)a1, (uint32_t)a2, !strcmp(argv[5], "all"));
  if (strcmp(m, "evict") == 0 && argc == 4)
    return m_evict((uint32_t)a1);
  if (strcmp(m, "errors") == 0 && argc == 3)
    return m_errors();
  if (strcmp(m, "fasthostile") == 0 && argc == 3)
    return m_fasthostile();
  fprintf(stderr, "kvs-itest: bad arguments\n");
  return 2;
}
