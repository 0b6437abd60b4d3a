/* SPDX-License-Identifier: MIT */
/* Read-only view of a .safetensors file: 8-byte little-endian header
 * length, a JSON header {name: {dtype, shape, data_offsets}}, then data.
 * Every offset and shape is checked against the file size. */
#ifndef KVS_EVAL_SAFETENSORS_H
#define KVS_EVAL_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define KVS_ST_MAX_DIMS 4

typedef enum kvs__st_dtype { KVS_ST_F16 = 1, KVS_ST_BF16 = 2, KVS_ST_F32 = 3 } kvs__st_dtype;

typedef struct kvs__st_tensor {
  char *name;
  kvs__st_dtype dtype;
  uint32_t ndim;
  uint64_t shape[KVS_ST_MAX_DIMS];
  uint64_t count;      /* elements */
  const void *data;    /* inside the mapping */
} kvs__st_tensor;

typedef struct kvs__st {
  void *map;
  size_t map_len;
  size_t n;
  kvs__st_tensor *t;
  uint64_t header_hash; /* FNV-1a of the header bytes: identifies the weights layout */
} kvs__st;

int kvs__st_open(kvs__st *st, const char *path, char *errmsg);
void kvs__st_close(kvs__st *st);
const kvs__st_tensor *kvs__st_find(const kvs__st *st, const char *name);

/* The weights of a checkpoint directory: model.safetensors, or the shards
 * named by model.safetensors.index.json (weight_map). */
typedef struct kvs__stset {
  size_t n;
  kvs__st *f;
  char **names;        /* file name of each shard */
  uint64_t id_hash;    /* identifies the weights (one file: as before sharding existed) */
} kvs__stset;

int kvs__stset_open(kvs__stset *s, const char *dir, char *errmsg);
void kvs__stset_close(kvs__stset *s);
/* The tensor of that name in whichever shard holds it. */
const kvs__st_tensor *kvs__stset_find(const kvs__stset *s, const char *name);

#endif
