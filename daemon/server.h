/* SPDX-License-Identifier: MIT */
/* kvsinkd's server: the loop, the listener, the shared state sessions use. */
#ifndef KVS_DAEMON_SERVER_H
#define KVS_DAEMON_SERVER_H

#include <stdint.h>
#include <uv.h>

#include "daemon/config.h"
#include "daemon/httpd.h"
#include "daemon/metrics.h"
#include "daemon/profiles.h"
#include "daemon/session.h"
#include "daemon/signals.h"
#include "proto/proto.h"
#include "store/store.h"

#define KVS_DRAIN_MS 10000u /* graceful stop: longest wait for slow clients */

struct kvs__remote;

typedef struct kvs__server {
  uv_loop_t *loop;
  uv_pipe_t listener;
  int listening;
  uv_pipe_t admin_listener; /* admin_socket: every op, no hello needed */
  int admin_listening;
  char admin_path[108];     /* bound admin socket, unlinked at stop */
  int activated;           /* listener came from socket activation */
  kvs__config cfg;
  const char *config_path; /* NULL: embedded default */
  kvs__config overrides;   /* command-line values, re-applied on reload */
  unsigned override_mask;
  kvs__store *store;
  const char *backend_name;
  kvs__backend *backend;   /* closed after the store */
  kvs__profiles profiles;
  kvs__devset devs;        /* GPU pools; their clients get device segments */
  struct kvs__remote *remote; /* the Redis tier, NULL when off (daemon/remote.h) */
  kvs__sessions sess;
  kvs__metrics metrics;    /* request counts and latencies (daemon/metrics.c) */
  kvs__httpd httpd;        /* metrics_listen: GET /metrics */
  uint64_t started_ms;
  kvs__signals sig;
  uv_timer_t watchdog, status_timer;
  uv_timer_t drain;        /* graceful stop gives up on slow clients */
  int stopping;
  int exit_code;
} kvs__server;

/* Bits of override_mask: which cfg fields came from the command line. */
enum {
  KVS_OVR_SOCKET = 1u << 0, KVS_OVR_POOL = 1u << 1, KVS_OVR_LOG = 1u << 2,
  KVS_OVR_DEVICE = 1u << 3,
};

/* Open the store and the listener, install signals, notify READY=1. */
int kvs__server_start(kvs__server *s, uv_loop_t *loop);
/* Reload the config file (SIGHUP, "reload" op). 0 or -EINVAL with errmsg. */
int kvs__server_reload(kvs__server *s, char *errmsg);
/* Graceful stop: no new connections, sessions finish and close. */
void kvs__server_stop(kvs__server *s);
/* Free what the loop no longer uses (after uv_run returns). */
void kvs__server_close(kvs__server *s);

#endif
