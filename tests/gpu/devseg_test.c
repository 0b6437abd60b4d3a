/* SPDX-License-Identifier: MIT */
/* Device segments through kvsinkd on a GPU (tests/gpu/devseg.sh runs it).
 *   devseg_test SOCK check            put/get from the device segment vs the host
 *                                     segment at 16/8/4/2 bits: bit-exact
 *   devseg_test SOCK restart          put, wait for a line on stdin (the script
 *                                     restarts kvsinkd), expect a clear error,
 *                                     kvs_reconnect, put/get again
 *   devseg_test SOCK bench PROCS BITS put/get bandwidth of 1,024 tokens x 32 layers
 *                                     x 8 heads x 128 (fp16) per process, device
 *                                     and host segments, next to cudaMemcpy D2D
 *   devseg_test SOCK latency [SPIN]   1-token put+get, median and p99 (us), and
 *                                     its parts (put, the G-th puts, get, ping);
 *                                     SPIN: client busy-poll (us; 0 = off, also
 *                                     for device requests, which spin by
 *                                     default: HACKING.md Decision 48)
 *   devseg_test SOCK dump FILE DEV    outputs at 16/8/4/2 bits into FILE (DEV 1:
 *                                     device segment, 0: host segment)
 *   devseg_test - cmp A B             compare two dumps: where they differ (bits,
 *                                     K/V, layer, token, head, channel), how much
 * Every mode salts its sessions with its own salt (mode, pid, time): the
 * daemon's prefix cache shares blocks by token ids, so without it a put
 * whose token ids an earlier run used gets that run's blocks back, not its
 * own data (what made "two clients", both dump comparisons and "after a
 * killed client" fail on the first H200 run).
 * DEVSEG_ITERS=N: bench times N - 1 put/get pairs a process (default 6,
 * the first warms up). DEVSEG_NOCOPY=1: bench copies the engine's K/V
 * into the segment once, not before every put (A/B: no GPU work of the
 * client between its requests, HACKING.md Decision 54). Client buffers
 * are CUDA runtime allocations; exit 0 = pass. The processes of a bench
 * row start their timed loops together; DEVSEG_NO_BARRIER=1 does without
 * (each starts when set up), to show what the barrier changes. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cuda_runtime_api.h>
#include <kvsink.h>

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { \
  fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); exit(1); } } while (0)

static const char *sock;
static char salt[KVS_MAX_SALT + 1]; /* this run's cache salt (see above) */

static void set_salt(const char *mode)
{
  struct timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  snprintf(salt, sizeof salt, "%s-%d-%lld", mode, (int)getpid(), (long long)t.tv_nsec);
}

static double now(void)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static uint32_t rnd_state = 12345;
static uint32_t rnd(void) { rnd_state = rnd_state * 1664525u + 1013904223u; return rnd_state >> 8; }

/* fp16 values in about [-4, 4]: finite, varied */
static void fill(uint16_t *h, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    float f = ((float)(rnd() % 65536) / 8192.f) - 4.f;
    kvs_f16_from_f32(&h[i], &f, 1);
  }
}

static kvs_client *conn(uint32_t layers, int bits, int dev, size_t seg)
{
  kvs_model m = { "devseg-test", layers, 8, 128, KVS_DTYPE_F16 };
  kvs_options o;
  kvs_options_init(&o);
  o.k_bits = o.v_bits = bits;
  o.policy = KVS_POLICY_PFN;
  o.pfn = 1;
  o.outliers = 0;
  o.seg_size = seg;
  o.salt_len = strlen(salt);
  memcpy(o.salt, salt, o.salt_len);
  kvs_client *c = NULL;
  int r = dev ? kvs_connect_device(&c, sock, &m, &o, 0) : kvs_connect(&c, sock, &m, &o);
  if (r < 0) {
    fprintf(stderr, "connect: %s\n", kvs_strerror(r));
    exit(1);
  }
  if (dev && !kvs_get_info(c)->seg_device) {
    fprintf(stderr, "FAIL: asked for a device segment, got a host one\n");
    exit(1);
  }
  return c;
}

static int put_only(kvs_client *c, int dev, uint64_t seq, uint32_t tok0, uint32_t n, uint32_t L,
                    const uint16_t *dk, const uint16_t *dv)
{
  size_t b = kvs_kv_bytes(c, n, 0, L);
  uint32_t *tok = malloc(n * sizeof *tok);
  for (uint32_t i = 0; i < n; i++) tok[i] = tok0 + i;
  uint8_t *seg = dev ? kvs_device_segment(c, NULL) : kvs_segment(c, NULL);
  CK(cudaMemcpy(seg, dk, b, cudaMemcpyDefault));
  CK(cudaMemcpy(seg + b, dv, b, cudaMemcpyDefault));
  kvs_put_args a = { .seq = seq, .start = 0, .tokens = tok, .n_tokens = n, .layer_begin = 0,
                     .layer_end = L, .k_off = 0, .v_off = b };
  int r = dev ? kvs_put_device(c, &a, NULL) : kvs_put(c, &a, NULL);
  free(tok);
  return r;
}

static int get_only(kvs_client *c, int dev, uint64_t seq, uint32_t n, uint32_t L, uint16_t *dko,
                    uint16_t *dvo)
{
  size_t b = kvs_kv_bytes(c, n, 0, L);
  uint8_t *seg = dev ? kvs_device_segment(c, NULL) : kvs_segment(c, NULL);
  int r = dev ? kvs_get_device(c, seq, 0, n, 0, L, 2 * b, 3 * b) : kvs_get(c, seq, 0, n, 0, L, 2 * b, 3 * b);
  if (r < 0) return r;
  CK(cudaMemcpy(dko, seg + 2 * b, b, cudaMemcpyDefault));
  CK(cudaMemcpy(dvo, seg + 3 * b, b, cudaMemcpyDefault));
  return 0;
}

