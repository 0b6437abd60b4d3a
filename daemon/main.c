/* kvsinkd: parse arguments, load the config, run the loop. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/config.h"
#include "daemon/log.h"
#include "daemon/server.h"

static void usage(FILE *f)
{
  fprintf(f,
          "usage: kvsinkd [--foreground] [--socket PATH] [--config FILE] [--pool-size BYTES]\n"
          "               [--log-level LEVEL] [--device auto|host|all|cuda:N[,cuda:M...]]\n"
          "       kvsinkd --check-config FILE\n");
}

int main(int argc, char **argv)
{
  static const struct option opts[] = {
      {"foreground", no_argument, 0, 'f'},  {"socket", required_argument, 0, 's'},
      {"config", required_argument, 0, 'c'}, {"pool-size", required_argument, 0, 'p'},
      {"check-config", required_argument, 0, 'C'}, {"log-level", required_argument, 0, 'l'},
      {"device", required_argument, 0, 'd'}, {"help", no_argument, 0, 'h'},
      {0, 0, 0, 0}};
  static kvs__server srv;
  const char *check = NULL;
  char err[KVS_CONF_ERRMSG];
  kvs__config_defaults(&srv.overrides);
  int o;
  /* --foreground is accepted for clarity: kvsinkd never forks (systemd
   * Type=notify runs it in the foreground too). */
  while ((o = getopt_long(argc, argv, "fs:c:p:C:l:d:h", opts, NULL)) != -1) {
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
    default: usage(stderr); return 2;
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
    usage(stderr);
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
