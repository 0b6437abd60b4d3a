/* SPDX-License-Identifier: MIT */
/* GET /metrics over HTTP/1.0 on libuv TCP. The request is read whole (at
 * most KVS_HTTP_MAX_REQUEST bytes, within KVS_HTTP_TIMEOUT_MS) before
 * anything is rendered; the answer closes the connection. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/httpd.h"
#include "daemon/log.h"

struct kvs__http_conn {
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_write_t wr;
  uv_shutdown_t sh;
  kvs__httpd *h;
  kvs__http_conn *prev, *next;
  char req[KVS_HTTP_MAX_REQUEST];
  size_t len;
  char *out;
  int answered, closing, pending_closes;
};

static void conn_freed(uv_handle_t *hd)
{
  kvs__http_conn *c = hd->data;
  if (--c->pending_closes) return;
  free(c->out);
  free(c);
}

static void conn_close(kvs__http_conn *c)
{
  if (c->closing) return;
  c->closing = 1;
  kvs__httpd *h = c->h;
  if (c->prev) c->prev->next = c->next;
  else h->head = c->next;
  if (c->next) c->next->prev = c->prev;
  h->n_conns--;
  c->pending_closes = 2;
  uv_close((uv_handle_t *)&c->tcp, conn_freed);
  uv_close((uv_handle_t *)&c->timer, conn_freed);
}

static void on_timeout(uv_timer_t *t) { conn_close(t->data); }

static void on_alloc(uv_handle_t *hd, size_t sz, uv_buf_t *b);
static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b);

/* After the answer: FIN, then read and drop until the client closes (or
 * the deadline), so that unread request bytes do not turn our close into
 * a reset that discards the answer at the client. */
static void on_shutdown(uv_shutdown_t *sh, int status)
{
  kvs__http_conn *c = sh->data;
  if (status < 0 || c->closing ||
      uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0)
    conn_close(c);
}

static void on_written(uv_write_t *w, int status)
{
  kvs__http_conn *c = w->data;
  c->sh.data = c;
  if (status < 0 || c->closing || uv_shutdown(&c->sh, (uv_stream_t *)&c->tcp, on_shutdown) < 0)
    conn_close(c);
}

