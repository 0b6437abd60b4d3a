/* SPDX-License-Identifier: MIT */
/* Block identity (issue 10.3): the chain hash is keyed per store, a hit
 * compares token ids, and a salt keeps spaces of one namespace apart. */
#include "tests/store/util.h"

#include <errno.h>
#include <sodium.h>

#include "store/store_int.h"

static kvs__store *mk(const unsigned char *key)
{
  kvs__store *s;
  kvs__store_opts o = {.pool_bytes = 1u << 20};
  if (key)
    memcpy(o.hash_key, key, sizeof(o.hash_key));
  ck_assert_int_eq(kvs__store_init(&s, &o), 0);
  return s;
}

static void get_all(kvs__seq *q, uint32_t n, uint16_t *k, uint16_t *v)
{
  char err[KVS_STORE_ERRMSG];
  ck_assert_int_eq(kvs__seq_get(q, 0, n, 0, NL, k, v, err), 0);
}

/* Two token sequences forced onto one index key must not share a block. */
START_TEST(forced_collision)
{
  kvs__store *s = mk(NULL);
  kvs__space_key key = tkey(16, 16); /* passthrough: reads are bit-exact */
  kvs__space *sp;
  ck_assert_int_eq(kvs__space_ref(s, &key, NULL, &sp), 0);
  uint16_t *ka = trandkv(NL, G, 1), *va = trandkv(NL, G, 2);
  uint16_t *kb = trandkv(NL, G, 3), *vb = trandkv(NL, G, 4);
  uint32_t *ta = ttoks(G, 10), *tb = ttoks(G, 20);
  char err[KVS_STORE_ERRMSG];
  kvs__seq *a, *b;
  ck_assert_int_eq(kvs__seq_new(sp, &a), 0);
  ck_assert_int_eq(kvs__seq_put(a, 0, ta, G, 0, NL, ka, va, NULL, 0, NULL, err), 0);
  /* The collision: A's group (all its layers) re-filed under B's chain
   * hash. */
  kvs__h128 hb = kvs__chain_next(sp, NULL, tb);
  kvs__group *x = a->l[0].blk[0]->grp;
  kvs__ikey xk = {x->h, 0};
  ck_assert_int_eq(kvs__index_remove(s->ix, &xk), 0);
  x->h = xk.h = hb;
  ck_assert_int_eq(kvs__index_insert(s->ix, &xk, x), 0);
  ck_assert_uint_eq(tcached(sp, tb, G), 0); /* ids differ: no hit */
  ck_assert_int_eq(kvs__seq_new(sp, &b), 0);
  uint32_t cached = 99;
  ck_assert_int_eq(kvs__space_lookup(sp, tb, G, b, &cached), 0);
  ck_assert_uint_eq(cached, 0);
  ck_assert_int_eq(kvs__seq_put(b, 0, tb, G, 0, NL, kb, vb, NULL, 0, NULL, err), 0);
  ck_assert_uint_eq(tstats(s).blocks, 2 * NL); /* B got blocks of its own */
  uint16_t *gk = malloc((size_t)NL * G * C * 2), *gv = malloc((size_t)NL * G * C * 2);
  get_all(b, G, gk, gv);
  ck_assert_int_eq(memcmp(gk, kb, (size_t)NL * G * C * 2), 0);
  ck_assert_int_eq(memcmp(gv, vb, (size_t)NL * G * C * 2), 0);
  get_all(a, G, gk, gv);
  ck_assert_int_eq(memcmp(gk, ka, (size_t)NL * G * C * 2), 0);
  ck_assert_int_eq(memcmp(gv, va, (size_t)NL * G * C * 2), 0);
  /* B's private blocks leave A's index entries alone when they go. */
  kvs__seq_free(b);
  ck_assert_uint_eq(kvs__store_evict_all(s), NL);
  ck_assert_ptr_eq(kvs__index_find(s->ix, &xk), x);
  for (uint32_t l = 0; l < NL; l++)
    ck_assert_ptr_eq(x->blk[l], a->l[l].blk[0]);
  kvs__seq_free(a);
  kvs__space_unref(sp);
  free(gk);
  free(gv);
  free(ka);
  free(va);
  free(kb);
  free(vb);
  free(ta);
  free(tb);
  kvs__store_close(s);
}
END_TEST

/* A salt joins the space key: other salt, no sharing; same salt (bytes
 * past salt_len ignored), sharing. */
