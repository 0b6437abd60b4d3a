/* SPDX-License-Identifier: MIT */
/* Prometheus text exposition of kvsinkd's counters (format 0.0.4). */
#include <errno.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon/metrics.h"

const uint64_t kvs__metrics_bucket_ns[KVS_METRICS_BUCKETS] = {
    10000,     25000,     50000,      100000,     250000,     500000,    1000000,
    2500000,   5000000,   10000000,   25000000,   50000000,   100000000, 250000000,
    500000000, 1000000000, 2500000000, 5000000000, 10000000000};

uint64_t kvs__metrics_now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int timed_index(kvs__op op)
{
  switch (op) {
  case KVS_OP_PUT: return KVS_METRICS_PUT;
  case KVS_OP_GET: return KVS_METRICS_GET;
  case KVS_OP_LOOKUP: return KVS_METRICS_LOOKUP;
  default: return -1;
  }
}

void kvs__metrics_request(kvs__metrics *m, kvs__op op, int err, uint64_t ns)
{
  if ((unsigned)op >= KVS_OP__COUNT) op = KVS_OP_INVALID;
  m->requests[op]++;
  if (err < 0) m->errors[op]++;
  int t = timed_index(op);
  if (t < 0) return;
  kvs__histogram *h = &m->latency[t];
  size_t b = 0;
  while (b < KVS_METRICS_BUCKETS && ns > kvs__metrics_bucket_ns[b]) b++;
  h->count[b]++;
  h->sum_ns += ns;
}

void kvs__text_printf(kvs__text *t, const char *fmt, ...)
{
  if (t->oom) return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t->p ? t->p + t->len : NULL, t->p ? t->cap - t->len : 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
      t->oom = 1;
      return;
    }
    if (t->p && t->len + (size_t)n < t->cap) {
      t->len += (size_t)n;
      return;
    }
    size_t cap = t->cap ? t->cap * 2 : 4096;
    while (cap < t->len + (size_t)n + 1) cap *= 2;
    char *np = realloc(t->p, cap);
    if (!np) {
      t->oom = 1;
      return;
    }
    t->p = np;
    t->cap = cap;
  }
}

void kvs__text_free(kvs__text *t)
{
  free(t->p);
  memset(t, 0, sizeof *t);
}

/* A label value: printable ASCII (client strings may be anything, the
 * format wants UTF-8), with \\, \" and \n escaped as the format says. */
