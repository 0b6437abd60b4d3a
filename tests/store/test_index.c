/* SPDX-License-Identifier: MIT */
/* The prefix index and the hash. */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "store/index.h"

static kvs__ikey key_of(uint32_t i, uint32_t layer)
{
  kvs__ikey k = {{kvs__hash64(&i, sizeof(i), 1), kvs__hash64(&i, sizeof(i), 2)}, layer};
  return k;
}

START_TEST(basic)
{
  kvs__index *ix;
  ck_assert_int_eq(kvs__index_init(&ix), 0);
  int a, b;
  kvs__ikey k0 = key_of(7, 0), k1 = key_of(7, 1);
  ck_assert_ptr_null(kvs__index_find(ix, &k0));
  ck_assert_int_eq(kvs__index_insert(ix, &k0, &a), 0);
  ck_assert_int_eq(kvs__index_insert(ix, &k1, &b), 0);
  ck_assert_int_eq(kvs__index_insert(ix, &k0, &b), -EEXIST);
  ck_assert_ptr_eq(kvs__index_find(ix, &k0), &a);
  ck_assert_ptr_eq(kvs__index_find(ix, &k1), &b);
  ck_assert_int_eq(kvs__index_remove(ix, &k0), 0);
  ck_assert_int_eq(kvs__index_remove(ix, &k0), -ENOENT);
  ck_assert_ptr_null(kvs__index_find(ix, &k0));
  ck_assert_ptr_eq(kvs__index_find(ix, &k1), &b);
  ck_assert_int_eq(kvs__index_insert(ix, &k0, NULL), -EINVAL);
  kvs__index_close(ix);
}
END_TEST

/* Keys that all share one home slot exercise probing and backward shift. */
START_TEST(collisions)
{
  kvs__index *ix;
  ck_assert_int_eq(kvs__index_init(&ix), 0);
  static int v[40];
  kvs__ikey k[40];
  for (int i = 0; i < 40; i++) {
    k[i].h.lo = 5; /* same home for every layer-0 key */
    k[i].h.hi = (uint64_t)i;
    k[i].layer = 0;
    ck_assert_int_eq(kvs__index_insert(ix, &k[i], &v[i]), 0);
  }
  for (int i = 0; i < 40; i += 3)
    ck_assert_int_eq(kvs__index_remove(ix, &k[i]), 0);
  for (int i = 0; i < 40; i++) {
    if (i % 3 == 0)
      ck_assert_ptr_null(kvs__index_find(ix, &k[i]));
    else
      ck_assert_ptr_eq(kvs__index_find(ix, &k[i]), &v[i]);
  }
  kvs__index_close(ix);
}
END_TEST

START_TEST(many)
{
  enum { N = 20000 };
  kvs__index *ix;
  ck_assert_int_eq(kvs__index_init(&ix), 0);
  int *v = calloc(N, sizeof(int));
  for (uint32_t i = 0; i < N; i++) {
    kvs__ikey k = key_of(i / 4, i % 4);
    ck_assert_int_eq(kvs__index_insert(ix, &k, &v[i]), 0);
  }
  for (uint32_t i = 0; i < N; i += 2) {
    kvs__ikey k = key_of(i / 4, i % 4);
    ck_assert_int_eq(kvs__index_remove(ix, &k), 0);
  }
  for (uint32_t i = 0; i < N; i++) {
    kvs__ikey k = key_of(i / 4, i % 4);
    if (i % 2)
      ck_assert_ptr_eq(kvs__index_find(ix, &k), &v[i]);
    else
      ck_assert_ptr_null(kvs__index_find(ix, &k));
  }
  /* After a reserve, that many inserts succeed and all stay findable. */
  ck_assert_int_eq(kvs__index_reserve(ix, N), 0);
  for (uint32_t i = 0; i < N; i += 2) {
    kvs__ikey k = key_of(i / 4, i % 4);
    ck_assert_int_eq(kvs__index_insert(ix, &k, &v[i]), 0);
  }
  for (uint32_t i = 0; i < N; i++) {
    kvs__ikey k = key_of(i / 4, i % 4);
    ck_assert_ptr_eq(kvs__index_find(ix, &k), &v[i]);
  }
  free(v);
  kvs__index_close(ix);
}
END_TEST

START_TEST(hash)
{
  uint32_t a[3] = {1, 2, 3}, b[3] = {1, 2, 4};
  ck_assert_uint_ne(kvs__hash64(a, sizeof(a), 0), kvs__hash64(b, sizeof(b), 0));
  ck_assert_uint_ne(kvs__hash64(a, sizeof(a), 0), kvs__hash64(a, sizeof(a), 1));
  ck_assert_uint_eq(kvs__hash64(a, sizeof(a), 7), kvs__hash64(a, sizeof(a), 7));
  /* A trailing zero byte changes the hash. */
  unsigned char x[2] = {'a', 0};
  ck_assert_uint_ne(kvs__hash64(x, 1, 0), kvs__hash64(x, 2, 0));
}
END_TEST

int main(void)
{
  Suite *s = suite_create("index");
  TCase *tc = tcase_create("index");
  tcase_add_test(tc, basic);
  tcase_add_test(tc, collisions);
  tcase_add_test(tc, many);
  tcase_add_test(tc, hash);
  suite_add_tcase(s, tc);
  SRunner *r = srunner_create(s);
  srunner_run_all(r, CK_NORMAL);
  int nf = srunner_ntests_failed(r);
  srunner_free(r);
  return nf ? EXIT_FAILURE : EXIT_SUCCESS;
}
