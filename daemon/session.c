/* Sessions: read frames (4-byte BE length + msgpack), dispatch, reply. */
#include <errno.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "daemon/log.h"
#include "daemon/pools.h"
#include "daemon/session.h"
#include "proto/proto.h"

#define KVS_DEFAULT_SEGMENT (64ull << 20)
#define READ_CHUNK (64u << 10)

typedef struct write_req {
  uv_write_t req;
  char *data;
} write_req;

static void on_close(uv_handle_t *h)
{
  kvs__session *ss = h->data;
  for (size_t i = 0; i < ss->n_seqs; i++) kvs__seq_free(ss->seqs[i].seq);
  free(ss->seqs);
  if (ss->space) kvs__space_unref(ss->space);
  /* first: unmaps and releases the device segment, unpins the memfd */
  kvs__devseg_close(&ss->dseg);
  kvs__segment_close(&ss->seg);
  free(ss->buf);
  kvs__server_session_gone(ss->srv, ss);
  free(ss);
}

static void session_close(kvs__session *ss)
{
  if (uv_is_closing((uv_handle_t *)&ss->pipe)) return;
  ss->closing = 1;
  uv_close((uv_handle_t *)&ss->pipe, on_close);
}

void kvs__session_abort(kvs__session *ss)
{
  session_close(ss);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
  (void)status;
  session_close(req->data);
}

void kvs__session_shutdown(kvs__session *ss)
{
  if (ss->closing) return;
  ss->closing = 1;
  uv_read_stop((uv_stream_t *)&ss->pipe);
  ss->shutdown_req.data = ss;
  if (uv_shutdown(&ss->shutdown_req, (uv_stream_t *)&ss->pipe, on_shutdown) < 0) {
    ss->closing = 0;
    session_close(ss);
  }
}

static void on_write(uv_write_t *req, int status)
{
  write_req *w = (write_req *)req;
  kvs__session *ss = req->handle->data;
  free(w->data);
  free(w);
  if (status < 0 && status != UV_ECANCELED) {
    kvs__debug("session %llu: write failed: %s", (unsigned long long)ss->id, uv_strerror(status));
    session_close(ss);
  }
}

/* Queue bytes [off, len) of data (owned, freed after the write). */
static int queue_write(kvs__session *ss, char *data, size_t off, size_t len)
{
  write_req *w = malloc(sizeof *w);
  if (!w) {
    free(data);
    return -ENOMEM;
  }
  w->data = data;
  uv_buf_t b = uv_buf_init(data + off, (unsigned)(len - off));
  int r = uv_write(&w->req, (uv_stream_t *)&ss->pipe, &b, 1, on_write);
  if (r < 0) {
    free(data);
    free(w);
    return r;
  }
  return 0;
}

static int send_rep(kvs__session *ss, const kvs__rep *rep)
{
  char *out;
  size_t len;
  int r = kvs__encode_rep(rep, &out, &len);
  if (r < 0) {
    kvs__err("session %llu: cannot encode %s reply: %d", (unsigned long long)ss->id,
             kvs__op_name(rep->op), r);
    return r;
  }
  r = queue_write(ss, out, 0, len);
  if (r < 0) session_close(ss);
  return r;
}

static int send_err(kvs__session *ss, kvs__op op, uint64_t id, int err, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int send_err(kvs__session *ss, kvs__op op, uint64_t id, int err, const char *fmt, ...)
{
  kvs__rep rep;
  memset(&rep, 0, sizeof rep);
  rep.op = op;
  rep.id = id;
  rep.err = err;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(rep.errmsg, sizeof rep.errmsg, fmt, ap);
  va_end(ap);
  kvs__debug("session %llu: %s id %llu -> %d %s", (unsigned long long)ss->id, kvs__op_name(op),
             (unsigned long long)id, err, rep.errmsg);
  return send_rep(ss, &rep);
}

/* ---- seqs ---- */

static kvs__seq_slot *seq_find(kvs__session *ss, uint64_t id)
{
  for (size_t i = 0; i < ss->n_seqs; i++)
    if (ss->seqs[i].id == id) return &ss->seqs[i];
  return NULL;
}

/* Live seqs are capped per session; going over answers -EMFILE
 * (kvsink-protocol(7): "too many open sequences"). */
static int seq_create(kvs__session *ss, uint64_t id, kvs__seq_slot **out)
{
  if (ss->n_seqs >= KVS_MAX_SEQS_PER_CLIENT) return -EMFILE;
  if (ss->n_seqs == ss->cap_seqs) {
    size_t cap = ss->cap_seqs ? ss->cap_seqs * 2 : 16;
    kvs__seq_slot *n = realloc(ss->seqs, cap * sizeof *n);
    if (!n) return -ENOMEM;
    ss->seqs = n;
    ss->cap_seqs = cap;
  }
  kvs__seq *q;
  int r = kvs__seq_new(ss->space, &q);
  if (r < 0) return r;
  ss->seqs[ss->n_seqs] = (kvs__seq_slot){.id = id, .seq = q};
  *out = &ss->seqs[ss->n_seqs++];
  return 0;
}

static void seq_remove(kvs__session *ss, kvs__seq_slot *slot)
{
  kvs__seq_free(slot->seq);
  *slot = ss->seqs[--ss->n_seqs];
}

/* ---- hello ---- */

static int send_hello(kvs__session *ss, const kvs__rep *rep)
{
  char *out;
  size_t len;
  int r = kvs__encode_rep(rep, &out, &len);
  if (r < 0) return r;
  /* libuv cannot pass an fd that is not a handle, so this frame goes out
   * with sendmsg; it must not overtake earlier replies. */
  if (uv_stream_get_write_queue_size((uv_stream_t *)&ss->pipe) > 0) {
    free(out);
    return -EBUSY;
  }
  uv_os_fd_t fd;
  r = uv_fileno((uv_handle_t *)&ss->pipe, &fd);
  if (r < 0) {
    free(out);
    return r;
  }
  union {
    struct cmsghdr h;
    char buf[CMSG_SPACE(2 * sizeof(int))];
  } cm;
  /* the memfd, then the device segment's fd when there is one */
  int fds[2] = {ss->seg.fd, ss->dseg.fd};
  size_t nfd = ss->dseg.fd >= 0 ? 2 : 1;
  memset(&cm, 0, sizeof cm);
  struct iovec iov = {.iov_base = out, .iov_len = len};
  struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.buf,
                      .msg_controllen = CMSG_SPACE(nfd * sizeof(int))};
  struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(nfd * sizeof(int));
  memcpy(CMSG_DATA(c), fds, nfd * sizeof(int));
  ssize_t n;
  do n = sendmsg(fd, &mh, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    int e = errno;
    free(out);
    return -e;
  }
  if ((size_t)n < len) return queue_write(ss, out, (size_t)n, len); /* the fd went with byte 0 */
  free(out);
  return 0;
}

