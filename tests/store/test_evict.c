/* SPDX-License-Identifier: MIT */
/* Eviction across spaces of different block sizes (per-class LRU, issue
 * 9.6), pool classes that come and go, and honest pool capacity stats. */
#include "tests/store/util.h"

#include <errno.h>

static size_t slot_of(const kvs__space *sp)
{
  kvs__qlayout ql;
  return (kvs__qlayout_of(kvs__space_qparams(sp), &ql) + 63) / 64 * 64;
}

/* Slot bytes of spaces with these bits, from a throwaway store. */
static size_t probe_slot(uint32_t kb, uint32_t vb)
{
  kvs__store *s;
  kvs__store_opts o = {.pool_bytes = 1u << 20};
  ck_assert_int_eq(kvs__store_init(&s, &o), 0);
  kvs__space_key key = tkey(kb, vb);
  kvs__space *sp;
  ck_assert_int_eq(kvs__space_ref(s, &key, NULL, &sp), 0);
  size_t b = slot_of(sp);
  kvs__space_unref(sp);
  kvs__store_close(s);
  return b;
}

/* A holds 8 old blocks; B fills the rest of the pool and keeps putting:
 * B takes back its own old blocks, never A's, though A's are older. */
START_TEST(second_space_keeps_to_its_share)
{
  size_t ba = probe_slot(16, 16), bb = probe_slot(2, 2);
  ck_assert_uint_gt(ba, bb);
  const uint32_t nchunks = 16, spb = (uint32_t)(ba / bb); /* B slots per chunk */
  kvs__store *s;
  kvs__store_opts o = {.pool_bytes = nchunks * ba, .chunk_bytes = ba};
  ck_assert_int_eq(kvs__store_init(&s, &o), 0);
  kvs__space_key ka = tkey(16, 16), kb = tkey(2, 2);
  kvs__space *a, *b;
  ck_assert_int_eq(kvs__space_ref(s, &ka, NULL, &a), 0);
  ck_assert_int_eq(kvs__space_ref(s, &kb, NULL, &b), 0);
  uint16_t *k = trandkv(NL, 4 * G, 1), *v = trandkv(NL, 4 * G, 2);
  uint32_t *ta = ttoks(4 * G, 1);
  ck_assert_int_eq(tput_free(a, ta, 4 * G, k, v), 0); /* 8 blocks, 8 chunks */
  ck_assert_uint_eq(tstats(s).blocks, 8);
  ck_assert_uint_eq(tstats(s).pool_free_bytes, 8 * ba);
  /* B: one group (2 blocks) per seq, twice what its 8 chunks hold. */
  const uint32_t bcap = 8 * spb, nput = bcap; /* 2 blocks each */
  for (uint32_t i = 0; i < nput; i++) {
    uint32_t *tb = ttoks(G, 100000 + i * 1000);
    ck_assert_int_eq(tput_free(b, tb, G, k, v), 0);
    free(tb);
  }
  kvs__store_stats st = tstats(s);
  ck_assert_uint_eq(st.blocks, 8 + bcap);
  ck_assert_uint_eq(st.evictions, 2 * nput - bcap); /* all of them B's own */
  ck_assert_uint_eq(st.pool_free_bytes, 0);
  ck_assert_uint_eq(tcached(a, ta, 4 * G), 4 * G);
  /* B's newest are there, its oldest gone. */
  uint32_t *tb0 = ttoks(G, 100000), *tbn = ttoks(G, 100000 + (nput - 1) * 1000);
  ck_assert_uint_eq(tcached(b, tb0, G), 0);
  ck_assert_uint_eq(tcached(b, tbn, G), G);
  free(tb0);
  free(tbn);
  kvs__space_unref(a);
  kvs__space_unref(b);
  free(ta);
  free(k);
  free(v);
  kvs__store_close(s);
}
END_TEST

/* A new size with no free chunk takes from the oldest blocks only what one
 * chunk needs, then fills that chunk without evicting more. */
