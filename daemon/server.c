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
#include "daemon/log.h"
#include "daemon/pools.h"
#include "daemon/server.h"
#include "daemon/session.h"
#include "daemon/systemd.h"

static void on_connection(uv_stream_t *l, int status)
{
  kvs__server *s = l->data;
  if (status < 0) {
    kvs__warn("accept: %s", uv_strerror(status));
    return;
  }
  kvs__session_accept(s);
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
    const char *path = s->cfg.socket;
    r = unlink_stale(path);
    if (r < 0) {
      kvs__err("socket %s: %s", path,
               r == -EADDRINUSE ? "another kvsinkd is listening there"
               : r == -EEXIST   ? "exists and is not a socket"
                                : strerror(-r));
      return r;
    }
    mode_t old = umask(0777 & ~s->cfg.socket_mode);
    r = uv_pipe_bind(&s->listener, path);
    umask(old);
    if (r < 0) {
      kvs__err("bind %s: %s", path, uv_strerror(r));
      return r;
    }
    if (chmod(path, s->cfg.socket_mode) < 0)
      kvs__warn("chmod %s: %s", path, strerror(errno));
    if (s->cfg.socket_group[0]) {
      struct group *g = getgrnam(s->cfg.socket_group);
      if (!g) {
        kvs__err("socket_group '%s': no such group", s->cfg.socket_group);
        return -ENOENT;
      }
      if (chown(path, (uid_t)-1, g->gr_gid) < 0) {
        kvs__err("chown %s to group %s: %s", path, s->cfg.socket_group, strerror(errno));
        return -errno;
      }
    }
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

static void on_status(uv_timer_t *t) { kvs__server_status(t->data); }

/* The store's own stats into the wire struct. blocks_total stays the count
 * of blocks held: the pool's capacity is pool_bytes (blocks of several
 * sizes share it). */
static void copy_store_stats(const kvs__store *store, kvs__stats *st)
{
  _Static_assert(KVS_MAX_ERRMSG >= KVS_STORE_ERRMSG && KVS_MAX_MODEL_ID == KVS_STORE_MAX_MODEL_ID &&
                     KVS_MAX_TOKENS_PER_PUT <= KVS_STORE_MAX_TOKENS &&
                     KVS_MAX_LAYERS <= KVS_STORE_MAX_LAYERS &&
                     KVS_MAX_KV_HEADS <= KVS_STORE_MAX_KV_HEADS &&
                     KVS_MAX_HEAD_DIM <= KVS_STORE_MAX_HEAD_DIM,
                 "wire limits within the store's");
  kvs__store_stats ss;
  kvs__store_stats_get(store, &ss);
  st->pool_bytes = ss.pool_bytes;
  st->pool_used_bytes = ss.pool_used_bytes;
  st->blocks_total = ss.blocks;
  st->blocks_used = ss.blocks;
  st->blocks_pinned = ss.blocks_pinned;
  st->sink_rows_used = ss.sink_rows;
  st->lookups = ss.lookups;
  st->lookup_hit_tokens = ss.lookup_hit_tokens;
  st->lookup_tokens = ss.lookup_tokens;
  st->puts = ss.puts;
  st->gets = ss.gets;
  st->evictions = ss.evictions;
  st->put_nospc = ss.put_nospc;
  st->bytes_in = ss.bytes_in;
  st->bytes_out = ss.bytes_out;
  st->stored_raw_bytes = ss.stored_raw_bytes;
  st->stored_bytes = ss.stored_bytes;
  st->sinks_found = ss.sinks_found;
  st->sinks_dropped = ss.sinks_dropped;
  st->outliers_kept = ss.outliers_kept;
  st->seqs = ss.seqs;
  st->spaces = ss.spaces;
  snprintf(st->backend, sizeof st->backend, "%s", ss.backend);
}

void kvs__server_status(kvs__server *s)
{
  kvs__stats st;
  memset(&st, 0, sizeof st);
  copy_store_stats(s->store, &st);
  unsigned pct = st.pool_bytes ? (unsigned)(st.pool_used_bytes * 100 / st.pool_bytes) : 0;
  kvs__sd_notifyf("STATUS=serving %llu sessions, pool %u%% used (%s)",
                  (unsigned long long)s->n_sessions, pct, s->backend_name);
}

int kvs__server_start(kvs__server *s, uv_loop_t *loop)
{
  s->loop = loop;
  s->started_ms = uv_now(loop);
  kvs__backend *b = open_backend(s);
  if (!b) return -ENODEV;
  s->backend = b;
  kvs__store_opts o = {.pool_bytes = s->cfg.pool_size, .backend = b,
                       .max_pending = s->cfg.max_pending_tokens};
  int r = kvs__store_init(&s->store, &o);
  if (r < 0) {
    kvs__err("cannot create a %llu-byte pool on %s: %s", (unsigned long long)s->cfg.pool_size,
             b->name, strerror(-r));
    return r;
  }
  s->backend_name = b->name;
  kvs__notice("pool of %llu bytes on %s", (unsigned long long)s->cfg.pool_size, b->name);
  /* the other GPUs' pools; device segments for clients of any of them */
  r = kvs__pools_open(s);
  if (r < 0) return r;
  r = kvs__profiles_load(&s->profiles, s->cfg.profiles_dir);
  if (r < 0) return r;
  kvs__server_signals_init(s);
  r = open_listener(s);
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
  kvs__server_status(s);
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
      strcmp(c.socket_group, s->cfg.socket_group) != 0)
    kvs__notice("reload: pool_size, device and socket settings change only at restart");
  /* The pool and the socket stay as they are. */
  memcpy(c.socket, s->cfg.socket, sizeof c.socket);
  memcpy(c.socket_group, s->cfg.socket_group, sizeof c.socket_group);
  c.socket_mode = s->cfg.socket_mode;
  c.pool_size = s->cfg.pool_size;
  c.device = s->cfg.device;
  c.devices = s->cfg.devices;

  kvs__profiles np;
  if (kvs__profiles_load(&np, c.profiles_dir) < 0) {
    snprintf(errmsg, KVS_CONF_ERRMSG, "out of memory loading profiles");
    kvs__err("reload failed, keeping the old configuration: %s", errmsg);
    kvs__sd_notify("READY=1");
    return -ENOMEM;
  }
  /* Spaces created under the old set may point into it: retire, not free. */
  kvs__profiles *old = malloc(sizeof *old);
  if (!old) {
    kvs__profiles_free(&np);
    snprintf(errmsg, KVS_CONF_ERRMSG, "out of memory");
    kvs__sd_notify("READY=1");
    return -ENOMEM;
  }
  *old = s->profiles;
  np.retired = old;
  s->profiles = np;
  s->cfg = c;
  kvs__log_set_level(c.log_level);
  kvs__notice("configuration reloaded from %s: log_level %s, k_bits %u, v_bits %u, policy %d, "
              "pfn %u, %zu profiles",
              s->config_path ? s->config_path : "(built-in defaults)",
              kvs__log_level_name(c.log_level), c.k_bits, c.v_bits, c.policy, c.pfn,
              s->profiles.n);
  kvs__sd_notify("READY=1");
  errmsg[0] = 0;
  return 0;
}

