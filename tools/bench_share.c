/* SPDX-License-Identifier: MIT */
/* kvsink-bench: sharing across processes (bench.h). The readers connect
 * before the prefix exists and wait; the parent stores it, then starts
 * them at once, so each lookup races only the other readers. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tools/bench.h"

typedef struct share_res {
  uint32_t found;
  double fetch, own;
  kvs__bench_err e;
} share_res;

static void fill(const kvs__bench_cfg *g, kvs_client *c)
{
  uint16_t *seg = kvs_segment(c, NULL);
  size_t words = kvs__bench_kvb(g); /* K and V */
  for (size_t i = 0; i < words; i++)
    seg[i] = (uint16_t)(0x3000 + (i * 2654435761u >> 20) % 0x0c00);
}

static void reader(const kvs__bench_cfg *g, int bits, const uint32_t *prefix, uint32_t own_base,
                   int go_fd, int out_fd)
{
  kvs_client *c = NULL;
  size_t kvb = kvs__bench_kvb(g);
  share_res res = {0, 0, 0, {0, ""}};
  uint32_t *tok = malloc(sizeof(uint32_t) * g->T);
  char go;
  int r = tok ? kvs__bench_connect(g, &c, bits, 4 * kvb, "kvsink-bench-share", g->L, &res.e)
              : kvs__bench_fail(&res.e, -ENOMEM, NULL, "reader");
  if (r == 0)
    fill(g, c);
  if (read(go_fd, &go, 1) != 1 && r == 0)
    r = kvs__bench_fail(&res.e, -EPIPE, NULL, "start signal");
  if (r == 0) {
    double t0 = kvs__bench_now();
    int n = kvs_lookup(c, 1, prefix, g->T, 1);
    r = n < 0 ? n : n > 0 ? kvs_get(c, 1, 0, (uint32_t)n, 0, g->L, 2 * kvb, 3 * kvb) : 0;
    res.fetch = kvs__bench_now() - t0;
    if (r < 0)
      kvs__bench_fail(&res.e, r, c, n < 0 ? "lookup" : "get");
    else
      res.found = (uint32_t)n;
  }
  if (r == 0 && (r = kvs_release(c, 1)) < 0)
    kvs__bench_fail(&res.e, r, c, "release");
  if (r == 0) {
    /* the alternative: store a prefix of the same size itself */
    for (uint32_t t = 0; t < g->T; t++)
      tok[t] = own_base + t;
    kvs_put_args a = {.seq = 2, .start = 0, .tokens = tok, .n_tokens = g->T,
                      .layer_begin = 0, .layer_end = g->L, .k_off = 0, .v_off = kvb};
    double t0 = kvs__bench_now();
    r = kvs_put(c, &a, NULL);
    res.own = kvs__bench_now() - t0;
    if (r < 0)
      kvs__bench_fail(&res.e, r, c, "own put");
    else
      kvs_release(c, 2);
  }
  int ok = write(out_fd, &res, sizeof res) == (ssize_t)sizeof res;
  free(tok);
  kvs_close(c);
  _exit(ok && r == 0 ? 0 : 1);
}

static int cmp_d(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* the parent: store the prefix (seq kept bound until the readers are done,
 * so nothing can evict it under them) */
static int store(const kvs__bench_cfg *g, int bits, const uint32_t *prefix, kvs_client **c,
                 double *dt, kvs__bench_err *e)
{
  size_t kvb = kvs__bench_kvb(g);
  int r = kvs__bench_connect(g, c, bits, 2 * kvb, "kvsink-bench-share", g->L, e);
  if (r < 0)
    return r;
  fill(g, *c);
  kvs_put_args a = {.seq = 1, .start = 0, .tokens = prefix, .n_tokens = g->T,
                    .layer_begin = 0, .layer_end = g->L, .k_off = 0, .v_off = kvb};
  double t0 = kvs__bench_now();
  r = kvs_put(*c, &a, NULL);
  *dt = kvs__bench_now() - t0;
  return r < 0 ? kvs__bench_fail(e, r, *c, "storing the prefix") : 0;
}

int kvs__bench_sharing(const kvs__bench_cfg *g, int n, int bits, kvs__bench_share *out,
                       kvs__bench_err *e)
{
  uint32_t *prefix = malloc(sizeof(uint32_t) * g->T);
  double *fetch = calloc((size_t)n, sizeof(double)), *own = calloc((size_t)n, sizeof(double));
  int go[2] = {-1, -1}, res[2] = {-1, -1}, started = 0, r = 0;
  kvs_client *c = NULL;
  e->code = 0;
  if (!prefix || !fetch || !own || pipe(go) < 0 || pipe(res) < 0) {
    r = kvs__bench_fail(e, prefix && fetch && own ? -errno : -ENOMEM, NULL, "sharing");
    for (int i = 0; i < 2; i++)
      if (go[i] >= 0)
        close(go[i]);
    goto out;
  }
  /* ids of this run only: an earlier run's blocks must not answer */
  uint32_t base = (uint32_t)getpid() * 2654435761u ^ (uint32_t)time(NULL) * 40503u;
  for (uint32_t t = 0; t < g->T; t++)
    prefix[t] = base + t;
  fflush(NULL);
  for (int i = 0; i < n; i++) {
    pid_t p = fork();
    if (p < 0)
      break;
    if (p == 0) {
      close(go[1]);
      close(res[0]);
      reader(g, bits, prefix, base + (uint32_t)(i + 1) * 0x01000000u, go[0], res[1]);
    }
    started++;
  }
  close(go[0]);
  close(res[1]);
  r = store(g, bits, prefix, &c, &out->store_ms, e);
  usleep(200000u + 50000u * (unsigned)n); /* readers connected and filled */
  char gobuf[64] = {0};
  int wok = write(go[1], gobuf, (size_t)started) == started;
  close(go[1]);
  share_res sr;
  int got = 0, ok = 0;
  out->found = 0;
  out->wanted = (uint32_t)n * g->T;
  while (read(res[0], &sr, sizeof sr) == (ssize_t)sizeof sr) {
    got++;
    if (sr.e.code < 0) {
      if (r == 0 && e->code == 0)
        *e = sr.e;
      continue;
    }
    out->found += sr.found;
    fetch[ok] = sr.fetch;
    own[ok++] = sr.own;
  }
  close(res[0]);
  int st;
  while (wait(&st) > 0)
    ;
  if (r == 0 && e->code < 0)
    r = e->code;
  if (r == 0 && (started < n || !wok || got != n)) {
    e->code = r = -EIO;
    snprintf(e->msg, sizeof e->msg, "%d of %d readers started, %d reported", started, n, got);
  }
  if (r == 0) {
    qsort(fetch, (size_t)ok, sizeof *fetch, cmp_d);
    qsort(own, (size_t)ok, sizeof *own, cmp_d);
    out->fetch_ms = fetch[ok / 2] * 1e3;
    out->own_ms = own[ok / 2] * 1e3;
    out->store_ms *= 1e3;
  }
out:
  if (c)
    kvs_release(c, 1);
  kvs_close(c);
  free(prefix);
  free(fetch);
  free(own);
  return r;
}
