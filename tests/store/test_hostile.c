/* SPDX-License-Identifier: MIT */
/* Hostile input (issue 10.1, 10.2 store side): K/V and the activation
 * summary change under the store while it reads them (another thread of
 * the client scribbles on the segment), and the 16-bit residual is
 * counted against its budgets. */
#include "tests/store/util.h"
#include "store/rows.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>

#define ACH 4u              /* activation channels */
#define MAXN (3u * G)       /* tokens in one put */

typedef struct scribble {
  uint16_t *k, *v;
  float *act;
  atomic_int stop;
} scribble;

/* Fill with finite values, then keep flipping single words of the first
 * row of layer 0 (inside every put's input) to NaN or Inf and back, and
 * the summary's first token too: a check that reads the input and a copy
 * that reads it again see different bytes about half the time. */
static void *scribbler(void *arg)
{
  scribble *s = arg;
  uint32_t r = 77;
  static const float acts[] = {0.0f, 0.5f, 3.0f, 1e30f, -2.0f};
  for (size_t i = 0; i < (size_t)NL * MAXN * C; i++) {
    uint16_t w = kvs__f32_to_f16((float)(trand(&r) % 2000) / 100.0f - 10.0f);
    __atomic_store_n(&s->k[i], w, __ATOMIC_RELAXED);
    __atomic_store_n(&s->v[i], w, __ATOMIC_RELAXED);
  }
  for (size_t i = 0; i < (size_t)MAXN * ACH; i++) {
    float f = acts[trand(&r) % 5];
    __atomic_store(&s->act[i], &f, __ATOMIC_RELAXED);
  }
  const float nan = __builtin_nanf(""), one = 0.5f;
  while (!atomic_load_explicit(&s->stop, memory_order_relaxed)) {
    uint32_t x = trand(&r), i = x % C;
    uint16_t *p = x & 1 ? s->k : s->v, old = __atomic_load_n(&p[i], __ATOMIC_RELAXED);
    __atomic_store_n(&p[i], (uint16_t)(x & 2 ? 0x7e00u : 0xfc00u), __ATOMIC_RELAXED);
    __atomic_store(&s->act[i % ACH], &nan, __ATOMIC_RELAXED);
    for (volatile int spin = 0; spin < 300; spin++)
      ;
    __atomic_store_n(&p[i], old, __ATOMIC_RELAXED);
    __atomic_store(&s->act[i % ACH], &one, __ATOMIC_RELAXED);
    for (volatile int spin = 0; spin < 300; spin++)
      ;
  }
  return NULL;
}

static int all_finite(const uint16_t *x, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if ((x[i] & 0x7c00u) == 0x7c00u)
      return 0;
  return 1;
}

