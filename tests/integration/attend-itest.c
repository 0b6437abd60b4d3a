/* SPDX-License-Identifier: MIT */
/* attend-itest: kvs_table_get + kvs_attend against a real kvsinkd, driven
 * by tests/integration/attend.sh and attend-isolation.sh. Modes:
 *   check BITS     batch of 3 seqs (planted 16-bit sink rows at the PFN
 *                  positions, planted outlier channels), every layer:
 *                  kvs_attend == get-then-attend in double within TOL
 *   readonly       the chunk fds a table passes are O_RDONLY: no shared
 *                  writable mmap, no write, no ftruncate; the library's
 *                  mappings cannot be mprotect'ed writable
 *   pressure       blocks of a live table survive a pool that runs full
 *                  (other blocks are evicted, the output is bit-identical);
 *                  after release they are evicted
 *   inodes FILE    write the inodes of the mapped pool chunks to FILE
 *                  (after checking a table of a seq it does not own fails)
 *   disjoint A B   the inode lists A and B have nothing in common
 *   quota          (daemon with table_chunks = 2) a session is passed at
 *                  most 2 chunk fds: the third gets EDQUOT, a new session
 *                  starts afresh; kvs_attend_device refuses a host table
 *                  (-EINVAL, or -ENOTSUP in a libkvsink without CUDA)
 * Exit 0 ok, 1 a failed check (message on stderr). */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <kvsink.h>
#include "client/client_int.h" /* the raw table request of `readonly` */
#include "proto/blocktable.h"

enum { L = 3, H = 4, D = 64, C = H * D, QH = 8, G = 32 };

/* Tolerance, relative to max |v| of the context: kvs_attend and the
 * double reference see the very same dequantized values (kvs_get and the
 * kernel round to the dtype identically), so only kvs_attend's fp32
 * summation differs; tests/kernels/test_attn.c derives 2e-5 * max|v| for
 * that (about ten times what is observed). A wrong code, a lost outlier
 * or a sink row read as quantized moves the output by far more. */
#define TOL 2e-5

static const char *sock;

#define FAIL(...) do { fprintf(stderr, "attend-itest: " __VA_ARGS__); fputc('\n', stderr); exit(1); } while (0)

static uint64_t mix(uint64_t x)
{
  x ^= x >> 33; x *= 0xff51afd7ed558ccdULL; x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL; x ^= x >> 33;
  return x;
}

/* Value of (seed, layer, pos, channel, K/V): uniform in [-1, 1), sink
 * positions (pos < 4) 8x larger, and channel 5 and 77 of K with planted
 * outliers (20x) at every 7th position. */
static float val(uint32_t seed, uint32_t l, uint32_t pos, uint32_t i, uint32_t kv)
{
  uint64_t x = mix(((uint64_t)seed << 44) ^ ((uint64_t)l << 36) ^ ((uint64_t)pos << 12) ^
                   ((uint64_t)i << 1) ^ kv);
  float f = (float)((double)(x >> 11) / 9007199254740992.0 * 2.0 - 1.0);
  if (pos < 4)
    f *= 8.0f;
  if (!kv && (i == 5 || i == 77) && pos % 7 == 3)
    f *= 20.0f;
  return f;
}

static kvs_client *conn(int bits, const char *model)
{
  kvs_model m = {model, L, H, D, KVS_DTYPE_F16};
  kvs_options o;
  kvs_client *c;
  kvs_options_init(&o);
  o.k_bits = o.v_bits = bits;
  o.policy = KVS_POLICY_PFN;
  o.pfn = 4;
  o.outliers = 0.01f;
  o.seg_size = 16u << 20;
  int r = kvs_connect(&c, sock, &m, &o);
  if (r < 0)
    FAIL("connect: %s", kvs_strerror(r));
  return c;
}

/* Put tokens [0, n) of seed into seq (all layers), in puts of at most 97. */
static int put(kvs_client *c, uint64_t seq, uint32_t seed, uint32_t n)
{
  size_t sz;
  uint16_t *seg = kvs_segment(c, &sz);
  float *f = malloc(sizeof(float) * C);
  uint32_t tokens[97];
  for (uint32_t s = 0; s < n; s += 97) {
    uint32_t m = n - s < 97 ? n - s : 97;
    size_t kvb = kvs_kv_bytes(c, m, 0, L);
    for (uint32_t kv = 0; kv < 2; kv++)
      for (uint32_t l = 0; l < L; l++)
        for (uint32_t t = 0; t < m; t++) {
          for (uint32_t i = 0; i < C; i++)
            f[i] = val(seed, l, s + t, i, kv);
          kvs_f16_from_f32(seg + (kv * kvb / 2) + ((size_t)l * m + t) * C, f, C);
        }
    for (uint32_t t = 0; t < m; t++)
      tokens[t] = seed * 100003u + (s + t) * 7u + 1;
    kvs_put_args a = {.seq = seq, .start = s, .tokens = tokens, .n_tokens = m,
                      .layer_begin = 0, .layer_end = L, .k_off = 0, .v_off = kvb};
    int r = kvs_put(c, &a, NULL);
    if (r < 0) {
      free(f);
      return r;
    }
  }
  free(f);
  return 0;
}

