/* SPDX-License-Identifier: MIT */
/* kvsink-demo: what kvsink does, in one run against a daemon.
 * 1. Store a synthetic KV sequence at 2, 3, 4 and 8 bits under policies
 *    NONE, PFN and (when the daemon has a sink profile for the model
 *    "kvsink-demo") KVSINK, read it back, print the reconstruction error
 *    and the compression (stored bytes / raw 16-bit bytes, from the
 *    quantizer's block layout and the sinks the daemon flagged).
 * 2. Sharing: this process stores a prefix, a second process (fork, its
 *    own connection) looks it up, finds it and reads back the same data.
 * The planted tokens 0 and 37 carry a massive value (the activation
 * summary marks them), so KVSINK keeps both 16-bit; demo.sh installs the
 * profile. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <kvsink.h>
#include "tools/cli.h"

enum { LAYERS = 4, HEADS = 8, DIM = 64, TOKENS = 256 };

static const char prog[] = "kvsink-demo";
static const char *sock;
static int no_profile;  /* the daemon had no profile: KVSINK acted as PFN */
static int unreachable; /* connect failed: exit KVS__EXIT_CONNECT */

/* Deterministic values: a hash of (layer, token, index, K/V), roughly
 * uniform in [-1, 1], with planted sink tokens 0 and 37 much larger. */
static float synth(uint32_t l, uint32_t t, uint32_t i, uint32_t kv)
{
  uint64_t x = ((uint64_t)l << 48) ^ ((uint64_t)t << 24) ^ ((uint64_t)i << 1) ^ kv;
  x ^= x >> 33; x *= 0xff51afd7ed558ccdULL; x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL; x ^= x >> 33;
  float v = (float)(x >> 40) / (float)(1u << 23) - 1.0f;
  if (t == 0 || t == 37)
    v *= 40.0f;
  return v;
}

static double now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

struct err { double rel_rms, max_abs; };

static struct err compare(const uint16_t *ref, const uint16_t *got, size_t n)
{
  double se = 0, ss = 0, mx = 0;
  float a[256], b[256];
  for (size_t i0 = 0; i0 < n; i0 += 256) {
    size_t m = n - i0 < 256 ? n - i0 : 256;
    kvs_f16_to_f32(a, ref + i0, m);
    kvs_f16_to_f32(b, got + i0, m);
    for (size_t i = 0; i < m; i++) {
      double d = fabs((double)a[i] - (double)b[i]);
      se += d * d;
      ss += (double)a[i] * a[i];
      if (d > mx || d != d)
        mx = d;
    }
  }
  struct err e = {ss > 0 ? sqrt(se / ss) : 0, mx};
  return e;
}

static int connect_demo(kvs_client **c, int bits, kvs_policy pol)
{
  kvs_model m = {"kvsink-demo", LAYERS, HEADS, DIM, KVS_DTYPE_F16};
  kvs_options o;
  kvs_options_init(&o);
  o.k_bits = o.v_bits = bits;
  o.policy = pol;
  int r = kvs_connect(c, sock, &m, &o);
  if (r < 0) {
    fprintf(stderr, "%s: connect to %s (%d bits): %s\n", prog,
            sock ? sock : "the default socket", bits, kvs_strerror(r));
    if (r != KVS_EVERSION && r != KVS_EMODEL)
      unreachable = 1;
  }
  return r;
}

/* K then V of the synthetic sequence into the segment at 0 and kvb;
 * token ids base, base + 7, ... */
static void fill(uint8_t *seg, size_t kvb, uint32_t *tokens, uint32_t base)
{
  uint16_t *k = (uint16_t *)seg, *v = (uint16_t *)(seg + kvb);
  size_t per_tok = (size_t)HEADS * DIM;
  float fk[HEADS * DIM], fv[HEADS * DIM];
  for (uint32_t l = 0; l < LAYERS; l++)
    for (uint32_t t = 0; t < TOKENS; t++) {
      for (uint32_t i = 0; i < per_tok; i++) {
        fk[i] = synth(l, t, i, 0);
        fv[i] = synth(l, t, i, 1);
      }
      size_t at = ((size_t)l * TOKENS + t) * per_tok;
      kvs_f16_from_f32(k + at, fk, per_tok);
      kvs_f16_from_f32(v + at, fv, per_tok);
    }
  for (uint32_t t = 0; t < TOKENS; t++)
    tokens[t] = base + t * 7;
}

