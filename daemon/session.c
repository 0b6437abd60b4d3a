/* SPDX-License-Identifier: MIT */
/* Sessions: read frames (4-byte BE length + msgpack), dispatch, reply. */
#include <errno.h>
#include <msgpack.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "daemon/log.h"
#ifdef HAVE_REDIS
#include "daemon/remote.h"
#endif
#include "daemon/session.h"
#include "daemon/table.h"
#include "proto/proto.h"

#define READ_CHUNK (64u << 10)

typedef struct write_req {
  uv_write_t req;
  char *data;
} write_req;

static void parked_free(kvs__session *ss);

static void on_close(uv_handle_t *h)
{
  kvs__session *ss = h->data;
  if (--ss->pending_closes > 0) return; /* the pipe and the timer both */
  kvs__sessions *host = ss->host;
  parked_free(ss); /* before the space goes */
  kvs__sess_free(&ss->st);
  free(ss->buf);
  if (ss->prev) ss->prev->next = ss->next;
  else host->head = ss->next;
  if (ss->next) ss->next->prev = ss->prev;
  host->n--;
  kvs__debug("session %llu: closed (%llu requests in the fast area)", (unsigned long long)ss->st.id,
             (unsigned long long)ss->fast.n);
  free(ss);
  if (host->on_gone) host->on_gone(host->arg);
}

static void session_close(kvs__session *ss)
{
  if (uv_is_closing((uv_handle_t *)&ss->pipe)) return;
  ss->closing = 1;
  ss->fast.area = NULL;
  ss->pending_closes = 1;
  if (ss->timer_on) {
    ss->pending_closes++;
    uv_close((uv_handle_t *)&ss->timer, on_close);
  }
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
  ss->fast.area = NULL;
  uv_read_stop((uv_stream_t *)&ss->pipe);
  ss->shutdown_req.data = ss;
  if (uv_shutdown(&ss->shutdown_req, (uv_stream_t *)&ss->pipe, on_shutdown) < 0) {
    ss->closing = 0;
    session_close(ss);
  }
}

static void resume(kvs__session *ss);

static void on_write(uv_write_t *req, int status)
{
  write_req *w = (write_req *)req;
  kvs__session *ss = req->handle->data;
  free(w->data);
  free(w);
  if (status < 0 && status != UV_ECANCELED) {
    kvs__debug("session %llu: write failed: %s", (unsigned long long)ss->st.id, uv_strerror(status));
    session_close(ss);
    return;
  }
  if (ss->paused && !ss->closing &&
      uv_stream_get_write_queue_size((uv_stream_t *)&ss->pipe) <= ss->host->cfg->max_reply_queue / 2)
    resume(ss);
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
    kvs__err("session %llu: cannot encode %s reply: %d", (unsigned long long)ss->st.id,
             kvs__op_name(rep->op), r);
    return r;
  }
  if (ss->fast_replying) {
    /* the body into the fast area (its frame length is the socket's);
     * one too big for it goes on the socket, as the area then says */
    ss->fast_replying = 0;
    if (kvs__fast_reply(&ss->fast, out + 4, len - 4) == 0) {
      free(out);
      return 0;
    }
  }
  size_t off = 0;
  /* nothing queued: write at once (one write(2), no request to allocate,
   * no callback and no epoll_ctl for the loop to run afterwards) */
  if (uv_stream_get_write_queue_size((uv_stream_t *)&ss->pipe) == 0) {
    uv_buf_t b = uv_buf_init(out, (unsigned)len);
    int n = uv_try_write((uv_stream_t *)&ss->pipe, &b, 1);
    if (n == (int)len) {
      free(out);
      return 0;
    }
    if (n > 0) off = (size_t)n;
    else if (n != UV_EAGAIN && n != UV_ENOSYS) {
      free(out);
      session_close(ss);
      return n;
    }
  }
  r = queue_write(ss, out, off, len); /* the rest, in order, when writable */
  if (r < 0) session_close(ss);
  return r;
}