/* first differing 16-bit word of a and b (n words), -1 if none */
static long first_diff(const uint16_t *a, const uint16_t *b, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (a[i] != b[i]) return (long)i;
  return -1;
}

static void say_diff(const char *what, const uint16_t *a, const uint16_t *b, size_t n, uint32_t ntok)
{
  long i = first_diff(a, b, n);
  if (i < 0) return;
  size_t diff = 0;
  for (size_t j = 0; j < n; j++) diff += a[j] != b[j];
  printf("  %s: %zu of %zu values differ; first at layer %ld token %ld channel %ld: %04x vs %04x\n",
         what, diff, n, i / (long)(ntok * 1024), i / 1024 % (long)ntok, i % 1024, a[i], b[i]);
}

static int put_get(kvs_client *c, int dev, uint64_t seq, uint32_t tok0, uint32_t n, uint32_t L,
                   const uint16_t *dk, const uint16_t *dv, uint16_t *dko, uint16_t *dvo)
{
  size_t b = kvs_kv_bytes(c, n, 0, L);
  uint32_t *tok = malloc(n * sizeof *tok);
  for (uint32_t i = 0; i < n; i++) tok[i] = tok0 + i;
  uint8_t *seg = dev ? kvs_device_segment(c, NULL) : kvs_segment(c, NULL);
  CK(cudaMemcpy(seg, dk, b, cudaMemcpyDefault));
  CK(cudaMemcpy(seg + b, dv, b, cudaMemcpyDefault));
  kvs_put_args a = { .seq = seq, .start = 0, .tokens = tok, .n_tokens = n, .layer_begin = 0,
                     .layer_end = L, .k_off = 0, .v_off = b };
  int r = dev ? kvs_put_device(c, &a, NULL) : kvs_put(c, &a, NULL);
  free(tok);
  if (r < 0) return r;
  r = dev ? kvs_get_device(c, seq, 0, n, 0, L, 2 * b, 3 * b) : kvs_get(c, seq, 0, n, 0, L, 2 * b, 3 * b);
  if (r < 0) return r;
  CK(cudaMemcpy(dko, seg + 2 * b, b, cudaMemcpyDefault));
  CK(cudaMemcpy(dvo, seg + 3 * b, b, cudaMemcpyDefault));
  return kvs_release(c, seq);
}

/* put_get with K at segment offset off, V right after it, the outputs
 * after V (off 2: not 16-byte aligned, so the daemon stages the input and
 * the general kernels run, instead of quantizing in place) */
static int put_get_at(kvs_client *c, uint64_t seq, uint32_t tok0, uint32_t n, uint32_t L,
                      size_t off, const uint16_t *dk, const uint16_t *dv, uint16_t *dko,
                      uint16_t *dvo)
{
  size_t b = kvs_kv_bytes(c, n, 0, L);
  uint32_t *tok = malloc(n * sizeof *tok);
  for (uint32_t i = 0; i < n; i++) tok[i] = tok0 + i;
  uint8_t *seg = kvs_device_segment(c, NULL);
  CK(cudaMemcpy(seg + off, dk, b, cudaMemcpyDefault));
  CK(cudaMemcpy(seg + off + b, dv, b, cudaMemcpyDefault));
  kvs_put_args a = { .seq = seq, .start = 0, .tokens = tok, .n_tokens = n, .layer_begin = 0,
                     .layer_end = L, .k_off = off, .v_off = off + b };
  int r = kvs_put_device(c, &a, NULL);
  free(tok);
  if (r == 0) r = kvs_get_device(c, seq, 0, n, 0, L, off + 2 * b, off + 3 * b);
  if (r < 0) return r;
  CK(cudaMemcpy(dko, seg + off + 2 * b, b, cudaMemcpyDefault));
  CK(cudaMemcpy(dvo, seg + off + 3 * b, b, cudaMemcpyDefault));
  return kvs_release(c, seq);
}

/* a host callback on a stream: what is queued behind it waits 20 ms */
static void CUDART_CB sleep20(void *arg)
{
  (void)arg;
  struct timespec t = {0, 20 * 1000 * 1000};
  nanosleep(&t, NULL);
}

/* Stream-scoped ordering (kvs_set_device_stream), 16 bits so that a get
 * returns exactly what the put read: the segment holds the old K/V, new
 * ones are queued on stream s1 behind a 20 ms host callback, then the
 * put. Ordered on s1 or on the whole context (NULL), the put waits and
 * stores the new bytes; ordered on another, idle stream it does not wait
 * and stores the old ones, which shows that the wait on s1 is what made
 * the first case right. */
