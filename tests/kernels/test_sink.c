/* SPDX-License-Identifier: MIT */
/* Unit tests of sink prediction and the profile file. */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <kvsink.h>
#include "kernels/sink.h"

START_TEST(predict_basic)
{
  /* 6 tokens, 2 channels; tokens 1, 3, 4 exceed tau = 10 */
  float act[12] = { 1, -2, 50, 0, 3, 3, -30, 1, 0, 40, 9, -9.5f };
  uint8_t flags[6] = { 0 };
  ck_assert_int_eq(kvs__predict_sinks(act, 6, 2, 10.f, 8, flags), 3);
  uint8_t want[6] = { 0, 1, 0, 1, 1, 0 };
  ck_assert(memcmp(flags, want, 6) == 0);
  /* budget 2: the two largest (50 and 40) */
  memset(flags, 0, 6);
  ck_assert_int_eq(kvs__predict_sinks(act, 6, 2, 10.f, 2, flags), 2);
  uint8_t want2[6] = { 0, 1, 0, 0, 1, 0 };
  ck_assert(memcmp(flags, want2, 6) == 0);
  /* flags already set stay set (PFN is the caller's) */
  memset(flags, 0, 6);
  flags[0] = 1;
  ck_assert_int_eq(kvs__predict_sinks(act, 6, 2, 100.f, 2, flags), 0);
  ck_assert_uint_eq(flags[0], 1);
  /* ties: earlier token wins */
  float tie[4] = { 7, 20, 20, 1 };
  memset(flags, 0, 6);
  ck_assert_int_eq(kvs__predict_sinks(tie, 4, 1, 5.f, 2, flags), 2);
  ck_assert(flags[0] == 0 && flags[1] == 1 && flags[2] == 1 && flags[3] == 0);
  memset(flags, 0, 6);
  ck_assert_int_eq(kvs__predict_sinks(tie, 4, 1, 5.f, 1, flags), 1);
  ck_assert(flags[1] == 1 && flags[2] == 0);
  /* strictly greater than tau */
  memset(flags, 0, 6);
  ck_assert_int_eq(kvs__predict_sinks(tie, 4, 1, 20.f, 4, flags), 0);
  ck_assert_int_eq(kvs__predict_sinks(tie, 4, 1, 5.f, 0, flags), 0);
  ck_assert_int_eq(kvs__predict_sinks(NULL, 0, 1, 5.f, 4, flags), 0);
}
END_TEST

START_TEST(predict_rejects_nan)
{
  float act[4] = { 100, 1, NAN, 2 };
  uint8_t flags[2] = { 0 };
  ck_assert_int_eq(kvs__predict_sinks(act, 2, 2, 10.f, 4, flags), KVS_ENAN);
  ck_assert(flags[0] == 0 && flags[1] == 0); /* nothing flagged */
  act[2] = -INFINITY;
  ck_assert_int_eq(kvs__predict_sinks(act, 2, 2, 10.f, 4, flags), KVS_ENAN);
  ck_assert_int_eq(kvs__predict_sinks(act, 2, 0, 10.f, 4, flags), -EINVAL);
}
END_TEST

static char tmpdir[64];

static const char *write_file(const char *name, const char *text)
{
  static char path[128];
  snprintf(path, sizeof path, "%s/%s", tmpdir, name);
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  fputs(text, f);
  fclose(f);
  return path;
}

START_TEST(profile_round_trip)
{
  kvs__profile p, q;
  memset(&p, 0, sizeof p);
  strcpy(p.model_id, "kvsink-test-17m");
  p.layer = 2;
  p.n_channels = 3;
  p.channels[0] = 7; p.channels[1] = 21; p.channels[2] = 300;
  p.tau = 12.3456789f;
  p.max_sinks = 16;
  p.pfn = 1;
  p.outliers = 0.005f;
  char path[128], err[256];
  snprintf(path, sizeof path, "%s/rt.profile", tmpdir);
  ck_assert_int_eq(kvs__profile_save(path, &p), 0);
  ck_assert_int_eq(kvs__profile_load(path, &q, err), 0);
  ck_assert_str_eq(q.model_id, p.model_id);
  ck_assert_uint_eq(q.layer, 2);
  ck_assert_uint_eq(q.n_channels, 3);
  ck_assert(memcmp(q.channels, p.channels, 3 * sizeof(uint32_t)) == 0);
  ck_assert(q.tau == p.tau); /* bit-exact through %.9g */
  ck_assert_uint_eq(q.max_sinks, 16);
  ck_assert_uint_eq(q.pfn, 1);
  ck_assert(q.outliers == 0.005f);
  /* a hand-written one with comments, blanks and spaces */
  const char *h = write_file("hand.profile", "# hi\n\n  model = m/1  # trailing\nlayer=0\nchannels = 1 , 2\n"
                                             "tau = 4e2\nmax_sinks = 0\npfn = 4\n");
  ck_assert_int_eq(kvs__profile_load(h, &q, err), 0);
  ck_assert_str_eq(q.model_id, "m/1");
  ck_assert_uint_eq(q.n_channels, 2);
  ck_assert(q.tau == 400.f);
  ck_assert(q.outliers < 0.f); /* optional key absent: not set */
  p.tau = NAN;
  ck_assert_int_eq(kvs__profile_save(path, &p), -EINVAL);
  p.tau = 1; p.n_channels = 0;
  ck_assert_int_eq(kvs__profile_save(path, &p), -EINVAL);
}
END_TEST

