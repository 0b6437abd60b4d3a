/* SPDX-License-Identifier: MIT */
/* The Redis tier over hiredis's async API in kvsinkd's libuv loop.
 *
 * Why write on publish rather than on evict: a prefix is worth most to
 * other hosts while it is hot, and on evict it would reach them only
 * after this host stopped needing it (perhaps never, for a big pool).
 * Redis bounds its own memory (maxmemory + allkeys-lru), so writing
 * every block costs only bandwidth, bounded here by remote_queue.
 *
 * Keys: "kvsink:2:" NS ":" SPACE ":" CHAIN ":" LAYER, SPACE and CHAIN in
 * hex, both keyed by the cluster secret; values: kvs__block_serialize
 * (format version, checksum), checked whole by kvs__space_import. */
#include <errno.h>
#include <fcntl.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <hiredis/adapters/libuv.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/log.h"
#include "daemon/remote.h"

#define KEY_MAX 192u          /* "kvsink:2:" + ns (63) + 32 + 32 + layer + colons */
#define MAX_KEYS 8192u        /* keys in one MGET: groups x layers */
#define MAX_REPLY (128u << 20) /* bytes one MGET may bring, at 16 bits */
#define MAX_PENDING 64u       /* MGETs unanswered: a hung Redis costs no more */
#define BACKOFF_MIN_MS 100u
#define BACKOFF_MAX_MS 5000u
#define CONNECT_TIMEOUT_MS 1000u
#define LOG_EVERY_MS 5000u    /* one fault message per kind this often */
#define TICK_MS 1000u         /* while up: is Redis still answering? */
#define STALL_MIN_MS 2000u    /* nothing answered this long: reconnect */

enum { DOWN, CONNECTING, UP };
enum { LOG_CONN, LOG_CMD, LOG_VALUE, LOG__N };

struct kvs__remote {
  uv_loop_t *loop;
  kvs__store *store;
  kvs__config cfg;
  redisAsyncContext *ac;
  int state, stopping;
  uv_timer_t timer;           /* reconnect backoff, connect timeout */
  uint32_t backoff_ms;
  uint64_t inflight;          /* bytes of SETs sent and not yet answered */
  uint32_t pending;           /* MGETs sent and not yet answered */
  uint64_t replies, replies_seen; /* replies received; as of the last tick */
  uint32_t stalled_ms;        /* commands outstanding and no reply since */
  kvs__remote_stats st;
  uint64_t last_log[LOG__N], suppressed[LOG__N];
};

struct kvs__remote_req {
  kvs__remote *r;
  kvs__space *sp;
  kvs__remote_done done;      /* NULL once answered (timeout) or cancelled */
  void *arg;
  uint32_t *tokens;           /* the prefix, for import */
  uint32_t g0, ng, nl;        /* groups [g0, g0+ng) asked, nl layers each */
  int reply_pending, closing;
  uint64_t sent_ns;
  uv_timer_t timer;
};

