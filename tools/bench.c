/* SPDX-License-Identifier: MIT */
/* kvsink-bench: request latency, put/get bandwidth through the shared
 * segment next to a plain memcpy of the same bytes, and what sharing a
 * prefix across processes saves. The workload is fitted to the pool
 * (--pool-size) and the segment the daemon grants; a row that fails stays
 * in the output with its error. Parts: bench_run.c, bench_share.c. */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tools/bench.h"
#include "tools/cli.h"

static const char prog[] = "kvsink-bench";
static const int bits_list[] = {16, 8, 4, 2}; /* 16: stored raw, the transport alone */
#define N_BITS ((int)(sizeof bits_list / sizeof bits_list[0]))
#define SHARE_BITS 4
/* of the pool: slab chunks are per slot size, so rows of different bit
 * widths cannot use every byte of it */
#define POOL_USE 0.7

static int progress_on, progress_n, progress_i;
static uint32_t tokens_asked; /* --tokens before fitting */

/* "[i/n] what" on a terminal's stderr, overwritten in place */
static void progress(const char *fmt, ...)
{
  if (!progress_on)
    return;
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "\r\033[K%s: [%d/%d] ", prog, ++progress_i, progress_n);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
}

static void progress_done(void)
{
  if (progress_on)
    fprintf(stderr, "\r\033[K");
}

static double memcpy_gbs(const kvs__bench_cfg *g)
{
  size_t n = 2 * kvs__bench_kvb(g);
  char *a = malloc(n), *b = malloc(n);
  if (!a || !b) {
    free(a);
    free(b);
    return 0;
  }
  memset(a, 1, n);
  memset(b, 2, n);
  double t0 = kvs__bench_now();
  for (int k = 0; k < g->reps; k++) {
    memcpy(b, a, n);
    a[k] = b[n - 1 - (size_t)k]; /* keep the copies observable */
  }
  double dt = kvs__bench_now() - t0;
  free(a);
  free(b);
  return (double)n * g->reps / dt / 1e9;
}

/* JSON string body: the messages are ours and the daemon's (ASCII), but
 * escape quotes, backslashes and control bytes anyway */
static void json_str(const char *s)
{
  putchar('"');
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\')
      printf("\\%c", ch);
    else if (ch < 0x20 || ch >= 0x7f)
      printf("\\u%04x", ch);
    else
      putchar(ch);
  }
  putchar('"');
}

/* Bytes the pool holds for n live sequences of T tokens x L layers at
 * bits (one sink row per block: the daemon's default Preserve-First-1
 * flags one per sequence, this errs on the safe side). */
static double footprint(const kvs__bench_cfg *g, const kvs_info *in, int bits, int n, uint32_t T)
{
  kvs_quant_settings s = {.group = in->group, .channels = g->H * g->D, .v_group = 0,
                          .k_bits = bits, .v_bits = bits, .outliers = in->outliers,
                          .dtype = KVS_DTYPE_F16};
  double bpe;
  if (kvs_bits_per_element(&s, 1, &bpe) < 0)
    bpe = 17.0; /* settings the helper does not know: assume raw plus */
  double blocks_t = (double)((T + in->group - 1) / in->group * in->group);
  return (double)n * g->L * blocks_t * 2.0 * s.channels * bpe / 8.0;
}

/* The largest (peak) footprint of the rows to run, at T tokens. */
static double peak(const kvs__bench_cfg *g, const kvs_info *in, int maxc, int bw, int share,
                   uint32_t T)
{
  double m = 0;
  for (int b = 0; bw && b < N_BITS; b++) {
    double f = footprint(g, in, bits_list[b], maxc, T);
    m = f > m ? f : m;
  }
  if (share) { /* the prefix plus each reader's own */
    double f = footprint(g, in, SHARE_BITS, maxc + 1, T);
    m = f > m ? f : m;
  }
  return m;
}

/* Connect once; fit T to the pool and the segment; 0, or KVS__EXIT_* after
 * saying why. */