static int resolve_bits(int32_t asked, uint32_t def, uint32_t *out)
{
  if (asked <= 0) {
    *out = def;
    return 0;
  }
  if (asked != 2 && asked != 3 && asked != 4 && asked != 8 && asked != 16) return -EINVAL;
  *out = (uint32_t)asked;
  return 0;
}

static void do_hello(kvs__session *ss, const kvs__req *rq)
{
  const kvs__hello *h = &rq->hello;
  const kvs__config *cfg = &ss->srv->cfg;
  if (ss->hello_done) {
    send_err(ss, rq->op, rq->id, -EPROTO, "hello already done on this connection");
    return;
  }
  if (h->version != KVS_PROTO_VERSION) {
    send_err(ss, rq->op, rq->id, KVS_EVERSION,
             "protocol version %u not supported: this kvsinkd speaks version %u", h->version,
             KVS_PROTO_VERSION);
    return;
  }
  if (!h->model_id[0] || h->n_layers == 0 || h->n_layers > KVS_MAX_LAYERS || h->n_kv_heads == 0 ||
      h->n_kv_heads > KVS_MAX_KV_HEADS || h->head_dim == 0 || h->head_dim > KVS_MAX_HEAD_DIM ||
      (h->dtype != KVS_DTYPE_F16 && h->dtype != KVS_DTYPE_BF16)) {
    send_err(ss, rq->op, rq->id, KVS_EMODEL,
             "invalid model descriptor: id '%s', %u layers (1..%u), %u kv heads (1..%u), head dim "
             "%u (1..%u), dtype %u (1 f16, 2 bf16)",
             h->model_id, h->n_layers, KVS_MAX_LAYERS, h->n_kv_heads, KVS_MAX_KV_HEADS, h->head_dim,
             KVS_MAX_HEAD_DIM, h->dtype);
    return;
  }
  kvs__space_key *k = &ss->key;
  memset(k, 0, sizeof *k);
  snprintf(k->ns, sizeof k->ns, "%s", ss->ns);
  snprintf(k->model_id, sizeof k->model_id, "%s", h->model_id);
  k->n_layers = h->n_layers;
  k->n_kv_heads = h->n_kv_heads;
  k->head_dim = h->head_dim;
  k->dtype = (kvs_dtype)h->dtype;
  k->group = cfg->group_size;
  k->v_group = cfg->v_group_size;
  if (resolve_bits(h->k_bits, cfg->k_bits, &k->k_bits) < 0 ||
      resolve_bits(h->v_bits, cfg->v_bits, &k->v_bits) < 0) {
    send_err(ss, rq->op, rq->id, -EINVAL, "bits %d/%d: expected 2, 3, 4, 8 or 16 (0 = default)",
             h->k_bits, h->v_bits);
    return;
  }
  if (h->policy == KVS_POLICY_DEFAULT) k->policy = (kvs_policy)cfg->policy;
  else if (h->policy >= KVS_POLICY_NONE && h->policy <= KVS_POLICY_KVSINK) k->policy = (kvs_policy)h->policy;
  else {
    send_err(ss, rq->op, rq->id, -EINVAL, "policy %d: expected 0..3", h->policy);
    return;
  }
  if (h->pfn < 0) k->pfn = cfg->pfn;
  else if ((uint32_t)h->pfn <= k->group) k->pfn = (uint32_t)h->pfn;
  else {
    send_err(ss, rq->op, rq->id, -EINVAL, "pfn %d larger than the group size %u", h->pfn, k->group);
    return;
  }
  /* outliers: the request's, else the model profile's, else the config's */
  const kvs__profile *mprof = kvs__profiles_find(&ss->srv->profiles, h->model_id);
  if (h->outliers < 0) k->outliers = mprof && mprof->outliers >= 0.f ? mprof->outliers : cfg->outliers;
  else if (h->outliers <= 0.01f) k->outliers = h->outliers;
  else {
    send_err(ss, rq->op, rq->id, -EINVAL, "outliers %g: expected a fraction 0..0.01", h->outliers);
    return;
  }
  const kvs__profile *prof = NULL;
  if (k->policy == KVS_POLICY_KVSINK) {
    prof = kvs__profiles_find(&ss->srv->profiles, k->model_id);
    if (!prof) k->policy = KVS_POLICY_PFN; /* no profile: the reply says profile=false */
  }
  uint64_t seg = h->seg_size ? h->seg_size : KVS_DEFAULT_SEGMENT;
  if (seg > cfg->max_segment_size) seg = cfg->max_segment_size;
  long pg = sysconf(_SC_PAGESIZE);
  seg = (seg + (uint64_t)pg - 1) / (uint64_t)pg * (uint64_t)pg;

  char msg[KVS_MAX_ERRMSG];
  /* the pool of the GPU the client named, else the first (host segment) */
  int dev = h->has_gpu ? kvs__devseg_choose(h->gpu_uuid, ss->srv->devs.uuid, ss->srv->devs.n) : -1;
  ss->store = dev >= 0 ? ss->srv->devs.store[dev] : ss->srv->store;
  ss->backend = dev >= 0 ? ss->srv->devs.backend[dev] : ss->srv->backend;
  int r = kvs__space_ref(ss->store, k, prof, &ss->space);
  if (r < 0) {
    ss->space = NULL;
    send_err(ss, rq->op, rq->id, r, "cannot create the cache space: %s", kvs_strerror(r));
    return;
  }
  char name[64];
  snprintf(name, sizeof name, "kvsink-session-%llu", (unsigned long long)ss->id);
  r = kvs__segment_create(&ss->seg, seg, name);
  if (r < 0) {
    kvs__space_unref(ss->space);
    ss->space = NULL;
    send_err(ss, rq->op, rq->id, r, "cannot create a %llu-byte segment: %s",
             (unsigned long long)seg, strerror(-r));
    return;
  }
  /* device segment: only for a GPU with a pool here, else the host one */
  if (dev >= 0 && ss->srv->devs.devseg[dev]) {
    uint64_t dsz = h->dev_seg_size ? h->dev_seg_size : seg;
    if (dsz > cfg->max_segment_size) dsz = cfg->max_segment_size;
    r = kvs__devseg_open(&ss->dseg, ss->srv->devs.ordinal[dev], dsz);
    if (r < 0) {
      kvs__warn("session %llu: no device segment on cuda:%d (%s); host segment only",
                (unsigned long long)ss->id, ss->srv->devs.ordinal[dev], kvs__cudrv_error());
      kvs__devseg_close(&ss->dseg);
    }
  }
  /* a host segment on a GPU pool: pinned, so K/V go up in one DMA copy */
  if (!ss->dseg.vmm.ptr && ss->backend->dev_io && ss->srv->devs.n) {
    int ord = dev >= 0 ? ss->srv->devs.ordinal[dev] : ss->srv->devs.ordinal[0];
    if (kvs__devseg_pin_host(&ss->dseg, ord, ss->seg.base, (size_t)ss->seg.size) < 0)
      kvs__info("session %llu: memfd not page-locked (%s)", (unsigned long long)ss->id,
                kvs__cudrv_error());
  }
  kvs__rep rep;
  memset(&rep, 0, sizeof rep);
  rep.op = KVS_OP_HELLO;
  rep.id = rq->id;
  rep.session = ss->id;
  rep.seg_size = ss->seg.size;
  rep.seg_device = ss->dseg.vmm.ptr != 0;
  rep.dev_seg_size = ss->dseg.vmm.size;
  rep.group = k->group;
  rep.k_bits = (int32_t)k->k_bits;
  rep.v_bits = (int32_t)k->v_bits;
  rep.policy = k->policy;
  rep.pfn = (int32_t)k->pfn;
  rep.outliers = k->outliers;
  rep.has_profile = kvs__space_has_profile(ss->space);
  const kvs__profile *sp = kvs__space_profile(ss->space);
  if (rep.has_profile && sp) {
    rep.sink_layer = sp->layer;
    rep.n_sink_channels = sp->n_channels;
    memcpy(rep.sink_channels, sp->channels, sp->n_channels * sizeof sp->channels[0]);
  }
  r = send_hello(ss, &rep);
  if (r < 0) {
    snprintf(msg, sizeof msg, "%s", strerror(-r));
    kvs__warn("session %llu: sending hello reply: %s", (unsigned long long)ss->id, msg);
    kvs__devseg_close(&ss->dseg); /* unpins before the memfd is unmapped */
    kvs__segment_close(&ss->seg);
    kvs__space_unref(ss->space);
    ss->space = NULL;
    if (r == -EBUSY)
      send_err(ss, rq->op, rq->id, -EBUSY, "hello sent while replies were pending");
    else
      session_close(ss);
    return;
  }
  ss->hello_done = 1;
  if (ss->dseg.fd >= 0) close(ss->dseg.fd); /* the client holds it now */
  ss->dseg.fd = -1;
  kvs__info("session %llu: hello from pid %d (%s), model '%s' %u/%u/%u, bits %u/%u, policy %d, "
            "segment %llu bytes",
            (unsigned long long)ss->id, (int)ss->pid, ss->ns, k->model_id, k->n_layers,
            k->n_kv_heads, k->head_dim, k->k_bits, k->v_bits, k->policy,
            (unsigned long long)ss->seg.size);
}