static int send_err(kvs__session *ss, kvs__op op, uint64_t id, int err, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int send_err(kvs__session *ss, kvs__op op, uint64_t id, int err, const char *fmt, ...)
{
  char msg[KVS_MAX_ERRMSG];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  kvs__rep rep;
  kvs__ops_error(&rep, op, id, err, "%s", msg);
  kvs__debug("session %llu: %s id %llu -> %d %s", (unsigned long long)ss->st.id, kvs__op_name(op),
             (unsigned long long)id, err, rep.errmsg);
  return send_rep(ss, &rep);
}

/* ---- hello ---- */

/* rep with fds on its first byte (hello: the segment; table: pool units). */
static int send_fds(kvs__session *ss, const kvs__rep *rep, const int *fds, uint32_t nfd)
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
    char buf[CMSG_SPACE(sizeof(int) * KVS_TABLE_MAX_FDS)];
  } cm;
  if (nfd == 0 || nfd > KVS_TABLE_MAX_FDS) {
    free(out);
    return -EINVAL;
  }
  memset(&cm, 0, sizeof cm);
  struct iovec iov = {.iov_base = out, .iov_len = len};
  struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.buf,
                      .msg_controllen = CMSG_SPACE(sizeof(int) * nfd)};
  struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * nfd);
  memcpy(CMSG_DATA(c), fds, sizeof(int) * nfd);
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

static void dispatch(kvs__session *ss, const kvs__req *rq)
{
  kvs__rep rep;
  int act = kvs__ops_run(&ss->host->env, &ss->st, rq, &rep);
  if (rep.err < 0) {
    kvs__debug("session %llu: %s id %llu -> %d %s", (unsigned long long)ss->st.id,
               kvs__op_name(rep.op), (unsigned long long)rep.id, rep.err, rep.errmsg);
    act = KVS_OPS_REPLY;
  }
  if (act == KVS_OPS_REPLY_FDS) {
    int r = send_fds(ss, &rep, ss->st.tbl_fds, ss->st.n_tbl_fds);
    kvs__ops_table_drop_fds(&ss->st);
    if (r < 0) {
      /* the client got none of them: it is passed every unit again */
      memset(ss->st.tbl_sent, 0,
             sizeof(uint32_t) * kvs__store_nchunks(ss->st.store ? ss->st.store : ss->host->env.store));
      if (r == -EBUSY)
        send_err(ss, rq->op, rq->id, -EBUSY, "table sent while replies were pending");
      else
        session_close(ss);
    }
  } else if (act == KVS_OPS_REPLY_FD) {
    /* the memfd, then the device segment's fd when there is one */
    int hfds[2] = {ss->st.seg.fd, ss->st.dseg.fd};
    int r = send_fds(ss, &rep, hfds, ss->st.dseg.fd >= 0 ? 2 : 1);
    if (ss->st.dseg.fd >= 0) close(ss->st.dseg.fd); /* the client holds it now */
    ss->st.dseg.fd = -1;
    if (r == 0 && ss->st.fast_off) {
      kvs__fast_init(&ss->fast, ss->st.seg.base + ss->st.fast_off);
      kvs__fast_polling(&ss->fast, ss->host->fast_polling);
    }
    if (r < 0) {
      kvs__warn("session %llu: sending hello reply: %s", (unsigned long long)ss->st.id,
                strerror(-r));
      kvs__ops_hello_undo(&ss->st);
      if (r == -EBUSY)
        send_err(ss, rq->op, rq->id, -EBUSY, "hello sent while replies were pending");
      else
        session_close(ss);
    }
  } else {
    send_rep(ss, &rep);
  }
  kvs__ops_rep_free(&rep);
  if (act == KVS_OPS_CLOSE) kvs__session_shutdown(ss);
}

/* ---- a lookup waits on the Redis tier (daemon/remote.c) ----
 * A lookup of whole groups not all cached here is parked on its session:
 * reading and framing stop (replies stay in order) while one MGET brings
 * the missing blocks into the pool, at most remote_timeout_ms; then the
 * request runs through the ops layer as any other and framing resumes.
 * A session that closes meanwhile cancels the fetch (late replies are
 * dropped by the tier). */

