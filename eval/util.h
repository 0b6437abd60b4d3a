/* SPDX-License-Identifier: MIT */
/* Small helpers shared by the eval tools. */
#ifndef KVS_EVAL_UTIL_H
#define KVS_EVAL_UTIL_H

#include <stddef.h>

/* Read a whole file into a NUL-terminated malloc'd buffer (at most max
 * bytes). Returns 0 or a negative errno code. */
int kvs__read_file(const char *path, size_t max, char **buf, size_t *len);

#endif
