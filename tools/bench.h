/* SPDX-License-Identifier: MIT */
/* kvsink-bench's parts: the shape of the workload, one error record per
 * measurement (a failed row keeps its error), and the three measurements
 * (latency, bandwidth, sharing across processes), each run in child
 * processes with connections of their own. */
#ifndef KVS_TOOLS_BENCH_H
#define KVS_TOOLS_BENCH_H

#include <stddef.h>
#include <stdint.h>

#include <kvsink.h>

typedef struct kvs__bench_cfg {
  const char *sock;
  uint32_t L, H, D, T; /* layers, kv heads, head dim, tokens per put */
  int reps;            /* puts (and gets) per worker */
} kvs__bench_cfg;

/* Why a measurement failed: the code and the daemon's message. Small and
 * flat: workers send it through a pipe in one write. */
typedef struct kvs__bench_err {
  int code;
  char msg[232];
} kvs__bench_err;

double kvs__bench_now(void);
/* fill e from code and c's last error (c may be NULL); returns code */
int kvs__bench_fail(kvs__bench_err *e, int code, kvs_client *c, const char *what);
int kvs__bench_connect(const kvs__bench_cfg *g, kvs_client **c, int bits, size_t seg,
                       const char *model_id, uint32_t layers, kvs__bench_err *e);
/* Bytes of K (or V) of the workload's put: L x T x H x D x 2. */
size_t kvs__bench_kvb(const kvs__bench_cfg *g);

typedef struct kvs__bench_lat { double med_us, p99_us; } kvs__bench_lat;

/* ping, and put + get of one token (2 layers) */
int kvs__bench_latency(const kvs__bench_cfg *g, int iters, kvs__bench_lat *ping,
                       kvs__bench_lat *pg, kvs__bench_err *e);

typedef struct kvs__bench_bw { double put_gbs, get_gbs; } kvs__bench_bw;

/* n processes at once, each reps x (put of T tokens x L layers, get it,
 * release it); the slowest bounds the aggregate rate. */
int kvs__bench_bandwidth(const kvs__bench_cfg *g, int n, int bits, kvs__bench_bw *out,
                         kvs__bench_err *e);

typedef struct kvs__bench_share {
  uint32_t found, wanted;   /* tokens found by lookups / asked, over all readers */
  double store_ms;          /* the first process's put of the prefix */
  double fetch_ms;          /* a reader's lookup + get of it (median) */
  double own_ms;            /* a reader storing the same size itself (median) */
} kvs__bench_share;

/* One process stores a T-token prefix; n others (started before, their
 * own connections) look it up, bind and get it, then store a prefix of
 * their own of the same size: what sharing saves them. */
int kvs__bench_sharing(const kvs__bench_cfg *g, int n, int bits, kvs__bench_share *out,
                       kvs__bench_err *e);

#endif
