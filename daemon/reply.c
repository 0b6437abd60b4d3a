/* SPDX-License-Identifier: MIT */
/* Failure replies of the request layer (reply.h). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "daemon/reply.h"

static void vfail(kvs__rep *rep, int err, const char *fmt, va_list ap)
{
  rep->err = err;
  vsnprintf(rep->errmsg, sizeof rep->errmsg, fmt, ap);
}

int kvs__ops_fail(kvs__rep *rep, int err, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vfail(rep, err, fmt, ap);
  va_end(ap);
  return err;
}

void kvs__ops_error(kvs__rep *rep, kvs__op op, uint64_t id, int err, const char *fmt, ...)
{
  memset(rep, 0, sizeof *rep);
  rep->op = op;
  rep->id = id;
  va_list ap;
  va_start(ap, fmt);
  vfail(rep, err, fmt, ap);
  va_end(ap);
  /* Messages may quote client bytes (an unknown op name): printable ASCII
   * only, so logs and terminals never see control bytes or broken UTF-8. */
  for (char *p = rep->errmsg; *p; p++)
    if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e) *p = '?';
}
