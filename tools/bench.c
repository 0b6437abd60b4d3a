/* kvsink-bench: request latency and put/get bandwidth through the
 * shared segment, next to a plain memcpy of the same bytes. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <kvsink.h>

static const char *sock;
static uint32_t L = 32, H = 8, D = 128, T = 1024;
static int reps = 4;

static double now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static int connect_bits(kvs_client **c, int bits, size_t seg, const char *id, uint32_t layers)
{
  kvs_model m = {id, layers, H, D, KVS_DTYPE_F16};
  kvs_options o;
  kvs_options_init(&o);
  o.k_bits = o.v_bits = bits;
  o.seg_size = seg;
  int r = kvs_connect(c, sock, &m, &o);
  if (r < 0)
    fprintf(stderr, "kvsink-bench: connect: %s\n", kvs_strerror(r));
  return r;
}

struct lat { double med_us, p99_us; };

static struct lat summarize(double *v, int n)
{
  qsort(v, (size_t)n, sizeof *v, cmp_d);
  struct lat l = {v[n / 2] * 1e6, v[(int)(n * 0.99)] * 1e6};
  return l;
}

/* (a) ping and put+get of one token (2 layers) */
static int latency(int iters, struct lat *ping, struct lat *pg)
{
  kvs_client *c;
  int r = connect_bits(&c, 4, 1 << 20, "kvsink-bench-lat", 2);
  if (r < 0)
    return r;
  double *v = malloc(sizeof(double) * (size_t)iters);
  if (!v) {
    kvs_close(c);
    return -ENOMEM;
  }
  for (int i = 0; i < iters && r == 0; i++) {
    double t0 = now();
    r = kvs_ping(c);
    v[i] = now() - t0;
  }
  if (r == 0)
    *ping = summarize(v, iters);
  size_t kvb = kvs_kv_bytes(c, 1, 0, 2);
  uint8_t *seg = kvs_segment(c, NULL);
  memset(seg, 0x3c, 2 * kvb); /* fp16 1.0 */
  uint64_t seq = 1;
  uint32_t pos = 0;
  for (int i = 0; i < iters && r == 0; i++) {
    if (pos == 512) { /* keep the seq short: the pool stays small */
      r = kvs_release(c, seq++);
      pos = 0;
    }
    uint32_t tok = (uint32_t)i;
    kvs_put_args a = {.seq = seq, .start = pos, .tokens = &tok, .n_tokens = 1,
                      .layer_begin = 0, .layer_end = 2, .k_off = 0, .v_off = kvb};
    double t0 = now();
    if (r == 0)
      r = kvs_put(c, &a, NULL);
    if (r == 0)
      r = kvs_get(c, seq, pos, 1, 0, 2, 2 * kvb, 3 * kvb);
    v[i] = now() - t0;
    pos++;
  }
  if (r == 0)
    *pg = summarize(v, iters);
  else
    fprintf(stderr, "kvsink-bench: latency: %s (%s)\n", kvs_strerror(r), kvs_last_error(c));
  free(v);
  kvs_close(c);
  return r;
}

/* One worker: reps puts of T tokens then reps gets; writes put and get
 * seconds to fd. Token ids differ per worker and rep: no dedup shortcut. */
static int worker(int id, int bits, int go_fd, int out_fd)
{
  kvs_client *c;
  size_t kvb = (size_t)L * T * H * D * 2;
  if (connect_bits(&c, bits, 4 * kvb, "kvsink-bench-bw", L) < 0)
    return 1;
  uint8_t *seg = kvs_segment(c, NULL);
  for (size_t i = 0; i < 2 * kvb / 2; i++)
    ((uint16_t *)seg)[i] = (uint16_t)(0x3000 + (i * 2654435761u >> 20) % 0x0c00);
  uint32_t *tok = malloc(sizeof(uint32_t) * T);
  char go;
  if (!tok || read(go_fd, &go, 1) != 1) {
    kvs_close(c);
    return 1;
  }
  double tput = 0, tget = 0;
  int r = 0;
  for (int k = 0; k < reps && r == 0; k++) {
    for (uint32_t t = 0; t < T; t++)
      tok[t] = (uint32_t)(id * 1000003 + k * 7919 + getpid()) * 31u + t;
    uint64_t seq = (uint64_t)k + 1;
    kvs_put_args a = {.seq = seq, .start = 0, .tokens = tok, .n_tokens = T,
                      .layer_begin = 0, .layer_end = L, .k_off = 0, .v_off = kvb};
    double t0 = now();
    r = kvs_put(c, &a, NULL);
    double t1 = now();
    if (r == 0)
      r = kvs_get(c, seq, 0, T, 0, L, 2 * kvb, 3 * kvb);
    double t2 = now();
    tput += t1 - t0;
    tget += t2 - t1;
    if (r == 0)
      r = kvs_release(c, seq);
  }
  if (r < 0)
    fprintf(stderr, "kvsink-bench: worker %d: %s (%s)\n", id, kvs_strerror(r), kvs_last_error(c));
  double res[2] = {tput, tget};
  int ok = r == 0 && write(out_fd, res, sizeof res) == (ssize_t)sizeof res;
  free(tok);
  kvs_close(c);
  return ok ? 0 : 1;
}

struct bw { double put, get; };