static int check_stream(const uint16_t *h, size_t e, uint32_t n, uint32_t L)
{
  const size_t b = e * 2;
  kvs_client *c = conn(L, 16, 1, 4 * b);
  uint8_t *seg = kvs_device_segment(c, NULL);
  cudaStream_t s1, s2;
  CK(cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking));
  CK(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking));
  uint16_t *pin, *back = malloc(2 * b);
  CK(cudaMallocHost((void **)&pin, 2 * b));
  memcpy(pin, h + e, b); /* new K = old V, new V = old K */
  memcpy(pin + e, h, b);
  uint32_t *tok = malloc(n * sizeof *tok);
  int fails = 0;
  static const char *const how[] = {"its stream", "the whole context (default)", "another stream"};
  for (int m = 0; m < 3; m++) {
    for (uint32_t i = 0; i < n; i++) tok[i] = 400000 + 10000 * (uint32_t)m + i;
    CK(cudaMemcpy(seg, h, 2 * b, cudaMemcpyDefault)); /* the old K/V */
    CK(cudaLaunchHostFunc(s1, sleep20, NULL));
    CK(cudaMemcpyAsync(seg, pin, 2 * b, cudaMemcpyHostToDevice, s1));
    kvs_set_device_stream(c, m == 0 ? (void *)s1 : m == 1 ? NULL : (void *)s2);
    kvs_put_args a = { .seq = 300 + (uint64_t)m, .tokens = tok, .n_tokens = n, .layer_end = L,
                       .k_off = 0, .v_off = b };
    int r = kvs_put_device(c, &a, NULL);
    CK(cudaStreamSynchronize(s1));
    if (r == 0) r = kvs_get_device(c, 300 + (uint64_t)m, 0, n, 0, L, 2 * b, 3 * b);
    if (r == 0) CK(cudaMemcpy(back, seg + 2 * b, 2 * b, cudaMemcpyDefault));
    const uint16_t *want = m < 2 ? pin : h;
    int ok = r == 0 && !memcmp(back, want, 2 * b);
    printf("%s: a device put ordered on %s stored the %s K/V (%s)\n", ok ? "PASS" : "FAIL", how[m],
           m < 2 ? "new" : "old (it did not wait)", kvs_strerror(r));
    fails += !ok;
  }
  kvs_set_device_stream(c, NULL);
  CK(cudaStreamDestroy(s1));
  CK(cudaStreamDestroy(s2));
  CK(cudaFreeHost(pin));
  free(back);
  free(tok);
  kvs_close(c);
  return fails;
}