/* Faults repeat at the rate of requests: log one, count the rest. */
static void rlog(kvs__remote *r, int kind, int level, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void rlog(kvs__remote *r, int kind, int level, const char *fmt, ...)
{
  uint64_t now = uv_now(r->loop);
  if (r->last_log[kind] && now - r->last_log[kind] < LOG_EVERY_MS) {
    r->suppressed[kind]++;
    return;
  }
  char msg[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (r->suppressed[kind])
    kvs__log(level, "redis: %s (%llu similar messages suppressed)", msg,
             (unsigned long long)r->suppressed[kind]);
  else
    kvs__log(level, "redis: %s", msg);
  r->last_log[kind] = now ? now : 1;
  r->suppressed[kind] = 0;
}

int kvs__remote_load_key(const char *path, unsigned char key[32], char *errmsg)
{
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    snprintf(errmsg, KVS_CONF_ERRMSG, "cluster_key_file %s: %s", path, strerror(e));
    return -e;
  }
  struct stat sb;
  unsigned char buf[33];
  ssize_t n = -1;
  if (fstat(fd, &sb) == 0)
    n = read(fd, buf, sizeof buf);
  int e = errno;
  close(fd);
  if (n < 0) {
    snprintf(errmsg, KVS_CONF_ERRMSG, "cluster_key_file %s: %s", path, strerror(e));
    return -e;
  }
  if (n != 32) {
    snprintf(errmsg, KVS_CONF_ERRMSG, "cluster_key_file %s: expected exactly 32 bytes", path);
    return -EINVAL;
  }
  if (sb.st_mode & 0004)
    kvs__warn("cluster_key_file %s is world-readable: anyone who reads it can name blocks", path);
  memcpy(key, buf, 32);
  return 0;
}

/* ---- connection ---- */

static void schedule(kvs__remote *r);
static void on_timer(uv_timer_t *t);

static void on_connect(const redisAsyncContext *ac, int status)
{
  kvs__remote *r = ac->data;
  if (status != REDIS_OK) {
    /* hiredis frees ac after this callback */
    rlog(r, LOG_CONN, KVS_LOG_WARNING, "cannot connect to %s: %s; serving locally", r->cfg.remote,
         ac->errstr);
    r->ac = NULL;
    r->state = DOWN;
    r->st.errors++;
    schedule(r);
    return;
  }
  r->state = UP;
  r->stalled_ms = 0;
  r->replies_seen = r->replies;
  uv_timer_start(&r->timer, on_timer, TICK_MS, TICK_MS);
  r->backoff_ms = 0;
  r->last_log[LOG_CONN] = 0; /* the next fault is news */
  kvs__notice("redis: connected to %s", r->cfg.remote);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
  kvs__remote *r = ac->data;
  r->ac = NULL;
  r->state = DOWN;
  if (r->stopping)
    return;
  r->st.errors++;
  rlog(r, LOG_CONN, KVS_LOG_WARNING, "connection to %s lost (%s); serving locally, retrying",
       r->cfg.remote, status == REDIS_OK ? "closed" : ac->errstr);
  schedule(r);
}

static void do_connect(kvs__remote *r)
{
  redisAsyncContext *ac = r->cfg.remote_path[0]
                              ? redisAsyncConnectUnix(r->cfg.remote_path)
                              : redisAsyncConnect(r->cfg.remote_host, (int)r->cfg.remote_port);
  if (!ac || ac->err) {
    rlog(r, LOG_CONN, KVS_LOG_WARNING, "cannot connect to %s: %s; serving locally", r->cfg.remote,
         ac ? ac->errstr : "out of memory");
    if (ac)
      redisAsyncFree(ac);
    r->st.errors++;
    schedule(r);
    return;
  }
  ac->data = r;
  if (redisLibuvAttach(ac, r->loop) != REDIS_OK) {
    redisAsyncFree(ac);
    r->st.errors++;
    schedule(r);
    return;
  }
  redisAsyncSetConnectCallback(ac, on_connect);
  redisAsyncSetDisconnectCallback(ac, on_disconnect);
  r->ac = ac;
  r->state = CONNECTING;
  /* hiredis 0.14 has no connect timeout: a silent host would hang here */
  uv_timer_start(&r->timer, on_timer, CONNECT_TIMEOUT_MS, 0);
}

/* Retry after a doubling delay, so a dead Redis costs little. */
static void schedule(kvs__remote *r)
{
  if (r->stopping)
    return;
  r->backoff_ms = r->backoff_ms ? r->backoff_ms * 2 : BACKOFF_MIN_MS;
  if (r->backoff_ms > BACKOFF_MAX_MS)
    r->backoff_ms = BACKOFF_MAX_MS;
  uv_timer_start(&r->timer, on_timer, r->backoff_ms, 0);
}

/* hiredis 0.14's libuv adapter drops poll errors, and a peer that
 * vanished sends nothing: a connection whose commands go unanswered for
 * long is given up and made again. */
static void check_stall(kvs__remote *r)
{
  if ((r->pending == 0 && r->inflight == 0) || r->replies != r->replies_seen) {
    r->stalled_ms = 0;
    r->replies_seen = r->replies;
    return;
  }
  r->stalled_ms += TICK_MS;
  uint32_t limit = 2u * r->cfg.remote_timeout_ms;
  if (limit < STALL_MIN_MS)
    limit = STALL_MIN_MS;
  if (r->stalled_ms < limit)
    return;
  rlog(r, LOG_CONN, KVS_LOG_WARNING, "%s answered nothing for %u ms; reconnecting", r->cfg.remote,
       r->stalled_ms);
  redisAsyncContext *ac = r->ac; /* on_disconnect counts the error */
  r->ac = NULL;
  r->state = DOWN;
  uv_timer_stop(&r->timer);
  redisAsyncFree(ac); /* pending callbacks get NULL; on_disconnect reschedules */
  if (!uv_is_active((uv_handle_t *)&r->timer))
    schedule(r);
}

static void on_timer(uv_timer_t *t)
{
  kvs__remote *r = t->data;
  if (r->state == UP) {
    check_stall(r);
  } else if (r->state == CONNECTING) {
    rlog(r, LOG_CONN, KVS_LOG_WARNING, "connecting to %s timed out; serving locally",
         r->cfg.remote);
    redisAsyncContext *ac = r->ac;
    r->ac = NULL;
    r->state = DOWN;
    r->st.errors++;
    redisAsyncFree(ac); /* not connected: no disconnect callback */
    schedule(r);
  } else if (r->state == DOWN) {
    do_connect(r);
  }
}

/* ---- write: the publish hook ---- */

static void hex(char *out, const uint8_t *b, size_t n)
{
  static const char d[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = d[b[i] >> 4];
    out[2 * i + 1] = d[b[i] & 15];
  }
  out[2 * n] = 0;
}

static size_t key_of(char *out, const char *ns, const uint8_t sid[16], const uint8_t id[16],
                     uint32_t layer)
{
  char hs[33], hi[33];
  hex(hs, sid, 16);
  hex(hi, id, 16);
  int n = snprintf(out, KEY_MAX, "kvsink:2:%s:%s:%s:%u", ns, hs, hi, layer);
  return n < 0 ? 0 : (size_t)n;
}

static void on_set(redisAsyncContext *ac, void *reply, void *priv)
{
  kvs__remote *r = ac->data;
  redisReply *rep = reply;
  r->inflight -= (uint64_t)(uintptr_t)priv;
  if (!rep) /* disconnected: counted there */
    return;
  r->replies++;
  if (rep->type == REDIS_REPLY_ERROR) {
    r->st.errors++;
    rlog(r, LOG_CMD, KVS_LOG_WARNING, "SET failed: %.*s", (int)rep->len, rep->str);
  }
}

static void on_publish(const kvs__block_view *v, void *arg)
{
  kvs__remote *r = arg;
  size_t len = kvs__block_serial_size(v);
  if (r->state != UP || r->inflight + len > r->cfg.remote_queue) {
    r->st.dropped++;
    return;
  }
  char key[KEY_MAX];
  uint8_t sid[16];
  kvs__block_space_id(v, sid);
  size_t klen = key_of(key, v->space->ns, sid, v->id, v->layer);
  void *buf = malloc(len);
  if (!buf || kvs__block_serialize(v, buf, len) < 0) {
    free(buf);
    r->st.dropped++;
    return;
  }
  const char *argv[3] = {"SET", key, buf};
  size_t argl[3] = {3, klen, len};
  /* hiredis copies the command into its output buffer */
  if (redisAsyncCommandArgv(r->ac, on_set, (void *)(uintptr_t)len, 3, argv, argl) != REDIS_OK) {
    r->st.dropped++;
  } else {
    r->inflight += len;
    r->st.bytes_out += len;
  }
  free(buf);
}

/* ---- read: one MGET per lookup miss ---- */

static void fetch_closed(uv_handle_t *h)
{
  kvs__remote_req *f = h->data;
  free(f->tokens);
  free(f);
}

static void fetch_maybe_free(kvs__remote_req *f)
{
  if (f->reply_pending || f->done || f->closing)
    return;
  f->closing = 1;
  uv_close((uv_handle_t *)&f->timer, fetch_closed);
}

static void fetch_answer(kvs__remote_req *f)
{
  kvs__remote_done done = f->done;
  f->done = NULL;
  uv_timer_stop(&f->timer);
  if (done)
    done(f->arg);
}

static void on_fetch_timeout(uv_timer_t *t)
{
  kvs__remote_req *f = t->data;
  if (!f->done)
    return;
  f->r->st.timeouts++;
  rlog(f->r, LOG_CMD, KVS_LOG_INFO, "lookup answered locally after %u ms without a reply",
       f->r->cfg.remote_timeout_ms);
  fetch_answer(f);
  fetch_maybe_free(f);
}

/* Import the groups in chain order; a group some layer of which is
 * missing ends the useful part (a lookup stops at its first miss). */
static void import_all(kvs__remote_req *f, const redisReply *rep)
{
  kvs__remote *r = f->r;
  const uint32_t G = kvs__space_qparams(f->sp)->group;
  int complete = 1;
  char err[KVS_STORE_ERRMSG];
  for (uint32_t i = 0; i < f->ng; i++) {
    uint32_t g = f->g0 + i;
    for (uint32_t l = 0; l < f->nl; l++) {
      const redisReply *e = rep->element[(size_t)i * f->nl + l];
      if (e->type != REDIS_REPLY_STRING) {
        if (e->type == REDIS_REPLY_NIL)
          r->st.misses++;
        else
          r->st.rejected++;
        complete = 0;
        continue;
      }
      r->st.bytes_in += e->len;
      if (!complete)
        continue;
      int rc = kvs__space_import(f->sp, f->tokens, (g + 1) * G, e->str, e->len, err);
      if (rc == 0) {
        r->st.hits++;
      } else if (rc != -EEXIST) {
        complete = 0;
        if (rc == -EINVAL) {
          r->st.rejected++;
          rlog(r, LOG_VALUE, KVS_LOG_WARNING, "refused a value for group %u layer %u: %s", g, l,
               err);
        }
      }
    }
  }
}

static void on_mget(redisAsyncContext *ac, void *reply, void *priv)
{
  kvs__remote_req *f = priv;
  kvs__remote *r = f->r;
  redisReply *rep = reply;
  f->reply_pending = 0;
  r->pending--;
  (void)ac;
  if (rep) { /* NULL: the connection went, counted there */
    r->replies++;
    r->st.latency_us_sum += (uv_hrtime() - f->sent_ns) / 1000u;
    r->st.latency_count++;
  }
  if (f->done && rep) {
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements == (size_t)f->ng * f->nl) {
      uint64_t t0 = uv_hrtime();
      import_all(f, rep);
      kvs__debug("redis: MGET of %zu keys answered in %llu us, imported in %llu us",
                 rep->elements, (unsigned long long)(t0 - f->sent_ns) / 1000u,
                 (unsigned long long)(uv_hrtime() - t0) / 1000u);
    } else {
      r->st.errors++;
      rlog(r, LOG_CMD, KVS_LOG_WARNING, "MGET: unexpected reply (type %d%s%.*s)", rep->type,
           rep->type == REDIS_REPLY_ERROR ? ": " : "",
           rep->type == REDIS_REPLY_ERROR ? (int)rep->len : 0, rep->str ? rep->str : "");
    }
  }
  fetch_answer(f);
  fetch_maybe_free(f);
}