/* ---- put / get / lookup / release ---- */

static uint64_t row_elems(const kvs__session *ss)
{
  return (uint64_t)ss->key.n_kv_heads * ss->key.head_dim;
}

/* Size in bytes of [layers][n][C] 16-bit, or UINT64_MAX on overflow. */
static uint64_t kv_bytes(const kvs__session *ss, uint32_t layers, uint32_t n)
{
  uint64_t b;
  if (kvs__mul_u64(&b, layers, n, row_elems(ss), 2) < 0) return UINT64_MAX;
  return b;
}

static int check_layers(kvs__session *ss, const kvs__req *rq)
{
  if (rq->layer_begin > rq->layer_end || rq->layer_end > ss->key.n_layers) {
    send_err(ss, rq->op, rq->id, -EINVAL, "layer range [%u, %u) outside the model's %u layers",
             rq->layer_begin, rq->layer_end, ss->key.n_layers);
    return -1;
  }
  return 0;
}

static int check_range(kvs__session *ss, const kvs__req *rq, const char *what, uint64_t off,
                       uint64_t len, uint64_t align)
{
  if (len == UINT64_MAX || !kvs__segment_range_ok(&ss->seg, off, len, align)) {
    send_err(ss, rq->op, rq->id, KVS_ESEGMENT,
             "%s: offset %llu + %llu bytes outside the %llu-byte segment or not %llu-aligned",
             what, (unsigned long long)off, (unsigned long long)len,
             (unsigned long long)ss->seg.size, (unsigned long long)align);
    return -1;
  }
  return 0;
}