static int check(void)
{
  const uint32_t n = 256, L = 4;
  size_t e = (size_t)n * L * 8 * 128, b = e * 2;
  uint16_t *h = malloc(2 * b), *o[4];
  fill(h, 2 * e);
  for (int i = 0; i < 4; i++) o[i] = malloc(b);
  int fails = 0;
  static const int bits[] = {16, 8, 4, 2};
  for (int bi = 0; bi < 4; bi++) {
    kvs_client *cd = conn(L, bits[bi], 1, 4 * b), *ch = conn(L, bits[bi], 0, 4 * b);
    /* other token ids per path: each quantizes its own blocks */
    int r1 = put_get(cd, 1, 1, 1000, n, L, h, h + e, o[0], o[1]);
    int r2 = put_get(ch, 0, 2, 5000, n, L, h, h + e, o[2], o[3]);
    if (r1 < 0 || r2 < 0) {
      printf("FAIL: %d bits: put/get %s / %s (%s)\n", bits[bi], kvs_strerror(r1), kvs_strerror(r2),
             kvs_last_error(r1 < 0 ? cd : ch));
      fails++;
    } else {
      int same = !memcmp(o[0], o[2], b) && !memcmp(o[1], o[3], b);
      int exact = !memcmp(o[0], h, b) && !memcmp(o[1], h + e, b);
      int ok = same && (bits[bi] != 16 || exact);
      printf("%s: %2d bits: device segment %s the host segment%s\n", ok ? "PASS" : "FAIL", bits[bi],
             same ? "==" : "!=", bits[bi] == 16 ? (exact ? ", == input" : ", != input") : "");
      if (!ok) {
        say_diff("device K vs host K", o[0], o[2], e, n);
        say_diff("device V vs host V", o[1], o[3], e, n);
        if (bits[bi] == 16) {
          say_diff("device K vs input", o[0], h, e, n);
          say_diff("device V vs input", o[1], h + e, e, n);
        }
      }
      fails += !ok;
    }
    kvs_close(cd);
    kvs_close(ch);
  }
  /* decode steps: 1-token puts and gets (the small path: one copy each way
   * through the daemon's pinned host staging; the get of a token that
   * completes a group dequantizes one row per layer), token by token, at 4
   * bits: device segment == host segment, and == input for 16-bit rows */
  {
    kvs_client *cs[2] = {conn(L, 4, 0, 4 * b), conn(L, 4, 1, 4 * b)};
    uint32_t G = kvs_get_info(cs[0])->group, steps = 2 * G + 3, C = 8 * 128, bad = 0, exact = 0;
    size_t b1 = kvs_kv_bytes(cs[0], 1, 0, L);
    uint16_t *in = malloc(2 * b1), *out[2] = {malloc(2 * b1), malloc(2 * b1)};
    for (uint32_t t = 0; t < steps && !bad; t++) {
      for (uint32_t l = 0; l < L; l++) {
        memcpy(in + (size_t)l * C, h + ((size_t)l * n + t) * C, C * 2);
        memcpy(in + (size_t)(L + l) * C, h + e + ((size_t)l * n + t) * C, C * 2);
      }
      for (int dev = 0; dev < 2 && !bad; dev++) {
        uint8_t *seg = dev ? kvs_device_segment(cs[dev], NULL) : kvs_segment(cs[dev], NULL);
        CK(cudaMemcpy(seg, in, 2 * b1, cudaMemcpyDefault));
        uint32_t tok = (dev ? 900000u : 800000u) + t; /* each quantizes its own blocks */
        kvs_put_args a = { .seq = 5, .start = t, .tokens = &tok, .n_tokens = 1, .layer_end = L,
                           .k_off = 0, .v_off = b1 };
        int r = dev ? kvs_put_device(cs[dev], &a, NULL) : kvs_put(cs[dev], &a, NULL);
        if (r == 0)
          r = dev ? kvs_get_device(cs[dev], 5, t, 1, 0, L, 2 * b1, 3 * b1)
                  : kvs_get(cs[dev], 5, t, 1, 0, L, 2 * b1, 3 * b1);
        if (r < 0) {
          printf("  decode step %u (%s segment): %s (%s)\n", t, dev ? "device" : "host",
                 kvs_strerror(r), kvs_last_error(cs[dev]));
          bad = 1;
          break;
        }
        CK(cudaMemcpy(out[dev], seg + 2 * b1, 2 * b1, cudaMemcpyDefault));
      }
      if (bad) break;
      if (memcmp(out[0], out[1], 2 * b1)) {
        printf("  decode step %u: device segment != host segment\n", t);
        say_diff("device vs host (K then V)", out[1], out[0], 2 * b1 / 2, 1);
        bad = 1;
      } else if ((t + 1) % G && memcmp(out[1], in, 2 * b1)) {
        printf("  decode step %u: a 16-bit residual row came back changed\n", t);
        bad = 1;
      } else {
        exact += (t + 1) % G != 0;
      }
    }
    printf("%s: %u decode steps (1-token put + get), device segment == host segment, %u of them "
           "16-bit and == input\n", bad ? "FAIL" : "PASS", steps, exact);
    fails += bad;
    free(in);
    free(out[0]);
    free(out[1]);
    kvs_close(cs[0]);
    kvs_close(cs[1]);
  }
  /* NaN / Inf anywhere in a bulk device put fails it (the quantize kernel
   * checks each value it loads from the segment; rows left 16-bit are
   * checked on the host); positions in K and V, first (a sink row),
   * inside, last value */
  {
    kvs_client *cn = conn(L, 4, 1, 4 * b);
    static const struct { int v; size_t at; uint16_t x; } bad[] = {
      {0, 0, 0x7e00}, {0, 3, 0x7c00}, {1, 12345, 0xfc00}, {1, 0, 0x7c01}, {0, (size_t)-1, 0x7e00},
      {1, (size_t)-1, 0x7c00}};
    uint16_t *hk = malloc(b), *hv = malloc(b);
    int nan_ok = 1;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
      memcpy(hk, h, b);
      memcpy(hv, h + e, b);
      size_t at = bad[i].at == (size_t)-1 ? e - 1 : bad[i].at;
      (bad[i].v ? hv : hk)[at] = bad[i].x;
      int r = put_only(cn, 1, 100 + i, 200000 + (uint32_t)i * 1000, n, L, hk, hv);
      if (r != KVS_ENAN) {
        printf("  NaN/Inf %04x in %c at %zu: put gave %s, expected the NaN error\n", bad[i].x,
               bad[i].v ? 'V' : 'K', at, kvs_strerror(r));
        nan_ok = 0;
      }
    }
    int r = put_only(cn, 1, 99, 300000, n, L, h, h + e);
    if (r) { printf("  the clean put after them: %s (%s)\n", kvs_strerror(r), kvs_last_error(cn)); nan_ok = 0; }
    printf("%s: NaN/Inf in a device put refused, a clean one taken\n", nan_ok ? "PASS" : "FAIL");
    fails += !nan_ok;
    free(hk);
    free(hv);
    kvs_close(cn);
  }
  /* the staged path (input not 16-byte aligned) gives the bytes the
   * in-place one gives, at every width: half the tokens, so that 4 x the
   * K/V bytes + 2 fit the segment */
  for (int bi = 0; bi < 4; bi++) {
    const uint32_t n2 = n / 2;
    const size_t e2 = (size_t)n2 * L * 8 * 128, b2 = e2 * 2;
    uint16_t *hk = malloc(b2), *hv = malloc(b2);
    for (uint32_t l = 0; l < L; l++) { /* the first n2 tokens of each layer */
      memcpy(hk + (size_t)l * n2 * 1024, h + (size_t)l * n * 1024, (size_t)n2 * 2048);
      memcpy(hv + (size_t)l * n2 * 1024, h + e + (size_t)l * n * 1024, (size_t)n2 * 2048);
    }
    kvs_client *cs = conn(L, bits[bi], 1, 4 * b);
    int r1 = put_get_at(cs, 1, 70000, n2, L, 0, hk, hv, o[0], o[1]);
    int r2 = r1 ? r1 : put_get_at(cs, 2, 80000, n2, L, 2, hk, hv, o[2], o[3]);
    int ok = r1 == 0 && r2 == 0 && !memcmp(o[0], o[2], b2) && !memcmp(o[1], o[3], b2) &&
             (bits[bi] != 16 || (!memcmp(o[0], hk, b2) && !memcmp(o[1], hv, b2)));
    printf("%s: %2d bits: a put from a misaligned offset (staged) == one in place (%s)\n",
           ok ? "PASS" : "FAIL", bits[bi], r1 ? kvs_strerror(r1) : kvs_strerror(r2));
    if (!ok && r1 == 0 && r2 == 0) {
      say_diff("in-place K vs staged K", o[0], o[2], e2, n2);
      say_diff("in-place V vs staged V", o[1], o[3], e2, n2);
    }
    fails += !ok;
    free(hk);
    free(hv);
    kvs_close(cs);
  }
  /* two clients at once, each its own segment and its own token ids (equal
   * ids would share the cached blocks): both put, then both get, at 16
   * bits each must get its own input back */
  kvs_client *a = conn(L, 16, 1, 4 * b), *c2 = conn(L, 16, 1, 4 * b);
  int ra = put_only(a, 1, 7, 100, n, L, h, h + e);
  int rb = put_only(c2, 1, 7, 100000, n, L, h + e, h);
  if (ra == 0) ra = get_only(a, 1, 7, n, L, o[0], o[1]);
  if (rb == 0) rb = get_only(c2, 1, 7, n, L, o[2], o[3]);
  int own = kvs_device_segment(a, NULL) != kvs_device_segment(c2, NULL);
  int ea = ra == 0 && !memcmp(o[0], h, b) && !memcmp(o[1], h + e, b);
  int eb = rb == 0 && !memcmp(o[2], h + e, b) && !memcmp(o[3], h, b);
  int ok = own && ea && eb;
  printf("%s: two clients with their own device segments\n", ok ? "PASS" : "FAIL");
  if (!ok) {
    printf("  client a: %s (%s)%s; client b: %s (%s)%s; segments %s\n", kvs_strerror(ra),
           kvs_last_error(a), ea ? ", its own data back" : ", NOT its data", kvs_strerror(rb),
           kvs_last_error(c2), eb ? ", its own data back" : ", NOT its data",
           own ? "distinct" : "THE SAME");
    if (ra == 0) { say_diff("a K", o[0], h, e, n); say_diff("a V", o[1], h + e, e, n); }
    if (rb == 0) { say_diff("b K", o[2], h + e, e, n); say_diff("b V", o[3], h, e, n); }
  }
  fails += !ok;
  kvs_close(a);
  kvs_close(c2);
  fails += check_stream(h, e, n, L);
  return fails ? 1 : 0;
}

