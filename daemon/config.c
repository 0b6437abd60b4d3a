/* SPDX-License-Identifier: MIT */
/* Config parser. Errors name the line so --check-config is useful. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <kvsink.h>
#include "daemon/config.h"
#include "proto/proto.h"
#include "daemon/log.h"
#include "store/store.h"

static int parse_u64(const char *v, uint64_t *out)
{
  if (!isdigit((unsigned char)*v)) return -EINVAL;
  errno = 0;
  char *end;
  unsigned long long x = strtoull(v, &end, 10);
  if (errno || *end) return -EINVAL;
  *out = x;
  return 0;
}

static int parse_u32(const char *v, uint32_t lo, uint32_t hi, uint32_t *out)
{
  uint64_t x;
  if (parse_u64(v, &x) < 0 || x < lo || x > hi) return -EINVAL;
  *out = (uint32_t)x;
  return 0;
}

/* Bytes with an optional K/M/G suffix (powers of 1024). */
static int parse_size(const char *v, uint64_t *out)
{
  if (!isdigit((unsigned char)*v)) return -EINVAL;
  errno = 0;
  char *end;
  unsigned long long x = strtoull(v, &end, 10);
  if (errno) return -EINVAL;
  unsigned shift = 0;
  if (*end) {
    switch (*end) {
    case 'K': case 'k': shift = 10; break;
    case 'M': case 'm': shift = 20; break;
    case 'G': case 'g': shift = 30; break;
    default: return -EINVAL;
    }
    if (end[1]) return -EINVAL;
  }
  if (x > (UINT64_MAX >> shift)) return -EINVAL;
  *out = (uint64_t)x << shift;
  return 0;
}


static int set_shared(kvs__config *c, const char *v, char *err)
{
  size_t n = 0;
  const char *p = v;
  while (*p) {
    while (*p == ' ' || *p == '\t') p++;
    char *end;
    if (!isdigit((unsigned char)*p)) goto bad;
    errno = 0;
    unsigned long u = strtoul(p, &end, 10);
    if (errno || u > (unsigned long)INT_MAX) goto bad;
    if (n == KVS_CONF_MAX_SHARED_UIDS) {
      snprintf(err, KVS_CONF_ERRMSG, "shared_namespace_uids: more than %d uids",
               KVS_CONF_MAX_SHARED_UIDS);
      return -EINVAL;
    }
    c->shared_uids[n++] = (uid_t)u;
    p = end;
    while (*p == ' ' || *p == '\t') p++;
    if (*p == ',') {
      p++;
      if (!*p) goto bad;
    } else if (*p) {
      goto bad;
    }
  }
  c->n_shared_uids = n;
  return 0;
bad:
  snprintf(err, KVS_CONF_ERRMSG, "shared_namespace_uids: expected comma-separated uids, got '%s'",
           v);
  return -EINVAL;
}

/* The Redis tier's keys (remote, remote_timeout_ms, remote_queue,
 * cluster_key_file); remote is split here so a bad URL fails the load. */
static int set_remote(kvs__config *c, const char *key, const char *v, char *err)
{
  uint64_t u64;
  uint32_t u32;
#define BAD(...) do { snprintf(err, KVS_CONF_ERRMSG, __VA_ARGS__); return -EINVAL; } while (0)
  if (strcmp(key, "remote") == 0) {
    if (strlen(v) >= sizeof c->remote) BAD("remote: longer than %zu bytes", sizeof c->remote - 1);
    c->remote_host[0] = c->remote_path[0] = 0;
    c->remote_port = 0;
    if (!*v) {
      c->remote[0] = 0;
      return 0;
    }
    if (strncmp(v, "unix:", 5) == 0) {
      if (!v[5] || strlen(v + 5) >= sizeof c->remote_path) BAD("remote: unix socket path empty or too long");
      strcpy(c->remote_path, v + 5);
    } else if (strncmp(v, "redis://", 8) == 0) {
      const char *h = v + 8, *colon = strrchr(h, ':');
      if (!colon || colon == h || (size_t)(colon - h) >= sizeof c->remote_host ||
          parse_u32(colon + 1, 1, 65535, &u32) < 0 || memchr(h, '/', (size_t)(colon - h)))
        BAD("remote: expected redis://HOST:PORT or unix:PATH, got '%s'", v);
      memcpy(c->remote_host, h, (size_t)(colon - h));
      c->remote_host[colon - h] = 0;
      c->remote_port = u32;
    } else {
      BAD("remote: expected redis://HOST:PORT or unix:PATH, got '%s'", v);
    }
    strcpy(c->remote, v);
  } else if (strcmp(key, "remote_timeout_ms") == 0) {
    if (parse_u32(v, 1, 10000, &u32) < 0) BAD("remote_timeout_ms: expected 1..10000, got '%s'", v);
    c->remote_timeout_ms = u32;
  } else if (strcmp(key, "remote_queue") == 0) {
    if (parse_size(v, &u64) < 0 || u64 < 4096 || u64 > ((uint64_t)1 << 36)) BAD("remote_queue: expected bytes 4K..64G, got '%s'", v);
    c->remote_queue = u64;
  } else if (strcmp(key, "cluster_key_file") == 0) {
    if (strlen(v) >= sizeof c->cluster_key_file) BAD("cluster_key_file: path too long");
    strcpy(c->cluster_key_file, v);
  } else {
    BAD("unknown key '%s'", key);
  }
#undef BAD
  return 0;
}

