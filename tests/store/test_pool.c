/* SPDX-License-Identifier: MIT */
/* The slab pool: classes, chunk reuse, exhaustion. */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store/pool.h"

#define CH 4096u

static kvs__pool *mk(size_t chunks)
{
  kvs__pool *p = NULL;
  ck_assert_int_eq(kvs__pool_init(&p, &kvs__backend_host, chunks * CH, CH), 0);
  return p;
}

START_TEST(classes)
{
  kvs__pool *p = mk(4);
  int a = kvs__pool_class(p, 100), b = kvs__pool_class(p, 1000), a2 = kvs__pool_class(p, 128);
  ck_assert_int_ge(a, 0);
  ck_assert_int_ge(b, 0);
  ck_assert_int_ne(a, b);
  ck_assert_int_eq(a, a2); /* 100 and 128 round to the same 64-byte slot */
  ck_assert_int_eq(kvs__pool_class(p, 0), -EINVAL);
  ck_assert_int_eq(kvs__pool_class(p, 5 * CH), -E2BIG);
  void *x, *y;
  ck_assert_int_eq(kvs__pool_alloc(p, a, &x), 0);
  ck_assert_int_eq(kvs__pool_alloc(p, b, &y), 0);
  /* Each class took its own chunk. */
  ck_assert_uint_eq(kvs__pool_free_bytes(p), 2 * CH);
  ck_assert_uint_eq((uintptr_t)x % KVS_POOL_ALIGN, 0);
  ck_assert_uint_eq((uintptr_t)y % KVS_POOL_ALIGN, 0);
  ck_assert_uint_eq(kvs__pool_used_bytes(p), 128 + 1024); /* 100 rounded to 128 */
  ck_assert_int_eq(kvs__pool_alloc(p, 7, &x), -EINVAL);
  kvs__pool_close(p);
}
END_TEST

START_TEST(fill_reuse)
{
  kvs__pool *p = mk(2);
  int a = kvs__pool_class(p, 1024); /* 4 per chunk */
  void *s[8];
  for (int i = 0; i < 8; i++)
    ck_assert_int_eq(kvs__pool_alloc(p, a, &s[i]), 0);
  /* Distinct and non-overlapping. */
  for (int i = 0; i < 8; i++)
    for (int j = i + 1; j < 8; j++) {
      intptr_t d = (char *)s[i] - (char *)s[j];
      ck_assert(d >= 1024 || d <= -1024);
    }
  for (int i = 0; i < 8; i++)
    memset(s[i], i, 1024);
  void *z = (void *)1;
  ck_assert_int_eq(kvs__pool_alloc(p, a, &z), -ENOSPC);
  ck_assert_ptr_eq(z, (void *)1); /* untouched on failure */
  ck_assert_uint_eq(kvs__pool_used_bytes(p), 8 * 1024);
  int b = kvs__pool_class(p, 2048);
  ck_assert_int_eq(kvs__pool_alloc(p, b, &z), -ENOSPC);
  /* Freeing one slot lets the same class reuse it, not the other class. */
  kvs__pool_free(p, s[3]);
  ck_assert_int_eq(kvs__pool_alloc(p, b, &z), -ENOSPC);
  ck_assert_int_eq(kvs__pool_alloc(p, a, &z), 0);
  ck_assert_ptr_eq(z, s[3]);
  /* A chunk whose slots are all free returns to the free list. */
  for (int i = 4; i < 8; i++)
    kvs__pool_free(p, s[i]);
  ck_assert_uint_eq(kvs__pool_free_bytes(p), CH);
  ck_assert_int_eq(kvs__pool_alloc(p, b, &z), 0);
  ck_assert_uint_eq(kvs__pool_free_bytes(p), 0);
  kvs__pool_close(p);
}
END_TEST

START_TEST(span)
{
  kvs__pool *p = mk(5);
  int a = kvs__pool_class(p, 64), big = kvs__pool_class(p, 2 * CH + 1); /* 3 chunks */
  ck_assert_int_ge(big, 0);
  void *x, *y, *m;
  ck_assert_int_eq(kvs__pool_alloc(p, a, &x), 0); /* chunk 0 */
  ck_assert_int_eq(kvs__pool_alloc(p, big, &y), 0); /* chunks 1..3 */
  memset(y, 0xab, 2 * CH + 1);
  ck_assert_int_eq(kvs__pool_alloc(p, big, &m), -ENOSPC); /* only 1 chunk left */
  kvs__pool_free(p, x);
  ck_assert_int_eq(kvs__pool_alloc(p, big, &m), -ENOSPC); /* 0 and 4 not contiguous */
  kvs__pool_free(p, y);
  ck_assert_uint_eq(kvs__pool_free_bytes(p), 5 * CH);
  ck_assert_int_eq(kvs__pool_alloc(p, big, &m), 0);
  ck_assert_int_eq(kvs__pool_alloc(p, a, &x), 0);
  kvs__pool_close(p);
}
END_TEST