/* The outputs at 16/8/4/2 bits to FILE, for a comparison across daemons
 * (a GPU pool through a device segment vs a host pool, the C reference). */
static int dump(const char *file, int dev)
{
  const uint32_t n = 256, L = 4;
  size_t e = (size_t)n * L * 8 * 128, b = e * 2;
  uint16_t *h = malloc(2 * b), *ko = malloc(b), *vo = malloc(b);
  rnd_state = 777;
  fill(h, 2 * e);
  FILE *f = fopen(file, "wb");
  if (!f) return 1;
  static const int bits[] = {16, 8, 4, 2};
  for (int bi = 0; bi < 4; bi++) {
    kvs_client *c = conn(L, bits[bi], dev, 4 * b);
    /* token ids no other mode uses; the salt keeps this run's blocks apart */
    int r = put_get(c, dev, 1, 600000, n, L, h, h + e, ko, vo);
    if (r < 0) {
      fprintf(stderr, "dump: %s (%s)\n", kvs_strerror(r), kvs_last_error(c));
      return 1;
    }
    fwrite(ko, 1, b, f);
    fwrite(vo, 1, b, f);
    kvs_close(c);
  }
  return fclose(f) ? 1 : 0;
}

/* Where two dumps differ: per bit width and K/V, the count, the first
 * position (layer, token, head, channel) and the largest difference as
 * floats. 0 = identical. */
static uint8_t *slurp(const char *f, size_t *n)
{
  FILE *fp = fopen(f, "rb");
  if (!fp) { fprintf(stderr, "cmp: cannot open %s\n", f); return NULL; }
  fseek(fp, 0, SEEK_END);
  long sz = ftell(fp);
  fseek(fp, 0, SEEK_SET);
  uint8_t *p = malloc(sz > 0 ? (size_t)sz : 1);
  *n = p && fread(p, 1, (size_t)sz, fp) == (size_t)sz ? (size_t)sz : 0;
  fclose(fp);
  return p;
}

static int cmpdump(const char *fa, const char *fb)
{
  const uint32_t n = 256, L = 4, C = 1024;
  size_t e = (size_t)n * L * C, b = e * 2, na, nb;
  uint8_t *a = slurp(fa, &na), *bb = slurp(fb, &nb);
  if (!a || !bb) return 2;
  if (na != nb || na != 8 * b) printf("  sizes: %zu and %zu bytes (expected %zu)\n", na, nb, 8 * b);
  static const int bits[] = {16, 8, 4, 2};
  int differ = 0;
  for (int s = 0; s < 8 && (size_t)(s + 1) * b <= na && (size_t)(s + 1) * b <= nb; s++) {
    const uint16_t *x = (const uint16_t *)(a + s * b), *y = (const uint16_t *)(bb + s * b);
    size_t cnt = 0, first = 0;
    float maxd = 0;
    for (size_t i = 0; i < e; i++)
      if (x[i] != y[i]) {
        if (!cnt++) first = i;
        float fx, fy;
        kvs_f16_to_f32(&fx, &x[i], 1);
        kvs_f16_to_f32(&fy, &y[i], 1);
        float d = fx > fy ? fx - fy : fy - fx;
        if (d > maxd) maxd = d;
      }
    if (!cnt) continue;
    differ = 1;
    size_t t = first / C % n, l = first / ((size_t)n * C), ch = first % C;
    printf("  %2d bits %c: %zu of %zu values differ (%.3f%%), max |diff| %g; first at byte %zu: "
           "layer %zu token %zu head %zu channel %zu (%04x vs %04x)\n",
           bits[s / 2], s % 2 ? 'V' : 'K', cnt, e, 100.0 * cnt / e, maxd, s * b + first * 2, l, t,
           ch / 128, ch % 128, x[first], y[first]);
  }
  if (!differ) printf("  identical\n");
  free(a);
  free(bb);
  return differ;
}

/* median of n doubles (sorts them) */
static int cmpd(const void *a, const void *b);
static double median(double *t, size_t n)
{
  qsort(t, n, sizeof *t, cmpd);
  return t[n / 2];
}

