/* SPDX-License-Identifier: MIT */
/* libkvsink: the public API of kvsink.h over a blocking kvs__conn. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client/client_int.h"
#include "proto/fastarea.h"
#include <kvsink.h>

void kvs_options_init(kvs_options *opts)
{
  if (!opts)
    return;
  memset(opts, 0, sizeof *opts);
  opts->pfn = -1;
  opts->outliers = -1.0f;
}

static size_t dtype_size(kvs_dtype d)
{
  return d == KVS_DTYPE_F16 || d == KVS_DTYPE_BF16 ? 2 : 0;
}

static int check_model(const kvs_model *m)
{
  if (!m || !m->model_id || !*m->model_id || strlen(m->model_id) > KVS_MAX_MODEL_ID)
    return KVS_EMODEL;
  if (m->n_layers == 0 || m->n_layers > KVS_MAX_LAYERS || m->n_kv_heads == 0 ||
      m->n_kv_heads > KVS_MAX_KV_HEADS || m->head_dim == 0 ||
      m->head_dim > KVS_MAX_HEAD_DIM || dtype_size(m->dtype) == 0)
    return KVS_EMODEL;
  return 0;
}

/* Map the daemon's memfd after checking it is what the reply says. */
static int map_segment(kvs_client *c, int fd, uint64_t size)
{
  struct stat st;
  if (fd < 0) {
    snprintf(c->conn.errmsg, sizeof c->conn.errmsg, "hello reply carried no segment fd");
    return -EPROTO;
  }
  if (size == 0 || size > SIZE_MAX || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
      st.st_size < 0 || (uint64_t)st.st_size < size) {
    snprintf(c->conn.errmsg, sizeof c->conn.errmsg, "segment fd does not match the announced size");
    return KVS_ESEGMENT;
  }
  void *p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    int r = -errno;
    kvs__conn_seterr(&c->conn, r, "mmap segment");
    return r;
  }
  c->seg = p;
  c->seg_size = (size_t)size;
  return 0;
}

static int fill_info(kvs_client *c, const kvs__rep *rep)
{
  kvs_info *i = &c->info;
  if (rep->group == 0 || rep->n_sink_channels > KVS_MAX_ACT_CHANNELS ||
      rep->n_sink_channels > sizeof i->sink_channels / sizeof i->sink_channels[0]) {
    snprintf(c->conn.errmsg, sizeof c->conn.errmsg, "hello reply out of range");
    return -EPROTO;
  }
  i->session = rep->session;
  i->seg_size = c->seg_end;
  i->group = rep->group;
  i->k_bits = rep->k_bits;
  i->v_bits = rep->v_bits;
  i->pfn = rep->pfn;
  i->policy = (kvs_policy)rep->policy;
  i->outliers = rep->outliers;
  i->has_profile = rep->has_profile;
  i->policy_fallback = rep->policy_fallback;
  i->v_group = rep->v_group;
  i->sink_layer = rep->sink_layer;
  i->n_sink_channels = rep->n_sink_channels;
  memcpy(i->sink_channels, rep->sink_channels,
         rep->n_sink_channels * sizeof i->sink_channels[0]);
  return 0;
}

/* hello on c->conn: the memfd, and the device segment when asked for and
 * the daemon serves the client's GPU (else the host segment only). */
