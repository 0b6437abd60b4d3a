/* kvsink wire protocol: framing, message structs, msgpack encode/decode,
 * limits and error codes. Shared by kvsinkd and libkvsink; no I/O here.
 *
 * A frame is a 4-byte big-endian length followed by exactly that many bytes
 * holding one msgpack map. Keys are short strings (see kvsink-protocol(7)).
 * Every request carries "op" and "id"; every reply echoes "id" and carries
 * either the result fields or "err": [code, message].
 */
#ifndef KVS_PROTO_H
#define KVS_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include <kvsink.h> /* public error codes, dtype, policy enums */

#define KVS_PROTO_VERSION 1

/* Limits, enforced by the decoder before anything is allocated. */
#define KVS_MAX_FRAME          (1u << 20)  /* bytes of one msgpack frame */
#define KVS_MAX_TOKENS_PER_PUT 8192u       /* token ids in one put/lookup */
#define KVS_MAX_SEQS_PER_CLIENT 1024u      /* live sequences per session */
#define KVS_MAX_MODEL_ID       128u        /* bytes of a model id string */
#define KVS_MAX_LAYERS         256u
#define KVS_MAX_KV_HEADS       256u
#define KVS_MAX_HEAD_DIM       512u
#define KVS_MAX_ACT_CHANNELS   64u         /* channels in an activation summary */
#define KVS_MAX_ERRMSG         256u
#define KVS_MAX_NAME           256u        /* generic short strings */

typedef enum kvs__op {
  KVS_OP_INVALID = 0,
  KVS_OP_HELLO,
  KVS_OP_PUT,
  KVS_OP_LOOKUP,
  KVS_OP_GET,
  KVS_OP_RELEASE,
  KVS_OP_STATS,
  KVS_OP_BYE,
  KVS_OP_LIST,     /* cached sequences / prefixes (kvsinkctl) */
  KVS_OP_EVICT,    /* drop unreferenced blocks (kvsinkctl) */
  KVS_OP_RELOAD,   /* same as SIGHUP (kvsinkctl) */
  KVS_OP_PROFILES, /* list loaded sink profiles (kvsinkctl) */
  KVS_OP_PING,     /* no work; latency and health */
  KVS_OP__COUNT
} kvs__op;

const char *kvs__op_name(kvs__op op);
kvs__op kvs__op_from_name(const char *s, size_t len);

/* hello: model descriptor and the session's quantization settings.
 * Zero / negative values mean "daemon default". */
typedef struct kvs__hello {
  uint32_t version;
  char model_id[KVS_MAX_MODEL_ID + 1];
  uint32_t n_layers, n_kv_heads, head_dim;
  uint32_t dtype;          /* kvs_dtype */
  uint64_t seg_size;       /* requested segment bytes */
  int32_t k_bits, v_bits;  /* 0 = default */
  int32_t policy;          /* kvs_policy, KVS_POLICY_DEFAULT = daemon default */
  int32_t pfn;             /* Preserve-First-N, -1 = default */
  float outliers;          /* fraction 0..0.01, <0 = default */
  uint32_t client_pid;     /* informational */
  /* device segment (kvsink-protocol(7) "DEVICE SEGMENTS"): the client's
   * GPU by UUID (cuDeviceGetUuid), and the bytes it asks for */
  int has_gpu;
  uint8_t gpu_uuid[16];
  uint64_t dev_seg_size;   /* 0 = seg_size */
} kvs__hello;

/* All other requests share one struct; each op uses the fields it documents
 * in kvs-protocol(7). tokens points into the decoder's buffer (valid until
 * kvs__req_free) and is NULL when absent. */
typedef struct kvs__req {
  kvs__op op;
  uint64_t id;
  kvs__hello hello;        /* KVS_OP_HELLO */
  uint64_t seq;            /* put, lookup (bind), get, release */
  uint32_t start;          /* put, get: first token position */
  uint32_t n_tokens;       /* put, lookup: count of tokens[]; get: count */
  uint32_t *tokens;        /* put, lookup */
  uint32_t layer_begin, layer_end; /* put, get: [begin, end) */
  uint64_t k_off, v_off;   /* put, get: segment offsets */
  uint64_t act_off;        /* put: segment offset of float32 [token][channel] */
  uint32_t act_channels;   /* put: 0 = no summary */
  int has_act;
  int bind;                /* lookup: bind cached blocks to seq */
  int dev;                 /* put, get: offsets are in the device segment */
} kvs__req;