/* Answer and close after the write; body may be NULL (status text). */
static void respond(kvs__http_conn *c, const char *status, const char *body, size_t blen,
                    int head_only)
{
  c->answered = 1;
  uv_read_stop((uv_stream_t *)&c->tcp);
  if (!body) {
    body = status;
    blen = strlen(status);
  }
  char hdr[256];
  int hl = snprintf(hdr, sizeof hdr,
                    "HTTP/1.0 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                    "Connection: close\r\n\r\n",
                    status,
                    strncmp(status, "200", 3) == 0 ? "text/plain; version=0.0.4; charset=utf-8"
                                                   : "text/plain; charset=utf-8",
                    blen);
  size_t n = (size_t)hl + (head_only ? 0 : blen);
  c->out = malloc(n);
  if (!c->out) {
    conn_close(c);
    return;
  }
  memcpy(c->out, hdr, (size_t)hl);
  if (!head_only) memcpy(c->out + hl, body, blen);
  uv_buf_t b = uv_buf_init(c->out, (unsigned)n);
  c->wr.data = c;
  if (uv_write(&c->wr, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0) conn_close(c);
}

/* The request line of a complete request: "METHOD TARGET HTTP/x.y". */
static void handle(kvs__http_conn *c)
{
  char *eol = memchr(c->req, '\n', c->len);
  size_t ll = eol ? (size_t)(eol - c->req) : 0;
  if (ll && c->req[ll - 1] == '\r') ll--;
  char line[KVS_HTTP_MAX_REQUEST];
  memcpy(line, c->req, ll);
  line[ll] = 0;
  char *sp1 = strchr(line, ' ');
  char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
  if (!sp1 || !sp2 || strncmp(sp2 + 1, "HTTP/1.", 7) != 0) {
    respond(c, "400 Bad Request", NULL, 0, 0);
    return;
  }
  *sp1 = *sp2 = 0;
  int head = strcmp(line, "HEAD") == 0;
  if (!head && strcmp(line, "GET") != 0) {
    respond(c, "405 Method Not Allowed", NULL, 0, 0);
    return;
  }
  char *target = sp1 + 1;
  char *q = strchr(target, '?'); /* Prometheus may add parameters */
  if (q) *q = 0;
  if (strcmp(target, "/metrics") != 0) {
    static const char nf[] = "only /metrics is served here\n";
    respond(c, "404 Not Found", nf, sizeof nf - 1, head);
    return;
  }
  size_t blen = 0;
  char *body = c->h->render(c->h->arg, &blen);
  if (!body) {
    respond(c, "500 Internal Server Error", NULL, 0, head);
    return;
  }
  c->h->served++;
  respond(c, "200 OK", body, blen, head);
  free(body);
}

static void on_alloc(uv_handle_t *hd, size_t sz, uv_buf_t *b)
{
  (void)sz;
  kvs__http_conn *c = hd->data;
  if (c->answered) /* draining: the bytes are dropped */
    *b = uv_buf_init(c->req, (unsigned)sizeof c->req);
  else
    *b = uv_buf_init(c->req + c->len, (unsigned)(sizeof c->req - c->len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
  (void)b;
  kvs__http_conn *c = s->data;
  if (n < 0) {
    conn_close(c);
    return;
  }
  if (n == 0 || c->answered) return;
  size_t from = c->len > 3 ? c->len - 3 : 0;
  c->len += (size_t)n;
  /* the blank line that ends the headers (CRLF or bare LF) */
  for (size_t i = from; i + 1 < c->len; i++) {
    if ((c->req[i] == '\n' && c->req[i + 1] == '\n') ||
        (i + 3 < c->len && memcmp(c->req + i, "\r\n\r\n", 4) == 0)) {
      handle(c);
      return;
    }
  }
  if (c->len == sizeof c->req) respond(c, "431 Request Header Fields Too Large", NULL, 0, 0);
}

static void on_connection(uv_stream_t *l, int status)
{
  kvs__httpd *h = l->data;
  if (status < 0) {
    kvs__warn("metrics: accept: %s", uv_strerror(status));
    return;
  }
  kvs__http_conn *c = calloc(1, sizeof *c);
  if (!c) return;
  c->h = h;
  uv_tcp_init(h->loop, &c->tcp);
  uv_timer_init(h->loop, &c->timer);
  c->tcp.data = c->timer.data = c;
  c->next = h->head;
  if (h->head) h->head->prev = c;
  h->head = c;
  h->n_conns++;
  if (uv_accept(l, (uv_stream_t *)&c->tcp) < 0) {
    conn_close(c);
    return;
  }
  if (h->n_conns > KVS_HTTP_MAX_CONNS) { /* scrapers are few: drop the excess */
    h->refused++;
    conn_close(c);
    return;
  }
  uv_timer_start(&c->timer, on_timeout, KVS_HTTP_TIMEOUT_MS, 0);
  if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0) conn_close(c);
}

int kvs__httpd_start(kvs__httpd *h, uv_loop_t *loop, const struct sockaddr *addr,
                     const char *name, kvs__http_render render, void *arg)
{
  memset(h, 0, sizeof *h);
  h->loop = loop;
  h->render = render;
  h->arg = arg;
  uv_tcp_init(loop, &h->listener);
  h->listener.data = h;
  h->listening = 1; /* from here on the handle must be closed */
  int r = uv_tcp_bind(&h->listener, addr, 0);
  if (r == 0) r = uv_listen((uv_stream_t *)&h->listener, 16, on_connection);
  if (r < 0) {
    kvs__err("metrics_listen %s: %s%s", name, uv_strerror(r),
             r == UV_EAFNOSUPPORT ? " (under systemd, RestrictAddressFamilies must allow it: "
                                    "see kvsinkd.conf(5))"
                                  : "");
    return r;
  }
  /* the bound address, so that port 0 (tests) tells which port it got */
  struct sockaddr_storage a;
  int al = sizeof a;
  char host[64] = "?";
  unsigned port = 0;
  if (uv_tcp_getsockname(&h->listener, (struct sockaddr *)&a, &al) == 0) {
    if (a.ss_family == AF_INET6) {
      uv_ip6_name((struct sockaddr_in6 *)&a, host, sizeof host);
      port = ntohs(((struct sockaddr_in6 *)&a)->sin6_port);
    } else {
      uv_ip4_name((struct sockaddr_in *)&a, host, sizeof host);
      port = ntohs(((struct sockaddr_in *)&a)->sin_port);
    }
  }
  kvs__notice(a.ss_family == AF_INET6 ? "metrics on http://[%s]:%u/metrics"
                                      : "metrics on http://%s:%u/metrics",
              host, port);
  return 0;
}

void kvs__httpd_stop(kvs__httpd *h)
{
  if (!h->listening) return;
  h->listening = 0;
  uv_close((uv_handle_t *)&h->listener, NULL);
  while (h->head) conn_close(h->head);
}