#define SCRATCH (8u << 20)   /* table scratch: the upper half of the segment */

static kvs_table *table(kvs_client *c, uint64_t seq)
{
  kvs_table *t;
  int r = kvs_table_get(c, seq, 0, L, SCRATCH, SCRATCH, &t);
  if (r < 0)
    FAIL("table of seq %llu: %s (%s)", (unsigned long long)seq, kvs_strerror(r),
         kvs_last_error(c));
  return t;
}

static void query(uint32_t seed, float *q, uint32_t n)
{
  for (uint32_t i = 0; i < n; i++)
    q[i] = (float)((double)(mix(seed * 7919u + i) >> 11) / 9007199254740992.0 * 4.0 - 2.0);
}

/* get-then-attend in double for seq (n tokens) in layer l; returns max|v|. */
static double reference(kvs_client *c, uint64_t seq, uint32_t n, uint32_t l, const float *q,
                        double *out)
{
  size_t sz;
  uint16_t *seg = kvs_segment(c, &sz);
  size_t kvb = kvs_kv_bytes(c, n, l, l + 1);
  int r = kvs_get(c, seq, 0, n, l, l + 1, 0, kvb);
  if (r < 0)
    FAIL("get: %s", kvs_strerror(r));
  float *k = malloc(sizeof(float) * n * C), *v = malloc(sizeof(float) * n * C);
  double *s = malloc(sizeof(double) * n), vmax = 0;
  kvs_f16_to_f32(k, seg, (size_t)n * C);
  kvs_f16_to_f32(v, seg + kvb / 2, (size_t)n * C);
  for (size_t i = 0; i < (size_t)n * C; i++)
    vmax = fmax(vmax, fabs(v[i]));
  for (uint32_t h = 0; h < QH; h++) {
    uint32_t j = h / (QH / H);
    double mx = -INFINITY, sum = 0;
    for (uint32_t t = 0; t < n; t++) {
      double d = 0;
      for (uint32_t e = 0; e < D; e++)
        d += (double)q[h * D + e] * k[(size_t)t * C + j * D + e];
      s[t] = d / sqrt((double)D);
      mx = fmax(mx, s[t]);
    }
    for (uint32_t e = 0; e < D; e++)
      out[h * D + e] = 0;
    for (uint32_t t = 0; t < n; t++) {
      double w = exp(s[t] - mx);
      sum += w;
      for (uint32_t e = 0; e < D; e++)
        out[h * D + e] += w * v[(size_t)t * C + j * D + e];
    }
    for (uint32_t e = 0; e < D; e++)
      out[h * D + e] /= sum;
  }
  free(k);
  free(v);
  free(s);
  return vmax;
}

