/* SPDX-License-Identifier: MIT */
/* A kvs__kvio that keeps the K/V cache in kvsinkd through libkvsink: each
 * layer's K/V of a chunk is put, earlier positions are read back with get.
 * Under the KVSINK policy the activation summary (hidden state after the
 * profile's layer on its channels) rides on the put of the next layer (or
 * a summary-only put after the last layer); the daemon keeps the chunk's
 * earlier layers in its 16-bit residual until then (HACKING.md, Decision 4). */
#ifndef KVS_EVAL_DAEMONKV_H
#define KVS_EVAL_DAEMONKV_H

#include <stdint.h>

#include <kvsink.h>
#include "eval/model.h"

typedef struct kvs__daemonkv {
  kvs_client *c;
  const kvs_info *info;
  uint32_t n_layers, hidden, channels, max_tokens;
  uint64_t seq;
  int send_summary;            /* KVSINK policy with a profile */
  float *act;                  /* pending summary [chunk][n_sink_channels] */
  uint32_t act_start, act_n;
  int act_pending;
  /* local replica of the daemon's prediction, for precision/recall */
  const kvs_profile *profile;  /* NULL: none */
  uint8_t *pred;               /* [max_tokens] 1 predicted sink, 2 first position filled */
  uint32_t n_pred;
  /* experiments (kvsink-eval --protect): when set, the summary sent is
   * replaced by +huge on the positions flagged here and 0 elsewhere, so
   * the daemon keeps exactly this set (within max_sinks) in 16-bit */
  const uint8_t *force;
  /* kvsink-eval --attend: a block table taken at each step's first put,
   * attended with kvs_attend_lse (io->attend) */
  int use_attend;
  kvs_table *table;
  /* counters over the whole run */
  uint64_t daemon_sinks, puts, gets, tables;
} kvs__daemonkv;

/* Connect with the given options, for contexts of up to max_tokens. */
int kvs__daemonkv_init(kvs__daemonkv *d, const char *socket, const kvs__model *m,
                       const kvs_options *opts, uint32_t max_tokens, const kvs_profile *profile,
                       kvs__kvio *io, char *errmsg);
/* Attend through block tables (io->attend) instead of get; call after
 * init, before the first sequence. */
int kvs__daemonkv_use_attend(kvs__daemonkv *d, kvs__kvio *io);
/* Start a new sequence (the previous one is released). */
int kvs__daemonkv_begin(kvs__daemonkv *d);
void kvs__daemonkv_close(kvs__daemonkv *d);

#endif
