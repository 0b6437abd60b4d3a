/* SPDX-License-Identifier: MIT */
/* One client connection: libuv reads, framing, replies (the hello reply
 * carries the segment fd). What a request does is daemon/ops.c. */
#ifndef KVS_DAEMON_SESSION_H
#define KVS_DAEMON_SESSION_H

#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "daemon/fast.h"
#include "daemon/ops.h"

typedef struct kvs__session kvs__session;
struct kvs__remote;

/* The sessions of one daemon and what they need from it. */
typedef struct kvs__sessions {
  uv_loop_t *loop;
  kvs__ops_env env;
  const kvs__config *cfg;
  int admin_gid;           /* admin_group's gid, -1 = none */
  kvs__session *head;      /* doubly linked list */
  uint64_t n, total, next_id;
  void (*on_gone)(void *arg); /* after a session closed */
  void *arg;
  struct kvs__remote *remote; /* the Redis tier, NULL when off */
  uv_idle_t spin;          /* busy_poll_us: the loop polls without sleeping */
  uint64_t spin_until;     /* uv_hrtime() when it stops */
  int spin_init, spin_closed;
  int fast_polling;        /* the fast areas say the loop polls them */
} kvs__sessions;

struct kvs__session {
  uv_pipe_t pipe;
  uv_timer_t timer;        /* hello and partial-frame deadlines, every second */
  kvs__sessions *host;
  kvs__session *prev, *next;
  kvs__sess_state st;
  int closing;
  int admin_listener;      /* came in on the admin socket */
  int timer_on;
  int pending_closes;      /* handles still closing; freed at 0 */
  int paused;              /* reads stopped: too many reply bytes queued */
  struct kvs__parked *parked; /* a lookup waiting on the Redis tier; reads
                                 and framing stop meanwhile (session.c) */
  uint64_t connected_ms, partial_since_ms;
  kvs__fast fast;          /* the fast area (daemon/fast.h), area NULL = none */
  int fast_replying;       /* the next reply goes to the fast area */
  uint8_t *buf;            /* received bytes not yet consumed */
  size_t buf_len, buf_cap;
  uv_shutdown_t shutdown_req;
};

/* Accept one connection from listener; closes it on failure. Sessions of
 * an admin listener may run admin ops; on the data socket only uid 0 and
 * members of admin_group may. */
void kvs__session_accept(kvs__sessions *h, uv_stream_t *listener, int admin_listener);
/* Finish replies already queued, then close (graceful stop). */
void kvs__session_shutdown(kvs__session *ss);
/* Close at once, dropping replies not yet written. */
void kvs__session_abort(kvs__session *ss);
/* Close what the sessions share (the busy-poll handle), at stop. */
void kvs__sessions_close(kvs__sessions *h);

#endif
