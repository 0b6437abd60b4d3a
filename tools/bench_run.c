/* SPDX-License-Identifier: MIT */
/* kvsink-bench: latency and bandwidth measurements (bench.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tools/bench.h"

double kvs__bench_now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int kvs__bench_fail(kvs__bench_err *e, int code, kvs_client *c, const char *what)
{
  const char *last = c ? kvs_last_error(c) : "";
  e->code = code;
  snprintf(e->msg, sizeof e->msg, "%s: %s%s%s%s", what, kvs_strerror(code), *last ? " (" : "",
           last, *last ? ")" : "");
  return code;
}

int kvs__bench_connect(const kvs__bench_cfg *g, kvs_client **c, int bits, size_t seg,
                       const char *model_id, uint32_t layers, kvs__bench_err *e)
{
  kvs_model m = {model_id, layers, g->H, g->D, KVS_DTYPE_F16};
  kvs_options o;
  kvs_options_init(&o);
  o.k_bits = o.v_bits = bits;
  o.seg_size = seg;
  int r = kvs_connect(c, g->sock, &m, &o);
  if (r < 0)
    return kvs__bench_fail(e, r, NULL, "connect");
  size_t got;
  kvs_segment(*c, &got);
  if (got < seg) { /* the daemon's max_segment_size */
    kvs_close(*c);
    *c = NULL;
    e->code = -ENOSPC;
    snprintf(e->msg, sizeof e->msg,
             "segment of %zu bytes granted, %zu needed (max_segment_size; try fewer --tokens)",
             got, seg);
    return -ENOSPC;
  }
  return 0;
}

size_t kvs__bench_kvb(const kvs__bench_cfg *g) { return (size_t)g->L * g->T * g->H * g->D * 2; }

