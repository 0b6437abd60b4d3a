/* SPDX-License-Identifier: MIT */
/* Unit tests of dump loading and calibration, on synthetic dumps with
 * planted massive activations. */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kernels/half.h"
#include "kernels/sink.h"

#define L 8u
#define T 512u
#define HID 64u

static char tmpdir[64];
static uint64_t rng_s = 0x243f6a8885a308d3ull;

static float gauss(void)
{
  /* sum of 4 uniforms: cheap, bounded, bell-shaped */
  float s = 0;
  for (int i = 0; i < 4; i++) {
    rng_s ^= rng_s << 13; rng_s ^= rng_s >> 7; rng_s ^= rng_s << 17;
    s += (float)(rng_s >> 40) / 16777216.0f - 0.5f;
  }
  return s;
}

static int is_planted(uint32_t t) { return t == 0 || t == 100 || t == 300; }

/* hidden states [L][T][HID]; planted tokens get 50x in channels 7 and 21
 * from layer `from` on (none when from >= L) */
static float *synth(uint32_t from)
{
  float *h = malloc(sizeof(float) * L * T * HID);
  for (uint32_t l = 0; l < L; l++)
    for (uint32_t t = 0; t < T; t++)
      for (uint32_t c = 0; c < HID; c++) {
        float x = gauss();
        if (l >= from && is_planted(t) && (c == 7 || c == 21)) x = (c == 7 ? 50.f : -48.f) * (1.f + 0.1f * gauss());
        h[((size_t)l * T + t) * HID + c] = x;
      }
  return h;
}

static const char *write_dump(const char *name, const float *h, uint32_t dtype, long trunc)
{
  static char path[128];
  snprintf(path, sizeof path, "%s/%s", tmpdir, name);
  FILE *f = fopen(path, "wb");
  ck_assert_ptr_nonnull(f);
  uint32_t hdr[4] = { L, T, HID, dtype };
  fwrite("KVSDUMP1", 1, 8, f);
  fwrite(hdr, 4, 4, f); /* the test machine is little-endian, as the format */
  for (size_t i = 0; i < (size_t)L * T * HID; i++) {
    if (dtype == 1) { uint16_t x = kvs__f32_to_f16(h[i]); fwrite(&x, 2, 1, f); }
    else fwrite(&h[i], 4, 1, f);
  }
  fclose(f);
  if (trunc) ck_assert_int_eq(truncate(path, trunc), 0);
  return path;
}

START_TEST(dump_load_formats)
{
  float *h = synth(2);
  kvs__dump d;
  char err[256];
  ck_assert_int_eq(kvs__dump_load(write_dump("a32", h, 3, 0), &d, err), 0);
  ck_assert_uint_eq(d.n_layers, L);
  ck_assert_uint_eq(d.n_tokens, T);
  ck_assert_uint_eq(d.hidden, HID);
  ck_assert(memcmp(d.h, h, sizeof(float) * L * T * HID) == 0);
  kvs__dump_free(&d);
  ck_assert_int_eq(kvs__dump_load(write_dump("a16", h, 1, 0), &d, err), 0);
  for (size_t i = 0; i < (size_t)L * T * HID; i += 97) ck_assert(d.h[i] == kvs__f16_to_f32(kvs__f32_to_f16(h[i])));
  kvs__dump_free(&d);
  ck_assert_int_eq(kvs__dump_load(write_dump("short", h, 3, 24 + 4 * 1000), &d, err), -EINVAL);
  ck_assert(strstr(err, "does not match") != NULL);
  ck_assert_int_eq(kvs__dump_load(write_dump("hdr", h, 3, 20), &d, err), -EINVAL);
  ck_assert(strstr(err, "short header") != NULL);
  ck_assert_int_eq(kvs__dump_load(write_dump("dt", h, 2, 0), &d, err), -EINVAL);
  ck_assert(strstr(err, "dtype") != NULL);
  h[5] = NAN;
  ck_assert_int_eq(kvs__dump_load(write_dump("nan", h, 3, 0), &d, err), -EINVAL);
  ck_assert(strstr(err, "NaN") != NULL);
  const char *p = write_dump("magic", h, 3, 0);
  FILE *f = fopen(p, "r+b");
  fputs("KVSDUMP2", f);
  fclose(f);
  ck_assert_int_eq(kvs__dump_load(p, &d, err), -EINVAL);
  ck_assert(strstr(err, "not a KVSDUMP1") != NULL);
  free(h);
}
END_TEST