static int hello(kvs_client *c)
{
  const kvs_options *opts = &c->opts;
  const kvs_model *model = &c->model;
  kvs__req req;
  kvs__rep rep;
  int fds[2] = {-1, -1}, r;

  memset(&req, 0, sizeof req);
  req.op = KVS_OP_HELLO;
  req.hello.version = KVS_PROTO_VERSION;
  snprintf(req.hello.model_id, sizeof req.hello.model_id, "%s", model->model_id);
  req.hello.n_layers = model->n_layers;
  req.hello.n_kv_heads = model->n_kv_heads;
  req.hello.head_dim = model->head_dim;
  req.hello.dtype = (uint32_t)model->dtype;
  /* the fast area (HACKING.md Decision 52): KVSINK_FAST=0 does without */
  const char *fe = getenv("KVSINK_FAST");
  const uint64_t want = (opts->seg_size ? opts->seg_size : KVS_DEFAULT_SEG_SIZE) + kvs__stage_extra(c);
  /* kvsinkd grants it in segments of 64 KiB and more (4 areas) */
  req.hello.fast = !(fe && !strcmp(fe, "0")) && want >= 3u * KVS_FAST_BYTES;
  req.hello.seg_size = want + (req.hello.fast ? KVS_FAST_BYTES : 0);
  req.hello.k_bits = opts->k_bits;
  req.hello.v_bits = opts->v_bits;
  req.hello.policy = (int32_t)opts->policy;
  req.hello.pfn = opts->pfn;
  req.hello.outliers = opts->outliers;
  req.hello.client_pid = (uint32_t)getpid();
  int ord = -1;
  /* the GPU by UUID: ordinals differ between processes (CUDA_VISIBLE_DEVICES) */
  if (c->want_dev && kvs__cudrv_current(&ord) == 0 &&
      kvs__cudrv_uuid(ord, req.hello.gpu_uuid) == 0) {
    req.hello.has_gpu = 1;
    req.hello.dev_seg_size = c->dev_seg_size;
  }
  memcpy(req.hello.salt, opts->salt, opts->salt_len);
  req.hello.salt_len = (uint32_t)opts->salt_len;

  uint32_t nfds = 0;
  r = kvs__conn_call_fds(&c->conn, &req, &rep, fds, 2, &nfds);
  if (nfds < 2)
    fds[1] = -1;
  if (nfds < 1)
    fds[0] = -1;
  if (r == 0) {
    r = map_segment(c, fds[0], rep.seg_size);
    /* kvsinkd puts the fast area at the segment's end */
    c->seg_end = c->seg_size;
    if (r == 0 && req.hello.fast && rep.fast_off && rep.fast_off % 64 == 0 &&
        rep.fast_off + KVS_FAST_BYTES == c->seg_size) {
      c->seg_end = (size_t)rep.fast_off;
      kvs__conn_set_fast(&c->conn, (char *)c->seg + rep.fast_off);
    }
    if (r == 0 && rep.seg_device) {
      if (fds[1] < 0) {
        snprintf(c->conn.errmsg, sizeof c->conn.errmsg, "hello reply announced a device segment without its fd");
        r = -EPROTO;
      } else if ((r = kvs__vmm_import(&c->dseg, fds[1], rep.dev_seg_size)) < 0) {
        snprintf(c->conn.errmsg, sizeof c->conn.errmsg, "importing the device segment: %s",
                 kvs__cudrv_error());
      }
    }
    if (r == 0)
      r = fill_info(c, &rep);
  }
  for (int i = 0; i < 2; i++)
    if (fds[i] >= 0)
      close(fds[i]); /* the mappings keep the segments alive */
  kvs__rep_free(&rep);
  c->info.seg_device = c->dseg.ptr != 0;
  c->info.dev_seg_size = (size_t)c->dseg.size;
  if (r == 0)
    kvs__stage_open(c);
  return r;
}

static int connect_impl(kvs_client **out, const char *socket_path, const kvs_model *model,
                        const kvs_options *opts, int want_dev, size_t dev_seg_size);

int kvs_connect(kvs_client **out, const char *socket_path,
                const kvs_model *model, const kvs_options *opts)
{
  return connect_impl(out, socket_path, model, opts, 0, 0);
}

int kvs_connect_device(kvs_client **out, const char *socket_path, const kvs_model *model,
                       const kvs_options *opts, size_t dev_seg_size)
{
  return connect_impl(out, socket_path, model, opts, 1, dev_seg_size);
}

