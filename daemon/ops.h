/* SPDX-License-Identifier: MIT */
/* The request layer: one decoded request and the session's state in, one
 * reply out. No libuv and no sockets, so every op's validation can be
 * tested against a real store (tests/daemon/test_ops.c). */
#ifndef KVS_DAEMON_OPS_H
#define KVS_DAEMON_OPS_H

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

/* Namespace from cfg (shared_namespace_uids), no space, no segment. */
void kvs__sess_init(kvs__sess_state *st, const kvs__config *cfg, uint64_t id, uid_t uid,
                    pid_t pid, int admin);
/* Frees the seqs, the space reference and the segment. */
void kvs__sess_free(kvs__sess_state *st);

enum {
  KVS_OPS_REPLY = 0,   /* send rep */
  KVS_OPS_REPLY_FD,    /* send rep with st->seg.fd attached (hello), and
                          st->dseg.fd after it when >= 0 */
  KVS_OPS_CLOSE,       /* send rep, then close the session (bye) */
  KVS_OPS_REPLY_FDS,   /* send rep with st->tbl_fds attached, then close them (table) */
};

/* Run rq; rep is always filled (rep->err < 0 on failure). Free rep with
 * kvs__ops_rep_free. Returns one of KVS_OPS_*. */
int kvs__ops_run(const kvs__ops_env *env, kvs__sess_state *st, const kvs__req *rq,
                 kvs__rep *rep);
void kvs__ops_rep_free(kvs__rep *rep);
/* The store's own stats into the wire struct (the admin view). */
void kvs__ops_store_stats(const kvs__store *store, kvs__stats *st);
/* The same summed over every pool (the host pool and each GPU's). */
void kvs__ops_all_stats(const kvs__ops_env *env, kvs__stats *st);
/* The Prometheus exposition of everything (the admin's view) into t,
 * with env->metrics' request counters. 0 or -ENOMEM. */
int kvs__ops_metrics_text(const kvs__ops_env *env, kvs__text *t);
/* The hello reply could not be sent: back to the state before hello. */
void kvs__ops_hello_undo(kvs__sess_state *st);
/* Reply to a request the decoder refused (unknown op, bad value): rep
 * names the op only in printable ASCII. */
/* rep->err = err and its message; returns err (the request layer's
 * files share it: ops.c, ops_dev.c, table.c). */
int kvs__ops_fail(kvs__rep *rep, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void kvs__ops_error(kvs__rep *rep, kvs__op op, uint64_t id, int err, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

#endif
