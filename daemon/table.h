/* SPDX-License-Identifier: MIT */
/* Op "table" (Attend): a seq's block table written into the session's
 * segment, and read-only fds of the pool units it names that the session
 * does not hold yet (at most KVS_TABLE_MAX_FDS a reply). */
#ifndef KVS_DAEMON_TABLE_H
#define KVS_DAEMON_TABLE_H

#include "daemon/ops.h"

/* rq: layers checked by the caller, seq the session's own. Fills rep and
 * st->tbl_fds (sent with the reply, then closed by the sender); returns
 * 0 or the error set in rep. */
int kvs__ops_table(kvs__store *store, kvs__sess_state *st, kvs__seq *seq, const kvs__req *rq,
                   kvs__rep *rep);
/* Close fds of a table reply that was not sent. */
void kvs__ops_table_drop_fds(kvs__sess_state *st);

#endif