struct kvs__parked {
#ifdef HAVE_REDIS
  kvs__remote_req *fetch;
#endif
  kvs__req rq; /* moved from the framing loop; its tokens are ours now */
};

static void parked_free(kvs__session *ss)
{
  struct kvs__parked *p = ss->parked;
  if (!p) return;
#ifdef HAVE_REDIS
  if (p->fetch) kvs__remote_fetch_cancel(p->fetch);
#endif
  ss->parked = NULL;
  kvs__req_free(&p->rq);
  free(p);
}

static int process_frames(kvs__session *ss);
static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b);
static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b);

/* The frames already buffered, then reading again unless paused, closing
 * or parked (a parked lookup resumes it when Redis answers). */
static void read_on(kvs__session *ss)
{
  if (process_frames(ss) < 0) {
    kvs__session_shutdown(ss);
    return;
  }
  if (!ss->paused && !ss->closing && !ss->parked &&
      uv_read_start((uv_stream_t *)&ss->pipe, on_alloc, on_read) < 0)
    session_close(ss);
}

#ifdef HAVE_REDIS
static void on_fetched(void *arg)
{
  kvs__session *ss = arg;
  struct kvs__parked *p = ss->parked;
  p->fetch = NULL; /* the tier frees it */
  ss->parked = NULL;
  if (!ss->closing) dispatch(ss, &p->rq);
  kvs__req_free(&p->rq);
  free(p);
  if (ss->closing) return;
  read_on(ss);
}
#endif

/* 0: rq was moved into ss->parked (the caller's copy is emptied); < 0:
 * nothing to ask, run it now. */
static int park(kvs__session *ss, kvs__req *rq)
{
#ifdef HAVE_REDIS
  if (!ss->host->remote || rq->op != KVS_OP_LOOKUP || !ss->st.hello_done || !ss->st.space ||
      rq->n_tokens == 0 || !rq->tokens)
    return -EALREADY;
  struct kvs__parked *p = calloc(1, sizeof *p);
  if (!p) return -ENOMEM;
  int r = kvs__remote_fetch(ss->host->remote, ss->st.space, rq->tokens, rq->n_tokens, on_fetched,
                            ss, &p->fetch);
  if (r < 0) {
    free(p);
    return r;
  }
  p->rq = *rq;
  memset(rq, 0, sizeof *rq);
  ss->parked = p;
  uv_read_stop((uv_stream_t *)&ss->pipe);
  return 0;
#else
  (void)ss;
  (void)rq;
  return -EALREADY;
#endif
}

/* ---- end of the Redis tier's part ---- */

/* Decode a frame's body (the socket's or the fast area's) into rq.
 * 1: run it; 0: refused, its error sent; -1: malformed, the session must
 * close (answered when the client can tell which request it was: an id,
 * or the fast area's one slot). */
static int decode_frame(kvs__session *ss, const uint8_t *body, uint32_t len, kvs__req *rq,
                        const char *what)
{
  memset(rq, 0, sizeof *rq);
  char msg[KVS_MAX_ERRMSG] = "";
  int r = kvs__decode_req((const char *)body, len, rq, msg);
  if (r == -EBADMSG) {
    kvs__warn("session %llu: malformed %s (%s), closing", (unsigned long long)ss->st.id, what, msg);
    if (rq->id || ss->fast_replying)
      send_err(ss, KVS_OP_INVALID, rq->id, r, "malformed message: %s", msg);
    return -1;
  }
  if (r < 0) {
    send_err(ss, rq->op, rq->id, r, "%s", msg[0] ? msg : kvs_strerror(r));
    return 0;
  }
  return 1;
}

/* ---- the fast area (daemon/fast.h, HACKING.md Decision 52) ---- */

static void spin_after_request(kvs__sessions *h);

