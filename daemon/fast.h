/* SPDX-License-Identifier: MIT */
/* A session's fast area, kvsinkd's side (proto/fastarea.h, HACKING.md
 * Decision 52): take a request the client left there (copied out once,
 * its length checked), write its reply, say whether the loop polls. */
#ifndef KVS_DAEMON_FAST_H
#define KVS_DAEMON_FAST_H

#include <stddef.h>
#include <stdint.h>

#include "proto/fastarea.h"

typedef struct kvs__fast {
  uint8_t *area;    /* in the session's segment; NULL = none */
  uint32_t seen;    /* the last req_seq taken */
  uint64_t n;       /* requests taken */
} kvs__fast;

/* area: KVS_FAST_BYTES of the session's segment (mapped by both sides). */
void kvs__fast_init(kvs__fast *f, uint8_t *area);
/* A request not taken yet: 1 with its body copied into buf
 * (KVS_FAST_REQ_MAX bytes) and *len set; 0 when there is none;
 * -EMSGSIZE when its length is 0 or over KVS_FAST_REQ_MAX (taken all the
 * same: the caller replies with the error). */
int kvs__fast_take(kvs__fast *f, uint8_t *buf, uint32_t *len);
/* The reply of the request taken last: 0, or -EMSGSIZE when it does not
 * fit (the area then says the reply goes on the socket). */
int kvs__fast_reply(kvs__fast *f, const char *body, size_t len);
/* Tell the client whether kvsinkd's loop polls the area (else it rings). */
void kvs__fast_polling(kvs__fast *f, int on);

#endif