START_TEST(salt_separates)
{
  kvs__store *s = mk(NULL);
  kvs__space_key k0 = tkey(4, 2), k1 = k0, k2 = k0, k3 = k0;
  memcpy(k1.salt, "tenant-a", 8);
  k1.salt_len = 8;
  memcpy(k2.salt, "tenant-b", 8);
  k2.salt_len = 8;
  memcpy(k3.salt, "tenant-a-ignored", 16);
  k3.salt_len = 8;
  kvs__space *s0, *s1, *s2, *s3;
  ck_assert_int_eq(kvs__space_ref(s, &k0, NULL, &s0), 0);
  ck_assert_int_eq(kvs__space_ref(s, &k1, NULL, &s1), 0);
  ck_assert_int_eq(kvs__space_ref(s, &k2, NULL, &s2), 0);
  ck_assert_int_eq(kvs__space_ref(s, &k3, NULL, &s3), 0);
  ck_assert_ptr_ne(s0, s1);
  ck_assert_ptr_ne(s1, s2);
  ck_assert_ptr_eq(s1, s3);
  uint16_t *k = trandkv(NL, 2 * G, 5), *v = trandkv(NL, 2 * G, 6);
  uint32_t *t = ttoks(2 * G, 1);
  ck_assert_int_eq(tput_free(s1, t, 2 * G, k, v), 0);
  ck_assert_uint_eq(tcached(s1, t, 2 * G), 2 * G);
  ck_assert_uint_eq(tcached(s0, t, 2 * G), 0);
  ck_assert_uint_eq(tcached(s2, t, 2 * G), 0);
  k0.salt_len = 33;
  kvs__space *bad;
  ck_assert_int_eq(kvs__space_ref(s, &k0, NULL, &bad), -EINVAL);
  kvs__space_unref(s0);
  kvs__space_unref(s1);
  kvs__space_unref(s2);
  kvs__space_unref(s3);
  free(k);
  free(v);
  free(t);
  kvs__store_close(s);
}
END_TEST

static kvs__h128 first_chain(kvs__store *s, const uint32_t *t)
{
  kvs__space_key key = tkey(4, 2);
  kvs__space *sp;
  ck_assert_int_eq(kvs__space_ref(s, &key, NULL, &sp), 0);
  kvs__h128 h = kvs__chain_next(sp, NULL, t);
  kvs__space_unref(sp);
  return h;
}

/* The same key gives the same chain; another key, or none (drawn at
 * random), another. */
/* The chain hash is SipHash-2-4-128 of (seed, parent, ids) under a key
 * that is BLAKE2b-128 of a fixed label keyed with the store's key
 * (Decisions 19, 51): stores sharing the key (a Redis tier's hosts)
 * agree, and the label pins the format. */
START_TEST(chain_is_keyed_siphash)
{
  unsigned char hk[32];
  for (int i = 0; i < 32; i++) hk[i] = (unsigned char)(7 * i + 1);
  kvs__store *s = mk(hk);
  kvs__space_key key = tkey(4, 4);
  kvs__space *sp;
  ck_assert_int_eq(kvs__space_ref(s, &key, NULL, &sp), 0);
  uint32_t *t = ttoks(2 * G, 5);
  uint8_t ids[2][16];
  uint32_t local;
  ck_assert_int_eq(kvs__space_chain(sp, t, 2 * G, ids, &local), 0);
  uint64_t buf[4 + G / 2];
  unsigned char want[16], ck[16];
  static const char label[] = "kvsink chain siphash-2-4-128 v2";
  crypto_generichash(ck, 16, (const unsigned char *)label, sizeof label - 1, hk, 32);
  buf[0] = sp->seed.lo;
  buf[1] = sp->seed.hi;
  buf[2] = buf[3] = 0;
  memcpy(&buf[4], t, G * 4u);
  crypto_shorthash_siphashx24(want, (const unsigned char *)buf, sizeof buf, ck);
  ck_assert_mem_eq(ids[0], want, 16);
  memcpy(&buf[2], ids[0], 16);
  memcpy(&buf[4], t + G, G * 4u);
  crypto_shorthash_siphashx24(want, (const unsigned char *)buf, sizeof buf, ck);
  ck_assert_mem_eq(ids[1], want, 16);
  kvs__space_unref(sp);
  kvs__store_close(s);
  free(t);
}
END_TEST

