/* SPDX-License-Identifier: MIT */
/* What the request layer works on: the daemon as the ops see it
 * (kvs__ops_env) and one session's state (kvs__sess_state). Types only,
 * shared by daemon/ops.c and the files it hands parts of a request to
 * (ops_dev.c, table.c), which therefore never need ops.c. */
#ifndef KVS_DAEMON_OPSTATE_H
#define KVS_DAEMON_OPSTATE_H

#include <stdint.h>
#include <sys/types.h>

#include "daemon/config.h"
#include "daemon/devseg.h"
#include "daemon/metrics.h"
#include "daemon/prof.h"
#include "daemon/profiles.h"
#include "daemon/segment.h"
#include "proto/proto.h"
#include "proto/blocktable.h"
#include "store/store.h"

typedef struct kvs__seq_slot {
  uint64_t id;
  kvs__seq *seq;
} kvs__seq_slot;

/* What the ops see of the daemon. server_stats fills the fields the store
 * does not know (sessions, uptime, backend); reload rereads the config. */
typedef struct kvs__sess_state kvs__sess_state;
typedef void (*kvs__sess_cb)(const kvs__sess_state *st, void *arg);

typedef struct kvs__ops_env {
  kvs__store *store;           /* the first pool */
  kvs__backend *backend;       /* its backend (NULL = host) */
  const kvs__devset *devs;     /* GPU pools (NULL or none: host only) */
  const kvs__config *cfg;
  const kvs__profiles *profiles;
  void (*server_stats)(void *arg, kvs__stats *st);
  int (*reload)(void *arg, char *errmsg);
  /* every live session (list counts the ones that fell back to pfn) */
  void (*foreach_session)(void *arg, kvs__sess_cb cb, void *cb_arg);
  void *arg;
  kvs__metrics *metrics;   /* request counts and latencies; NULL: not kept */
  int profile;             /* KVSINK_PROFILE: per-session put/get phases, logged */
} kvs__ops_env;

/* One session's state. */
struct kvs__sess_state {
  uint64_t id;
  uid_t uid;
  pid_t pid;
  char ns[64];
  int admin;               /* may run evict, reload, profiles, see every space */
  int hello_done;
  int fell_back;           /* asked for kvsink, runs under pfn (no profile) */
  kvs__space *space;
  kvs__space_key key;
  kvs__segment seg;
  uint64_t fast_off;       /* the fast area's offset in seg, 0 = none (proto/fastarea.h) */
  kvs__devseg dseg;        /* device segment, or the pinned memfd's staging */
  kvs__store *store;       /* the session's pool (its GPU's, else the first) */
  kvs__backend *backend;
  kvs__seq_slot *seqs;
  size_t n_seqs, cap_seqs;
  /* Attend (daemon/table.c): per pool chunk, the generation of the unit
   * fds this session was passed (0 none), a stamp per call, and the fds of
   * the table reply being sent. */
  uint32_t *tbl_sent, *tbl_seen, tbl_stamp;
  int tbl_fds[KVS_TABLE_MAX_FDS];
  uint32_t n_tbl_fds;
  kvs__prof *prof;         /* env->profile: logged and freed with the session */
  uint64_t tbl_passed;     /* chunk fds passed so far (bounded by table_chunks) */
};

#endif
