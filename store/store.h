/* SPDX-License-Identifier: MIT */
/* The store: the block pool, the prefix index, LRU eviction and the
 * per-client sequences. No I/O and no libuv here: the server validates
 * requests against the segment and calls these with plain pointers.
 *
 * Terms
 *   space  one (namespace, model descriptor, quantization settings) tuple.
 *          Blocks of different spaces never mix: the space key seeds the
 *          hash chain.
 *   block  G tokens of one layer, K and V of all KV heads, quantized
 *          (kernels/quant.h), plus its 16-bit sink rows.
 *   seq    a client's sequence: per layer, the blocks it holds references
 *          to and the 16-bit residual of tokens not yet in a full block.
 */
#ifndef KVS_DAEMON_STORE_H
#define KVS_DAEMON_STORE_H

#include <stddef.h>
#include <stdint.h>

#include <kvsink.h>
#include "kernels/quant.h"
#include "kernels/sink.h"

/* Default of kvs__store_opts.max_pending, and of kvsinkd's
 * max_pending_tokens (the one definition). */
#define KVS_STORE_MAX_PENDING 65536u

/* The store's own limits (the daemon checks the wire's against them). */
#define KVS_STORE_ERRMSG 256u          /* bytes of an errmsg buffer */
#define KVS_STORE_MAX_MODEL_ID 128u
#define KVS_STORE_MAX_LAYERS 256u
#define KVS_STORE_MAX_KV_HEADS 256u
#define KVS_STORE_MAX_HEAD_DIM 512u
#define KVS_STORE_MAX_TOKENS 8192u     /* token ids in one put or lookup */

/* Where pool memory lives and who runs the kernels. The host backend uses
 * malloc and the C reference; the CUDA backend (store/backend_cuda.c)
 * cudaMallocs the pool and runs the CUDA kernels (kernels/quant.cu).
 * Pointers passed as block / rows point into pool memory; k/v pointers
 * are host memory. */
/* One block of a batch (quantize_n / dequantize_n). dev set: k/v (k_out,
 * v_out) are device memory of the backend's GPU (device segments), which
 * only a backend with dev_io takes. */
typedef struct kvs__qitem {
  const uint16_t *k, *v;                 /* [G][C] host (or device: dev) */
  uint64_t sink_mask;
  void *block;
  uint16_t *const *rows;
  int dev;
} kvs__qitem;
typedef struct kvs__dqitem {
  const void *block;
  const uint16_t *const *rows;
  uint64_t sink_mask;                    /* the block's, as the store knows it */
  uint32_t r0, r1;
  uint16_t *k_out, *v_out;               /* [r1-r0][C] host (or device: dev) */
  int dev;
} kvs__dqitem;
#define KVS_BATCH_MAX 64u                /* host-resident blocks per batch call */
/* Blocks per batch call when they are device-resident (dev items: no host
 * tile to stage), so that a bulk put or get from a device segment is one
 * launch and one synchronize (a 1,024-token x 32-layer put at G = 64 is
 * 512 blocks); of them still at most KVS_BATCH_MAX host-resident. */
#define KVS_BATCH_DEV_MAX 4096u

