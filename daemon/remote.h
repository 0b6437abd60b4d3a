/* SPDX-License-Identifier: MIT */
/* The Redis tier: a second tier of compressed blocks shared by the
 * daemons of a cluster (kvsinkd.conf(5): remote, cluster_key_file).
 * Writes go out asynchronously from the store's publish hook; a lookup
 * that misses locally asks for the rest of its chain in one MGET, bounded
 * by remote_timeout_ms. Redis failing in any way only costs hits. */
#ifndef KVS_DAEMON_REMOTE_H
#define KVS_DAEMON_REMOTE_H

#include <stdint.h>
#include <uv.h>

#include "daemon/config.h"
#include "store/store.h"

typedef struct kvs__remote kvs__remote;
typedef struct kvs__remote_req kvs__remote_req;

typedef struct kvs__remote_stats {
  uint64_t hits, misses, bytes_in, bytes_out;
  uint64_t errors, rejected, timeouts, dropped;
  uint64_t latency_us_sum, latency_count, connected;
} kvs__remote_stats;

/* Read cfg's cluster_key_file into key (exactly 32 bytes, not
 * world-readable); 0 or -errno / -EINVAL with errmsg (KVS_CONF_ERRMSG). */
int kvs__remote_load_key(const char *path, unsigned char key[32], char *errmsg);

/* Start the tier on loop for store (installs the publish hook) and begin
 * connecting; a Redis that is down is retried with backoff. */
int kvs__remote_start(kvs__remote **out, uv_loop_t *loop, const kvs__config *cfg,
                      kvs__store *store);
/* Graceful stop: unhook, disconnect, close handles (fetches in flight
 * complete with nothing). The struct is freed by _free after the loop. */
void kvs__remote_stop(kvs__remote *r);
void kvs__remote_free(kvs__remote *r);
void kvs__remote_stats_get(const kvs__remote *r, kvs__remote_stats *st);

/* Called once per fetch, in the loop, after the hits were imported into
 * the space (or at the timeout, with none): the caller answers then. */
typedef void (*kvs__remote_done)(void *arg);

/* Ask Redis for the groups of tokens[0, n) not cached locally in sp.
 * 0: *out is in flight and done(arg) will be called, unless cancelled;
 * -EALREADY: nothing to ask (all local, or no whole group);
 * -ENOTCONN: the tier is down; -EBUSY: too many reads unanswered
 * (counted as a timeout); -ENOMEM. sp must stay referenced until
 * done is called or the fetch is cancelled. */
int kvs__remote_fetch(kvs__remote *r, kvs__space *sp, const uint32_t *tokens, uint32_t n,
                      kvs__remote_done done, void *arg, kvs__remote_req **out);
/* The owner is gone: done is never called, late replies are dropped. */
void kvs__remote_fetch_cancel(kvs__remote_req *f);

#endif