/* ---- device segments (daemon/devseg.h) ---- */

static int check_dev_range(kvs__session *ss, const kvs__req *rq, const char *what, uint64_t off,
                           uint64_t len, uint64_t align)
{
  if (!ss->dseg.vmm.ptr) {
    send_err(ss, rq->op, rq->id, KVS_ESEGMENT, "%s: this session has no device segment", what);
    return -1;
  }
  if (len == UINT64_MAX || !kvs__devseg_range_ok(&ss->dseg, off, len, align)) {
    send_err(ss, rq->op, rq->id, KVS_ESEGMENT,
             "%s: offset %llu + %llu bytes outside the %llu-byte device segment or not "
             "%llu-aligned",
             what, (unsigned long long)off, (unsigned long long)len,
             (unsigned long long)ss->dseg.vmm.size, (unsigned long long)align);
    return -1;
  }
  return 0;
}

/* Puts and gets of at least a group of tokens on a GPU pool work from
 * device memory; smaller ones (decode steps: the rows wait in the 16-bit
 * residual in host memory anyway) take one small copy through the host,
 * which costs less than the device-side checks and launches. */
static int bulk_on_gpu(const kvs__session *ss, uint32_t n)
{
  return ss->backend->dev_io && n >= ss->key.group;
}

/* Read once: K, V and the summary of a put come out of the client's device
 * segment into daemon memory in one copy each, and are used from there. */
static int dev_put_stage(kvs__session *ss, const kvs__req *rq, uint64_t kvb, uint64_t ab,
                         const uint16_t **kp, const uint16_t **vp, const float **act)
{
  if (check_dev_range(ss, rq, "k", rq->k_off, kvb, 2) < 0 ||
      check_dev_range(ss, rq, "v", rq->v_off, kvb, 2) < 0 ||
      (ab && check_dev_range(ss, rq, "act", rq->act_off, ab, 4) < 0))
    return -1;
  size_t ko = (size_t)((ab + 255u) & ~(uint64_t)255u), vo = ko + (size_t)((kvb + 255u) & ~(uint64_t)255u);
  uint8_t *st;
  int r;
  if (bulk_on_gpu(ss, rq->n_tokens)) {
    /* a GPU pool: one device-to-device copy into the daemon's own device
     * memory, checked and quantized there by the store */
    st = kvs__devseg_dstage(&ss->dseg, vo + (size_t)kvb);
    r = st ? 0 : -ENOMEM;
    if (r == 0 && ab) r = kvs__devseg_to_dstage(&ss->dseg, 0, rq->act_off, (size_t)ab);
    if (r == 0 && kvb) r = kvs__devseg_to_dstage(&ss->dseg, ko, rq->k_off, (size_t)kvb);
    if (r == 0 && kvb) r = kvs__devseg_to_dstage(&ss->dseg, vo, rq->v_off, (size_t)kvb);
  } else {
    vo = ko + (size_t)kvb; /* K and V adjacent here: one copy when they are there too */
    st = kvs__devseg_stage(&ss->dseg, vo + (size_t)kvb);
    r = st ? 0 : -ENOMEM;
    if (r == 0 && ab) r = kvs__devseg_to_host(&ss->dseg, st, rq->act_off, (size_t)ab);
    if (r == 0 && kvb && rq->v_off == rq->k_off + kvb)
      r = kvs__devseg_to_host(&ss->dseg, st + ko, rq->k_off, 2 * (size_t)kvb);
    else if (r == 0 && kvb) {
      r = kvs__devseg_to_host(&ss->dseg, st + ko, rq->k_off, (size_t)kvb);
      if (r == 0) r = kvs__devseg_to_host(&ss->dseg, st + vo, rq->v_off, (size_t)kvb);
    }
  }
  if (r < 0) {
    send_err(ss, rq->op, rq->id, r, "put: reading the device segment: %s",
             r == -ENOMEM ? "out of memory" : kvs__cudrv_error());
    return -1;
  }
  *kp = (const uint16_t *)(st + ko);
  *vp = (const uint16_t *)(st + vo);
  if (ab) *act = (const float *)st;
  return 0;
}

/* A host segment on a GPU pool: K/V and the summary (already checked
 * against the segment) copied up into the device staging once. */
static int pinned_put_stage(kvs__session *ss, const kvs__req *rq, uint64_t kvb, uint64_t ab,
                            const uint16_t **kp, const uint16_t **vp, const float **act)
{
  size_t ko = (size_t)((ab + 255u) & ~(uint64_t)255u);
  size_t vo = ko + (size_t)((kvb + 255u) & ~(uint64_t)255u);
  uint8_t *st = kvs__devseg_dstage(&ss->dseg, vo + (size_t)kvb);
  int r = st ? 0 : -ENOMEM;
  if (r == 0 && ab) r = kvs__devseg_host_to_dstage(&ss->dseg, 0, *act, (size_t)ab);
  if (r == 0 && kvb) r = kvs__devseg_host_to_dstage(&ss->dseg, ko, *kp, (size_t)kvb);
  if (r == 0 && kvb) r = kvs__devseg_host_to_dstage(&ss->dseg, vo, *vp, (size_t)kvb);
  if (r < 0) {
    send_err(ss, rq->op, rq->id, r, "put: copying to the GPU: %s",
             r == -ENOMEM ? "out of memory" : kvs__cudrv_error());
    return -1;
  }
  if (ab) *act = (const float *)st;
  *kp = kvb ? (const uint16_t *)(st + ko) : NULL;
  *vp = kvb ? (const uint16_t *)(st + vo) : NULL;
  return 0;
}

