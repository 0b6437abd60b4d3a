/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proto/proto.h"
#include "tests/fuzz/seeds.h"

int kvs__fuzz_seeds(kvs__seed *out, int max)
{
  static uint32_t toks[40];
  static kvs_space_info spaces[1] = {{.ns = "uid:1000", .model_id = "m", .n_layers = 2,
                                       .k_bits = 2, .v_bits = 2, .policy = KVS_POLICY_PFN,
                                       .blocks = 3}};
  static kvs_profile_info profs[1] = {{.model_id = "m", .layer = 1, .n_channels = 2,
                                       .channels = {4, 9}, .tau = 2.5f, .max_sinks = 3}};
  int n = 0, r;

  for (uint32_t i = 0; i < 40; i++)
    toks[i] = i * 977u + 1;
  for (int op = KVS_OP_HELLO; op < KVS_OP__COUNT && n + 2 <= max; op++) {
    kvs__req q;
    kvs__rep p;
    memset(&q, 0, sizeof(q));
    memset(&p, 0, sizeof(p));
    q.op = p.op = (kvs__op)op;
    if (op == KVS_OP_BELL)
      p.op = KVS_OP_PING; /* a bell has no reply */
    q.id = p.id = 1000 + (uint64_t)op;
    q.hello.version = KVS_PROTO_VERSION;
    strcpy(q.hello.model_id, "tiny-llama");
    q.hello.n_layers = 8;
    q.hello.n_kv_heads = 4;
    q.hello.head_dim = 64;
    q.hello.dtype = KVS_DTYPE_F16;
    q.hello.seg_size = 1u << 26;
    q.hello.k_bits = 2;
    q.hello.v_bits = 4;
    q.hello.policy = KVS_POLICY_KVSINK;
    q.hello.pfn = 1;
    q.hello.outliers = 0.01f;
    q.hello.client_pid = 4242;
    q.seq = 7;
    q.start = 32;
    q.tokens = toks;
    q.n_tokens = 40;
    q.layer_begin = 0;
    q.layer_end = 8;
    q.k_off = 4096;
    q.v_off = 1u << 20;
    q.has_act = 1;
    q.act_off = 1u << 22;
    q.act_channels = 2;
    q.bind = 1;
    p.session = 3;
    p.seg_size = 1u << 26;
    p.group = 32;
    p.k_bits = 2;
    p.v_bits = 4;
    p.policy = KVS_POLICY_KVSINK;
    p.pfn = 1;
    p.outliers = 0.01f;
    p.has_profile = 1;
    p.sink_layer = 2;
    p.n_sink_channels = 2;
    p.sink_channels[0] = 17;
    p.sink_channels[1] = 301;
    p.quantized = 32;
    p.sinks = 1;
    p.seq_len = 72;
    p.cached = 64;
    p.stats.pool_bytes = 1u << 30;
    p.stats.puts = 12;
    p.stats.spaces = 1;
    strcpy(p.stats.backend, "host");
    p.spaces = spaces;
    p.n_spaces = 1;
    p.profiles = profs;
    p.n_profiles = 1;
    p.evicted = 5;
    if ((r = kvs__encode_req(&q, &out[n].frame, &out[n].len)) < 0)
      goto fail;
    out[n++].is_rep = 0;
    if ((r = kvs__encode_rep(&p, &out[n].frame, &out[n].len)) < 0)
      goto fail;
    out[n++].is_rep = 1;
  }
  if (n < max) {
    kvs__rep e;
    memset(&e, 0, sizeof(e));
    e.id = 99;
    e.err = -ENOSPC;
    strcpy(e.errmsg, "pool full");
    if ((r = kvs__encode_rep(&e, &out[n].frame, &out[n].len)) < 0)
      goto fail;
    out[n++].is_rep = 1;
  }
  return n;
fail:
  kvs__fuzz_seeds_free(out, n);
  return r;
}

void kvs__fuzz_seeds_free(kvs__seed *s, int n)
{
  for (int i = 0; i < n; i++)
    free(s[i].frame);
}