static int connect_impl(kvs_client **out, const char *socket_path, const kvs_model *model,
                        const kvs_options *opts, int want_dev, size_t dev_seg_size)
{
  int r;

  if (!out)
    return -EINVAL;
  *out = NULL;
  r = check_model(model);
  if (r < 0)
    return r;
  if (opts && opts->salt_len > KVS_MAX_SALT)
    return -EINVAL;
  kvs_client *c = calloc(1, sizeof *c);
  if (!c)
    return -ENOMEM;
  if (opts)
    c->opts = *opts;
  else
    kvs_options_init(&c->opts);
  c->want_dev = want_dev;
  c->dev_seg_size = dev_seg_size;
  snprintf(c->model_id, sizeof c->model_id, "%s", model->model_id);
  c->model = *model;
  c->model.model_id = c->model_id;
  const char *path = kvs__conn_default_path(socket_path);
  if (strlen(path) >= sizeof c->socket_path) {
    free(c);
    return -ENAMETOOLONG;
  }
  snprintf(c->socket_path, sizeof c->socket_path, "%s", path);

  c->spin_set = kvs__conn_env_spin(&c->spin_us);
  r = kvs__conn_open(&c->conn, c->socket_path);
  if (r < 0) {
    free(c);
    return r;
  }
  c->conn.spin_us = c->spin_us;
  r = hello(c);
  if (r < 0) {
    kvs_close(c);
    return r;
  }
  *out = c;
  return 0;
}

/* Drop the segments of the old session (the daemon's side is gone or goes
 * with the connection: its fds die with the session). */
static void unmap_segments(kvs_client *c)
{
  kvs__conn_set_fast(&c->conn, NULL);
  kvs__stage_close(c);
  if (c->seg)
    munmap(c->seg, c->seg_size);
  c->seg = NULL;
  c->seg_size = c->seg_end = 0;
  kvs__vmm_close(&c->dseg);
  kvs__attn_close(c); /* pool units of the old session mean nothing to a new one */
}

int kvs_reconnect(kvs_client *c)
{
  if (!c)
    return -EINVAL;
  kvs__conn_close(&c->conn);
  unmap_segments(c);
  memset(&c->info, 0, sizeof c->info);
  kvs__conn conn = {.fd = -1};
  c->conn = conn;
  int r = kvs__conn_open(&c->conn, c->socket_path);
  if (r < 0) {
    kvs__conn_seterr(&c->conn, r, "reconnect");
    return r;
  }
  c->conn.spin_us = c->spin_us;
  r = hello(c);
  if (r < 0)
    unmap_segments(c);
  return r;
}

void *kvs_device_segment(kvs_client *c, size_t *size)
{
  if (size)
    *size = c ? (size_t)c->dseg.size : 0;
  return c && c->dseg.ptr ? (void *)(uintptr_t)c->dseg.ptr : NULL;
}

void kvs_close(kvs_client *c)
{
  if (!c)
    return;
  if (c->conn.fd >= 0 && !c->conn.broken && c->seg) {
    kvs__req req;
    kvs__rep rep;
    memset(&req, 0, sizeof req);
    req.op = KVS_OP_BYE;
    if (kvs__conn_call(&c->conn, &req, &rep, NULL) <= 0)
      kvs__rep_free(&rep);
  }
  kvs__conn_close(&c->conn);
  unmap_segments(c);
  free(c);
}

const kvs_info *kvs_get_info(const kvs_client *c)
{
  return c ? &c->info : NULL;
}

void *kvs_segment(kvs_client *c, size_t *size)
{
  if (size)
    *size = c ? c->info.seg_size : 0; /* the stage's tail is the library's */
  return c ? c->seg : NULL;
}

size_t kvs_kv_bytes(const kvs_client *c, uint32_t n_tokens, uint32_t lb, uint32_t le)
{
  if (!c || le < lb || le > c->model.n_layers)
    return 0;
  return (size_t)(le - lb) * n_tokens * c->model.n_kv_heads * c->model.head_dim *
         dtype_size(c->model.dtype);
}

const char *kvs_last_error(const kvs_client *c)
{
  return c ? c->conn.errmsg : "no client";
}

