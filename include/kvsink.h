/* libkvsink: the client library of the kvsink KV cache service.
 *
 * An inference process connects to kvsinkd once per model, writes K/V
 * tensors (and optionally a per-token activation summary) into the shared
 * memory segment the daemon hands out, and sends small control requests.
 * All calls are synchronous and return 0 (or a count) on success and a
 * negative errno-style code on failure; kvs_strerror() names the code.
 * A handle is not thread-safe: use one per thread.
 *
 * Tensor layout in the segment, for put and get alike:
 *   K and V: [layer][token][kv_head][head_dim] of the model's dtype,
 *            layers layer_begin..layer_end-1, tokens start..start+n-1.
 *   activation summary: float32 [token][channel], channels as the daemon
 *            announced at connect (kvs_info.sink_channels).
 */
#ifndef KVSINK_H
#define KVSINK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Error codes: negative errno values (Linux numbering) plus a few of our own. */
#define KVS_OK 0
#define KVS_EVERSION (-4001) /* protocol version not spoken by the peer */
#define KVS_EMODEL   (-4002) /* model descriptor invalid or mismatched */
#define KVS_ESEGMENT (-4003) /* offset/length outside the shared segment */
#define KVS_ENAN     (-4004) /* NaN or Inf in the input tensors */

/* Name of an error code, never NULL. */
const char *kvs_strerror(int err);

typedef enum kvs_dtype {
  KVS_DTYPE_F16 = 1,
  KVS_DTYPE_BF16 = 2
} kvs_dtype;

/* Which tokens keep 16-bit K/V. */
typedef enum kvs_policy {
  KVS_POLICY_DEFAULT = 0, /* daemon configuration */
  KVS_POLICY_NONE = 1,    /* quantize every token */
  KVS_POLICY_PFN = 2,     /* Preserve-First-N only */
  KVS_POLICY_KVSINK = 3   /* predicted sinks + first N (needs a profile) */
} kvs_policy;

typedef struct kvs_model {
  const char *model_id;   /* caches of different ids never mix */
  uint32_t n_layers;
  uint32_t n_kv_heads;
  uint32_t head_dim;
  kvs_dtype dtype;
} kvs_model;

/* Connection options; zero-initialise and set what you need. */
typedef struct kvs_options {
  size_t seg_size;        /* shared segment bytes wanted; 0 = 64 MiB */
  int k_bits, v_bits;     /* 2, 3, 4, 8; 0 = daemon default */
  kvs_policy policy;
  int pfn;                /* Preserve-First-N; -1 = daemon default */
  float outliers;         /* fraction of each vector kept 16-bit, 0..0.01; <0 = default */
} kvs_options;

/* What the daemon granted. */
typedef struct kvs_info {
  uint64_t session;
  size_t seg_size;
  uint32_t group;         /* tokens per block */
  int k_bits, v_bits, pfn;
  kvs_policy policy;
  float outliers;
  int has_profile;        /* a sink profile exists for this model */
  uint32_t sink_layer;    /* summary = hidden state after this layer */
  uint32_t n_sink_channels;
  uint32_t sink_channels[64];
} kvs_info;

typedef struct kvs_client kvs_client;

/* Initialise opts to defaults (pfn = -1, outliers = -1, rest 0). */
void kvs_options_init(kvs_options *opts);

/* Connect to the daemon at socket_path (NULL = $KVSINK_SOCKET or
 * /run/kvsink/kvsinkd.sock), say hello, map the segment. */
int kvs_connect(kvs_client **out, const char *socket_path,
                const kvs_model *model, const kvs_options *opts);

/* Say bye, unmap, close. Sequences of this client are released; blocks it
 * stored stay cached for others. Accepts NULL. */
void kvs_close(kvs_client *c);

const kvs_info *kvs_get_info(const kvs_client *c);

/* The shared segment: write K/V here before kvs_put, read after kvs_get. */
void *kvs_segment(kvs_client *c, size_t *size);

/* Bytes of K (or V) for n tokens of layers [lb, le). */
size_t kvs_kv_bytes(const kvs_client *c, uint32_t n_tokens, uint32_t lb, uint32_t le);

typedef struct kvs_put_args {
  uint64_t seq;           /* client-chosen sequence id */
  uint32_t start;         /* position of tokens[0]; equals each layer's length */
  const uint32_t *tokens; /* token ids (identity of the cached prefix) */
  uint32_t n_tokens;
  uint32_t layer_begin, layer_end;
  size_t k_off, v_off;    /* segment offsets of K and V */
  size_t act_off;         /* segment offset of the activation summary */
  uint32_t act_channels;  /* 0 = no summary in this put */
} kvs_put_args;

typedef struct kvs_put_result {
  uint32_t quantized;     /* tokens of this put now stored quantized */
  uint32_t sinks;         /* sink tokens flagged by this put */
  uint32_t seq_len;       /* tokens held for seq */
} kvs_put_result;

/* Store K/V of tokens [start, start+n) for layers [lb, le) of seq. Tokens
 * of a group that is not full yet wait in 16-bit until it is. -ENOSPC if
 * the pool cannot hold it even after eviction; nothing is stored then. */
int kvs_put(kvs_client *c, const kvs_put_args *a, kvs_put_result *res);

/* How many leading tokens of tokens[] are cached (whole blocks, all
 * layers), whoever stored them. With bind != 0 the cached blocks are
 * attached to seq (which must be empty) so that kvs_get can read them and
 * kvs_put can continue after them. Returns the count or a negative code. */
int kvs_lookup(kvs_client *c, uint64_t seq, const uint32_t *tokens,
               uint32_t n_tokens, int bind);

/* Dequantize tokens [start, start+n) of layers [lb, le) of seq into the
 * segment at k_off / v_off (16-bit, model dtype). */
int kvs_get(kvs_client *c, uint64_t seq, uint32_t start, uint32_t n_tokens,
            uint32_t lb, uint32_t le, size_t k_off, size_t v_off);

/* Drop seq: its references go, its cached blocks stay (evictable). */
int kvs_release(kvs_client *c, uint64_t seq);

/* Round trip with no work: for latency measurement and health checks. */
int kvs_ping(kvs_client *c);

/* Text of the last error on c (the daemon's message when it sent one),
 * "" after a successful call; never NULL. Valid until the next call. */
const char *kvs_last_error(const kvs_client *c);

#ifdef __cplusplus
}
#endif
#endif
