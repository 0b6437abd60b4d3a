/* SPDX-License-Identifier: MIT */
/* Listener, store setup, reload, graceful stop, status. */
#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "store/backend.h"
#include "store/pool.h"
#include "daemon/pools.h"
#include "daemon/log.h"
#ifdef HAVE_REDIS
#include "daemon/remote.h"
#endif
#include "daemon/server.h"
#include "daemon/session.h"
#include "daemon/systemd.h"

static int unlink_stale(const char *path);

static void on_connection(uv_stream_t *l, int status)
{
  kvs__server *s = l->data;
  if (status < 0) {
    kvs__warn("accept: %s", uv_strerror(status));
    return;
  }
  kvs__session_accept(&s->sess, l, l == (uv_stream_t *)&s->admin_listener);
}

/* A path whose directory is missing is reported as such, not as the
 * bind's "permission denied" or "no such file". */
static void report_bind(const char *what, const char *path, int r)
{
  char dir[108];
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (slash && slash != dir) {
    *slash = 0;
    struct stat st;
    if (stat(dir, &st) < 0 && errno == ENOENT) {
      kvs__err("%s %s: directory %s does not exist (create it, or set the path in the config)",
               what, path, dir);
      return;
    }
  }
  kvs__err("bind %s %s: %s", what, path, uv_strerror(r));
}

/* Bind path with mode (umask-proof) and group ("" = leave it). */
static int bind_unix(uv_pipe_t *p, const char *what, const char *path, unsigned mode,
                     const char *group)
{
  int r = unlink_stale(path);
  if (r < 0) {
    kvs__err("%s %s: %s", what, path,
             r == -EADDRINUSE ? "another kvsinkd is listening there"
             : r == -EEXIST   ? "exists and is not a socket"
                              : strerror(-r));
    return r;
  }
  mode_t old = umask(0777 & ~mode);
  r = uv_pipe_bind(p, path);
  umask(old);
  if (r < 0) {
    report_bind(what, path, r);
    return r;
  }
  if (chmod(path, mode) < 0) kvs__warn("chmod %s: %s", path, strerror(errno));
  if (group[0]) {
    struct group *g = getgrnam(group);
    if (!g) {
      kvs__err("%s group '%s': no such group", what, group);
      return -ENOENT;
    }
    if (chown(path, (uid_t)-1, g->gr_gid) < 0) {
      int e = errno;
      kvs__err("chown %s to group %s: %s", path, group, strerror(e));
      return -e;
    }
  }
  return 0;
}

/* Remove a socket file left by a daemon that died, but never a live one
 * or a file that is not a socket. */
static int unlink_stale(const char *path)
{
  struct stat st;
  if (lstat(path, &st) < 0) return errno == ENOENT ? 0 : -errno;
  if (!S_ISSOCK(st.st_mode)) return -EEXIST;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
  int r = connect(fd, (struct sockaddr *)&sa, sizeof sa);
  close(fd);
  if (r == 0) return -EADDRINUSE;
  if (unlink(path) < 0 && errno != ENOENT) return -errno;
  return 0;
}

static int open_listener(kvs__server *s)
{
  uv_pipe_init(s->loop, &s->listener, 0);
  s->listener.data = s;
  int n = kvs__sd_listen_fds();
  int r;
  if (n > 0) {
    if (n > 1) kvs__warn("socket activation passed %d fds; using the first", n);
    r = uv_pipe_open(&s->listener, KVS_SD_LISTEN_FDS_START);
    if (r < 0) {
      kvs__err("socket activation fd: %s", uv_strerror(r));
      return r;
    }
    s->activated = 1;
    kvs__notice("listening on the socket passed by systemd");
  } else {
    r = bind_unix(&s->listener, "socket", s->cfg.socket, s->cfg.socket_mode,
                  s->cfg.socket_group);
    if (r < 0) return r;
  }
  r = uv_listen((uv_stream_t *)&s->listener, 128, on_connection);
  if (r < 0) {
    kvs__err("listen: %s", uv_strerror(r));
    return r;
  }
  s->listening = 1;
  if (!s->activated) kvs__notice("listening on %s", s->cfg.socket);
  return 0;
}