/* One GPU pool's part of the stats (a daemon with several GPUs). */
#define KVS_MAX_STATS_DEVICES 16u
typedef struct kvs__dev_stats {
  char device[16];                     /* "cuda:N" */
  uint64_t pool_bytes, pool_used_bytes, blocks_used;
  uint64_t puts, gets, bytes_in, bytes_out, sessions;
} kvs__dev_stats;

/* Stats, also the stats reply. */
typedef struct kvs__stats {
  uint64_t pool_bytes, pool_used_bytes;
  uint64_t blocks_total, blocks_used, blocks_pinned;
  uint64_t sink_rows_used;
  uint64_t lookups, lookup_hit_tokens, lookup_tokens;
  uint64_t puts, gets, evictions, put_nospc;
  uint64_t bytes_in, bytes_out;        /* 16-bit bytes through put / get */
  uint64_t stored_raw_bytes;           /* 16-bit size of what is stored */
  uint64_t stored_bytes;               /* compressed size of what is stored */
  uint64_t sinks_found, sinks_dropped;
  uint64_t outliers_kept;
  uint64_t sessions, sessions_total, seqs;
  uint64_t uptime_s;
  uint32_t spaces;                     /* model/config spaces in the pool */
  char backend[16];                    /* "host" or "cuda" */
  uint32_t n_devices;                  /* GPU pools ("devices"; 0 = host pool) */
  kvs__dev_stats devices[KVS_MAX_STATS_DEVICES];
} kvs__stats;

/* Replies. */
typedef struct kvs__rep {
  kvs__op op;              /* not on the wire: tells the encoder what to write */
  uint64_t id;
  int32_t err;             /* 0 or a negative code */
  char errmsg[KVS_MAX_ERRMSG];
  /* hello */
  uint64_t session;
  uint64_t seg_size;
  uint32_t group;          /* tokens per block (G) */
  int32_t k_bits, v_bits, policy, pfn;
  float outliers;
  int has_profile;
  uint32_t sink_layer;     /* l_E: the summary is the hidden state after it */
  uint32_t n_sink_channels;
  uint32_t sink_channels[KVS_MAX_ACT_CHANNELS];
  int seg_device;          /* 1: a device segment came as the second fd */
  uint64_t dev_seg_size;
  /* put */
  uint32_t quantized;      /* tokens of this put that are now quantized */
  uint32_t sinks;          /* sinks flagged by this put */
  uint32_t seq_len;        /* put/lookup: tokens now held for seq */
  /* lookup */
  uint32_t cached;         /* leading tokens cached, whole blocks */
  /* stats */
  kvs__stats stats;
  /* list / profiles / evict: a free-form msgpack blob built by the daemon
   * (encoded verbatim under key "items"); decoded as a raw pointer+len */
  const char *items;
  size_t items_len;
  uint64_t evicted;
} kvs__rep;

/* Framing. */
void kvs__frame_put_len(uint8_t hdr[4], uint32_t len);
uint32_t kvs__frame_get_len(const uint8_t hdr[4]);

/* Encoders write header+payload into a freshly malloc'd buffer (*out, *len,
 * the 4-byte length header included). Return 0 or -ENOMEM/-E2BIG. */
int kvs__encode_req(const kvs__req *req, char **out, size_t *len);
int kvs__encode_rep(const kvs__rep *rep, char **out, size_t *len);

/* Decoders read one payload (without the 4-byte header). On error they
 * return a negative code (-EBADMSG malformed, -EPROTO unknown op or missing
 * field, -E2BIG over a limit, -EINVAL bad value) and write a message into
 * errmsg (KVS_MAX_ERRMSG bytes); req->id is filled when it could be read so
 * the caller can answer with an error reply. */
int kvs__decode_req(const char *buf, size_t len, kvs__req *req, char *errmsg);
void kvs__req_free(kvs__req *req);
int kvs__decode_rep(const char *buf, size_t len, kvs__rep *rep, char *errmsg);
void kvs__rep_free(kvs__rep *rep);

#endif
