/* SPDX-License-Identifier: MIT */
/* Second-tier hooks and block bytes: publish/evict hooks see every block
 * with its prefix, serialized blocks import into another store (another
 * hash key) and read back bit-identical, and damaged bytes are refused. */
#include "tests/store/util.h"

#include <errno.h>
#include <sodium.h>

#define NG 2u                /* groups put */
#define NB (NG * NL)         /* blocks */

typedef struct tier {
  unsigned char *blob[NB];
  size_t len[NB];
  uint8_t id[NB][16];
  uint32_t published, evicted, evicted_known;
} tier;

static uint32_t slot(const kvs__block_view *v) { return v->group_index * NL + v->layer; }

static void on_publish(const kvs__block_view *v, void *arg)
{
  tier *t = arg;
  ck_assert_uint_lt(slot(v), NB);
  ck_assert_ptr_nonnull(v->prefix);
  ck_assert_uint_eq(v->group, G);
  /* The block's ids are the prefix's last group. */
  ck_assert_int_eq(memcmp(v->tokens, v->prefix + (size_t)v->group_index * G, G * 4u), 0);
  uint32_t i = slot(v);
  ck_assert_ptr_null(t->blob[i]);
  t->len[i] = kvs__block_serial_size(v);
  t->blob[i] = malloc(t->len[i]);
  ck_assert_int_eq(kvs__block_serialize(v, t->blob[i], t->len[i] - 1), -ENOBUFS);
  ck_assert_int_eq(kvs__block_serialize(v, t->blob[i], t->len[i]), 0);
  memcpy(t->id[i], v->id, 16);
  t->published++;
}

static void on_evict(const kvs__block_view *v, void *arg)
{
  tier *t = arg;
  ck_assert_ptr_null(v->prefix);
  t->evicted++;
  for (uint32_t i = 0; i < NB; i++)
    if (memcmp(t->id[i], v->id, 16) == 0 && i == slot(v))
      t->evicted_known++;
}

static kvs__space *space_of(kvs__store *s)
{
  kvs__space_key key = tkey(4, 2);
  key.policy = KVS_POLICY_PFN;
  key.pfn = 3; /* sink rows in group 0 */
  key.outliers = 0.05f;
  kvs__space *sp;
  ck_assert_int_eq(kvs__space_ref(s, &key, NULL, &sp), 0);
  return sp;
}

static kvs__store *mk(unsigned char fill)
{
  kvs__store *s;
  kvs__store_opts o = {.pool_bytes = 1u << 20};
  memset(o.hash_key, fill, sizeof(o.hash_key));
  ck_assert_int_eq(kvs__store_init(&s, &o), 0);
  return s;
}

static void read_all(kvs__space *sp, const uint32_t *t, uint16_t *k, uint16_t *v)
{
  kvs__seq *q;
  uint32_t cached;
  char err[KVS_STORE_ERRMSG];
  ck_assert_int_eq(kvs__seq_new(sp, &q), 0);
  ck_assert_int_eq(kvs__space_lookup(sp, t, NG * G, q, &cached), 0);
  ck_assert_uint_eq(cached, NG * G);
  ck_assert_int_eq(kvs__seq_get(q, 0, NG * G, 0, NL, k, v, err), 0);
  kvs__seq_free(q);
}