START_TEST(new_size_takes_one_chunk)
{
  size_t ba = probe_slot(16, 16), bb = probe_slot(2, 2);
  const uint32_t spb = (uint32_t)(ba / bb);
  ck_assert_uint_ge(spb, 2);
  kvs__store *s;
  kvs__store_opts o = {.pool_bytes = 8 * ba, .chunk_bytes = ba};
  ck_assert_int_eq(kvs__store_init(&s, &o), 0);
  kvs__space_key ka = tkey(16, 16), kb = tkey(2, 2);
  kvs__space *a, *b;
  ck_assert_int_eq(kvs__space_ref(s, &ka, NULL, &a), 0);
  uint16_t *k = trandkv(NL, 4 * G, 3), *v = trandkv(NL, 4 * G, 4);
  uint32_t *ta = ttoks(4 * G, 1);
  ck_assert_int_eq(tput_free(a, ta, 4 * G, k, v), 0); /* all 8 chunks */
  ck_assert_uint_eq(tstats(s).pool_free_bytes, 0);
  ck_assert_uint_eq(tstats(s).pool_used_bytes, 8 * ba);
  ck_assert_int_eq(kvs__space_ref(s, &kb, NULL, &b), 0);
  /* One group of B = 2 blocks: one chunk, one eviction (A's oldest). */
  uint32_t *tb = ttoks(G, 500);
  ck_assert_int_eq(tput_free(b, tb, G, k, v), 0);
  ck_assert_uint_eq(tstats(s).evictions, 1);
  ck_assert_uint_eq(tstats(s).blocks, 7 + 2);
  ck_assert_uint_eq(tstats(s).pool_used_bytes, 7 * ba + 2 * bb);
  free(tb);
  kvs__space_unref(a);
  kvs__space_unref(b);
  free(ta);
  free(k);
  free(v);
  kvs__store_close(s);
}
END_TEST

/* Spaces of ever new sizes, one after the other: the class ids of gone
 * spaces are reused, so this never runs out (64 ids, 2 per space). */
START_TEST(classes_freed_with_spaces)
{
  kvs__store *s;
  kvs__store_opts o = {.pool_bytes = 4u << 20};
  ck_assert_int_eq(kvs__store_init(&s, &o), 0);
  uint16_t *k = trandkv(NL, G, 5), *v = trandkv(NL, G, 6);
  uint32_t *t = ttoks(G, 9);
  static const uint32_t bits[] = {2, 3, 4, 8, 16};
  for (uint32_t i = 0; i < 200; i++) {
    kvs__space_key key = tkey(bits[i % 5], bits[(i / 5) % 5]);
    key.head_dim = 8u * (1u + (i / 25) % 8);
    kvs__space *sp;
    ck_assert_int_eq(kvs__space_ref(s, &key, NULL, &sp), 0);
    uint32_t c = key.n_kv_heads * key.head_dim;
    uint16_t *kk = trandkv(NL, G * c / C + 1, i), *vv = trandkv(NL, G * c / C + 1, i + 1);
    kvs__seq *q;
    char err[KVS_STORE_ERRMSG];
    ck_assert_int_eq(kvs__seq_new(sp, &q), 0);
    ck_assert_int_eq(kvs__seq_put(q, 0, t, G, 0, NL, kk, vv, NULL, 0, NULL, err), 0);
    kvs__seq_free(q);
    kvs__space_unref(sp);
    ck_assert_uint_eq(kvs__store_evict_all(s), 2); /* the space goes with its blocks */
    ck_assert_uint_eq(tstats(s).spaces, 0);
    ck_assert_uint_eq(tstats(s).pool_used_bytes, 0);
    free(kk);
    free(vv);
  }
  free(t);
  free(k);
  free(v);
  kvs__store_close(s);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("evict");
  TCase *tc = tcase_create("evict");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, second_space_keeps_to_its_share);
  tcase_add_test(tc, new_size_takes_one_chunk);
  tcase_add_test(tc, classes_freed_with_spaces);
  suite_add_tcase(s, tc);
  SRunner *r = srunner_create(s);
  srunner_run_all(r, CK_NORMAL);
  int nf = srunner_ntests_failed(r);
  srunner_free(r);
  return nf ? EXIT_FAILURE : EXIT_SUCCESS;
}
