/* SPDX-License-Identifier: MIT */
/* The block table (op "table", kvs-protocol(7) BLOCK TABLES): what the
 * daemon writes into the client's segment, in host byte order (both ends
 * run on one machine). All offsets are from the table's first byte and
 * 8-aligned; the client checks every one against the bytes the reply
 * announced before it follows it. Layout:
 *   kvs__tbl_hdr
 *   kvs__tbl_unit  [n_units]   units the table names; has_fd: its span
 *                              fds travel with this reply, in this order
 *   kvs__tbl_layer [n_layers]
 *   per layer: kvs__tbl_block [n_blocks], kvs__tbl_loc rows, then the
 *   residual K rows [n_res][C] and V rows [n_res][C] (16-bit), each
 *   padded to 8 bytes. */
#ifndef KVS_PROTO_BLOCKTABLE_H
#define KVS_PROTO_BLOCKTABLE_H

#include <stdint.h>

#define KVS_TABLE_MAGIC 0x3142544bu  /* "KTB1" */
#define KVS_TABLE_MAX_FDS 64u        /* fds passed with one table reply */

typedef struct kvs__tbl_hdr {
  uint32_t magic, n_layers, layer_begin, n_units;
  uint64_t chunk_bytes;       /* bytes of one pool chunk (every fd's size) */
  uint64_t bytes;             /* bytes of the whole table */
  uint64_t block_bytes;       /* bytes of a block's quantized part */
  uint32_t group, channels, v_group, k_bits, v_bits, k_outliers, v_outliers, dtype;
} kvs__tbl_hdr;

typedef struct kvs__tbl_unit {
  uint32_t unit, gen, span, has_fd;
} kvs__tbl_unit;

typedef struct kvs__tbl_loc {
  uint32_t unit, gen;
  uint64_t off;               /* byte offset in the unit's span chunks */
} kvs__tbl_loc;

typedef struct kvs__tbl_block {
  kvs__tbl_loc data;
  uint64_t sink_mask;
  uint64_t rows;              /* offset of its popcount(sink_mask) row locs */
} kvs__tbl_block;

typedef struct kvs__tbl_layer {
  uint32_t n_blocks, n_res;
  uint64_t blocks;            /* offset of kvs__tbl_block[n_blocks] */
  uint64_t res_k, res_v;      /* offsets of the residual rows */
} kvs__tbl_layer;

#endif
