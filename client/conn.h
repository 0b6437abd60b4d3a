/* SPDX-License-Identifier: MIT */
/* Blocking request/reply over the daemon's Unix socket: framing, ids,
 * SCM_RIGHTS on the hello reply. Shared by libkvsink and kvsinkctl. */
#ifndef KVS_CLIENT_CONN_H
#define KVS_CLIENT_CONN_H

#include <stdint.h>

#include "proto/proto.h"
#include "proto/blocktable.h"

/* Replies up to this size (most of them: put, get, ping...) are read with
 * one recvmsg, header and body together, into the connection's buffer. */
#define KVS__CONN_RBUF 4096u
/* Bound of the busy-poll spin (kvs_set_busy_poll, $KVSINK_BUSY_POLL_US). */
#define KVS__CONN_MAX_SPIN_US 100000u
/* The spin of device puts and gets when neither kvs_set_busy_poll nor
 * $KVSINK_BUSY_POLL_US chose one (HACKING.md Decision 48): a bulk device
 * get takes ~130 us in kvsinkd, a bulk put 500-800 us. */
#define KVS__CONN_DEV_SPIN_US 1000u

typedef struct kvs__conn {
  int fd;
  uint64_t next_id;
  int broken;                   /* stream out of sync: every call fails */
  uint32_t spin_us;             /* busy-poll for a reply this long before blocking */
  uint32_t rpos, rlen;          /* unread bytes are rbuf[rpos, rlen) */
  uint8_t *fast;                /* the fast area (proto/fastarea.h) in the
                                 * segment; NULL = none (the socket only) */
  uint32_t fast_seq;            /* the last request published there */
  char errmsg[KVS_MAX_ERRMSG];  /* last error text (daemon's or ours) */
  uint8_t rbuf[KVS__CONN_RBUF];
} kvs__conn;

/* Socket path: path, else $KVSINK_SOCKET, else the system default. */
const char *kvs__conn_default_path(const char *path);

/* $KVSINK_BUSY_POLL_US as microseconds (capped) into *us: 1 when it is
 * set to a number (0 included), else 0 with *us = 0 (unset, empty or
 * invalid). */
int kvs__conn_env_spin(uint32_t *us);

/* Connect; 0 or -errno. */
int kvs__conn_open(kvs__conn *c, const char *path);
void kvs__conn_close(kvs__conn *c);

/* Send req (its id is assigned here), read frames until the reply with
 * that id. rep must be freed with kvs__rep_free when 0 is returned or the
 * daemon answered an error. If fd_out is not NULL, an fd passed with the
 * reply is stored there (-1 if none). Returns 0, the daemon's error code,
 * or a local error (-EPIPE, -ECONNRESET, -EPROTO, -EBADMSG...). */
int kvs__conn_call(kvs__conn *c, kvs__req *req, kvs__rep *rep, int *fd_out);
/* The same keeping up to cap fds of the reply in fds[0..*nfds) (the
 * caller owns them on success; none are left open on failure). */
int kvs__conn_call_fds(kvs__conn *c, kvs__req *req, kvs__rep *rep, int *fds, uint32_t cap,
                       uint32_t *nfds);

/* Use the fast area at area (KVS_FAST_BYTES of the mapped segment, as
 * hello granted it) for the small requests of a busy-polling caller; NULL
 * stops using it (before the segment is unmapped). */
void kvs__conn_set_fast(kvs__conn *c, void *area);

/* Record an error text for kvs_last_error(). */
void kvs__conn_seterr(kvs__conn *c, int err, const char *what);

#endif
