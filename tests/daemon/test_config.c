/* SPDX-License-Identifier: MIT */
/* kvsinkd.conf parser: every key, overrides, every error with its line. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <kvsink.h>
#include "daemon/config.h"
#include "daemon/log.h"
#include "store/store.h"

static kvs__config c;
static char err[KVS_CONF_ERRMSG];

static void setup(void)
{
  kvs__config_defaults(&c);
  err[0] = 0;
}

START_TEST(defaults_embedded)
{
  ck_assert_str_eq(c.socket, KVS_DEFAULT_SOCKET);
  ck_assert_uint_eq(c.socket_mode, 0660);
  ck_assert_uint_eq(c.admin_socket_mode, 0600);
  char adm[108];
  ck_assert_int_eq(kvs__config_admin_path(&c, adm), 0);
  ck_assert_str_eq(adm, KVS_DEFAULT_ADMIN_SOCKET);
  ck_assert_uint_eq(c.pool_size, 1ull << 30);
  ck_assert_int_eq(c.device, KVS_DEVICE_AUTO);
  ck_assert_uint_eq(c.k_bits, 2);
  ck_assert_uint_eq(c.v_bits, 2);
  ck_assert_uint_eq(c.group_size, 32);
  ck_assert_uint_eq(c.pfn, 1);
  ck_assert_int_eq(c.policy, KVS_POLICY_KVSINK);
  ck_assert_uint_eq(c.max_sessions, 256);
  ck_assert_uint_eq(c.device_staging, 4ull << 30);
  ck_assert_int_eq(c.log_level, KVS_LOG_NOTICE);
  ck_assert_uint_eq(c.n_shared_uids, 0);
  /* one definition: the store's default, not a second number in default.conf */
  ck_assert_uint_eq(c.max_pending_tokens, KVS_STORE_MAX_PENDING);
  ck_assert_uint_eq(KVS_STORE_MAX_PENDING, 65536);
  /* busy-polling by default only where the pools are GPU ones */
  ck_assert_int_eq(c.busy_poll_auto, 1);
  ck_assert_uint_eq(kvs__config_busy_poll(&c, 0), 0);
  ck_assert_uint_eq(kvs__config_busy_poll(&c, 1), KVS_BUSY_POLL_GPU_US);
}
END_TEST

START_TEST(every_key)
{
  const char *t =
      "# comment\n"
      "\n"
      "socket = /tmp/x.sock  # trailing comment\n"
      "socket_group = kvsink\n"
      "socket_mode = 0600\n"
      "pool_size = 64M\n"
      "device = cuda:1\n"
      "k_bits = 4\n"
      "v_bits = 8\n"
      "group_size = 16\n"
      "v_group_size = 64\n"
      "pfn = 4\n"
      "policy = pfn\n"
      "outliers = 0.005\n"
      "profiles_dir = /tmp/profiles\n"
      "shared_namespace_uids = 0, 1000,1001\n"
      "max_segment_size = 2G\n"
      "device_staging = 512M\n"
      "max_sessions = 9\n"
      "max_pending_tokens = 100\n"
      "residual_bytes = 256M\n"
      "residual_seq_bytes = 8M\n"
      "admin_socket_mode = 0640\n"
      "admin_socket_group = wheel\n"
      "admin_group = kvsadm\n"
      "\tlog_level=debug\r\n";
  ck_assert_int_eq(kvs__config_parse(&c, t, "t", err), 0);
  ck_assert_str_eq(c.socket, "/tmp/x.sock");
  ck_assert_uint_eq(c.admin_socket_mode, 0640);
  ck_assert_str_eq(c.admin_socket_group, "wheel");
  ck_assert_str_eq(c.admin_group, "kvsadm");
  char adm[108];
  ck_assert_int_eq(kvs__config_admin_path(&c, adm), 0);
  ck_assert_str_eq(adm, "/tmp/x.admin.sock"); /* next to the socket */
  ck_assert_int_eq(kvs__config_parse(&c, "socket = /tmp/k\n", "t", err), 0);
  ck_assert_int_eq(kvs__config_admin_path(&c, adm), 0);
  ck_assert_str_eq(adm, "/tmp/k.admin");
  ck_assert_int_eq(kvs__config_parse(&c, "admin_socket = /a/b.sock\n", "t", err), 0);
  ck_assert_int_eq(kvs__config_admin_path(&c, adm), 0);
  ck_assert_str_eq(adm, "/a/b.sock");
  ck_assert_int_eq(kvs__config_parse(&c, "admin_socket = none\n", "t", err), 0);
  ck_assert_int_eq(kvs__config_admin_path(&c, adm), -ENOENT);
  ck_assert_int_eq(kvs__config_parse(&c, "admin_socket = /tmp/x.sock\n", "t", err), 0);
  ck_assert_str_eq(c.socket_group, "kvsink");
  ck_assert_uint_eq(c.socket_mode, 0600);
  ck_assert_uint_eq(c.pool_size, 64ull << 20);
  ck_assert_int_eq(c.device, 1);
  ck_assert_uint_eq(c.k_bits, 4);
  ck_assert_uint_eq(c.v_bits, 8);
  ck_assert_uint_eq(c.group_size, 16);
  ck_assert_uint_eq(c.v_group_size, 64);
  ck_assert_uint_eq(c.pfn, 4);
  ck_assert_int_eq(c.policy, KVS_POLICY_PFN);
  ck_assert_float_eq_tol(c.outliers, 0.005f, 1e-7f);
  ck_assert_str_eq(c.profiles_dir, "/tmp/profiles");
  ck_assert_uint_eq(c.n_shared_uids, 3);
  ck_assert_uint_eq(c.shared_uids[0], 0);
  ck_assert_uint_eq(c.shared_uids[2], 1001);
  ck_assert_uint_eq(c.max_segment_size, 2ull << 30);
  ck_assert_uint_eq(c.device_staging, 512ull << 20);
  ck_assert_uint_eq(c.max_sessions, 9);
  ck_assert_uint_eq(c.max_pending_tokens, 100);
  ck_assert_uint_eq(c.residual_bytes, 256ull << 20);
  ck_assert_uint_eq(c.residual_seq_bytes, 8ull << 20);
  ck_assert_int_eq(c.log_level, KVS_LOG_DEBUG);
}
END_TEST