static void do_put(kvs__session *ss, const kvs__req *rq)
{
  if (check_layers(ss, rq) < 0) return;
  uint32_t nl = rq->layer_end - rq->layer_begin, n = rq->n_tokens;
  if (n > 0 && !rq->tokens) {
    send_err(ss, rq->op, rq->id, -EPROTO, "put: tokens missing");
    return;
  }
  uint64_t kvb = kv_bytes(ss, nl, n);
  const uint16_t *kp = NULL, *vp = NULL;
  const float *act = NULL;
  if (nl > 0 && !rq->dev) {
    if (check_range(ss, rq, "k", rq->k_off, kvb, 2) < 0) return;
    if (check_range(ss, rq, "v", rq->v_off, kvb, 2) < 0) return;
    kp = (const uint16_t *)(ss->seg.base + rq->k_off);
    vp = (const uint16_t *)(ss->seg.base + rq->v_off);
  }
  uint32_t ach = 0;
  if (rq->has_act && rq->act_channels > 0) {
    uint64_t ab;
    if (rq->act_channels > KVS_MAX_ACT_CHANNELS) {
      send_err(ss, rq->op, rq->id, -E2BIG, "act_channels %u over %u", rq->act_channels,
               KVS_MAX_ACT_CHANNELS);
      return;
    }
    if (kvs__mul_u64(&ab, n, rq->act_channels, 4, 1) < 0) ab = UINT64_MAX;
    ach = rq->act_channels;
    if (rq->dev) {
      if (dev_put_stage(ss, rq, nl ? kvb : 0, ab, &kp, &vp, &act) < 0) return;
      if (!nl) kp = vp = NULL;
    } else {
      if (check_range(ss, rq, "act", rq->act_off, ab, 4) < 0) return;
      act = (const float *)(ss->seg.base + rq->act_off);
    }
  } else if (rq->dev && nl > 0) {
    if (dev_put_stage(ss, rq, kvb, 0, &kp, &vp, &act) < 0) return;
  }
  kvs__seq_slot *slot = seq_find(ss, rq->seq);
  int created = 0, r;
  if (!slot) {
    r = seq_create(ss, rq->seq, &slot);
    if (r < 0) {
      send_err(ss, rq->op, rq->id, r, r == -EMFILE ? "too many open sequences (max %u)" : "cannot create sequence (%u)",
               KVS_MAX_SEQS_PER_CLIENT);
      return;
    }
    created = 1;
  }
  kvs__put_info info = {0};
  char msg[KVS_MAX_ERRMSG] = "";
  int on_dev = rq->dev && bulk_on_gpu(ss, n);
  if (!rq->dev && ss->dseg.pinned && bulk_on_gpu(ss, n) && (kp || act)) {
    /* read once: one DMA copy from the pinned memfd into device memory */
    if (pinned_put_stage(ss, rq, nl ? kv_bytes(ss, nl, n) : 0, act ? (uint64_t)n * ach * 4u : 0,
                         &kp, &vp, &act) < 0) {
      if (created) seq_remove(ss, slot);
      return;
    }
    on_dev = 1;
  }
  if (on_dev)
    r = kvs__seq_put_dev(slot->seq, rq->start, rq->tokens, n, rq->layer_begin, rq->layer_end, kp,
                         vp, act, ach, &info, msg);
  else
    r = kvs__seq_put(slot->seq, rq->start, rq->tokens, n, rq->layer_begin, rq->layer_end, kp, vp,
                     act, ach, &info, msg);
  if (r < 0) {
    if (created) seq_remove(ss, slot); /* atomic: nothing was there before */
    send_err(ss, rq->op, rq->id, r, "%s", msg[0] ? msg : kvs_strerror(r));
    return;
  }
  kvs__rep rep;
  memset(&rep, 0, sizeof rep);
  rep.op = rq->op;
  rep.id = rq->id;
  rep.quantized = info.quantized;
  rep.sinks = info.sinks;
  rep.seq_len = info.seq_len;
  send_rep(ss, &rep);
}

