/* SPDX-License-Identifier: MIT */
/* Decode residual buffers in page-locked host memory that the backend's
 * quantize kernels read in place (backend host_alloc): the decode step
 * that completes a group hands its residual over as dev items instead of
 * copying 2 x G rows per layer into the batch area and up first. */
#ifndef KVS_STORE_RESBUF_H
#define KVS_STORE_RESBUF_H

#include <stddef.h>
#include <stdint.h>

#define KVS_RESBUF_CLASSES 4u  /* buffer sizes (model shapes) per store */

typedef struct kvs__resbuf_class {
  size_t size;                 /* bytes of one buffer; 0 = unused class */
  void **free;                 /* a stack of free buffers */
  size_t nfree, cap;
} kvs__resbuf_class;

typedef struct kvs__resbuf {
  kvs__resbuf_class cls[KVS_RESBUF_CLASSES];
  void **chunks;               /* host_alloc'd chunks, freed at close */
  size_t *chunk_bytes;
  size_t nchunks, capchunks;
} kvs__resbuf;

struct kvs__backend;

/* A buffer of bytes from b's page-locked memory, 64-byte aligned; NULL
 * when b has none, all classes are taken by other sizes, or out of
 * memory (the caller uses malloc). Chunks of at least 4 MiB are kept
 * until kvs__resbuf_close: their bytes are bounded by the most residual
 * the store held at once (residual_bytes). */
void *kvs__resbuf_get(kvs__resbuf *r, struct kvs__backend *b, size_t bytes);
/* Back to its class (bytes as given to kvs__resbuf_get). */
void kvs__resbuf_put(kvs__resbuf *r, void *p, size_t bytes);
void kvs__resbuf_close(kvs__resbuf *r, struct kvs__backend *b);

#endif
