/* SPDX-License-Identifier: MIT */
/* Unit tests of libkvsink's utility section (client/util.c,
 * client/profile.c) through <kvsink.h> only, as an application sees it. */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <kvsink.h>

static char dir[64];

static void setup(void)
{
  snprintf(dir, sizeof dir, "/tmp/kvs-util.XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  ck_assert_int_eq(system(cmd), 0);
}

static void write_file(const char *path, const void *buf, size_t n)
{
  FILE *f = fopen(path, "wb");
  ck_assert_ptr_nonnull(f);
  ck_assert_uint_eq(fwrite(buf, 1, n, f), n);
  ck_assert_int_eq(fclose(f), 0);
}

START_TEST(version_matches_configure)
{
  ck_assert_str_eq(kvs_version(), KVS_VERSION_STRING);
  ck_assert_str_eq(KVS_VERSION_STRING, PACKAGE_VERSION);
  char v[32];
  snprintf(v, sizeof v, "%d.%d.%d", KVS_VERSION_MAJOR, KVS_VERSION_MINOR, KVS_VERSION_PATCH);
  ck_assert_str_eq(v, KVS_VERSION_STRING);
}
END_TEST

START_TEST(half_known_values)
{
  const float f[6] = {1.0f, -2.0f, 65504.0f, 1e6f, 0x1p-24f, 0.1f};
  uint16_t h[6];
  float back[6];
  kvs_f16_from_f32(h, f, 6);
  ck_assert_uint_eq(h[0], 0x3c00);
  ck_assert_uint_eq(h[1], 0xc000);
  ck_assert_uint_eq(h[2], 0x7bff);
  ck_assert_uint_eq(h[3], 0x7c00); /* overflow: Inf */
  ck_assert_uint_eq(h[4], 0x0001); /* smallest subnormal */
  ck_assert_uint_eq(h[5], 0x2e66); /* 0.1 rounds to nearest even */
  kvs_f16_to_f32(back, h, 6);
  ck_assert(back[0] == 1.0f && back[1] == -2.0f && back[2] == 65504.0f && isinf(back[3]));
  ck_assert(back[4] == 0x1p-24f);
  kvs_bf16_from_f32(h, f, 6);
  ck_assert_uint_eq(h[0], 0x3f80);
  ck_assert_uint_eq(h[1], 0xc000);
  kvs_bf16_to_f32(back, h, 2);
  ck_assert(back[0] == 1.0f && back[1] == -2.0f);
}
END_TEST

/* every f16 value survives f16 -> f32 -> f16, over more than one chunk */
START_TEST(half_round_trip_all)
{
  enum { N = 65536 };
  uint16_t *h = malloc(N * 2), *h2 = malloc(N * 2);
  float *f = malloc(N * sizeof(float));
  ck_assert(h && h2 && f);
  for (uint32_t i = 0; i < N; i++)
    h[i] = (uint16_t)i;
  ck_assert_int_eq(kvs_half_to_f32(f, h, N, KVS_DTYPE_F16), 0);
  ck_assert_int_eq(kvs_half_from_f32(h2, f, N, KVS_DTYPE_F16), 0);
  for (uint32_t i = 0; i < N; i++) {
    if ((i & 0x7c00) == 0x7c00 && (i & 0x3ff)) /* NaN: stays NaN */
      ck_assert(isnan(f[i]) && (h2[i] & 0x7c00) == 0x7c00 && (h2[i] & 0x3ff));
    else
      ck_assert_uint_eq(h2[i], i);
  }
  ck_assert_int_eq(kvs_half_to_f32(f, h, N, KVS_DTYPE_BF16), 0);
  ck_assert_int_eq(kvs_half_from_f32(h2, f, N, KVS_DTYPE_BF16), 0);
  for (uint32_t i = 0; i < N; i++)
    if (!isnan(f[i]))
      ck_assert_uint_eq(h2[i], i);
  ck_assert_int_eq(kvs_half_to_f32(f, h, 1, (kvs_dtype)7), -EINVAL);
  ck_assert_int_eq(kvs_half_from_f32(h2, f, 1, (kvs_dtype)0), -EINVAL);
  free(h);
  free(h2);
  free(f);
}
END_TEST

static const char prof_text[] = "# test\nmodel = m-1\nlayer = 2\nchannels = 5,9\n"
                                "tau = 10\nmax_sinks = 3\npfn = 1\n";

START_TEST(profile_load_save_predict)
{
  char path[128], path2[128], err[256];
  snprintf(path, sizeof path, "%s/a.profile", dir);
  snprintf(path2, sizeof path2, "%s/b.profile", dir);
  write_file(path, prof_text, sizeof prof_text - 1);
  kvs_profile *p, *q;
  ck_assert_int_eq(kvs_profile_load(&p, path, err, sizeof err), 0);
  ck_assert_str_eq(kvs_profile_model(p), "m-1");
  ck_assert_uint_eq(kvs_profile_layer(p), 2);
  uint32_t n;
  const uint32_t *ch = kvs_profile_channels(p, &n);
  ck_assert_uint_eq(n, 2);
  ck_assert_uint_eq(ch[0], 5);
  ck_assert_uint_eq(ch[1], 9);
  ck_assert(kvs_profile_tau(p) == 10.0f);
  ck_assert_uint_eq(kvs_profile_max_sinks(p), 3);
  ck_assert_uint_eq(kvs_profile_pfn(p), 1);
  ck_assert(kvs_profile_outliers(p) < 0);
  /* save and load back: the same profile */
  ck_assert_int_eq(kvs_profile_save(p, path2), 0);
  ck_assert_int_eq(kvs_profile_load(&q, path2, err, sizeof err), 0);
  ck_assert_str_eq(kvs_profile_model(q), "m-1");
  ck_assert(kvs_profile_tau(q) == 10.0f);
  kvs_profile_free(q);

  /* tokens 1, 3, 4 pass tau; budget 2 keeps the largest two */
  float act[5][2] = {{1, 2}, {0, -50}, {3, 3}, {11, 0}, {20, 1}};
  uint8_t flags[5] = {0};
  ck_assert_int_eq(kvs_predict_sinks(p, &act[0][0], 5, 2, 2, flags), 2);
  ck_assert(!flags[0] && flags[1] && !flags[2] && !flags[3] && flags[4]);
  ck_assert_int_eq(kvs_predict_sinks(p, &act[0][0], 5, 3, 2, flags), -EINVAL);
  act[2][1] = NAN;
  ck_assert_int_eq(kvs_predict_sinks(p, &act[0][0], 5, 2, 2, flags), KVS_ENAN);
  kvs_profile_free(p);
  kvs_profile_free(NULL);
}
END_TEST

START_TEST(profile_errors)
{
  char path[128], err[256] = "";
  kvs_profile *p = (kvs_profile *)1;
  snprintf(path, sizeof path, "%s/missing.profile", dir);
  ck_assert_int_eq(kvs_profile_load(&p, path, err, sizeof err), -ENOENT);
  ck_assert_ptr_null(p);
  ck_assert(strstr(err, "missing.profile") != NULL);
  snprintf(path, sizeof path, "%s/bad.profile", dir);
  write_file(path, "model = x\nlayer = 1\nbogus = 2\n", 30);
  ck_assert_int_eq(kvs_profile_load(&p, path, err, sizeof err), -EINVAL);
  ck_assert(strstr(err, ":3:") != NULL); /* names the line */
  /* a short message buffer is truncated, not overrun */
  char tiny[8];
  memset(tiny, 'x', sizeof tiny);
  ck_assert_int_eq(kvs_profile_load(&p, path, tiny, 4), -EINVAL);
  ck_assert_uint_eq(strlen(tiny), 3);
  ck_assert_int_eq(tiny[4], 'x');
  ck_assert_int_eq(kvs_profile_load(&p, path, NULL, 0), -EINVAL);
}
END_TEST

/* dump of [2 layers][T tokens][16 hidden], fp32; tokens 0 and 40 carry a
 * massive value on channel 3 from layer 1 on */
static void write_dump(const char *path, uint32_t T, uint32_t seed)
{
  const uint32_t L = 2, H = 16, dt = 3;
  size_t n = (size_t)L * T * H;
  float *h = malloc(n * sizeof(float));
  ck_assert_ptr_nonnull(h);
  uint32_t s = seed;
  for (size_t i = 0; i < n; i++) {
    s = s * 1664525u + 1013904223u;
    h[i] = (float)(s >> 8) / 16777216.0f - 0.5f;
  }
  for (uint32_t t = 0; t < T; t += 40)
    h[((size_t)1 * T + t) * H + 3] = 300.0f + (float)t;
  FILE *f = fopen(path, "wb");
  ck_assert_ptr_nonnull(f);
  uint32_t hdr[4] = {L, T, H, dt};
  ck_assert_uint_eq(fwrite("KVSDUMP1", 1, 8, f), 8);
  ck_assert_uint_eq(fwrite(hdr, 4, 4, f), 4);
  ck_assert_uint_eq(fwrite(h, sizeof(float), n, f), n);
  ck_assert_int_eq(fclose(f), 0);
  free(h);
}

START_TEST(calibrate_finds_planted)
{
  char p1[128], p2[128], out[128], err[256];
  snprintf(p1, sizeof p1, "%s/a.dump", dir);
  snprintf(p2, sizeof p2, "%s/b.dump", dir);
  snprintf(out, sizeof out, "%s/c.profile", dir);
  write_dump(p1, 80, 1);
  write_dump(p2, 80, 2);
  kvs_dump *d[2];
  ck_assert_int_eq(kvs_dump_load(&d[0], p1, err, sizeof err), 0);
  ck_assert_int_eq(kvs_dump_load(&d[1], p2, err, sizeof err), 0);
  kvs_calib_options o;
  kvs_calib_options_init(&o);
  ck_assert(o.ratio == 8.f && o.max_channels == 8 && o.max_sinks == 16 && o.pfn == 1);
  kvs_profile *p;
  int r = kvs_calibrate(&p, "planted", (const kvs_dump *const *)d, 2, &o, err, sizeof err);
  ck_assert_msg(r == 0, "calibrate: %d %s", r, err);
  ck_assert_str_eq(kvs_profile_model(p), "planted");
  ck_assert_uint_eq(kvs_profile_layer(p), 1);
  uint32_t n;
  const uint32_t *ch = kvs_profile_channels(p, &n);
  ck_assert_uint_eq(n, 1);
  ck_assert_uint_eq(ch[0], 3);
  ck_assert(kvs_profile_tau(p) > 0.5f && kvs_profile_tau(p) < 300.f);
  ck_assert_uint_eq(kvs_profile_max_sinks(p), 16);
  ck_assert_int_eq(kvs_profile_save(p, out), 0);
  kvs_profile_free(p);
  kvs_dump_free(d[0]);
  kvs_dump_free(d[1]);
  write_file(p2, "KVSDUMP0", 8); /* wrong magic */
  ck_assert_int_lt(kvs_dump_load(&d[0], p2, err, sizeof err), 0);
  ck_assert_ptr_null(d[0]);
  ck_assert(err[0] != 0);
  kvs_dump_free(NULL);
}
END_TEST

START_TEST(bits_per_element)
{
  kvs_quant_settings s = {.group = 32, .channels = 1024, .v_group = 0, .k_bits = 2, .v_bits = 2,
                          .outliers = 0, .dtype = KVS_DTYPE_F16};
  double b2, b2s, b4, b16;
  ck_assert_int_eq(kvs_bits_per_element(&s, 0, &b2), 0);
  ck_assert_int_eq(kvs_bits_per_element(&s, 1, &b2s), 0);
  /* 2-bit codes plus scales: a little over 2 bits, far under 16 */
  ck_assert(b2 > 2.0 && b2 < 3.5);
  /* one 16-bit sink row of 32 costs 16/32 of a bit per element */
  ck_assert_double_eq_tol(b2s - b2, 0.5, 1e-9);
  s.k_bits = s.v_bits = 4;
  ck_assert_int_eq(kvs_bits_per_element(&s, 0, &b4), 0);
  ck_assert(b4 > b2 + 1.9 && b4 < 5.5);
  s.k_bits = s.v_bits = 16;
  ck_assert_int_eq(kvs_bits_per_element(&s, 0, &b16), 0);
  ck_assert(b16 >= 16.0);
  s.k_bits = 5;
  ck_assert_int_eq(kvs_bits_per_element(&s, 0, &b2), -EINVAL);
  s.k_bits = 2;
  ck_assert_int_eq(kvs_bits_per_element(&s, 33, &b2), -EINVAL); /* more sinks than rows */
  s.v_group = 7; /* does not divide 1024 */
  ck_assert_int_eq(kvs_bits_per_element(&s, 0, &b2), -EINVAL);
  s.v_group = 0;
  s.outliers = NAN;
  ck_assert_int_eq(kvs_bits_per_element(&s, 0, &b2), -EINVAL);
  ck_assert_int_eq(kvs_bits_per_element(NULL, 0, &b2), -EINVAL);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("client-util");
  TCase *tc = tcase_create("util");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, version_matches_configure);
  tcase_add_test(tc, half_known_values);
  tcase_add_test(tc, half_round_trip_all);
  tcase_add_test(tc, profile_load_save_predict);
  tcase_add_test(tc, profile_errors);
  tcase_add_test(tc, calibrate_finds_planted);
  tcase_add_test(tc, bits_per_element);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