START_TEST(calibrate_planted)
{
  float *h = synth(2);
  kvs__dump d;
  char err[256];
  ck_assert_int_eq(kvs__dump_load(write_dump("p16", h, 1, 0), &d, err), 0);
  kvs__calib_opts o = { 8.f, 50, 8, 16, 1 };
  kvs__profile p;
  memset(&p, 0, sizeof p);
  ck_assert_int_eq(kvs__calibrate(&d, 1, &o, &p, err), 0);
  ck_assert_uint_eq(p.layer, 2);
  ck_assert_uint_eq(p.n_channels, 2);
  ck_assert_uint_eq(p.channels[0], 7);
  ck_assert_uint_eq(p.channels[1], 21);
  ck_assert_uint_eq(p.max_sinks, 16);
  ck_assert_uint_eq(p.pfn, 1);
  /* tau lies between the populations on C* at layer 2 */
  float lo = INFINITY, hi = 0;
  for (uint32_t t = 0; t < T; t++) {
    const float *r = d.h + ((size_t)2 * T + t) * HID;
    float x = fmaxf(fabsf(r[7]), fabsf(r[21]));
    if (is_planted(t)) lo = fminf(lo, x); else hi = fmaxf(hi, x);
  }
  ck_assert(p.tau > hi && p.tau < lo);
  /* prediction on layer-2 summaries recovers exactly the planted tokens */
  float *act = malloc(sizeof(float) * T * p.n_channels);
  for (uint32_t t = 0; t < T; t++)
    for (uint32_t j = 0; j < p.n_channels; j++) act[t * p.n_channels + j] = d.h[((size_t)2 * T + t) * HID + p.channels[j]];
  uint8_t flags[T];
  memset(flags, 0, sizeof flags);
  ck_assert_int_eq(kvs__predict_sinks(act, T, p.n_channels, p.tau, p.max_sinks, flags), 3);
  for (uint32_t t = 0; t < T; t++) ck_assert_uint_eq(flags[t], is_planted(t));
  /* two dumps calibrate the same way */
  kvs__dump two[2] = { d, d };
  kvs__profile p2;
  ck_assert_int_eq(kvs__calibrate(two, 2, &o, &p2, err), 0);
  ck_assert_uint_eq(p2.layer, 2);
  ck_assert(p2.tau == p.tau);
  /* --max-channels 1 keeps one */
  o.max_channels = 1;
  ck_assert_int_eq(kvs__calibrate(&d, 1, &o, &p2, err), 0);
  ck_assert_uint_eq(p2.n_channels, 1);
  kvs__dump_free(&d);
  free(act);
  free(h);
}
END_TEST

START_TEST(calibrate_last_layer_exempt)
{
  /* massive activations from layer 3, gone in the last layer */
  float *h = synth(3);
  for (uint32_t t = 0; t < T; t++)
    for (uint32_t c = 0; c < HID; c++)
      if (is_planted(t)) h[((size_t)(L - 1) * T + t) * HID + c] = gauss();
  kvs__dump d = { L, T, HID, h };
  kvs__calib_opts o = { 8.f, 50, 8, 16, 1 };
  kvs__profile p;
  char err[256];
  ck_assert_int_eq(kvs__calibrate(&d, 1, &o, &p, err), 0);
  ck_assert_uint_eq(p.layer, 3);
  /* and when a middle layer loses them, l_E moves past it */
  for (uint32_t t = 0; t < T; t++)
    for (uint32_t c = 0; c < HID; c++)
      if (is_planted(t)) h[((size_t)4 * T + t) * HID + c] = gauss();
  ck_assert_int_eq(kvs__calibrate(&d, 1, &o, &p, err), 0);
  ck_assert_uint_eq(p.layer, 5);
  free(h);
}
END_TEST

