/* SPDX-License-Identifier: MIT */
/* soak: a private kvsinkd with a pool small enough to evict, 16 client
 * processes doing random put / lookup (with and without bind) / get /
 * release, and a killer that SIGKILLs a worker while it is inside a put or
 * a get, then starts a new one. Every value read back is checked against
 * what any writer of those tokens stored: bit-exact at 16 bits, else within
 * the quantizer's error bound (kernels/quant.h). The daemon's RSS is
 * sampled from /proc once a second and must stay bounded.
 *   soak [--seconds N] [--workers N] [--pool SIZE]
 * Exit 0 when nothing unexpected happened; the figures go to stdout. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <kvsink.h>
#include "kernels/half.h"
#include "tests/lib/daemon.h"

enum { L = 4, H = 2, D = 64, C = H * D, NDOCS = 48, MAXG = 8, MAXW = 64, MAXRSS = 4096 };
enum { P_IDLE, P_PUT, P_GET };
enum { O_PUT, O_GET, O_LOOKUP, O_RELEASE, O_N };

typedef struct slot {
  _Atomic int phase;                /* what the worker is inside of now */
  _Atomic long ops[O_N], nospc, unexpected, values, hits;
  pid_t pid;
  int bits;
} slot;

static struct shared {
  _Atomic int stop;
  slot s[MAXW];
} *sh;

static const char *sock;

static double now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t mix(uint64_t x)
{
  x ^= x >> 33; x *= 0xff51afd7ed558ccdULL; x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL; x ^= x >> 33;
  return x;
}

/* The K/V element of a document at (layer, position, channel): a function
 * of the tokens' identity, so every writer of a prefix stores the same
 * data and any reader can check it. fp16 in [-2, 2), no NaN/Inf. */
static uint16_t val(uint32_t doc, uint32_t l, uint32_t pos, uint32_t i, uint32_t kv)
{
  uint64_t x = mix(((uint64_t)doc << 44) ^ ((uint64_t)l << 36) ^ ((uint64_t)pos << 12) ^ (i << 1) ^ kv);
  return (uint16_t)(((x & 1) << 15) | ((13 + (x >> 1) % 3) << 10) | ((x >> 8) & 0x3ff));
}

static uint32_t tok(uint32_t doc, uint32_t pos) { return doc * 100003u + pos * 7u + 1; }

static _Noreturn void wfail(slot *me, const char *fmt, ...)
  __attribute__((format(printf, 2, 3)));
static _Noreturn void wfail(slot *me, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "soak worker %d (%d bits): ", (int)getpid(), me->bits);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  atomic_fetch_add(&me->unexpected, 1);
  exit(1);
}

/* Error bound of one dequantized element (kernels/quant.h): codes are
 * round((x - min) / scale) with scale = range / (2^b - 1), so half a step;
 * plus the fp16 rounding of scale (relative 2^-11, times up to 2^b - 1
 * steps: range * 2^-11), of min (|min| * 2^-11) and of the result
 * (|x| * 2^-11). M bounds |min| and |x|. */
static double bound(double lo, double hi, int bits)
{
  double range = hi - lo, m = fmax(fabs(lo), fabs(hi));
  return 0.5 * range / ((1 << bits) - 1) + (range + 2 * m) * ldexp(1, -11) + 1e-6;
}

/* Check K (at seg) and V (at seg + kvb) of tokens [start, start+n) of doc,
 * all layers, as a get wrote them. */