/* One request from the session's fast area, when its client left one:
 * decoded and run as a socket frame would be, its reply into the area.
 * 1 taken, 0 none, -1 the session must close (a malformed body, as on the
 * socket). */
static int fast_poll(kvs__session *ss)
{
  if (!ss->fast.area || ss->closing || ss->paused || ss->parked) return 0;
  uint8_t body[KVS_FAST_REQ_MAX];
  uint32_t len = 0;
  int r = kvs__fast_take(&ss->fast, body, &len);
  if (r == 0) return 0;
  spin_after_request(ss->host);
  ss->fast_replying = 1;
  if (r < 0) {
    send_err(ss, KVS_OP_INVALID, 0, -EMSGSIZE, "a request of 0 or over %u bytes in the fast area",
             KVS_FAST_REQ_MAX);
    ss->fast_replying = 0;
    return 1;
  }
  kvs__req rq;
  int rc = 1;
  r = decode_frame(ss, body, len, &rq, "request in the fast area");
  if (r < 0) {
    rc = -1;
  } else if (r == 0) {
    /* answered */
  } else if (rq.op != KVS_OP_PUT && rq.op != KVS_OP_GET && rq.op != KVS_OP_RELEASE &&
             rq.op != KVS_OP_PING) {
    /* the rest carry fds, wait on the Redis tier or change the session */
    send_err(ss, rq.op, rq.id, -EPROTO, "%s is not taken in the fast area (put, get, release and "
             "ping are)", kvs__op_name(rq.op));
  } else {
    dispatch(ss, &rq);
  }
  ss->fast_replying = 0;
  kvs__req_free(&rq);
  return rc;
}

/* Every session's fast area once; how many requests were taken. */
static int fast_poll_all(kvs__sessions *h)
{
  int n = 0;
  for (kvs__session *ss = h->head; ss; ss = ss->next) {
    int r = fast_poll(ss);
    if (r < 0) kvs__session_shutdown(ss);
    else n += r;
  }
  return n;
}

static void fast_polling_all(kvs__sessions *h, int on)
{
  h->fast_polling = on;
  for (kvs__session *ss = h->head; ss; ss = ss->next) kvs__fast_polling(&ss->fast, on);
}

/* ---- end of the fast area's part ---- */

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
  uint64_t cap = ss->host->cfg->max_reply_queue;
  while (!ss->closing && !ss->paused && !ss->parked && ss->buf_len - pos >= 4) {
    uint32_t flen = kvs__frame_get_len(ss->buf + pos);
    if (flen > KVS_MAX_FRAME) {
      kvs__warn("session %llu: frame of %u bytes over the %u limit, closing",
                (unsigned long long)ss->st.id, flen, KVS_MAX_FRAME);
      rc = -1;
      break;
    }
    if (ss->buf_len - pos - 4 < flen) break;
    kvs__req rq;
    int r = decode_frame(ss, ss->buf + pos + 4, flen, &rq, "frame");
    pos += 4 + (size_t)flen;
    if (r < 0) {
      kvs__req_free(&rq);
      rc = -1;
      break;
    }
    if (r == 0) {
      /* answered */
    } else if (rq.op == KVS_OP_BELL) {
      if (fast_poll(ss) < 0) rc = -1; /* no reply to the bell itself */
    } else if (park(ss, &rq) < 0) {
      dispatch(ss, &rq);
    }
    kvs__req_free(&rq);
    /* a client that sends requests but does not read the replies must not
     * make the daemon hold them all: stop reading until they drain */
    if (!ss->closing && uv_stream_get_write_queue_size((uv_stream_t *)&ss->pipe) > cap) {
      ss->paused = 1;
      uv_read_stop((uv_stream_t *)&ss->pipe);
      kvs__debug("session %llu: %zu reply bytes queued, reads paused", (unsigned long long)ss->st.id,
                 uv_stream_get_write_queue_size((uv_stream_t *)&ss->pipe));
    }
  }
  if (pos) {
    memmove(ss->buf, ss->buf + pos, ss->buf_len - pos);
    ss->buf_len -= pos;
  }
  /* the frame deadline runs while a started frame waits for its bytes
   * (not while we are the ones not reading) */
  if (ss->buf_len == 0 || ss->paused || ss->parked) ss->partial_since_ms = 0;
  else if (!ss->partial_since_ms) ss->partial_since_ms = uv_now(ss->host->loop);
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

