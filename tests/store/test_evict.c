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


/* The LRU keeps its order through touches (each one leaves a stale entry
 * in the class's ring, compacted as they pile up), and evictions hand
 * their slots straight to the new blocks (4 slots a chunk) without
 * changing what the pool counts. */
START_TEST(lru_order_through_touches)
{
  size_t bb = probe_slot(2, 2);
  kvs__store *s;
  kvs__store_opts o = {.pool_bytes = 16 * bb, .chunk_bytes = 4 * bb}; /* 8 groups of 2 blocks */
  ck_assert_int_eq(kvs__store_init(&s, &o), 0);
  kvs__space_key key = tkey(2, 2);
  kvs__space *sp;
  ck_assert_int_eq(kvs__space_ref(s, &key, NULL, &sp), 0);
  uint16_t *k = trandkv(NL, G, 7), *v = trandkv(NL, G, 8);
  uint32_t *t[10];
  for (uint32_t i = 0; i < 10; i++)
    t[i] = ttoks(G, 1000 + i * 100);
  for (uint32_t i = 0; i < 8; i++)
    ck_assert_int_eq(tput_free(sp, t[i], G, k, v), 0);
  ck_assert_uint_eq(tstats(s).pool_free_bytes, 0);
  /* group 0 used again and again: the youngest now, t[1] the oldest */
  for (uint32_t i = 0; i < 500; i++)
    ck_assert_uint_eq(tcached(sp, t[0], G), G);
  ck_assert_int_eq(tput_free(sp, t[8], G, k, v), 0);
  ck_assert_int_eq(tput_free(sp, t[9], G, k, v), 0);
  kvs__store_stats st = tstats(s);
  ck_assert_uint_eq(st.evictions, 4);
  ck_assert_uint_eq(st.blocks, 16);
  ck_assert_uint_eq(st.pool_used_bytes, 16 * bb);
  ck_assert_uint_eq(st.pool_free_bytes, 0);
  ck_assert_uint_eq(tcached(sp, t[1], G), 0);
  ck_assert_uint_eq(tcached(sp, t[2], G), 0);
  for (uint32_t i = 3; i < 10; i++)
    ck_assert_uint_eq(tcached(sp, t[i], G), G);
  ck_assert_uint_eq(tcached(sp, t[0], G), G);
  kvs__space_unref(sp);
  for (uint32_t i = 0; i < 10; i++)
    free(t[i]);
  free(k);
  free(v);
  kvs__store_close(s);
}
END_TEST

/* A size with no free chunk and no blocks of its own takes the oldest
 * blocks of all classes, in the order they became unreferenced, until a
 * chunk is free, whichever class they are of: first one of A's (a chunk
 * each) before B's younger ones, then both of B's (which share a chunk)
 * before A's younger ones. */
START_TEST(oldest_of_all_classes)
{
  size_t ba = probe_slot(16, 16), bb = probe_slot(2, 2);
  ck_assert_uint_ge(ba / bb, 2);
  kvs__store *s;
  kvs__store_opts o = {.pool_bytes = 4 * ba, .chunk_bytes = ba};
  ck_assert_int_eq(kvs__store_init(&s, &o), 0);
  kvs__space_key ka = tkey(16, 16), kb = tkey(2, 2), kc = tkey(4, 4);
  kvs__space *a, *b, *c;
  ck_assert_int_eq(kvs__space_ref(s, &ka, NULL, &a), 0);
  ck_assert_int_eq(kvs__space_ref(s, &kb, NULL, &b), 0);
  ck_assert_int_eq(kvs__space_ref(s, &kc, NULL, &c), 0);
  uint16_t *k = trandkv(NL, G, 3), *v = trandkv(NL, G, 4);
  uint32_t *t1 = ttoks(G, 1), *t2 = ttoks(G, 500), *t3 = ttoks(G, 900), *t4 = ttoks(G, 1300);
  ck_assert_int_eq(tput_free(a, t1, G, k, v), 0); /* 2 chunks */
  ck_assert_int_eq(tput_free(b, t2, G, k, v), 0); /* 1 chunk */
  ck_assert_int_eq(tput_free(a, t3, G, k, v), 0); /* the last chunk and a1's layer 0 */
  ck_assert_uint_eq(tstats(s).evictions, 1);
  ck_assert_uint_eq(tcached(b, t2, G), G); /* (a use: b's blocks are the youngest now) */
  ck_assert_int_eq(tput_free(c, t4, G, k, v), 0);
  /* c's chunk came from a1's layer 1 (the oldest of all), b kept both */
  ck_assert_uint_eq(tstats(s).evictions, 2);
  ck_assert_uint_eq(tcached(a, t1, G), 0);
  ck_assert_uint_eq(tcached(a, t3, G), G);
  ck_assert_uint_eq(tcached(b, t2, G), G);
  ck_assert_uint_eq(tcached(c, t4, G), G);
  ck_assert_uint_eq(tstats(s).blocks, 6);
  kvs__space_unref(a);
  kvs__space_unref(b);
  kvs__space_unref(c);
  kvs__store_close(s);

  /* B's blocks the oldest: both go, A's stay */
  o.pool_bytes = 3 * ba;
  ck_assert_int_eq(kvs__store_init(&s, &o), 0);
  ck_assert_int_eq(kvs__space_ref(s, &ka, NULL, &a), 0);
  ck_assert_int_eq(kvs__space_ref(s, &kb, NULL, &b), 0);
  ck_assert_int_eq(kvs__space_ref(s, &kc, NULL, &c), 0);
  ck_assert_int_eq(tput_free(b, t2, G, k, v), 0); /* 1 chunk */
  ck_assert_int_eq(tput_free(a, t1, G, k, v), 0); /* 2 chunks: full */
  ck_assert_uint_eq(tstats(s).pool_free_bytes, 0);
  ck_assert_int_eq(tput_free(c, t4, G, k, v), 0);
  ck_assert_uint_eq(tstats(s).evictions, 2);
  ck_assert_uint_eq(tcached(b, t2, G), 0);
  ck_assert_uint_eq(tcached(a, t1, G), G);
  ck_assert_uint_eq(tcached(c, t4, G), G);
  kvs__space_unref(a);
  kvs__space_unref(b);
  kvs__space_unref(c);
  free(t1);
  free(t2);
  free(t3);
  free(t4);
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
  tcase_add_test(tc, lru_order_through_touches);
  tcase_add_test(tc, oldest_of_all_classes);
  suite_add_tcase(s, tc);
  SRunner *r = srunner_create(s);
  srunner_run_all(r, CK_NORMAL);
  int nf = srunner_ntests_failed(r);
  srunner_free(r);
  return nf ? EXIT_FAILURE : EXIT_SUCCESS;
}