static int bandwidth(int n, int bits, struct bw *out)
{
  int go[2], res[2];
  if (pipe(go) < 0 || pipe(res) < 0)
    return -errno;
  fflush(NULL);
  for (int i = 0; i < n; i++) {
    pid_t p = fork();
    if (p < 0)
      return -errno;
    if (p == 0) {
      close(go[1]);
      close(res[0]);
      _exit(worker(i, bits, go[0], res[1]));
    }
  }
  close(go[0]);
  close(res[1]);
  sleep(1); /* let workers connect and fill their segments before the start */
  char g[64] = {0};
  if (write(go[1], g, (size_t)n) != n)
    return -EIO;
  close(go[1]);
  double maxput = 0, maxget = 0;
  int got = 0;
  double r2[2];
  while (read(res[0], r2, sizeof r2) == (ssize_t)sizeof r2) {
    maxput = r2[0] > maxput ? r2[0] : maxput;
    maxget = r2[1] > maxget ? r2[1] : maxget;
    got++;
  }
  close(res[0]);
  int fail = 0, st;
  while (wait(&st) > 0)
    fail |= !WIFEXITED(st) || WEXITSTATUS(st) != 0;
  if (fail || got != n || maxput <= 0 || maxget <= 0)
    return -EIO;
  /* the workers overlap; the slowest one bounds the aggregate rate */
  double bytes = 2.0 * L * T * H * D * 2 * reps * n;
  out->put = bytes / maxput / 1e9;
  out->get = bytes / maxget / 1e9;
  return 0;
}

static double memcpy_gbs(void)
{
  size_t n = (size_t)L * T * H * D * 2 * 2;
  char *a = malloc(n), *b = malloc(n);
  if (!a || !b) {
    free(a);
    free(b);
    return 0;
  }
  memset(a, 1, n);
  memset(b, 2, n);
  double t0 = now();
  for (int k = 0; k < reps; k++) {
    memcpy(b, a, n);
    a[k] = b[n - 1 - (size_t)k]; /* keep the copies observable */
  }
  double dt = now() - t0;
  free(a);
  free(b);
  return (double)n * reps / dt / 1e9;
}

int main(int argc, char **argv)
{
  static const struct option lo[] = {
    {"socket", required_argument, 0, 's'}, {"clients", required_argument, 0, 'c'},
    {"json", no_argument, 0, 'j'}, {"iters", required_argument, 0, 'i'},
    {"tokens", required_argument, 0, 't'}, {"layers", required_argument, 0, 'l'},
    {"reps", required_argument, 0, 'r'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
  int maxc = 4, json = 0, iters = 20000, ch;
  while ((ch = getopt_long(argc, argv, "s:c:ji:t:l:r:h", lo, NULL)) != -1) {
    switch (ch) {
    case 's': sock = optarg; break;
    case 'c': maxc = atoi(optarg); break;
    case 'j': json = 1; break;
    case 'i': iters = atoi(optarg); break;
    case 't': T = (uint32_t)atoi(optarg); break;
    case 'l': L = (uint32_t)atoi(optarg); break;
    case 'r': reps = atoi(optarg); break;
    default:
      fprintf(ch == 'h' ? stdout : stderr,
              "usage: kvsink-bench [--socket PATH] [--clients N] [--json] [--iters N]\n"
              "                    [--tokens N] [--layers N] [--reps N]\n");
      return ch == 'h' ? 0 : 2;
    }
  }
  if (maxc < 1 || maxc > 64 || iters < 100 || T < 1 || T > 8192 || L < 1 || L > 256 || reps < 1) {
    fprintf(stderr, "kvsink-bench: argument out of range\n");
    return 2;
  }
  struct lat ping = {0, 0}, pg = {0, 0};
  if (latency(iters, &ping, &pg) < 0)
    return 1;
  double mc = memcpy_gbs();
  if (json)
    printf("{\"iters\":%d,\"ping_us\":{\"median\":%.2f,\"p99\":%.2f},"
           "\"put_get_1tok_us\":{\"median\":%.2f,\"p99\":%.2f},"
           "\"shape\":{\"layers\":%u,\"kv_heads\":%u,\"head_dim\":%u,\"tokens\":%u,\"reps\":%d},"
           "\"memcpy_gbs\":%.3f,\"bandwidth\":[",
           iters, ping.med_us, ping.p99_us, pg.med_us, pg.p99_us, L, H, D, T, reps, mc);
  else
    printf("latency (%d iterations)\n  ping             median %8.2f us  p99 %8.2f us\n"
           "  put+get 1 token  median %8.2f us  p99 %8.2f us\n"
           "bandwidth of 16-bit K+V, %u layers x %u heads x %u dim x %u tokens per put\n"
           "  memcpy %.2f GB/s\n",
           iters, ping.med_us, ping.p99_us, pg.med_us, pg.p99_us, L, H, D, T, mc);
  /* 16 = stored raw: the transport alone (segment, protocol, pool copy) */
  static const int bits[] = {16, 8, 4, 2};
  int first = 1, fail = 0;
  for (int n = 1; n <= maxc; n *= 2) {
    for (int b = 0; b < (int)(sizeof bits / sizeof bits[0]); b++) {
      struct bw bw = {0, 0};
      if (bandwidth(n, bits[b], &bw) < 0) {
        fprintf(stderr, "kvsink-bench: bandwidth with %d clients at %d bits failed\n", n, bits[b]);
        fail = 1;
        continue;
      }
      if (json)
        printf("%s{\"clients\":%d,\"bits\":%d,\"put_gbs\":%.3f,\"get_gbs\":%.3f,"
               "\"put_vs_memcpy\":%.4f,\"get_vs_memcpy\":%.4f}",
               first ? "" : ",", n, bits[b], bw.put, bw.get, bw.put / mc, bw.get / mc);
      else
        printf("  %d client%s %2d-bit  put %7.3f GB/s (%.3fx memcpy)  get %7.3f GB/s (%.3fx memcpy)\n",
               n, n > 1 ? "s" : " ", bits[b], bw.put, bw.put / mc, bw.get, bw.get / mc);
      first = 0;
    }
  }
  if (json)
    printf("]}\n");
  return fail;
}