static void check(slot *me, const uint16_t *seg, size_t kvb, uint32_t doc, uint32_t start,
                  uint32_t n, uint32_t g)
{
  const uint16_t *kv[2] = {seg, seg + kvb / 2};
  for (uint32_t l = 0; l < L; l++)
    for (uint32_t t = 0; t < n; t++) {
      uint32_t pos = start + t, g0 = pos / g * g;
      double vlo = INFINITY, vhi = -INFINITY;
      if (me->bits != 16)
        for (uint32_t i = 0; i < C; i++) { /* V: per row, over groups of channels */
          double x = kvs__f16_to_f32(val(doc, l, pos, i, 1));
          vlo = fmin(vlo, x); vhi = fmax(vhi, x);
        }
      for (uint32_t i = 0; i < C; i++)
        for (uint32_t k = 0; k < 2; k++) {
          uint16_t want = val(doc, l, pos, i, k), got = kv[k][((size_t)l * n + t) * C + i];
          if (me->bits == 16) {
            if (got != want)
              wfail(me, "doc %u layer %u pos %u ch %u %c: 0x%04x, stored 0x%04x", doc, l, pos, i,
                    "KV"[k], got, want);
            continue;
          }
          double lo = vlo, hi = vhi;
          if (k == 0) { /* K: per channel over the block's g rows */
            lo = INFINITY; hi = -INFINITY;
            for (uint32_t r = g0; r < g0 + g; r++) {
              double x = kvs__f16_to_f32(val(doc, l, r, i, 0));
              lo = fmin(lo, x); hi = fmax(hi, x);
            }
          }
          double w = kvs__f16_to_f32(want), x = kvs__f16_to_f32(got), b = bound(lo, hi, me->bits);
          if (!(fabs(x - w) <= b))
            wfail(me, "doc %u layer %u pos %u ch %u %c: %g, stored %g, bound %g", doc, l, pos, i,
                  "KV"[k], x, w, b);
        }
    }
  atomic_fetch_add(&me->values, (long)n * L * C * 2);
}

/* Write K and V of tokens [start, start+n) of doc into the segment. */
static size_t fill(kvs_client *c, uint32_t doc, uint32_t start, uint32_t n, uint32_t *tokens)
{
  size_t kvb = kvs_kv_bytes(c, n, 0, L);
  uint16_t *seg = kvs_segment(c, NULL);
  for (uint32_t l = 0; l < L; l++)
    for (uint32_t t = 0; t < n; t++)
      for (uint32_t i = 0; i < C; i++) {
        size_t j = ((size_t)l * n + t) * C + i;
        seg[j] = val(doc, l, start + t, i, 0);
        seg[kvb / 2 + j] = val(doc, l, start + t, i, 1);
      }
  for (uint32_t t = 0; t < n; t++)
    tokens[t] = tok(doc, start + t);
  return kvb;
}

/* get [start, start+n) of seq and check it as doc's data. */
static void get_check(slot *me, kvs_client *c, uint64_t seq, uint32_t doc, uint32_t start, uint32_t n,
                      uint32_t g)
{
  size_t kvb = kvs_kv_bytes(c, n, 0, L);
  atomic_store(&me->phase, P_GET);
  int r = kvs_get(c, seq, start, n, 0, L, 0, kvb);
  atomic_store(&me->phase, P_IDLE);
  if (r < 0)
    wfail(me, "get seq %llu [%u, +%u): %s (%s)", (unsigned long long)seq, start, n, kvs_strerror(r),
          kvs_last_error(c));
  atomic_fetch_add(&me->ops[O_GET], 1);
  check(me, kvs_segment(c, NULL), kvb, doc, start, n, g);
}

