/* SPDX-License-Identifier: MIT */
/* libkvsink's admin API against a fake daemon: a listening socket in a
 * temporary directory whose replies are queued before each call. Checks
 * that typed results are handed over intact and errors keep their text. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <kvsink.h>
#include "proto/proto.h"

static char dir[64], path[100];
static int lfd = -1, peer = -1;
static kvs_admin *adm;

static void setup(void)
{
  snprintf(dir, sizeof dir, "/tmp/kvs-admin-test.XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(path, sizeof path, "%.60s/a.sock", dir);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
  lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ck_assert_int_ge(lfd, 0);
  ck_assert_int_eq(bind(lfd, (struct sockaddr *)&sa, sizeof sa), 0);
  ck_assert_int_eq(listen(lfd, 4), 0);
  /* through the environment: NULL path */
  setenv("KVSINK_ADMIN_SOCKET", path, 1);
  ck_assert_int_eq(kvs_admin_connect(&adm, NULL), 0);
  peer = accept(lfd, NULL, NULL);
  ck_assert_int_ge(peer, 0);
}

static void teardown(void)
{
  kvs_admin_close(adm);
  adm = NULL;
  close(peer);
  close(lfd);
  unlink(path);
  rmdir(dir);
}

static void queue(const kvs__rep *rep)
{
  char *buf;
  size_t len;
  ck_assert_int_eq(kvs__encode_rep(rep, &buf, &len), 0);
  ck_assert_int_eq(write(peer, buf, len), (ssize_t)len);
  free(buf);
}

START_TEST(list_is_handed_over)
{
  kvs_space_info sp[2];
  memset(sp, 0, sizeof sp);
  strcpy(sp[0].ns, "uid:7");
  strcpy(sp[0].model_id, "a");
  sp[0].k_bits = 2;
  sp[0].policy = KVS_POLICY_PFN;
  sp[0].fallback_sessions = 2;
  strcpy(sp[1].ns, "shared");
  strcpy(sp[1].model_id, "b");
  sp[1].blocks = 99;
  sp[1].policy = KVS_POLICY_KVSINK;
  kvs__rep rep = {.op = KVS_OP_LIST, .id = 1, .spaces = sp, .n_spaces = 2};
  queue(&rep);
  kvs_space_info *v = NULL;
  size_t n = 0;
  ck_assert_int_eq(kvs_admin_list(adm, &v, &n), 0);
  ck_assert_uint_eq(n, 2);
  ck_assert_mem_eq(v, sp, sizeof sp);
  ck_assert_str_eq(kvs_admin_last_error(adm), "");
  free(v);
  /* an empty list is NULL, 0 */
  kvs__rep empty = {.op = KVS_OP_LIST, .id = 2};
  queue(&empty);
  ck_assert_int_eq(kvs_admin_list(adm, &v, &n), 0);
  ck_assert_uint_eq(n, 0);
  ck_assert_ptr_null(v);
}
END_TEST