START_TEST(hooks_and_round_trip)
{
  tier t;
  memset(&t, 0, sizeof(t));
  kvs__store *a = mk(1), *b = mk(2);
  kvs__tier_hooks h = {on_publish, on_evict, &t};
  kvs__store_set_hooks(a, &h);
  kvs__space *sa = space_of(a), *sb = space_of(b);
  uint16_t *k = trandkv(NL, NG * G + 3, 1), *v = trandkv(NL, NG * G + 3, 2);
  uint32_t *tk = ttoks(NG * G + 3, 1);
  ck_assert_int_eq(tput_free(sa, tk, NG * G + 3, k, v), 0);
  ck_assert_uint_eq(t.published, NB);
  /* A hit publishes nothing new. */
  ck_assert_int_eq(tput_free(sa, tk, NG * G, k, v), 0);
  ck_assert_uint_eq(t.published, NB);
  size_t bytes = (size_t)NL * NG * G * C * 2;
  uint16_t *ak = malloc(bytes), *av = malloc(bytes), *bk = malloc(bytes), *bv = malloc(bytes);
  read_all(sa, tk, ak, av);

  /* Into store b: all layers of group 0 first, then group 1. */
  char err[KVS_STORE_ERRMSG];
  for (uint32_t i = 0; i < NB; i++) {
    uint32_t g = i / NL;
    ck_assert_int_eq(kvs__space_import(sb, tk, (g + 1) * G, t.blob[i], t.len[i], err), 0);
  }
  ck_assert_uint_eq(tstats(b).blocks, NB);
  ck_assert_uint_eq(tstats(b).sink_rows, 3 * NL);
  ck_assert_int_eq(kvs__space_import(sb, tk, G, t.blob[0], t.len[0], err), -EEXIST);
  read_all(sb, tk, bk, bv);
  ck_assert_int_eq(memcmp(ak, bk, bytes), 0);
  ck_assert_int_eq(memcmp(av, bv, bytes), 0);

  /* Evictions are told, with the ids publish gave. */
  ck_assert_uint_eq(kvs__store_evict_all(a), NB);
  ck_assert_uint_eq(t.evicted, NB);
  ck_assert_uint_eq(t.evicted_known, NB);
  kvs__space_unref(sa);
  kvs__space_unref(sb);
  kvs__store_close(a);
  kvs__store_close(b);
  for (uint32_t i = 0; i < NB; i++)
    free(t.blob[i]);
  free(ak);
  free(av);
  free(bk);
  free(bv);
  free(k);
  free(v);
  free(tk);
}
END_TEST

/* The read path's ids: kvs__space_chain names each group as publish did,
 * counts the leading groups cached in every layer, and leaves the stats
 * alone; the space id is equal across stores exactly when the keys are. */
START_TEST(chain_ids_for_a_tier)
{
  tier t;
  memset(&t, 0, sizeof(t));
  kvs__store *a = mk(1), *a2 = mk(1), *b = mk(2);
  kvs__tier_hooks h = {on_publish, NULL, &t};
  kvs__store_set_hooks(a, &h);
  kvs__space *sa = space_of(a), *sa2 = space_of(a2), *sb = space_of(b);
  uint16_t *k = trandkv(NL, NG * G, 5), *v = trandkv(NL, NG * G, 6);
  uint32_t *tk = ttoks(NG * G + G, 1);
  ck_assert_int_eq(tput_free(sa, tk, NG * G, k, v), 0);
  uint8_t ids[NG + 1][16], ids2[NG + 1][16];
  uint32_t local = 99;
  uint64_t lookups = tstats(a).lookups;
  ck_assert_int_eq(kvs__space_chain(sa, tk, NG * G + G + 5, ids, &local), 0);
  ck_assert_uint_eq(local, NG);
  ck_assert_uint_eq(tstats(a).lookups, lookups);
  for (uint32_t g = 0; g < NG; g++)
    ck_assert_int_eq(memcmp(ids[g], t.id[g * NL], 16), 0);
  /* same hash key: same ids, nothing cached there */
  ck_assert_int_eq(kvs__space_chain(sa2, tk, NG * G + G, ids2, &local), 0);
  ck_assert_uint_eq(local, 0);
  ck_assert_int_eq(memcmp(ids, ids2, sizeof(ids)), 0);
  /* another hash key: other ids */
  ck_assert_int_eq(kvs__space_chain(sb, tk, NG * G, ids2, &local), 0);
  ck_assert_int_ne(memcmp(ids[0], ids2[0], 16), 0);
  uint8_t ia[16], ia2[16], ib[16];
  kvs__space_id(sa, ia);
  kvs__space_id(sa2, ia2);
  kvs__space_id(sb, ib);
  ck_assert_int_eq(memcmp(ia, ia2, 16), 0);
  ck_assert_int_ne(memcmp(ia, ib, 16), 0);
  ck_assert_int_eq(kvs__space_chain(sa, tk, KVS_STORE_MAX_TOKENS + 1, ids, &local), -EINVAL);
  ck_assert_str_eq(kvs__space_key_of(sa)->ns, kvs__space_key_of(sb)->ns);
  kvs__space_unref(sa);
  kvs__space_unref(sa2);
  kvs__space_unref(sb);
  kvs__store_close(a);
  kvs__store_close(a2);
  kvs__store_close(b);
  for (uint32_t i = 0; i < NB; i++)
    free(t.blob[i]);
  free(k);
  free(v);
  free(tk);
}
END_TEST

