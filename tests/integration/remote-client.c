/* SPDX-License-Identifier: MIT */
/* remote-client: the client side of the Redis tier's tests and benchmark,
 * over libkvsink. Data are a function of (seed, layer, position, index),
 * so a client of another daemon can check what the first one stored.
 *
 *   remote-client SOCKET store SEED NTOK BITS
 *   remote-client SOCKET fetch SEED NTOK BITS MIN [MAX]
 *       lookup with bind; fail unless MIN <= cached tokens <= MAX; read
 *       them back: bit-exact at 16 bits, finite otherwise. Prints cached
 *       and the lookup's time in microseconds.
 *   remote-client REDIS_SOCKET rawset KEY BYTES
 *   remote-client REDIS_SOCKET rawget KEY REPEATS
 *       the benchmark's baseline: one plain GET of BYTES over the same
 *       socket (hiredis, blocking), median microseconds of REPEATS.
 * Shape: RC_LAYERS, RC_HEADS, RC_DIM (default 4, 2, 32); model "rtest". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>
#include <kvsink.h>

#define FAIL(...) do { fprintf(stderr, "remote-client: " __VA_ARGS__); fputc('\n', stderr); exit(1); } while (0)

static uint32_t L = 4, H = 2, D = 32;

static uint16_t val(uint32_t seed, uint32_t l, uint32_t pos, uint32_t i, uint32_t kv)
{
  uint64_t x = ((uint64_t)seed << 40) ^ ((uint64_t)l << 32) ^ ((uint64_t)pos << 12) ^ (i << 1) ^ kv;
  x ^= x >> 33; x *= 0xff51afd7ed558ccdULL; x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL; x ^= x >> 33;
  /* fp16 in [-2, 2): no NaN/Inf */
  return (uint16_t)(((x & 1) << 15) | ((13 + (x >> 1) % 3) << 10) | ((x >> 8) & 0x3ff));
}

static uint32_t tok(uint32_t seed, uint32_t pos) { return seed * 100003u + pos * 7u + 1; }

static uint32_t env(const char *name, uint32_t def)
{
  const char *v = getenv(name);
  return v && *v ? (uint32_t)strtoul(v, NULL, 10) : def;
}

static kvs_client *conn(const char *sock, int bits)
{
  kvs_model m = {"rtest", L, H, D, KVS_DTYPE_F16};
  kvs_options o;
  kvs_client *c;
  kvs_options_init(&o);
  o.k_bits = o.v_bits = bits;
  o.policy = KVS_POLICY_PFN;
  o.seg_size = 256u << 20;
  int r = kvs_connect(&c, sock, &m, &o);
  if (r < 0)
    FAIL("connect %s: %s", sock, kvs_strerror(r));
  return c;
}

/* K at 0, V after it, [layer][token][H*D]. */
static size_t fill(kvs_client *c, uint32_t seed, uint32_t n, uint32_t *tokens)
{
  size_t kvb = kvs_kv_bytes(c, n, 0, L), sz;
  uint16_t *seg = kvs_segment(c, &sz);
  if (4 * kvb > sz)
    FAIL("segment of %zu bytes too small for %u tokens", sz, n);
  for (uint32_t l = 0; l < L; l++)
    for (uint32_t t = 0; t < n; t++)
      for (uint32_t i = 0; i < H * D; i++) {
        size_t j = ((size_t)l * n + t) * H * D + i;
        seg[j] = val(seed, l, t, i, 0);
        seg[kvb / 2 + j] = val(seed, l, t, i, 1);
      }
  for (uint32_t t = 0; t < n; t++)
    tokens[t] = tok(seed, t);
  return kvb;
}