START_TEST(profiles_stats_evict)
{
  kvs_profile_info pr[1];
  memset(pr, 0, sizeof pr);
  strcpy(pr[0].model_id, "m");
  pr[0].n_channels = 3;
  pr[0].channels[2] = 17;
  pr[0].tau = 1.5f;
  kvs__rep rep = {.op = KVS_OP_PROFILES, .id = 1, .profiles = pr, .n_profiles = 1};
  queue(&rep);
  kvs_profile_info *v = NULL;
  size_t n = 0;
  ck_assert_int_eq(kvs_admin_profiles(adm, &v, &n), 0);
  ck_assert_uint_eq(n, 1);
  ck_assert_mem_eq(v, pr, sizeof pr);
  free(v);

  kvs__rep st = {.op = KVS_OP_STATS, .id = 2};
  st.stats.puts = 12345;
  st.stats.uptime_s = 9;
  st.stats.spaces = 4;
  strcpy(st.stats.backend, "host");
  queue(&st);
  kvs_stats s;
  ck_assert_int_eq(kvs_admin_stats(adm, &s), 0);
  ck_assert_mem_eq(&s, &st.stats, sizeof s);

  /* per pool: handed over with the totals */
  kvs_pool_stats pl[2];
  memset(pl, 0, sizeof pl);
  strcpy(pl[0].device, "cuda:0");
  strcpy(pl[0].uuid, "GPU-00000000-0000-0000-0000-000000000001");
  pl[0].stats.puts = 5;
  strcpy(pl[0].stats.backend, "cuda");
  strcpy(pl[1].device, "cuda:1");
  pl[1].stats.gets = 6;
  st.id = 3;
  st.pools = pl;
  st.n_pools = 2;
  queue(&st);
  kvs_pool_stats *pv = NULL;
  size_t np = 0;
  ck_assert_int_eq(kvs_admin_pools(adm, &s, &pv, &np), 0);
  ck_assert_mem_eq(&s, &st.stats, sizeof s);
  ck_assert_uint_eq(np, 2);
  ck_assert_mem_eq(pv, pl, sizeof pl);
  free(pv);
  st.pools = NULL;
  st.n_pools = 0;
  /* a daemon of no pools (an older one, or a data client's view) */
  st.id = 4;
  queue(&st);
  pv = (kvs_pool_stats *)1;
  ck_assert_int_eq(kvs_admin_pools(adm, &s, &pv, &np), 0);
  ck_assert_ptr_null(pv);
  ck_assert_uint_eq(np, 0);
  ck_assert_int_eq(kvs_admin_pools(adm, &s, NULL, &np), -EINVAL);
  /* the encoder keeps to the limit the decoder enforces */
  kvs_pool_stats many[KVS_MAX_POOLS + 1];
  memset(many, 0, sizeof many);
  kvs__rep big = {.op = KVS_OP_STATS, .id = 14, .pools = many, .n_pools = KVS_MAX_POOLS + 1};
  char *buf;
  size_t len;
  ck_assert_int_eq(kvs__encode_rep(&big, &buf, &len), -EINVAL);

  kvs__rep ev = {.op = KVS_OP_EVICT, .id = 5, .evicted = 77};
  queue(&ev);
  uint64_t evicted = 0;
  ck_assert_int_eq(kvs_admin_evict(adm, &evicted), 0);
  ck_assert_uint_eq(evicted, 77);

  kvs__rep ok = {.op = KVS_OP_PING, .id = 6};
  queue(&ok);
  ck_assert_int_eq(kvs_admin_ping(adm), 0);
  ok.id = 7;
  queue(&ok);
  ck_assert_int_eq(kvs_admin_reload(adm), 0);
}
END_TEST

START_TEST(refusal_keeps_message)
{
  kvs__rep rep = {.op = KVS_OP_EVICT, .id = 1, .err = -EACCES};
  strcpy(rep.errmsg, "evict is an admin operation");
  queue(&rep);
  uint64_t evicted = 5;
  ck_assert_int_eq(kvs_admin_evict(adm, &evicted), -EACCES);
  ck_assert_str_eq(kvs_admin_last_error(adm), "evict is an admin operation");
  kvs_space_info *v = (kvs_space_info *)1;
  size_t n = 9;
  rep.id = 2;
  rep.op = KVS_OP_LIST;
  queue(&rep);
  ck_assert_int_eq(kvs_admin_list(adm, &v, &n), -EACCES);
  ck_assert_ptr_null(v);
  ck_assert_uint_eq(n, 0);
  /* argument checks */
  ck_assert_int_eq(kvs_admin_list(adm, NULL, &n), -EINVAL);
  ck_assert_int_eq(kvs_admin_stats(adm, NULL), -EINVAL);
  ck_assert_int_eq(kvs_admin_ping(NULL), -EINVAL);
  ck_assert_str_eq(kvs_admin_last_error(NULL), "");
}
END_TEST

START_TEST(connect_errors)
{
  kvs_admin *a = (kvs_admin *)1;
  char missing[160];
  snprintf(missing, sizeof missing, "%s/none.sock", dir);
  ck_assert_int_eq(kvs_admin_connect(&a, missing), -ENOENT);
  ck_assert_ptr_null(a);
  ck_assert_int_eq(kvs_admin_connect(NULL, missing), -EINVAL);
  kvs_admin_close(NULL);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("admin");
  TCase *tc = tcase_create("admin");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, list_is_handed_over);
  tcase_add_test(tc, profiles_stats_evict);
  tcase_add_test(tc, refusal_keeps_message);
  tcase_add_test(tc, connect_errors);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int nf = srunner_ntests_failed(sr);
  srunner_free(sr);
  return nf ? 1 : 0;
}