static int fit(kvs__bench_cfg *g, size_t pool, int maxc, int bw, int share, int json)
{
  kvs_client *c;
  char b1[32], b2[32];
  /* a probe session: the group size and the segment the daemon grants */
  kvs_model m = {"kvsink-bench-bw", g->L, g->H, g->D, KVS_DTYPE_F16};
  kvs_options o;
  kvs_options_init(&o);
  o.k_bits = o.v_bits = 16;
  o.seg_size = 4 * kvs__bench_kvb(g);
  int r = kvs_connect(&c, g->sock, &m, &o);
  if (r < 0) {
    fprintf(stderr, "%s: connect to %s: %s\n", prog, g->sock ? g->sock : "the default socket",
            kvs_strerror(r));
    return KVS__EXIT_CONNECT;
  }
  kvs_info in = *kvs_get_info(c);
  kvs_close(c);
  if (!bw && !share)
    return 0; /* latency only: nothing to fit, the daemon answers */
  uint32_t G = in.group;
  FILE *note = json ? stderr : stdout;
  /* the segment: K, V and room to get them back */
  size_t per_tok = (size_t)g->L * g->H * g->D * 2 * 4;
  if ((size_t)g->T * per_tok > in.seg_size) {
    g->T = (uint32_t)(in.seg_size / per_tok);
    g->T = g->T >= G ? g->T / G * G : g->T;
  }
  if (pool && peak(g, &in, maxc, bw, share, g->T) > POOL_USE * (double)pool) {
    g->T = g->T / G * G; /* whole blocks: a tail would wait in 16-bit */
    while (g->T >= G && peak(g, &in, maxc, bw, share, g->T) > POOL_USE * (double)pool)
      g->T -= G;
    if (g->T < G) {
      fprintf(stderr,
              "%s: cannot fit: %d clients x %u layers need %s at one block (%u tokens) per put,\n"
              "  more than %.0f %% of the pool's %s: use fewer --clients or --layers\n",
              prog, maxc, g->L, kvs__cli_bytes((size_t)peak(g, &in, maxc, bw, share, G), b1, sizeof b1),
              G, POOL_USE * 100, kvs__cli_bytes(pool, b2, sizeof b2));
      return KVS__EXIT_FAIL;
    }
  }
  if (g->T == 0) {
    fprintf(stderr, "%s: cannot fit: the daemon grants a segment of %s, too small for one token\n"
            "  of %u layers (max_segment_size): use fewer --layers\n",
            prog, kvs__cli_bytes(in.seg_size, b1, sizeof b1), g->L);
    return KVS__EXIT_FAIL;
  }
  if (!pool)
    fprintf(note, "note: pool capacity unknown (pass --pool-size, as kvsinkctl stats shows it):\n"
            "      not fitted; the largest row needs about %s of pool\n",
            kvs__cli_bytes((size_t)peak(g, &in, maxc, bw, share, g->T), b1, sizeof b1));
  if (g->T != tokens_asked)
    fprintf(note, "note: --tokens %u fitted to %u (pool %s, segment %s, %d clients, %u-token blocks)\n",
            tokens_asked, g->T, pool ? kvs__cli_bytes(pool, b1, sizeof b1) : "unknown",
            kvs__cli_bytes(in.seg_size, b2, sizeof b2), maxc, G);
  return 0;
}

static void help(void)
{
  printf("usage: kvsink-bench [OPTION]...\n"
         "Measure a running kvsinkd: request latency, put/get bandwidth at 16, 8, 4 and 2\n"
         "bits with 1, 2, 4 ... N clients at once, and what sharing a prefix saves N\n"
         "processes.\n"
         "\n"
         "  -s, --socket PATH      the daemon's socket (default $KVSINK_SOCKET, else\n"
         "                         /run/kvsink/kvsinkd.sock)\n"
         "  -c, --clients N        most clients at once, 1..64 (default 4)\n"
         "  -t, --tokens N         tokens per put, 1..8192 (default 1024; fitted down)\n"
         "  -l, --layers N         layers per put, 1..256 (default 32)\n"
         "  -r, --reps N           puts per client and row (default 4)\n"
         "  -i, --iters N          latency round trips, >= 100 (default 20000)\n"
         "  -p, --pool-size SIZE   the daemon's pool (K/M/G): fit the workload to it\n"
         "  -m, --mode MODE        all, latency, bandwidth or share (default all)\n"
         "  -j, --json             one JSON object on stdout\n"
         "  -h, --help             this text\n"
         "  -V, --version          version\n"
         "\n"
         "Exit status: 0 every row measured, 1 a row failed (it is shown with its\n"
         "error), 2 bad command line, 3 the daemon could not be reached.\n"
         "See kvsink-bench(1).\n");
}

enum { M_LAT = 1, M_BW = 2, M_SHARE = 4 };