static int mode_check(int bits)
{
  char model[32];
  snprintf(model, sizeof model, "attend-%d", bits);
  kvs_client *c = conn(bits, model);
  /* 7 blocks + 13 residual, 2 blocks exactly, residual only */
  const uint32_t lens[3] = {7 * G + 13, 2 * G, 20};
  kvs_table *t[3];
  for (uint32_t i = 0; i < 3; i++) {
    int r = put(c, i + 1, 11 + i, lens[i]);
    if (r < 0)
      FAIL("put: %s (%s)", kvs_strerror(r), kvs_last_error(c));
    t[i] = table(c, i + 1);
    if (kvs_table_tokens(t[i], 1) != lens[i])
      FAIL("table of seq %u holds %u tokens, put %u", i + 1, kvs_table_tokens(t[i], 1), lens[i]);
  }
  float q[3 * QH * D], out[3 * QH * D];
  double ref[QH * D], worst = 0, qerr = 0;
  query(bits, q, 3 * QH * D);
  uint32_t compared = 0;
  for (uint32_t l = 0; l < L; l++) {
    int r = kvs_attend(c, t, 3, l, q, KVS_DTYPE_F32, QH, out);
    if (r < 0)
      FAIL("attend: %s", kvs_strerror(r));
    for (uint32_t i = 0; i < 3; i++) {
      double vmax = reference(c, i + 1, lens[i], l, q + i * QH * D, ref);
      for (uint32_t e = 0; e < QH * D; e++, compared++) {
        double err = fabs(out[i * QH * D + e] - ref[e]) / vmax;
        worst = fmax(worst, err);
        if (!(err <= TOL))
          FAIL("%d bits, layer %u, seq %u, [%u]: attend %.9g, get-then-attend %.9g", bits, l,
               i + 1, e, out[i * QH * D + e], ref[e]);
      }
      /* the unquantized data, to show the comparison sees quantization */
      for (uint32_t h = 0; h < QH && i == 0; h++) {
        uint32_t j = h / (QH / H);
        double mx = -INFINITY, sum = 0, o[D] = {0};
        double *s = malloc(sizeof(double) * lens[i]);
        for (uint32_t tt = 0; tt < lens[i]; tt++) {
          double d = 0;
          for (uint32_t e = 0; e < D; e++)
            d += (double)q[h * D + e] * val(11, l, tt, j * D + e, 0);
          s[tt] = d / sqrt((double)D);
          mx = fmax(mx, s[tt]);
        }
        for (uint32_t tt = 0; tt < lens[i]; tt++) {
          double w = exp(s[tt] - mx);
          sum += w;
          for (uint32_t e = 0; e < D; e++)
            o[e] += w * val(11, l, tt, j * D + e, 1);
        }
        for (uint32_t e = 0; e < D; e++)
          qerr = fmax(qerr, fabs(o[e] / sum - out[h * D + e]) / vmax);
        free(s);
      }
    }
  }
  /* a 16-bit query is the fp32 one rounded: the same output bit for bit */
  uint16_t q16[3 * QH * D];
  float qr[3 * QH * D], out16[3 * QH * D], outr[3 * QH * D];
  kvs_f16_from_f32(q16, q, 3 * QH * D);
  kvs_f16_to_f32(qr, q16, 3 * QH * D);
  if (kvs_attend(c, t, 3, 0, q16, KVS_DTYPE_F16, QH, out16) < 0 ||
      kvs_attend(c, t, 3, 0, qr, KVS_DTYPE_F32, QH, outr) < 0)
    FAIL("attend with an fp16 query");
  if (memcmp(out16, outr, sizeof out16))
    FAIL("an fp16 query gives another output than the same values in fp32");
  if (bits == 2 && qerr < 10 * TOL)
    FAIL("2-bit output within %.3g of the unquantized one: the check sees no quantization", qerr);
  printf("attend %d bits: %u values, worst |attend - get-then-attend| = %.3g of max|v| "
         "(tolerance %g); vs unquantized %.3g\n", bits, compared, worst, TOL, qerr);
  for (uint32_t i = 0; i < 3; i++)
    kvs_table_free(t[i]);
  kvs_close(c);
  return 0;
}

static int mode_readonly(void)
{
  kvs_client *a = conn(4, "attend-ro");
  if (put(a, 1, 5, 4 * G) < 0)
    FAIL("put");
  /* the raw op, so the fds themselves can be tried */
  kvs__req req;
  kvs__rep rep;
  int fds[KVS_TABLE_MAX_FDS];
  uint32_t n = 0;
  memset(&req, 0, sizeof req);
  req.op = KVS_OP_TABLE;
  req.seq = 1;
  req.layer_begin = 0;
  req.layer_end = L;
  req.k_off = SCRATCH;
  req.n_tokens = SCRATCH;
  int r = kvs__conn_call_fds(&a->conn, &req, &rep, fds, KVS_TABLE_MAX_FDS, &n);
  kvs__rep_free(&rep);
  if (r < 0 || n == 0)
    FAIL("raw table: %d, %u fds", r, n);
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  for (uint32_t i = 0; i < n; i++) {
    int fl = fcntl(fds[i], F_GETFL);
    if (fl < 0 || (fl & O_ACCMODE) != O_RDONLY)
      FAIL("chunk fd %u is not O_RDONLY (flags %#x)", i, fl);
    void *p = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED, fds[i], 0);
    if (p != MAP_FAILED || errno != EACCES)
      FAIL("chunk fd %u maps shared and writable", i);
    p = mmap(NULL, page, PROT_READ, MAP_SHARED, fds[i], 0);
    if (p == MAP_FAILED)
      FAIL("chunk fd %u does not map read-only: %s", i, strerror(errno));
    if (mprotect(p, page, PROT_READ | PROT_WRITE) == 0 || errno != EACCES)
      FAIL("a read-only chunk mapping became writable");
    munmap(p, page);
    char b = 0;
    if (write(fds[i], &b, 1) >= 0 || ftruncate(fds[i], 0) == 0)
      FAIL("chunk fd %u is writable", i);
    close(fds[i]);
  }
  /* the library's own mappings (a second session gets its own fds) */
  kvs_client *b = conn(4, "attend-ro");
  if (put(b, 2, 6, 3 * G) < 0)
    FAIL("put");
  kvs_table *t = table(b, 2);
  FILE *f = fopen("/proc/self/maps", "r");
  char line[512];
  uint32_t seen = 0;
  while (f && fgets(line, sizeof line, f)) {
    unsigned long lo, hi;
    char perm[8];
    if (!strstr(line, "kvsink-chunk") || sscanf(line, "%lx-%lx %7s", &lo, &hi, perm) != 3)
      continue;
    seen++;
    if (perm[1] != '-')
      FAIL("a pool chunk is mapped writable: %s", line);
    if (mprotect((void *)lo, hi - lo, PROT_READ | PROT_WRITE) == 0 || errno != EACCES)
      FAIL("mprotect made a pool chunk writable");
  }
  if (f)
    fclose(f);
  if (seen == 0)
    FAIL("no pool chunk mapped after kvs_table_get");
  printf("readonly: %u raw fds and %u library mappings refuse writing\n", n, seen);
  kvs_table_free(t);
  kvs_close(b);
  kvs_close(a);
  return 0;
}

