/* SPDX-License-Identifier: MIT */
/* Sink profiles loaded from profiles_dir, keyed by model id. */
#ifndef KVS_DAEMON_PROFILES_H
#define KVS_DAEMON_PROFILES_H

#include <stddef.h>

#include "store/store.h"

typedef struct kvs__profiles {
  kvs__profile *v;
  size_t n;
} kvs__profiles;

/* Load every *.profile in dir; a missing dir gives an empty set. Bad files
 * are logged and skipped. Returns 0 or -ENOMEM. */
int kvs__profiles_load(kvs__profiles *p, const char *dir);
void kvs__profiles_free(kvs__profiles *p);
const kvs__profile *kvs__profiles_find(const kvs__profiles *p, const char *model_id);

#endif