int main(int argc, char **argv)
{
  static const struct option lo[] = {
    {"socket", required_argument, 0, 's'}, {"clients", required_argument, 0, 'c'},
    {"json", no_argument, 0, 'j'},         {"iters", required_argument, 0, 'i'},
    {"tokens", required_argument, 0, 't'}, {"layers", required_argument, 0, 'l'},
    {"reps", required_argument, 0, 'r'},   {"pool-size", required_argument, 0, 'p'},
    {"mode", required_argument, 0, 'm'},   {"help", no_argument, 0, 'h'},
    {"version", no_argument, 0, 'V'},      {0, 0, 0, 0}};
  kvs__bench_cfg g = {NULL, 32, 8, 128, 1024, 4};
  int json = 0, mode = M_LAT | M_BW | M_SHARE, ch;
  long maxc = 4, iters = 20000, v;
  size_t pool = 0;
  argv[0] = (char *)prog; /* getopt names the program in its messages */
  while ((ch = getopt_long(argc, argv, "s:c:ji:t:l:r:p:m:hV", lo, NULL)) != -1) {
    switch (ch) {
    case 's': g.sock = optarg; break;
    case 'j': json = 1; break;
    case 'c':
      if (kvs__cli_long(optarg, 1, 64, &maxc))
        return kvs__cli_usage_error(prog, "--clients wants 1..64, not '%s'", optarg);
      break;
    case 'i':
      if (kvs__cli_long(optarg, 100, 100000000, &iters))
        return kvs__cli_usage_error(prog, "--iters wants 100 or more, not '%s'", optarg);
      break;
    case 't':
    case 'l':
    case 'r':
      if (kvs__cli_long(optarg, 1, ch == 't' ? 8192 : ch == 'l' ? 256 : 1000, &v))
        return kvs__cli_usage_error(prog, "--%s wants 1..%d, not '%s'",
                                    ch == 't' ? "tokens" : ch == 'l' ? "layers" : "reps",
                                    ch == 't' ? 8192 : ch == 'l' ? 256 : 1000, optarg);
      if (ch == 't')
        g.T = (uint32_t)v;
      else if (ch == 'l')
        g.L = (uint32_t)v;
      else
        g.reps = (int)v;
      break;
    case 'p':
      if (kvs__cli_size(optarg, &pool) || pool < (1u << 20))
        return kvs__cli_usage_error(prog, "--pool-size wants bytes >= 1M (K/M/G), not '%s'", optarg);
      break;
    case 'm':
      if (strcmp(optarg, "all") == 0) mode = M_LAT | M_BW | M_SHARE;
      else if (strcmp(optarg, "latency") == 0) mode = M_LAT;
      else if (strcmp(optarg, "bandwidth") == 0) mode = M_BW;
      else if (strcmp(optarg, "share") == 0) mode = M_SHARE;
      else return kvs__cli_usage_error(prog, "unknown --mode '%s' (all, latency, bandwidth, share)", optarg);
      break;
    case 'h': help(); return KVS__EXIT_OK;
    case 'V': kvs__cli_version(prog); return KVS__EXIT_OK;
    default: return kvs__cli_usage_error(prog, NULL); /* getopt named the option */
    }
  }
  if (optind < argc)
    return kvs__cli_usage_error(prog, "unexpected argument '%s'", argv[optind]);
  tokens_asked = g.T;
  /* a probe session first: an unreachable daemon is told apart (exit 3) */
  int r = fit(&g, pool, (int)maxc, mode & M_BW, mode & M_SHARE, json);
  if (r)
    return r;
  progress_on = isatty(STDERR_FILENO);
  int nrows = 0;
  for (long n = 1; n <= maxc; n *= 2)
    nrows += N_BITS;
  progress_n = !!(mode & M_LAT) + (mode & M_BW ? nrows : 0) + !!(mode & M_SHARE);

  int fail = 0;
  kvs__bench_err e = {0, ""};
  if (json)
    printf("{\"version\":\"%s\",\"pool_size\":%zu,"
           "\"shape\":{\"layers\":%u,\"kv_heads\":%u,\"head_dim\":%u,\"tokens\":%u,"
           "\"tokens_asked\":%u,\"reps\":%d}",
           kvs_version(), pool, g.L, g.H, g.D, g.T, tokens_asked, g.reps);
  else
    printf("shape: %u layers x %u kv heads x %u dim, %u tokens per put, %d reps\n", g.L, g.H,
           g.D, g.T, g.reps);

  if (mode & M_LAT) {
    kvs__bench_lat ping = {0, 0}, pg = {0, 0};
    progress("latency, %ld round trips", iters);
    r = kvs__bench_latency(&g, (int)iters, &ping, &pg, &e);
    fail |= r < 0;
    if (json) {
      printf(",\"iters\":%ld,\"latency\":", iters);
      if (r < 0) {
        printf("{\"error\":");
        json_str(e.msg);
        printf("}");
      } else {
        printf("{\"ping_us\":{\"median\":%.2f,\"p99\":%.2f},"
               "\"put_get_1tok_us\":{\"median\":%.2f,\"p99\":%.2f}}",
               ping.med_us, ping.p99_us, pg.med_us, pg.p99_us);
      }
    } else if (r < 0) {
      printf("latency: FAILED: %s\n", e.msg);
    } else {
      printf("latency (%ld iterations)\n  ping             median %8.2f us  p99 %8.2f us\n"
             "  put+get 1 token  median %8.2f us  p99 %8.2f us\n",
             iters, ping.med_us, ping.p99_us, pg.med_us, pg.p99_us);
    }
    fflush(stdout);
  }

  if (mode & M_BW) {
    double mc = memcpy_gbs(&g);
    if (json)
      printf(",\"memcpy_gbs\":%.3f,\"bandwidth\":[", mc);
    else
      printf("bandwidth of 16-bit K+V, memcpy %.2f GB/s\n", mc);
    int first = 1;
    for (int n = 1; n <= maxc; n *= 2) {
      for (int b = 0; b < N_BITS; b++) {
        kvs__bench_bw bw = {0, 0};
        progress("bandwidth, %d client%s at %d bits", n, n > 1 ? "s" : "", bits_list[b]);
        r = kvs__bench_bandwidth(&g, n, bits_list[b], &bw, &e);
        fail |= r < 0;
        if (json) {
          printf("%s{\"clients\":%d,\"bits\":%d,", first ? "" : ",", n, bits_list[b]);
          if (r < 0) {
            printf("\"error\":");
            json_str(e.msg);
            printf("}");
          } else {
            printf("\"put_gbs\":%.3f,\"get_gbs\":%.3f,\"put_vs_memcpy\":%.4f,"
                   "\"get_vs_memcpy\":%.4f}",
                   bw.put_gbs, bw.get_gbs, bw.put_gbs / mc, bw.get_gbs / mc);
          }
        } else if (r < 0) {
          printf("  %d client%s %2d-bit  FAILED: %s\n", n, n > 1 ? "s" : " ", bits_list[b], e.msg);
        } else {
          printf("  %d client%s %2d-bit  put %7.3f GB/s (%.3fx memcpy)  get %7.3f GB/s (%.3fx memcpy)\n",
                 n, n > 1 ? "s" : " ", bits_list[b], bw.put_gbs, bw.put_gbs / mc, bw.get_gbs,
                 bw.get_gbs / mc);
        }
        fflush(stdout);
        first = 0;
      }
    }
    if (json)
      printf("]");
  }

  if (mode & M_SHARE) {
    kvs__bench_share s = {0, 0, 0, 0, 0};
    progress("sharing, 1 process stores, %ld look up", maxc);
    r = kvs__bench_sharing(&g, (int)maxc, SHARE_BITS, &s, &e);
    fail |= r < 0;
    double hit = s.wanted ? (double)s.found / s.wanted : 0;
    if (json) {
      printf(",\"sharing\":{\"readers\":%ld,\"bits\":%d,", maxc, SHARE_BITS);
      if (r < 0) {
        printf("\"error\":");
        json_str(e.msg);
        printf("}");
      } else {
        printf("\"hit_rate\":%.4f,\"store_ms\":%.3f,\"lookup_get_ms\":%.3f,\"own_put_ms\":%.3f,"
               "\"saved_ms\":%.3f}",
               hit, s.store_ms, s.fetch_ms, s.own_ms, s.own_ms - s.fetch_ms);
      }
    } else if (r < 0) {
      printf("sharing: FAILED: %s\n", e.msg);
    } else {
      printf("sharing a %u-token prefix at %d bits: 1 process stores it (%.2f ms), %ld look it up\n"
             "  hit rate %.1f %%; lookup + get %.2f ms vs storing it themselves %.2f ms:\n"
             "  %.2f ms saved per process (%.0f %%), before the prefill it also saves\n",
             g.T, SHARE_BITS, s.store_ms, maxc, 100.0 * hit, s.fetch_ms, s.own_ms,
             s.own_ms - s.fetch_ms, s.own_ms > 0 ? 100.0 * (s.own_ms - s.fetch_ms) / s.own_ms : 0);
    }
  }
  if (json)
    printf("}\n");
  progress_done();
  return fail ? KVS__EXIT_FAIL : KVS__EXIT_OK;
}