START_TEST(scribbled_input)
{
  kvs__store *s;
  kvs__store_opts o = {.pool_bytes = 2u << 20};
  ck_assert_int_eq(kvs__store_init(&s, &o), 0);
  /* The victim: another namespace, its blocks held by a seq. */
  kvs__space_key kx = tkey(4, 2);
  strcpy(kx.ns, "uid:1001");
  kvs__space *x;
  ck_assert_int_eq(kvs__space_ref(s, &kx, NULL, &x), 0);
  uint16_t *xk = trandkv(NL, 4 * G + 5, 1), *xv = trandkv(NL, 4 * G + 5, 2);
  uint32_t *xt = ttoks(4 * G + 5, 1);
  kvs__seq *xq;
  char err[KVS_STORE_ERRMSG];
  ck_assert_int_eq(kvs__seq_new(x, &xq), 0);
  ck_assert_int_eq(kvs__seq_put(xq, 0, xt, 4 * G + 5, 0, NL, xk, xv, NULL, 0, NULL, err), 0);
  size_t xbytes = (size_t)NL * (4 * G + 5) * C * 2;
  uint16_t *before_k = malloc(xbytes), *before_v = malloc(xbytes);
  uint16_t *after_k = malloc(xbytes), *after_v = malloc(xbytes);
  ck_assert_int_eq(kvs__seq_get(xq, 0, 4 * G + 5, 0, NL, before_k, before_v, err), 0);

  /* The attacker: KVSINK with a profile, so the summary is read too. */
  kvs__space_key ky = tkey(4, 2);
  ky.policy = KVS_POLICY_KVSINK;
  ky.pfn = 1;
  kvs__profile prof;
  memset(&prof, 0, sizeof(prof));
  strcpy(prof.model_id, "test-model");
  prof.n_channels = ACH;
  for (uint32_t i = 0; i < ACH; i++)
    prof.channels[i] = i;
  prof.tau = 1.0f;
  prof.max_sinks = 8;
  prof.pfn = 1;
  kvs__space *y;
  ck_assert_int_eq(kvs__space_ref(s, &ky, &prof, &y), 0);
  scribble sc = {.k = malloc((size_t)NL * MAXN * C * 2), .v = malloc((size_t)NL * MAXN * C * 2),
                 .act = calloc((size_t)MAXN * ACH, sizeof(float))};
  memset(sc.k, 0, (size_t)NL * MAXN * C * 2);
  memset(sc.v, 0, (size_t)NL * MAXN * C * 2);
  atomic_init(&sc.stop, 0);
  pthread_t th;
  ck_assert_int_eq(pthread_create(&th, NULL, scribbler, &sc), 0);
  uint16_t *gk = malloc((size_t)NL * 64 * MAXN * C * 2), *gv = malloc((size_t)NL * 64 * MAXN * C * 2);
  uint32_t r = 5, ok = 0, nan = 0;
  for (uint32_t it = 0; it < 3000; it++) {
    kvs__seq *q;
    ck_assert_int_eq(kvs__seq_new(y, &q), 0);
    const float *act = it % 4 ? sc.act : NULL; /* a seq has a summary or not */
    for (uint32_t step = 0; step < 6; step++) {
      uint32_t len = kvs__seq_len(q), n = 1 + trand(&r) % MAXN;
      uint32_t *t = ttoks(n, 1000 + len * 7u + it % 3);
      int rc = kvs__seq_put(q, len, t, n, 0, NL, sc.k, sc.v, act, ACH,
                            NULL, err);
      free(t);
      ck_assert_msg(rc == 0 || rc == KVS_ENAN || rc == -ENOSPC, "put: %d %s", rc, err);
      ok += rc == 0;
      nan += rc == KVS_ENAN;
      uint32_t m = kvs__seq_len(q);
      ck_assert_uint_le(m, 64 * MAXN);
      /* Whatever was accepted holds no NaN/Inf: checked on the copy. */
      ck_assert_int_eq(kvs__seq_get(q, 0, m, 0, NL, gk, gv, err), 0);
      ck_assert(all_finite(gk, (size_t)NL * m * C) && all_finite(gv, (size_t)NL * m * C));
    }
    kvs__seq_free(q);
  }
  atomic_store(&sc.stop, 1);
  pthread_join(th, NULL);
  ck_assert_uint_gt(ok, 0);
  ck_assert_uint_gt(nan, 0);
  ck_assert_int_eq(kvs__seq_get(xq, 0, 4 * G + 5, 0, NL, after_k, after_v, err), 0);
  ck_assert_int_eq(memcmp(before_k, after_k, xbytes), 0);
  ck_assert_int_eq(memcmp(before_v, after_v, xbytes), 0);
  kvs__seq_free(xq);
  kvs__space_unref(x);
  kvs__space_unref(y);
  free(gk);
  free(gv);
  free(sc.k);
  free(sc.v);
  free(sc.act);
  free(before_k);
  free(before_v);
  free(after_k);
  free(after_v);
  free(xk);
  free(xv);
  free(xt);
  kvs__store_close(s);
}
END_TEST

/* Residual rows are host memory outside the pool: counted, bounded per
 * seq (-E2BIG) and in all (-ENOSPC), and given back. */
