/* SPDX-License-Identifier: MIT */
/* Device segments (docs/DESIGN.md, Data flow 4): GPU memory the daemon
 * allocates with cuMemCreate, exports as a POSIX fd and passes on the hello
 * reply after the memfd. The session owns it: closing the session unmaps
 * and releases it, so a dead client leaves nothing behind. */
#ifndef KVS_DAEMON_DEVSEG_H
#define KVS_DAEMON_DEVSEG_H

#include <stddef.h>
#include <stdint.h>

#include "daemon/devlist.h"
#include "kernels/cudrv.h"

struct kvs__store;
struct kvs__backend;

/* The GPUs with a pool here (one pool per GPU, `pool_size` each); their
 * clients get device segments when they name them by UUID. */
typedef struct kvs__devset {
  size_t n;
  int ordinal[KVS_MAX_DEVICES];
  uint8_t uuid[KVS_MAX_DEVICES][16];
  struct kvs__store *store[KVS_MAX_DEVICES];
  struct kvs__backend *backend[KVS_MAX_DEVICES];
  int devseg[KVS_MAX_DEVICES];     /* 1: the driver can export its memory */
  uint64_t staged[KVS_MAX_DEVICES]; /* device staging bytes held by sessions */
} kvs__devset;

/* Add GPU ordinal's pool (its UUID from the driver when there is one). */
int kvs__devset_add(kvs__devset *s, int ordinal, struct kvs__store *st, struct kvs__backend *b);

typedef struct kvs__devseg {
  kvs__vmm vmm;        /* the daemon's own mapping; ptr 0 = no segment */
  int fd;              /* exported handle, closed once the hello reply went out */
  uint8_t *stage;      /* host staging of put/get (page-locked when possible) */
  size_t stage_cap;
  int stage_pinned;
  uint64_t dstage;     /* device staging: the daemon's copy of a put's K/V */
  size_t dstage_cap;
  void *pinned;        /* host segment registered with the driver, or NULL */
  uint64_t *staged;    /* device staging held by all sessions on this GPU */
  uint64_t stage_limit; /* their bound (device_staging); staged NULL = none */
} kvs__devseg;

void kvs__devseg_init(kvs__devseg *d);
/* Allocate size bytes on GPU ordinal (rounded to the granularity). */
int kvs__devseg_open(kvs__devseg *d, int ordinal, uint64_t size);
void kvs__devseg_close(kvs__devseg *d);
/* 1 when [off, off + len) lies in the segment and off is align-aligned. */
int kvs__devseg_range_ok(const kvs__devseg *d, uint64_t off, uint64_t len, uint64_t align);
/* A host buffer of n bytes for one request (grown as needed). */
void *kvs__devseg_stage(kvs__devseg *d, size_t n);
/* Copy between the segment and host memory; to_host returns when the data
 * is in host memory, from_host when it is in the segment (synchronized). */
int kvs__devseg_to_host(kvs__devseg *d, void *dst, uint64_t off, size_t n);
int kvs__devseg_from_host(kvs__devseg *d, uint64_t off, const void *src, size_t n);
int kvs__devseg_sync(kvs__devseg *d);
/* The same queued (no wait): the data is there after kvs__devseg_sync. */
int kvs__devseg_to_host_async(kvs__devseg *d, void *dst, uint64_t off, size_t n);
int kvs__devseg_from_host_async(kvs__devseg *d, uint64_t off, const void *src, size_t n);
/* A host-segment session of a GPU pool: page-lock the memfd mapping
 * (cuMemHostRegister) and give d a context on GPU ordinal for a device
 * staging area; then puts copy K/V up once (DMA from the segment) and the
 * pool works from device memory. 0 or -errno (then nothing changed). */
int kvs__devseg_pin_host(kvs__devseg *d, int ordinal, void *base, size_t size);
/* Host segment <-> device staging copies (synchronous). */
int kvs__devseg_host_to_dstage(kvs__devseg *d, size_t dst_off, const void *src, size_t n);
int kvs__devseg_dstage_to_host(kvs__devseg *d, void *dst, size_t src_off, size_t n);
/* Device memory of n bytes on the segment's GPU for one request (grown as
 * needed), and copies from the segment into it (device to device). */
void *kvs__devseg_dstage(kvs__devseg *d, size_t n);
/* 1 when a device staging area of n bytes is there or may be grown within
 * the GPU's device_staging bound (else the request takes the host path). */
int kvs__devseg_dstage_ok(const kvs__devseg *d, size_t n);
int kvs__devseg_to_dstage(kvs__devseg *d, size_t dst_off, uint64_t off, size_t n);
/* The daemon's own device address of segment offset off. */
void *kvs__devseg_ptr(const kvs__devseg *d, uint64_t off);

#endif
