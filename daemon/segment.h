/* SPDX-License-Identifier: MIT */
/* A session's shared-memory segment: a sealed memfd mapped MAP_SHARED. */
#ifndef KVS_DAEMON_SEGMENT_H
#define KVS_DAEMON_SEGMENT_H

#include <stddef.h>
#include <stdint.h>

typedef struct kvs__segment {
  int fd;
  uint8_t *base;
  uint64_t size;
  uint64_t data;   /* the bytes requests may name: size, or where the
                      fast area starts (proto/fastarea.h) */
} kvs__segment;

/* Create, size and seal (F_SEAL_SHRINK|F_SEAL_GROW|F_SEAL_SEAL) a memfd of
 * size bytes and map it. Returns 0 or -errno. */
int kvs__segment_create(kvs__segment *s, uint64_t size, const char *name);
void kvs__segment_close(kvs__segment *s);
/* 1 when [off, off + len) lies inside the segment's data part and off is
 * a multiple of align; overflow-safe. */
int kvs__segment_range_ok(const kvs__segment *s, uint64_t off, uint64_t len, uint64_t align);
/* len = a * b * c * d with overflow check; 0 on overflow -> returns -1. */
int kvs__mul_u64(uint64_t *out, uint64_t a, uint64_t b, uint64_t c, uint64_t d);

#endif