static void do_get(kvs__session *ss, const kvs__req *rq)
{
  if (check_layers(ss, rq) < 0) return;
  kvs__seq_slot *slot = seq_find(ss, rq->seq);
  if (!slot) {
    send_err(ss, rq->op, rq->id, -ENOENT, "no sequence %llu", (unsigned long long)rq->seq);
    return;
  }
  uint32_t nl = rq->layer_end - rq->layer_begin;
  uint64_t kvb = kv_bytes(ss, nl, rq->n_tokens);
  uint16_t *kp = NULL, *vp = NULL;
  if (nl > 0 && rq->n_tokens > 0 && rq->dev) {
    /* dequantized into daemon memory, then one copy into the segment */
    if (check_dev_range(ss, rq, "k", rq->k_off, kvb, 2) < 0) return;
    if (check_dev_range(ss, rq, "v", rq->v_off, kvb, 2) < 0) return;
    if (bulk_on_gpu(ss, rq->n_tokens)) {
      /* a GPU pool dequantizes straight into the segment */
      kp = kvs__devseg_ptr(&ss->dseg, rq->k_off);
      vp = kvs__devseg_ptr(&ss->dseg, rq->v_off);
    } else {
      kp = kvs__devseg_stage(&ss->dseg, 2 * (size_t)kvb);
      if (!kp) {
        send_err(ss, rq->op, rq->id, -ENOMEM, "get: out of memory for staging");
        return;
      }
      vp = kp + kvb / 2;
    }
  } else if (nl > 0 && rq->n_tokens > 0) {
    if (check_range(ss, rq, "k", rq->k_off, kvb, 2) < 0) return;
    if (check_range(ss, rq, "v", rq->v_off, kvb, 2) < 0) return;
    kp = (uint16_t *)(ss->seg.base + rq->k_off);
    vp = (uint16_t *)(ss->seg.base + rq->v_off);
  }
  char msg[KVS_MAX_ERRMSG] = "";
  int direct = rq->dev && bulk_on_gpu(ss, rq->n_tokens);
  uint16_t *hk = NULL, *hv = NULL;
  if (!rq->dev && ss->dseg.pinned && kp && bulk_on_gpu(ss, rq->n_tokens)) {
    /* dequantized into device staging, then one DMA copy down */
    uint8_t *st = kvs__devseg_dstage(&ss->dseg, 2 * (size_t)kvb);
    if (!st) {
      send_err(ss, rq->op, rq->id, -ENOMEM, "get: out of GPU memory for staging");
      return;
    }
    hk = kp;
    hv = vp;
    kp = (uint16_t *)st;
    vp = (uint16_t *)(st + kvb);
    direct = 1;
  }
  int r = direct ? kvs__seq_get_dev(slot->seq, rq->start, rq->n_tokens, rq->layer_begin,
                                    rq->layer_end, kp, vp, msg)
                 : kvs__seq_get(slot->seq, rq->start, rq->n_tokens, rq->layer_begin,
                                rq->layer_end, kp, vp, msg);
  if (r < 0) {
    send_err(ss, rq->op, rq->id, r, "%s", msg[0] ? msg : kvs_strerror(r));
    return;
  }
  if (hk) {
    r = kvs__devseg_dstage_to_host(&ss->dseg, hk, 0, (size_t)kvb);
    if (r == 0) r = kvs__devseg_dstage_to_host(&ss->dseg, hv, (size_t)kvb, (size_t)kvb);
    if (r < 0) {
      send_err(ss, rq->op, rq->id, r, "get: copying from the GPU: %s", kvs__cudrv_error());
      return;
    }
  }
  if (rq->dev && kp) {
    /* the reply goes out only once the data is in the segment */
    r = 0;
    if (!direct && rq->v_off == rq->k_off + kvb) /* the stage holds K then V */
      r = kvs__devseg_from_host(&ss->dseg, rq->k_off, kp, 2 * (size_t)kvb);
    else if (!direct) {
      r = kvs__devseg_from_host(&ss->dseg, rq->k_off, kp, (size_t)kvb);
      if (r == 0) r = kvs__devseg_from_host(&ss->dseg, rq->v_off, vp, (size_t)kvb);
    }
    if (r == 0) r = kvs__devseg_sync(&ss->dseg);
    if (r < 0) {
      send_err(ss, rq->op, rq->id, r, "get: writing the device segment: %s", kvs__cudrv_error());
      return;
    }
  }
  kvs__rep rep;
  memset(&rep, 0, sizeof rep);
  rep.op = rq->op;
  rep.id = rq->id;
  rep.seq_len = kvs__seq_len(slot->seq);
  send_rep(ss, &rep);
}

static void do_lookup(kvs__session *ss, const kvs__req *rq)
{
  if (rq->n_tokens > 0 && !rq->tokens) {
    send_err(ss, rq->op, rq->id, -EPROTO, "lookup: tokens missing");
    return;
  }
  kvs__seq_slot *slot = NULL;
  int created = 0, r;
  if (rq->bind) {
    slot = seq_find(ss, rq->seq);
    if (slot && kvs__seq_len(slot->seq) > 0) {
      send_err(ss, rq->op, rq->id, -EEXIST, "bind: sequence %llu is not empty",
               (unsigned long long)rq->seq);
      return;
    }
    if (!slot) {
      r = seq_create(ss, rq->seq, &slot);
      if (r < 0) {
        send_err(ss, rq->op, rq->id, r, r == -EMFILE ? "too many open sequences (max %u)" : "cannot create sequence (%u)",
                 KVS_MAX_SEQS_PER_CLIENT);
        return;
      }
      created = 1;
    }
  }
  uint32_t cached = 0;
  r = kvs__space_lookup(ss->space, rq->tokens, rq->n_tokens, slot ? slot->seq : NULL, &cached);
  if (r < 0) {
    if (created) seq_remove(ss, slot);
    send_err(ss, rq->op, rq->id, r, "lookup failed: %s", kvs_strerror(r));
    return;
  }
  kvs__rep rep;
  memset(&rep, 0, sizeof rep);
  rep.op = rq->op;
  rep.id = rq->id;
  rep.cached = cached;
  rep.seq_len = slot ? kvs__seq_len(slot->seq) : 0;
  send_rep(ss, &rep);
}

static void do_release(kvs__session *ss, const kvs__req *rq)
{
  kvs__seq_slot *slot = seq_find(ss, rq->seq);
  if (!slot) {
    send_err(ss, rq->op, rq->id, -ENOENT, "no sequence %llu", (unsigned long long)rq->seq);
    return;
  }
  seq_remove(ss, slot);
  kvs__rep rep;
  memset(&rep, 0, sizeof rep);
  rep.op = rq->op;
  rep.id = rq->id;
  send_rep(ss, &rep);
}

/* ---- control ops ---- */

static void pack_str(msgpack_packer *pk, const char *s)
{
  size_t n = strlen(s);
  msgpack_pack_str(pk, n);
  msgpack_pack_str_body(pk, s, n);
}

static const char *policy_name(int p)
{
  return p == KVS_POLICY_NONE ? "none" : p == KVS_POLICY_PFN ? "pfn" : "kvsink";
}

typedef struct list_ctx {
  msgpack_packer *pk;
  uint32_t n;
  msgpack_sbuffer body;
} list_ctx;