int kvs__config_set(kvs__config *c, const char *key, const char *v, char *err)
{
  uint64_t u64;
  uint32_t u32;
#define BAD(...) do { snprintf(err, KVS_CONF_ERRMSG, __VA_ARGS__); return -EINVAL; } while (0)
  if (strcmp(key, "socket") == 0) {
    if (!*v || strlen(v) >= sizeof c->socket) BAD("socket: path empty or longer than %zu bytes", sizeof c->socket - 1);
    strcpy(c->socket, v);
  } else if (strcmp(key, "socket_group") == 0) {
    if (strlen(v) >= sizeof c->socket_group) BAD("socket_group: name too long");
    strcpy(c->socket_group, v);
  } else if (strcmp(key, "admin_socket") == 0) {
    if (!*v || strlen(v) >= sizeof c->admin_socket) BAD("admin_socket: path empty or longer than %zu bytes", sizeof c->admin_socket - 1);
    strcpy(c->admin_socket, v);
  } else if (strcmp(key, "admin_socket_group") == 0 || strcmp(key, "admin_group") == 0) {
    char *dst = key[6] == 's' ? c->admin_socket_group : c->admin_group;
    if (strlen(v) >= sizeof c->admin_group) BAD("%s: name too long", key);
    strcpy(dst, v);
  } else if (strcmp(key, "metrics_listen") == 0) {
    struct sockaddr_storage ss;
    if (strlen(v) >= sizeof c->metrics_listen ||
        (strcmp(v, "none") != 0 && kvs__config_metrics_addr(v, &ss) < 0))
      BAD("metrics_listen: expected none, ADDR:PORT or [ADDR6]:PORT (numeric), got '%s'", v);
    snprintf(c->metrics_listen, sizeof c->metrics_listen, "%s", strcmp(v, "none") ? v : "");
  } else if (strcmp(key, "admin_socket_mode") == 0) {
    char *end;
    errno = 0;
    unsigned long m = strtoul(v, &end, 8);
    if (!*v || errno || *end || m > 0777) BAD("admin_socket_mode: expected an octal mode like 0600, got '%s'", v);
    c->admin_socket_mode = (unsigned)m;
  } else if (strcmp(key, "socket_mode") == 0) {
    char *end;
    errno = 0;
    unsigned long m = strtoul(v, &end, 8);
    if (!*v || errno || *end || m > 0777) BAD("socket_mode: expected an octal mode like 0660, got '%s'", v);
    c->socket_mode = (unsigned)m;
  } else if (strcmp(key, "pool_size") == 0) {
    if (parse_size(v, &u64) < 0 || u64 < (1u << 20)) BAD("pool_size: expected bytes >= 1M (K/M/G suffixes), got '%s'", v);
    c->pool_size = u64;
  } else if (strcmp(key, "device") == 0) {
    /* a list or "all" (daemon/devlist.h); device keeps the first GPU */
    char dmsg[256];
    if (kvs__devlist_parse(v, &c->devices, dmsg) < 0) BAD("%s", dmsg);
    c->device = c->devices.mode == KVS_DEVMODE_HOST   ? KVS_DEVICE_HOST
                : c->devices.mode == KVS_DEVMODE_LIST ? c->devices.dev[0]
                                                      : KVS_DEVICE_AUTO;
  } else if (strcmp(key, "k_bits") == 0 || strcmp(key, "v_bits") == 0) {
    if (parse_u32(v, 0, 16, &u32) < 0 || !kvs__bits_valid(u32)) BAD("%s: expected 2, 3, 4, 8 or 16, got '%s'", key, v);
    if (key[0] == 'k') c->k_bits = u32; else c->v_bits = u32;
  } else if (strcmp(key, "group_size") == 0) {
    if (parse_u32(v, 1, 64, &u32) < 0) BAD("group_size: expected 1..64, got '%s'", v);
    c->group_size = u32;
  } else if (strcmp(key, "v_group_size") == 0) {
    if (parse_u32(v, 1, 512, &u32) < 0) BAD("v_group_size: expected 1..512, got '%s'", v);
    c->v_group_size = u32;
  } else if (strcmp(key, "pfn") == 0) {
    if (parse_u32(v, 0, 64, &u32) < 0) BAD("pfn: expected 0..64, got '%s'", v);
    c->pfn = u32;
  } else if (strcmp(key, "policy") == 0) {
    int p = kvs__policy_from_name(v, strlen(v)); /* proto's table of names */
    if (p < KVS_POLICY_NONE) BAD("policy: expected none, pfn or kvsink, got '%s'", v);
    c->policy = p;
  } else if (strcmp(key, "outliers") == 0) {
    char *end;
    errno = 0;
    float f = strtof(v, &end);
    if (!*v || errno || *end || !isfinite(f) || f < 0 || f > 0.01f) BAD("outliers: expected a fraction 0..0.01, got '%s'", v);
    c->outliers = f;
  } else if (strcmp(key, "profiles_dir") == 0) {
    if (strlen(v) >= sizeof c->profiles_dir) BAD("profiles_dir: path too long");
    strcpy(c->profiles_dir, v);
  } else if (strcmp(key, "shared_namespace_uids") == 0) {
    return set_shared(c, v, err);
  } else if (strcmp(key, "max_segment_size") == 0) {
    if (parse_size(v, &u64) < 0 || u64 < 4096 || u64 > ((uint64_t)1 << 40)) BAD("max_segment_size: expected bytes 4K..1024G, got '%s'", v);
    c->max_segment_size = u64;
  } else if (strcmp(key, "device_staging") == 0) {
    if (parse_size(v, &u64) < 0 || u64 > ((uint64_t)1 << 40)) BAD("device_staging: expected bytes 0..1024G, got '%s'", v);
    c->device_staging = u64;
  } else if (strcmp(key, "table_chunks") == 0) {
    if (parse_u32(v, 0, UINT32_MAX - 1, &u32) < 0) BAD("table_chunks: expected 0..4294967294, got '%s'", v);
    c->table_chunks = u32;
  } else if (strcmp(key, "max_sessions_per_uid") == 0) {
    if (parse_u32(v, 1, 65536, &u32) < 0) BAD("max_sessions_per_uid: expected 1..65536, got '%s'", v);
    c->max_sessions_per_uid = u32;
  } else if (strcmp(key, "hello_timeout") == 0 || strcmp(key, "frame_timeout") == 0) {
    if (parse_u32(v, 1, 86400, &u32) < 0) BAD("%s: expected seconds 1..86400, got '%s'", key, v);
    if (key[0] == 'h') c->hello_timeout_s = u32; else c->frame_timeout_s = u32;
  } else if (strcmp(key, "max_reply_queue") == 0) {
    if (parse_size(v, &u64) < 0 || u64 < (64u << 10) || u64 > (1ull << 32)) BAD("max_reply_queue: expected bytes 64K..4G, got '%s'", v);
    c->max_reply_queue = u64;
  } else if (strcmp(key, "busy_poll_us") == 0) {
    if (strcmp(v, "auto") == 0) {
      c->busy_poll_auto = 1;
      c->busy_poll_us = 0;
    } else {
      if (parse_u32(v, 0, 10000, &u32) < 0)
        BAD("busy_poll_us: expected auto or microseconds 0..10000, got '%s'", v);
      c->busy_poll_us = u32;
      c->busy_poll_auto = 0;
    }
  } else if (strcmp(key, "max_sessions") == 0) {
    if (parse_u32(v, 1, 65536, &u32) < 0) BAD("max_sessions: expected 1..65536, got '%s'", v);
    c->max_sessions = u32;
  } else if (strcmp(key, "residual_bytes") == 0) {
    if (parse_size(v, &u64) < 0 || (u64 && u64 < (1u << 20))) BAD("residual_bytes: expected 0 (= pool_size) or bytes >= 1M, got '%s'", v);
    c->residual_bytes = u64;
  } else if (strcmp(key, "residual_seq_bytes") == 0) {
    if (parse_size(v, &u64) < 0 || (u64 && u64 < 4096)) BAD("residual_seq_bytes: expected 0 (= residual_bytes) or bytes >= 4K, got '%s'", v);
    c->residual_seq_bytes = u64;
  } else if (strcmp(key, "max_pending_tokens") == 0) {
    if (parse_u32(v, 1, UINT32_MAX, &u32) < 0) BAD("max_pending_tokens: expected a positive count, got '%s'", v);
    c->max_pending_tokens = u32;
  } else if (strcmp(key, "log_level") == 0) {
    int l = kvs__log_level_parse(v);
    if (l < 0) BAD("log_level: expected debug, info, notice, warning or err, got '%s'", v);
    c->log_level = l;
  } else if (strncmp(key, "remote", 6) == 0 || strcmp(key, "cluster_key_file") == 0) {
    return set_remote(c, key, v, err);
  } else {
    BAD("unknown key '%s'", key);
  }
#undef BAD
  return 0;
}