typedef struct kvs__backend {
  const char *name;                      /* "host" or "cuda" */
  int (*pool_alloc)(struct kvs__backend *b, size_t bytes, void **base);
  void (*pool_free)(struct kvs__backend *b, void *base);
  int (*quantize)(struct kvs__backend *b, const kvs__qparams *p, const uint16_t *k,
                  const uint16_t *v, uint64_t sink_mask, void *block, uint16_t *const *rows);
  int (*dequantize)(struct kvs__backend *b, const kvs__qparams *p, const void *block,
                    const uint16_t *const *rows, uint32_t r0, uint32_t r1,
                    uint16_t *k_out, uint16_t *v_out);
  /* Optional: up to KVS_BATCH_DEV_MAX blocks in one call, at most
   * KVS_BATCH_MAX of them host-resident (one copy and one launch on a GPU
   * instead of one per block); NULL = a loop of the above. */
  int (*quantize_n)(struct kvs__backend *b, const kvs__qparams *p, const kvs__qitem *it,
                    uint32_t n);
  int (*dequantize_n)(struct kvs__backend *b, const kvs__qparams *p, const kvs__dqitem *it,
                      uint32_t n);
  /* Optional: copy n bytes between host memory and pool memory (to_pool
   * 1: host src to pool dst; 0: pool src to host dst); NULL = memcpy. */
  int (*copy)(struct kvs__backend *b, void *dst, const void *src, size_t n, int to_pool);
  /* Device-resident K/V (device segments); 0 = host memory only. The
   * quantize calls check every element they read (KVS_ENAN). (A device
   * summary is copied to the host and predicted there, Decision 13.)
   * reads_once (optional, NULL = never): 1 when quantize_n loads each
   * element of dev items whose tiles start at k and v (rows follow at C
   * elements) exactly once, its check and its codes coming from that one
   * load, so the input may be memory a client writes meanwhile (a device
   * segment) without a copy first (Decision 36). */
  int dev_io;
  int (*reads_once)(struct kvs__backend *b, const kvs__qparams *p, const void *k, const void *v);
  /* Optional (dev_io): quantize_start queues up to KVS_BATCH_DEV_MAX dev
   * items and returns without waiting, so that the store reserves the
   * next blocks while the GPU codes these; quantize_wait waits for all
   * queued so far and returns their status (0, KVS_ENAN, ...). Until
   * then their slots are being written: the caller waits before it frees
   * them, and calls nothing else on the backend but quantize_n (which
   * waits for them too, its status covering them). */
  int (*quantize_start)(struct kvs__backend *b, const kvs__qparams *p, const kvs__qitem *it,
                        uint32_t n);
  int (*quantize_wait)(struct kvs__backend *b);
  /* Optional (with quantize_start): a put is about to queue up to n dev
   * blocks of p's shape. The backend may start its kernel now and take
   * the blocks as quantize_start hands them over, with no launch each
   * (a feed, HACKING.md Decision 51). Returns 1 when it did (then small
   * quantize_start calls are cheap: the store hands blocks over a group
   * at a time), 0 when not, or an error; whatever it returns, the
   * caller calls quantize_wait before it returns. */
  int (*quantize_open)(struct kvs__backend *b, const kvs__qparams *p, uint32_t n);
  /* With quantize_start, for A/B runs (0 = the defaults): queue_chunk,
   * blocks per quantize_start call (KVS_PUT_CHUNK); queue_late, 1 = a
   * device put claims all its groups before it queues any (HACKING.md
   * Decision 50). */
  uint32_t queue_chunk;
  int queue_late;
  /* Optional (dev_io): wait until every copy into the pool's memory is
   * complete: copy() to device memory may return while its DMA still runs
   * (CUDA from pageable memory). dequantize_n returns with its own
   * writes and all earlier copies complete. NULL = nothing to wait for. */
  int (*sync)(struct kvs__backend *b);
  /* 1 + the GPU ordinal whose CUDA VMM allocations may make the pool's
   * chunks (one per chunk, exportable for block tables); 0 = none. */
  int chunk_gpu;
  /* Optional (dev_io): page-locked host memory that the quantize calls
   * read in place as dev items (mapped, the same address on the device):
   * a decode step's residual, so the step that completes a group does
   * not copy it up first (store/resbuf.c). NULL = none. */
  int (*host_alloc)(struct kvs__backend *b, size_t bytes, void **p);
  void (*host_free)(struct kvs__backend *b, void *p, size_t bytes); /* bytes as allocated */
  void *priv;
} kvs__backend;
int kvs__backend_copy(kvs__backend *b, void *dst, const void *src, size_t n, int to_pool);

int kvs__backend_quantize_n(kvs__backend *b, const kvs__qparams *p, const kvs__qitem *it,
                            uint32_t n);
int kvs__backend_dequantize_n(kvs__backend *b, const kvs__qparams *p, const kvs__dqitem *it,
                              uint32_t n);

extern kvs__backend kvs__backend_host;

typedef struct kvs__store_opts {
  size_t pool_bytes;
  /* Secret of the chain hash (keyed BLAKE2b): block identity cannot be
   * predicted, so collisions cannot be crafted. All zero = drawn with
   * getrandom at init. */
  unsigned char hash_key[32];
  size_t chunk_bytes;      /* slab chunk; default 2 MiB, grown to fit a block */
  kvs__backend *backend;   /* NULL = host */
  uint32_t max_pending;    /* 16-bit residual tokens per layer of a seq; 0 =
                              KVS_STORE_MAX_PENDING */
  /* Host bytes of 16-bit residual rows (K and V, allocated capacity): in
   * all seqs (0 = pool_bytes) and in one seq (0 or more = the total).
   * Exceeding them fails a put with -ENOSPC / -E2BIG (Decision 18). */
  uint64_t residual_bytes, residual_seq_bytes;
} kvs__store_opts;

