/* SPDX-License-Identifier: MIT */
/* The client handle, shared by client.c (the daemon API) and attend.c
 * (block tables and decode attention). */
#ifndef KVS_CLIENT_INT_H
#define KVS_CLIENT_INT_H

#include <stddef.h>

#include "client/conn.h"
#include "kernels/cudrv.h"
#include <kvsink.h>

typedef struct kvs__umaps kvs__umaps;

struct kvs_client {
  kvs__conn conn;
  kvs_model model;
  char model_id[KVS_MAX_MODEL_ID + 1];
  kvs_info info;
  void *seg;
  size_t seg_size;
  size_t seg_end;           /* where the fast area starts (proto/fastarea.h),
                             * else seg_size: the stage and the caller's
                             * part lie below it */
  char socket_path[108];
  kvs_options opts;
  int want_dev;             /* kvs_connect_device */
  size_t dev_seg_size;
  kvs__vmm dseg;            /* device segment mapping; ptr 0 = none */
  kvs__umaps *umaps;        /* pool units mapped read-only (attend.c) */
  uint32_t spin_us;         /* kvs_set_busy_poll; survives kvs_reconnect */
  int spin_set;             /* spin_us chosen (call or environment): device
                             * puts and gets use it, not KVS__CONN_DEV_SPIN_US */
  void *dev_stream;         /* kvs_set_device_stream: a device put waits for
                             * this CUstream only; NULL: the whole context */
  size_t stage_off;         /* client/stage.c: the page-locked tail of the */
  size_t stage_size;        /* host segment; size 0 = none */
  void *stage_ev;           /* CUevent after a get's copies from the stage */
  int stage_busy;           /* stage_ev recorded and not waited for */
};

/* The stage (client/stage.c): decode-step device puts and gets copied
 * through the host segment's page-locked tail by the client itself. */
#define KVS__STAGE_BYTES ((size_t)1 << 20)
/* Bytes hello asks for on top of the caller's host segment. */
size_t kvs__stage_extra(const kvs_client *c);
/* After hello mapped the segments / before they are unmapped. */
void kvs__stage_open(kvs_client *c);
void kvs__stage_close(kvs_client *c);
/* A small device put (k_bytes: kvs_kv_bytes of it): waits as
 * kvs_put_device does, copies K/V (and the summary) into the stage and
 * turns rq into a host put. 1 staged, 0 not for the stage (kvsinkd's
 * device path), or an error. */
int kvs__stage_put(kvs_client *c, const kvs_put_args *a, size_t k_bytes, kvs__req *rq);
/* A small device get of n tokens, k_bytes of K: rq turned into a host get
 * into the stage; returns the K bytes (0: not for the stage).
 * kvs__stage_get_done copies the rows into the device segment after a
 * successful reply. */
size_t kvs__stage_get(kvs_client *c, uint32_t n, size_t k_bytes, uint64_t k_off, uint64_t v_off,
                      kvs__req *rq);
int kvs__stage_get_done(kvs_client *c, size_t kvb, uint64_t k_off, uint64_t v_off);

/* Unmap what attend.c mapped for c (tables still alive keep theirs). */
void kvs__attn_close(kvs_client *c);

#endif
