/* kvsink-demo: store a synthetic KV sequence at 2, 3, 4 and 8 bits, read
 * it back, and print the reconstruction error: policy NONE, PFN (first
 * token kept 16-bit) and, when the daemon has a sink profile for the model
 * "kvsink-demo", KVSINK (the activation summary marks tokens 0 and 37 with
 * a massive value, so both stay 16-bit). demo.sh installs such a profile. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kvsink.h>
#include "kernels/half.h"

enum { LAYERS = 4, HEADS = 8, DIM = 64, TOKENS = 256 };

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

struct err { double rel_rms, max_abs; };

static int no_profile; /* the daemon had no profile: KVSINK acted as PFN */

static struct err compare(const uint16_t *ref, const uint16_t *got, size_t n)
{
  double se = 0, ss = 0, mx = 0;
  for (size_t i = 0; i < n; i++) {
    double a = kvs__f16_to_f32(ref[i]), b = kvs__f16_to_f32(got[i]);
    double d = fabs(a - b);
    se += d * d;
    ss += a * a;
    if (d > mx || d != d)
      mx = d;
  }
  struct err e = {ss > 0 ? sqrt(se / ss) : 0, mx};
  return e;
}

static int run(const char *sock, int bits, kvs_policy pol, struct err *ek, struct err *ev)
{
  kvs_model m = {"kvsink-demo", LAYERS, HEADS, DIM, KVS_DTYPE_F16};
  kvs_options o;
  kvs_client *c;
  kvs_options_init(&o);
  o.k_bits = o.v_bits = bits;
  o.policy = pol;
  int r = kvs_connect(&c, sock, &m, &o);
  if (r < 0) {
    fprintf(stderr, "kvsink-demo: connect (%d bits): %s\n", bits, kvs_strerror(r));
    return r;
  }
  size_t sz, kvb = kvs_kv_bytes(c, TOKENS, 0, LAYERS);
  uint8_t *seg = kvs_segment(c, &sz);
  if (sz < 4 * kvb) {
    fprintf(stderr, "kvsink-demo: segment of %zu bytes too small\n", sz);
    kvs_close(c);
    return -1;
  }
  uint16_t *k = (uint16_t *)seg, *v = (uint16_t *)(seg + kvb);
  size_t n = kvb / 2, per_tok = (size_t)HEADS * DIM;
  for (size_t j = 0; j < n; j++) {
    uint32_t l = (uint32_t)(j / (TOKENS * per_tok)), t = (uint32_t)(j / per_tok % TOKENS);
    uint32_t i = (uint32_t)(j % per_tok);
    k[j] = kvs__f32_to_f16(synth(l, t, i, 0));
    v[j] = kvs__f32_to_f16(synth(l, t, i, 1));
  }
  uint32_t tokens[TOKENS];
  for (uint32_t t = 0; t < TOKENS; t++)
    tokens[t] = 1000 + t * 7;
  kvs_put_args a = {.seq = 1, .start = 0, .tokens = tokens, .n_tokens = TOKENS,
                    .layer_begin = 0, .layer_end = LAYERS, .k_off = 0, .v_off = kvb};
  const kvs_info *in = kvs_get_info(c);
  if (pol == KVS_POLICY_KVSINK && !in->has_profile)
    no_profile = 1;
  if (pol == KVS_POLICY_KVSINK && in->has_profile) {
    /* summary after layer l_E on the profile's channels: the sink tokens
     * carry a massive activation, the others an ordinary one */
    uint32_t nch = in->n_sink_channels;
    size_t off = 4 * kvb;
    if (sz < off + (size_t)TOKENS * nch * sizeof(float)) {
      kvs_close(c);
      return -1;
    }
    float *act = (float *)(seg + off);
    for (uint32_t t = 0; t < TOKENS; t++)
      for (uint32_t j = 0; j < nch; j++)
        act[(size_t)t * nch + j] = (t == 0 || t == 37) ? 500.0f : 1.0f + (float)(t % 5);
    a.act_off = off;
    a.act_channels = nch;
  }
  kvs_put_result pr;
  r = kvs_put(c, &a, &pr);
  if (r == 0)
    r = kvs_get(c, 1, 0, TOKENS, 0, LAYERS, 2 * kvb, 3 * kvb);
  if (r < 0) {
    fprintf(stderr, "kvsink-demo: %d bits: %s (%s)\n", bits, kvs_strerror(r), kvs_last_error(c));
  } else {
    *ek = compare(k, (uint16_t *)(seg + 2 * kvb), n);
    *ev = compare(v, (uint16_t *)(seg + 3 * kvb), n);
    r = kvs_release(c, 1);
  }
  kvs_close(c);
  return r;
}

int main(int argc, char **argv)
{
  static const struct option lo[] = {{"socket", required_argument, 0, 's'},
                                     {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
  const char *sock = NULL;
  int ch;
  while ((ch = getopt_long(argc, argv, "s:h", lo, NULL)) != -1) {
    if (ch == 's') {
      sock = optarg;
    } else {
      fprintf(ch == 'h' ? stdout : stderr, "usage: kvsink-demo [--socket PATH]\n");
      return ch == 'h' ? 0 : 2;
    }
  }
  static const int bits[] = {2, 3, 4, 8};
  static const kvs_policy pols[] = {KVS_POLICY_NONE, KVS_POLICY_PFN, KVS_POLICY_KVSINK};
  static const char *const names[] = {"none", "pfn", "kvsink"};
  printf("%d layers x %d kv heads x %d dim, %d tokens, fp16; sink tokens 0 and 37 (x40)\n",
         LAYERS, HEADS, DIM, TOKENS);
  printf("%-6s %-5s %12s %12s %12s %12s\n", "policy", "bits", "K rel RMS", "K max abs",
         "V rel RMS", "V max abs");
  int fail = 0;
  for (size_t p = 0; p < 3; p++) {
    for (size_t b = 0; b < 4; b++) {
      struct err ek, ev;
      if (run(sock, bits[b], pols[p], &ek, &ev) < 0) {
        fail = 1;
        continue;
      }
      printf("%-6s %-5d %12.5f %12.5f %12.5f %12.5f\n", names[p], bits[b],
             ek.rel_rms, ek.max_abs, ev.rel_rms, ev.max_abs);
      /* the quantizer bounds the error; a garbage read-back must fail */
      if (!(ek.rel_rms < 1.0 && ev.rel_rms < 1.0)) {
        fprintf(stderr, "kvsink-demo: %d bits: reconstruction error out of range\n", bits[b]);
        fail = 1;
      }
    }
  }
  if (no_profile)
    printf("(no sink profile for model 'kvsink-demo' in the daemon: kvsink acted as pfn;\n"
           " demo.sh installs one)\n");
  return fail;
}