static void resume(kvs__session *ss)
{
  ss->paused = 0;
  kvs__debug("session %llu: replies drained, reading again", (unsigned long long)ss->st.id);
  read_on(ss);
}

static void on_tick(uv_timer_t *t)
{
  kvs__session *ss = t->data;
  const kvs__config *cfg = ss->host->cfg;
  uint64_t now = uv_now(ss->host->loop);
  if (ss->closing) return;
  if (!ss->admin_listener && !ss->st.hello_done &&
      now - ss->connected_ms >= (uint64_t)cfg->hello_timeout_s * 1000) {
    kvs__notice("session %llu (pid %d uid %u): no hello in %u s, closing",
                (unsigned long long)ss->st.id, (int)ss->st.pid, (unsigned)ss->st.uid,
                cfg->hello_timeout_s);
    session_close(ss);
    return;
  }
  if (ss->partial_since_ms && now - ss->partial_since_ms >= (uint64_t)cfg->frame_timeout_s * 1000) {
    kvs__notice("session %llu (pid %d uid %u): a partial frame waited %u s, closing",
                (unsigned long long)ss->st.id, (int)ss->st.pid, (unsigned)ss->st.uid,
                cfg->frame_timeout_s);
    session_close(ss);
  }
}

/* busy_poll_us (kvsinkd.conf(5)): for that long after the last bytes came
 * in, an active idle handle makes the loop poll with a zero timeout instead
 * of sleeping in epoll_wait, so a client's next request (a decode step's
 * get after its put) is read without a wakeup. Off by default: it keeps a
 * core busy while clients are active. */
static void on_spin(uv_idle_t *i)
{
  kvs__sessions *h = i->data;
  int took = fast_poll_all(h);
  if (uv_hrtime() < h->spin_until) {
    if (!took) sched_yield(); /* a client waiting for a core gets this one */
    return;
  }
  /* the loop may sleep from now on: clients ring instead, and a request
   * published before they could see that is taken here (each side
   * writes its word, fences, then reads the other's) */
  fast_polling_all(h, 0);
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  if (fast_poll_all(h)) return; /* spinning again */
  uv_idle_stop(i);
}

static void spin_after_request(kvs__sessions *h)
{
  uint32_t us = kvs__config_busy_poll(h->cfg, h->env.devs && h->env.devs->n);
  if (!us || h->spin_closed) return;
  if (!h->spin_init) {
    if (uv_idle_init(h->loop, &h->spin) < 0) return;
    h->spin.data = h;
    h->spin_init = 1;
  }
  h->spin_until = uv_hrtime() + (uint64_t)us * 1000u;
  if (!h->fast_polling) fast_polling_all(h, 1);
  if (!uv_is_active((uv_handle_t *)&h->spin)) uv_idle_start(&h->spin, on_spin);
}

void kvs__sessions_close(kvs__sessions *h)
{
  if (h->spin_init && !h->spin_closed) uv_close((uv_handle_t *)&h->spin, NULL);
  h->spin_closed = 1;
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
  (void)b;
  kvs__session *ss = st->data;
  if (nread > 0) spin_after_request(ss->host);
  if (nread < 0) {
    if (nread != UV_EOF)
      kvs__debug("session %llu: read: %s", (unsigned long long)ss->st.id, uv_strerror((int)nread));
    session_close(ss);
    return;
  }
  ss->buf_len += (size_t)nread;
  if (process_frames(ss) < 0) kvs__session_shutdown(ss);
}

/* Admin on the data socket: uid 0, the daemon's own uid (it could signal
 * or ptrace the daemon anyway), or a member of admin_group (primary or
 * supplementary group of the peer, SO_PEERGROUPS). */