START_TEST(bad_init)
{
  kvs__pool *p = NULL;
  ck_assert_int_eq(kvs__pool_init(&p, &kvs__backend_host, CH - 1, CH), -EINVAL);
  ck_assert_int_eq(kvs__pool_init(&p, NULL, CH, CH), -EINVAL);
  ck_assert_int_eq(kvs__pool_init(&p, &kvs__backend_host, 256u << 20, 0), 0);
  ck_assert_uint_eq(kvs__pool_bytes(p), 256u << 20);
  /* 2 MiB chunks: a slot of 2 MiB + 1 takes two of them. */
  int big = kvs__pool_class(p, (2u << 20) + 1);
  void *x;
  ck_assert_int_eq(kvs__pool_alloc(p, big, &x), 0);
  ck_assert_uint_eq(kvs__pool_free_bytes(p), (256u << 20) - (4u << 20));
  kvs__pool_close(p);
  /* A small pool gets smaller chunks by default, still 64 of them. */
  ck_assert_int_eq(kvs__pool_init(&p, &kvs__backend_host, 1u << 20, 0), 0);
  ck_assert_uint_eq(kvs__pool_free_bytes(p), 1u << 20);
  int one = kvs__pool_class(p, 64);
  ck_assert_int_eq(kvs__pool_alloc(p, one, &x), 0);
  ck_assert_uint_eq(kvs__pool_free_bytes(p), (1u << 20) - 16384);
  kvs__pool_close(p);
}
END_TEST

/* Classes are counted: an id comes back only when its last holder lets go,
 * and then serves another size, so sizes that come and go never run out. */
/* A backend that asks for VMM chunks on a GPU that cannot give them (no
 * driver here, or no such GPU): the pool falls back to the backend's one
 * allocation and is not exportable, as before GPU tables. */
static int fb_allocs;
static int fb_alloc(kvs__backend *b, size_t bytes, void **base)
{
  fb_allocs++;
  return kvs__backend_host.pool_alloc(b, bytes, base);
}
static void fb_free(kvs__backend *b, void *base) { kvs__backend_host.pool_free(b, base); }

START_TEST(vmm_fallback)
{
  kvs__backend be = kvs__backend_host;
  be.name = "fallback";
  be.pool_alloc = fb_alloc;
  be.pool_free = fb_free;
  be.chunk_gpu = 1 + 63; /* GPU 63: absent everywhere this runs */
  kvs__pool *p;
  fb_allocs = 0;
  ck_assert_int_eq(kvs__pool_init(&p, &be, 64u << 20, 2u << 20), 0);
  ck_assert_int_eq(fb_allocs, 1);
  ck_assert_int_eq(kvs__pool_exportable(p), 0);
  ck_assert_int_eq(kvs__pool_gpu(p), -1);
  int cls = kvs__pool_class(p, 1000);
  void *slot;
  kvs__pool_loc loc;
  ck_assert_int_ge(cls, 0);
  ck_assert_int_eq(kvs__pool_alloc(p, cls, &slot), 0);
  ck_assert_int_eq(kvs__pool_locate(p, slot, &loc), -ENOTSUP);
  ck_assert_int_eq(kvs__pool_chunk_export(p, 0, NULL), -EINVAL);
  kvs__pool_free(p, slot);
  kvs__pool_class_put(p, cls);
  kvs__pool_close(p);
}
END_TEST

START_TEST(class_refs)
{
  kvs__pool *p = mk(4);
  int a = kvs__pool_class(p, 256), a2 = kvs__pool_class(p, 256);
  ck_assert_int_eq(a, a2);
  kvs__pool_class_put(p, a);
  ck_assert_int_eq(kvs__pool_class(p, 512), a + 1); /* a still held once */
  kvs__pool_class_put(p, a);
  void *x;
  ck_assert_int_eq(kvs__pool_alloc(p, a, &x), -EINVAL); /* released */
  ck_assert_int_eq(kvs__pool_class(p, 1024), a);          /* reused for a new size */
  ck_assert_int_eq(kvs__pool_alloc(p, a, &x), 0);
  kvs__pool_free(p, x);
  /* Far more sizes than class ids, one at a time. */
  kvs__pool_class_put(p, a);
  for (unsigned i = 0; i < 4 * KVS_POOL_MAX_CLASSES; i++) {
    int c = kvs__pool_class(p, 64u * (i + 1) % CH + 64u);
    ck_assert_int_ge(c, 0);
    kvs__pool_class_put(p, c);
  }
  /* One size, one class per owner (chunks never mix owners); all ids
   * held: the next new class is refused. */
  int ids[KVS_POOL_MAX_CLASSES];
  for (unsigned i = 0; i < KVS_POOL_MAX_CLASSES - 1; i++) {
    ck_assert_int_ge(ids[i] = kvs__pool_class_owned(p, 128, i + 1), 0);
    if (i)
      ck_assert_int_ne(ids[i], ids[i - 1]);
  }
  ck_assert_int_eq(kvs__pool_class_owned(p, 128, 1), ids[0]); /* same owner: shared */
  kvs__pool_class_put(p, ids[0]);
  ck_assert_int_eq(kvs__pool_class(p, 64u * 10), -ENOSPC);
  kvs__pool_close(p);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("pool");
  TCase *tc = tcase_create("pool");
  tcase_add_test(tc, classes);
  tcase_add_test(tc, fill_reuse);
  tcase_add_test(tc, span);
  tcase_add_test(tc, bad_init);
  tcase_add_test(tc, class_refs);
  tcase_add_test(tc, vmm_fallback);
  suite_add_tcase(s, tc);
  SRunner *r = srunner_create(s);
  srunner_run_all(r, CK_NORMAL);
  int nf = srunner_ntests_failed(r);
  srunner_free(r);
  return nf ? EXIT_FAILURE : EXIT_SUCCESS;
}
