/* SPDX-License-Identifier: MIT */
/* The fast area is the client's memory: every word is loaded once, the
 * body copied before it is decoded, and nothing kvsinkd keeps depends on
 * what the client writes there later. */
#include <errno.h>
#include <string.h>

#include "daemon/fast.h"

void kvs__fast_init(kvs__fast *f, uint8_t *area)
{
  f->area = area;
  f->n = 0;
  /* what the client has published so far is not a request to us */
  f->seen = area ? kvs__fast_load(area, KVS_FAST_REQ_SEQ) : 0;
}

int kvs__fast_take(kvs__fast *f, uint8_t *buf, uint32_t *len)
{
  if (!f->area) return 0;
  uint32_t seq = kvs__fast_load(f->area, KVS_FAST_REQ_SEQ);
  if (seq == f->seen) return 0;
  f->seen = seq;
  f->n++;
  uint32_t n = kvs__fast_load(f->area, KVS_FAST_REQ_LEN);
  if (n == 0 || n > KVS_FAST_REQ_MAX) return -EMSGSIZE;
  memcpy(buf, f->area + KVS_FAST_REQ, n);
  *len = n;
  return 1;
}

int kvs__fast_reply(kvs__fast *f, const char *body, size_t len)
{
  if (!f->area) return -EMSGSIZE;
  int fits = len > 0 && len <= KVS_FAST_REP_MAX;
  if (fits) memcpy(f->area + KVS_FAST_REP, body, len);
  kvs__fast_store(f->area, KVS_FAST_REP_LEN, fits ? (uint32_t)len : KVS_FAST_ON_SOCKET);
  kvs__fast_store(f->area, KVS_FAST_REP_SEQ, f->seen);
  return fits ? 0 : -EMSGSIZE;
}

void kvs__fast_polling(kvs__fast *f, int on)
{
  if (f->area) kvs__fast_store(f->area, KVS_FAST_POLLING, on ? 1u : 0u);
}