/* Stored / raw bytes of the put: quantized tokens cost what the block
 * layout says for their sink rows, the tail waits in 16-bit. */
static double compression(const kvs_info *in, const kvs_put_result *pr)
{
  kvs_quant_settings s = {.group = in->group, .channels = HEADS * DIM, .v_group = 0,
                          .k_bits = in->k_bits, .v_bits = in->v_bits,
                          .outliers = in->outliers, .dtype = KVS_DTYPE_F16};
  double b0, b1;
  if (kvs_bits_per_element(&s, 0, &b0) < 0 || kvs_bits_per_element(&s, 1, &b1) < 0)
    return NAN;
  double blocks = (double)pr->quantized / in->group;
  /* cost is linear in sink rows per block: spread the flagged ones */
  double bits_q = blocks > 0 ? b0 + (b1 - b0) * (double)pr->sinks / blocks : 0;
  double stored = bits_q * pr->quantized + 16.0 * (TOKENS - pr->quantized);
  return stored / (16.0 * TOKENS);
}

struct row { struct err k, v; double ratio; uint32_t sinks; };

static int run(int bits, kvs_policy pol, struct row *out)
{
  kvs_client *c;
  int r = connect_demo(&c, bits, pol);
  if (r < 0)
    return r;
  size_t sz, kvb = kvs_kv_bytes(c, TOKENS, 0, LAYERS);
  uint8_t *seg = kvs_segment(c, &sz);
  const kvs_info *in = kvs_get_info(c);
  uint32_t nch = in->n_sink_channels, tokens[TOKENS];
  if (sz < 4 * kvb + (size_t)TOKENS * nch * sizeof(float)) {
    fprintf(stderr, "%s: segment of %zu bytes too small\n", prog, sz);
    kvs_close(c);
    return -ENOSPC;
  }
  fill(seg, kvb, tokens, 1000);
  kvs_put_args a = {.seq = 1, .start = 0, .tokens = tokens, .n_tokens = TOKENS,
                    .layer_begin = 0, .layer_end = LAYERS, .k_off = 0, .v_off = kvb};
  if (pol == KVS_POLICY_KVSINK && !in->has_profile)
    no_profile = 1;
  if (pol == KVS_POLICY_KVSINK && in->has_profile) {
    /* summary after layer l_E on the profile's channels: the sink tokens
     * carry a massive activation, the others an ordinary one */
    float *act = (float *)(seg + 4 * kvb);
    for (uint32_t t = 0; t < TOKENS; t++)
      for (uint32_t j = 0; j < nch; j++)
        act[(size_t)t * nch + j] = (t == 0 || t == 37) ? 500.0f : 1.0f + (float)(t % 5);
    a.act_off = 4 * kvb;
    a.act_channels = nch;
  }
  kvs_put_result pr;
  r = kvs_put(c, &a, &pr);
  if (r == 0)
    r = kvs_get(c, 1, 0, TOKENS, 0, LAYERS, 2 * kvb, 3 * kvb);
  if (r < 0) {
    fprintf(stderr, "%s: %d bits: %s (%s)\n", prog, bits, kvs_strerror(r), kvs_last_error(c));
  } else {
    size_t n = kvb / 2;
    out->k = compare((uint16_t *)seg, (uint16_t *)(seg + 2 * kvb), n);
    out->v = compare((uint16_t *)(seg + kvb), (uint16_t *)(seg + 3 * kvb), n);
    out->ratio = compression(in, &pr);
    out->sinks = pr.sinks;
    r = kvs_release(c, 1);
  }
  kvs_close(c);
  return r;
}