START_TEST(residual_budget)
{
  /* KVSINK with a profile and no summary keeps every token 16-bit. Rows
   * grow 32, 64, 128... per layer; a row is C * 2 * 2 bytes (K and V). */
  const uint64_t row = (uint64_t)C * 4u, r32 = 32 * row * NL, r64 = 64 * row * NL;
  kvs__store *s;
  kvs__store_opts o = {.pool_bytes = 1u << 20, .residual_bytes = r64 + r32,
                       .residual_seq_bytes = r64};
  ck_assert_int_eq(kvs__store_init(&s, &o), 0);
  ck_assert_uint_eq(tstats(s).residual_max, r64 + r32);
  kvs__space_key key = tkey(4, 2);
  key.policy = KVS_POLICY_KVSINK;
  kvs__profile prof;
  memset(&prof, 0, sizeof(prof));
  strcpy(prof.model_id, "test-model");
  prof.n_channels = 1;
  prof.tau = 1.0f;
  prof.max_sinks = 4;
  kvs__space *sp;
  ck_assert_int_eq(kvs__space_ref(s, &key, &prof, &sp), 0);
  uint16_t *k = trandkv(NL, 80, 1), *v = trandkv(NL, 80, 2);
  uint32_t *t = ttoks(80, 1);
  char err[KVS_STORE_ERRMSG];
  kvs__seq *a, *b;
  ck_assert_int_eq(kvs__seq_new(sp, &a), 0);
  ck_assert_int_eq(kvs__seq_new(sp, &b), 0);
  ck_assert_int_eq(kvs__seq_put(a, 0, t, 5, 0, NL, k, v, NULL, 0, NULL, err), 0);
  ck_assert_uint_eq(tstats(s).residual_bytes, r32);
  ck_assert_int_eq(kvs__seq_put(a, 5, t + 5, 59, 0, NL, k, v, NULL, 0, NULL, err), 0);
  ck_assert_uint_eq(tstats(s).residual_bytes, r64);
  /* The 65th row would double a's rows past its own bound. */
  ck_assert_int_eq(kvs__seq_put(a, 64, t + 64, 1, 0, NL, k, v, NULL, 0, NULL, err), -E2BIG);
  ck_assert_ptr_nonnull(strstr(err, "residual"));
  ck_assert_uint_eq(kvs__seq_len(a), 64);
  ck_assert_uint_eq(tstats(s).residual_bytes, r64);
  /* b fits 32 rows, then the store's bound is reached. */
  ck_assert_int_eq(kvs__seq_put(b, 0, t, 32, 0, NL, k, v, NULL, 0, NULL, err), 0);
  ck_assert_uint_eq(tstats(s).residual_bytes, r64 + r32);
  ck_assert_int_eq(kvs__seq_put(b, 32, t + 32, 1, 0, NL, k, v, NULL, 0, NULL, err), -ENOSPC);
  ck_assert_ptr_nonnull(strstr(err, "residual"));
  ck_assert_uint_eq(kvs__seq_len(b), 32);
  /* Freeing a gives its bytes back; b may grow now. */
  kvs__seq_free(a);
  ck_assert_uint_eq(tstats(s).residual_bytes, r32);
  ck_assert_int_eq(kvs__seq_put(b, 32, t + 32, 1, 0, NL, k, v, NULL, 0, NULL, err), 0);
  ck_assert_uint_eq(tstats(s).residual_bytes, r64);
  kvs__seq_free(b);
  ck_assert_uint_eq(tstats(s).residual_bytes, 0);
  kvs__space_unref(sp);
  free(k);
  free(v);
  free(t);
  kvs__store_close(s);
}
END_TEST

/* Rows that become a block give their residual bytes back, except a
 * decode step's buffer (room for 2G rows), kept as the next group's
 * scratch and counted until the seq goes. */
START_TEST(residual_returns_on_quantize)
{
  kvs__store *s;
  kvs__store_opts o = {.pool_bytes = 1u << 20};
  ck_assert_int_eq(kvs__store_init(&s, &o), 0);
  ck_assert_uint_eq(tstats(s).residual_max, 1u << 20); /* default: pool size */
  kvs__space_key key = tkey(4, 2);
  kvs__space *sp;
  ck_assert_int_eq(kvs__space_ref(s, &key, NULL, &sp), 0);
  uint16_t *k = trandkv(NL, G, 1), *v = trandkv(NL, G, 2);
  uint32_t *t = ttoks(G, 1);
  char err[KVS_STORE_ERRMSG];
  kvs__seq *q;
  ck_assert_int_eq(kvs__seq_new(sp, &q), 0);
  ck_assert_int_eq(kvs__seq_put(q, 0, t, G - 1, 0, NL, k, v, NULL, 0, NULL, err), 0);
  uint64_t r = tstats(s).residual_bytes;
  ck_assert_uint_gt(r, 0);
  ck_assert_int_eq(kvs__seq_put(q, G - 1, t + G - 1, 1, 0, NL, k, v, NULL, 0, NULL, err), 0);
  ck_assert_uint_eq(tstats(s).residual_bytes, r); /* kept: the next step appends to it */
  ck_assert_uint_eq(kvs__seq_len(q), G);
  ck_assert_int_eq(kvs__seq_put(q, G, t, 1, 0, NL, k, v, NULL, 0, NULL, err), 0);
  ck_assert_uint_eq(tstats(s).residual_bytes, r); /* no new buffer */
  kvs__seq_free(q);
  ck_assert_uint_eq(tstats(s).residual_bytes, 0);
  /* a bulk put whose rows all become blocks holds no residual */
  ck_assert_int_eq(kvs__seq_new(sp, &q), 0);
  ck_assert_int_eq(kvs__seq_put(q, 0, t, G, 0, NL, k, v, NULL, 0, NULL, err), 0);
  ck_assert_uint_eq(tstats(s).residual_bytes, 0);
  kvs__seq_free(q);
  kvs__space_unref(sp);
  free(k);
  free(v);
  free(t);
  kvs__store_close(s);
}
END_TEST

/* The one-pass copy and scan of a put's rows (store/rows.c): every value
 * copied, NaN and Inf found at any place (vector body and tail), none
 * reported for the largest finite values, for both 16-bit types. */