static void resum(unsigned char *p, size_t len)
{
  crypto_generichash(p + len - 16, 16, p, len - 16, NULL, 0);
}

START_TEST(damaged_bytes_refused)
{
  tier t;
  memset(&t, 0, sizeof(t));
  kvs__store *a = mk(1), *b = mk(2);
  kvs__tier_hooks h = {on_publish, NULL, &t};
  kvs__store_set_hooks(a, &h);
  kvs__space *sa = space_of(a), *sb = space_of(b);
  uint16_t *k = trandkv(NL, NG * G, 3), *v = trandkv(NL, NG * G, 4);
  uint32_t *tk = ttoks(NG * G, 1), *other = ttoks(NG * G, 2);
  ck_assert_int_eq(tput_free(sa, tk, NG * G, k, v), 0);
  char err[KVS_STORE_ERRMSG];
  size_t len = t.len[NL]; /* group 1, layer 0: no sinks */
  unsigned char *x = malloc(len);

  memcpy(x, t.blob[NL], len);
  x[100] ^= 1;
  ck_assert_int_eq(kvs__space_import(sb, tk, 2 * G, x, len, err), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "checksum"));
  ck_assert_int_eq(kvs__space_import(sb, tk, 2 * G, t.blob[NL], len - 1, err), -EINVAL);
  ck_assert_int_eq(kvs__space_import(sb, other, 2 * G, t.blob[NL], len, err), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "token ids"));
  ck_assert_int_eq(kvs__space_import(sb, tk, G + 1, t.blob[NL], len, err), -EINVAL);
  /* Another space's params. */
  kvs__space_key k8 = tkey(8, 2);
  k8.policy = KVS_POLICY_PFN;
  k8.pfn = 3;
  k8.outliers = 0.05f;
  kvs__space *s8;
  ck_assert_int_eq(kvs__space_ref(b, &k8, NULL, &s8), 0);
  ck_assert_int_eq(kvs__space_import(s8, tk, 2 * G, t.blob[NL], len, err), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "parameters"));
  /* Valid checksum, poisoned content: an Inf key scale. */
  kvs__qlayout ql;
  kvs__qlayout_of(kvs__space_qparams(sb), &ql);
  memcpy(x, t.blob[NL], len);
  size_t qo = 64 + G * 4u + ql.kscale;
  x[qo] = 0x00;
  x[qo + 1] = 0x7c;
  resum(x, len);
  ck_assert_int_eq(kvs__space_import(sb, tk, 2 * G, x, len, err), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "NaN or Inf"));
  /* Valid checksum, a sink mask the quantized header does not have. */
  memcpy(x, t.blob[NL], len);
  x[56] = 1;
  resum(x, len);
  ck_assert_int_eq(kvs__space_import(sb, tk, 2 * G, x, len, err), -EINVAL);
  /* A format from the future. */
  memcpy(x, t.blob[NL], len);
  x[4] = 2;
  resum(x, len);
  ck_assert_int_eq(kvs__space_import(sb, tk, 2 * G, x, len, err), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "format"));
  ck_assert_uint_eq(tstats(b).blocks, 0);
  /* The undamaged one goes in. */
  ck_assert_int_eq(kvs__space_import(sb, tk, 2 * G, t.blob[NL], len, err), 0);
  ck_assert_uint_eq(tstats(b).blocks, 1);
  kvs__space_unref(s8);
  kvs__space_unref(sa);
  kvs__space_unref(sb);
  kvs__store_close(a);
  kvs__store_close(b);
  for (uint32_t i = 0; i < NB; i++)
    free(t.blob[i]);
  free(x);
  free(k);
  free(v);
  free(tk);
  free(other);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("tier");
  TCase *tc = tcase_create("tier");
  tcase_add_test(tc, hooks_and_round_trip);
  tcase_add_test(tc, damaged_bytes_refused);
  tcase_add_test(tc, chain_ids_for_a_tier);
  suite_add_tcase(s, tc);
  SRunner *r = srunner_create(s);
  srunner_run_all(r, CK_NORMAL);
  int nf = srunner_ntests_failed(r);
  srunner_free(r);
  return nf ? EXIT_FAILURE : EXIT_SUCCESS;
}
