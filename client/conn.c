/* SPDX-License-Identifier: MIT */
/* Synchronous socket I/O for libkvsink and kvsinkctl. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "client/conn.h"
#include "proto/fastarea.h"

const char *kvs__conn_default_path(const char *path)
{
  if (path && *path)
    return path;
  const char *env = getenv("KVSINK_SOCKET");
  if (env && *env)
    return env;
  return KVS_DEFAULT_SOCKET;
}

void kvs__conn_seterr(kvs__conn *c, int err, const char *what)
{
  snprintf(c->errmsg, sizeof c->errmsg, "%s: %s", what, kvs_strerror(err));
}

int kvs__conn_env_spin(uint32_t *us)
{
  const char *env = getenv("KVSINK_BUSY_POLL_US");
  *us = 0;
  if (!env || !*env)
    return 0;
  char *end;
  unsigned long v = strtoul(env, &end, 10);
  if (*end || env[0] == '-')
    return 0;
  *us = v > KVS__CONN_MAX_SPIN_US ? KVS__CONN_MAX_SPIN_US : (uint32_t)v;
  return 1;
}

int kvs__conn_open(kvs__conn *c, const char *path)
{
  struct sockaddr_un sa;
  memset(c, 0, sizeof *c);
  c->fd = -1;
  c->next_id = 1;
  path = kvs__conn_default_path(path);
  if (strlen(path) >= sizeof sa.sun_path) {
    snprintf(c->errmsg, sizeof c->errmsg, "socket path too long");
    return -ENAMETOOLONG;
  }
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  memcpy(sa.sun_path, path, strlen(path) + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  int r;
  do
    r = connect(fd, (struct sockaddr *)&sa, sizeof sa);
  while (r < 0 && errno == EINTR);
  if (r < 0) {
    r = -errno;
    snprintf(c->errmsg, sizeof c->errmsg, "connect %s: %s", path, strerror(-r));
    close(fd);
    return r;
  }
  c->fd = fd;
  return 0;
}

void kvs__conn_close(kvs__conn *c)
{
  if (c->fd >= 0)
    close(c->fd);
  c->fd = -1;
}

static int send_all(int fd, const char *buf, size_t len)
{
  while (len > 0) {
    ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return errno == EPIPE ? -EPIPE : -errno;
    }
    buf += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Where the fds of a reply go: up to cap are kept, the rest closed. */
typedef struct fdbox {
  int *fd;
  uint32_t cap, n;
  int trunc;              /* some were lost (MSG_CTRUNC) */
} fdbox;

/* Keep the fds of an SCM_RIGHTS message that fit in box, close the rest. */
static void take_fds(struct msghdr *mh, fdbox *box)
{
  if (mh->msg_flags & MSG_CTRUNC)
    box->trunc = 1;
  for (struct cmsghdr *cm = CMSG_FIRSTHDR(mh); cm; cm = CMSG_NXTHDR(mh, cm)) {
    if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
      continue;
    size_t n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    int *in = (int *)CMSG_DATA(cm);
    for (size_t i = 0; i < n; i++) {
      int f;
      memcpy(&f, &in[i], sizeof f);
      if (box->n < box->cap)
        box->fd[box->n++] = f;
      else
        close(f);
    }
  }
}

static double mono_us(void)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e6 + (double)t.tv_nsec * 1e-3;
}

/* One recvmsg of up to len bytes into buf (at least one, or -ECONNRESET at
 * the end of the stream); fds that arrive are collected into box. With
 * spin_us, non-blocking reads are tried that long first: a reply that comes
 * within it is taken without the sleep and wakeup of a blocking read (a few
 * microseconds each way, the larger part of a small request's round trip). */
static ssize_t recv_some(int fd, char *buf, size_t len, fdbox *box, uint32_t spin_us)
{
  double until = spin_us ? mono_us() + spin_us : 0;
  for (;;) {
    union {
      struct cmsghdr align;
      char buf[CMSG_SPACE(KVS_TABLE_MAX_FDS * sizeof(int))];
    } cbuf;
    struct iovec iov = {.iov_base = buf, .iov_len = len};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1,
                        .msg_control = cbuf.buf, .msg_controllen = sizeof cbuf.buf};
    ssize_t n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC | (until ? MSG_DONTWAIT : 0));
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (until && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        if (mono_us() >= until)
          until = 0; /* spun long enough: block */
        else
          sched_yield(); /* a daemon waiting for a core gets this one */
        continue;
      }
      return -errno;
    }
    take_fds(&mh, box);
    return n == 0 ? -ECONNRESET : n;
  }
}

/* Read exactly len bytes (nothing past them); fds are collected into box. */
static int recv_all(int fd, char *buf, size_t len, fdbox *box, uint32_t spin_us)
{
  while (len > 0) {
    ssize_t n = recv_some(fd, buf, len, box, spin_us);
    if (n < 0)
      return (int)n;
    buf += n;
    len -= (size_t)n;
  }
  return 0;
}