START_TEST(rows_copy_and_scan)
{
  const size_t sizes[] = {0, 1, 255, 256, 257, 1024, 1031};
  const kvs_dtype dts[] = {KVS_DTYPE_F16, KVS_DTYPE_BF16};
  uint16_t *src = malloc(1032 * 2), *dst = malloc(1032 * 2);
  ck_assert_ptr_nonnull(src);
  ck_assert_ptr_nonnull(dst);
  for (int d = 0; d < 2; d++) {
    const int bf = dts[d] == KVS_DTYPE_BF16;
    const uint16_t big = bf ? 0x7f7fu : 0x7bffu;
    const uint16_t bad[3] = {bf ? 0x7fc0u : 0x7e00u, bf ? 0x7f80u : 0x7c00u, bf ? 0xff80u : 0xfc00u};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
      const size_t n = sizes[si];
      /* finite values all over the range: bit 14 clear keeps the exponent
       * below all ones */
      for (size_t i = 0; i < n; i++) src[i] = (uint16_t)((i * 2654435761u) & 0xbfffu);
      if (n) src[n - 1] = (uint16_t)(big | 0x8000u);
      memset(dst, 0xaa, 1032 * 2);
      ck_assert_int_eq(kvs__copy_finite(dst, src, n, dts[d]), 0);
      ck_assert_int_eq(kvs__has_nonfinite(src, n, dts[d]), 0);
      ck_assert(memcmp(dst, src, n * 2) == 0);
      ck_assert_uint_eq(dst[n], 0xaaaau); /* nothing past n */
      for (size_t i = 0; i < n; i += (n > 300 ? 97 : 1)) {
        const uint16_t keep = src[i];
        src[i] = bad[i % 3];
        memset(dst, 0, 1032 * 2);
        ck_assert_int_eq(kvs__copy_finite(dst, src, n, dts[d]), 1);
        ck_assert_int_eq(kvs__has_nonfinite(src, n, dts[d]), 1);
        ck_assert(memcmp(dst, src, n * 2) == 0); /* all of it stored */
        src[i] = keep;
      }
    }
  }
  free(src);
  free(dst);
}
END_TEST

/* A decode step with a NaN in its last layer's V is refused and changes
 * nothing: the seq's length, its residual, its next step. */
START_TEST(nan_in_a_decode_step)
{
  kvs__store *s;
  kvs__store_opts o = {.pool_bytes = 1u << 20};
  ck_assert_int_eq(kvs__store_init(&s, &o), 0);
  kvs__space_key key = tkey(4, 2);
  kvs__space *sp;
  ck_assert_int_eq(kvs__space_ref(s, &key, NULL, &sp), 0);
  uint16_t *k = trandkv(NL, 1, 1), *v = trandkv(NL, 1, 2);
  uint32_t *t = ttoks(G, 1);
  char err[KVS_STORE_ERRMSG];
  kvs__seq *q;
  ck_assert_int_eq(kvs__seq_new(sp, &q), 0);
  ck_assert_int_eq(kvs__seq_put(q, 0, t, 1, 0, NL, k, v, NULL, 0, NULL, err), 0);
  uint64_t r = tstats(s).residual_bytes;
  const size_t last = (size_t)NL * C - 1; /* the put's last value */
  uint16_t keep = v[last];
  v[last] = 0x7e00u; /* fp16 NaN */
  ck_assert_int_eq(kvs__seq_put(q, 1, t + 1, 1, 0, NL, k, v, NULL, 0, NULL, err), KVS_ENAN);
  ck_assert_ptr_nonnull(strstr(err, "NaN"));
  ck_assert_uint_eq(kvs__seq_len(q), 1);
  ck_assert_uint_eq(tstats(s).residual_bytes, r);
  v[last] = keep;
  ck_assert_int_eq(kvs__seq_put(q, 1, t + 1, 1, 0, NL, k, v, NULL, 0, NULL, err), 0);
  ck_assert_uint_eq(kvs__seq_len(q), 2);
  kvs__seq_free(q);
  kvs__space_unref(sp);
  free(k);
  free(v);
  free(t);
  kvs__store_close(s);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("hostile");
  TCase *tc = tcase_create("hostile");
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, scribbled_input);
  tcase_add_test(tc, residual_budget);
  tcase_add_test(tc, residual_returns_on_quantize);
  tcase_add_test(tc, rows_copy_and_scan);
  tcase_add_test(tc, nan_in_a_decode_step);
  suite_add_tcase(s, tc);
  SRunner *r = srunner_create(s);
  srunner_run_all(r, CK_NORMAL);
  int nf = srunner_ntests_failed(r);
  srunner_free(r);
  return nf ? EXIT_FAILURE : EXIT_SUCCESS;
}
