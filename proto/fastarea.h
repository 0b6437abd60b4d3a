/* SPDX-License-Identifier: MIT */
/* The fast area (kvsink-protocol(7) "FAST PATH"): the last KVS_FAST_BYTES
 * of a session's host segment, granted at hello (fast_off), through which
 * a busy-polling client passes small requests and their replies without
 * the socket. The frames are the socket's msgpack bodies; only the
 * handshake words are new. Client and daemon both map it: each side
 * writes only its own words, and kvsinkd copies a request out once
 * before it decodes it (the client may scribble on it meanwhile).
 *
 *   client:  req bytes, then req_len, then req_seq (release)
 *            fence; if polling == 0, a "bell" frame on the socket
 *   kvsinkd: polls req_seq while its loop spins (busy_poll_us), or on a
 *            bell; copies req_len bytes (checked), runs the request;
 *            rep bytes, rep_len, then rep_seq = req_seq (release);
 *            rep_len KVS_FAST_ON_SOCKET: the reply went on the socket.
 *   kvsinkd clears polling, fences, then looks at req_seq once more
 *   before its loop sleeps, so a request is never left unseen. */
#ifndef KVS_PROTO_FASTAREA_H
#define KVS_PROTO_FASTAREA_H

#include <stdint.h>

#define KVS_FAST_BYTES 16384u        /* a multiple of the page size */
#define KVS_FAST_REQ_SEQ 0u          /* u32, the client's */
#define KVS_FAST_REQ_LEN 4u          /* u32, the client's */
#define KVS_FAST_POLLING 64u         /* u32, kvsinkd's: 1 while it polls */
#define KVS_FAST_REP_SEQ 128u        /* u32, kvsinkd's */
#define KVS_FAST_REP_LEN 132u        /* u32, kvsinkd's */
#define KVS_FAST_REQ 256u            /* request body */
#define KVS_FAST_REQ_MAX (8192u - KVS_FAST_REQ)
#define KVS_FAST_REP 8192u           /* reply body */
#define KVS_FAST_REP_MAX (KVS_FAST_BYTES - KVS_FAST_REP)
#define KVS_FAST_ON_SOCKET 0xffffffffu

static inline uint32_t *kvs__fast_word(void *area, uint32_t off)
{
  return (uint32_t *)((char *)area + off);
}
static inline uint32_t kvs__fast_load(void *area, uint32_t off)
{
  return __atomic_load_n(kvs__fast_word(area, off), __ATOMIC_ACQUIRE);
}
static inline void kvs__fast_store(void *area, uint32_t off, uint32_t v)
{
  __atomic_store_n(kvs__fast_word(area, off), v, __ATOMIC_RELEASE);
}

#endif