START_TEST(other_values)
{
  ck_assert_int_eq(kvs__config_parse(&c, "device = host\npolicy = none\npool_size=2048K\n", "t", err), 0);
  ck_assert_int_eq(c.device, KVS_DEVICE_HOST);
  ck_assert_int_eq(c.policy, KVS_POLICY_NONE);
  ck_assert_uint_eq(c.pool_size, 2048ull << 10);
  ck_assert_int_eq(kvs__config_parse(&c, "device = auto\npolicy = kvsink\nk_bits = 16\n", "t", err), 0);
  ck_assert_int_eq(c.device, KVS_DEVICE_AUTO);
  ck_assert_int_eq(c.policy, KVS_POLICY_KVSINK);
  ck_assert_uint_eq(c.k_bits, 16);
  /* a number is that number, GPU or not; 0 is off */
  ck_assert_int_eq(kvs__config_parse(&c, "busy_poll_us = 250\n", "t", err), 0);
  ck_assert_uint_eq(kvs__config_busy_poll(&c, 0), 250);
  ck_assert_uint_eq(kvs__config_busy_poll(&c, 1), 250);
  ck_assert_int_eq(kvs__config_parse(&c, "busy_poll_us = 0\n", "t", err), 0);
  ck_assert_uint_eq(kvs__config_busy_poll(&c, 1), 0);
  ck_assert_int_eq(kvs__config_parse(&c, "busy_poll_us = auto\n", "t", err), 0);
  ck_assert_uint_eq(kvs__config_busy_poll(&c, 1), KVS_BUSY_POLL_GPU_US);
  ck_assert_int_eq(kvs__config_parse(&c, "busy_poll_us = often\n", "t", err), -EINVAL);
}
END_TEST

START_TEST(metrics_listen)
{
  ck_assert_str_eq(c.metrics_listen, ""); /* off by default */
  ck_assert_int_eq(kvs__config_parse(&c, "metrics_listen = 127.0.0.1:9466\n", "t", err), 0);
  ck_assert_str_eq(c.metrics_listen, "127.0.0.1:9466");
  ck_assert_int_eq(kvs__config_parse(&c, "metrics_listen = [::1]:0\n", "t", err), 0);
  ck_assert_str_eq(c.metrics_listen, "[::1]:0");
  ck_assert_int_eq(kvs__config_parse(&c, "metrics_listen = none\n", "t", err), 0);
  ck_assert_str_eq(c.metrics_listen, "");
  const char *bad[] = {"localhost:9466", "127.0.0.1", "127.0.0.1:65536", "::1:9466",
                       "[::1]9466", "1.2.3.4:", ":80", "[]:80"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char line[96];
    snprintf(line, sizeof line, "metrics_listen = %s\n", bad[i]);
    ck_assert_int_eq(kvs__config_parse(&c, line, "t", err), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "metrics_listen"));
  }
}
END_TEST