static void worker(slot *me, uint64_t seed)
{
  kvs_model m = {"soak", L, H, D, KVS_DTYPE_F16};
  kvs_options o;
  kvs_client *c;
  kvs_options_init(&o);
  o.k_bits = o.v_bits = me->bits;
  o.policy = KVS_POLICY_NONE; /* no sink rows, no outliers: the plain bound applies */
  o.pfn = 0;
  o.outliers = 0;
  o.seg_size = 1u << 20;
  int r = kvs_connect(&c, sock, &m, &o);
  if (r < 0)
    wfail(me, "connect: %s", kvs_strerror(r));
  const uint32_t g = kvs_get_info(c)->group;
  if (kvs_get_info(c)->k_bits != me->bits)
    wfail(me, "daemon chose %d bits", kvs_get_info(c)->k_bits);
  uint32_t tokens[MAXG * 64];
  if (g > 64)
    wfail(me, "group %u too large for this test", g);
  uint64_t next = 1, own = 0, rng = seed;
  uint32_t doc = 0, len = 0;
  while (!atomic_load(&sh->stop)) {
    rng = mix(rng + 0x9e3779b97f4a7c15ULL);
    unsigned pick = rng % 100;
    if (pick < 35) { /* put: append 1-3 groups to the own seq */
      uint32_t k = 1 + (uint32_t)(rng >> 8) % 3;
      if (own && len + k * g > MAXG * g) {
        if ((r = kvs_release(c, own)) < 0)
          wfail(me, "release: %s", kvs_strerror(r));
        atomic_fetch_add(&me->ops[O_RELEASE], 1);
        own = 0;
      }
      if (!own) {
        own = next++;
        doc = (uint32_t)(rng >> 16) % NDOCS;
        len = 0;
      }
      size_t kvb = fill(c, doc, len, k * g, tokens);
      kvs_put_args a = {.seq = own, .start = len, .tokens = tokens, .n_tokens = k * g,
                        .layer_begin = 0, .layer_end = L, .k_off = 0, .v_off = kvb};
      atomic_store(&me->phase, P_PUT);
      r = kvs_put(c, &a, NULL);
      atomic_store(&me->phase, P_IDLE);
      if (r == 0) {
        len += k * g;
        atomic_fetch_add(&me->ops[O_PUT], 1);
      } else if (r == -ENOSPC) { /* pool full of pinned blocks: nothing stored */
        atomic_fetch_add(&me->nospc, 1);
      } else {
        wfail(me, "put seq %llu at %u: %s (%s)", (unsigned long long)own, len, kvs_strerror(r),
              kvs_last_error(c));
      }
    } else if (pick < 60) { /* get part of the own seq */
      if (!own || !len)
        continue;
      uint32_t s0 = (uint32_t)(rng >> 8) % len, n = 1 + (uint32_t)(rng >> 24) % (len - s0);
      get_check(me, c, own, doc, s0, n, g);
    } else if (pick < 90) { /* lookup another prefix, maybe bind and read it */
      uint32_t d2 = (uint32_t)(rng >> 8) % NDOCS, n = (1 + (uint32_t)(rng >> 16) % MAXG) * g;
      int bind = (rng >> 30) & 1;
      for (uint32_t t = 0; t < n; t++)
        tokens[t] = tok(d2, t);
      uint64_t ls = next++;
      int f = kvs_lookup(c, ls, tokens, n, bind);
      if (f < 0 || f % (int)g || f > (int)n)
        wfail(me, "lookup of %u tokens: %d (%s)", n, f, f < 0 ? kvs_strerror(f) : "not whole blocks");
      atomic_fetch_add(&me->ops[O_LOOKUP], 1);
      if (f > 0)
        atomic_fetch_add(&me->hits, 1);
      if (bind) {
        if (f > 0)
          get_check(me, c, ls, d2, 0, (uint32_t)f, g);
        r = kvs_release(c, ls);
        if (r < 0 && !(f == 0 && r == -ENOENT))
          wfail(me, "release of a bound seq: %s", kvs_strerror(r));
      }
    } else if (own) { /* release the own seq */
      if ((r = kvs_release(c, own)) < 0)
        wfail(me, "release: %s", kvs_strerror(r));
      atomic_fetch_add(&me->ops[O_RELEASE], 1);
      own = 0;
    }
  }
  kvs_close(c);
  exit(0);
}

static pid_t spawn(int w, uint64_t seed)
{
  slot *s = &sh->s[w];
  static const int bits[] = {16, 4, 2, 8};
  s->bits = bits[w % 4];
  atomic_store(&s->phase, P_IDLE);
  fflush(NULL);
  pid_t p = fork();
  if (p == 0)
    worker(s, seed);
  s->pid = p;
  return p;
}

