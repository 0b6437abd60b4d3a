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
};

/* Unmap what attend.c mapped for c (tables still alive keep theirs). */
void kvs__attn_close(kvs_client *c);

#endif