static int restart(void)
{
  const uint32_t n = 64, L = 4;
  size_t e = (size_t)n * L * 8 * 128, b = e * 2;
  uint16_t *h = malloc(2 * b), *ko = malloc(b), *vo = malloc(b);
  fill(h, 2 * e);
  kvs_client *c = conn(L, 16, 1, 4 * b);
  int r = put_get(c, 1, 1, 10, n, L, h, h + e, ko, vo);
  printf("%s: first put/get before the restart (%s)\n", r == 0 ? "PASS" : "FAIL", kvs_strerror(r));
  printf("READY\n");
  fflush(stdout);
  char line[16];
  if (!fgets(line, sizeof line, stdin)) return 1;
  r = put_get(c, 1, 2, 10, n, L, h, h + e, ko, vo);
  int clear = r == -ECONNRESET || r == -EPIPE || r == -ENOTCONN;
  printf("%s: after the restart: %s (%s)\n", clear ? "PASS" : "FAIL", kvs_strerror(r),
         kvs_last_error(c));
  int rr = kvs_reconnect(c);
  r = rr ? rr : put_get(c, 1, 3, 10, n, L, h, h + e, ko, vo);
  int ok = r == 0 && kvs_get_info(c)->seg_device && !memcmp(ko, h, b) && !memcmp(vo, h + e, b);
  printf("%s: kvs_reconnect re-imported the device segment, put/get bit-exact (%s)\n",
         ok ? "PASS" : "FAIL", kvs_strerror(r));
  kvs_close(c);
  return clear && ok ? 0 : 1;
}

/* One process: GB/s of put and of get (16-bit bytes of K+V): [0] the
 * call through the daemon, [1] with the client's copies into / out of
 * the segment from / to its own device buffers. */
/* DEVSEG_NO_BARRIER=1: each process starts its loop when it is set up
 * (the rows before the barrier; for showing what it changes) */
static int no_barrier(void)
{
  const char *e = getenv("DEVSEG_NO_BARRIER");
  return e && !strcmp(e, "1");
}

static void bench1(int bits, int dev, double *put, double *get, int ready, int go, double *win)
{
  const uint32_t n = 1024, L = 32;
  const char *ie = getenv("DEVSEG_ITERS");
  const uint32_t iters = ie && atoi(ie) >= 2 && atoi(ie) <= 1000 ? (uint32_t)atoi(ie) : 6;
  size_t e = (size_t)n * L * 8 * 128, b = e * 2;
  kvs_client *c = conn(L, bits, dev, 4 * b);
  uint16_t *h = malloc(2 * b);
  rnd_state = (uint32_t)getpid();
  fill(h, 2 * e);
  uint16_t *dk, *dv; /* the engine's K/V live on the GPU */
  CK(cudaMalloc((void **)&dk, 2 * b));
  dv = dk + e;
  CK(cudaMemcpy(dk, h, 2 * b, cudaMemcpyHostToDevice));
  uint8_t *seg = dev ? kvs_device_segment(c, NULL) : kvs_segment(c, NULL);
  uint32_t *tok = malloc(n * sizeof *tok);
  double tp = 0, tg = 0, tcp = 0, tcg = 0;
  /* DEVSEG_NOCOPY=1: the client's copies once only (no GPU work of the
   * client between its requests; for A/B runs) */
  const int nocopy = getenv("DEVSEG_NOCOPY") && !strcmp(getenv("DEVSEG_NOCOPY"), "1");
  /* every process set up before any starts its loop: CUDA's start-up in
   * a fresh process takes longer than the loop, so without this the
   * processes of a row would mostly take turns, not run at once */
  char one = 1;
  if (!no_barrier() && (write(ready, &one, 1) != 1 || read(go, &one, 1) != 1)) {
    fprintf(stderr, "bench: start barrier\n");
    exit(1);
  }
  for (uint32_t it = 0; it < iters; it++) {
    for (uint32_t i = 0; i < n; i++) tok[i] = (uint32_t)getpid() * 7919u + it * n + i;
    /* the engine's K/V into the segment (device to device, or down to host) */
    double t0 = now();
    if (it == 0 || !nocopy) {
      CK(cudaMemcpy(seg, dk, b, cudaMemcpyDefault));
      CK(cudaMemcpy(seg + b, dv, b, cudaMemcpyDefault));
    }
    /* a device-to-device cudaMemcpy returns before it is done: the put's
     * time starts once the engine's K/V are there, not with the tail of
     * its own copy (which libkvsink's synchronize would otherwise wait
     * for and the put row would count); "with client copies" has both */
    CK(cudaDeviceSynchronize());
    double t1 = now();
    kvs_put_args a = { .seq = it, .tokens = tok, .n_tokens = n, .layer_end = L, .k_off = 0,
                       .v_off = b };
    int r = dev ? kvs_put_device(c, &a, NULL) : kvs_put(c, &a, NULL);
    double t2 = now();
    if (r == 0)
      r = dev ? kvs_get_device(c, it, 0, n, 0, L, 2 * b, 3 * b) : kvs_get(c, it, 0, n, 0, L, 2 * b, 3 * b);
    double t3 = now();
    if (r == 0 && !nocopy) {
      CK(cudaMemcpy(dk, seg + 2 * b, b, cudaMemcpyDefault));
      CK(cudaMemcpy(dv, seg + 3 * b, b, cudaMemcpyDefault));
    }
    double t4 = now();
    if (r < 0) { fprintf(stderr, "bench: %s (%s)\n", kvs_strerror(r), kvs_last_error(c)); exit(1); }
    kvs_release(c, it);
    if (it == 0) win[0] = t4; /* the timed window: after the warm-up */
    win[1] = t4;
    if (it > 0) { /* the first warms up */
      tp += t2 - t1;
      tg += t3 - t2;
      tcp += t2 - t0;
      tcg += t4 - t2;
    }
  }
  put[0] = 2.0 * b * (iters - 1) / tp / 1e9;
  get[0] = 2.0 * b * (iters - 1) / tg / 1e9;
  put[1] = 2.0 * b * (iters - 1) / tcp / 1e9;
  get[1] = 2.0 * b * (iters - 1) / tcg / 1e9;
  kvs_close(c);
}

/* Bytes that PROCS processes put and got back in their timed windows
 * (bench1: the iterations after the first). */
static double wall_bytes(int procs)
{
  const char *ie = getenv("DEVSEG_ITERS");
  const uint32_t iters = ie && atoi(ie) >= 2 && atoi(ie) <= 1000 ? (uint32_t)atoi(ie) : 6;
  return (double)procs * (iters - 1) * 2.0 * ((size_t)1024 * 32 * 8 * 128 * 2 * 2);
}

