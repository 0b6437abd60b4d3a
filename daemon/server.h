/* kvsinkd's server: the loop, the listener, the shared state sessions use. */
#ifndef KVS_DAEMON_SERVER_H
#define KVS_DAEMON_SERVER_H

#include <stdint.h>
#include <uv.h>

#include "daemon/config.h"
#include "daemon/devseg.h"
#include "proto/proto.h"
#include "store/store.h"

#define KVS_DRAIN_MS 10000u /* graceful stop: longest wait for slow clients */

/* Sink profiles loaded from profiles_dir, keyed by model id. */
typedef struct kvs__profiles {
  kvs__profile *v;
  size_t n;
  struct kvs__profiles *retired; /* older sets spaces may still point into */
} kvs__profiles;

/* Load every *.profile in dir; a missing dir gives an empty set. Bad files
 * are logged and skipped. Returns 0 or -ENOMEM. */
int kvs__profiles_load(kvs__profiles *p, const char *dir);
void kvs__profiles_free(kvs__profiles *p);
const kvs__profile *kvs__profiles_find(const kvs__profiles *p, const char *model_id);

typedef struct kvs__session kvs__session;

typedef struct kvs__server {
  uv_loop_t *loop;
  uv_pipe_t listener;
  int listening;
  int activated;           /* listener came from socket activation */
  kvs__config cfg;
  const char *config_path; /* NULL: embedded default */
  kvs__config overrides;   /* command-line values, re-applied on reload */
  unsigned override_mask;
  kvs__store *store;
  const char *backend_name;
  kvs__backend *backend;   /* closed after the store */
  kvs__profiles profiles;
  kvs__devset devs;        /* GPUs whose clients get device segments */
  kvs__session *sessions;  /* doubly linked list */
  uint64_t n_sessions, sessions_total, next_session_id;
  uint64_t started_ms;
  uv_signal_t sig_term, sig_int, sig_hup;
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
void kvs__server_fill_stats(kvs__server *s, kvs__stats *st);
void kvs__server_session_gone(kvs__server *s, kvs__session *ss);
void kvs__server_signals_init(kvs__server *s);
void kvs__server_status(kvs__server *s);

#endif
