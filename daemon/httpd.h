/* SPDX-License-Identifier: MIT */
/* A minimal HTTP/1.0 responder for GET /metrics (Prometheus scrapes):
 * one request per connection, bounded request size, a deadline, a cap on
 * open connections. Nothing else is served. */
#ifndef KVS_DAEMON_HTTPD_H
#define KVS_DAEMON_HTTPD_H

#include <stddef.h>
#include <sys/socket.h>
#include <uv.h>

#define KVS_HTTP_MAX_REQUEST 4096u  /* request line + headers */
#define KVS_HTTP_MAX_CONNS   16u    /* more are closed at accept */
#define KVS_HTTP_TIMEOUT_MS  10000u /* whole exchange, from accept */

typedef struct kvs__http_conn kvs__http_conn;

/* The body of /metrics: malloc'd text (*len bytes), or NULL on failure
 * (answered 500). */
typedef char *(*kvs__http_render)(void *arg, size_t *len);

typedef struct kvs__httpd {
  uv_loop_t *loop;
  uv_tcp_t listener;
  int listening;
  kvs__http_conn *head;
  unsigned n_conns;
  kvs__http_render render;
  void *arg;
  unsigned long long served, refused; /* 200 answers; connections over the cap */
} kvs__httpd;

/* Listen on addr. 0 or a negative libuv code (logged). */
int kvs__httpd_start(kvs__httpd *h, uv_loop_t *loop, const struct sockaddr *addr,
                     const char *name, kvs__http_render render, void *arg);
/* Close the listener and every open connection. */
void kvs__httpd_stop(kvs__httpd *h);

#endif
