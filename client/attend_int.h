/* SPDX-License-Identifier: MIT */
/* Block tables inside libkvsink, shared by attend.c (tables, the host
 * path) and attend_dev.c (the device path: kvs_attend_device). */
#ifndef KVS_CLIENT_ATTEND_INT_H
#define KVS_CLIENT_ATTEND_INT_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/attn.h"

/* One pool unit mapped read-only: span chunks, contiguous (host memfds
 * with mmap, or GPU pool chunks imported on GPU `ordinal`: then base is a
 * device address). Shared by the tables that point into it; unmapped when
 * the last holder goes. */
typedef struct umap {
  uint32_t unit, gen, refs;
  uint8_t *base;
  size_t bytes;
  int dev, ordinal;
  uint32_t span;
} umap;

typedef struct kvs__attn_dev kvs__attn_dev;

struct kvs__umaps {
  umap **cur;               /* by unit: the current mapping, or NULL */
  uint32_t n;
  kvs__attn_dev *dev;       /* kvs_attend_device's scratch (attend_dev.c) */
};

typedef struct tlayer {
  uint32_t nb, nres;
  kvs__attn_block *blk;     /* data/rows: device addresses on a device table */
  const uint16_t **rows;
  const uint16_t *rk, *rv;  /* host (the copy) */
} tlayer;

struct kvs_table {
  kvs__qparams qp;
  uint32_t n_kv_heads, head_dim;
  uint32_t lb, nl;
  tlayer *L;
  uint8_t *copy;            /* the table as the daemon wrote it (residual rows) */
  umap **maps;
  uint32_t nmaps;
  /* device tables (a GPU pool): the GPU, and per layer the device address
   * of its kvs__attn_seq in one device image of the views, row lists and
   * residual rows (attend_dev.c) */
  int dev, ordinal;
  void *dimg;
  uint64_t *dseq;
};

/* attend_dev.c: build and upload t's device image (t->dev set); free it;
 * free the client's scratch. Without CUDA the first answers -ENOTSUP. */
int kvs__table_dev_upload(struct kvs_table *t);
void kvs__table_dev_free(struct kvs_table *t);
void kvs__attend_dev_close(struct kvs__umaps *u);

#endif