static double d2d(void)
{
  size_t b = (size_t)1024 * 32 * 8 * 128 * 2 * 2;
  void *x, *y;
  CK(cudaMalloc(&x, b));
  CK(cudaMalloc(&y, b));
  CK(cudaMemcpy(y, x, b, cudaMemcpyDeviceToDevice));
  CK(cudaDeviceSynchronize());
  double t0 = now();
  for (int i = 0; i < 10; i++) CK(cudaMemcpy(y, x, b, cudaMemcpyDeviceToDevice));
  CK(cudaDeviceSynchronize());
  double t = now() - t0;
  cudaFree(x);
  cudaFree(y);
  return 10.0 * b / t / 1e9;
}

/* PROCS processes at once; one row per segment kind. The parent touches
 * CUDA only after the children ran (CUDA does not survive a fork). A
 * row's GB/s are the sum of each process's own (its bytes over the time
 * of its own calls), which is the daemon's aggregate only while the
 * processes really run at once: they start their loops together (a
 * barrier), and the row says how much of their timed windows overlapped
 * (FAIL under half: the row would not measure what it says). */
static int bench(int procs, int bits)
{
  double res[2][4], ovl[2], wall[2];
  for (int dev = 1; dev >= 0; dev--) {
    int pfd[2], rfd[2], gfd[2];
    if (pipe(pfd) < 0 || pipe(rfd) < 0 || pipe(gfd) < 0) return 1;
    for (int p = 0; p < procs; p++)
      if (fork() == 0) {
        double a[2], g[2], w[2] = {0, 0};
        close(pfd[0]);
        close(rfd[0]);
        close(gfd[1]);
        bench1(bits, dev, a, g, rfd[1], gfd[0], w);
        if (write(pfd[1], (double[6]){a[0], g[0], a[1], g[1], w[0], w[1]}, sizeof(double[6])) < 0) _exit(1);
        _exit(0);
      }
    close(pfd[1]);
    close(rfd[1]);
    close(gfd[0]);
    /* all set up (or gone: EOF), then all go */
    char c;
    int ready = 0;
    while (!no_barrier() && ready < procs && read(rfd[0], &c, 1) == 1) ready++;
    for (int p = 0; p < ready; p++)
      if (write(gfd[1], &c, 1) != 1) break;
    close(rfd[0]);
    close(gfd[1]);
    double sum[4] = {0, 0, 0, 0}, v[6], ws = 0, we = 1e30, span = 0, w0 = 1e30, w1 = 0;
    int got = 0;
    while (read(pfd[0], v, sizeof v) == (ssize_t)sizeof v) {
      for (int i = 0; i < 4; i++) sum[i] += v[i];
      ws = v[4] > ws ? v[4] : ws;
      we = v[5] < we ? v[5] : we;
      w0 = v[4] < w0 ? v[4] : w0;
      w1 = v[5] > w1 ? v[5] : w1;
      span += v[5] - v[4];
      got++;
    }
    close(pfd[0]);
    while (wait(NULL) > 0) {}
    if (got != procs) { printf("FAIL: bench %d procs %d bits: %d of them finished\n", procs, bits, got); return 1; }
    memcpy(res[dev], sum, sizeof sum);
    wall[dev] = w1 > w0 ? wall_bytes(procs) / (w1 - w0) / 1e9 : 0;
    /* the common window against the mean window */
    ovl[dev] = span > 0 && we > ws ? 100.0 * (we - ws) / (span / procs) : 0;
    if (procs > 1 && ovl[dev] < 50 && !no_barrier()) {
      printf("FAIL: bench %d procs %d bits (%s segments): the processes ran at once for only %.0f%% of their "
             "timed loops\n", procs, bits, dev ? "device" : "host", ovl[dev]);
      return 1;
    }
  }
  double dd = d2d();
  for (int dev = 1; dev >= 0; dev--)
    printf("%-6s procs %d bits %2d | put %7.1f GB/s %5.1f%% | get %7.1f GB/s %5.1f%% | with client copies: put %7.1f get %7.1f GB/s | D2D %7.1f GB/s | at once %3.0f%%, wall clock %7.1f GB/s\n",
           dev ? "device" : "host", procs, bits, res[dev][0], 100 * res[dev][0] / dd, res[dev][1],
           100 * res[dev][1] / dd, res[dev][2], res[dev][3], dd, procs > 1 ? ovl[dev] : 100.0, wall[dev]);
  return 0;
}

static int cmpd(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* The 1-token round trip (a decode step), device and host segments:
 * put+get median and p99, and its parts: the put (the G-th ones, which
 * complete a block per layer, apart), the get, a ping. spin_us >= 0: the
 * client busy-polls that long for its replies (kvs_set_busy_poll; 0 = off,
 * device requests too); -1: libkvsink's default (device requests spin,
 * Decision 48). devseg.sh runs it against a daemon with busy_poll_us set
 * too. */
