/* kvsinkctl: inspect and steer a running kvsinkd over its socket.
 * It never says hello: the daemon answers ping/stats/list/evict/reload/
 * profiles on a bare connection. */
#include <errno.h>
#include <inttypes.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client/conn.h"

enum { EXIT_DAEMON = 1, EXIT_USAGE = 2, EXIT_CONNECT = 3 };

static void usage(FILE *f)
{
  fprintf(f, "usage: kvsinkctl [--socket PATH] ping | stats [--json] | list [--json] |\n"
             "                 evict | reload | profiles [--json] |\n"
             "                 profiles calibrate KVSINK-CALIBRATE-ARGS...\n");
}

/* "profiles calibrate" runs kvsink-calibrate: the one installed next to
 * kvsinkctl (same build or prefix) if there is one, else from PATH. */
static int calibrate(char **argv)
{
  char self[4096], path[4096 + 32];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n > 0) {
    self[n] = 0;
    char *slash = strrchr(self, '/');
    if (slash) {
      *slash = 0;
      size_t len = strlen(self); /* uninstalled libtool binary: .libs/ */
      if (len >= 6 && strcmp(self + len - 6, "/.libs") == 0)
        self[len - 6] = 0;
      snprintf(path, sizeof path, "%s/kvsink-calibrate", self);
      if (access(path, X_OK) == 0) {
        argv[0] = path;
        execv(path, argv);
      }
    }
  }
  argv[0] = "kvsink-calibrate";
  execvp(argv[0], argv);
  fprintf(stderr, "kvsinkctl: cannot run kvsink-calibrate: %s\n", strerror(errno));
  return EXIT_USAGE;
}

static void json_str(const char *s, size_t n)
{
  putchar('"');
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch == '"' || ch == '\\')
      printf("\\%c", ch);
    else if (ch < 0x20)
      printf("\\u%04x", ch);
    else
      putchar(ch);
  }
  putchar('"');
}

/* msgpack -> JSON; binary and extension values become hex strings, map
 * keys that are not strings are printed as strings. */
