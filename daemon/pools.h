/* SPDX-License-Identifier: MIT */
/* One pool per GPU (`device = all` or a list): the first GPU's pool is the
 * server's store; the others are opened here. Sessions of a client that
 * names a GPU by UUID use that GPU's pool; everyone else the first. */
#ifndef KVS_DAEMON_POOLS_H
#define KVS_DAEMON_POOLS_H

#include "daemon/server.h"

/* After the first pool is open: register it and open the other GPUs'
 * pools of the configuration (each pool_size bytes). 0 or -errno. */
int kvs__pools_open(kvs__server *s);
/* Close the other GPUs' pools (not the first: kvs__server_close does). */
void kvs__pools_close(kvs__server *s);
/* Every pool's store, the first one first; out has KVS_MAX_DEVICES + 1
 * entries. Returns the count. */
size_t kvs__pools_stores(kvs__server *s, kvs__store **out);
#endif
