/* SPDX-License-Identifier: MIT */
/* Which GPUs kvsinkd serves (`device` in kvsinkd.conf) and which segment a
 * client gets (docs/DESIGN.md, Data flow 4). Pure functions: no CUDA, so
 * make check tests them on machines without a GPU. */
#ifndef KVS_DAEMON_DEVLIST_H
#define KVS_DAEMON_DEVLIST_H

#include <stddef.h>
#include <stdint.h>

#define KVS_MAX_DEVICES 16u

typedef enum kvs__devmode {
  KVS_DEVMODE_AUTO = 0,    /* GPU 0 when there is one, else host memory */
  KVS_DEVMODE_HOST,        /* host pool, no device segments */
  KVS_DEVMODE_LIST,        /* exactly the listed GPUs */
  KVS_DEVMODE_ALL          /* every GPU present */
} kvs__devmode;

typedef struct kvs__devlist {
  kvs__devmode mode;
  uint32_t n;                      /* LIST: entries in dev[] */
  int dev[KVS_MAX_DEVICES];        /* CUDA ordinals, distinct, in the given order */
} kvs__devlist;

/* "auto", "host", "all", or "cuda:N[,cuda:M...]" (spaces allowed around
 * commas). 0 or -EINVAL with a reason in errmsg (256 bytes). */
int kvs__devlist_parse(const char *v, kvs__devlist *d, char *errmsg);
/* Back to the configuration syntax (for messages); buf of n bytes. */
void kvs__devlist_format(const kvs__devlist *d, char *buf, size_t n);

/* The segment for a client: the index in served[0..n) of the GPU whose
 * UUID the client named, or -1 for a host segment (no UUID given, a GPU
 * this daemon does not serve, or no GPU served at all). */
int kvs__devseg_choose(const uint8_t *client_uuid, const uint8_t (*served)[16], size_t n);

#endif