static int latency(long spin_us)
{
  const uint32_t L = 32, iters = 2000;
  /* mode 2: device segment with the stream named (kvs_set_device_stream,
   * as an engine does; the get's copies go on that stream, synchronized
   * inside the timed get so that the rows are there when it stops);
   * 1: device segment, the whole context; 0: host segment */
  for (int mode = 2; mode >= 0; mode--) {
    const int dev = mode > 0;
    set_salt(mode == 2 ? "latency-stream" : dev ? "latency-dev" : "latency-host"); /* none finds another's blocks */
    kvs_client *c = conn(L, 4, dev, 64u << 20);
    if (spin_us >= 0 && kvs_set_busy_poll(c, (unsigned)spin_us) < 0) { fprintf(stderr, "kvs_set_busy_poll\n"); return 1; }
    cudaStream_t cs = NULL;
    if (mode == 2) {
      CK(cudaStreamCreateWithFlags(&cs, cudaStreamNonBlocking));
      kvs_set_device_stream(c, cs);
    }
    size_t segsz = 0;
    kvs_segment(c, &segsz);
    if (dev && segsz != (64u << 20))
      printf("note: the host segment is %zu bytes, not the 64 MiB asked for: no stage (client/stage.c)\n", segsz);
    uint32_t G = kvs_get_info(c)->group;
    size_t b = kvs_kv_bytes(c, 1, 0, L);
    uint16_t *h = calloc(1, 2 * b);
    fill(h, b);
    uint8_t *seg = dev ? kvs_device_segment(c, NULL) : kvs_segment(c, NULL);
    CK(cudaMemcpy(seg, h, 2 * b, cudaMemcpyDefault));
    double *t = malloc(iters * sizeof *t), *tp = malloc(iters * sizeof *tp),
           *tg = malloc(iters * sizeof *tg), *tping = malloc(iters * sizeof *tping),
           *tfill = malloc(iters * sizeof *tfill), *trest = malloc(iters * sizeof *trest);
    uint32_t nfill = 0, nrest = 0;
    for (uint32_t i = 0; i < iters; i++) {
      uint32_t tok = i;
      double t0 = now();
      kvs_put_args a = { .seq = 1, .start = i, .tokens = &tok, .n_tokens = 1, .layer_end = L,
                         .k_off = 0, .v_off = b };
      int r = dev ? kvs_put_device(c, &a, NULL) : kvs_put(c, &a, NULL);
      double t1 = now();
      if (r == 0) r = dev ? kvs_get_device(c, 1, i, 1, 0, L, 2 * b, 3 * b) : kvs_get(c, 1, i, 1, 0, L, 2 * b, 3 * b);
      if (cs) CK(cudaStreamSynchronize(cs));
      double t2 = now();
      if (r == 0) r = kvs_ping(c);
      tping[i] = (now() - t2) * 1e6;
      t[i] = (t2 - t0) * 1e6;
      tp[i] = (t1 - t0) * 1e6;
      tg[i] = (t2 - t1) * 1e6;
      if ((i + 1) % G == 0) tfill[nfill++] = tp[i];
      else trest[nrest++] = tp[i];
      if (r < 0) { fprintf(stderr, "latency: %s (%s)\n", kvs_strerror(r), kvs_last_error(c)); return 1; }
    }
    const char *kind = mode == 2 ? "dev+st" : dev ? "device" : "host";
    char how[48] = "";
    if (spin_us > 0) snprintf(how, sizeof how, " [busy-poll %ld us]", spin_us);
    else if (spin_us == 0) snprintf(how, sizeof how, " [busy-poll off]");
    /* where a slow put+get goes: the i of the slowest ones */
    uint32_t slow[5] = {0, 0, 0, 0, 0};
    for (uint32_t i = 0; i < iters; i++)
      for (int j = 0; j < 5; j++)
        if (t[i] > t[slow[j]]) {
          memmove(slow + j + 1, slow + j, (4 - j) * sizeof *slow);
          slow[j] = i;
          break;
        }
    printf("%-6s 1-token slowest%s: ", kind, how);
    for (int j = 0; j < 5; j++) printf("#%u put %.0f get %.0f us%s", slow[j], tp[slow[j]], tg[slow[j]], j < 4 ? ", " : "\n");
    double mg = median(tg, iters), g99 = tg[iters * 99 / 100], mping = median(tping, iters);
    double mp = median(tp, iters), p99 = tp[iters * 99 / 100];
    double mrest = median(trest, nrest), mfill = median(tfill, nfill), fmax = tfill[nfill - 1];
    qsort(t, iters, sizeof *t, cmpd);
    printf("%-6s 1-token put+get (32 layers)%s: median %.1f us, p99 %.1f us (median put %.1f, get %.1f, "
           "a ping %.1f us)\n", kind, how, t[iters / 2], t[iters * 99 / 100], mp, mg, mping);
    printf("%-6s   parts%s: put median %.1f p99 %.1f us (the %u puts completing a group: median %.1f "
           "max %.1f; the others: median %.1f) | get median %.1f p99 %.1f | ping median %.1f | "
           "put+get - 2 pings %.1f us\n", kind, how, mp, p99, nfill, mfill, fmax, mrest, mg, g99,
           mping, t[iters / 2] - 2 * mping);
    free(t); free(tp); free(tg); free(tping); free(tfill); free(trest); free(h);
    kvs_close(c);
    if (cs) CK(cudaStreamDestroy(cs));
  }
  return 0;
}

int main(int argc, char **argv)
{
  if (argc < 3) {
    fprintf(stderr, "usage: devseg_test SOCK check|restart|bench PROCS BITS|latency [SPIN]|dump FILE DEV\n"
                    "       devseg_test - cmp DUMP1 DUMP2\n");
    return 2;
  }
  sock = argv[1];
  if (!strcmp(argv[2], "cmp") && argc == 5) return cmpdump(argv[3], argv[4]);
  set_salt(argv[2]);
  if (!strcmp(argv[2], "check")) return check();
  if (!strcmp(argv[2], "restart")) return restart();
  if (!strcmp(argv[2], "latency")) return latency(argc > 3 ? atol(argv[3]) : -1);
  if (!strcmp(argv[2], "dump") && argc == 5) return dump(argv[3], atoi(argv[4]));
  if (!strcmp(argv[2], "bench") && argc == 5) return bench(atoi(argv[3]), atoi(argv[4]));
  return 2;
}
