/* SPDX-License-Identifier: MIT */
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
#define KVS_ERECONNECTED (-4005) /* the connection had broken: a new session is up, the
                                    segments moved, earlier sequences are gone; repeat */

/* Name of an error code, never NULL. */
const char *kvs_strerror(int err);

/* Where kvsinkd listens unless configured otherwise (kvsinkd.conf(5)). */
#define KVS_DEFAULT_SOCKET "/run/kvsink/kvsinkd.sock"
#define KVS_DEFAULT_ADMIN_SOCKET "/run/kvsink/kvsinkd.admin.sock"
/* Segment size the daemon gives when kvs_options.seg_size is 0. */
#define KVS_DEFAULT_SEG_SIZE (64u << 20)
#define KVS_MAX_SALT 32 /* bytes of kvs_options.salt */

typedef enum kvs_dtype {
  KVS_DTYPE_F16 = 1,
  KVS_DTYPE_BF16 = 2,
  KVS_DTYPE_F32 = 3       /* only for kvs_attend's query; K/V are 16-bit */
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
  /* Optional cache salt (as vLLM's cache_salt): sessions of one namespace
   * share blocks only when their salts are equal; salt_len 0 = none. */
  uint8_t salt[KVS_MAX_SALT];
  size_t salt_len;        /* 0..KVS_MAX_SALT */
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
  int seg_device;         /* 1: a device segment is mapped (kvs_device_segment) */
  size_t dev_seg_size;
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

/* Busy-poll: wait for each reply by spinning on a non-blocking read for up
 * to usec microseconds (at most 100000) before sleeping in a blocking one,
 * which saves the sleep and wakeup of small requests (decode steps) at the
 * price of a busy core while a reply is awaited. 0 = off. Until it is set
 * here or by $KVSINK_BUSY_POLL_US at connect, host requests do not spin and
 * device puts and gets (kvs_put_device, kvs_get_device) spin up to 1000 us,
 * as a CUDA synchronize does; setting it (0 too) applies to all requests.
 * Kept across kvs_reconnect. 0 or -EINVAL. */
int kvs_set_busy_poll(kvs_client *c, unsigned usec);

/* ---- Attend: decode attention over the compressed cache ----
 * A block table says where each block of a seq lies in the daemon's pool.
 * Getting one maps, read-only, the pool chunks it needs that this client
 * has not mapped yet (they hold only blocks of this client's space):
 * memfds of a host pool, or, on a GPU pool, CUDA allocations imported on
 * that GPU (a table of a GPU pool is for kvs_attend_device; -ENOTSUP where
 * the GPU pool cannot export its chunks or libkvsink has no CUDA, -EACCES
 * for the shared namespace: use kvs_get there). Attention then reads the
 * blocks in place, with no round trip per layer or step.
 * The table is a snapshot: tokens put later need a new table. Its blocks
 * stay pinned while seq lives (the seq references them); after
 * kvs_release(seq) a table of it must not be used. The daemon writes the
 * table into segment bytes [scratch_off, scratch_off + scratch_len),
 * which the call copies out before it returns (-ENOBUFS: too small). */
typedef struct kvs_table kvs_table;
int kvs_table_get(kvs_client *c, uint64_t seq, uint32_t layer_begin, uint32_t layer_end,
                  size_t scratch_off, size_t scratch_len, kvs_table **out);
void kvs_table_free(kvs_table *t); /* accepts NULL */
/* Tokens the table holds in layer (0 outside its layers). */
uint32_t kvs_table_tokens(const kvs_table *t, uint32_t layer);
/* Decode attention for one query token per sequence: for seq i and query
 * head h, out[i][h] = softmax(q[i][h] . K^T / sqrt(head_dim)) V over all
 * tokens tables[i] holds in layer (quantized blocks, 16-bit sink rows and
 * outliers, the 16-bit residual). GQA: query head h reads KV head
 * h / (n_q_heads / n_kv_heads). q: [n_seqs][n_q_heads][head_dim] of
 * q_dtype (KVS_DTYPE_F32, F16 or BF16); out: float [n_seqs][n_q_heads]
 * [head_dim]. No 16-bit K/V is written anywhere (kernels/attn.h). */
int kvs_attend(kvs_client *c, kvs_table *const *tables, uint32_t n_seqs, uint32_t layer,
               const void *q, int q_dtype, uint32_t n_q_heads, float *out);
/* The same, also writing lse: float [n_seqs][n_q_heads], the log of each
 * head's softmax denominator over the scaled scores (-INFINITY when the
 * table holds no token), to merge with attention over tokens the table
 * does not hold, e.g. the step's own 16-bit K/V: with s = q . k / sqrt(d),
 * out' = (e^lse * out + e^s * v) / (e^lse + e^s). */
int kvs_attend_lse(kvs_client *c, kvs_table *const *tables, uint32_t n_seqs, uint32_t layer,
                   const void *q, int q_dtype, uint32_t n_q_heads, float *out, float *lse);
/* The same over tables of a GPU pool, on that GPU, in this process: q_dev
 * ([n_seqs][n_q_heads][head_dim] of q_dtype), out_dev (float, same shape)
 * and lse_dev (float [n_seqs][n_q_heads], or NULL) are device memory of
 * the tables' GPU, which must be the current CUDA device. Runs the CUDA
 * split-K kernel on cuda_stream (a cudaStream_t; NULL = the legacy default
 * stream) and returns once it is queued: out is there when the stream gets
 * there. Calls of one client share its scratch: issue them on one stream
 * (or order their streams). The kernel takes head_dim 32/64/128/256, GQA
 * 1/2/4/8 and v_group a multiple of 8 (else -EINVAL). -ENOTSUP without
 * CUDA in libkvsink or a usable GPU; a refusal the kernel itself reports
 * comes back from the next call. */
int kvs_attend_device(kvs_client *c, kvs_table *const *tables, uint32_t n_seqs, uint32_t layer,
                      const void *q_dev, int q_dtype, uint32_t n_q_heads, float *out_dev,
                      float *lse_dev, void *cuda_stream);

/* ---- Control and admin plane (kvsinkctl) ----
 * A control connection needs no hello. On the admin socket (kvsinkd.conf
 * admin_socket, mode 0600) every call is allowed and list/stats cover the
 * whole daemon. On the data socket a client that is not uid 0, the
 * daemon's uid or in admin_group sees only its own namespace in list and
 * stats, and evict, reload and profiles answer -EACCES. */

/* The daemon's counters: the one field table, used by the wire encoder and
 * decoder and by kvsinkctl's printer (each name is also its wire key). */
#define KVS_STATS_U64_FIELDS(X) \
  X(pool_bytes) X(pool_used_bytes) X(pool_free_bytes) X(blocks_used) \
  X(blocks_pinned) X(sink_rows_used) X(lookups) X(lookup_hit_tokens) \
  X(lookup_tokens) X(puts) X(gets) X(evictions) X(put_nospc) X(bytes_in) \
  X(bytes_out) X(stored_raw_bytes) X(stored_bytes) X(sinks_found) \
  X(sinks_dropped) X(outliers_kept) X(sessions) X(sessions_total) X(seqs) \
  X(uptime_s) X(residual_bytes) X(residual_limit_bytes) KVS_STATS_REMOTE_FIELDS(X)
/* The Redis tier (all 0 when it is off): blocks brought in, keys asked and
 * absent, value bytes in / out, failed commands, values refused, lookups
 * answered without Redis's reply (timeout, or too many unanswered), writes
 * dropped (down or queue full), reads' round trip, 1 when connected. */
#define KVS_STATS_REMOTE_FIELDS(X) \
  X(remote_hits) X(remote_misses) X(remote_bytes_in) X(remote_bytes_out) \
  X(remote_errors) X(remote_rejected) X(remote_timeouts) X(remote_dropped) \
  X(remote_latency_us_sum) X(remote_latency_count) X(remote_connected)

typedef struct kvs_stats {
#define KVS_STATS_DECL_(f) uint64_t f;
  KVS_STATS_U64_FIELDS(KVS_STATS_DECL_)
#undef KVS_STATS_DECL_
  uint32_t spaces;        /* model/settings spaces in the pool */
  char backend[16];       /* "host" or "cuda" */
} kvs_stats;

/* One pool's counters (kvs_admin_pools): each GPU's pool, and the host
 * pool where one is open. The store fields of stats are this pool's; the
 * daemon-wide ones (sessions, uptime, the Redis tier) are 0. */
typedef struct kvs_pool_stats {
  char device[16];        /* "host" or "cuda:ORDINAL" (the daemon's numbering) */
  char uuid[48];          /* "GPU-xxxxxxxx-xxxx-...", "" for the host pool */
  kvs_stats stats;
} kvs_pool_stats;

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
/* The totals of kvs_admin_stats (over every pool) and one entry per pool;
 * *v is malloc'd (free() it). A data-socket client that is not an admin
 * gets its namespace's totals and no pools (*n = 0). */
int kvs_admin_pools(kvs_admin *a, kvs_stats *total, kvs_pool_stats **v, size_t *n);
/* *v is malloc'd (free() it; NULL when *n is 0). */
int kvs_admin_list(kvs_admin *a, kvs_space_info **v, size_t *n);
int kvs_admin_profiles(kvs_admin *a, kvs_profile_info **v, size_t *n);
/* Drop every unreferenced block; *evicted (may be NULL) counts them. */
int kvs_admin_evict(kvs_admin *a, uint64_t *evicted);
/* Reread the configuration and profiles, as SIGHUP does. */
int kvs_admin_reload(kvs_admin *a);
/* The Prometheus text exposition (what metrics_listen serves), admin only;
 * *text is malloc'd and NUL-terminated (free() it). */
int kvs_admin_metrics(kvs_admin *a, char **text);
/* Text of the last error on a, "" after success; never NULL. */
const char *kvs_admin_last_error(const kvs_admin *a);

/* Text of the last error on c (the daemon's message when it sent one),
 * "" after a successful call; never NULL. Valid until the next call. */
const char *kvs_last_error(const kvs_client *c);

/* Device segments (libkvsink(3), DEVICE SEGMENTS). kvs_connect that also
 * asks for a device segment of dev_seg_size bytes (0 = opts' seg_size) on
 * the GPU of the calling thread's CUDA context (device 0 without one);
 * the host segment stays and is the fallback (kvs_info.seg_device says
 * what the session got). The structs above keep their layout. */
int kvs_connect_device(kvs_client **out, const char *socket_path, const kvs_model *model,
                       const kvs_options *opts, size_t dev_seg_size);
/* kvs_put with a's offsets in the device segment. Before sending it,
 * libkvsink waits for the CUDA context the segment was mapped in
 * (cuCtxSynchronize), or, once kvs_set_device_stream named one, for that
 * stream only. */
int kvs_put_device(kvs_client *c, const kvs_put_args *a, kvs_put_result *res);
/* The CUstream (of the segment's context) whose work wrote what device
 * puts send: they wait for it alone (cuStreamSynchronize), not for every
 * stream of the context. NULL (the default) = the whole context. The
 * caller orders writes made on other streams itself. Kept across
 * kvs_reconnect. 0 or -EINVAL. */
int kvs_set_device_stream(kvs_client *c, void *cu_stream);
/* The device pointer
 * (a CUdeviceptr) of the session's device segment, mapped read-write on
 * the client's GPU, or NULL when the session got a host segment only. */
void *kvs_device_segment(kvs_client *c, size_t *size);
/* kvs_get into the device segment; returns when the data is there, except
 * a get of fewer tokens than a group with a stream named
 * (kvs_set_device_stream): its copy is queued on that stream, as
 * cudaMemcpyAsync would (libkvsink(3), DEVICE SEGMENTS). */
int kvs_get_device(kvs_client *c, uint64_t seq, uint32_t start, uint32_t n_tokens,
                   uint32_t lb, uint32_t le, size_t k_off, size_t v_off);
/* After a daemon restart (calls fail with -ECONNRESET or -EPIPE): connect
 * again with the same model and options, map the new segments (pointers
 * change; sequences of the old session are gone). 0 or an error. */
int kvs_reconnect(kvs_client *c);


/* ---- Utilities ------------------------------------------------------------
 * Helpers for clients and tools that need no daemon: the library version,
 * 16-bit float conversions, sink profiles (load, save, calibrate, predict)
 * and the storage cost of quantization settings. Same conventions: 0 or a
 * count on success, a negative errno-style code on failure. */

/* Version of this header; kvs_version() is the library's (they match
 * unless an application was built against another release). */
#define KVS_VERSION_MAJOR 0
#define KVS_VERSION_MINOR 1
#define KVS_VERSION_PATCH 0
#define KVS_VERSION_STRING "0.1.0"
const char *kvs_version(void);

/* Arrays of n values, round to nearest even; NaN stays NaN, overflow is
 * Inf. dst and src must not overlap. */
void kvs_f16_from_f32(uint16_t *dst, const float *src, size_t n);
void kvs_f16_to_f32(float *dst, const uint16_t *src, size_t n);
void kvs_bf16_from_f32(uint16_t *dst, const float *src, size_t n);
void kvs_bf16_to_f32(float *dst, const uint16_t *src, size_t n);
/* The above by dtype (KVS_DTYPE_F16 or KVS_DTYPE_BF16); -EINVAL otherwise. */
int kvs_half_from_f32(uint16_t *dst, const float *src, size_t n, kvs_dtype dtype);
int kvs_half_to_f32(float *dst, const uint16_t *src, size_t n, kvs_dtype dtype);

/* A model's sink profile (the file format of kvsinkd.conf(5), PROFILES):
 * the layer l_E whose hidden state is the activation summary, its outlier
 * channels C*, the threshold tau, the per-sequence sink budget, the
 * Preserve-First-N to add, and optionally an outlier fraction. */
typedef struct kvs_profile kvs_profile;

/* Parse a profile file. Errors: -EINVAL (errmsg names the line), -ENOENT
 * and other open errors, -ENOMEM. errmsg (errlen bytes) may be NULL. */
int kvs_profile_load(kvs_profile **out, const char *path, char *errmsg, size_t errlen);
/* Write p to path atomically (written aside, then renamed). */
int kvs_profile_save(const kvs_profile *p, const char *path);
void kvs_profile_free(kvs_profile *p); /* accepts NULL */

const char *kvs_profile_model(const kvs_profile *p);
uint32_t kvs_profile_layer(const kvs_profile *p);
/* C*: returns the channel array and sets *n to its length. */
const uint32_t *kvs_profile_channels(const kvs_profile *p, uint32_t *n);
float kvs_profile_tau(const kvs_profile *p);
uint32_t kvs_profile_max_sinks(const kvs_profile *p);
uint32_t kvs_profile_pfn(const kvs_profile *p);
float kvs_profile_outliers(const kvs_profile *p); /* < 0: not set */

/* Online prediction, as kvsinkd does it. act: float32 [n][n_ch], the
 * summary of n tokens on the profile's channels (n_ch must be their
 * count, else -EINVAL). Token t is a candidate when max_c |act[t][c]| >
 * tau; at most budget are flagged, largest first (ties: earlier token).
 * flags[t] is set to 1 for flagged tokens and left alone otherwise.
 * Returns the number flagged, or KVS_ENAN when act holds NaN/Inf. */
int kvs_predict_sinks(const kvs_profile *p, const float *act, uint32_t n, uint32_t n_ch,
                      uint32_t budget, uint8_t *flags);

/* Offline calibration from hidden-state dumps (file layout in
 * kvsink-calibrate(1): "KVSDUMP1", u32 n_layers, n_tokens, hidden, dtype,
 * then [n_layers][n_tokens][hidden]); one dump is one sequence. */
typedef struct kvs_dump kvs_dump;
int kvs_dump_load(kvs_dump **out, const char *path, char *errmsg, size_t errlen);
void kvs_dump_free(kvs_dump *d); /* accepts NULL */

typedef struct kvs_calib_options {
  float ratio;                 /* outlier token: max|h| > ratio * the median token's; 0 = 8 */
  uint32_t max_outlier_tokens; /* per 1000 tokens, for a layer to count; 0 = 50 */
  uint32_t max_channels;       /* size of C*, 1..64; 0 = 8 */
  uint32_t max_sinks, pfn;     /* copied into the profile */
} kvs_calib_options;

/* Defaults: ratio 8, 50 per mille, 8 channels, max_sinks 16, pfn 1. */
void kvs_calib_options_init(kvs_calib_options *o);

/* Find l_E, C* and tau for model_id from n dumps; *out is a new profile.
 * -ENOENT: the dumps show no massive activations; -ERANGE: outlier and
 * ordinary tokens overlap over C*; -EINVAL: bad arguments or dumps of
 * different shapes. On success errmsg holds a one-line summary, on
 * failure the reason. */
int kvs_calibrate(kvs_profile **out, const char *model_id, const kvs_dump *const *dumps,
                  size_t n, const kvs_calib_options *o, char *errmsg, size_t errlen);

/* Storage cost of quantization settings, from the quantizer's own layout. */
typedef struct kvs_quant_settings {
  uint32_t group;     /* tokens per block (kvs_info.group), 1..64 */
  uint32_t channels;  /* n_kv_heads * head_dim */
  uint32_t v_group;   /* channels per V scale group, divides channels; 0 = 32 */
  int k_bits, v_bits; /* 2, 3, 4, 8, or 16 (stored raw) */
  float outliers;     /* fraction of each vector kept 16-bit (kvs_info.outliers);
                         the quantizer caps it at 0.05 */
  kvs_dtype dtype;
} kvs_quant_settings;

/* Average stored bits per K/V element of one block holding n_sinks sink
 * tokens (all metadata, outliers and 16-bit sink rows counted); raw
 * 16-bit K/V is 16. -EINVAL on settings the quantizer rejects. */
int kvs_bits_per_element(const kvs_quant_settings *s, uint32_t n_sinks, double *bits);

#ifdef __cplusplus
}
#endif
#endif