static int open_admin_listener(kvs__server *s)
{
  char path[108];
  int r = kvs__config_admin_path(&s->cfg, path);
  if (r == -ENOENT) return 0; /* admin_socket = none */
  if (r < 0) {
    kvs__err("admin socket: the path derived from %s is too long; set admin_socket",
             s->cfg.socket);
    return r;
  }
  uv_pipe_init(s->loop, &s->admin_listener, 0);
  s->admin_listener.data = s;
  s->admin_listening = 1; /* from here on the handle must be closed */
  r = bind_unix(&s->admin_listener, "admin socket", path, s->cfg.admin_socket_mode,
                s->cfg.admin_socket_group);
  if (r < 0) return r;
  r = uv_listen((uv_stream_t *)&s->admin_listener, 16, on_connection);
  if (r < 0) {
    kvs__err("listen %s: %s", path, uv_strerror(r));
    return r;
  }
  memcpy(s->admin_path, path, sizeof path);
  kvs__notice("admin socket %s", path);
  return 0;
}

static kvs__backend *open_backend(kvs__server *s)
{
#ifdef HAVE_CUDA
  if (s->cfg.device != KVS_DEVICE_HOST) {
    char msg[256] = "";
    kvs__backend *b = kvs__backend_cuda_open(s->cfg.device < 0 ? 0 : s->cfg.device, msg);
    if (b) return b;
    if (s->cfg.device >= 0) {
      kvs__err("device cuda:%d: %s", s->cfg.device, msg);
      return NULL;
    }
    kvs__notice("no usable GPU (%s); using host memory", msg);
  }
#else
  if (s->cfg.device >= 0) {
    kvs__err("device cuda:%d: kvsinkd was built without CUDA", s->cfg.device);
    return NULL;
  }
#endif
  return &kvs__backend_host;
}

static void on_watchdog(uv_timer_t *t)
{
  (void)t;
  kvs__sd_notify("WATCHDOG=1");
}

static void server_status(kvs__server *s)
{
  kvs__stats st;
  memset(&st, 0, sizeof st);
  kvs__ops_all_stats(&s->sess.env, &st);
  unsigned pct = st.pool_bytes ? (unsigned)(st.pool_used_bytes * 100 / st.pool_bytes) : 0;
  kvs__sd_notifyf("STATUS=serving %llu sessions, pool %u%% used (%s)",
                  (unsigned long long)s->sess.n, pct, s->backend_name);
}

static void on_status(uv_timer_t *t) { server_status(t->data); }

/* ---- Redis tier glue (daemon/remote.c) ---- */

/* The cluster's secret keys the chain hashes, so every daemon of the
 * cluster names a block alike; without it the store draws its own. */
static int remote_key(kvs__server *s, unsigned char key[32])
{
  if (!s->cfg.cluster_key_file[0]) return 0;
#ifdef HAVE_REDIS
  char err[KVS_CONF_ERRMSG];
  int r = kvs__remote_load_key(s->cfg.cluster_key_file, key, err);
  if (r < 0) kvs__err("%s", err);
  return r;
#else
  (void)key;
  kvs__err("cluster_key_file: kvsinkd was built without the Redis tier (hiredis)");
  return -ENOTSUP;
#endif
}

/* The store options of the first pool from the configuration, the
 * cluster key included; the other GPUs' pools take the same (pools.c), so
 * every pool names blocks alike. */
static int store_opts(kvs__server *s, kvs__backend *b, kvs__store_opts *o)
{
  memset(o, 0, sizeof *o);
  o->pool_bytes = s->cfg.pool_size;
  o->backend = b;
  o->max_pending = s->cfg.max_pending_tokens;
  o->residual_bytes = s->cfg.residual_bytes;
  o->residual_seq_bytes = s->cfg.residual_seq_bytes;
  return remote_key(s, o->hash_key);
}

static int remote_start(kvs__server *s)
{
  if (!s->cfg.remote[0]) return 0;
#ifdef HAVE_REDIS
  int r = kvs__remote_start(&s->remote, s->loop, &s->cfg, s->store);
  if (r < 0) kvs__err("redis tier: %s", strerror(-r));
  return r;
#else
  kvs__err("remote: kvsinkd was built without the Redis tier (hiredis)");
  return -ENOTSUP;
#endif
}

