/* SPDX-License-Identifier: MIT */
/* kvsinkctl: inspect and steer a running kvsinkd through libkvsink's admin
 * API (<kvsink.h> only). It never says hello. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <kvsink.h>

/* Exit codes (kvsinkctl(1)). */
enum { EXIT_DAEMON = 1, EXIT_USAGE = 2, EXIT_CONNECT = 3 };

static void usage(FILE *f)
{
  fprintf(f,
          "usage: kvsinkctl [OPTIONS] COMMAND\n"
          "commands:\n"
          "  ping                 round trip, prints ok\n"
          "  stats [--json]       counters (a data-socket client sees its namespace only)\n"
          "  list [--json]        cache spaces (namespace, model, settings, blocks)\n"
          "  profiles [--json]    loaded sink profiles (admin)\n"
          "  evict                drop every unreferenced block (admin)\n"
          "  reload               reread the configuration, as SIGHUP (admin)\n"
          "  metrics              Prometheus text format, as metrics_listen serves (admin)\n"
          "  profiles calibrate ARGS...  run kvsink-calibrate\n"
          "options:\n"
          "  --admin-socket PATH  admin socket (default $KVSINK_ADMIN_SOCKET, else %s)\n"
          "  --socket PATH        talk to the data socket instead, with a client's view\n"
          "  --json               JSON output (stats, list, profiles)\n"
          "  --version            print the version\n"
          "  -h, --help           this text\n"
          "exit status: 0 ok, 1 the daemon refused, 2 usage, 3 cannot connect.\n"
          "See kvsinkctl(1).\n",
          KVS_DEFAULT_ADMIN_SOCKET);
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
      if (len >= 6 && strcmp(self + len - 6, "/.libs") == 0) self[len - 6] = 0;
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

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 if invalid
 * (overlong forms, surrogates and values over U+10FFFF are invalid). */
static size_t utf8_len(const unsigned char *s, size_t n)
{
  unsigned c = s[0];
  size_t len;
  unsigned min, cp;
  if (c < 0x80) return 1;
  if ((c & 0xe0) == 0xc0) { len = 2; min = 0x80; cp = c & 0x1f; }
  else if ((c & 0xf0) == 0xe0) { len = 3; min = 0x800; cp = c & 0x0f; }
  else if ((c & 0xf8) == 0xf0) { len = 4; min = 0x10000; cp = c & 0x07; }
  else return 0;
  if (len > n) return 0;
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xc0) != 0x80) return 0;
    cp = cp << 6 | (s[i] & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return len;
}

/* A JSON string: escapes quotes, backslashes and control bytes; bytes that
 * are not valid UTF-8 become U+FFFD, so the output always parses. */
static void json_str(const char *str, size_t n)
{
  const unsigned char *s = (const unsigned char *)str;
  putchar('"');
  for (size_t i = 0; i < n;) {
    unsigned char ch = s[i];
    if (ch == '"' || ch == '\\') {
      printf("\\%c", ch);
      i++;
    } else if (ch < 0x20 || ch == 0x7f) {
      printf("\\u%04x", ch);
      i++;
    } else {
      size_t l = utf8_len(s + i, n - i);
      if (l == 0) {
        fputs("\\ufffd", stdout);
        i++;
      } else {
        fwrite(s + i, 1, l, stdout);
        i += l;
      }
    }
  }
  putchar('"');
}

static void json_cstr(const char *s, size_t cap) { json_str(s, strnlen(s, cap)); }

/* Text output: the same rule as JSON minus the quotes, so a hostile model
 * id cannot drive the terminal. */
static void text_str(const char *str, size_t cap)
{
  const unsigned char *s = (const unsigned char *)str;
  size_t n = strnlen(str, cap);
  for (size_t i = 0; i < n;) {
    size_t l = s[i] < 0x20 || s[i] == 0x7f ? 0 : utf8_len(s + i, n - i);
    if (l == 0) {
      putchar('?');
      i++;
    } else {
      fwrite(s + i, 1, l, stdout);
      i += l;
    }
  }
}

static double ratio(uint64_t a, uint64_t b) { return b ? (double)a / (double)b : 0.0; }