int kvs__config_check(const kvs__config *c, char *err)
{
  if (c->pfn > c->group_size) {
    snprintf(err, KVS_CONF_ERRMSG, "pfn (%u) is larger than group_size (%u)", c->pfn, c->group_size);
    return -EINVAL;
  }
  return 0;
}

static char *trim(char *s)
{
  while (*s == ' ' || *s == '\t') s++;
  char *e = s + strlen(s);
  while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r')) *--e = 0;
  return s;
}

int kvs__config_parse(kvs__config *c, const char *text, const char *name, char *errmsg)
{
  char line[1024], why[KVS_CONF_ERRMSG];
  unsigned lineno = 0, pfn_line = 0, group_line = 0;
  const char *p = text;
  while (*p) {
    const char *nl = strchr(p, '\n');
    size_t len = nl ? (size_t)(nl - p) : strlen(p);
    lineno++;
    if (len >= sizeof line) {
      snprintf(errmsg, KVS_CONF_ERRMSG, "%s:%u: line too long", name, lineno);
      return -EINVAL;
    }
    memcpy(line, p, len);
    line[len] = 0;
    p += len + (nl != NULL);
    char *hash = strchr(line, '#');
    if (hash) *hash = 0;
    char *s = trim(line);
    if (!*s) continue;
    char *eq = strchr(s, '=');
    if (!eq) {
      snprintf(errmsg, KVS_CONF_ERRMSG, "%s:%u: expected 'key = value'", name, lineno);
      return -EINVAL;
    }
    *eq = 0;
    char *key = trim(s), *val = trim(eq + 1);
    if (!*key) {
      snprintf(errmsg, KVS_CONF_ERRMSG, "%s:%u: missing key", name, lineno);
      return -EINVAL;
    }
    if (kvs__config_set(c, key, val, why) < 0) {
      snprintf(errmsg, KVS_CONF_ERRMSG, "%s:%u: %.200s", name, lineno, why);
      return -EINVAL;
    }
    if (strcmp(key, "pfn") == 0) pfn_line = lineno;
    if (strcmp(key, "group_size") == 0) group_line = lineno;
  }
  if (kvs__config_check(c, why) < 0) {
    unsigned l = pfn_line > group_line ? pfn_line : group_line;
    snprintf(errmsg, KVS_CONF_ERRMSG, "%s:%u: %.200s", name, l, why);
    return -EINVAL;
  }
  return 0;
}