static void list_cb(const kvs__space_key *k, uint64_t blocks, uint64_t pinned, uint64_t seqs,
                    void *arg)
{
  list_ctx *c = arg;
  msgpack_packer *pk = c->pk;
  c->n++;
  msgpack_pack_map(pk, 12);
  pack_str(pk, "ns"); pack_str(pk, k->ns);
  pack_str(pk, "model"); pack_str(pk, k->model_id);
  pack_str(pk, "layers"); msgpack_pack_uint32(pk, k->n_layers);
  pack_str(pk, "kv_heads"); msgpack_pack_uint32(pk, k->n_kv_heads);
  pack_str(pk, "head_dim"); msgpack_pack_uint32(pk, k->head_dim);
  pack_str(pk, "k_bits"); msgpack_pack_uint32(pk, k->k_bits);
  pack_str(pk, "v_bits"); msgpack_pack_uint32(pk, k->v_bits);
  pack_str(pk, "policy"); pack_str(pk, policy_name(k->policy));
  pack_str(pk, "pfn"); msgpack_pack_uint32(pk, k->pfn);
  pack_str(pk, "blocks"); msgpack_pack_uint64(pk, blocks);
  pack_str(pk, "pinned"); msgpack_pack_uint64(pk, pinned);
  pack_str(pk, "seqs"); msgpack_pack_uint64(pk, seqs);
}

/* items = array header + the maps packed into body. */
static int finish_items(msgpack_sbuffer *body, uint32_t n, kvs__rep *rep, msgpack_sbuffer *out)
{
  msgpack_sbuffer_init(out);
  msgpack_packer pk;
  msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
  msgpack_pack_array(&pk, n);
  if (body->size) msgpack_sbuffer_write(out, body->data, body->size);
  if (!out->data) return -ENOMEM;
  rep->items = out->data;
  rep->items_len = out->size;
  return 0;
}

static void do_list(kvs__session *ss, const kvs__req *rq)
{
  list_ctx c = {0};
  msgpack_sbuffer_init(&c.body);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &c.body, msgpack_sbuffer_write);
  c.pk = &pk;
  kvs__store *stores[KVS_MAX_DEVICES + 1];
  for (size_t i = 0, n = kvs__pools_stores(ss->srv, stores); i < n; i++)
    kvs__store_foreach_space(stores[i], list_cb, &c);
  kvs__rep rep;
  memset(&rep, 0, sizeof rep);
  rep.op = rq->op;
  rep.id = rq->id;
  msgpack_sbuffer out;
  if (finish_items(&c.body, c.n, &rep, &out) < 0)
    send_err(ss, rq->op, rq->id, -ENOMEM, "out of memory");
  else
    send_rep(ss, &rep);
  msgpack_sbuffer_destroy(&out);
  msgpack_sbuffer_destroy(&c.body);
}

static void do_profiles(kvs__session *ss, const kvs__req *rq)
{
  const kvs__profiles *ps = &ss->srv->profiles;
  msgpack_sbuffer body;
  msgpack_sbuffer_init(&body);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &body, msgpack_sbuffer_write);
  for (size_t i = 0; i < ps->n; i++) {
    const kvs__profile *p = &ps->v[i];
    msgpack_pack_map(&pk, 6);
    pack_str(&pk, "model"); pack_str(&pk, p->model_id);
    pack_str(&pk, "layer"); msgpack_pack_uint32(&pk, p->layer);
    pack_str(&pk, "channels");
    msgpack_pack_array(&pk, p->n_channels);
    for (uint32_t j = 0; j < p->n_channels && j < KVS_PROFILE_MAX_CHANNELS; j++)
      msgpack_pack_uint32(&pk, p->channels[j]);
    pack_str(&pk, "tau"); msgpack_pack_float(&pk, p->tau);
    pack_str(&pk, "max_sinks"); msgpack_pack_uint32(&pk, p->max_sinks);
    pack_str(&pk, "pfn"); msgpack_pack_uint32(&pk, p->pfn);
  }
  kvs__rep rep;
  memset(&rep, 0, sizeof rep);
  rep.op = rq->op;
  rep.id = rq->id;
  msgpack_sbuffer out;
  if (finish_items(&body, (uint32_t)ps->n, &rep, &out) < 0)
    send_err(ss, rq->op, rq->id, -ENOMEM, "out of memory");
  else
    send_rep(ss, &rep);
  msgpack_sbuffer_destroy(&out);
  msgpack_sbuffer_destroy(&body);
}

static void do_simple(kvs__session *ss, const kvs__req *rq)
{
  kvs__rep rep;
  memset(&rep, 0, sizeof rep);
  rep.op = rq->op;
  rep.id = rq->id;
  switch (rq->op) {
  case KVS_OP_STATS:
    kvs__server_fill_stats(ss->srv, &rep.stats);
    break;
  case KVS_OP_EVICT:
    kvs__store *stores[KVS_MAX_DEVICES + 1];
    for (size_t i = 0, n = kvs__pools_stores(ss->srv, stores); i < n; i++)
      rep.evicted += kvs__store_evict_all(stores[i]);
    kvs__notice("evicted %llu blocks on request of session %llu", (unsigned long long)rep.evicted,
                (unsigned long long)ss->id);
    break;
  case KVS_OP_RELOAD: {
    int r = kvs__server_reload(ss->srv, rep.errmsg);
    if (r < 0) rep.err = r;
    break;
  }
  default:
    break;
  }
  send_rep(ss, &rep);
}

static void dispatch(kvs__session *ss, const kvs__req *rq)
{
  switch (rq->op) {
  case KVS_OP_PING:
  case KVS_OP_STATS:
  case KVS_OP_EVICT:
  case KVS_OP_RELOAD:
    do_simple(ss, rq);
    return;
  case KVS_OP_LIST:
    do_list(ss, rq);
    return;
  case KVS_OP_PROFILES:
    do_profiles(ss, rq);
    return;
  case KVS_OP_BYE:
    do_simple(ss, rq);
    kvs__session_shutdown(ss);
    return;
  case KVS_OP_HELLO:
    do_hello(ss, rq);
    return;
  default:
    break;
  }
  if (!ss->hello_done) {
    send_err(ss, rq->op, rq->id, -EPROTO, "%s before hello", kvs__op_name(rq->op));
    return;
  }
  switch (rq->op) {
  case KVS_OP_PUT: do_put(ss, rq); break;
  case KVS_OP_GET: do_get(ss, rq); break;
  case KVS_OP_LOOKUP: do_lookup(ss, rq); break;
  case KVS_OP_RELEASE: do_release(ss, rq); break;
  default:
    send_err(ss, rq->op, rq->id, -EPROTO, "unknown op");
    break;
  }
}