static int cmp_d(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static kvs__bench_lat summarize(double *v, int n)
{
  qsort(v, (size_t)n, sizeof *v, cmp_d);
  kvs__bench_lat l = {v[n / 2] * 1e6, v[(int)(n * 0.99)] * 1e6};
  return l;
}

int kvs__bench_latency(const kvs__bench_cfg *g, int iters, kvs__bench_lat *ping,
                       kvs__bench_lat *pg, kvs__bench_err *e)
{
  kvs_client *c;
  int r = kvs__bench_connect(g, &c, 4, 1 << 20, "kvsink-bench-lat", 2, e);
  if (r < 0)
    return r;
  double *v = malloc(sizeof(double) * (size_t)iters);
  if (!v) {
    kvs_close(c);
    return kvs__bench_fail(e, -ENOMEM, NULL, "latency");
  }
  for (int i = 0; i < iters && r == 0; i++) {
    double t0 = kvs__bench_now();
    r = kvs_ping(c);
    v[i] = kvs__bench_now() - t0;
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
    double t0 = kvs__bench_now();
    if (r == 0)
      r = kvs_put(c, &a, NULL);
    if (r == 0)
      r = kvs_get(c, seq, pos, 1, 0, 2, 2 * kvb, 3 * kvb);
    v[i] = kvs__bench_now() - t0;
    pos++;
  }
  if (r == 0)
    *pg = summarize(v, iters);
  else
    kvs__bench_fail(e, r, c, "latency");
  free(v);
  kvs_close(c);
  return r;
}

/* what a bandwidth worker sends back, in one write (< PIPE_BUF: atomic) */
typedef struct bw_res {
  double put, get;
  kvs__bench_err e;
} bw_res;

static void worker(const kvs__bench_cfg *g, int id, int bits, int go_fd, int out_fd)
{
  kvs_client *c = NULL;
  size_t kvb = kvs__bench_kvb(g);
  bw_res res = {0, 0, {0, ""}};
  uint32_t *tok = malloc(sizeof(uint32_t) * g->T);
  char go;
  int r = tok ? kvs__bench_connect(g, &c, bits, 4 * kvb, "kvsink-bench-bw", g->L, &res.e)
              : kvs__bench_fail(&res.e, -ENOMEM, NULL, "worker");
  if (r == 0) {
    uint16_t *seg = kvs_segment(c, NULL);
    for (size_t i = 0; i < kvb; i++) /* K and V: kvb 16-bit words in all */
      seg[i] = (uint16_t)(0x3000 + (i * 2654435761u >> 20) % 0x0c00);
  }
  /* wait for the start even after a failure: the parent counts on us */
  if (read(go_fd, &go, 1) != 1 && r == 0)
    r = kvs__bench_fail(&res.e, -EPIPE, NULL, "start signal");
  for (int k = 0; k < g->reps && r == 0; k++) {
    /* ids differ per worker, rep and run: no dedup shortcut */
    for (uint32_t t = 0; t < g->T; t++)
      tok[t] = (uint32_t)(id * 1000003 + k * 7919 + getpid()) * 31u + t;
    uint64_t seq = (uint64_t)k + 1;
    kvs_put_args a = {.seq = seq, .start = 0, .tokens = tok, .n_tokens = g->T,
                      .layer_begin = 0, .layer_end = g->L, .k_off = 0, .v_off = kvb};
    double t0 = kvs__bench_now();
    r = kvs_put(c, &a, NULL);
    double t1 = kvs__bench_now();
    if (r < 0) {
      kvs__bench_fail(&res.e, r, c, "put");
      break;
    }
    r = kvs_get(c, seq, 0, g->T, 0, g->L, 2 * kvb, 3 * kvb);
    double t2 = kvs__bench_now();
    if (r < 0) {
      kvs__bench_fail(&res.e, r, c, "get");
      break;
    }
    res.put += t1 - t0;
    res.get += t2 - t1;
    if ((r = kvs_release(c, seq)) < 0)
      kvs__bench_fail(&res.e, r, c, "release");
  }
  int ok = write(out_fd, &res, sizeof res) == (ssize_t)sizeof res;
  free(tok);
  kvs_close(c);
  _exit(ok && r == 0 ? 0 : 1);
}

int kvs__bench_bandwidth(const kvs__bench_cfg *g, int n, int bits, kvs__bench_bw *out,
                         kvs__bench_err *e)
{
  int go[2], res[2], started = 0;
  if (pipe(go) < 0)
    return kvs__bench_fail(e, -errno, NULL, "pipe");
  if (pipe(res) < 0) {
    close(go[0]);
    close(go[1]);
    return kvs__bench_fail(e, -errno, NULL, "pipe");
  }
  fflush(NULL);
  for (int i = 0; i < n; i++) {
    pid_t p = fork();
    if (p < 0)
      break;
    if (p == 0) {
      close(go[1]);
      close(res[0]);
      worker(g, i, bits, go[0], res[1]);
    }
    started++;
  }
  close(go[0]);
  close(res[1]);
  /* let the workers connect and fill their segments before the start */
  usleep(300000u + 100000u * (unsigned)n);
  char gobuf[64] = {0};
  int wok = write(go[1], gobuf, (size_t)started) == started;
  close(go[1]);
  double maxput = 0, maxget = 0;
  int got = 0, bad = 0;
  bw_res r2;
  e->code = 0;
  while (read(res[0], &r2, sizeof r2) == (ssize_t)sizeof r2) {
    got++;
    if (r2.e.code < 0) {
      if (!bad++) /* the first failure tells the row's story */
        *e = r2.e;
      continue;
    }
    maxput = r2.put > maxput ? r2.put : maxput;
    maxget = r2.get > maxget ? r2.get : maxget;
  }
  close(res[0]);
  int st, died = 0;
  while (wait(&st) > 0)
    died |= !WIFEXITED(st);
  if (bad)
    return e->code;
  if (started < n || !wok || got != n || died || maxput <= 0 || maxget <= 0) {
    e->code = -EIO;
    snprintf(e->msg, sizeof e->msg, "%d of %d workers started, %d reported%s", started, n, got,
             died ? ", one was killed" : "");
    return -EIO;
  }
  double bytes = 2.0 * (double)kvs__bench_kvb(g) * g->reps * n;
  out->put_gbs = bytes / maxput / 1e9;
  out->get_gbs = bytes / maxget / 1e9;
  return 0;
}