/* A later value wins: the command line uses kvs__config_set over the file. */
START_TEST(overrides)
{
  ck_assert_int_eq(kvs__config_parse(&c, "pool_size = 8M\nlog_level = err\n", "t", err), 0);
  ck_assert_int_eq(kvs__config_set(&c, "pool_size", "16M", err), 0);
  ck_assert_int_eq(kvs__config_set(&c, "log_level", "info", err), 0);
  ck_assert_uint_eq(c.pool_size, 16ull << 20);
  ck_assert_int_eq(c.log_level, KVS_LOG_INFO);
  ck_assert_int_eq(kvs__config_set(&c, "pool_size", "lots", err), -22);
  ck_assert_uint_eq(c.pool_size, 16ull << 20);
}
END_TEST

/* Each bad line and the line number the message must name. */
static const struct {
  const char *text;
  const char *want;
} bad[] = {
    {"bogus = 1\n", "t:1: unknown key 'bogus'"},
    {"\n\nno equals here\n", "t:3: expected 'key = value'"},
    {" = 3\n", "t:1: missing key"},
    {"socket =\n", "t:1: socket:"},
    {"socket_mode = 0999\n", "t:1: socket_mode:"},
    {"residual_bytes = 10K\n", "t:1: residual_bytes:"},
    {"residual_seq_bytes = 100\n", "t:1: residual_seq_bytes:"},
    {"admin_socket_mode = 8\n", "t:1: admin_socket_mode:"},
    {"admin_socket =\n", "t:1: admin_socket:"},
    {"socket_mode = 01777\n", "t:1: socket_mode:"},
    {"pool_size = 12X\n", "t:1: pool_size:"},
    {"pool_size = 1K\n", "t:1: pool_size:"},
    {"pool_size = 99999999999999999999G\n", "t:1: pool_size:"},
    {"device = gpu\n", "t:1: device:"},
    {"device = cuda:x\n", "t:1: device:"},
    {"# c\nk_bits = 5\n", "t:2: k_bits:"},
    {"v_bits = -2\n", "t:1: v_bits:"},
    {"group_size = 0\n", "t:1: group_size:"},
    {"group_size = 65\n", "t:1: group_size:"},
    {"v_group_size = 0\n", "t:1: v_group_size:"},
    {"pfn = 65\n", "t:1: pfn:"},
    {"policy = all\n", "t:1: policy:"},
    {"outliers = 0.5\n", "t:1: outliers:"},
    {"outliers = nan\n", "t:1: outliers:"},
    {"outliers = -0.001\n", "t:1: outliers:"},
    {"shared_namespace_uids = 1,,2\n", "t:1: shared_namespace_uids:"},
    {"shared_namespace_uids = 1,\n", "t:1: shared_namespace_uids:"},
    {"shared_namespace_uids = root\n", "t:1: shared_namespace_uids:"},
    {"max_segment_size = 1\n", "t:1: max_segment_size:"},
    {"device_staging = lots\n", "t:1: device_staging:"},
    {"max_sessions = 0\n", "t:1: max_sessions:"},
    {"max_pending_tokens = 0\n", "t:1: max_pending_tokens:"},
    {"log_level = loud\n", "t:1: log_level:"},
    {"k_bits = 4 4\n", "t:1: k_bits:"},
    {"group_size = 8\n\npfn = 9\n", "t:3: pfn (9) is larger than group_size (8)"},
    {"pfn = 20\ngroup_size = 16\n", "t:2: pfn (20) is larger than group_size (16)"},
};

/* The Redis tier's keys: off by default, both URL forms split, bad
 * values refused with the key named. */
