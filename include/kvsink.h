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

/* Where kvsinkd listens unless configured otherwise (kvsinkd.conf(5)). */
#define KVS_DEFAULT_SOCKET "/run/kvsink/kvsinkd.sock"
#define KVS_DEFAULT_ADMIN_SOCKET "/run/kvsink/kvsinkd.admin.sock"
/* Segment size the daemon gives when kvs_options.seg_size is 0. */
#define KVS_DEFAULT_SEG_SIZE (64u << 20)

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

/* "default", "none", "pfn" or "kvsink": the names used on the wire, in
 * kvsinkd.conf and in kvsinkctl; "default" for out-of-range values. */
const char *kvs_policy_name(kvs_policy policy);

typedef struct kvs_model {
  const char *model_id;   /* caches of different ids never mix */
  uint32_t n_layers;
  uint32_t n_kv_heads;
  uint32_t head_dim;
  kvs_dtype dtype;
} kvs_model;

/* The K/V bit widths the quantizer supports (16 = kept as is): the one
 * definition, for the daemon, the protocol, the kernels and clients. */
#define KVS_BITS_VALID(b) ((b) == 2 || (b) == 3 || (b) == 4 || (b) == 8 || (b) == 16)

/* Connection options; zero-initialise and set what you need. */
typedef struct kvs_options {
  size_t seg_size;        /* shared segment bytes wanted; 0 = KVS_DEFAULT_SEG_SIZE */
  int k_bits, v_bits;     /* 2, 3, 4, 8, 16 (KVS_BITS_VALID); 0 = daemon default */
  kvs_policy policy;
  int pfn;                /* Preserve-First-N; -1 = daemon default */
  float outliers;         /* fraction of each vector kept 16-bit, 0..0.01; <0 = default */
} kvs_options;

/* What the daemon granted: the settings it resolved for this session. */
typedef struct kvs_info {
  uint64_t session;
  size_t seg_size;
  uint32_t group;         /* tokens per block */
  int k_bits, v_bits, pfn;
  kvs_policy policy;      /* the policy in use, never DEFAULT */
  float outliers;
  int has_profile;        /* a sink profile exists for this model */
  uint32_t sink_layer;    /* summary = hidden state after this layer */
  uint32_t n_sink_channels;
  uint32_t sink_channels[64];
  uint32_t v_group;       /* value channels per quantization group */
  int policy_fallback;    /* KVSINK was asked (or the default) but no
                             profile exists: policy is PFN */
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

/* ---- Control and admin plane (kvsinkctl) ----
 * A control connection needs no hello. On the admin socket (kvsinkd.conf
 * admin_socket, mode 0600) every call is allowed and list/stats cover the
 * whole daemon. On the data socket a client that is not uid 0, the
 * daemon's uid or in admin_group sees only its own namespace in list and
 * stats, and evict, reload and profiles answer -EACCES. */

/* The daemon's counters: the one field table, used by the wire encoder and
 * decoder and by kvsinkctl's printer (each name is also its wire key). */
#define KVS_STATS_U64_FIELDS(X) \
  X(pool_bytes) X(pool_used_bytes) X(blocks_total) X(blocks_used) \
  X(blocks_pinned) X(sink_rows_used) X(lookups) X(lookup_hit_tokens) \
  X(lookup_tokens) X(puts) X(gets) X(evictions) X(put_nospc) X(bytes_in) \
  X(bytes_out) X(stored_raw_bytes) X(stored_bytes) X(sinks_found) \
  X(sinks_dropped) X(outliers_kept) X(sessions) X(sessions_total) X(seqs) \
  X(uptime_s)

typedef struct kvs_stats {
#define KVS_STATS_DECL_(f) uint64_t f;
  KVS_STATS_U64_FIELDS(KVS_STATS_DECL_)
#undef KVS_STATS_DECL_
  uint32_t spaces;        /* model/settings spaces in the pool */
  char backend[16];       /* "host" or "cuda" */
} kvs_stats;

/* One cache space (namespace + model + settings). */
typedef struct kvs_space_info {
  char ns[64];            /* "uid:1000" or "shared" */
  char model_id[129];
  uint32_t n_layers, n_kv_heads, head_dim;
  uint32_t k_bits, v_bits, pfn;
  kvs_policy policy;      /* NONE, PFN or KVSINK */
  int has_profile;        /* sinks predicted with a profile */
  uint64_t blocks, pinned, seqs;
  uint32_t fallback_sessions; /* live sessions that asked for KVSINK and run
                                 under PFN for want of a profile */
} kvs_space_info;

/* One loaded sink profile. */
typedef struct kvs_profile_info {
  char model_id[129];
  uint32_t layer;
  uint32_t n_channels;
  uint32_t channels[64];
  float tau;
  uint32_t max_sinks, pfn;
} kvs_profile_info;

typedef struct kvs_admin kvs_admin;

/* Connect to path (NULL = $KVSINK_ADMIN_SOCKET or KVS_DEFAULT_ADMIN_SOCKET).
 * The data socket works too, with a client's view. */
int kvs_admin_connect(kvs_admin **out, const char *path);
void kvs_admin_close(kvs_admin *a); /* accepts NULL */
int kvs_admin_ping(kvs_admin *a);
int kvs_admin_stats(kvs_admin *a, kvs_stats *st);
/* *v is malloc'd (free() it; NULL when *n is 0). */
int kvs_admin_list(kvs_admin *a, kvs_space_info **v, size_t *n);
int kvs_admin_profiles(kvs_admin *a, kvs_profile_info **v, size_t *n);
/* Drop every unreferenced block; *evicted (may be NULL) counts them. */
int kvs_admin_evict(kvs_admin *a, uint64_t *evicted);
/* Reread the configuration and profiles, as SIGHUP does. */
int kvs_admin_reload(kvs_admin *a);
/* Text of the last error on a, "" after success; never NULL. */
const char *kvs_admin_last_error(const kvs_admin *a);

/* Text of the last error on c (the daemon's message when it sent one),
 * "" after a successful call; never NULL. Valid until the next call. */
const char *kvs_last_error(const kvs_client *c);

#ifdef __cplusplus
}
#endif
#endif