/* At least need (<= KVS__CONN_RBUF) unread bytes in c->rbuf. */
static int rbuf_fill(kvs__conn *c, uint32_t need, fdbox *box)
{
  if (c->rpos == c->rlen)
    c->rpos = c->rlen = 0;
  if (c->rlen - c->rpos >= need)
    return 0;
  if (c->rpos + need > sizeof c->rbuf) {
    memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
    c->rlen -= c->rpos;
    c->rpos = 0;
  }
  while (c->rlen - c->rpos < need) {
    ssize_t n = recv_some(c->fd, (char *)c->rbuf + c->rlen, sizeof c->rbuf - c->rlen, box,
                          c->spin_us);
    if (n < 0)
      return (int)n;
    c->rlen += (uint32_t)n;
  }
  return 0;
}

static void box_close(fdbox *box)
{
  for (uint32_t i = 0; i < box->n; i++)
    close(box->fd[i]);
  box->n = 0;
}

int kvs__conn_call(kvs__conn *c, kvs__req *req, kvs__rep *rep, int *fd_out)
{
  int fd = -1;
  uint32_t n = 0;
  int r = kvs__conn_call_fds(c, req, rep, &fd, fd_out ? 1 : 0, &n);
  if (fd_out)
    *fd_out = n ? fd : -1;
  return r;
}

void kvs__conn_set_fast(kvs__conn *c, void *area)
{
  c->fast = area;
  /* requests count on from what the area holds (a new area: 0) */
  c->fast_seq = area ? kvs__fast_load(area, KVS_FAST_REQ_SEQ) : 0;
}

/* The fast area (proto/fastarea.h, HACKING.md Decision 52) for this call: a
 * caller that busy-polls, an op kvsinkd takes there, a body that fits. */
static int fast_ok(const kvs__conn *c, kvs__op op, size_t frame_len)
{
  return c->fast && c->spin_us &&
         (op == KVS_OP_PUT || op == KVS_OP_GET || op == KVS_OP_RELEASE || op == KVS_OP_PING) &&
         frame_len > 4 && frame_len - 4 <= KVS_FAST_REQ_MAX;
}

/* Publish the body; ring over the socket when kvsinkd's loop is not
 * polling the area (it may be asleep in epoll). */
static int fast_send(kvs__conn *c, const char *body, uint32_t len)
{
  memcpy(c->fast + KVS_FAST_REQ, body, len);
  kvs__fast_store(c->fast, KVS_FAST_REQ_LEN, len);
  kvs__fast_store(c->fast, KVS_FAST_REQ_SEQ, ++c->fast_seq);
  __atomic_thread_fence(__ATOMIC_SEQ_CST); /* the seq before the look at polling */
  if (kvs__fast_load(c->fast, KVS_FAST_POLLING))
    return 0;
  kvs__req bell;
  memset(&bell, 0, sizeof bell);
  bell.op = KVS_OP_BELL;
  char *out;
  size_t olen;
  int r = kvs__encode_req(&bell, &out, &olen);
  if (r < 0)
    return r;
  r = send_all(c->fd, out, olen);
  free(out);
  return r;
}

/* Wait for the reply to the request published last: 1 with its body in
 * buf (KVS_FAST_REP_MAX bytes) and *len set, 0 when kvsinkd sent it on
 * the socket, or an error. Spins for spin_us (yielding between looks, as
 * the socket's spin does), then naps of up to 500 us, each time checking
 * that the connection is still there. */
static int fast_wait(kvs__conn *c, char *buf, uint32_t *len)
{
  const double until = mono_us() + c->spin_us;
  long nap_ns = 20000;
  while (kvs__fast_load(c->fast, KVS_FAST_REP_SEQ) != c->fast_seq) {
    if (mono_us() < until) {
      sched_yield();
      continue;
    }
    char b;
    ssize_t n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0)
      return -ECONNRESET;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
      return -errno;
    struct timespec ts = {0, nap_ns};
    nanosleep(&ts, NULL);
    if (nap_ns < 500000)
      nap_ns *= 2;
  }
  uint32_t l = kvs__fast_load(c->fast, KVS_FAST_REP_LEN);
  if (l == KVS_FAST_ON_SOCKET)
    return 0;
  if (l == 0 || l > KVS_FAST_REP_MAX)
    return -EBADMSG;
  memcpy(buf, c->fast + KVS_FAST_REP, l);
  *len = l;
  return 1;
}

