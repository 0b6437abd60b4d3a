/* SPDX-License-Identifier: MIT */
/* The request layer's device-segment parts (HACKING decisions 35-38):
 * which pool a session uses, its device segment or pinned memfd, and
 * where a put reads and a get writes. Kept apart from ops.c. */
#ifndef KVS_DAEMON_OPS_DEV_H
#define KVS_DAEMON_OPS_DEV_H

#include "daemon/opstate.h"

/* At hello, before the space: the pool of the GPU the client named (else
 * the first); returns its index in env->devs or -1. */
int kvs__opsdev_pool(const kvs__ops_env *env, kvs__sess_state *st, const kvs__hello *h);
/* At hello, after the memfd: the device segment (dev >= 0 and exportable)
 * or, on a GPU pool, the page-locked memfd; fills rep's seg_kind fields. */
void kvs__opsdev_hello(const kvs__ops_env *env, kvs__sess_state *st, const kvs__hello *h,
                       int dev, uint64_t seg_size, kvs__rep *rep);

/* put: with rq->dev, check the device ranges and stage K/V/act; on a pinned
 * memfd stage bulk host K/V/act (*kp, *vp, *act: host pointers in). Sets
 * *on_dev when the pointers now are device memory. 0 or an error in rep. */
int kvs__opsdev_put_src(kvs__sess_state *st, const kvs__req *rq, uint64_t kvb, uint64_t ab,
                        const uint16_t **kp, const uint16_t **vp, const float **act, int *on_dev,
                        kvs__rep *rep);

typedef struct kvs__opsdev_get {
  int on_dev;          /* get into device memory (kvs__seq_get_dev) */
  int down;            /* then copy the device stage down into hk / hv */
  int up;              /* or: the host stage up into the device segment */
  uint16_t *hk, *hv;
} kvs__opsdev_get;
/* get: where the store writes (*kp, *vp: host segment pointers in, or NULL
 * for rq->dev). 0 or an error in rep. */
int kvs__opsdev_get_dst(kvs__sess_state *st, const kvs__req *rq, uint64_t kvb, uint16_t **kp,
                        uint16_t **vp, kvs__opsdev_get *g, kvs__rep *rep);
/* After the store wrote: the copies, then a sync; the reply may go. */
int kvs__opsdev_get_done(kvs__sess_state *st, const kvs__req *rq, uint64_t kvb, uint16_t *kp,
                         uint16_t *vp, const kvs__opsdev_get *g, kvs__rep *rep);

/* Every pool's store, the first one first (KVS_MAX_DEVICES + 1 entries). */
size_t kvs__opsdev_stores(const kvs__ops_env *env, kvs__store **out);

#endif