/* A space's settings, fully resolved (no "defaults" left). */
typedef struct kvs__space_key {
  char ns[64];             /* namespace: "uid:1000" or a shared name */
  char model_id[KVS_STORE_MAX_MODEL_ID + 1];
  uint32_t n_layers, n_kv_heads, head_dim;
  kvs_dtype dtype;
  uint32_t group;
  uint32_t k_bits, v_bits;
  kvs_policy policy;       /* NONE, PFN or KVSINK */
  uint32_t pfn;
  float outliers;
  uint32_t v_group;        /* channels per value group; 0 (or one that does not
                              divide C) = 32 when it divides C, else head_dim */
  uint8_t salt[32];        /* optional: spaces with different salts never share */
  uint32_t salt_len;       /* 0..32 bytes of salt used; 0 = none */
  uint64_t prof_id;        /* set by kvs__space_ref: fingerprint of the sink
                              profile in use (0 = none), so that blocks whose
                              sinks a different profile chose never mix */
} kvs__space_key;

typedef struct kvs__store kvs__store;
typedef struct kvs__space kvs__space;
typedef struct kvs__seq kvs__seq;

int kvs__store_init(kvs__store **out, const kvs__store_opts *o);
/* Frees everything; all spaces and seqs must be gone or are freed too. */
void kvs__store_close(kvs__store *s);

/* Find or create the space for key (refcounted; put with _space_unref).
 * profile may be NULL (then policy KVSINK acts as PFN). */
int kvs__space_ref(kvs__store *s, const kvs__space_key *key, const kvs__profile *profile,
                   kvs__space **out);
void kvs__space_unref(kvs__space *sp);
const kvs__qparams *kvs__space_qparams(const kvs__space *sp);
int kvs__space_has_profile(const kvs__space *sp);
const kvs__profile *kvs__space_profile(const kvs__space *sp);

int kvs__seq_new(kvs__space *sp, kvs__seq **out);
/* Drops all references and residuals of the seq. */
void kvs__seq_free(kvs__seq *q);
uint32_t kvs__seq_len(const kvs__seq *q);  /* min over layers */

typedef struct kvs__put_info {
  uint32_t quantized;     /* tokens of this put now in quantized blocks (layer_begin's) */
  uint32_t sinks;         /* sinks newly flagged */
  uint32_t seq_len;
} kvs__put_info;

/* Append tokens [start, start+n) for layers [lb, le). k and v are
 * [le-lb][n][C] raw 16-bit; act is float [n][act_ch] or NULL. Atomic: on
 * any error nothing changes. Errors: -EINVAL (start != layer length,
 * tokens differ from those the seq already has at those positions, bad
 * range), KVS_ENAN, -ENOSPC (pool full of pinned blocks), -E2BIG (too
 * many pending 16-bit tokens). errmsg gets a reason (KVS_STORE_ERRMSG). */
int kvs__seq_put(kvs__seq *q, uint32_t start, const uint32_t *tokens, uint32_t n,
                 uint32_t lb, uint32_t le, const uint16_t *k, const uint16_t *v,
                 const float *act, uint32_t act_ch, kvs__put_info *info, char *errmsg);

/* The same, with k, v and act in device memory of the store's backend
 * (one that has dev_io): the daemon's own copy of a device segment, or
 * the segment itself when kvs__space_reads_once says so. Blocks whose
 * rows all come from this put are quantized from there (the kernel
 * checks what it loads: NaN / Inf fails the put, KVS_ENAN, nothing
 * changed); 16-bit residual rows and mixed tiles are copied to host memory
 * once and checked there; rows of blocks already cached are not read.
 * -EOPNOTSUPP without dev_io. */
int kvs__seq_put_dev(kvs__seq *q, uint32_t start, const uint32_t *tokens, uint32_t n,
                     uint32_t lb, uint32_t le, const uint16_t *k, const uint16_t *v,
                     const float *act, uint32_t act_ch, kvs__put_info *info, char *errmsg);

/* 1 when sp's backend may quantize straight from client-writable device
 * memory at k / v (the starts of a put's K and V): backend reads_once. */
int kvs__space_reads_once(const kvs__space *sp, const void *k, const void *v);

/* Leading tokens of tokens[] cached in whole blocks for every layer of sp.
 * When bind is non-NULL (an empty seq of sp) it takes references to them. */
int kvs__space_lookup(kvs__space *sp, const uint32_t *tokens, uint32_t n, kvs__seq *bind,
                      uint32_t *cached);

/* Read tokens [start, start+n) of layers [lb, le) into k/v ([le-lb][n][C]). */
int kvs__seq_get(kvs__seq *q, uint32_t start, uint32_t n, uint32_t lb, uint32_t le,
                 uint16_t *k, uint16_t *v, char *errmsg);