static int peer_is_admin(const kvs__sessions *h, int fd, const struct ucred *cred)
{
  if (cred->uid == 0 || cred->uid == geteuid()) return 1;
  if (h->admin_gid < 0) return 0;
  if (cred->gid == (gid_t)h->admin_gid) return 1;
  gid_t groups[256];
  socklen_t gl = sizeof groups;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &gl) < 0) return 0;
  for (size_t i = 0; i < gl / sizeof groups[0]; i++)
    if (groups[i] == (gid_t)h->admin_gid) return 1;
  return 0;
}

void kvs__session_accept(kvs__sessions *h, uv_stream_t *listener, int admin_listener)
{
  kvs__session *ss = calloc(1, sizeof *ss);
  if (!ss) {
    kvs__err("accept: out of memory");
    return;
  }
  ss->st.seg.fd = -1;
  ss->host = h;
  uv_pipe_init(h->loop, &ss->pipe, 0);
  ss->pipe.data = ss;
  if (uv_accept(listener, (uv_stream_t *)&ss->pipe) < 0) {
    uv_close((uv_handle_t *)&ss->pipe, (uv_close_cb)free);
    return;
  }
  uint64_t id = ++h->next_id;
  ss->st.id = id;
  /* link first so on_close can always unlink */
  ss->next = h->head;
  if (h->head) h->head->prev = ss;
  h->head = ss;
  h->n++;
  h->total++;

  uv_os_fd_t fd;
  struct ucred cred;
  socklen_t cl = sizeof cred;
  if (uv_fileno((uv_handle_t *)&ss->pipe, &fd) < 0 ||
      getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0) {
    kvs__warn("session %llu: no peer credentials, closing", (unsigned long long)id);
    session_close(ss);
    return;
  }
  int admin = admin_listener || peer_is_admin(h, fd, &cred);
  kvs__sess_init(&ss->st, h->cfg, id, cred.uid, cred.pid, admin);
  ss->admin_listener = admin_listener;
  ss->connected_ms = uv_now(h->loop);
  uv_timer_init(h->loop, &ss->timer);
  ss->timer.data = ss;
  ss->timer_on = 1;
  uv_timer_start(&ss->timer, on_tick, 1000, 1000);
  /* admin connections do not count against max_sessions: the operator
   * must get in when clients fill the daemon */
  if (!admin_listener && h->n > h->cfg->max_sessions) {
    kvs__warn("refusing connection from pid %d uid %u: max_sessions (%u) reached", (int)cred.pid,
              (unsigned)cred.uid, h->cfg->max_sessions);
    send_err(ss, KVS_OP_INVALID, 0, -EUSERS, "too many sessions (max_sessions = %u)",
             h->cfg->max_sessions);
    kvs__session_shutdown(ss);
    return;
  }
  if (!admin_listener) {
    uint32_t same = 0;
    for (kvs__session *o = h->head; o; o = o->next)
      if (o != ss && !o->admin_listener && !o->closing && o->st.uid == cred.uid) same++;
    if (same >= h->cfg->max_sessions_per_uid) {
      kvs__warn("refusing connection from pid %d uid %u: max_sessions_per_uid (%u) reached",
                (int)cred.pid, (unsigned)cred.uid, h->cfg->max_sessions_per_uid);
      send_err(ss, KVS_OP_INVALID, 0, -EUSERS,
               "too many sessions of uid %u (max_sessions_per_uid = %u)", (unsigned)cred.uid,
               h->cfg->max_sessions_per_uid);
      kvs__session_shutdown(ss);
      return;
    }
  }
  kvs__debug("session %llu: connected%s, pid %d uid %u%s", (unsigned long long)id,
             admin_listener ? " to the admin socket" : "", (int)cred.pid, (unsigned)cred.uid,
             admin ? " (admin)" : "");
  int r = uv_read_start((uv_stream_t *)&ss->pipe, on_alloc, on_read);
  if (r < 0) session_close(ss);
}