START_TEST(keys_change_chains)
{
  unsigned char k1[32], k2[32];
  memset(k1, 0x11, sizeof(k1));
  memcpy(k2, k1, sizeof(k2));
  k2[31] ^= 1;
  uint32_t *t = ttoks(G, 3);
  kvs__store *a = mk(k1), *b = mk(k1), *c = mk(k2), *d = mk(NULL), *e = mk(NULL);
  kvs__h128 ha = first_chain(a, t), hb = first_chain(b, t), hc = first_chain(c, t),
            hd = first_chain(d, t), he = first_chain(e, t);
  ck_assert(ha.lo == hb.lo && ha.hi == hb.hi);
  ck_assert(ha.lo != hc.lo && ha.hi != hc.hi);
  ck_assert(hd.lo != he.lo && hd.hi != he.hi);
  ck_assert(hd.lo != ha.lo && hd.hi != ha.hi);
  kvs__store_close(a);
  kvs__store_close(b);
  kvs__store_close(c);
  kvs__store_close(d);
  kvs__store_close(e);
  free(t);
}
END_TEST


/* A put that fails half-way (no more blocks it may evict) files none of
 * its keys in the index, gives every record and slot back, and is not
 * half-visible; the same put succeeds once blocks are released. */
START_TEST(failed_put_files_nothing)
{
  kvs__store *s0 = mk(NULL);
  kvs__space_key key = tkey(16, 16);
  kvs__space *sp;
  ck_assert_int_eq(kvs__space_ref(s0, &key, NULL, &sp), 0);
  kvs__qlayout ql;
  size_t slot = (kvs__qlayout_of(kvs__space_qparams(sp), &ql) + 63) / 64 * 64;
  kvs__space_unref(sp);
  kvs__store_close(s0);
  /* 16 slots, 4 a chunk (so evictions hand their slots over directly) */
  kvs__store *s;
  kvs__store_opts o = {.pool_bytes = 16 * slot, .chunk_bytes = 4 * slot};
  ck_assert_int_eq(kvs__store_init(&s, &o), 0);
  ck_assert_int_eq(kvs__space_ref(s, &key, NULL, &sp), 0);
  const uint32_t n = 5 * G;
  uint16_t *k = trandkv(NL, n, 1), *v = trandkv(NL, n, 2);
  uint32_t *ta = ttoks(4 * G, 10), *tb = ttoks(2 * G, 5000), *tc = ttoks(n, 9000);
  char err[KVS_STORE_ERRMSG];
  kvs__seq *a, *c;
  ck_assert_int_eq(kvs__seq_new(sp, &a), 0);
  ck_assert_int_eq(kvs__seq_put(a, 0, ta, 4 * G, 0, NL, k, v, NULL, 0, NULL, err), 0); /* pinned */
  ck_assert_int_eq(tput_free(sp, tb, 2 * G, k, v), 0);                               /* evictable */
  /* 10 blocks wanted: 4 free slots and b's 4 blocks are not enough */
  ck_assert_int_eq(kvs__seq_new(sp, &c), 0);
  ck_assert_int_eq(kvs__seq_put(c, 0, tc, n, 0, NL, k, v, NULL, 0, NULL, err), -ENOSPC);
  ck_assert_uint_eq(kvs__seq_len(c), 0);
  kvs__h128 h = {0, 0};
  for (uint32_t g = 0; g < n / G; g++) {
    kvs__h128 prev = h;
    h = kvs__chain_next(sp, g ? &prev : NULL, tc + (size_t)g * G);
    kvs__ikey ik = {h, 0}; /* no group of c's is filed */
    ck_assert_ptr_null(kvs__index_find(s->ix, &ik));
  }
  kvs__store_stats st = tstats(s);
  ck_assert_uint_eq(st.blocks, 4 * NL);
  ck_assert_uint_eq(kvs__index_count(s->ix), 4); /* a's groups only */
  ck_assert_uint_eq(st.evictions, 2 * NL);
  ck_assert_uint_eq(st.pool_used_bytes, 4 * NL * slot);
  ck_assert_uint_eq(st.put_nospc, 1);
  ck_assert_uint_eq(tcached(sp, ta, 4 * G), 4 * G);
  ck_assert_uint_eq(tcached(sp, tc, n), 0);
  /* room again: the same put goes through and reads back bit-exact */
  kvs__seq_free(a);
  ck_assert_int_eq(kvs__seq_put(c, 0, tc, n, 0, NL, k, v, NULL, 0, NULL, err), 0);
  st = tstats(s);
  ck_assert_uint_eq(st.blocks, 16);    /* 8 free slots, 2 of a's evicted */
  ck_assert_uint_eq(st.evictions, 6);
  tget_exact(c, n, NL, k, v);
  kvs__seq_free(c);
  kvs__space_unref(sp);
  free(k);
  free(v);
  free(ta);
  free(tb);
  free(tc);
  kvs__store_close(s);
}
END_TEST

/* One group record per identity holds every layer's block (Decision
 * 46): layer-range puts of one prefix share it, a hit on one layer and
 * new blocks on others land in the same record, and it stays filed while
 * any of its blocks is cached, then goes with the last. */