static void bad(const char *text, const char *want_in_msg)
{
  kvs__profile q;
  char err[256] = "";
  const char *path = write_file("bad.profile", text);
  ck_assert_int_eq(kvs__profile_load(path, &q, err), -EINVAL);
  ck_assert_msg(strstr(err, want_in_msg) != NULL, "'%s' lacks '%s'", err, want_in_msg);
}

#define GOOD_TAIL "tau = 1\nmax_sinks = 4\npfn = 1\n"

START_TEST(profile_parse_errors)
{
  bad("model = a\nlayer = 1\nchannels = 1\n" GOOD_TAIL "colour = red\n", ":7: unknown key 'colour'");
  bad("model = a\nlayer = x1\nchannels = 1\n" GOOD_TAIL, ":2: layer");
  bad("model = a\nlayer = -1\nchannels = 1\n" GOOD_TAIL, ":2: layer");
  bad("model = a\nlayer = 1\nchannels = 1\n" GOOD_TAIL "outliers = 0.5\n", ":7: outliers");
  bad("model = a\nlayer = 1\nchannels = 1,,2\n" GOOD_TAIL, ":3: channels");
  bad("model = a\nlayer = 1\nchannels = 1,2,\n" GOOD_TAIL, ":3: channels");
  bad("model = a\nlayer = 1\nchannels = 3,3\n" GOOD_TAIL, ":3: channel 3 listed twice");
  bad("model = a\nlayer = 1\nchannels = 70000\n" GOOD_TAIL, ":3: channel '70000'");
  bad("model = a\nlayer = 1\nchannels = 1\ntau = 0\nmax_sinks = 4\npfn = 1\n", ":4: tau");
  bad("model = a\nlayer = 1\nchannels = 1\ntau = nan\nmax_sinks = 4\npfn = 1\n", ":4: tau");
  bad("model = a\nlayer = 1\nchannels = 1\ntau = 2x\nmax_sinks = 4\npfn = 1\n", ":4: tau");
  bad("model = a\nlayer = 1\nlayer = 2\nchannels = 1\n" GOOD_TAIL, ":3: duplicate key 'layer'");
  bad("model = a b\nlayer = 1\nchannels = 1\n" GOOD_TAIL, ":1: model id");
  bad("model = a\nlayer 1\nchannels = 1\n" GOOD_TAIL, ":2: expected");
  bad("model = a\nchannels = 1\n" GOOD_TAIL, "missing key 'layer'");
  /* 65 channels */
  char buf[1024] = "model = a\nlayer = 1\nchannels = 0";
  for (int i = 1; i <= 64; i++) snprintf(buf + strlen(buf), sizeof buf - strlen(buf), ",%d", i);
  strcat(buf, "\n" GOOD_TAIL);
  bad(buf, ":3: more than 64 channels");
  kvs__profile q;
  char err[256];
  char missing[128];
  snprintf(missing, sizeof missing, "%s/none.profile", tmpdir);
  ck_assert_int_eq(kvs__profile_load(missing, &q, err), -ENOENT);
}
END_TEST

int main(void)
{
  strcpy(tmpdir, "/tmp/kvs-test-sink-XXXXXX");
  if (!mkdtemp(tmpdir)) return EXIT_FAILURE;
  Suite *s = suite_create("sink");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, predict_basic);
  tcase_add_test(tc, predict_rejects_nan);
  tcase_add_test(tc, profile_round_trip);
  tcase_add_test(tc, profile_parse_errors);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_set_fork_status(sr, CK_NOFORK);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  if (system(cmd)) failed++;
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