static uint64_t evictions(void)
{
  kvs_admin *ad;
  kvs_stats st;
  if (kvs_admin_connect(&ad, sock) < 0 || kvs_admin_stats(ad, &st) < 0)
    FAIL("admin stats");
  kvs_admin_close(ad);
  return st.evictions;
}

static int mode_pressure(void)
{
  kvs_client *a = conn(4, "attend-p"), *b = conn(4, "attend-p");
  if (put(a, 1, 21, 8 * G) < 0)
    FAIL("put a");
  kvs_table *t = table(a, 1);
  float q[QH * D], out0[QH * D], out1[QH * D];
  query(3, q, QH * D);
  if (kvs_attend(a, &t, 1, 2, q, KVS_DTYPE_F32, QH, out0) < 0)
    FAIL("attend");
  /* unreferenced blocks for the pressure to take */
  if (put(b, 9, 22, 8 * G) < 0 || kvs_release(b, 9) < 0)
    FAIL("put/release b 9");
  uint64_t ev0 = evictions();
  int r = 0;
  uint32_t s;
  for (s = 100; s < 100000 && r == 0; s++)
    r = put(b, s, s, 8 * G);
  if (r != -ENOSPC)
    FAIL("filling the pool ended with %s, not ENOSPC", kvs_strerror(r));
  uint64_t ev1 = evictions();
  if (ev1 <= ev0)
    FAIL("the full pool evicted nothing (%llu)", (unsigned long long)ev1);
  if (kvs_attend(a, &t, 1, 2, q, KVS_DTYPE_F32, QH, out1) < 0)
    FAIL("attend after pressure");
  if (memcmp(out0, out1, sizeof out0))
    FAIL("a pinned table's output changed under pool pressure");
  /* released: its blocks go to the next puts */
  kvs_table_free(t);
  if (kvs_release(a, 1) < 0)
    FAIL("release");
  r = put(b, s + 1, s + 1, 8 * G);
  uint64_t ev2 = evictions();
  /* the same size failed with ENOSPC before the release */
  if (r < 0 || ev2 <= ev1)
    FAIL("after release: put %s, evictions %llu -> %llu", kvs_strerror(r),
         (unsigned long long)ev1, (unsigned long long)ev2);
  printf("pressure: %u seqs filled the pool, %llu evictions, the table's output unchanged; "
         "after release %llu more\n", s - 100, (unsigned long long)(ev1 - ev0),
         (unsigned long long)(ev2 - ev1));
  kvs_close(b);
  kvs_close(a);
  return 0;
}

