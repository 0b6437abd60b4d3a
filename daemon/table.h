/* SPDX-License-Identifier: MIT */
/* Op "table" (Attend): a seq's block table written into the session's
 * segment, and read-only fds of the pool units it names that the session
 * does not hold yet (at most KVS_TABLE_MAX_FDS a reply). */
#ifndef KVS_DAEMON_TABLE_H
#define KVS_DAEMON_TABLE_H

#include "daemon/opstate.h"

/* rq: layers checked by the caller, seq the session's own. Fills rep and
 * st->tbl_fds (sent with the reply, then closed by the sender); returns
 * 0 or the error set in rep. max_chunks: table_chunks (0 = the pool's
 * chunk count on a GPU pool, no bound on a host pool). GPU pools (chunks
 * are CUDA VMM fds, rep->table_device): -EACCES for the shared namespace,
 * whose clients are of several uids (the importer picks the access). */
int kvs__ops_table(kvs__store *store, kvs__sess_state *st, kvs__seq *seq, const kvs__req *rq,
                   uint32_t max_chunks, kvs__rep *rep);
/* The bound on chunk fds one session is passed (see kvs__ops_table). */
uint64_t kvs__ops_table_limit(const kvs__store *store, uint32_t max_chunks);
/* Close fds of a table reply that was not sent. */
void kvs__ops_table_drop_fds(kvs__sess_state *st);

#endif
