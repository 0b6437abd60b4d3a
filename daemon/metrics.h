/* SPDX-License-Identifier: MIT */
/* Prometheus metrics: request counts and latency histograms kept by the
 * request layer, and the text exposition of them with the store's stats
 * and the spaces list (served by daemon/httpd.c). No libuv here, so the
 * output can be checked by a unit test and promtool. */
#ifndef KVS_DAEMON_METRICS_H
#define KVS_DAEMON_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "proto/proto.h"
#include "store/store.h"

/* Latency buckets: 1-2.5-5 per decade from 10 us to 10 s (upper bounds
 * in ns), then +Inf. Fixed, so every daemon's histograms add up. */
#define KVS_METRICS_BUCKETS 19

/* The ops whose store call is timed. */
enum { KVS_METRICS_PUT, KVS_METRICS_GET, KVS_METRICS_LOOKUP, KVS_METRICS__TIMED };

typedef struct kvs__histogram {
  uint64_t count[KVS_METRICS_BUCKETS + 1]; /* per bucket, not cumulative; last: +Inf */
  uint64_t sum_ns;
} kvs__histogram;

typedef struct kvs__metrics {
  uint64_t requests[KVS_OP__COUNT]; /* every request the ops ran, by op */
  uint64_t errors[KVS_OP__COUNT];   /* of which answered with an error */
  kvs__histogram latency[KVS_METRICS__TIMED];
} kvs__metrics;

extern const uint64_t kvs__metrics_bucket_ns[KVS_METRICS_BUCKETS];

/* Monotonic nanoseconds, for timing a store call. */
uint64_t kvs__metrics_now_ns(void);
/* Count one request (err < 0: failed) and, for a timed op, its duration. */
void kvs__metrics_request(kvs__metrics *m, kvs__op op, int err, uint64_t ns);

/* A growable text buffer; on allocation failure oom is set and later
 * appends do nothing. */
typedef struct kvs__text {
  char *p;
  size_t len, cap;
  int oom;
} kvs__text;
void kvs__text_printf(kvs__text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void kvs__text_free(kvs__text *t);

/* What the exposition shows besides the request counters, gathered by
 * the request layer (kvs__ops_metrics_text): the server's fields, the
 * store counters summed over every pool, the per-pool rows (labels raw:
 * "host", "cuda:0"), device staging per GPU, and the stores whose spaces
 * are listed. */
typedef struct kvs__metrics_view {
  kvs__stats server;       /* sessions, uptime, backend */
  kvs__stats total;        /* store counters over every pool */
  uint32_t npool;
  char pool_label[KVS_MAX_POOLS][48];
  kvs__store_stats pool[KVS_MAX_POOLS];
  uint32_t nstaging;
  int staging_ordinal[KVS_MAX_POOLS];
  uint64_t staged[KVS_MAX_POOLS];
  uint32_t nstores;
  const kvs__store *stores[KVS_MAX_POOLS];
} kvs__metrics_view;

/* The whole exposition (text format 0.0.4) into t: v as the admin sees
 * it, per device, namespace and model, and the request counters and
 * histograms of m (NULL: none). 0 or -ENOMEM. */
int kvs__metrics_render(const kvs__metrics_view *v, const kvs__metrics *m, kvs__text *t);

#endif
