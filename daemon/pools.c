/* SPDX-License-Identifier: MIT */
/* One pool per GPU (daemon/pools.h). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "store/backend.h"
#include "store/pool.h"
#include "daemon/log.h"
#include "daemon/pools.h"

/* Register GPU ordinal's pool; say whether its clients get device segments. */
static void add(kvs__devset *ds, int ordinal, kvs__store *st, kvs__backend *b)
{
  if (kvs__devset_add(ds, ordinal, st, b) < 0)
    kvs__notice("cuda:%d: no device segments (%s); its clients get host segments", ordinal,
                kvs__cudrv_error());
  else
    kvs__notice("cuda:%d: device segments on", ordinal);
}

#ifdef HAVE_CUDA
/* The ordinals the configuration names beyond the first pool's. */
static size_t more_ordinals(const kvs__devlist *d, int first, int *out)
{
  size_t n = 0;
  if (d->mode == KVS_DEVMODE_LIST) {
    for (uint32_t i = 1; i < d->n; i++) out[n++] = d->dev[i];
  } else if (d->mode == KVS_DEVMODE_ALL) {
    int count = 0;
    if (kvs__cudrv_count(&count) < 0) count = 0;
    for (int o = 0; o < count && n < KVS_MAX_DEVICES - 1; o++)
      if (o != first) out[n++] = o;
  }
  return n;
}
#endif

int kvs__pools_open(kvs__devset *ds, const kvs__devlist *list, int first, kvs__store *store,
                    kvs__backend *b0, const kvs__store_opts *opts)
{
  if (strcmp(b0->name, "cuda") != 0) return 0; /* host pool: no GPUs */
  add(ds, first, store, b0);
#ifdef HAVE_CUDA
  int ord[KVS_MAX_DEVICES];
  size_t n = more_ordinals(list, first, ord);
  for (size_t i = 0; i < n; i++) {
    char msg[256] = "";
    kvs__backend *b = kvs__backend_cuda_open(ord[i], msg);
    if (!b) {
      kvs__err("device cuda:%d: %s", ord[i], msg);
      return -ENODEV;
    }
    kvs__store *st = NULL;
    kvs__store_opts o = *opts;
    o.backend = b;
    int r = kvs__store_init(&st, &o);
    if (r < 0) {
      kvs__err("cannot create a %llu-byte pool on cuda:%d: %s",
               (unsigned long long)o.pool_bytes, ord[i], strerror(-r));
      kvs__backend_cuda_close(b);
      return r;
    }
    kvs__notice("pool of %llu bytes on cuda:%d%s", (unsigned long long)o.pool_bytes, ord[i],
                kvs__store_exportable(st) == KVS_POOL_EXPORT_DEVICE ? " (chunks are exportable CUDA allocations)" : "");
    add(ds, ord[i], st, b);
  }
#else
  (void)list;
  (void)opts;
#endif
  return 0;
}

void kvs__pools_close(kvs__devset *ds, const kvs__store *store)
{
  for (size_t i = 0; i < ds->n; i++) {
    if (ds->store[i] == store) continue; /* the first: its owner closes it */
    kvs__store_close(ds->store[i]);
#ifdef HAVE_CUDA
    kvs__backend_cuda_close(ds->backend[i]);
#endif
  }
  memset(ds, 0, sizeof *ds);
}