/* The counters of a stats object, without its braces. */
static void json_fields(const kvs_stats *s)
{
#define J(f) printf("\"" #f "\":%" PRIu64 ",", s->f);
  KVS_STATS_U64_FIELDS(J)
#undef J
  printf("\"spaces\":%u,\"backend\":", s->spaces);
  json_cstr(s->backend, sizeof s->backend);
}

/* One line per pool (each GPU's, the host's): where the K/V went. */
static void print_pools(const kvs_pool_stats *v, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    const kvs_stats *s = &v[i].stats;
    fputs("pool ", stdout);
    text_str(v[i].device, sizeof v[i].device);
    if (v[i].uuid[0]) {
      putchar(' ');
      text_str(v[i].uuid, sizeof v[i].uuid);
    }
    printf(": %" PRIu64 " / %" PRIu64 " bytes used (%.1f%%), %" PRIu64 " blocks (%" PRIu64
           " pinned), puts / gets %" PRIu64 " / %" PRIu64 ", bytes in/out %" PRIu64 " / %" PRIu64
           ", %" PRIu64 " seqs\n",
           s->pool_used_bytes, s->pool_bytes, 100.0 * ratio(s->pool_used_bytes, s->pool_bytes),
           s->blocks_used, s->blocks_pinned, s->puts, s->gets, s->bytes_in, s->bytes_out, s->seqs);
  }
}

static void print_stats(const kvs_stats *s, const kvs_pool_stats *pv, size_t np, int json)
{
  double hit = ratio(s->lookup_hit_tokens, s->lookup_tokens);
  double cr = ratio(s->stored_raw_bytes, s->stored_bytes);
  if (json) {
    putchar('{');
    json_fields(s);
    printf(",\"hit_rate\":%.6f,\"compression_ratio\":%.6f,\"pools\":[", hit, cr);
    for (size_t i = 0; i < np; i++) {
      printf("%s{\"device\":", i ? "," : "");
      json_cstr(pv[i].device, sizeof pv[i].device);
      fputs(",\"uuid\":", stdout);
      json_cstr(pv[i].uuid, sizeof pv[i].uuid);
      putchar(',');
      json_fields(&pv[i].stats);
      putchar('}');
    }
    puts("]}");
    return;
  }
  fputs("backend        ", stdout);
  text_str(s->backend, sizeof s->backend);
  putchar('\n');
  printf("pool           %" PRIu64 " / %" PRIu64 " bytes used (%.1f%%)\n",
         s->pool_used_bytes, s->pool_bytes, 100.0 * ratio(s->pool_used_bytes, s->pool_bytes));
  printf("pool free      %" PRIu64 " bytes in whole chunks (any block size)\n",
         s->pool_free_bytes);
  printf("blocks         %" PRIu64 " held, %" PRIu64 " pinned\n", s->blocks_used,
         s->blocks_pinned);
  printf("residual       %" PRIu64 " / %" PRIu64 " bytes (16-bit rows of partial groups)\n",
         s->residual_bytes, s->residual_limit_bytes);
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
  if (s->remote_connected || s->remote_errors || s->remote_dropped || s->remote_bytes_out ||
      s->remote_latency_count)
    printf("redis tier     %s; %" PRIu64 " hits, %" PRIu64 " misses, %" PRIu64 " refused; "
           "%" PRIu64 " / %" PRIu64 " bytes in/out; %" PRIu64 " errors, %" PRIu64
           " timeouts, %" PRIu64 " writes dropped; %.0f us per read\n",
           s->remote_connected ? "connected" : "down", s->remote_hits, s->remote_misses,
           s->remote_rejected, s->remote_bytes_in, s->remote_bytes_out, s->remote_errors,
           s->remote_timeouts, s->remote_dropped,
           ratio(s->remote_latency_us_sum, s->remote_latency_count));
  print_pools(pv, np); /* last: one line per pool, the totals above */
}

