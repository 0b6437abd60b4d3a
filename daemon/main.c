/* SPDX-License-Identifier: MIT */
/* kvsinkd: parse arguments, load the config, run the loop. */
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/config.h"
#include "daemon/log.h"
#include "daemon/server.h"

static void usage(FILE *f)
{
  kvs__config d;
  kvs__config_defaults(&d);
  char adm[108] = "";
  kvs__config_admin_path(&d, adm);
  fprintf(f,
          "usage: kvsinkd [OPTIONS]\n"
          "       kvsinkd --check-config FILE\n"
          "options (they override the configuration file):\n"
          "  -c, --config FILE       configuration (default: built-in, see kvsinkd.conf(5))\n"
          "  -s, --socket PATH       data socket (default %s;\n"
          "                          admin socket next to it: %s)\n"
          "  -p, --pool-size BYTES   block pool, K/M/G suffixes (default %lluM)\n"
          "  -d, --device DEV        auto, host, all or cuda:N[,cuda:M...] (default auto)\n"
          "  -l, --log-level LEVEL   debug, info, notice, warning, err (default notice)\n"
          "  -f, --foreground        accepted, no effect: kvsinkd never forks\n"
          "  -C, --check-config FILE validate FILE, print ok or the error; exit 0 or 1\n"
          "  -V, --version           print the version\n"
          "  -h, --help              this text\n"
          "exit status: 0 clean stop, 1 configuration or start-up error, 2 usage error.\n"
          "See kvsinkd(8).\n",
          d.socket, adm, (unsigned long long)(d.pool_size >> 20));
}

/* Memory a request frees stays in the heap for the next one. By default
 * glibc maps allocations over 128 KiB (a layer's 16-bit residual is 2 x G
 * rows, 128 KiB at 1,024 channels; a put's tiles are megabytes) with mmap,
 * and returns the top of the heap to the kernel past 128 KiB free; every
 * group a decode step completes then frees them, and the next steps fault
 * the pages in again (zeroed, about a microsecond each): most of the
 * spike every G-th token, and faults on ordinary puts after it. The
 * thresholds below keep up to 64 MiB of free memory at the top of the
 * heap; allocations over 32 MiB still come from mmap. */
static void malloc_tuning(void)
{
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
}

int main(int argc, char **argv)
{
  static const struct option opts[] = {
      {"foreground", no_argument, 0, 'f'},  {"socket", required_argument, 0, 's'},
      {"config", required_argument, 0, 'c'}, {"pool-size", required_argument, 0, 'p'},
      {"check-config", required_argument, 0, 'C'}, {"log-level", required_argument, 0, 'l'},
      {"device", required_argument, 0, 'd'}, {"help", no_argument, 0, 'h'},
      {"version", no_argument, 0, 'V'},      {0, 0, 0, 0}};
  static kvs__server srv;
  const char *check = NULL;
  char err[KVS_CONF_ERRMSG];
  kvs__config_defaults(&srv.overrides);
  malloc_tuning();
  int o;
  /* --foreground is accepted for scripts that pass it: kvsinkd never
   * forks (systemd Type=notify runs it in the foreground too). */
  opterr = 0; /* our messages name the option */
  while ((o = getopt_long(argc, argv, "fs:c:p:C:l:d:hV", opts, NULL)) != -1) {
    const char *key = NULL;
    unsigned bit = 0;
    switch (o) {
    case 'f': break;
    case 's': key = "socket"; bit = KVS_OVR_SOCKET; break;
    case 'p': key = "pool_size"; bit = KVS_OVR_POOL; break;
    case 'l': key = "log_level"; bit = KVS_OVR_LOG; break;
    case 'd': key = "device"; bit = KVS_OVR_DEVICE; break;
    case 'c': srv.config_path = optarg; break;
    case 'C': check = optarg; break;
    case 'h': usage(stdout); return 0;
    case 'V': printf("kvsinkd %s\n", PACKAGE_VERSION); return 0;
    default:
      if (optopt && strchr("scpCld", optopt))
        fprintf(stderr, "kvsinkd: option '%s' needs a value\n", argv[optind - 1]);
      else
        fprintf(stderr, "kvsinkd: unknown option '%s'\n", argv[optind - 1]);
      fprintf(stderr, "Try 'kvsinkd --help'.\n");
      return 2;
    }
    if (key) {
      if (kvs__config_set(&srv.overrides, key, optarg, err) < 0) {
        fprintf(stderr, "kvsinkd: --%s\n", err);
        return 2;
      }
      srv.override_mask |= bit;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "kvsinkd: unexpected argument '%s'\nTry 'kvsinkd --help'.\n", argv[optind]);
    return 2;
  }
  if (check) {
    kvs__config c;
    kvs__config_defaults(&c);
    if (kvs__config_load(&c, check, err) < 0) {
      printf("%s\n", err);
      return 1;
    }
    printf("ok\n");
    return 0;
  }
  kvs__log_init();
  kvs__config_defaults(&srv.cfg);
  if (srv.config_path && kvs__config_load(&srv.cfg, srv.config_path, err) < 0) {
    kvs__err("%s", err);
    return 1;
  }
  /* same merge as a reload */
  if (srv.override_mask & KVS_OVR_SOCKET) memcpy(srv.cfg.socket, srv.overrides.socket, sizeof srv.cfg.socket);
  if (srv.override_mask & KVS_OVR_POOL) srv.cfg.pool_size = srv.overrides.pool_size;
  if (srv.override_mask & KVS_OVR_LOG) srv.cfg.log_level = srv.overrides.log_level;
  if (srv.override_mask & KVS_OVR_DEVICE) {
    srv.cfg.device = srv.overrides.device;
    srv.cfg.devices = srv.overrides.devices;
  }
  kvs__log_set_level(srv.cfg.log_level);

  uv_loop_t *loop = uv_default_loop();
  if (kvs__server_start(&srv, loop) < 0) {
    kvs__server_close(&srv);
    return 1;
  }
  uv_run(loop, UV_RUN_DEFAULT);
  kvs__server_close(&srv);
  uv_loop_close(loop);
  kvs__notice("stopped");
  return 0;
}
