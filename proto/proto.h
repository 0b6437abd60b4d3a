/* SPDX-License-Identifier: MIT */
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

/* Version 2 sends token ids as a bin of little-endian uint32 (1: an array
 * of uint); kvsinkd decodes both and speaks versions MIN..VERSION. */
#define KVS_PROTO_VERSION 2
#define KVS_PROTO_VERSION_MIN 1

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
  KVS_OP_METRICS,  /* the Prometheus exposition as text (kvsinkctl metrics) */
  KVS_OP_TABLE,    /* block table of a seq, pool chunk fds (Attend) */
  KVS_OP_BELL,     /* a request waits in the fast area (proto/fastarea.h); no reply */
  KVS_OP__COUNT
} kvs__op;

const char *kvs__op_name(kvs__op op);
kvs__op kvs__op_from_name(const char *s, size_t len);

/* Policy names on the wire, in logs, configs and kvsinkctl: the one table. */
const char *kvs__policy_name(int policy);
int kvs__policy_from_name(const char *s, size_t len); /* -1 if unknown */
/* The K/V bit widths the quantizer supports (2, 3, 4, 8, 16). */
int kvs__bits_valid(uint32_t bits);

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
  uint8_t salt[KVS_MAX_SALT]; /* joins the space key; salt_len 0 = none */
  uint32_t salt_len;
  int fast;                /* asks for a fast area (proto/fastarea.h) */
} kvs__hello;

/* All other requests share one struct; each op uses the fields it documents
 * in kvsink-protocol(7). tokens is the decoder's own copy (freed by
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
  /* table: seq, layers, k_off = where the table goes, n_tokens = its room
   * in bytes ("n" on the wire) */
} kvs__req;

/* Stats, also the stats reply: the public struct, whose field table
 * KVS_STATS_U64_FIELDS the encoder and decoder walk. */
typedef kvs_stats kvs__stats;

/* Most entries in one list or profiles reply (keeps it under KVS_MAX_FRAME). */
#define KVS_MAX_LIST_ITEMS 2048u
/* Most pools in a stats reply: a host pool and 16 GPUs (daemon/devlist.h). */
#define KVS_MAX_POOLS 17u

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
  int policy_fallback;     /* kvsink asked, no profile: policy is pfn */
  uint32_t v_group;
  uint32_t sink_layer;     /* l_E: the summary is the hidden state after it */
  uint32_t n_sink_channels;
  uint32_t sink_channels[KVS_MAX_ACT_CHANNELS];
  int seg_device;          /* 1: a device segment came as the second fd */
  uint64_t fast_off;       /* hello: the fast area's offset in the segment, 0 = none */
  uint64_t dev_seg_size;
  /* put */
  uint32_t quantized;      /* tokens of this put that are now quantized */
  uint32_t sinks;          /* sinks flagged by this put */
  uint32_t seq_len;        /* put/lookup: tokens now held for seq */
  /* lookup */
  uint32_t cached;         /* leading tokens cached, whole blocks */
  /* stats (pools: admins only, malloc'd, freed by kvs__rep_free) */
  kvs__stats stats;
  kvs_pool_stats *pools;
  uint32_t n_pools;
  /* list, profiles: typed arrays (malloc'd; kvs__rep_free frees them) */
  kvs_space_info *spaces;
  uint32_t n_spaces;
  kvs_profile_info *profiles;
  uint32_t n_profiles;
  /* evict */
  uint64_t evicted;
  /* metrics: text of text_len bytes, NUL-terminated (malloc'd; freed by
   * kvs__rep_free) */
  char *text;
  uint32_t text_len;
  /* table: bytes written, fds passed with this reply, more fds to come
   * (ask again before using the table) */
  uint32_t table_bytes, table_fds;
  int table_more;
  /* table: the units are chunks of a GPU pool (CUDA VMM allocations, the
   * fds to import with cuMemImportFromShareableHandle) on the GPU with
   * this UUID ("chunks": "device", "gpu" on the wire); 0: memfds */
  int table_device;
  uint8_t table_gpu[16];
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
