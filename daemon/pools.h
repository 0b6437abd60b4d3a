/* SPDX-License-Identifier: MIT */
/* One pool per GPU (`device = all` or a list): the first GPU's pool is the
 * server's store; the others are opened here. Sessions of a client that
 * names a GPU by UUID use that GPU's pool; everyone else the first. */
#ifndef KVS_DAEMON_POOLS_H
#define KVS_DAEMON_POOLS_H

#include "daemon/devseg.h"
#include "store/store.h"

/* After the first pool (store, on backend b, GPU `first`) is open:
 * register it in ds and open the other GPUs' pools that `list` names,
 * each with the options of `opts` on its own backend. Nothing for a host
 * pool. 0 or -errno. */
int kvs__pools_open(kvs__devset *ds, const kvs__devlist *list, int first, kvs__store *store,
                    kvs__backend *b, const kvs__store_opts *opts);
/* Close the other GPUs' pools (not `store`, the first: its owner does). */
void kvs__pools_close(kvs__devset *ds, const kvs__store *store);
#endif