/* One request whose reply carries no payload we keep. */
static int simple_call(kvs_client *c, kvs__req *req, kvs__rep *rep)
{
  /* The call after a broken connection (a daemon restart) reconnects, but
   * does not send: its offsets point into a segment that is gone, and the
   * new session has none of the old sequences. The caller re-reads
   * kvs_segment() and starts over (libkvsink(3) RECONNECTING). */
  if (c->conn.broken || c->conn.fd < 0) {
    memset(rep, 0, sizeof *rep);
    int rr = kvs_reconnect(c);
    if (rr < 0)
      return rr;
    snprintf(c->conn.errmsg, sizeof c->conn.errmsg,
             "kvsinkd had closed the connection: reconnected with a new session (segments "
             "remapped, earlier sequences gone); the request was not sent");
    return KVS_ERECONNECTED;
  }
  int r = kvs__conn_call(&c->conn, req, rep, NULL);
  if (r == 0)
    c->conn.errmsg[0] = '\0';
  return r;
}

/* A device put or get: unless the caller chose a busy-poll (0 included),
 * wait for the reply by spinning up to KVS__CONN_DEV_SPIN_US, as a CUDA
 * synchronize does by default, instead of sleeping through the daemon's
 * kernels: waking a sleeping thread cost a bulk get ~40-50 us on an H200
 * (HACKING.md Decision 48). Host requests keep Decision 41's opt-in. */
static int dev_call(kvs_client *c, kvs__req *req, kvs__rep *rep)
{
  if (!c->spin_set)
    c->conn.spin_us = KVS__CONN_DEV_SPIN_US;
  int r = simple_call(c, req, rep);
  c->conn.spin_us = c->spin_us;
  return r;
}

static int put(kvs_client *c, const kvs_put_args *a, kvs_put_result *res, int dev)
{
  kvs__req req;
  kvs__rep rep;
  if (!c || !a || (a->n_tokens && !a->tokens))
    return -EINVAL;
  memset(&req, 0, sizeof req);
  req.op = KVS_OP_PUT;
  req.seq = a->seq;
  req.start = a->start;
  req.n_tokens = a->n_tokens;
  req.tokens = (uint32_t *)a->tokens;
  req.layer_begin = a->layer_begin;
  req.layer_end = a->layer_end;
  req.k_off = a->k_off;
  req.v_off = a->v_off;
  req.act_off = a->act_off;
  req.act_channels = a->act_channels;
  req.has_act = a->act_channels > 0;
  req.dev = dev;
  /* a decode step: copied through the stage here (client/stage.c) */
  int staged = dev && c->dseg.ptr
                   ? kvs__stage_put(c, a, kvs_kv_bytes(c, a->n_tokens, a->layer_begin, a->layer_end),
                                    &req)
                   : 0;
  if (staged < 0)
    return staged;
  if (req.dev) {
    /* ordering: the client's kernels that wrote K/V are done before the
     * daemon reads (libkvsink(3) DEVICE SEGMENTS) */
    int sr = !c->dseg.ptr   ? KVS_ESEGMENT
             : c->dev_stream ? kvs__cudrv_sync_stream(&c->dseg, c->dev_stream)
                             : kvs__cudrv_sync(&c->dseg);
    if (sr < 0) {
      snprintf(c->conn.errmsg, sizeof c->conn.errmsg, "%s",
               sr == KVS_ESEGMENT ? "this session has no device segment" : kvs__cudrv_error());
      return sr;
    }
  }
  int r = dev ? dev_call(c, &req, &rep) : simple_call(c, &req, &rep);
  if (r == 0 && res) {
    res->quantized = rep.quantized;
    res->sinks = rep.sinks;
    res->seq_len = rep.seq_len;
  }
  kvs__rep_free(&rep);
  return r;
}

int kvs_put(kvs_client *c, const kvs_put_args *a, kvs_put_result *res)
{
  return put(c, a, res, 0);
}

int kvs_put_device(kvs_client *c, const kvs_put_args *a, kvs_put_result *res)
{
  return put(c, a, res, 1);
}