static void remote_stats(kvs__server *s, kvs__stats *st)
{
#ifdef HAVE_REDIS
  if (!s->remote) return;
  kvs__remote_stats rs;
  kvs__remote_stats_get(s->remote, &rs);
  st->remote_hits = rs.hits;
  st->remote_misses = rs.misses;
  st->remote_bytes_in = rs.bytes_in;
  st->remote_bytes_out = rs.bytes_out;
  st->remote_errors = rs.errors;
  st->remote_rejected = rs.rejected;
  st->remote_timeouts = rs.timeouts;
  st->remote_dropped = rs.dropped;
  st->remote_latency_us_sum = rs.latency_us_sum;
  st->remote_latency_count = rs.latency_count;
  st->remote_connected = rs.connected;
#else
  (void)s;
  (void)st;
#endif
}

/* ---- end of the Redis tier glue ---- */

/* KVSINK_PROFILE=1: sessions log where their puts and gets spent their
 * time when they close (daemon/prof.h); for benchmarks, off by default. */
static int profile_env(void)
{
  const char *v = getenv("KVSINK_PROFILE");
  int on = v && atoi(v) > 0;
  if (on) kvs__notice("KVSINK_PROFILE: sessions log their put/get profile at close");
  return on;
}

/* The stats fields the store does not know. */
static void server_stats(void *arg, kvs__stats *st)
{
  kvs__server *s = arg;
  st->sessions = s->sess.n;
  st->sessions_total = s->sess.total;
  st->uptime_s = (uv_now(s->loop) - s->started_ms) / 1000;
  snprintf(st->backend, sizeof st->backend, "%s", s->backend_name ? s->backend_name : "host");
  remote_stats(s, st);
}

static int reload_cb(void *arg, char *errmsg) { return kvs__server_reload(arg, errmsg); }

static void foreach_session(void *arg, kvs__sess_cb cb, void *cb_arg)
{
  kvs__server *s = arg;
  for (kvs__session *ss = s->sess.head; ss; ss = ss->next) cb(&ss->st, cb_arg);
}

/* The /metrics body: the admin's view of everything. */
static char *render_metrics(void *arg, size_t *len)
{
  kvs__server *s = arg;
  kvs__text t = {0};
  if (kvs__ops_metrics_text(&s->sess.env, &t) < 0) {
    kvs__text_free(&t);
    return NULL;
  }
  *len = t.len;
  return t.p;
}

static int open_metrics(kvs__server *s)
{
  struct sockaddr_storage a;
  if (kvs__config_metrics_addr(s->cfg.metrics_listen, &a) < 0) return 0; /* off */
  return kvs__httpd_start(&s->httpd, s->loop, (const struct sockaddr *)&a, s->cfg.metrics_listen,
                          render_metrics, s);
}

static void on_sighup(void *arg)
{
  char msg[KVS_CONF_ERRMSG];
  kvs__server_reload(arg, msg);
}

static void on_sigterm(void *arg) { kvs__server_stop(arg); }

static void maybe_finish(kvs__server *s);
static void on_session_gone(void *arg) { maybe_finish(arg); }

/* -1 when admin_group is unset; an unknown group is a start error. */
static int admin_gid(const kvs__config *c)
{
  if (!c->admin_group[0]) return -1;
  struct group *g = getgrnam(c->admin_group);
  if (!g) {
    kvs__warn("admin_group '%s': no such group; only uid 0 is admin on the data socket",
              c->admin_group);
    return -1;
  }
  return (int)g->gr_gid;
}