int kvs__config_load(kvs__config *c, const char *path, char *errmsg)
{
  FILE *f = fopen(path, "re");
  if (!f) {
    int e = errno;
    snprintf(errmsg, KVS_CONF_ERRMSG, "%s: %s", path, strerror(e));
    return -e;
  }
  size_t cap = 4096, len = 0;
  char *buf = malloc(cap);
  while (buf) {
    size_t n = fread(buf + len, 1, cap - len - 1, f);
    len += n;
    if (n == 0) break;
    if (cap - len - 1 == 0) {
      if (cap >= (1u << 20)) { /* a config file is never this big */
        free(buf); fclose(f);
        snprintf(errmsg, KVS_CONF_ERRMSG, "%s: file larger than 1 MiB", path);
        return -EFBIG;
      }
      char *nb = realloc(buf, cap * 2);
      if (!nb) { free(buf); buf = NULL; break; }
      buf = nb;
      cap *= 2;
    }
  }
  int rerr = ferror(f);
  fclose(f);
  if (!buf) { snprintf(errmsg, KVS_CONF_ERRMSG, "%s: out of memory", path); return -ENOMEM; }
  if (rerr) { free(buf); snprintf(errmsg, KVS_CONF_ERRMSG, "%s: read error", path); return -EIO; }
  buf[len] = 0;
  if (memchr(buf, 0, len)) {
    free(buf);
    snprintf(errmsg, KVS_CONF_ERRMSG, "%s: contains a NUL byte", path);
    return -EINVAL;
  }
  int r = kvs__config_parse(c, buf, path, errmsg);
  free(buf);
  return r;
}