/* The same into device memory of a dev_io backend: blocks dequantized in
 * place, residual rows copied up; returns when all of it is written (the
 * daemon replies without another synchronize: Decision 48). */
int kvs__seq_get_dev(kvs__seq *q, uint32_t start, uint32_t n, uint32_t lb, uint32_t le,
                     uint16_t *k, uint16_t *v, char *errmsg);

/* Block tables (Attend, store/table.c): where a seq's data lies in an
 * exportable (host, memfd-per-chunk) pool; -ENOTSUP for other pools.
 * layer: its full blocks and residual rows ([n_res][C] K and V). block i:
 * the location of its quantized part, its sink mask and the locations of
 * its n_rows (popcount of the mask, at most 64) sink-row slots. */
typedef struct kvs__pool_loc kvs__pool_loc;
int kvs__seq_table_layer(const kvs__seq *q, uint32_t layer, uint32_t *n_blocks, uint32_t *n_res,
                         const uint16_t **rk, const uint16_t **rv);
int kvs__seq_table_block(const kvs__seq *q, uint32_t layer, uint32_t i, kvs__pool_loc *data,
                         uint64_t *sink_mask, kvs__pool_loc *rows, uint32_t *n_rows);
size_t kvs__space_block_bytes(const kvs__space *sp);
/* 0, or how chunks are exported: KVS_POOL_EXPORT_HOST (memfds) or
 * KVS_POOL_EXPORT_DEVICE (CUDA VMM fds of GPU kvs__store_gpu's pool). */
int kvs__store_exportable(const kvs__store *s);
int kvs__store_gpu(const kvs__store *s);
uint32_t kvs__store_nchunks(const kvs__store *s);
size_t kvs__store_chunk_bytes(const kvs__store *s);
uint32_t kvs__store_chunk_gen(const kvs__store *s, uint32_t chunk);
/* A read-only fd of chunk's memfd (the caller closes it); *gen its generation. */
int kvs__store_chunk_export(kvs__store *s, uint32_t chunk, uint32_t *gen);

/* A second tier (e.g. Redis; no I/O here): hooks on publish and on evict
 * see a read-only view of the block, and blocks travel as bytes.
 * Hooks run synchronously inside the store call and must not call back
 * into the store except kvs__block_serialize on the view they were given. */
typedef struct kvs__block kvs__block;
typedef struct kvs__block_view {
  const kvs__space_key *space;   /* resolved key of the block's space */
  const kvs__block *blk;         /* for kvs__block_serialize, valid during the hook */
  uint8_t id[16];                /* its chain hash in this store (stable while cached) */
  uint32_t layer, group_index;   /* the block holds tokens [g*G, (g+1)*G) of layer */
  uint32_t group;                /* G */
  const uint32_t *tokens;        /* its G token ids */
  const uint32_t *prefix;        /* publish: ids [0, (g+1)*G) of the prefix; evict: NULL */
} kvs__block_view;
typedef struct kvs__tier_hooks {
  void (*on_publish)(const kvs__block_view *v, void *arg);  /* not for imports */
  void (*on_evict)(const kvs__block_view *v, void *arg);    /* also at close */
  void *arg;
} kvs__tier_hooks;
/* NULL or all-NULL hooks = none. */
void kvs__store_set_hooks(kvs__store *s, const kvs__tier_hooks *h);

#define KVS_BLOCK_FORMAT 1u
/* Bytes of a serialized block of v's space. */
size_t kvs__block_serial_size(const kvs__block_view *v);
/* Write the block (header with format version and params, token ids, the
 * quantized part, sink rows, a BLAKE2b-128 checksum) to out; cap bytes
 * there. 0, -ENOBUFS when cap is short, or a backend error. */
int kvs__block_serialize(const kvs__block_view *v, void *out, size_t cap);
/* Publish a serialized block in sp (unreferenced, evictable) after
 * checking everything: checksum, version, the space's params, that its
 * token ids are the last G of prefix ([0, n_prefix), n_prefix a positive
 * multiple of G), the layer, the sink mask, and a trial dequantize whose
 * output must be finite. -EINVAL (errmsg says why), -EEXIST when the block
 * is already cached, -ENOSPC (pool full of pinned blocks), -ENOMEM. */
int kvs__space_import(kvs__space *sp, const uint32_t *prefix, uint32_t n_prefix,
                      const void *bytes, size_t len, char *errmsg);

/* For a tier's read path: the chain hashes of the whole groups of
 * tokens[0, n) into ids[0, n/G) (bytes as kvs__block_view.id), and in
 * *local how many leading groups are cached for every layer. Touches
 * neither the LRU nor the stats (the lookup that follows counts). */