int kvs__server_start(kvs__server *s, uv_loop_t *loop)
{
  s->loop = loop;
  s->started_ms = uv_now(loop);
  kvs__backend *b = open_backend(s);
  if (!b) return -ENODEV;
  s->backend = b;
  kvs__store_opts o;
  int r = store_opts(s, b, &o);
  if (r < 0) return r;
  r = kvs__store_init(&s->store, &o);
  if (r < 0) {
    kvs__err("cannot create a %llu-byte pool on %s: %s", (unsigned long long)s->cfg.pool_size,
             b->name, strerror(-r));
    return r;
  }
  s->backend_name = b->name;
  kvs__notice("pool of %llu bytes on %s%s", (unsigned long long)s->cfg.pool_size, b->name,
              kvs__store_exportable(s->store) == KVS_POOL_EXPORT_DEVICE
                  ? " (chunks are exportable CUDA allocations: block tables on)"
              : b->dev_io ? " (one CUDA allocation: no block tables)" : "");
  /* the other GPUs' pools; device segments for clients of any of them */
  r = kvs__pools_open(&s->devs, &s->cfg.devices, s->cfg.device < 0 ? 0 : s->cfg.device, s->store,
                      b, &o);
  if (r < 0) return r;
  r = kvs__profiles_load(&s->profiles, s->cfg.profiles_dir);
  if (r < 0) return r;
  s->sess = (kvs__sessions){
      .loop = loop, .cfg = &s->cfg, .admin_gid = admin_gid(&s->cfg),
      .env = {.store = s->store, .backend = s->backend, .devs = &s->devs,
              .cfg = &s->cfg, .profiles = &s->profiles,
              .server_stats = server_stats, .reload = reload_cb,
              .foreach_session = foreach_session, .arg = s, .metrics = &s->metrics,
              .profile = profile_env()},
      .on_gone = on_session_gone, .arg = s};
  r = remote_start(s);
  if (r < 0) return r;
  s->sess.remote = s->remote;
  kvs__signals_init(&s->sig, loop, on_sigterm, on_sighup, s);
  r = open_listener(s);
  if (r < 0) return r;
  r = open_admin_listener(s);
  if (r < 0) return r;
  r = open_metrics(s);
  if (r < 0) return r;
  uint64_t wd = kvs__sd_watchdog_usec();
  uv_timer_init(loop, &s->watchdog);
  if (wd) {
    uint64_t ms = wd / 2000;
    uv_timer_start(&s->watchdog, on_watchdog, ms ? ms : 1, ms ? ms : 1);
  }
  uv_timer_init(loop, &s->drain);
  s->drain.data = s;
  uv_timer_init(loop, &s->status_timer);
  s->status_timer.data = s;
  uv_timer_start(&s->status_timer, on_status, 10000, 10000);
  kvs__sd_notify("READY=1");
  server_status(s);
  return 0;
}

/* Apply the command-line values over a freshly parsed file. */
static void apply_overrides(kvs__server *s, kvs__config *c)
{
  if (s->override_mask & KVS_OVR_SOCKET) memcpy(c->socket, s->overrides.socket, sizeof c->socket);
  if (s->override_mask & KVS_OVR_POOL) c->pool_size = s->overrides.pool_size;
  if (s->override_mask & KVS_OVR_LOG) c->log_level = s->overrides.log_level;
  if (s->override_mask & KVS_OVR_DEVICE) {
    c->device = s->overrides.device;
    c->devices = s->overrides.devices;
  }
}

int kvs__server_reload(kvs__server *s, char *errmsg)
{
  kvs__sd_notify("RELOADING=1");
  kvs__config c;
  kvs__config_defaults(&c);
  int r = 0;
  if (s->config_path) r = kvs__config_load(&c, s->config_path, errmsg);
  if (r < 0) {
    kvs__err("reload failed, keeping the old configuration: %s", errmsg);
    kvs__sd_notify("READY=1");
    return -EINVAL;
  }
  apply_overrides(s, &c);
  if (c.pool_size != s->cfg.pool_size || strcmp(c.socket, s->cfg.socket) != 0 ||
      c.device != s->cfg.device || c.socket_mode != s->cfg.socket_mode ||
      strcmp(c.socket_group, s->cfg.socket_group) != 0 ||
      strcmp(c.metrics_listen, s->cfg.metrics_listen) != 0)
    kvs__notice("reload: pool_size, device, socket and metrics_listen settings change only at "
                "restart");
  /* The pool and the socket stay as they are. */
  memcpy(c.socket, s->cfg.socket, sizeof c.socket);
  memcpy(c.socket_group, s->cfg.socket_group, sizeof c.socket_group);
  c.socket_mode = s->cfg.socket_mode;
  memcpy(c.metrics_listen, s->cfg.metrics_listen, sizeof c.metrics_listen);
  c.pool_size = s->cfg.pool_size;
  c.device = s->cfg.device;
  c.devices = s->cfg.devices;
  /* The Redis tier and the cluster key are fixed at start too. */
  if (strcmp(c.remote, s->cfg.remote) != 0 || strcmp(c.cluster_key_file, s->cfg.cluster_key_file) != 0 ||
      c.remote_timeout_ms != s->cfg.remote_timeout_ms || c.remote_queue != s->cfg.remote_queue)
    kvs__notice("reload: remote* and cluster_key_file change only at restart");
  memcpy(c.remote, s->cfg.remote, sizeof c.remote);
  memcpy(c.remote_host, s->cfg.remote_host, sizeof c.remote_host);
  memcpy(c.remote_path, s->cfg.remote_path, sizeof c.remote_path);
  c.remote_port = s->cfg.remote_port;
  memcpy(c.cluster_key_file, s->cfg.cluster_key_file, sizeof c.cluster_key_file);
  c.remote_timeout_ms = s->cfg.remote_timeout_ms;
  c.remote_queue = s->cfg.remote_queue;

  kvs__profiles np;
  if (kvs__profiles_load(&np, c.profiles_dir) < 0) {
    snprintf(errmsg, KVS_CONF_ERRMSG, "out of memory loading profiles");
    kvs__err("reload failed, keeping the old configuration: %s", errmsg);
    kvs__sd_notify("READY=1");
    return -ENOMEM;
  }
  /* Spaces hold their own copy of their profile (kvs__space_ref), so the
   * old set can go at once; a reload no longer grows the daemon. */
  kvs__profiles_free(&s->profiles);
  s->profiles = np;
  s->cfg = c;
  s->sess.admin_gid = admin_gid(&c);
  kvs__log_set_level(c.log_level);
  kvs__notice("configuration reloaded from %s: log_level %s, k_bits %u, v_bits %u, policy %s, "
              "pfn %u, %zu profiles",
              s->config_path ? s->config_path : "(built-in defaults)",
              kvs__log_level_name(c.log_level), c.k_bits, c.v_bits, kvs__policy_name(c.policy), c.pfn,
              s->profiles.n);
  kvs__sd_notify("READY=1");
  errmsg[0] = 0;
  return 0;
}