START_TEST(calibrate_none)
{
  float *h = synth(L);
  kvs__dump d = { L, T, HID, h };
  kvs__calib_opts o = { 8.f, 50, 8, 16, 1 };
  kvs__profile p;
  char err[256];
  ck_assert_int_eq(kvs__calibrate(&d, 1, &o, &p, err), -ENOENT);
  ck_assert(strstr(err, "no massive activations") != NULL);
  /* too many outlier tokens (every 8th token) is not "a few" */
  for (uint32_t l = 2; l < L; l++)
    for (uint32_t t = 0; t < T; t += 8) h[((size_t)l * T + t) * HID + 7] = 60.f;
  ck_assert_int_eq(kvs__calibrate(&d, 1, &o, &p, err), -ENOENT);
  ck_assert(strstr(err, "no stable") != NULL);
  /* overlapping populations fail: 19 tokens massive in channel 7 make
   * C* = {7}; one more is massive only in channel 40 and has 0 on C*,
   * below a normal token's 5 */
  free(h);
  h = synth(L);
  d.h = h;
  for (uint32_t l = 2; l < L; l++) {
    for (uint32_t k = 0; k < 19; k++) h[((size_t)l * T + 10 * k) * HID + 7] = 50.f;
    h[((size_t)l * T + 333) * HID + 40] = 25.f;
    h[((size_t)l * T + 333) * HID + 7] = 0.f;
    h[((size_t)l * T + 7) * HID + 7] = 5.f;
  }
  ck_assert_int_eq(kvs__calibrate(&d, 1, &o, &p, err), -ERANGE);
  ck_assert(strstr(err, "overlap") != NULL);
  free(h);
}
END_TEST

START_TEST(tool_exit_codes)
{
  const char *bd = getenv("top_builddir");
  char tool[512], cmd[1400], out[160];
  snprintf(tool, sizeof tool, "%s/tools/kvsink-calibrate", bd ? bd : ".");
  ck_assert_msg(access(tool, X_OK) == 0, "%s not built", tool);
  float *h = synth(L);
  const char *none = write_dump("none", h, 3, 0);
  snprintf(out, sizeof out, "%s/none.profile", tmpdir);
  snprintf(cmd, sizeof cmd, "'%s' --model m -o '%s' '%s' 2>/dev/null >/dev/null", tool, out, none);
  int st = system(cmd);
  /* exit codes of kvsink-calibrate(1): 4 no profile found, 2 bad command line */
  ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 4);
  ck_assert(access(out, F_OK) != 0);
  free(h);
  h = synth(2);
  const char *yes = write_dump("yes", h, 1, 0);
  snprintf(out, sizeof out, "%s/yes.profile", tmpdir);
  snprintf(cmd, sizeof cmd, "'%s' --ratio 8 --max-sinks 9 --pfn 2 --model m1 -o '%s' '%s' >/dev/null", tool, out, yes);
  st = system(cmd);
  ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  kvs__profile p;
  char err[256];
  ck_assert_int_eq(kvs__profile_load(out, &p, err), 0);
  ck_assert_str_eq(p.model_id, "m1");
  ck_assert_uint_eq(p.layer, 2);
  ck_assert_uint_eq(p.max_sinks, 9);
  ck_assert_uint_eq(p.pfn, 2);
  snprintf(cmd, sizeof cmd, "'%s' --ratio x --model m1 -o '%s' '%s' 2>/dev/null", tool, out, yes);
  st = system(cmd);
  ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2);
  free(h);
}
END_TEST

int main(void)
{
  strcpy(tmpdir, "/tmp/kvs-test-calib-XXXXXX");
  if (!mkdtemp(tmpdir)) return EXIT_FAILURE;
  Suite *s = suite_create("calibrate");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, dump_load_formats);
  tcase_add_test(tc, calibrate_planted);
  tcase_add_test(tc, calibrate_last_layer_exempt);
  tcase_add_test(tc, calibrate_none);
  tcase_add_test(tc, tool_exit_codes);
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