/* The second process: its own connection, same model and settings; look
 * the prefix up (binding it), read it, compare with what the first one
 * read back. Exit status 0 only when every token was found and equal. */
static int reader(const uint32_t *tokens, const uint16_t *expect, size_t kvb)
{
  kvs_client *c;
  if (connect_demo(&c, 4, KVS_POLICY_PFN) < 0)
    return 1;
  size_t sz;
  uint8_t *seg = kvs_segment(c, &sz);
  double t0 = now();
  int cached = kvs_lookup(c, 7, tokens, TOKENS, 1), r = cached;
  if (cached > 0)
    r = kvs_get(c, 7, 0, (uint32_t)cached, 0, LAYERS, 0, kvb);
  double dt = now() - t0;
  if (r < 0) {
    fprintf(stderr, "%s: second process: %s (%s)\n", prog, kvs_strerror(r), kvs_last_error(c));
    kvs_close(c);
    return 1;
  }
  int same = cached == TOKENS && memcmp(seg, expect, kvb) == 0 &&
             memcmp(seg + kvb, (const uint8_t *)expect + kvb, kvb) == 0;
  printf("process %ld (second): lookup found %d of %d tokens (hit rate %.0f %%), "
         "lookup + get %.2f ms, data %s\n",
         (long)getpid(), cached, TOKENS, 100.0 * cached / TOKENS, dt * 1e3,
         same ? "identical to what the first process read" : "DIFFERENT");
  fflush(stdout);
  kvs_release(c, 7);
  kvs_close(c);
  return same ? 0 : 1;
}

/* This process stores a prefix; a forked one finds it. */
static int share(void)
{
  kvs_client *c;
  if (connect_demo(&c, 4, KVS_POLICY_PFN) < 0)
    return -1;
  size_t sz, kvb = kvs_kv_bytes(c, TOKENS, 0, LAYERS);
  uint8_t *seg = kvs_segment(c, &sz);
  uint32_t tokens[TOKENS];
  uint16_t *expect = malloc(2 * kvb);
  if (!expect || sz < 4 * kvb) {
    free(expect);
    kvs_close(c);
    return -ENOMEM;
  }
  /* token ids of their own: step 1 stored the other sequence already */
  fill(seg, kvb, tokens, 5000 + (uint32_t)getpid() % 1000 * 4096);
  int before = kvs_lookup(c, 1, tokens, TOKENS, 0), r = before;
  kvs_put_args a = {.seq = 1, .start = 0, .tokens = tokens, .n_tokens = TOKENS,
                    .layer_begin = 0, .layer_end = LAYERS, .k_off = 0, .v_off = kvb};
  double t0 = now();
  if (r >= 0)
    r = kvs_put(c, &a, NULL);
  double dt = now() - t0;
  if (r >= 0)
    r = kvs_get(c, 1, 0, TOKENS, 0, LAYERS, 2 * kvb, 3 * kvb);
  if (r < 0) {
    fprintf(stderr, "%s: sharing: %s (%s)\n", prog, kvs_strerror(r), kvs_last_error(c));
    free(expect);
    kvs_close(c);
    return r;
  }
  memcpy(expect, seg + 2 * kvb, 2 * kvb);
  printf("process %ld (first): lookup found %d of %d tokens before storing; "
         "put of %d tokens x %d layers at 4 bits %.2f ms\n",
         (long)getpid(), before, TOKENS, TOKENS, LAYERS, dt * 1e3);
  fflush(NULL);
  pid_t p = fork();
  if (p == 0)
    _exit(reader(tokens, expect, kvb)); /* never touches the parent's connection */
  int st = 0;
  r = p < 0 ? -errno : waitpid(p, &st, 0) < 0 ? -errno : 0;
  if (r == 0 && !(WIFEXITED(st) && WEXITSTATUS(st) == 0))
    r = -EIO;
  free(expect);
  kvs_release(c, 1);
  kvs_close(c);
  return r;
}