static void json_obj(const msgpack_object *o, int depth)
{
  char tmp[64];
  if (depth > 32) {
    fputs("null", stdout);
    return;
  }
  switch (o->type) {
  case MSGPACK_OBJECT_NIL: fputs("null", stdout); break;
  case MSGPACK_OBJECT_BOOLEAN: fputs(o->via.boolean ? "true" : "false", stdout); break;
  case MSGPACK_OBJECT_POSITIVE_INTEGER: printf("%" PRIu64, o->via.u64); break;
  case MSGPACK_OBJECT_NEGATIVE_INTEGER: printf("%" PRId64, o->via.i64); break;
  case MSGPACK_OBJECT_FLOAT32:
  case MSGPACK_OBJECT_FLOAT64:
    if (o->via.f64 != o->via.f64 || o->via.f64 > 1e308 || o->via.f64 < -1e308)
      fputs("null", stdout);
    else
      printf("%.17g", o->via.f64);
    break;
  case MSGPACK_OBJECT_STR: json_str(o->via.str.ptr, o->via.str.size); break;
  case MSGPACK_OBJECT_BIN:
  case MSGPACK_OBJECT_EXT: {
    const unsigned char *p = (const unsigned char *)(o->type == MSGPACK_OBJECT_BIN ? o->via.bin.ptr : o->via.ext.ptr);
    uint32_t n = o->type == MSGPACK_OBJECT_BIN ? o->via.bin.size : o->via.ext.size;
    putchar('"');
    for (uint32_t i = 0; i < n; i++)
      printf("%02x", p[i]);
    putchar('"');
    break;
  }
  case MSGPACK_OBJECT_ARRAY:
    putchar('[');
    for (uint32_t i = 0; i < o->via.array.size; i++) {
      if (i)
        putchar(',');
      json_obj(&o->via.array.ptr[i], depth + 1);
    }
    putchar(']');
    break;
  case MSGPACK_OBJECT_MAP:
    putchar('{');
    for (uint32_t i = 0; i < o->via.map.size; i++) {
      const msgpack_object *k = &o->via.map.ptr[i].key;
      if (i)
        putchar(',');
      if (k->type == MSGPACK_OBJECT_STR) {
        json_str(k->via.str.ptr, k->via.str.size);
      } else {
        /* JSON keys are strings: print the key's JSON text as one */
        if (k->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
          snprintf(tmp, sizeof tmp, "%" PRIu64, k->via.u64);
        else if (k->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
          snprintf(tmp, sizeof tmp, "%" PRId64, k->via.i64);
        else
          snprintf(tmp, sizeof tmp, "key%u", i);
        json_str(tmp, strlen(tmp));
      }
      putchar(':');
      json_obj(&o->via.map.ptr[i].val, depth + 1);
    }
    putchar('}');
    break;
  default: fputs("null", stdout); break;
  }
}

/* Readable form of the items blob: one line per element of the top array
 * (key=value pairs for maps), or the JSON text of anything else. */
static void text_obj(const msgpack_object *o)
{
  if (o->type != MSGPACK_OBJECT_ARRAY) {
    json_obj(o, 0);
    putchar('\n');
    return;
  }
  if (o->via.array.size == 0)
    puts("(none)");
  for (uint32_t i = 0; i < o->via.array.size; i++) {
    const msgpack_object *e = &o->via.array.ptr[i];
    if (e->type != MSGPACK_OBJECT_MAP) {
      json_obj(e, 0);
      putchar('\n');
      continue;
    }
    for (uint32_t j = 0; j < e->via.map.size; j++) {
      const msgpack_object *k = &e->via.map.ptr[j].key;
      const msgpack_object *v = &e->via.map.ptr[j].val;
      if (j)
        putchar(' ');
      if (k->type == MSGPACK_OBJECT_STR)
        printf("%.*s=", (int)k->via.str.size, k->via.str.ptr);
      if (v->type == MSGPACK_OBJECT_STR)
        printf("%.*s", (int)v->via.str.size, v->via.str.ptr);
      else
        json_obj(v, 1);
    }
    putchar('\n');
  }
}

static int print_items(const kvs__rep *rep, int json)
{
  msgpack_zone zone;
  msgpack_object obj;
  size_t off = 0;
  if (!rep->items || rep->items_len == 0) {
    puts(json ? "[]" : "(none)");
    return 0;
  }
  msgpack_zone_init(&zone, 4096);
  int r = msgpack_unpack(rep->items, rep->items_len, &off, &zone, &obj);
  if (r != MSGPACK_UNPACK_SUCCESS && r != MSGPACK_UNPACK_EXTRA_BYTES) {
    msgpack_zone_destroy(&zone);
    fprintf(stderr, "kvsinkctl: malformed items in reply\n");
    return EXIT_DAEMON;
  }
  if (json) {
    json_obj(&obj, 0);
    putchar('\n');
  } else {
    text_obj(&obj);
  }
  msgpack_zone_destroy(&zone);
  return 0;
}

static double ratio(uint64_t a, uint64_t b)
{
  return b ? (double)a / (double)b : 0.0;
}

#define STAT_FIELDS(X) \
  X(pool_bytes) X(pool_used_bytes) X(blocks_total) X(blocks_used) \
  X(blocks_pinned) X(sink_rows_used) X(lookups) X(lookup_hit_tokens) \
  X(lookup_tokens) X(puts) X(gets) X(evictions) X(put_nospc) X(bytes_in) \
  X(bytes_out) X(stored_raw_bytes) X(stored_bytes) X(sinks_found) \
  X(sinks_dropped) X(outliers_kept) X(sessions) X(sessions_total) X(seqs) \
  X(uptime_s)

static void print_stats(const kvs__stats *s, int json)
{
  double hit = ratio(s->lookup_hit_tokens, s->lookup_tokens);
  double cr = ratio(s->stored_raw_bytes, s->stored_bytes);
  if (json) {
    putchar('{');
#define J(f) printf("\"" #f "\":%" PRIu64 ",", s->f);
    STAT_FIELDS(J)
#undef J
    printf("\"spaces\":%u,\"backend\":", s->spaces);
    json_str(s->backend, strnlen(s->backend, sizeof s->backend));
    printf(",\"hit_rate\":%.6f,\"compression_ratio\":%.6f", hit, cr);
    if (s->n_devices) {
      printf(",\"devices\":[");
      for (uint32_t i = 0; i < s->n_devices && i < KVS_MAX_STATS_DEVICES; i++) {
        const kvs__dev_stats *d = &s->devices[i];
        printf("%s{\"device\":", i ? "," : "");
        json_str(d->device, strnlen(d->device, sizeof d->device));
        printf(",\"pool_bytes\":%" PRIu64 ",\"pool_used_bytes\":%" PRIu64
               ",\"blocks_used\":%" PRIu64 ",\"puts\":%" PRIu64 ",\"gets\":%" PRIu64
               ",\"bytes_in\":%" PRIu64 ",\"bytes_out\":%" PRIu64 ",\"sessions\":%" PRIu64 "}",
               d->pool_bytes, d->pool_used_bytes, d->blocks_used, d->puts, d->gets, d->bytes_in,
               d->bytes_out, d->sessions);
      }
      putchar(']');
    }
    printf("}\n");
    return;
  }
  printf("backend        %.*s\n", (int)sizeof s->backend, s->backend);
  printf("pool           %" PRIu64 " / %" PRIu64 " bytes used (%.1f%%)\n",
         s->pool_used_bytes, s->pool_bytes, 100.0 * ratio(s->pool_used_bytes, s->pool_bytes));
  printf("blocks         %" PRIu64 " used, %" PRIu64 " pinned, %" PRIu64 " total\n",
         s->blocks_used, s->blocks_pinned, s->blocks_total);
  printf("sink rows      %" PRIu64 "\n", s->sink_rows_used);
  printf("lookups        %" PRIu64 ", hit rate %.1f%% (%" PRIu64 " of %" PRIu64 " tokens)\n",
         s->lookups, 100.0 * hit, s->lookup_hit_tokens, s->lookup_tokens);
  printf("puts / gets    %" PRIu64 " / %" PRIu64 " (%" PRIu64 " refused: pool full)\n",
         s->puts, s->gets, s->put_nospc);
  printf("evictions      %" PRIu64 "\n", s->evictions);
  printf("bytes in/out   %" PRIu64 " / %" PRIu64 "\n", s->bytes_in, s->bytes_out);
  printf("compression    %.2fx (%" PRIu64 " raw bytes stored as %" PRIu64 ")\n",
         cr, s->stored_raw_bytes, s->stored_bytes);
  printf("sinks          %" PRIu64 " found, %" PRIu64 " dropped\n", s->sinks_found, s->sinks_dropped);
  printf("outliers kept  %" PRIu64 "\n", s->outliers_kept);
  printf("sessions       %" PRIu64 " now, %" PRIu64 " total; %" PRIu64 " seqs; %u spaces\n",
         s->sessions, s->sessions_total, s->seqs, s->spaces);
  printf("uptime         %" PRIu64 " s\n", s->uptime_s);
  for (uint32_t i = 0; i < s->n_devices && i < KVS_MAX_STATS_DEVICES; i++) {
    const kvs__dev_stats *d = &s->devices[i];
    printf("%-14.*s pool %" PRIu64 " / %" PRIu64 " bytes, %" PRIu64 " blocks, puts / gets %" PRIu64
           " / %" PRIu64 ", bytes in/out %" PRIu64 " / %" PRIu64 ", %" PRIu64 " sessions\n",
           (int)sizeof d->device, d->device, d->pool_used_bytes, d->pool_bytes, d->blocks_used,
           d->puts, d->gets, d->bytes_in, d->bytes_out, d->sessions);
  }
}

int main(int argc, char **argv)
{
  const char *path = NULL;
  int i = 1, json = 0;
  for (; i < argc && argv[i][0] == '-'; i++) {
    if (strcmp(argv[i], "--socket") == 0 && i + 1 < argc) {
      path = argv[++i];
    } else if (strncmp(argv[i], "--socket=", 9) == 0) {
      path = argv[i] + 9;
    } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      usage(stdout);
      return 0;
    } else {
      usage(stderr);
      return EXIT_USAGE;
    }
  }
  if (i >= argc) {
    usage(stderr);
    return EXIT_USAGE;
  }
  const char *cmd = argv[i++];
  if (strcmp(cmd, "profiles") == 0 && i < argc && strcmp(argv[i], "calibrate") == 0)
    return calibrate(argv + i); /* argv[i] becomes the program name */
  for (; i < argc; i++) {
    if (strcmp(argv[i], "--json") == 0) {
      json = 1;
    } else {
      usage(stderr);
      return EXIT_USAGE;
    }
  }
  kvs__op op;
  int json_ok = 1;
  if (strcmp(cmd, "ping") == 0) { op = KVS_OP_PING; json_ok = 0; }
  else if (strcmp(cmd, "stats") == 0) op = KVS_OP_STATS;
  else if (strcmp(cmd, "list") == 0) op = KVS_OP_LIST;
  else if (strcmp(cmd, "evict") == 0) { op = KVS_OP_EVICT; json_ok = 0; }
  else if (strcmp(cmd, "reload") == 0) { op = KVS_OP_RELOAD; json_ok = 0; }
  else if (strcmp(cmd, "profiles") == 0) op = KVS_OP_PROFILES;
  else {
    usage(stderr);
    return EXIT_USAGE;
  }
  if (json && !json_ok) {
    usage(stderr);
    return EXIT_USAGE;
  }

  kvs__conn conn;
  int r = kvs__conn_open(&conn, path);
  if (r < 0) {
    fprintf(stderr, "kvsinkctl: cannot connect to %s: %s\n",
            kvs__conn_default_path(path), strerror(-r));
    return EXIT_CONNECT;
  }
  kvs__req req;
  kvs__rep rep;
  memset(&req, 0, sizeof req);
  req.op = op;
  r = kvs__conn_call(&conn, &req, &rep, NULL);
  int rc = 0;
  if (r < 0) {
    fprintf(stderr, "kvsinkctl: %s: %s (%s)\n", cmd, conn.errmsg, kvs_strerror(r));
    rc = (r == -ECONNRESET || r == -EPIPE) ? EXIT_CONNECT : EXIT_DAEMON;
  } else if (op == KVS_OP_PING) {
    puts("ok");
  } else if (op == KVS_OP_STATS) {
    print_stats(&rep.stats, json);
  } else if (op == KVS_OP_EVICT) {
    printf("evicted %" PRIu64 " blocks\n", rep.evicted);
  } else if (op == KVS_OP_RELOAD) {
    puts("reloaded");
  } else {
    rc = print_items(&rep, json);
  }
  if (r == 0 || rep.err < 0)
    kvs__rep_free(&rep);
  kvs__conn_close(&conn);
  return rc;
}
