/* SPDX-License-Identifier: MIT */
/* Per-session profile of puts and gets (daemon/prof.h). */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "daemon/log.h"
#include "daemon/prof.h"
#include "proto/proto.h"

uint64_t kvs__prof_clock(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int kvs__prof_begin(kvs__prof *p, int op, kvs__store *store)
{
  uint64_t *seen = op == KVS_OP_PUT ? &p->seen_puts : op == KVS_OP_GET ? &p->seen_gets : NULL;
  if (!seen || (*seen)++ == 0)
    return 0;
  kvs__store_set_prof(store, &p->st);
  return 1;
}

void kvs__prof_end(kvs__prof *p, int op, kvs__store *store, uint64_t t0)
{
  kvs__store_set_prof(store, NULL);
  uint64_t dt = kvs__prof_clock() - t0;
  if (op == KVS_OP_PUT) {
    p->put_ns += dt;
    p->puts++;
  } else {
    p->get_ns += dt;
    p->gets++;
  }
}

/* " name us" for phases [a, b) of the store, per op */
static size_t phases(char *o, size_t cap, const kvs__store_prof *s, int a, int b, uint64_t n)
{
  size_t w = 0;
  for (int i = a; i < b && w < cap; i++) {
    const char *name = kvs__store_prof_name(i), *dot = strchr(name, '.');
    int r = snprintf(o + w, cap - w, " %s %.1f", dot ? dot + 1 : name,
                     (double)s->ns[i] / 1e3 / (double)n);
    if (r < 0) break;
    w += (size_t)r;
  }
  return w < cap ? w : cap;
}

/* One op's line: n ops of `blocks` blocks, us each in all, in the store
 * (its phases ph) and in the daemon around it. */
static void op_line(char *buf, size_t cap, const char *op, uint64_t n, uint64_t blocks,
                    uint64_t ns, uint64_t store_ns, const char *ph)
{
  snprintf(buf, cap, " %s %llu x %.0f blocks: %.1f us each = store %.1f (%s ) + daemon %.1f;", op,
           (unsigned long long)n, (double)blocks / (double)n, (double)ns / 1e3 / (double)n,
           (double)store_ns / 1e3 / (double)n, ph, (double)(ns - store_ns) / 1e3 / (double)n);
}

void kvs__prof_log(const kvs__prof *p, uint64_t id, const char *what)
{
  char put[512] = "", get[384] = "", ph[320];
  const kvs__store_prof *s = &p->st;
  if (p->puts) {
    phases(ph, sizeof ph, s, KVS_PROF_PUT_CHECK, KVS_PROF_GET, p->puts);
    op_line(put, sizeof put, "put", p->puts, s->put_blocks, p->put_ns, s->ns[KVS_PROF_PUT], ph);
  }
  if (p->gets) {
    phases(ph, sizeof ph, s, KVS_PROF_GET_ITEMS, KVS_PROF_N, p->gets);
    op_line(get, sizeof get, "get", p->gets, s->get_blocks, p->get_ns, s->ns[KVS_PROF_GET], ph);
  }
  if (p->puts || p->gets)
    kvs__notice("profile: session %llu (%s):%s%s the first put and get not counted",
                (unsigned long long)id, what, put, get);
}