int kvs__space_chain(kvs__space *sp, const uint32_t *tokens, uint32_t n, uint8_t (*ids)[16],
                     uint32_t *local);
/* 16 bytes naming a space (its keyed seed): equal across stores exactly
 * when the space keys and the hash keys are. */
void kvs__space_id(const kvs__space *sp, uint8_t out[16]);
const kvs__space_key *kvs__space_key_of(const kvs__space *sp); /* resolved */
void kvs__block_space_id(const kvs__block_view *v, uint8_t out[16]);

/* Where the time of puts and gets goes (kvsinkd with KVSINK_PROFILE=1,
 * tests/store/bench_put): nanoseconds and calls per phase, added into the
 * profile attached with kvs__store_set_prof; none attached (the default):
 * no clock is read. */
enum {
  KVS_PROF_PUT,            /* all of kvs__seq_put / kvs__seq_put_dev */
  KVS_PROF_PUT_CHECK,      /* validate */
  KVS_PROF_PUT_PREDICT,    /* sinks from the summary (with its copy) */
  KVS_PROF_PUT_PLAN,
  KVS_PROF_PUT_CHAIN,      /* capacity, token ids, flags, chain hashes */
  KVS_PROF_PUT_RESIDUAL,   /* rows for the 16-bit residual: copy, check */
  KVS_PROF_PUT_FIND,       /* index look-ups of the blocks, and the records
                              of the fresh ones filed (kvs__blk_claim_run) */
  KVS_PROF_PUT_GROUP,      /* the part of put.find in the groups' index
                              probes and group records (kvs__grp_claim) */
  KVS_PROF_PUT_NEW,        /* fresh blocks' slots, eviction (and queuing
                              their kernels: quantize_start) */
  KVS_PROF_PUT_QUEUE,      /* the part of put.new in quantize_start */
  KVS_PROF_PUT_ITEMS,      /* batch items and host tiles */
  KVS_PROF_PUT_KERNEL,     /* quantize_n calls, and the wait for the queued
                              kernels (what of them the host work did not hide) */
  KVS_PROF_PUT_COMMIT,     /* publish, seq update */
  KVS_PROF_GET,            /* all of kvs__seq_get / kvs__seq_get_dev */
  KVS_PROF_GET_ITEMS,      /* batch items */
  KVS_PROF_GET_KERNEL,     /* the backend's dequantize_n calls */
  KVS_PROF_GET_RESIDUAL,   /* residual rows copied out */
  KVS_PROF_N
};
typedef struct kvs__store_prof {
  uint64_t ns[KVS_PROF_N], calls[KVS_PROF_N];
  uint64_t put_blocks, get_blocks;   /* blocks quantized / dequantized */
} kvs__store_prof;
/* Attach p (NULL: detach); the store adds into it until detached. */
void kvs__store_set_prof(kvs__store *s, kvs__store_prof *p);
const char *kvs__store_prof_name(int phase);   /* "put.kernel" */

/* Evict every unreferenced block (kvsinkctl evict); returns how many. */
uint64_t kvs__store_evict_all(kvs__store *s);

/* What the store knows about itself; the daemon adds sessions and uptime. */
typedef struct kvs__store_stats {
  uint64_t pool_bytes;       /* capacity: usable bytes of the pool */
  uint64_t pool_used_bytes;  /* bytes of slots holding blocks or sink rows */
  uint64_t pool_free_bytes;  /* bytes of whole free chunks, usable by any size */
  uint64_t residual_bytes;   /* host bytes of 16-bit residual rows now */
  uint64_t residual_max;     /* the bound on residual_bytes */
  uint64_t blocks, blocks_pinned, sink_rows;
  uint64_t lookups, lookup_hit_tokens, lookup_tokens;
  uint64_t puts, gets, evictions, put_nospc;
  uint64_t bytes_in, bytes_out;        /* 16-bit bytes through put / get */
  uint64_t stored_raw_bytes;           /* 16-bit size of what is stored */
  uint64_t stored_bytes;               /* compressed size of what is stored */
  uint64_t sinks_found, sinks_dropped, outliers_kept;
  uint64_t seqs;
  uint32_t spaces;
  char backend[16];                    /* "host" or "cuda" */
} kvs__store_stats;
void kvs__store_stats_get(const kvs__store *s, kvs__store_stats *st);

/* Iterate spaces for kvsinkctl list: cb gets key, blocks held, pinned. */
typedef void (*kvs__space_cb)(const kvs__space_key *key, uint64_t blocks, uint64_t pinned,
                              uint64_t seqs, void *arg);
void kvs__store_foreach_space(const kvs__store *s, kvs__space_cb cb, void *arg);

#endif