/* ---- framing ---- */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
  (void)hint;
  kvs__session *ss = h->data;
  if (ss->buf_cap - ss->buf_len < READ_CHUNK) {
    size_t cap = ss->buf_cap ? ss->buf_cap : READ_CHUNK;
    while (cap - ss->buf_len < READ_CHUNK) cap *= 2;
    uint8_t *n = realloc(ss->buf, cap);
    if (!n) {
      *b = uv_buf_init(NULL, 0); /* libuv reports UV_ENOBUFS */
      return;
    }
    ss->buf = n;
    ss->buf_cap = cap;
  }
  *b = uv_buf_init((char *)ss->buf + ss->buf_len, (unsigned)(ss->buf_cap - ss->buf_len));
}

/* Handle every whole frame in the buffer; 0, or -1 when the connection
 * must close. */
static int process_frames(kvs__session *ss)
{
  size_t pos = 0;
  int rc = 0;
  while (!ss->closing && ss->buf_len - pos >= 4) {
    uint32_t flen = kvs__frame_get_len(ss->buf + pos);
    if (flen > KVS_MAX_FRAME) {
      kvs__warn("session %llu: frame of %u bytes over the %u limit, closing",
                (unsigned long long)ss->id, flen, KVS_MAX_FRAME);
      rc = -1;
      break;
    }
    if (ss->buf_len - pos - 4 < flen) break;
    kvs__req rq;
    memset(&rq, 0, sizeof rq);
    char msg[KVS_MAX_ERRMSG] = "";
    int r = kvs__decode_req((const char *)ss->buf + pos + 4, flen, &rq, msg);
    pos += 4 + (size_t)flen;
    if (r == -EBADMSG) {
      kvs__warn("session %llu: malformed frame (%s), closing", (unsigned long long)ss->id, msg);
      if (rq.id) send_err(ss, KVS_OP_INVALID, rq.id, r, "malformed message: %s", msg);
      kvs__req_free(&rq);
      rc = -1;
      break;
    }
    if (r < 0) {
      send_err(ss, rq.op, rq.id, r, "%s", msg[0] ? msg : kvs_strerror(r));
    } else {
      dispatch(ss, &rq);
    }
    kvs__req_free(&rq);
  }
  if (pos) {
    memmove(ss->buf, ss->buf + pos, ss->buf_len - pos);
    ss->buf_len -= pos;
  }
  /* Give memory back after a big frame. */
  if (ss->buf_cap > 4 * READ_CHUNK && ss->buf_len < READ_CHUNK) {
    uint8_t *n = realloc(ss->buf, READ_CHUNK * 2);
    if (n) {
      ss->buf = n;
      ss->buf_cap = READ_CHUNK * 2;
    }
  }
  return rc;
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
  (void)b;
  kvs__session *ss = st->data;
  if (nread < 0) {
    if (nread != UV_EOF)
      kvs__debug("session %llu: read: %s", (unsigned long long)ss->id, uv_strerror((int)nread));
    session_close(ss);
    return;
  }
  ss->buf_len += (size_t)nread;
  if (process_frames(ss) < 0) kvs__session_shutdown(ss);
}

void kvs__session_accept(kvs__server *srv)
{
  kvs__session *ss = calloc(1, sizeof *ss);
  if (!ss) {
    kvs__err("accept: out of memory");
    return;
  }
  ss->seg.fd = -1;
  kvs__devseg_init(&ss->dseg);
  ss->srv = srv;
  uv_pipe_init(srv->loop, &ss->pipe, 0);
  ss->pipe.data = ss;
  if (uv_accept((uv_stream_t *)&srv->listener, (uv_stream_t *)&ss->pipe) < 0) {
    uv_close((uv_handle_t *)&ss->pipe, (uv_close_cb)free);
    return;
  }
  ss->id = ++srv->next_session_id;
  /* link first so on_close can always unlink */
  ss->next = srv->sessions;
  if (srv->sessions) srv->sessions->prev = ss;
  srv->sessions = ss;
  srv->n_sessions++;
  srv->sessions_total++;

  uv_os_fd_t fd;
  struct ucred cred;
  socklen_t cl = sizeof cred;
  if (uv_fileno((uv_handle_t *)&ss->pipe, &fd) < 0 ||
      getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0) {
    kvs__warn("session %llu: no peer credentials, closing", (unsigned long long)ss->id);
    session_close(ss);
    return;
  }
  ss->uid = cred.uid;
  ss->pid = cred.pid;
  snprintf(ss->ns, sizeof ss->ns, "uid:%u", (unsigned)cred.uid);
  for (size_t i = 0; i < srv->cfg.n_shared_uids; i++)
    if (srv->cfg.shared_uids[i] == cred.uid) snprintf(ss->ns, sizeof ss->ns, "shared");
  if (srv->n_sessions > srv->cfg.max_sessions) {
    kvs__warn("refusing connection from pid %d: max_sessions (%u) reached", (int)cred.pid,
              srv->cfg.max_sessions);
    send_err(ss, KVS_OP_INVALID, 0, -EUSERS, "too many sessions (max_sessions = %u)",
             srv->cfg.max_sessions);
    kvs__session_shutdown(ss);
    return;
  }
  kvs__debug("session %llu: connected, pid %d uid %u", (unsigned long long)ss->id, (int)cred.pid,
             (unsigned)cred.uid);
  int r = uv_read_start((uv_stream_t *)&ss->pipe, on_alloc, on_read);
  if (r < 0) session_close(ss);
}