int kvs__remote_fetch(kvs__remote *r, kvs__space *sp, const uint32_t *tokens, uint32_t n,
                      kvs__remote_done done, void *arg, kvs__remote_req **out)
{
  if (r->state != UP)
    return -ENOTCONN;
  const uint32_t G = kvs__space_qparams(sp)->group, ng = n / G;
  if (ng == 0)
    return -EALREADY;
  uint8_t sid[16], (*ids)[16] = malloc((size_t)ng * 16u);
  if (!ids)
    return -ENOMEM;
  uint32_t local;
  int rc = kvs__space_chain(sp, tokens, n, ids, &local);
  if (rc < 0 || local == ng) {
    free(ids);
    return rc < 0 ? rc : -EALREADY;
  }
  if (r->pending >= MAX_PENDING) {
    free(ids);
    r->st.timeouts++; /* answered without Redis: it is too slow */
    return -EBUSY;
  }
  kvs__space_id(sp, sid);
  const kvs__space_key *key = kvs__space_key_of(sp);
  const uint32_t nl = key->n_layers;
  kvs__remote_req *f = calloc(1, sizeof *f);
  /* Bounded per round; the next lookup asks for the rest. A block is at
   * most its 16-bit size (plus a little), whatever its bits. */
  const kvs__qparams *qp = kvs__space_qparams(sp);
  uint64_t group_bytes = ((uint64_t)G * qp->channels * 4u + 4096u) * nl;
  uint32_t want = ng - local, cap = MAX_KEYS / nl;
  if (cap > MAX_REPLY / group_bytes)
    cap = (uint32_t)(MAX_REPLY / group_bytes);
  if (cap == 0)
    cap = 1;
  if (want > cap)
    want = cap;
  size_t nkeys = (size_t)want * nl;
  char *keys = malloc(nkeys * KEY_MAX);
  const char **argv = malloc((nkeys + 1) * sizeof *argv);
  size_t *argl = malloc((nkeys + 1) * sizeof *argl);
  uint32_t *tok = malloc((size_t)(local + want) * G * sizeof *tok);
  if (!f || !keys || !argv || !argl || !tok) {
    free(ids);
    free(f);
    free(keys);
    free(argv);
    free(argl);
    free(tok);
    return -ENOMEM;
  }
  const char *ns = key->ns;
  argv[0] = "MGET";
  argl[0] = 4;
  for (uint32_t i = 0; i < want; i++)
    for (uint32_t l = 0; l < nl; l++) {
      size_t j = (size_t)i * nl + l;
      argv[j + 1] = keys + j * KEY_MAX;
      argl[j + 1] = key_of(keys + j * KEY_MAX, ns, sid, ids[local + i], l);
    }
  memcpy(tok, tokens, (size_t)(local + want) * G * sizeof *tok);
  free(ids);
  *f = (kvs__remote_req){.r = r, .sp = sp, .done = done, .arg = arg, .tokens = tok,
                           .g0 = local, .ng = want, .nl = nl, .reply_pending = 1,
                           .sent_ns = uv_hrtime()};
  rc = redisAsyncCommandArgv(r->ac, on_mget, f, (int)nkeys + 1, argv, argl);
  free(keys);
  free(argv);
  free(argl);
  if (rc != REDIS_OK) {
    free(tok);
    free(f);
    r->st.errors++;
    return -ENOTCONN;
  }
  r->pending++;
  uv_timer_init(r->loop, &f->timer);
  f->timer.data = f;
  uv_timer_start(&f->timer, on_fetch_timeout, r->cfg.remote_timeout_ms, 0);
  *out = f;
  return 0;
}