static const char *label(const char *s, char *buf, size_t cap)
{
  size_t o = 0;
  for (; *s && o + 3 < cap; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '\\' || c == '"') {
      buf[o++] = '\\';
      buf[o++] = (char)c;
    } else {
      buf[o++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
  }
  buf[o] = 0;
  return buf;
}

static void family(kvs__text *t, const char *name, const char *type, const char *help)
{
  kvs__text_printf(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void one(kvs__text *t, const char *name, const char *type, const char *help, uint64_t v)
{
  family(t, name, type, help);
  kvs__text_printf(t, "%s %llu\n", name, (unsigned long long)v);
}

/* ---- spaces, summed by (namespace, model) ---- */

typedef struct space_row {
  char ns[64];
  char model[KVS_MAX_MODEL_ID + 1];
  uint64_t spaces, blocks, pinned, seqs;
} space_row;

typedef struct space_rows {
  space_row *v;
  size_t n, cap;
  int oom;
} space_rows;

static void collect(const kvs__space_key *k, uint64_t blocks, uint64_t pinned, uint64_t seqs,
                    void *arg)
{
  space_rows *r = arg;
  if (r->oom) return;
  if (r->n == r->cap) {
    size_t cap = r->cap ? r->cap * 2 : 16;
    space_row *nv = realloc(r->v, cap * sizeof *nv);
    if (!nv) {
      r->oom = 1;
      return;
    }
    r->v = nv;
    r->cap = cap;
  }
  space_row *w = &r->v[r->n++];
  snprintf(w->ns, sizeof w->ns, "%s", k->ns);
  snprintf(w->model, sizeof w->model, "%s", k->model_id);
  w->spaces = 1;
  w->blocks = blocks;
  w->pinned = pinned;
  w->seqs = seqs;
}

static int row_cmp(const void *a, const void *b)
{
  const space_row *x = a, *y = b;
  int c = strcmp(x->ns, y->ns);
  return c ? c : strcmp(x->model, y->model);
}

/* Sort, then fold rows of one (namespace, model) into the first. */
static void fold(space_rows *r)
{
  if (!r->n) return;
  qsort(r->v, r->n, sizeof r->v[0], row_cmp);
  size_t o = 0;
  for (size_t i = 1; i < r->n; i++) {
    if (row_cmp(&r->v[o], &r->v[i]) == 0) {
      r->v[o].spaces += r->v[i].spaces;
      r->v[o].blocks += r->v[i].blocks;
      r->v[o].pinned += r->v[i].pinned;
      r->v[o].seqs += r->v[i].seqs;
    } else {
      r->v[++o] = r->v[i];
    }
  }
  r->n = o + 1;
}

static void space_family(kvs__text *t, const space_rows *r, const char *name, const char *help,
                         size_t field)
{
  family(t, name, "gauge", help);
  for (size_t i = 0; i < r->n; i++) {
    char ns[160], model[3 * KVS_MAX_MODEL_ID + 8];
    uint64_t v = *(const uint64_t *)((const char *)&r->v[i] + field);
    kvs__text_printf(t, "%s{namespace=\"%s\",model=\"%s\"} %llu\n", name,
                     label(r->v[i].ns, ns, sizeof ns), label(r->v[i].model, model, sizeof model),
                     (unsigned long long)v);
  }
}

/* ---- the exposition ---- */

static void histogram(kvs__text *t, const char *op, const kvs__histogram *h)
{
  uint64_t cum = 0;
  for (size_t b = 0; b < KVS_METRICS_BUCKETS; b++) {
    cum += h->count[b];
    kvs__text_printf(t, "kvsink_request_duration_seconds_bucket{op=\"%s\",le=\"%g\"} %llu\n", op,
                     (double)kvs__metrics_bucket_ns[b] / 1e9, (unsigned long long)cum);
  }
  cum += h->count[KVS_METRICS_BUCKETS];
  kvs__text_printf(t, "kvsink_request_duration_seconds_bucket{op=\"%s\",le=\"+Inf\"} %llu\n", op,
                   (unsigned long long)cum);
  kvs__text_printf(t, "kvsink_request_duration_seconds_sum{op=\"%s\"} %.9f\n", op,
                   (double)h->sum_ns / 1e9);
  kvs__text_printf(t, "kvsink_request_duration_seconds_count{op=\"%s\"} %llu\n", op,
                   (unsigned long long)cum);
}

static void requests(kvs__text *t, const kvs__metrics *m)
{
  family(t, "kvsink_requests_total", "counter", "Requests answered, by operation.");
  for (int op = 1; op < KVS_OP__COUNT; op++)
    kvs__text_printf(t, "kvsink_requests_total{op=\"%s\"} %llu\n", kvs__op_name((kvs__op)op),
                     (unsigned long long)m->requests[op]);
  family(t, "kvsink_request_errors_total", "counter",
         "Requests answered with an error, by operation.");
  for (int op = 1; op < KVS_OP__COUNT; op++)
    kvs__text_printf(t, "kvsink_request_errors_total{op=\"%s\"} %llu\n",
                     kvs__op_name((kvs__op)op), (unsigned long long)m->errors[op]);
  family(t, "kvsink_request_duration_seconds", "histogram",
         "Time in the store call of put, get and lookup.");
  static const char *const names[KVS_METRICS__TIMED] = {"put", "get", "lookup"};
  for (int i = 0; i < KVS_METRICS__TIMED; i++) histogram(t, names[i], &m->latency[i]);
}

int kvs__metrics_render(const kvs__metrics_view *v, const kvs__metrics *m, kvs__text *t)
{
  const kvs__stats *sv = &v->server, *tot = &v->total;
  one(t, "kvsink_uptime_seconds", "gauge", "Seconds since kvsinkd started.", sv->uptime_s);
  one(t, "kvsink_sessions", "gauge", "Open client sessions.", sv->sessions);
  one(t, "kvsink_sessions_opened_total", "counter", "Sessions accepted since start.",
      sv->sessions_total);
  if (m) requests(t, m);
  one(t, "kvsink_lookup_hit_tokens_total", "counter",
      "Tokens that lookups found cached (whole blocks).", tot->lookup_hit_tokens);
  one(t, "kvsink_lookup_miss_tokens_total", "counter", "Tokens that lookups asked for and missed.",
      tot->lookup_tokens - tot->lookup_hit_tokens);
  one(t, "kvsink_put_bytes_total", "counter", "16-bit K/V bytes received by put.", tot->bytes_in);
  one(t, "kvsink_get_bytes_total", "counter", "16-bit K/V bytes returned by get.", tot->bytes_out);
  one(t, "kvsink_stored_raw_bytes", "gauge", "16-bit size of the K/V held in the pool.",
      tot->stored_raw_bytes);
  one(t, "kvsink_stored_bytes", "gauge", "Compressed size of the K/V held in the pool.",
      tot->stored_bytes);
  family(t, "kvsink_compression_ratio", "gauge",
         "Raw over stored bytes of what the pool holds (0 when empty).");
  kvs__text_printf(t, "kvsink_compression_ratio %.6g\n",
                   tot->stored_bytes ? (double)tot->stored_raw_bytes / (double)tot->stored_bytes : 0.0);
  one(t, "kvsink_evictions_total", "counter", "Blocks evicted from the pool.", tot->evictions);
  one(t, "kvsink_put_refused_total", "counter", "Puts refused for lack of pool space (ENOSPC).",
      tot->put_nospc);
  one(t, "kvsink_sinks_found_total", "counter", "Sink tokens flagged.", tot->sinks_found);
  one(t, "kvsink_residual_bytes", "gauge", "Host bytes of 16-bit residual rows.",
      tot->residual_bytes);
  one(t, "kvsink_residual_limit_bytes", "gauge", "Bound on the residual rows.",
      tot->residual_limit_bytes);
  one(t, "kvsink_sequences", "gauge", "Live sequences.", tot->seqs);

  /* one row per pool (Decision 38) */
  char pl[KVS_MAX_POOLS][48];
  for (uint32_t i = 0; i < v->npool; i++) label(v->pool_label[i], pl[i], sizeof pl[i]);
#define KVS_POOL_ROWS(name, help, field)                                              \
  do {                                                                                 \
    family(t, name, "gauge", help);                                                    \
    for (uint32_t i = 0; i < v->npool; i++)                                            \
      kvs__text_printf(t, name "{device=\"%s\"} %llu\n", pl[i],                       \
                       (unsigned long long)v->pool[i].field);                          \
  } while (0)
  KVS_POOL_ROWS("kvsink_pool_bytes", "Pool capacity, by device.", pool_bytes);
  KVS_POOL_ROWS("kvsink_pool_used_bytes", "Pool bytes in slots holding data, by device.",
                pool_used_bytes);
  KVS_POOL_ROWS("kvsink_pool_free_bytes", "Pool bytes in whole free chunks, by device.",
                pool_free_bytes);
  KVS_POOL_ROWS("kvsink_pool_blocks", "Blocks in the pool, by device.", blocks);
  KVS_POOL_ROWS("kvsink_pool_pinned_blocks", "Blocks referenced by a live sequence, by device.",
                blocks_pinned);
#undef KVS_POOL_ROWS
  if (v->nstaging) {
    family(t, "kvsink_device_staging_bytes", "gauge",
           "GPU memory sessions hold as device staging (bounded by device_staging), by device.");
    for (uint32_t i = 0; i < v->nstaging; i++)
      kvs__text_printf(t, "kvsink_device_staging_bytes{device=\"cuda:%d\"} %llu\n",
                       v->staging_ordinal[i], (unsigned long long)v->staged[i]);
  }

  space_rows r;
  memset(&r, 0, sizeof r);
  for (uint32_t i = 0; i < v->nstores; i++) kvs__store_foreach_space(v->stores[i], collect, &r);
  if (r.oom) {
    free(r.v);
    return -ENOMEM;
  }
  fold(&r);
  space_family(t, &r, "kvsink_spaces", "Cache spaces, by namespace and model.",
               offsetof(space_row, spaces));
  space_family(t, &r, "kvsink_space_blocks", "Blocks held, by namespace and model.",
               offsetof(space_row, blocks));
  space_family(t, &r, "kvsink_space_pinned_blocks",
               "Blocks referenced by live sequences, by namespace and model.",
               offsetof(space_row, pinned));
  space_family(t, &r, "kvsink_space_sequences", "Live sequences, by namespace and model.",
               offsetof(space_row, seqs));
  free(r.v);
  return t->oom ? -ENOMEM : 0;
}