static int mode_inodes(const char *path)
{
  kvs_client *c = conn(4, "attend-iso");
  kvs_table *t = NULL;
  /* nobody's seq 1 but ours: a table of a seq this session does not own */
  int r = kvs_table_get(c, 1, 0, L, SCRATCH, SCRATCH, &t);
  if (r != -ENOENT)
    FAIL("table of a seq not ours: %s", kvs_strerror(r));
  if (put(c, 1, getuid() + 1, 4 * G) < 0)
    FAIL("put");
  t = table(c, 1);
  FILE *f = fopen("/proc/self/maps", "r"), *o = fopen(path, "w");
  char line[512];
  uint32_t n = 0;
  while (f && o && fgets(line, sizeof line, f)) {
    unsigned long ino;
    if (strstr(line, "kvsink-chunk") && sscanf(line, "%*s %*s %*s %*s %lu", &ino) == 1) {
      fprintf(o, "%lu\n", ino);
      n++;
    }
  }
  if (!f || !o || fclose(o) != 0)
    FAIL("cannot write %s", path);
  fclose(f);
  if (n == 0)
    FAIL("no pool chunk mapped");
  kvs_table_free(t);
  kvs_close(c);
  return 0;
}

static int mode_disjoint(const char *a, const char *b)
{
  unsigned long x[4096], y;
  size_t n = 0, m = 0;
  FILE *f = fopen(a, "r"), *g = fopen(b, "r");
  if (!f || !g)
    FAIL("cannot read the lists");
  while (n < 4096 && fscanf(f, "%lu", &x[n]) == 1)
    n++;
  while (fscanf(g, "%lu", &y) == 1) {
    m++;
    for (size_t i = 0; i < n; i++)
      if (x[i] == y)
        FAIL("both uids mapped pool chunk inode %lu", y);
  }
  fclose(f);
  fclose(g);
  if (!n || !m)
    FAIL("an empty list (%zu, %zu)", n, m);
  printf("disjoint: %zu and %zu chunks, none shared\n", n, m);
  return 0;
}

static int mode_quota(void)
{
  kvs_client *a = conn(4, "attend-q"), *b = conn(4, "attend-q");
  /* 2 groups: one chunk of blocks and one of sink rows (PFN 4) */
  if (put(a, 1, 31, 2 * G) < 0)
    FAIL("put a 1");
  kvs_table *t = table(a, 1), *t2 = NULL;
  float q[QH * D], out[QH * D];
  query(5, q, QH * D);
  int r = kvs_attend_device(a, &t, 1, 0, q, KVS_DTYPE_F32, QH, out, NULL, NULL);
#ifdef HAVE_CUDA
  if (r != -EINVAL)
    FAIL("kvs_attend_device on a host table: %s, not EINVAL", kvs_strerror(r));
#else
  if (r != -ENOTSUP)
    FAIL("kvs_attend_device without CUDA: %s, not ENOTSUP", kvs_strerror(r));
#endif
  /* the same chunks again: nothing new is passed */
  kvs_table_free(t);
  t = table(a, 1);
  /* 40 more groups of this space need a third chunk (1 MiB chunks of a
   * 64M pool, about 100 blocks of 3 layers each) */
  if (put(a, 2, 32, 40 * G) < 0)
    FAIL("put a 2");
  r = kvs_table_get(a, 2, 0, L, SCRATCH, SCRATCH, &t2);
  if (r != -EDQUOT || t2)
    FAIL("table past table_chunks: %s, not EDQUOT", kvs_strerror(r));
  if (!strstr(kvs_last_error(a), "table_chunks"))
    FAIL("EDQUOT without table_chunks in its message: %s", kvs_last_error(a));
  /* the first table still works, and a new session has its own count */
  if (kvs_attend(a, &t, 1, 0, q, KVS_DTYPE_F32, QH, out) < 0)
    FAIL("attend after EDQUOT");
  if (put(b, 1, 33, 2 * G) < 0)
    FAIL("put b 1");
  kvs_table *tb = table(b, 1);
  printf("quota: the third chunk fd of a session got EDQUOT, a new session took a table\n");
  kvs_table_free(tb);
  kvs_table_free(t);
  kvs_close(b);
  kvs_close(a);
  return 0;
}

int main(int argc, char **argv)
{
  if (argc < 3)
    FAIL("usage: attend-itest SOCK check BITS | readonly | pressure | inodes FILE | disjoint A B");
  sock = argv[1];
  if (!strcmp(argv[2], "check") && argc == 4)
    return mode_check(atoi(argv[3]));
  if (!strcmp(argv[2], "readonly"))
    return mode_readonly();
  if (!strcmp(argv[2], "quota"))
    return mode_quota();
  if (!strcmp(argv[2], "pressure"))
    return mode_pressure();
  if (!strcmp(argv[2], "inodes") && argc == 4)
    return mode_inodes(argv[3]);
  if (!strcmp(argv[2], "disjoint") && argc == 5)
    return mode_disjoint(argv[3], argv[4]);
  FAIL("unknown mode %s", argv[2]);
}