static void print_list(const kvs_space_info *v, size_t n, int json)
{
  if (json) putchar('[');
  else if (n == 0) puts("(none)");
  for (size_t i = 0; i < n; i++) {
    const kvs_space_info *s = &v[i];
    if (json) {
      fputs(i ? ",{\"ns\":" : "{\"ns\":", stdout);
      json_cstr(s->ns, sizeof s->ns);
      fputs(",\"model\":", stdout);
      json_cstr(s->model_id, sizeof s->model_id);
      printf(",\"layers\":%u,\"kv_heads\":%u,\"head_dim\":%u,\"k_bits\":%u,\"v_bits\":%u,"
             "\"policy\":\"%s\",\"pfn\":%u,\"profile\":%s,\"blocks\":%" PRIu64
             ",\"pinned\":%" PRIu64 ",\"seqs\":%" PRIu64 ",\"fallback_sessions\":%u}",
             s->n_layers, s->n_kv_heads, s->head_dim, s->k_bits, s->v_bits,
             kvs_policy_name(s->policy), s->pfn, s->has_profile ? "true" : "false", s->blocks,
             s->pinned, s->seqs, s->fallback_sessions);
      continue;
    }
    fputs("ns=", stdout);
    text_str(s->ns, sizeof s->ns);
    fputs(" model=", stdout);
    text_str(s->model_id, sizeof s->model_id);
    printf(" layers=%u kv_heads=%u head_dim=%u k_bits=%u v_bits=%u policy=%s pfn=%u "
           "profile=%s blocks=%" PRIu64 " pinned=%" PRIu64 " seqs=%" PRIu64,
           s->n_layers, s->n_kv_heads, s->head_dim, s->k_bits, s->v_bits,
           kvs_policy_name(s->policy), s->pfn, s->has_profile ? "yes" : "no", s->blocks, s->pinned,
           s->seqs);
    if (s->fallback_sessions)
      printf(" (kvsink fell back to pfn: no profile; %u sessions)", s->fallback_sessions);
    putchar('\n');
  }
  if (json) puts("]");
}

static void print_profiles(const kvs_profile_info *v, size_t n, int json)
{
  if (json) putchar('[');
  else if (n == 0) puts("(none)");
  for (size_t i = 0; i < n; i++) {
    const kvs_profile_info *p = &v[i];
    if (json) {
      fputs(i ? ",{\"model\":" : "{\"model\":", stdout);
      json_cstr(p->model_id, sizeof p->model_id);
      printf(",\"layer\":%u,\"channels\":[", p->layer);
      for (uint32_t j = 0; j < p->n_channels; j++) printf(j ? ",%u" : "%u", p->channels[j]);
      printf("],\"tau\":%.9g,\"max_sinks\":%u,\"pfn\":%u}", p->tau, p->max_sinks, p->pfn);
      continue;
    }
    fputs("model=", stdout);
    text_str(p->model_id, sizeof p->model_id);
    printf(" layer=%u channels=", p->layer);
    for (uint32_t j = 0; j < p->n_channels; j++) printf(j ? ",%u" : "%u", p->channels[j]);
    printf(" tau=%g max_sinks=%u pfn=%u\n", p->tau, p->max_sinks, p->pfn);
  }
  if (json) puts("]");
}

/* The first word that is not an option (skipping the values of the
 * options that take one), or argc. */
static int find_command(int argc, char **argv)
{
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--") == 0) return i + 1;
    if (argv[i][0] != '-') return i;
    if (strcmp(argv[i], "--socket") == 0 || strcmp(argv[i], "--admin-socket") == 0) i++;
  }
  return argc;
}