/* No reply could be read: the stream is out of sync from here on. */
static int recv_failed(kvs__conn *c, fdbox *box, int r)
{
  c->broken = 1;
  kvs__conn_seterr(c, r, "receive");
  if (r == -ECONNRESET)
    snprintf(c->errmsg, sizeof c->errmsg,
             "kvsinkd closed the connection (stopped or restarted): kvs_reconnect() connects "
             "again and maps new segments");
  box_close(box);
  return r;
}

/* Decode the reply body to req and check it; the fds in box are the
 * caller's on 0 and closed otherwise. */
static int finish(kvs__conn *c, const char *body, uint32_t len, const kvs__req *req,
                  kvs__rep *rep, fdbox *box, uint32_t *nfds)
{
  char emsg[KVS_MAX_ERRMSG] = "";
  int r = kvs__decode_rep(body, len, rep, emsg);
  if (r < 0) {
    snprintf(c->errmsg, sizeof c->errmsg, "bad reply: %.200s", emsg);
    c->broken = 1;
    box_close(box);
    return r;
  }
  if (rep->id != req->id) {
    unsigned long long got = (unsigned long long)rep->id;
    kvs__rep_free(rep);
    memset(rep, 0, sizeof *rep);
    snprintf(c->errmsg, sizeof c->errmsg, "reply id %llu, expected %llu",
             got, (unsigned long long)req->id);
    c->broken = 1;
    box_close(box);
    return -EPROTO;
  }
  if (rep->err < 0) {
    box_close(box);
    rep->errmsg[sizeof rep->errmsg - 1] = '\0';
    if (rep->errmsg[0])
      snprintf(c->errmsg, sizeof c->errmsg, "%s", rep->errmsg);
    else
      snprintf(c->errmsg, sizeof c->errmsg, "%s", kvs_strerror(rep->err));
    return rep->err;
  }
  if (rep->err > 0 || box->trunc) {
    kvs__rep_free(rep);
    memset(rep, 0, sizeof *rep);
    snprintf(c->errmsg, sizeof c->errmsg, "%s", box->trunc ? "reply carried more fds than expected"
                                                           : "positive error code in reply");
    c->broken = !box->trunc;
    box_close(box);
    return -EPROTO;
  }
  *nfds = box->n;
  return 0;
}

int kvs__conn_call_fds(kvs__conn *c, kvs__req *req, kvs__rep *rep, int *fds, uint32_t cap,
                       uint32_t *nfds)
{
  char *out = NULL, *in = NULL;
  size_t olen = 0;
  int r;
  fdbox box = {.fd = fds, .cap = cap, .n = 0, .trunc = 0};
  fdbox *fd_out = &box;

  memset(rep, 0, sizeof *rep);
  *nfds = 0;
  if (c->fd < 0 || c->broken) {
    kvs__conn_seterr(c, -ENOTCONN, "connection");
    return -ENOTCONN;
  }
  req->id = c->next_id++;
  r = kvs__encode_req(req, &out, &olen);
  if (r < 0) {
    kvs__conn_seterr(c, r, "encode request");
    return r;
  }
  const int fast = fast_ok(c, req->op, olen);
  r = fast ? fast_send(c, out + 4, (uint32_t)(olen - 4)) : send_all(c->fd, out, olen);
  free(out);
  if (r < 0) {
    c->broken = 1;
    kvs__conn_seterr(c, r, "send");
    return r;
  }
  if (fast) {
    char fbuf[KVS_FAST_REP_MAX];
    uint32_t flen = 0;
    r = fast_wait(c, fbuf, &flen);
    if (r == 1)
      return finish(c, fbuf, flen, req, rep, &box, nfds);
    if (r < 0)
      return recv_failed(c, &box, r);
    /* 0: the reply comes on the socket */
  }
  for (;;) {
    r = rbuf_fill(c, 4, fd_out);
    if (r < 0)
      break;
    uint32_t len = kvs__frame_get_len(c->rbuf + c->rpos);
    if (len == 0 || len > KVS_MAX_FRAME) {
      r = -EBADMSG;
      break;
    }
    const char *body;
    if (len <= sizeof c->rbuf - 4) {
      /* small: header and body usually came in one read */
      r = rbuf_fill(c, 4 + len, fd_out);
      if (r < 0)
        break;
      body = (const char *)c->rbuf + c->rpos + 4;
      c->rpos += 4 + len;
    } else {
      /* large: what the buffer holds, then the rest read in place */
      in = malloc(len);
      if (!in) {
        r = -ENOMEM;
        break;
      }
      uint32_t have = c->rlen - c->rpos - 4;
      memcpy(in, c->rbuf + c->rpos + 4, have);
      c->rpos = c->rlen = 0;
      r = recv_all(c->fd, in + have, len - have, fd_out, c->spin_us);
      if (r < 0)
        break;
      body = in;
    }
    r = finish(c, body, len, req, rep, &box, nfds);
    free(in);
    return r;
  }
  free(in);
  return recv_failed(c, &box, r);
}