static void maybe_finish(kvs__server *s)
{
  if (!s->stopping || s->sess.head) return;
  /* Closing the last handles lets uv_run return. */
  if (!s->sig.closed) {
#ifdef HAVE_REDIS
    kvs__remote_stop(s->remote);
#endif
    uv_close((uv_handle_t *)&s->drain, NULL);
    kvs__sessions_close(&s->sess);
    kvs__signals_close(&s->sig);
  }
}

/* A client that never reads its replies must not hold the stop forever
 * (systemd would end it with SIGKILL after TimeoutStopSec anyway). */
static void on_drain_timeout(uv_timer_t *t)
{
  kvs__server *s = t->data;
  kvs__warn("stop: %llu sessions still open after %u s, closing them",
               (unsigned long long)s->sess.n, KVS_DRAIN_MS / 1000);
  for (kvs__session *ss = s->sess.head, *next; ss; ss = next) {
    next = ss->next;
    kvs__session_abort(ss);
  }
}

void kvs__server_stop(kvs__server *s)
{
  if (s->stopping) return;
  s->stopping = 1;
  kvs__sd_notify("STOPPING=1");
  if (s->listening) {
    uv_close((uv_handle_t *)&s->listener, NULL);
    s->listening = 0;
    if (!s->activated) unlink(s->cfg.socket);
  }
  if (s->admin_listening) {
    uv_close((uv_handle_t *)&s->admin_listener, NULL);
    s->admin_listening = 0;
    if (s->admin_path[0]) unlink(s->admin_path);
  }
  kvs__httpd_stop(&s->httpd);
  uv_close((uv_handle_t *)&s->watchdog, NULL);
  uv_close((uv_handle_t *)&s->status_timer, NULL);
  uv_timer_start(&s->drain, on_drain_timeout, KVS_DRAIN_MS, 0);
  uv_unref((uv_handle_t *)&s->drain);
  for (kvs__session *ss = s->sess.head, *next; ss; ss = next) {
    next = ss->next;
    kvs__session_shutdown(ss);
  }
  maybe_finish(s);
}

void kvs__server_close(kvs__server *s)
{
  kvs__pools_close(&s->devs, s->store);
#ifdef HAVE_REDIS
  kvs__remote_stop(s->remote);
  kvs__remote_free(s->remote);
#endif
  s->remote = NULL;
  if (s->store) kvs__store_close(s->store);
  s->store = NULL;
#ifdef HAVE_CUDA
  if (s->backend && s->backend != &kvs__backend_host) kvs__backend_cuda_close(s->backend);
#endif
  s->backend = NULL;
  kvs__profiles_free(&s->profiles);
}
