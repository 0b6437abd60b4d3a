/* SPDX-License-Identifier: MIT */
/* Failure replies of the request layer (ops.c, ops_dev.c, table.c). */
#ifndef KVS_DAEMON_REPLY_H
#define KVS_DAEMON_REPLY_H

#include "proto/proto.h"

/* rep->err = err and its message; returns err. */
int kvs__ops_fail(kvs__rep *rep, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Reply to a request the decoder refused (unknown op, bad value): rep
 * names the op only in printable ASCII. */
void kvs__ops_error(kvs__rep *rep, kvs__op op, uint64_t id, int err, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

#endif
