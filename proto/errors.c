/* SPDX-License-Identifier: MIT */
/* kvs_strerror: names for kvsink's own codes and the errno values the
 * protocol uses; anything else falls back to strerror(). */
#include <errno.h>
#include <string.h>

#include <kvsink.h>

static const struct {
  int code;
  const char *msg;
} names[] = {
  { KVS_OK, "success" },
  { KVS_EVERSION, "protocol version not spoken by the peer" },
  { KVS_EMODEL, "model descriptor invalid or mismatched" },
  { KVS_ESEGMENT, "offset or length outside the shared segment" },
  { KVS_ENAN, "NaN or Inf in the input tensors" },
  { KVS_ERECONNECTED, "reconnected to kvsinkd: new session, segments remapped, sequences gone" },
  { -EINVAL, "invalid argument" },
  { -EPROTO, "protocol error (unknown op or missing field)" },
  { -EBADMSG, "malformed message" },
  { -E2BIG, "message or value over a protocol limit" },
  { -ENOSPC, "cache pool full" },
  { -ENOENT, "no such sequence or entry" },
  { -ENOMEM, "out of memory" },
  { -EEXIST, "already exists" },
  { -EPERM, "operation not permitted" },
  { -EACCES, "permission denied" },
  { -ECONNREFUSED, "connection refused (is kvsinkd running?)" },
  { -ECONNRESET, "connection reset by the daemon" },
  { -ENOTCONN, "not connected" },
  { -EPIPE, "connection closed by the daemon" },
  { -ETIMEDOUT, "timed out" },
  { -ERANGE, "value out of range" },
  { -EBUSY, "resource busy" },
  { -ENOTSUP, "operation not supported" },
  { -EMFILE, "too many open files or sequences" },
  { -EAGAIN, "try again" },
  { -EINTR, "interrupted" },
  { -EIO, "input/output error" },
  { -ENOSYS, "function not implemented by this daemon" },
  { -EUSERS, "too many sessions (max_sessions)" },
};

const char *kvs_strerror(int err)
{
  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
    if (names[i].code == err)
      return names[i].msg;
  if (err < 0 && err > -4096) {
    /* strerror may return a static buffer; glibc never returns NULL */
    const char *s = strerror(-err);
    if (s)
      return s;
  }
  return "unknown error";
}
