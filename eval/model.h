/* SPDX-License-Identifier: MIT */
/* LLaMA forward pass on the CPU (fp32 math, fp16 weights and K/V cache).
 *
 * A context is processed in chunks of G tokens. For each chunk and layer
 * the K (after RoPE) and V of the chunk are rounded to fp16 and handed to
 * a kvs__kvio (the daemon through libkvsink, or a local fp16 cache); the
 * K/V of all earlier positions are read back through the same kvio, and
 * the chunk attends causally to [those, its own fp16 K/V]. The chunk
 * itself is the "prefill" step computed in 16-bit; earlier tokens are seen
 * as the cache holds them (quantized when the cache quantizes). */
#ifndef KVS_EVAL_MODEL_H
#define KVS_EVAL_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "eval/safetensors.h"

typedef struct kvs__mcfg {
  uint32_t vocab, hidden, inter, n_layers, n_heads, n_kv_heads, head_dim, max_pos;
  uint32_t bos, eos;
  float eps, rope_theta;
  int tied;
} kvs__mcfg;

typedef struct kvs__mlayer {
  float *ln1, *ln2;              /* [hidden] */
  float *wq, *wk, *wv;           /* transposed: [hidden][out] */
  float *wo;                     /* [heads*head_dim][hidden] */
  float *wg, *wu;                /* [hidden][inter] */
  float *wd;                     /* [inter][hidden] */
} kvs__mlayer;

typedef struct kvs__model {
  kvs__mcfg cfg;
  float *embed;                  /* [vocab][hidden] (row per token) */
  float *lm_head_t;              /* [hidden][vocab] */
  float *norm;
  kvs__mlayer *layers;
  char model_id[96];             /* <dir basename>-<hash of the weights header> */
} kvs__model;

/* Load config.json (LLaMA family) and the weights (model.safetensors, or
 * shards + model.safetensors.index.json; fp16, bf16 or fp32) from dir. */
int kvs__model_load(kvs__model *m, const char *dir, char *errmsg);
void kvs__model_free(kvs__model *m);
/* config.json alone; bos/eos are UINT32_MAX when the config has none. */
int kvs__model_load_config(kvs__mcfg *c, const char *dir, char *errmsg);

/* Where the K/V cache lives. K/V rows are raw fp16 [n][kv_heads*head_dim]. */
typedef struct kvs__kvio {
  void *ctx;
  /* store layer's K/V of tokens [start, start+n) */
  int (*put)(void *ctx, uint32_t layer, uint32_t start, uint32_t n, const uint32_t *tokens,
             const uint16_t *k, const uint16_t *v);
  /* read layer's K/V of tokens [0, n) */
  int (*get)(void *ctx, uint32_t layer, uint32_t n, uint16_t *k, uint16_t *v);
  /* hidden state after layer summary_layer for tokens [start, start+n),
   * [n][hidden]; called after that layer's put, before the next layer's */
  int (*summary)(void *ctx, uint32_t start, uint32_t n, const uint32_t *tokens, const float *h);
  int summary_layer;             /* -1: no summary wanted */
  /* optional (kvsink-eval --attend, chunks of one token): decode
   * attention of the query at position start over the cache's [0, start)
   * of layer, reading no K/V back; q and out float [n_heads][head_dim],
   * lse float [n_heads] (kvs_attend_lse). NULL: get, then attend. */
  int (*attend)(void *ctx, uint32_t layer, uint32_t start, const float *q, uint32_t n_heads,
                float *out, float *lse);
  /* 1: read the past before the step's put (kvsink-eval --decode), so
   * that a step that completes a group sees the past as the cache held it
   * before the step, as a block table taken at the step's start does;
   * 0: after (a put may quantize the past's last group first) */
  int past_first;
} kvs__kvio;

/* Optional outputs of one context; NULL members are skipped. */
typedef struct kvs__fwd_out {
  float *logits;       /* [n][vocab] */
  double *nll;         /* [n-1]: -log p(tokens[t+1] | tokens[..t]) */
  float *hidden;       /* [n_layers][n][hidden]: residual after each layer */
  double *att_recv;    /* [n_layers][n_heads][n]: attention received from queries at
                        * distance >= KVS_SINK_MIN_DIST (sinkstat.h), summed */
} kvs__fwd_out;

int kvs__model_forward(const kvs__model *m, const uint32_t *tokens, uint32_t n, uint32_t chunk,
                       const kvs__kvio *io, kvs__fwd_out *out);

/* A kvio over a local fp16 cache of up to max_tokens positions: the
 * no-daemon baseline. */
typedef struct kvs__localkv {
  uint32_t n_layers, channels, max_tokens;
  uint16_t *k, *v;     /* [layer][token][channels] */
} kvs__localkv;

int kvs__localkv_init(kvs__localkv *l, const kvs__model *m, uint32_t max_tokens, kvs__kvio *io);
void kvs__localkv_free(kvs__localkv *l);

#endif
