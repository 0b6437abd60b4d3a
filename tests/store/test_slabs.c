/* SPDX-License-Identifier: MIT */
/* Record slabs (store/rec.c): after the first slab a helper thread keeps
 * the next one mapped and faulted in, so a cut that needs a new slab
 * takes the spare instead of mapping 2 MiB inside a put; records stay
 * distinct, aligned and writable across slabs; KVSINK_SLAB_SPARE=0 maps
 * every slab inline. The free stacks keep their entries as they grow. */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store/rec.h"

/* one-line records until the slabs number `slabs`; each record filled
 * with its index, every earlier one checked still intact */
static void cut_until(kvs__recs *r, kvs__slabs *s, uint64_t slabs, unsigned char ***recs, size_t *n,
                      size_t *cap)
{
  while (s->made < slabs) {
    unsigned char *p = kvs__rec_cut(r, s, 1);
    if (!p || (uintptr_t)p % 64u)
      ck_abort_msg("record %zu: %p", *n, (void *)p);
    if (*n == *cap) {
      *cap = *cap ? 2 * *cap : 4096;
      *recs = realloc(*recs, *cap * sizeof **recs);
      ck_assert_ptr_nonnull(*recs);
    }
    memset(p, (int)(*n & 0xffu), 64);
    (*recs)[(*n)++] = p;
  }
  size_t bad = 0; /* (one assert at the end: each is a message to check's parent) */
  for (size_t i = 0; i < *n; i++)
    for (size_t b = 0; b < 64; b++)
      bad += (*recs)[i][b] != (i & 0xffu);
  ck_assert_uint_eq(bad, 0);
}

START_TEST(new_slabs_are_spares)
{
  unsetenv("KVSINK_SLAB_SPARE");
  kvs__slabs s;
  kvs__slabs_init(&s);
  kvs__recs r = {0};
  unsigned char **recs = NULL;
  size_t n = 0, cap = 0;
  cut_until(&r, &s, 1, &recs, &n, &cap);
  ck_assert_uint_eq(s.spares_taken, 0); /* the first is made inline, and starts the helper */
  for (uint64_t k = 2; k <= 4; k++) {
    ck_assert(kvs__slabs_spare_ready(&s, 60000));
    cut_until(&r, &s, k, &recs, &n, &cap);
    ck_assert_uint_eq(s.spares_taken, k - 1);
  }
  ck_assert_uint_gt(n, 3u * 32000u); /* four slabs' worth of records */
  free(recs);
  kvs__recs_reset(&r);
  kvs__slabs_close(&s);
}
END_TEST

START_TEST(off_maps_inline)
{
  setenv("KVSINK_SLAB_SPARE", "0", 1);
  kvs__slabs s;
  kvs__slabs_init(&s);
  unsetenv("KVSINK_SLAB_SPARE");
  kvs__recs r = {0};
  unsigned char **recs = NULL;
  size_t n = 0, cap = 0;
  cut_until(&r, &s, 3, &recs, &n, &cap);
  ck_assert_int_eq(kvs__slabs_spare_ready(&s, 10), 0);
  ck_assert_uint_eq(s.spares_taken, 0);
  ck_assert_int_eq(s.started, 0);
  free(recs);
  kvs__recs_reset(&r);
  kvs__slabs_close(&s);
}
END_TEST

START_TEST(close_with_a_spare_and_unused)
{
  unsetenv("KVSINK_SLAB_SPARE");
  kvs__slabs s;
  kvs__slabs_init(&s);
  kvs__slabs_close(&s); /* never used: no thread, nothing mapped */
  kvs__slabs_init(&s);
  kvs__recs r = {0};
  ck_assert_ptr_nonnull(kvs__rec_cut(&r, &s, 2));
  ck_assert(kvs__slabs_spare_ready(&s, 60000));
  kvs__recs_reset(&r);
  kvs__slabs_close(&s); /* the helper joined, the spare unmapped (ASan: no leak) */
}
END_TEST

/* The free stacks grow (mremap) with their entries in place: records
 * given back before and after growths all come back, each once. */
START_TEST(free_stack_keeps_its_entries)
{
  kvs__slabs s;
  kvs__slabs_init(&s);
  kvs__recs r = {0};
  const size_t n = 70000; /* the stack of one-line records grows 7 times */
  void **got = malloc(n * sizeof *got);
  ck_assert_ptr_nonnull(got);
  for (size_t i = 0; i < n; i++) {
    got[i] = kvs__rec_get(&r, &s, 1);
    ck_assert_ptr_nonnull(got[i]);
    if (i % 3 == 0) { /* some back at once: popped again before the next cut */
      kvs__rec_put(&r, got[i], 1);
      ck_assert_ptr_eq(kvs__rec_get(&r, &s, 1), got[i]);
    }
  }
  ck_assert_uint_ge(r.cap[1], n);
  for (size_t i = 0; i < n; i++)
    kvs__rec_put(&r, got[i], 1);
  ck_assert_uint_eq(r.nfree[1], n);
  /* LIFO: they come back in reverse order, no new record made */
  const size_t made = r.made[1];
  size_t bad = 0;
  for (size_t i = n; i-- > 0;)
    bad += kvs__rec_get(&r, &s, 1) != got[i];
  ck_assert_uint_eq(bad, 0);
  ck_assert_uint_eq(r.made[1], made);
  free(got);
  kvs__recs_reset(&r);
  kvs__slabs_close(&s);
}
END_TEST

int main(void)
{
  Suite *su = suite_create("slabs");
  TCase *tc = tcase_create("slabs");
  tcase_set_timeout(tc, 180);
  tcase_add_test(tc, new_slabs_are_spares);
  tcase_add_test(tc, off_maps_inline);
  tcase_add_test(tc, close_with_a_spare_and_unused);
  tcase_add_test(tc, free_stack_keeps_its_entries);
  suite_add_tcase(su, tc);
  SRunner *sr = srunner_create(su);
  srunner_run_all(sr, CK_NORMAL);
  int nf = srunner_ntests_failed(sr);
  srunner_free(sr);
  return nf ? EXIT_FAILURE : EXIT_SUCCESS;
}
