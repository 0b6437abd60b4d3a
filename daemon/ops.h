/* SPDX-License-Identifier: MIT */
/* The request layer: one decoded request and the session's state in, one
 * reply out. No libuv and no sockets, so every op's validation can be
 * tested against a real store (tests/daemon/test_ops.c). */
#ifndef KVS_DAEMON_OPS_H
#define KVS_DAEMON_OPS_H

#include "daemon/opstate.h"
#include "daemon/reply.h" /* kvs__ops_error, for callers of kvs__ops_run */

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

#endif