int main(int argc, char **argv)
{
  static const struct option opts[] = {
      {"socket", required_argument, 0, 's'}, {"admin-socket", required_argument, 0, 'a'},
      {"json", no_argument, 0, 'j'},         {"version", no_argument, 0, 'V'},
      {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
  /* "profiles calibrate ARGS": everything after calibrate is its own */
  int ci = find_command(argc, argv);
  if (ci + 1 < argc && strcmp(argv[ci], "profiles") == 0 && strcmp(argv[ci + 1], "calibrate") == 0) {
    argc = ci; /* options before the command still get checked below */
    int o;
    opterr = 0;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1)
      if (o == '?') {
        fprintf(stderr, "kvsinkctl: unknown option '%s'\n", argv[optind - 1]);
        return EXIT_USAGE;
      }
    return calibrate(argv + ci + 1); /* argv[ci + 1] becomes the program name */
  }
  const char *path = NULL;
  int json = 0, o;
  opterr = 0; /* our own messages name the option */
  while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (o) {
    case 's':
    case 'a': path = optarg; break;
    case 'j': json = 1; break;
    case 'V': printf("kvsinkctl %s\n", PACKAGE_VERSION); return 0;
    case 'h': usage(stdout); return 0;
    default:
      if (optopt && strchr("sa", optopt))
        fprintf(stderr, "kvsinkctl: option '%s' needs a value\n", argv[optind - 1]);
      else
        fprintf(stderr, "kvsinkctl: unknown option '%s'\n", argv[optind - 1]);
      fprintf(stderr, "Try 'kvsinkctl --help'.\n");
      return EXIT_USAGE;
    }
  }
  if (optind >= argc) {
    fprintf(stderr, "kvsinkctl: no command given\n");
    usage(stderr);
    return EXIT_USAGE;
  }
  if (optind + 1 < argc) {
    fprintf(stderr, "kvsinkctl: unexpected argument '%s'\n", argv[optind + 1]);
    return EXIT_USAGE;
  }
  const char *cmd = argv[optind];
  static const char *const cmds[] = {"ping",  "stats",  "list",   "profiles",
                                     "evict", "reload", "metrics"};
  int k = -1;
  for (int i = 0; i < 7; i++)
    if (strcmp(cmd, cmds[i]) == 0) k = i;
  if (k < 0) {
    fprintf(stderr, "kvsinkctl: unknown command '%s'\nTry 'kvsinkctl --help'.\n", cmd);
    return EXIT_USAGE;
  }
  if (json && (k == 0 || k >= 4)) {
    fprintf(stderr, "kvsinkctl: --json is for stats, list and profiles, not %s\n", cmd);
    return EXIT_USAGE;
  }

  kvs_admin *a;
  int r = kvs_admin_connect(&a, path);
  if (r < 0) {
    const char *p = path ? path : getenv("KVSINK_ADMIN_SOCKET");
    fprintf(stderr, "kvsinkctl: cannot connect to %s: %s\n",
            p && *p ? p : KVS_DEFAULT_ADMIN_SOCKET, kvs_strerror(r));
    return EXIT_CONNECT;
  }
  uint64_t evicted = 0;
  char *text = NULL;
  kvs_stats st;
  kvs_space_info *sv = NULL;
  kvs_profile_info *pv = NULL;
  kvs_pool_stats *pools = NULL;
  size_t n = 0;
  switch (k) {
  case 0: r = kvs_admin_ping(a); break;
  case 1: r = kvs_admin_pools(a, &st, &pools, &n); break;
  case 2: r = kvs_admin_list(a, &sv, &n); break;
  case 3: r = kvs_admin_profiles(a, &pv, &n); break;
  case 4: r = kvs_admin_evict(a, &evicted); break;
  case 6: r = kvs_admin_metrics(a, &text); break;
  default: r = kvs_admin_reload(a); break;
  }
  int rc = 0;
  if (r < 0) {
    const char *m = kvs_admin_last_error(a);
    fprintf(stderr, "kvsinkctl: %s: %s (%s)\n", cmd, *m ? m : kvs_strerror(r), kvs_strerror(r));
    rc = (r == -ECONNRESET || r == -EPIPE) ? EXIT_CONNECT : EXIT_DAEMON;
  } else {
    switch (k) {
    case 0: puts("ok"); break;
    case 1: print_stats(&st, pools, n, json); break;
    case 2: print_list(sv, n, json); break;
    case 3: print_profiles(pv, n, json); break;
    case 4: printf("evicted %" PRIu64 " blocks\n", evicted); break;
    case 6: fputs(text, stdout); break;
    default: puts("reloaded"); break;
    }
    if (fflush(stdout) != 0 || ferror(stdout)) { /* a textfile collector must not get half */
      fprintf(stderr, "kvsinkctl: %s: cannot write the output\n", cmd);
      rc = EXIT_DAEMON;
    }
  }
  free(text);
  free(sv);
  free(pv);
  free(pools);
  kvs_admin_close(a);
  return rc;
}
