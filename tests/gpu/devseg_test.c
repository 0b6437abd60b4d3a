/* Device segments through kvsinkd on a GPU (tests/gpu/devseg.sh runs it).
 *   devseg_test SOCK check            put/get from the device segment vs the host
 *                                     segment at 16/8/4/2 bits: bit-exact
 *   devseg_test SOCK restart          put, wait for a line on stdin (the script
 *                                     restarts kvsinkd), expect a clear error,
 *                                     kvs_reconnect, put/get again
 *   devseg_test SOCK bench PROCS BITS put/get bandwidth of 1,024 tokens x 32 layers
 *                                     x 8 heads x 128 (fp16) per process, device
 *                                     and host segments, next to cudaMemcpy D2D
 *   devseg_test SOCK latency          1-token put+get, median and p99 (us)
 *   devseg_test SOCK dump FILE DEV    outputs at 16/8/4/2 bits into FILE (DEV 1:
 *                                     device segment, 0: host segment)
 * Client buffers are CUDA runtime allocations; exit 0 = pass. */
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
      fails += !ok;
    }
    kvs_close(cd);
    kvs_close(ch);
  }
  /* two clients at once, each its own segment */
  kvs_client *a = conn(L, 4, 1, 4 * b), *c2 = conn(L, 4, 1, 4 * b);
  int ra = put_get(a, 1, 7, 100, n, L, h, h + e, o[0], o[1]);
  int rb = put_get(c2, 1, 7, 100, n, L, h + e, h, o[2], o[3]);
  int ok = ra == 0 && rb == 0 && kvs_device_segment(a, NULL) != kvs_device_segment(c2, NULL) &&
           memcmp(o[0], o[2], b) != 0;
  printf("%s: two clients with their own device segments\n", ok ? "PASS" : "FAIL");
  fails += !ok;
  kvs_close(a);
  kvs_close(c2);
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
    int r = put_get(c, dev, 1, 1000, n, L, h, h + e, ko, vo);
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
static void bench1(int bits, int dev, double *put, double *get)
{
  const uint32_t n = 1024, L = 32, iters = 6;
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
  for (uint32_t it = 0; it < iters; it++) {
    for (uint32_t i = 0; i < n; i++) tok[i] = (uint32_t)getpid() * 7919u + it * n + i;
    /* the engine's K/V into the segment (device to device, or down to host) */
    double t0 = now();
    CK(cudaMemcpy(seg, dk, b, cudaMemcpyDefault));
    CK(cudaMemcpy(seg + b, dv, b, cudaMemcpyDefault));
    double t1 = now();
    kvs_put_args a = { .seq = it, .tokens = tok, .n_tokens = n, .layer_end = L, .k_off = 0,
                       .v_off = b };
    int r = dev ? kvs_put_device(c, &a, NULL) : kvs_put(c, &a, NULL);
    double t2 = now();
    if (r == 0)
      r = dev ? kvs_get_device(c, it, 0, n, 0, L, 2 * b, 3 * b) : kvs_get(c, it, 0, n, 0, L, 2 * b, 3 * b);
    double t3 = now();
    if (r == 0) {
      CK(cudaMemcpy(dk, seg + 2 * b, b, cudaMemcpyDefault));
      CK(cudaMemcpy(dv, seg + 3 * b, b, cudaMemcpyDefault));
    }
    double t4 = now();
    if (r < 0) { fprintf(stderr, "bench: %s (%s)\n", kvs_strerror(r), kvs_last_error(c)); exit(1); }
    kvs_release(c, it);
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
 * CUDA only after the children ran (CUDA does not survive a fork). */
static int bench(int procs, int bits)
{
  double res[2][4];
  for (int dev = 1; dev >= 0; dev--) {
    int pfd[2];
    if (pipe(pfd) < 0) return 1;
    for (int p = 0; p < procs; p++)
      if (fork() == 0) {
        double a[2], g[2];
        close(pfd[0]);
        bench1(bits, dev, a, g);
        if (write(pfd[1], (double[4]){a[0], g[0], a[1], g[1]}, sizeof(double[4])) < 0) _exit(1);
        _exit(0);
      }
    close(pfd[1]);
    double sum[4] = {0, 0, 0, 0}, v[4];
    int got = 0;
    while (read(pfd[0], v, sizeof v) == (ssize_t)sizeof v) {
      for (int i = 0; i < 4; i++) sum[i] += v[i];
      got++;
    }
    close(pfd[0]);
    while (wait(NULL) > 0) {}
    if (got != procs) { printf("FAIL: bench %d procs %d bits: %d of them finished\n", procs, bits, got); return 1; }
    memcpy(res[dev], sum, sizeof sum);
  }
  double dd = d2d();
  for (int dev = 1; dev >= 0; dev--)
    printf("%-6s procs %d bits %2d | put %7.1f GB/s %5.1f%% | get %7.1f GB/s %5.1f%% | with client copies: put %7.1f get %7.1f GB/s | D2D %7.1f GB/s\n",
           dev ? "device" : "host", procs, bits, res[dev][0], 100 * res[dev][0] / dd, res[dev][1],
           100 * res[dev][1] / dd, res[dev][2], res[dev][3], dd);
  return 0;
}

static int cmpd(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static int latency(void)
{
  const uint32_t L = 32, iters = 2000;
  for (int dev = 1; dev >= 0; dev--) {
    kvs_client *c = conn(L, 4, dev, 64u << 20);
    size_t b = kvs_kv_bytes(c, 1, 0, L);
    uint16_t *h = calloc(1, 2 * b);
    fill(h, b);
    uint8_t *seg = dev ? kvs_device_segment(c, NULL) : kvs_segment(c, NULL);
    CK(cudaMemcpy(seg, h, 2 * b, cudaMemcpyDefault));
    double *t = malloc(iters * sizeof *t);
    for (uint32_t i = 0; i < iters; i++) {
      uint32_t tok = i;
      double t0 = now();
      kvs_put_args a = { .seq = 1, .start = i, .tokens = &tok, .n_tokens = 1, .layer_end = L,
                         .k_off = 0, .v_off = b };
      int r = dev ? kvs_put_device(c, &a, NULL) : kvs_put(c, &a, NULL);
      if (r == 0) r = dev ? kvs_get_device(c, 1, i, 1, 0, L, 2 * b, 3 * b) : kvs_get(c, 1, i, 1, 0, L, 2 * b, 3 * b);
      t[i] = (now() - t0) * 1e6;
      if (r < 0) { fprintf(stderr, "latency: %s (%s)\n", kvs_strerror(r), kvs_last_error(c)); return 1; }
    }
    qsort(t, iters, sizeof *t, cmpd);
    printf("%-6s 1-token put+get (32 layers): median %.1f us, p99 %.1f us\n", dev ? "device" : "host",
           t[iters / 2], t[iters * 99 / 100]);
    kvs_close(c);
  }
  return 0;
}

int main(int argc, char **argv)
{
  if (argc < 3) {
    fprintf(stderr, "usage: devseg_test SOCK check|restart|bench PROCS BITS|latency\n");
    return 2;
  }
  sock = argv[1];
  if (!strcmp(argv[2], "check")) return check();
  if (!strcmp(argv[2], "restart")) return restart();
  if (!strcmp(argv[2], "latency")) return latency();
  if (!strcmp(argv[2], "dump") && argc == 5) return dump(argv[3], atoi(argv[4]));
  if (!strcmp(argv[2], "bench") && argc == 5) return bench(atoi(argv[3]), atoi(argv[4]));
  return 2;
}
