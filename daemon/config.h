/* SPDX-License-Identifier: MIT */
/* kvsinkd.conf: "key = value" lines, '#' comments (kvsinkd.conf(5)). */
#ifndef KVS_DAEMON_CONFIG_H
#define KVS_DAEMON_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "daemon/devlist.h"

#define KVS_CONF_MAX_SHARED_UIDS 64
#define KVS_CONF_ERRMSG 256

enum { KVS_DEVICE_AUTO = -2, KVS_DEVICE_HOST = -1 }; /* >= 0: cuda:N */

typedef struct kvs__config {
  char socket[108];          /* sun_path size */
  char socket_group[64];     /* "" = leave the group alone */
  unsigned socket_mode;
  char admin_socket[108];    /* "" = next to socket (see kvs__config_admin_path), "none" = off */
  char admin_socket_group[64];
  unsigned admin_socket_mode;
  char admin_group[64];      /* members are admins on the data socket too; "" = uid 0 only */
  uint64_t pool_size;
  int device;                /* the first GPU of devices (or AUTO / HOST) */
  kvs__devlist devices;      /* `device`: auto, host, all or a list */
  uint32_t k_bits, v_bits;
  uint32_t group_size, v_group_size;
  uint32_t pfn;
  int policy;                /* kvs_policy, never DEFAULT */
  float outliers;
  char profiles_dir[256];
  uid_t shared_uids[KVS_CONF_MAX_SHARED_UIDS];
  size_t n_shared_uids;
  uint64_t max_segment_size;
  uint64_t device_staging;      /* device staging of all sessions, per GPU */
  uint32_t table_chunks;        /* chunk handles one session may be passed
                                   by table; 0 = the pool's chunks (GPU),
                                   no bound (host) */
  uint32_t max_sessions;
  uint32_t max_sessions_per_uid; /* data-socket sessions of one uid */
  uint32_t hello_timeout_s;      /* data session without hello is closed */
  uint32_t frame_timeout_s;      /* a partial frame may wait this long */
  uint64_t max_reply_queue;      /* queued reply bytes before a session's reads pause */
  uint32_t busy_poll_us;         /* the loop spins this long after a request; 0 = off */
  int busy_poll_auto;            /* "auto": KVS_BUSY_POLL_GPU_US with GPU pools, else 0 */
  uint32_t max_pending_tokens;
  uint64_t residual_bytes;        /* 16-bit residual of all seqs; 0 = pool_size */
  uint64_t residual_seq_bytes;    /* of one seq; 0 = residual_bytes */
  int log_level;
  /* Redis tier (daemon/remote.c): remote = redis://HOST:PORT or unix:PATH;
   * "" = off. Read at start only. */
  char remote[256];
  char remote_host[256];     /* parsed from remote: host, or "" for unix */
  char remote_path[108];     /* parsed from remote: unix socket path */
  uint32_t remote_port;
  char cluster_key_file[256]; /* 32-byte secret keying block hashes; "" = random */
  uint32_t remote_timeout_ms; /* longest wait of a lookup on Redis */
  uint64_t remote_queue;      /* bytes of writes in flight before dropping */
  char metrics_listen[64];   /* "ADDR:PORT" or "[ADDR6]:PORT" of GET /metrics; "" = off */
} kvs__config;

/* The compiled-in daemon/default.conf. */
extern const char kvs__default_conf[];

/* Fill c from the embedded default config. */
void kvs__config_defaults(kvs__config *c);
/* busy_poll_us in effect: "auto" spins on a daemon that serves GPU pools
 * (its clients wait for kernels and copies, as a CUDA synchronize spins:
 * HACKING.md Decision 50), not on a host-only one. */
#define KVS_BUSY_POLL_GPU_US 1000u
uint32_t kvs__config_busy_poll(const kvs__config *c, int gpu_pools);
/* Apply the lines of text over c. name prefixes error messages
 * ("name:LINE: reason"). On error c may be partly changed: parse into a
 * copy when that matters. Returns 0 or -EINVAL. */
int kvs__config_parse(kvs__config *c, const char *text, const char *name, char *errmsg);
/* Read path and apply it over c; -errno when it cannot be read. */
int kvs__config_load(kvs__config *c, const char *path, char *errmsg);
/* Set one key (command-line overrides use the same checks). */
int kvs__config_set(kvs__config *c, const char *key, const char *value, char *errmsg);
/* The admin socket path: admin_socket, else socket with ".sock" replaced
 * by ".admin.sock" (or ".admin" appended). 0, or -ENOENT when "none",
 * -ENAMETOOLONG when the derived path does not fit. */
int kvs__config_admin_path(const kvs__config *c, char out[108]);
struct sockaddr_storage;
/* metrics_listen as a socket address: 0, -ENOENT when off, -EINVAL when
 * it is not a numeric IPv4 "ADDR:PORT" or IPv6 "[ADDR]:PORT". */
int kvs__config_metrics_addr(const char *v, struct sockaddr_storage *out);
/* Checks that span keys (pfn <= group_size, v_group_size <= ...). */
int kvs__config_check(const kvs__config *c, char *errmsg);

#endif