START_TEST(group_spans_layers)
{
  enum { L4 = 4 };
  kvs__store *s = mk(NULL);
  kvs__space_key key = tkey(16, 16);
  key.n_layers = L4;
  kvs__space *sp;
  ck_assert_int_eq(kvs__space_ref(s, &key, NULL, &sp), 0);
  const uint32_t n = 2 * G;
  uint16_t *k = trandkv(L4, n, 1), *v = trandkv(L4, n, 2);
  uint32_t *t = ttoks(n, 100);
  char err[KVS_STORE_ERRMSG];
  kvs__seq *a, *b, *c;
  ck_assert_int_eq(kvs__seq_new(sp, &a), 0);
  ck_assert_int_eq(kvs__seq_put(a, 0, t, n, 0, 1, k, v, NULL, 0, NULL, err), 0); /* layer 0 */
  ck_assert_uint_eq(kvs__index_count(s->ix), 2);
  kvs__group *g0 = a->l[0].blk[0]->grp, *g1 = a->l[0].blk[1]->grp;
  ck_assert_ptr_ne(g0, g1);
  ck_assert_uint_eq(g0->nblk, 1);
  ck_assert_ptr_null(g0->blk[1]);
  /* all layers: layer 0 hits a's blocks, the others join their groups */
  ck_assert_int_eq(kvs__seq_new(sp, &b), 0);
  ck_assert_int_eq(kvs__seq_put(b, 0, t, n, 0, L4, k, v, NULL, 0, NULL, err), 0);
  ck_assert_ptr_eq(b->l[0].blk[0], a->l[0].blk[0]);
  ck_assert_ptr_eq(b->l[0].blk[1], a->l[0].blk[1]);
  for (uint32_t l = 0; l < L4; l++) {
    ck_assert_ptr_eq(b->l[l].blk[0]->grp, g0);
    ck_assert_ptr_eq(b->l[l].blk[1]->grp, g1);
    ck_assert_ptr_eq(g0->blk[l], b->l[l].blk[0]);
  }
  ck_assert_uint_eq(g0->nblk, L4);
  ck_assert_uint_eq(kvs__index_count(s->ix), 2);
  ck_assert_uint_eq(tstats(s).blocks, 2 * L4);
  ck_assert_uint_eq(tcached(sp, t, n), n);
  /* layers 1..3 evicted, layer 0 pinned by a: the groups stay, without them */
  kvs__seq_free(b);
  ck_assert_uint_eq(kvs__store_evict_all(s), 2 * (L4 - 1));
  ck_assert_uint_eq(kvs__index_count(s->ix), 2);
  ck_assert_uint_eq(g0->nblk, 1);
  for (uint32_t l = 1; l < L4; l++)
    ck_assert_ptr_null(g0->blk[l]);
  ck_assert_uint_eq(tcached(sp, t, n), 0); /* a prefix is cached in all layers or not */
  /* and fill up again in the same records, reading back bit-exact */
  ck_assert_int_eq(kvs__seq_new(sp, &c), 0);
  ck_assert_int_eq(kvs__seq_put(c, 0, t, n, 0, L4, k, v, NULL, 0, NULL, err), 0);
  ck_assert_ptr_eq(c->l[0].blk[0], a->l[0].blk[0]);
  ck_assert_ptr_eq(c->l[L4 - 1].blk[1]->grp, g1);
  ck_assert_uint_eq(g1->nblk, L4);
  tget_exact(c, n, L4, k, v);
  /* the last block of a group takes it out of the index */
  kvs__seq_free(a);
  kvs__seq_free(c);
  ck_assert_uint_eq(kvs__store_evict_all(s), 2 * L4);
  ck_assert_uint_eq(kvs__index_count(s->ix), 0);
  ck_assert_uint_eq(tcached(sp, t, n), 0);
  kvs__space_unref(sp);
  free(k);
  free(v);
  free(t);
  kvs__store_close(s);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("identity");
  TCase *tc = tcase_create("identity");
  tcase_add_test(tc, forced_collision);
  tcase_add_test(tc, salt_separates);
  tcase_add_test(tc, keys_change_chains);
  tcase_add_test(tc, chain_is_keyed_siphash);
  tcase_add_test(tc, failed_put_files_nothing);
  tcase_add_test(tc, group_spans_layers);
  suite_add_tcase(s, tc);
  SRunner *r = srunner_create(s);
  srunner_run_all(r, CK_NORMAL);
  int nf = srunner_ntests_failed(r);
  srunner_free(r);
  return nf ? EXIT_FAILURE : EXIT_SUCCESS;
}