static void help(void)
{
  printf("usage: kvsink-demo [--socket PATH]\n"
         "Show what kvsink does against a running kvsinkd: store a synthetic KV\n"
         "sequence at 2, 3, 4 and 8 bits under the policies none, pfn and kvsink,\n"
         "read it back and print the error and the compression; then let a second\n"
         "process find a prefix the first one stored.\n"
         "\n"
         "  -s, --socket PATH   the daemon's socket (default $KVSINK_SOCKET, else\n"
         "                      /run/kvsink/kvsinkd.sock)\n"
         "  -h, --help          this text\n"
         "  -V, --version       version\n"
         "\n"
         "Exit status: 0 all shown, 1 a step failed, 2 bad command line,\n"
         "3 the daemon could not be reached. See kvsink-demo(1).\n");
}

int main(int argc, char **argv)
{
  static const struct option lo[] = {{"socket", required_argument, 0, 's'},
                                     {"help", no_argument, 0, 'h'},
                                     {"version", no_argument, 0, 'V'},
                                     {0, 0, 0, 0}};
  int ch;
  argv[0] = (char *)prog; /* getopt names the program in its messages */
  while ((ch = getopt_long(argc, argv, "s:hV", lo, NULL)) != -1) {
    switch (ch) {
    case 's': sock = optarg; break;
    case 'h': help(); return KVS__EXIT_OK;
    case 'V': kvs__cli_version(prog); return KVS__EXIT_OK;
    default: return kvs__cli_usage_error(prog, NULL);
    }
  }
  if (optind < argc)
    return kvs__cli_usage_error(prog, "unexpected argument '%s'", argv[optind]);

  static const int bits[] = {2, 3, 4, 8};
  static const kvs_policy pols[] = {KVS_POLICY_NONE, KVS_POLICY_PFN, KVS_POLICY_KVSINK};
  static const char *const names[] = {"none", "pfn", "kvsink"};
  printf("Attention sinks are the few tokens (often the first) that draw a large share of\n"
         "attention in every layer; quantizing their outsized K/V hurts most, so kvsink\n"
         "keeps them in 16 bit and quantizes the rest.\n\n");
  printf("%d layers x %d kv heads x %d dim, %d tokens, fp16; sink tokens 0 and 37 (x40)\n",
         LAYERS, HEADS, DIM, TOKENS);
  printf("%-6s %-4s %11s %11s %11s %11s %6s %17s\n", "policy", "bits", "K rel RMS",
         "K max abs", "V rel RMS", "V max abs", "sinks", "stored/raw");
  int fail = 0;
  for (size_t p = 0; p < 3; p++) {
    for (size_t b = 0; b < 4; b++) {
      struct row w;
      if (run(bits[b], pols[p], &w) < 0) {
        fail = 1;
        if (unreachable)
          return KVS__EXIT_CONNECT;
        continue;
      }
      printf("%-6s %-4d %11.5f %11.5f %11.5f %11.5f %6u %9.3f (%4.1fx)\n", names[p], bits[b],
             w.k.rel_rms, w.k.max_abs, w.v.rel_rms, w.v.max_abs, w.sinks, w.ratio,
             1.0 / w.ratio);
      /* the quantizer bounds the error; a garbage read-back must fail */
      if (!(w.k.rel_rms < 1.0 && w.v.rel_rms < 1.0 && w.ratio > 0 && w.ratio < 1.0)) {
        fprintf(stderr, "%s: %d bits: error or compression out of range\n", prog, bits[b]);
        fail = 1;
      }
    }
  }
  if (no_profile)
    printf("(no sink profile for model 'kvsink-demo' in the daemon: kvsink acted as pfn;\n"
           " demo.sh installs one)\n");
  printf("\nsharing a prefix between processes (4 bits, pfn):\n");
  if (share() < 0)
    fail = 1;
  return fail ? KVS__EXIT_FAIL : KVS__EXIT_OK;
}