static double now_us(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int m_store(const char *sock, uint32_t seed, uint32_t n, int bits)
{
  kvs_client *c = conn(sock, bits);
  uint32_t *tokens = malloc(sizeof *tokens * n);
  size_t kvb = fill(c, seed, n, tokens);
  kvs_put_args a = {.seq = 1, .start = 0, .tokens = tokens, .n_tokens = n,
                    .layer_begin = 0, .layer_end = L, .k_off = 0, .v_off = kvb};
  int r = kvs_put(c, &a, NULL);
  if (r < 0)
    FAIL("put: %s (%s)", kvs_strerror(r), kvs_last_error(c));
  free(tokens);
  kvs_close(c);
  return 0;
}

static int m_fetch(const char *sock, uint32_t seed, uint32_t n, int bits, uint32_t min,
                   uint32_t max)
{
  kvs_client *c = conn(sock, bits);
  uint32_t *tokens = malloc(sizeof *tokens * n);
  size_t kvb = fill(c, seed, n, tokens);
  double t0 = now_us();
  int cached = kvs_lookup(c, 1, tokens, n, 1);
  double t1 = now_us();
  if (cached < 0)
    FAIL("lookup: %s (%s)", kvs_strerror(cached), kvs_last_error(c));
  printf("cached %d lookup_us %.0f", cached, t1 - t0);
  if ((uint32_t)cached < min || (uint32_t)cached > max)
    FAIL("cached %d tokens, expected %u..%u", cached, min, max);
  if (cached > 0) {
    uint32_t m = (uint32_t)cached;
    size_t mb = kvs_kv_bytes(c, m, 0, L);
    double t2 = now_us();
    int r = kvs_get(c, 1, 0, m, 0, L, 2 * kvb, 2 * kvb + mb);
    printf(" get_us %.0f", now_us() - t2);
    if (r < 0)
      FAIL("get: %s (%s)", kvs_strerror(r), kvs_last_error(c));
    const uint16_t *seg = kvs_segment(c, NULL);
    const uint16_t *gk = seg + kvb, *gv = seg + kvb + mb / 2;
    size_t bad = 0;
    for (uint32_t l = 0; l < L; l++)
      for (uint32_t t = 0; t < m; t++)
        for (uint32_t i = 0; i < H * D; i++) {
          size_t j = ((size_t)l * m + t) * H * D + i;
          uint16_t k = gk[j], v = gv[j];
          if (bits == 16)
            bad += k != val(seed, l, t, i, 0) || v != val(seed, l, t, i, 1);
          else
            bad += (k & 0x7c00) == 0x7c00 || (v & 0x7c00) == 0x7c00;
        }
    if (bad)
      FAIL("%zu values read back differ%s", bad, bits == 16 ? " (16 bits: must be bit-exact)" : "");
  }
  putchar('\n');
  free(tokens);
  kvs_close(c);
  return 0;
}

static int cmp_d(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static int m_raw(const char *rsock, const char *op, const char *key, size_t arg)
{
  redisContext *rc = redisConnectUnix(rsock);
  if (!rc || rc->err)
    FAIL("redis %s: %s", rsock, rc ? rc->errstr : "out of memory");
  if (strcmp(op, "rawset") == 0) {
    char *buf = malloc(arg);
    for (size_t i = 0; i < arg; i++)
      buf[i] = (char)(i * 131u);
    redisReply *r = redisCommand(rc, "SET %s %b", key, buf, arg);
    if (!r || r->type == REDIS_REPLY_ERROR)
      FAIL("SET failed");
    freeReplyObject(r);
    free(buf);
  } else {
    double t[64];
    size_t n = arg < 1 ? 1 : arg > 64 ? 64 : arg, len = 0;
    for (size_t i = 0; i < n; i++) {
      double t0 = now_us();
      redisReply *r = redisCommand(rc, "GET %s", key);
      t[i] = now_us() - t0;
      if (!r || r->type != REDIS_REPLY_STRING)
        FAIL("GET %s: no value", key);
      len = r->len;
      freeReplyObject(r);
    }
    qsort(t, n, sizeof t[0], cmp_d);
    printf("bytes %zu get_us %.0f\n", len, t[n / 2]);
  }
  redisFree(rc);
  return 0;
}

int main(int argc, char **argv)
{
  L = env("RC_LAYERS", 4);
  H = env("RC_HEADS", 2);
  D = env("RC_DIM", 32);
  if (argc >= 6 && strcmp(argv[2], "store") == 0)
    return m_store(argv[1], (uint32_t)atoi(argv[3]), (uint32_t)atoi(argv[4]), atoi(argv[5]));
  if (argc >= 7 && strcmp(argv[2], "fetch") == 0)
    return m_fetch(argv[1], (uint32_t)atoi(argv[3]), (uint32_t)atoi(argv[4]), atoi(argv[5]),
                   (uint32_t)atoi(argv[6]), argc > 7 ? (uint32_t)atoi(argv[7]) : UINT32_MAX);
  if (argc == 5 && (strcmp(argv[2], "rawset") == 0 || strcmp(argv[2], "rawget") == 0))
    return m_raw(argv[1], argv[2], argv[3], (size_t)strtoull(argv[4], NULL, 10));
  fprintf(stderr, "usage: remote-client SOCKET store SEED NTOK BITS\n"
                  "       remote-client SOCKET fetch SEED NTOK BITS MIN [MAX]\n"
                  "       remote-client REDIS_SOCKET rawset|rawget KEY BYTES|REPEATS\n");
  return 2;
}
