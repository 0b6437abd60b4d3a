/* SPDX-License-Identifier: MIT */
/* libkvsink's control and admin plane: requests that need no hello. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/conn.h"
#include <kvsink.h>

struct kvs_admin {
  kvs__conn conn;
};

static const char *admin_path(const char *path)
{
  if (path && *path) return path;
  const char *env = getenv("KVSINK_ADMIN_SOCKET");
  return env && *env ? env : KVS_DEFAULT_ADMIN_SOCKET;
}

int kvs_admin_connect(kvs_admin **out, const char *path)
{
  if (!out) return -EINVAL;
  *out = NULL;
  kvs_admin *a = calloc(1, sizeof *a);
  if (!a) return -ENOMEM;
  int r = kvs__conn_open(&a->conn, admin_path(path));
  if (r < 0) {
    free(a);
    return r;
  }
  *out = a;
  return 0;
}

void kvs_admin_close(kvs_admin *a)
{
  if (!a) return;
  kvs__conn_close(&a->conn);
  free(a);
}

const char *kvs_admin_last_error(const kvs_admin *a)
{
  return a ? a->conn.errmsg : "";
}

/* One request with no arguments; rep is freed by the caller on 0. */
static int call(kvs_admin *a, kvs__op op, kvs__rep *rep)
{
  if (!a) return -EINVAL;
  kvs__req req;
  memset(&req, 0, sizeof req);
  req.op = op;
  int r = kvs__conn_call(&a->conn, &req, rep, NULL);
  if (r < 0) {
    kvs__rep_free(rep);
    return r;
  }
  a->conn.errmsg[0] = '\0';
  return 0;
}

int kvs_admin_ping(kvs_admin *a)
{
  kvs__rep rep;
  int r = call(a, KVS_OP_PING, &rep);
  if (r == 0) kvs__rep_free(&rep);
  return r;
}

int kvs_admin_stats(kvs_admin *a, kvs_stats *st)
{
  if (!st) return -EINVAL;
  kvs__rep rep;
  int r = call(a, KVS_OP_STATS, &rep);
  if (r < 0) return r;
  *st = rep.stats;
  kvs__rep_free(&rep);
  return 0;
}

int kvs_admin_pools(kvs_admin *a, kvs_stats *total, kvs_pool_stats **v, size_t *n)
{
  if (!total || !v || !n) return -EINVAL;
  *v = NULL;
  *n = 0;
  kvs__rep rep;
  int r = call(a, KVS_OP_STATS, &rep);
  if (r < 0) return r;
  *total = rep.stats;
  *v = rep.pools; /* handed over: kvs__rep_free must not free it */
  *n = rep.n_pools;
  rep.pools = NULL;
  rep.n_pools = 0;
  kvs__rep_free(&rep);
  return 0;
}

int kvs_admin_list(kvs_admin *a, kvs_space_info **v, size_t *n)
{
  if (!v || !n) return -EINVAL;
  *v = NULL;
  *n = 0;
  kvs__rep rep;
  int r = call(a, KVS_OP_LIST, &rep);
  if (r < 0) return r;
  *v = rep.spaces; /* handed over: the caller frees it */
  *n = rep.n_spaces;
  rep.spaces = NULL;
  kvs__rep_free(&rep);
  return 0;
}

int kvs_admin_profiles(kvs_admin *a, kvs_profile_info **v, size_t *n)
{
  if (!v || !n) return -EINVAL;
  *v = NULL;
  *n = 0;
  kvs__rep rep;
  int r = call(a, KVS_OP_PROFILES, &rep);
  if (r < 0) return r;
  *v = rep.profiles;
  *n = rep.n_profiles;
  rep.profiles = NULL;
  kvs__rep_free(&rep);
  return 0;
}

int kvs_admin_evict(kvs_admin *a, uint64_t *evicted)
{
  kvs__rep rep;
  int r = call(a, KVS_OP_EVICT, &rep);
  if (r < 0) return r;
  if (evicted) *evicted = rep.evicted;
  kvs__rep_free(&rep);
  return 0;
}

int kvs_admin_metrics(kvs_admin *a, char **text)
{
  if (!text) return -EINVAL;
  *text = NULL;
  kvs__rep rep;
  int r = call(a, KVS_OP_METRICS, &rep);
  if (r < 0) return r;
  *text = rep.text ? rep.text : strdup("");
  rep.text = NULL;
  kvs__rep_free(&rep);
  return *text ? 0 : -ENOMEM;
}

int kvs_admin_reload(kvs_admin *a)
{
  kvs__rep rep;
  int r = call(a, KVS_OP_RELOAD, &rep);
  if (r == 0) kvs__rep_free(&rep);
  return r;
}