void kvs__config_defaults(kvs__config *c)
{
  char err[KVS_CONF_ERRMSG];
  memset(c, 0, sizeof *c);
  /* Values the embedded file does not set. */
  /* the one definition of the default path is in kvsink.h */
  snprintf(c->socket, sizeof c->socket, "%s", KVS_DEFAULT_SOCKET);
  c->socket_mode = 0660;
  c->admin_socket_mode = 0600;
  c->device = KVS_DEVICE_AUTO;
  c->policy = KVS_POLICY_KVSINK;
  c->log_level = KVS_LOG_NOTICE;
  c->max_pending_tokens = KVS_STORE_MAX_PENDING; /* the store's default, one definition */
  if (kvs__config_parse(c, kvs__default_conf, "default.conf", err) < 0) {
    /* Only a broken build gets here; test_config checks the file parses. */
    fprintf(stderr, "kvsinkd: embedded %s\n", err);
    abort();
  }
}

uint32_t kvs__config_busy_poll(const kvs__config *c, int gpu_pools)
{
  if (!c->busy_poll_auto) return c->busy_poll_us;
  return gpu_pools ? KVS_BUSY_POLL_GPU_US : 0;
}

int kvs__config_admin_path(const kvs__config *c, char out[108])
{
  if (strcmp(c->admin_socket, "none") == 0) return -ENOENT;
  if (c->admin_socket[0]) {
    memcpy(out, c->admin_socket, sizeof c->admin_socket);
    return 0;
  }
  size_t n = strlen(c->socket);
  if (n > 5 && strcmp(c->socket + n - 5, ".sock") == 0) n -= 5;
  int w = snprintf(out, 108, "%.*s%s", (int)n, c->socket,
                   n < strlen(c->socket) ? ".admin.sock" : ".admin");
  return w < 0 || w >= 108 ? -ENAMETOOLONG : 0;
}

int kvs__config_metrics_addr(const char *v, struct sockaddr_storage *out)
{
  if (!v[0] || strcmp(v, "none") == 0) return -ENOENT;
  char host[64];
  const char *colon = strrchr(v, ':');
  if (!colon || colon == v || (size_t)(colon - v) >= sizeof host) return -EINVAL;
  uint32_t port;
  if (parse_u32(colon + 1, 0, 65535, &port) < 0) return -EINVAL; /* 0: any free port */
  memset(out, 0, sizeof *out);
  if (v[0] == '[') {
    if (colon[-1] != ']' || colon - v < 3) return -EINVAL;
    memcpy(host, v + 1, (size_t)(colon - v - 2));
    host[colon - v - 2] = 0;
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)out;
    a->sin6_family = AF_INET6;
    a->sin6_port = htons((uint16_t)port);
    return inet_pton(AF_INET6, host, &a->sin6_addr) == 1 ? 0 : -EINVAL;
  }
  memcpy(host, v, (size_t)(colon - v));
  host[colon - v] = 0;
  struct sockaddr_in *a = (struct sockaddr_in *)out;
  a->sin_family = AF_INET;
  a->sin_port = htons((uint16_t)port);
  return inet_pton(AF_INET, host, &a->sin_addr) == 1 ? 0 : -EINVAL;
}