void kvs__remote_fetch_cancel(kvs__remote_req *f)
{
  f->done = NULL;
  uv_timer_stop(&f->timer);
  fetch_maybe_free(f);
}

/* ---- life cycle ---- */

int kvs__remote_start(kvs__remote **out, uv_loop_t *loop, const kvs__config *cfg,
                      kvs__store *store)
{
  kvs__remote *r = calloc(1, sizeof *r);
  if (!r)
    return -ENOMEM;
  r->loop = loop;
  r->store = store;
  r->cfg = *cfg;
  uv_timer_init(loop, &r->timer);
  r->timer.data = r;
  kvs__tier_hooks h = {.on_publish = on_publish, .arg = r};
  kvs__store_set_hooks(store, &h);
  kvs__notice("redis tier: %s, lookups wait at most %u ms%s", cfg->remote, cfg->remote_timeout_ms,
              cfg->cluster_key_file[0] ? "" : " (no cluster_key_file: blocks are found only by "
                                              "this daemon)");
  do_connect(r);
  *out = r;
  return 0;
}

void kvs__remote_stop(kvs__remote *r)
{
  if (!r || r->stopping)
    return;
  r->stopping = 1;
  kvs__store_set_hooks(r->store, NULL);
  uv_timer_stop(&r->timer);
  uv_close((uv_handle_t *)&r->timer, NULL);
  if (r->ac) {
    redisAsyncContext *ac = r->ac;
    r->ac = NULL;
    redisAsyncFree(ac); /* pending callbacks get NULL replies */
  }
  r->state = DOWN;
}

void kvs__remote_free(kvs__remote *r) { free(r); }

void kvs__remote_stats_get(const kvs__remote *r, kvs__remote_stats *st)
{
  *st = r->st;
  st->connected = r->state == UP;
}