int kvs_lookup(kvs_client *c, uint64_t seq, const uint32_t *tokens,
               uint32_t n_tokens, int bind)
{
  kvs__req req;
  kvs__rep rep;
  if (!c || (n_tokens && !tokens))
    return -EINVAL;
  memset(&req, 0, sizeof req);
  req.op = KVS_OP_LOOKUP;
  req.seq = seq;
  req.tokens = (uint32_t *)tokens;
  req.n_tokens = n_tokens;
  req.bind = bind != 0;
  int r = simple_call(c, &req, &rep);
  if (r == 0) {
    if (rep.cached > n_tokens || rep.cached > INT32_MAX) {
      snprintf(c->conn.errmsg, sizeof c->conn.errmsg, "lookup reply out of range");
      r = -EPROTO;
    } else {
      r = (int)rep.cached;
    }
  }
  kvs__rep_free(&rep);
  return r;
}

static int get(kvs_client *c, uint64_t seq, uint32_t start, uint32_t n_tokens, uint32_t lb,
               uint32_t le, size_t k_off, size_t v_off, int dev)
{
  kvs__req req;
  kvs__rep rep;
  if (!c)
    return -EINVAL;
  memset(&req, 0, sizeof req);
  req.op = KVS_OP_GET;
  req.seq = seq;
  req.start = start;
  req.n_tokens = n_tokens;
  req.layer_begin = lb;
  req.layer_end = le;
  req.k_off = k_off;
  req.v_off = v_off;
  req.dev = dev;
  /* a decode step: through the stage, copied up here (client/stage.c) */
  size_t skv = dev ? kvs__stage_get(c, n_tokens, kvs_kv_bytes(c, n_tokens, lb, le), k_off, v_off, &req)
                   : 0;
  int r = dev ? dev_call(c, &req, &rep) : simple_call(c, &req, &rep);
  if (r == 0 && skv)
    r = kvs__stage_get_done(c, skv, k_off, v_off);
  kvs__rep_free(&rep);
  return r;
}

int kvs_get(kvs_client *c, uint64_t seq, uint32_t start, uint32_t n_tokens,
            uint32_t lb, uint32_t le, size_t k_off, size_t v_off)
{
  return get(c, seq, start, n_tokens, lb, le, k_off, v_off, 0);
}

int kvs_get_device(kvs_client *c, uint64_t seq, uint32_t start, uint32_t n_tokens,
                   uint32_t lb, uint32_t le, size_t k_off, size_t v_off)
{
  if (c && !c->dseg.ptr) {
    snprintf(c->conn.errmsg, sizeof c->conn.errmsg, "this session has no device segment");
    return KVS_ESEGMENT;
  }
  /* the daemon answers once its copies into the segment are complete */
  return get(c, seq, start, n_tokens, lb, le, k_off, v_off, 1);
}

int kvs_release(kvs_client *c, uint64_t seq)
{
  kvs__req req;
  kvs__rep rep;
  if (!c)
    return -EINVAL;
  memset(&req, 0, sizeof req);
  req.op = KVS_OP_RELEASE;
  req.seq = seq;
  int r = simple_call(c, &req, &rep);
  kvs__rep_free(&rep);
  return r;
}

int kvs_set_busy_poll(kvs_client *c, unsigned usec)
{
  if (!c || usec > KVS__CONN_MAX_SPIN_US)
    return -EINVAL;
  c->spin_us = c->conn.spin_us = usec;
  c->spin_set = 1;
  return 0;
}

int kvs_set_device_stream(kvs_client *c, void *cu_stream)
{
  if (!c)
    return -EINVAL;
  c->dev_stream = cu_stream;
  return 0;
}

int kvs_ping(kvs_client *c)
{
  kvs__req req;
  kvs__rep rep;
  if (!c)
    return -EINVAL;
  memset(&req, 0, sizeof req);
  req.op = KVS_OP_PING;
  int r = simple_call(c, &req, &rep);
  kvs__rep_free(&rep);
  return r;
}