START_TEST(remote_keys)
{
  ck_assert_str_eq(c.remote, "");
  ck_assert_uint_eq(c.remote_timeout_ms, 20);
  ck_assert_uint_eq(c.remote_queue, 64ull << 20);
  ck_assert_int_eq(kvs__config_set(&c, "remote", "redis://cache.example:6380", err), 0);
  ck_assert_str_eq(c.remote_host, "cache.example");
  ck_assert_uint_eq(c.remote_port, 6380);
  ck_assert_str_eq(c.remote_path, "");
  ck_assert_int_eq(kvs__config_set(&c, "remote", "unix:/run/redis/r.sock", err), 0);
  ck_assert_str_eq(c.remote_path, "/run/redis/r.sock");
  ck_assert_str_eq(c.remote_host, "");
  ck_assert_str_eq(c.remote, "unix:/run/redis/r.sock");
  ck_assert_int_eq(kvs__config_set(&c, "remote_timeout_ms", "250", err), 0);
  ck_assert_uint_eq(c.remote_timeout_ms, 250);
  ck_assert_int_eq(kvs__config_set(&c, "remote_queue", "1M", err), 0);
  ck_assert_uint_eq(c.remote_queue, 1u << 20);
  ck_assert_int_eq(kvs__config_set(&c, "cluster_key_file", "/etc/kvsink/cluster.key", err), 0);
  ck_assert_str_eq(c.cluster_key_file, "/etc/kvsink/cluster.key");
  static const char *const wrong[][2] = {
      {"remote", "redis://host"},      {"remote", "redis://:6379"},
      {"remote", "redis://h:0"},       {"remote", "redis://h:70000"},
      {"remote", "http://h:6379"},     {"remote", "unix:"},
      {"remote", "redis://a/b:1"},     {"remote_timeout_ms", "0"},
      {"remote_timeout_ms", "10001"},  {"remote_queue", "1"},
      {"remote_port", "1"},
  };
  for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
    err[0] = 0;
    ck_assert_int_eq(kvs__config_set(&c, wrong[i][0], wrong[i][1], err), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, wrong[i][0]));
  }
  /* An empty value turns the tier off again. */
  ck_assert_int_eq(kvs__config_set(&c, "remote", "", err), 0);
  ck_assert_str_eq(c.remote, "");
  ck_assert_str_eq(c.remote_path, "");
}
END_TEST

START_TEST(errors_name_line)
{
  kvs__config_defaults(&c);
  err[0] = 0;
  ck_assert_int_eq(kvs__config_parse(&c, bad[_i].text, "t", err), -22);
  ck_assert_msg(strncmp(err, bad[_i].want, strlen(bad[_i].want)) == 0, "case %d: got '%s', want '%s'",
                _i, err, bad[_i].want);
}
END_TEST

START_TEST(long_line)
{
  char *t = malloc(3000);
  memset(t, 'a', 2999);
  t[2999] = 0;
  memcpy(t, "ok=1\n", 5);
  t[0] = '#';
  ck_assert_int_eq(kvs__config_parse(&c, t, "t", err), -22);
  ck_assert_str_eq(err, "t:2: line too long");
  free(t);
}
END_TEST

START_TEST(too_many_uids)
{
  char t[1024] = "shared_namespace_uids = ";
  for (int i = 0; i <= KVS_CONF_MAX_SHARED_UIDS; i++) {
    char n[16];
    snprintf(n, sizeof n, "%s%d", i ? "," : "", i);
    strcat(t, n);
  }
  ck_assert_int_eq(kvs__config_parse(&c, t, "t", err), -22);
  ck_assert_ptr_nonnull(strstr(err, "more than"));
}
END_TEST

START_TEST(load_file)
{
  char path[] = "/tmp/kvs-test-config-XXXXXX";
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  const char *t = "k_bits = 3\nmax_sessions = 2\n";
  ck_assert_int_eq(write(fd, t, strlen(t)), (int)strlen(t));
  close(fd);
  ck_assert_int_eq(kvs__config_load(&c, path, err), 0);
  ck_assert_uint_eq(c.k_bits, 3);
  ck_assert_uint_eq(c.max_sessions, 2);
  /* the file name prefixes errors */
  fd = open(path, O_WRONLY | O_TRUNC);
  ck_assert_int_ge(fd, 0);
  t = "k_bits = 3\nwhat = 1\n";
  ck_assert_int_eq(write(fd, t, strlen(t)), (int)strlen(t));
  close(fd);
  ck_assert_int_eq(kvs__config_load(&c, path, err), -22);
  char want[128];
  snprintf(want, sizeof want, "%s:2: unknown key 'what'", path);
  ck_assert_str_eq(err, want);
  unlink(path);
  ck_assert_int_eq(kvs__config_load(&c, path, err), -2);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("config");
  TCase *tc = tcase_create("parse");
  tcase_add_checked_fixture(tc, setup, NULL);
  tcase_add_test(tc, defaults_embedded);
  tcase_add_test(tc, every_key);
  tcase_add_test(tc, other_values);
  tcase_add_test(tc, metrics_listen);
  tcase_add_test(tc, overrides);
  tcase_add_loop_test(tc, errors_name_line, 0, (int)(sizeof bad / sizeof bad[0]));
  tcase_add_test(tc, long_line);
  tcase_add_test(tc, remote_keys);
  tcase_add_test(tc, too_many_uids);
  tcase_add_test(tc, load_file);
  suite_add_tcase(s, tc);
  SRunner *r = srunner_create(s);
  srunner_run_all(r, CK_NORMAL);
  int failed = srunner_ntests_failed(r);
  srunner_free(r);
  return failed ? 1 : 0;
}