static void maybe_finish(kvs__server *s)
{
  if (!s->stopping || s->sessions) return;
  /* Closing the last handles lets uv_run return. */
  if (!uv_is_closing((uv_handle_t *)&s->sig_term)) {
    uv_close((uv_handle_t *)&s->drain, NULL);
    uv_close((uv_handle_t *)&s->sig_term, NULL);
    uv_close((uv_handle_t *)&s->sig_int, NULL);
    uv_close((uv_handle_t *)&s->sig_hup, NULL);
  }
}

/* A client that never reads its replies must not hold the stop forever
 * (systemd would end it with SIGKILL after TimeoutStopSec anyway). */
static void on_drain_timeout(uv_timer_t *t)
{
  kvs__server *s = t->data;
  kvs__warn("stop: %llu sessions still open after %u s, closing them",
               (unsigned long long)s->n_sessions, KVS_DRAIN_MS / 1000);
  for (kvs__session *ss = s->sessions, *next; ss; ss = next) {
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
  uv_close((uv_handle_t *)&s->watchdog, NULL);
  uv_close((uv_handle_t *)&s->status_timer, NULL);
  uv_timer_start(&s->drain, on_drain_timeout, KVS_DRAIN_MS, 0);
  uv_unref((uv_handle_t *)&s->drain);
  for (kvs__session *ss = s->sessions, *next; ss; ss = next) {
    next = ss->next;
    kvs__session_shutdown(ss);
  }
  maybe_finish(s);
}

void kvs__server_session_gone(kvs__server *s, kvs__session *ss)
{
  if (ss->prev) ss->prev->next = ss->next;
  else s->sessions = ss->next;
  if (ss->next) ss->next->prev = ss->prev;
  s->n_sessions--;
  kvs__debug("session %llu: closed", (unsigned long long)ss->id);
  maybe_finish(s);
}

void kvs__server_fill_stats(kvs__server *s, kvs__stats *st)
{
  memset(st, 0, sizeof *st);
  copy_store_stats(s->store, st);
  kvs__pools_fill_stats(s, st); /* the first pool above, every GPU's here */
  st->sessions = s->n_sessions;
  st->sessions_total = s->sessions_total;
  st->uptime_s = (uv_now(s->loop) - s->started_ms) / 1000;
  snprintf(st->backend, sizeof st->backend, "%s", s->backend_name ? s->backend_name : "host");
}

void kvs__server_close(kvs__server *s)
{
  kvs__pools_close(s);
  if (s->store) kvs__store_close(s->store);
  s->store = NULL;
#ifdef HAVE_CUDA
  if (s->backend && s->backend != &kvs__backend_host) kvs__backend_cuda_close(s->backend);
#endif
  s->backend = NULL;
  kvs__profiles_free(&s->profiles);
}