/* The daemon's eviction count, from kvsinkctl stats --json (-1 unknown). */
static long evictions(const char *path)
{
  const char *top = getenv("top_builddir");
  char cmd[1024], buf[8192];
  snprintf(cmd, sizeof cmd, "'%s/tools/kvsinkctl' --socket '%s' stats --json", top && *top ? top : KVSTEST_BUILDDIR, path);
  FILE *f = popen(cmd, "r");
  if (!f)
    return -1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  buf[n] = 0;
  if (pclose(f) != 0)
    return -1;
  const char *p = strstr(buf, "\"evictions\"");
  if (!p)
    return -1;
  p += strlen("\"evictions\"");
  while (*p == ':' || *p == ' ')
    p++;
  return strtol(p, NULL, 10);
}

static uint64_t parse_size(const char *v)
{
  char *e;
  uint64_t x = strtoull(v, &e, 10);
  if (*e == 'M') x <<= 20;
  if (*e == 'K') x <<= 10;
  return x;
}

int main(int argc, char **argv)
{
  int seconds = 60, nw = 16;
  const char *pool = "16M";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--seconds")) seconds = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--workers")) nw = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--pool")) pool = argv[i + 1];
    else { fprintf(stderr, "usage: soak [--seconds N] [--workers N] [--pool SIZE]\n"); return 2; }
  }
  if (nw < 2 || nw > MAXW || seconds < 3 || parse_size(pool) < (1u << 20)) {
    fprintf(stderr, "soak: bad arguments\n");
    return 2;
  }
  sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (sh == MAP_FAILED)
    return 99;
  memset(sh, 0, sizeof *sh);
  kvstest_daemon d;
  const char *args[] = {"--pool-size", pool, NULL};
  if (kvstest_daemon_start(&d, NULL, args) < 0)
    return 99;
  sock = d.sock;
  printf("soak: %d workers, %d s, pool %s, bits 16/4/2/8, daemon pid %d\n", nw, seconds, pool, (int)d.pid);

  int fails = 0;
  uint64_t rng = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
  printf("soak: seed %llu\n", (unsigned long long)rng);
  for (int w = 0; w < nw; w++)
    spawn(w, rng + (uint64_t)w);
  long rss[MAXRSS];
  int nrss = 0;
  long kills[3] = {0, 0, 0}, respawned = 0;
  double t0 = now(), next_rss = t0, end = t0 + seconds;
  while (now() < end) {
    if (now() >= next_rss && nrss < MAXRSS) {
      rss[nrss++] = kvstest_daemon_rss_kb(&d);
      next_rss += 1.0;
    }
    /* a victim, alternately inside a put and inside a get (up to 1 s to catch it) */
    rng = mix(rng + 1);
    int w = (int)(rng % (uint64_t)nw), want = (kills[P_PUT] + kills[P_GET]) % 2 ? P_GET : P_PUT;
    slot *s = &sh->s[w];
    double give_up = now() + 1.0;
    int ph;
    while ((ph = atomic_load(&s->phase)) != want && now() < give_up) {
      int st;
      if (waitpid(s->pid, &st, WNOHANG) == s->pid) { /* a worker that failed on its own */
        fprintf(stderr, "soak: worker %d ended with status %d\n", (int)s->pid, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
        fails++;
        spawn(w, rng);
        break;
      }
      usleep(20);
    }
    if (ph != want)
      continue;
    kill(s->pid, SIGKILL);
    kills[want]++;
    int st;
    waitpid(s->pid, &st, 0);
    if (!(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL)) {
      fprintf(stderr, "soak: worker %d ended with status %d before the kill\n", (int)s->pid,
              WIFEXITED(st) ? WEXITSTATUS(st) : -1);
      fails++;
    }
    spawn(w, rng ^ 0x5555);
    respawned++;
    usleep(100000);
  }
  atomic_store(&sh->stop, 1);
  for (int w = 0; w < nw; w++) {
    int st;
    waitpid(sh->s[w].pid, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      fprintf(stderr, "soak: worker %d ended with status %d\n", (int)sh->s[w].pid,
              WIFEXITED(st) ? WEXITSTATUS(st) : -1);
      fails++;
    }
  }
  double el = now() - t0;
  if (nrss < MAXRSS)
    rss[nrss++] = kvstest_daemon_rss_kb(&d);

  long ops[O_N] = {0}, nospc = 0, unexpected = 0, values = 0, hits = 0;
  for (int w = 0; w < nw; w++) {
    for (int k = 0; k < O_N; k++)
      ops[k] += atomic_load(&sh->s[w].ops[k]);
    nospc += atomic_load(&sh->s[w].nospc);
    unexpected += atomic_load(&sh->s[w].unexpected);
    values += atomic_load(&sh->s[w].values);
    hits += atomic_load(&sh->s[w].hits);
  }
  long total = ops[O_PUT] + ops[O_GET] + ops[O_LOOKUP] + ops[O_RELEASE] + nospc;
  printf("soak: %.1f s, %ld requests (%.0f/s): put %ld (-ENOSPC %ld), get %ld, lookup %ld (%ld found data), release %ld\n",
         el, total, total / el, ops[O_PUT], nospc, ops[O_GET], ops[O_LOOKUP], hits, ops[O_RELEASE]);
  printf("soak: %ld values checked, %ld unexpected errors, %ld workers failed\n", values, unexpected, (long)fails);
  printf("soak: SIGKILLed %ld mid-put, %ld mid-get (%ld workers restarted)\n", kills[P_PUT], kills[P_GET], respawned);
  printf("soak: daemon RSS KiB, one sample a second:");
  for (int i = 0; i < nrss; i++)
    printf(" %ld", rss[i]);
  printf("\n");

  /* the daemon is still whole: a fresh client is served */
  kvs_model m = {"soak", L, H, D, KVS_DTYPE_F16};
  kvs_client *c;
  int r = kvs_connect(&c, sock, &m, NULL);
  if (r < 0 || kvs_ping(c) != 0) {
    fprintf(stderr, "soak: FAIL: daemon does not serve after the run: %s\n", kvs_strerror(r));
    fails++;
  }
  if (r == 0)
    kvs_close(c);

  /* RSS after warm-up (the first third) must not grow: the peak of the
   * last third within 10 % + 8 MiB of the peak of the middle third */
  long mid = 0, last = 0;
  for (int i = 0; i < nrss; i++) {
    if (rss[i] < 0) { fprintf(stderr, "soak: FAIL: no RSS sample\n"); fails++; break; }
    if (i >= nrss / 3 && i < 2 * nrss / 3) mid = rss[i] > mid ? rss[i] : mid;
    if (i >= 2 * nrss / 3) last = rss[i] > last ? rss[i] : last;
  }
  printf("soak: RSS peak middle third %ld KiB, last third %ld KiB\n", mid, last);
  if (nrss < 3 || last > mid + mid / 10 + 8192) {
    fprintf(stderr, "soak: FAIL: daemon RSS grew after warm-up (%ld -> %ld KiB)\n", mid, last);
    fails++;
  }
  if (unexpected) { fprintf(stderr, "soak: FAIL: %ld unexpected errors\n", unexpected); fails++; }
  if (!kills[P_PUT] || !kills[P_GET]) {
    fprintf(stderr, "soak: FAIL: no worker was killed mid-put and mid-get\n");
    fails++;
  }
  if (!ops[O_PUT] || !ops[O_GET] || !hits || !values) {
    fprintf(stderr, "soak: FAIL: the run did not exercise put, get and lookup hits\n");
    fails++;
  }
  long ev = evictions(sock);
  printf("soak: daemon counted %ld evictions\n", ev);
  if (ev <= 0) {
    fprintf(stderr, "soak: FAIL: the pool never evicted: make it smaller\n");
    fails++;
  }
  int drc = kvstest_daemon_stop(&d, 60);
  if (drc != 0) {
    fprintf(stderr, "soak: FAIL: kvsinkd exited with %d after SIGTERM\n", drc);
    fails++;
  }
  printf("soak: %s\n", fails ? "FAILED" : "ok");
  return fails ? 1 : 0;
}
