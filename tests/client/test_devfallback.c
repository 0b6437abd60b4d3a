/* SPDX-License-Identifier: MIT */
/* Device segments' fallback, end to end without a GPU: a client that asks
 * for a device segment of a daemon with a host pool (or on a machine
 * without a CUDA driver) gets the host segment, its device calls fail
 * with KVS_ESEGMENT and a message, and the host path works; a daemon
 * restart is a clear -ECONNRESET and kvs_reconnect maps a new segment. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <kvsink.h>
#include "tests/lib/daemon.h"

static kvs_model model = { "devfallback", 2, 2, 64, KVS_DTYPE_F16 };

static kvs_client *conn(const char *sock)
{
  kvs_options o;
  kvs_options_init(&o);
  o.seg_size = 1 << 20;
  kvs_client *c = NULL;
  ck_assert_int_eq(kvs_connect_device(&c, sock, &model, &o, 0), 0);
  return c;
}

static int put1(kvs_client *c, uint64_t seq, int dev)
{
  uint32_t t = 5;
  kvs_put_args a = {.seq = seq, .tokens = &t, .n_tokens = 1, .layer_end = 2, .k_off = 0,
                    .v_off = 4096};
  return dev ? kvs_put_device(c, &a, NULL) : kvs_put(c, &a, NULL);
}

START_TEST(host_fallback)
{
  kvstest_daemon d;
  const char *const args[] = {"--device", "host", NULL};
  ck_assert_int_eq(kvstest_daemon_start(&d, NULL, args), 0);
  kvs_client *c = conn(d.sock);
  size_t sz = 1;
  ck_assert_int_eq(kvs_get_info(c)->seg_device, 0);
  ck_assert_ptr_null(kvs_device_segment(c, &sz));
  ck_assert_uint_eq(sz, 0);
  memset(kvs_segment(c, NULL), 0, 8192);
  ck_assert_int_eq(put1(c, 1, 1), KVS_ESEGMENT);
  ck_assert_ptr_nonnull(strstr(kvs_last_error(c), "device segment"));
  /* a stream to order on changes nothing without a device segment */
  ck_assert_int_eq(kvs_set_device_stream(NULL, NULL), -EINVAL);
  ck_assert_int_eq(kvs_set_device_stream(c, (void *)0x1234), 0);
  ck_assert_int_eq(put1(c, 1, 1), KVS_ESEGMENT);
  ck_assert_int_eq(kvs_set_device_stream(c, NULL), 0);
  ck_assert_int_eq(kvs_get_device(c, 1, 0, 1, 0, 2, 0, 4096), KVS_ESEGMENT);
  ck_assert_int_eq(put1(c, 1, 0), 0);
  ck_assert_int_eq(kvs_get(c, 1, 0, 1, 0, 2, 0, 4096), 0);
  kvs_close(c);
  ck_assert_int_eq(kvstest_daemon_stop(&d, 10), 0);
}
END_TEST

START_TEST(restart_reconnect)
{
  /* the client's socket path is a link to whichever daemon runs now */
  char dir[] = "/tmp/kvs-devfb.XXXXXX", sock[64];
  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(sock, sizeof sock, "%s/s", dir);
  const char *const args[] = {"--device", "host", NULL};
  kvstest_daemon d;
  ck_assert_int_eq(kvstest_daemon_start(&d, NULL, args), 0);
  ck_assert_int_eq(symlink(d.sock, sock), 0);
  kvs_client *c = conn(sock);
  memset(kvs_segment(c, NULL), 0, 8192);
  ck_assert_int_eq(put1(c, 1, 0), 0);
  ck_assert_int_eq(kvstest_daemon_stop(&d, 10), 0);
  ck_assert_int_eq(kvstest_daemon_start(&d, NULL, args), 0);
  unlink(sock);
  ck_assert_int_eq(symlink(d.sock, sock), 0);
  int r = put1(c, 2, 0);
  ck_assert_msg(r == -ECONNRESET || r == -EPIPE, "got %d", r);
  if (r == -ECONNRESET)
    ck_assert_ptr_nonnull(strstr(kvs_last_error(c), "kvs_reconnect"));
  /* the next call reconnects by itself, sends nothing, and says so */
  ck_assert_int_eq(put1(c, 2, 0), KVS_ERECONNECTED);
  ck_assert_ptr_nonnull(strstr(kvs_last_error(c), "reconnected"));
  ck_assert_int_eq(kvs_get_info(c)->seg_device, 0);
  memset(kvs_segment(c, NULL), 0, 8192);
  ck_assert_int_eq(put1(c, 2, 0), 0);
  ck_assert_int_eq(kvs_get(c, 2, 0, 1, 0, 2, 0, 4096), 0);
  /* kvs_reconnect stays available to do it at once */
  ck_assert_int_eq(kvs_reconnect(c), 0);
  ck_assert_int_eq(kvs_lookup(c, 3, (const uint32_t[]){1}, 1, 0), 0);
  kvs_close(c);
  ck_assert_int_eq(kvstest_daemon_stop(&d, 10), 0);
  unlink(sock);
  rmdir(dir);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("devfallback");
  TCase *t = tcase_create("core");
  tcase_set_timeout(t, 60);
  tcase_add_test(t, host_fallback);
  tcase_add_test(t, restart_reconnect);
  suite_add_tcase(s, t);
  SRunner *sr = srunner_create(s);
  srunner_set_fork_status(sr, CK_NOFORK);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
