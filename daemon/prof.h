/* SPDX-License-Identifier: MIT */
/* Where a session's puts and gets spend their time (kvsinkd run with
 * KVSINK_PROFILE=1): the whole op in the request layer and the store's
 * phases (kvs__store_prof), logged once per session at its close. The
 * first put and the first get of a session are not counted: they grow
 * buffers (staging, batch areas), as a benchmark's warm-up does. */
#ifndef KVS_DAEMON_PROF_H
#define KVS_DAEMON_PROF_H

#include <stdint.h>

#include "store/store.h"

typedef struct kvs__prof {
  kvs__store_prof st;          /* the store's phases of the counted ops */
  uint64_t put_ns, get_ns;     /* whole ops in the request layer */
  uint64_t puts, gets;         /* counted */
  uint64_t seen_puts, seen_gets;
} kvs__prof;

uint64_t kvs__prof_clock(void);
/* 1 when op (kvs__op) should be counted now; attaches p->st to store. */
int kvs__prof_begin(kvs__prof *p, int op, kvs__store *store);
/* Ends what kvs__prof_begin started (t0 its start time). */
void kvs__prof_end(kvs__prof *p, int op, kvs__store *store, uint64_t t0);
/* One log line (notice) about session id; what names its segment kind and
 * bits. Nothing when nothing was counted. */
void kvs__prof_log(const kvs__prof *p, uint64_t id, const char *what);

#endif
