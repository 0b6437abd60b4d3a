/* SPDX-License-Identifier: MIT */
/* The store: puts, residuals, sharing, lookup/bind/get, KVSINK, PFN,
 * eviction, -ENOSPC atomicity and the validation errors. */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store/store.h"
#include "kernels/half.h"

#define NL 2u
#define H 2u
#define D 16u
#define C (H * D)
#define G 16u

static kvs__space_key mkkey(kvs_policy pol, uint32_t pfn)
{
  kvs__space_key k;
  memset(&k, 0, sizeof(k));
  strcpy(k.ns, "uid:1000");
  strcpy(k.model_id, "test-model");
  k.n_layers = NL;
  k.n_kv_heads = H;
  k.head_dim = D;
  k.dtype = KVS_DTYPE_F16;
  k.group = G;
  k.k_bits = 4;
  k.v_bits = 2;
  k.policy = pol;
  k.pfn = pfn;
  k.outliers = 0.05f;
  return k;
}

static kvs__store *mkstore(size_t pool, size_t chunk)
{
  kvs__store *s = NULL;
  kvs__store_opts o = {.pool_bytes = pool, .chunk_bytes = chunk};
  ck_assert_int_eq(kvs__store_init(&s, &o), 0);
  return s;
}

static uint32_t rng_state = 12345;
static float frand(void)
{
  rng_state = rng_state * 1664525u + 1013904223u;
  return (float)(rng_state >> 8) / (float)(1u << 24) * 4.0f - 2.0f;
}

/* [nl][n][C] random fp16 K and V. */
static uint16_t *randkv(uint32_t nl, uint32_t n)
{
  size_t m = (size_t)nl * n * C;
  uint16_t *x = malloc(m ? m * 2 : 1);
  for (size_t i = 0; i < m; i++)
    x[i] = kvs__f32_to_f16(frand());
  return x;
}

static uint32_t *toks(uint32_t n, uint32_t base)
{
  uint32_t *t = malloc(sizeof(*t) * (n ? n : 1));
  for (uint32_t i = 0; i < n; i++)
    t[i] = base + i * 7u;
  return t;
}

/* What the store should give back for one full group: a direct quantize /
 * dequantize round trip of the same rows with the same sink mask. */
static void expect_group(const kvs__qparams *p, const uint16_t *k, const uint16_t *v, uint64_t mask,
                         uint16_t *ko, uint16_t *vo)
{
  kvs__qlayout ql;
  size_t bytes = kvs__qlayout_of(p, &ql);
  void *blk = aligned_alloc(64, (bytes + 63) / 64 * 64);
  uint16_t *rowbuf = malloc(64 * kvs__sink_row_bytes(p));
  uint16_t *rows[64];
  for (int i = 0; i < 64; i++)
    rows[i] = rowbuf + (size_t)i * 2 * C;
  ck_assert_int_eq(kvs__quantize_block(p, k, v, mask, blk, rows), 0);
  ck_assert_int_eq(kvs__dequantize_block(p, blk, (const uint16_t *const *)rows, 0, G, ko, vo), 0);
  free(blk);
  free(rowbuf);
}

/* Check tokens [0, n) of every layer of q against input kv ([NL][n][C]):
 * full groups below qtok as the round trip, the rest bitwise. */
static void check_seq_n(kvs__seq *q, const kvs__space *sp, const uint16_t *k, const uint16_t *v,
                        uint32_t kn, uint32_t n, uint32_t qtok, uint64_t (*maskf)(uint32_t g))
{
  uint16_t *gk = malloc((size_t)NL * n * C * 2), *gv = malloc((size_t)NL * n * C * 2);
  char err[KVS_STORE_ERRMSG];
  ck_assert_int_eq(kvs__seq_get(q, 0, n, 0, NL, gk, gv, err), 0);
  uint16_t ek[G * C], ev[G * C];
  for (uint32_t l = 0; l < NL; l++) {
    for (uint32_t g = 0; g < qtok / G; g++) {
      size_t o = ((size_t)l * n + g * G) * C, ko = ((size_t)l * kn + g * G) * C;
      expect_group(kvs__space_qparams(sp), k + ko, v + ko, maskf ? maskf(g) : 0, ek, ev);
      ck_assert_int_eq(memcmp(gk + o, ek, sizeof(ek)), 0);
      ck_assert_int_eq(memcmp(gv + o, ev, sizeof(ev)), 0);
    }
    size_t o = ((size_t)l * n + qtok) * C, ko = ((size_t)l * kn + qtok) * C;
    size_t m = (size_t)(n - qtok) * C * 2;
    ck_assert_int_eq(memcmp(gk + o, k + ko, m), 0);
    ck_assert_int_eq(memcmp(gv + o, v + ko, m), 0);
  }
  /* A partial read inside a block matches the same rows of a full read. */
  if (n >= 5) {
    uint16_t *pk = malloc((size_t)3 * C * 2), *pv = malloc((size_t)3 * C * 2);
    ck_assert_int_eq(kvs__seq_get(q, 2, 3, 1, 2, pk, pv, err), 0);
    ck_assert_int_eq(memcmp(pk, gk + ((size_t)n + 2) * C, (size_t)3 * C * 2), 0);
    ck_assert_int_eq(memcmp(pv, gv + ((size_t)n + 2) * C, (size_t)3 * C * 2), 0);
    free(pk);
    free(pv);
  }
  free(gk);
  free(gv);
}

static void check_seq(kvs__seq *q, const kvs__space *sp, const uint16_t *k, const uint16_t *v,
                      uint32_t n, uint32_t qtok, uint64_t (*maskf)(uint32_t g))
{
  check_seq_n(q, sp, k, v, n, n, qtok, maskf);
}

static kvs__store_stats stats(kvs__store *s)
{
  kvs__store_stats st;
  kvs__store_stats_get(s, &st);
  return st;
}

START_TEST(aligned_and_residual)
{
  kvs__store *s = mkstore(1u << 20, 0);
  kvs__space_key key = mkkey(KVS_POLICY_NONE, 0);
  kvs__space *sp;
  kvs__seq *q;
  ck_assert_int_eq(kvs__space_ref(s, &key, NULL, &sp), 0);
  ck_assert_int_eq(kvs__seq_new(sp, &q), 0);
  uint32_t n = 2 * G + 5;
  uint16_t *k = randkv(NL, n), *v = randkv(NL, n);
  uint32_t *t = toks(n, 100);
  /* Put 20 tokens (one block + 4 residual), then the rest, from separate
   * per-put buffers laid out [NL][m][C]. */
  uint32_t cut = G + 4;
  char err[KVS_STORE_ERRMSG];
  kvs__put_info info;
  for (int part = 0; part < 2; part++) {
    uint32_t a = part ? cut : 0, m = part ? n - cut : cut;
    uint16_t *pk = malloc((size_t)NL * m * C * 2), *pv = malloc((size_t)NL * m * C * 2);
    for (uint32_t l = 0; l < NL; l++) {
      memcpy(pk + (size_t)l * m * C, k + ((size_t)l * n + a) * C, (size_t)m * C * 2);
      memcpy(pv + (size_t)l * m * C, v + ((size_t)l * n + a) * C, (size_t)m * C * 2);
    }
    ck_assert_int_eq(kvs__seq_put(q, a, t + a, m, 0, NL, pk, pv, NULL, 0, &info, err), 0);
    ck_assert_uint_eq(info.seq_len, a + m);
    ck_assert_uint_eq(info.quantized, part ? 2 * G - cut : G); /* this put's share */
    free(pk);
    free(pv);
    if (part == 0)
      check_seq(q, sp, k, v, 0, 0, NULL); /* n = 0 is a valid empty read */
  }
  ck_assert_uint_eq(kvs__seq_len(q), n);
  check_seq(q, sp, k, v, n, 2 * G, NULL);
  kvs__store_stats st = stats(s);
  ck_assert_uint_eq(st.blocks, 2 * NL);
  ck_assert_uint_eq(st.blocks_pinned, 2 * NL);
  ck_assert_uint_eq(st.puts, 2);
  ck_assert_uint_eq(st.seqs, 1);
  ck_assert_uint_eq(st.spaces, 1);
  ck_assert_uint_eq(st.bytes_in, (uint64_t)NL * n * C * 4);
  ck_assert_uint_eq(st.stored_raw_bytes, (uint64_t)2 * NL * G * C * 4);
  ck_assert_uint_lt(st.stored_bytes, st.stored_raw_bytes);
  ck_assert_uint_gt(st.outliers_kept, 0);
  ck_assert_str_eq(st.backend, "host");
  /* seq_free drops refs; blocks stay cached, unpinned. */
  kvs__seq_free(q);
  st = stats(s);
  ck_assert_uint_eq(st.blocks_pinned, 0);
  ck_assert_uint_eq(st.blocks, 2 * NL);
  ck_assert_uint_eq(st.seqs, 0);
  ck_assert_uint_eq(kvs__store_evict_all(s), 2 * NL);
  ck_assert_uint_eq(stats(s).blocks, 0);
  ck_assert_uint_eq(stats(s).pool_used_bytes, 0);
  kvs__space_unref(sp);
  ck_assert_uint_eq(stats(s).spaces, 0);
  free(k);
  free(v);
  free(t);
  kvs__store_close(s);
}
END_TEST

START_TEST(share_lookup_bind)
{
  kvs__store *s = mkstore(1u << 20, 0);
  kvs__space_key key = mkkey(KVS_POLICY_NONE, 0);
  kvs__space *sp, *sp2;
  kvs__seq *a, *b, *c;
  ck_assert_int_eq(kvs__space_ref(s, &key, NULL, &sp), 0);
  ck_assert_int_eq(kvs__space_ref(s, &key, NULL, &sp2), 0);
  ck_assert_ptr_eq(sp, sp2); /* found by key */
  kvs__space_unref(sp2);
  uint32_t n = 3 * G + 3;
  uint16_t *k = randkv(NL, n), *v = randkv(NL, n), *k2 = randkv(NL, n), *v2 = randkv(NL, n);
  uint32_t *t = toks(n, 5);
  char err[KVS_STORE_ERRMSG];
  uint32_t cached = 99;
  ck_assert_int_eq(kvs__space_lookup(sp, t, n, NULL, &cached), 0);
  ck_assert_uint_eq(cached, 0);
  ck_assert_int_eq(kvs__seq_new(sp, &a), 0);
  ck_assert_int_eq(kvs__seq_put(a, 0, t, n, 0, NL, k, v, NULL, 0, NULL, err), 0);
  uint64_t blocks = stats(s).blocks;
  ck_assert_uint_eq(blocks, 3 * NL);
  /* Same tokens, other data: shares the blocks, block count unchanged. */
  ck_assert_int_eq(kvs__seq_new(sp, &b), 0);
  ck_assert_int_eq(kvs__seq_put(b, 0, t, n, 0, NL, k2, v2, NULL, 0, NULL, err), 0);
  ck_assert_uint_eq(stats(s).blocks, blocks);
  check_seq_n(b, sp, k, v, n, 3 * G, 3 * G, NULL); /* b reads a's blocks */
  ck_assert_int_eq(kvs__space_lookup(sp, t, n, NULL, &cached), 0);
  ck_assert_uint_eq(cached, 3 * G);
  /* A differing token in group 1 stops the match at one block. */
  t[G + 2] ^= 1;
  ck_assert_int_eq(kvs__space_lookup(sp, t, n, NULL, &cached), 0);
  ck_assert_uint_eq(cached, G);
  t[G + 2] ^= 1;
  ck_assert_int_eq(kvs__space_lookup(sp, t, 2 * G - 1, NULL, &cached), 0);
  ck_assert_uint_eq(cached, G);
  /* Bind: the new seq reads the cached prefix and continues at `cached`. */
  ck_assert_int_eq(kvs__seq_new(sp, &c), 0);
  ck_assert_int_eq(kvs__space_lookup(sp, t, n, c, &cached), 0);
  ck_assert_uint_eq(cached, 3 * G);
  ck_assert_uint_eq(kvs__seq_len(c), 3 * G);
  check_seq_n(c, sp, k, v, n, 3 * G, 3 * G, NULL);
  ck_assert_int_eq(kvs__space_lookup(sp, t, n, c, &cached), -EINVAL); /* not empty */
  uint16_t *tk = malloc((size_t)NL * 3 * C * 2), *tv = malloc((size_t)NL * 3 * C * 2);
  for (uint32_t l = 0; l < NL; l++) {
    memcpy(tk + (size_t)l * 3 * C, k + ((size_t)l * n + 3 * G) * C, (size_t)3 * C * 2);
    memcpy(tv + (size_t)l * 3 * C, v + ((size_t)l * n + 3 * G) * C, (size_t)3 * C * 2);
  }
  ck_assert_int_eq(kvs__seq_put(c, 3 * G, t + 3 * G, 3, 0, NL, tk, tv, NULL, 0, NULL, err), 0);
  check_seq(c, sp, k, v, n, 3 * G, NULL);
  kvs__store_stats st = stats(s);
  ck_assert_uint_eq(st.lookups, 5);
  ck_assert_uint_eq(st.lookup_hit_tokens, 3 * G + G + G + 3 * G);
  /* Lookup needs every layer: a seq of another space with only layer 0. */
  kvs__space_key key2 = key;
  strcpy(key2.ns, "uid:2");
  kvs__space *sq;
  kvs__seq *d;
  ck_assert_int_eq(kvs__space_ref(s, &key2, NULL, &sq), 0);
  ck_assert_ptr_ne(sq, sp);
  ck_assert_int_eq(kvs__space_lookup(sq, t, n, NULL, &cached), 0);
  ck_assert_uint_eq(cached, 0); /* other namespace: nothing shared */
  ck_assert_int_eq(kvs__seq_new(sq, &d), 0);
  ck_assert_int_eq(kvs__seq_put(d, 0, t, 2 * G, 0, 1, k, v, NULL, 0, NULL, err), 0);
  ck_assert_int_eq(kvs__space_lookup(sq, t, n, NULL, &cached), 0);
  ck_assert_uint_eq(cached, 0);
  /* Layer by layer: layer 1 at the same positions, same ids. */
  t[3] ^= 1;
  ck_assert_int_eq(kvs__seq_put(d, 0, t, 2 * G, 1, 2, k, v, NULL, 0, NULL, err), -EINVAL);
  t[3] ^= 1;
  ck_assert_int_eq(kvs__seq_put(d, 0, t, 2 * G, 1, 2, k, v, NULL, 0, NULL, err), 0);
  ck_assert_int_eq(kvs__space_lookup(sq, t, n, NULL, &cached), 0);
  ck_assert_uint_eq(cached, 2 * G);
  kvs__seq_free(d);
  kvs__space_unref(sq);
  kvs__seq_free(a);
  kvs__seq_free(b);
  /* c keeps sp alive and its blocks pinned; close frees it. */
  ck_assert_uint_eq(stats(s).blocks_pinned, 3 * NL);
  kvs__space_unref(sp);
  free(tk);
  free(tv);
  free(k);
  free(v);
  free(k2);
  free(v2);
  free(t);
  kvs__store_close(s);
}
END_TEST

static uint64_t mask_pfn3(uint32_t g) { return g == 0 ? 0x7u : 0; }

START_TEST(pfn_rows)
{
  kvs__store *s = mkstore(1u << 20, 0);
  kvs__space_key key = mkkey(KVS_POLICY_PFN, 3);
  kvs__space *sp;
  kvs__seq *q;
  ck_assert_int_eq(kvs__space_ref(s, &key, NULL, &sp), 0);
  ck_assert_int_eq(kvs__seq_new(sp, &q), 0);
  uint32_t n = 2 * G;
  uint16_t *k = randkv(NL, n), *v = randkv(NL, n);
  /* Make row 1 extreme: kept as a sink row it must come back bitwise. */
  for (uint32_t c = 0; c < C; c++)
    k[C + c] = kvs__f32_to_f16(1000.0f + (float)c);
  uint32_t *t = toks(n, 1);
  kvs__put_info info;
  char err[KVS_STORE_ERRMSG];
  ck_assert_int_eq(kvs__seq_put(q, 0, t, n, 0, NL, k, v, NULL, 0, &info, err), 0);
  ck_assert_uint_eq(info.sinks, 3);
  ck_assert_uint_eq(info.quantized, n);
  check_seq(q, sp, k, v, n, n, mask_pfn3);
  uint16_t rk[3 * C], rv[3 * C];
  ck_assert_int_eq(kvs__seq_get(q, 0, 3, 0, 1, rk, rv, err), 0);
  ck_assert_int_eq(memcmp(rk, k, sizeof(rk)), 0);
  ck_assert_int_eq(memcmp(rv, v, sizeof(rv)), 0);
  kvs__store_stats st = stats(s);
  ck_assert_uint_eq(st.sink_rows, 3 * NL);
  ck_assert_uint_eq(st.sinks_found, 3);
  kvs__seq_free(q);
  kvs__space_unref(sp);
  free(k);
  free(v);
  free(t);
  kvs__store_close(s);
}
END_TEST

static uint64_t mask_ks(uint32_t g) { return g == 0 ? (1u << 0) | (1u << 5) : (1u << 9); }

START_TEST(kvsink_waits_for_act)
{
  kvs__store *s = mkstore(1u << 20, 0);
  kvs__space_key key = mkkey(KVS_POLICY_KVSINK, 1);
  kvs__profile prof;
  memset(&prof, 0, sizeof(prof));
  strcpy(prof.model_id, "test-model");
  prof.layer = 0;
  prof.n_channels = 2;
  prof.channels[0] = 3;
  prof.channels[1] = 7;
  prof.tau = 50.0f;
  prof.max_sinks = 2;
  kvs__space *sp;
  kvs__seq *q;
  ck_assert_int_eq(kvs__space_ref(s, &key, &prof, &sp), 0);
  ck_assert(kvs__space_has_profile(sp));
  ck_assert_ptr_nonnull(kvs__space_profile(sp));
  ck_assert_int_eq(kvs__seq_new(sp, &q), 0);
  uint32_t n = 2 * G;
  uint16_t *k = randkv(NL, n), *v = randkv(NL, n);
  uint32_t *t = toks(n, 9);
  char err[KVS_STORE_ERRMSG];
  kvs__put_info info;
  /* No summary yet: everything waits in the residual. */
  ck_assert_int_eq(kvs__seq_put(q, 0, t, n, 0, NL, k, v, NULL, 0, &info, err), 0);
  ck_assert_uint_eq(info.quantized, 0);
  ck_assert_uint_eq(stats(s).blocks, 0);
  check_seq(q, sp, k, v, n, 0, NULL);
  /* Summary-only put: tokens 5 and 16+9 exceed tau; token 20 too but the
   * budget of 2 keeps the largest two. */
  float *act = calloc((size_t)n * 2, sizeof(float));
  act[5 * 2 + 1] = -300.0f;
  act[(G + 9) * 2] = 200.0f;
  act[20 * 2] = 60.0f;
  float bad = act[0];
  act[0] = NAN;
  ck_assert_int_eq(kvs__seq_put(q, 0, t, n, 0, 0, NULL, NULL, act, 2, &info, err), KVS_ENAN);
  act[0] = bad;
  ck_assert_int_eq(kvs__seq_put(q, 0, t, n, 0, 0, NULL, NULL, act, 3, &info, err), -EINVAL);
  ck_assert_int_eq(kvs__seq_put(q, 0, t, n, 0, 0, NULL, NULL, act, 2, &info, err), 0);
  ck_assert_uint_eq(info.quantized, n);
  ck_assert_uint_eq(info.sinks, 2); /* 5 and 25; 0 was flagged (PFN) at the first put */
  ck_assert_uint_eq(stats(s).blocks, 2 * NL);
  check_seq(q, sp, k, v, n, n, mask_ks);
  kvs__store_stats st = stats(s);
  ck_assert_uint_eq(st.sinks_dropped, 1);
  ck_assert_uint_eq(st.sink_rows, 3 * NL);
  /* The same profile finds the same space and its blocks; a profile that
   * would choose other sinks (reloaded with a new tau) gets its own. */
  kvs__space *same, *other;
  uint32_t cached = 0;
  ck_assert_int_eq(kvs__space_ref(s, &key, &prof, &same), 0);
  ck_assert_ptr_eq(same, sp);
  kvs__space_unref(same);
  prof.tau = 100.0f;
  ck_assert_int_eq(kvs__space_ref(s, &key, &prof, &other), 0);
  ck_assert_ptr_ne(other, sp);
  ck_assert_int_eq(kvs__space_lookup(other, t, n, NULL, &cached), 0);
  ck_assert_uint_eq(cached, 0);
  ck_assert_int_eq(kvs__space_lookup(sp, t, n, NULL, &cached), 0);
  ck_assert_uint_eq(cached, n);
  kvs__space_unref(other);
  kvs__seq_free(q);
  kvs__space_unref(sp);
  free(act);
  free(k);
  free(v);
  free(t);
  kvs__store_close(s);
}
END_TEST

/* Decision 39: under KVSINK a sequence keeps pfn + max_sinks tokens in
 * 16 bits: predicted sinks first, then, in the put that makes the first
 * group's flags known, the first positions not yet protected. */
static uint64_t fill_mask[8];
static uint64_t mask_fill(uint32_t g) { return fill_mask[g]; }

/* One KVSINK sequence of n tokens: K/V in one put, then the summary in
 * summary-only puts ending at the cuts (the last cut is n); returns the
 * rows flagged (info.sinks summed), checks every block's mask against
 * fill_mask and the store's row count. */
static uint32_t fill_run(uint32_t pfn, uint32_t max_sinks, uint32_t n, const float *act,
                         const uint32_t *cuts, uint32_t ncuts, uint64_t *dropped)
{
  kvs__store *s = mkstore(1u << 20, 0);
  kvs__space_key key = mkkey(KVS_POLICY_KVSINK, pfn);
  kvs__profile prof;
  memset(&prof, 0, sizeof(prof));
  strcpy(prof.model_id, "test-model");
  prof.n_channels = 1;
  prof.tau = 50.0f;
  prof.max_sinks = max_sinks;
  kvs__space *sp;
  kvs__seq *q;
  ck_assert_int_eq(kvs__space_ref(s, &key, &prof, &sp), 0);
  ck_assert_int_eq(kvs__seq_new(sp, &q), 0);
  uint16_t *k = randkv(NL, n), *v = randkv(NL, n);
  uint32_t *t = toks(n, 3);
  char err[KVS_STORE_ERRMSG];
  kvs__put_info info;
  ck_assert_int_eq(kvs__seq_put(q, 0, t, n, 0, NL, k, v, NULL, 0, &info, err), 0);
  uint32_t flagged = info.sinks, at = 0; /* the first pfn, at arrival */
  for (uint32_t i = 0; i < ncuts; i++) {
    ck_assert_int_eq(
        kvs__seq_put(q, at, t + at, cuts[i] - at, 0, 0, NULL, NULL, act + at, 1, &info, err), 0);
    flagged += info.sinks;
    at = cuts[i];
  }
  check_seq(q, sp, k, v, n, n / G * G, mask_fill);
  kvs__store_stats st = stats(s);
  uint64_t rows = 0;
  for (uint32_t g = 0; g < n / G; g++)
    rows += (uint64_t)__builtin_popcountll(fill_mask[g]);
  ck_assert_uint_eq(st.sink_rows, rows * NL);
  *dropped = st.sinks_dropped;
  kvs__seq_free(q);
  kvs__space_unref(sp);
  free(k);
  free(v);
  free(t);
  kvs__store_close(s);
  return flagged;
}

START_TEST(kvsink_fill)
{
  const uint32_t n = 4 * G;
  float act[4 * G];
  uint64_t dropped;
  uint32_t whole[] = {n};
  /* No predicted sink, budget 4 (pfn 0 + max_sinks 4): positions 0..3. */
  memset(act, 0, sizeof(act));
  memset(fill_mask, 0, sizeof(fill_mask));
  fill_mask[0] = 0xf;
  ck_assert_uint_eq(fill_run(0, 4, n, act, whole, 1, &dropped), 4);
  /* The same with pfn 1 + max_sinks 3: the same 4 rows. */
  ck_assert_uint_eq(fill_run(1, 3, n, act, whole, 1, &dropped), 4);
  /* Two predicted sinks far in: them, then positions 0..1. */
  act[G + 3] = 100.0f;
  act[3 * G + 1] = -80.0f;
  fill_mask[0] = 0x3;
  fill_mask[1] = 1u << 3;
  fill_mask[3] = 1u << 1;
  ck_assert_uint_eq(fill_run(0, 4, n, act, whole, 1, &dropped), 4);
  ck_assert_uint_eq(dropped, 0);
  /* A candidate below pfn is protected anyway and takes no budget:
   * 0 (pfn), the two sinks, then position 1. */
  act[0] = 500.0f;
  fill_mask[0] = 0x3;
  ck_assert_uint_eq(fill_run(1, 3, n, act, whole, 1, &dropped), 4);
  act[0] = 0;
  /* Never more than the budget: 6 candidates, budget 4: the 4 largest,
   * no fill, 2 dropped. */
  act[5] = 60.0f;
  act[G + 9] = 300.0f;
  act[2 * G] = 55.0f;
  act[2 * G + 4] = 400.0f;
  memset(fill_mask, 0, sizeof(fill_mask));
  fill_mask[1] = (1u << 3) | (1u << 9);
  fill_mask[2] = 1u << 4;
  fill_mask[3] = 1u << 1;
  ck_assert_uint_eq(fill_run(0, 4, n, act, whole, 1, &dropped), 4);
  ck_assert_uint_eq(dropped, 2);
  /* Summary in pieces: a sink at 2 known in a first put of 5 tokens, the
   * put that completes group 0 fills 0, 1, 3 (flags below the old
   * known may still change: nothing of group 0 was quantized); the
   * budget is then spent and a later sink is dropped. */
  memset(act, 0, sizeof(act));
  act[2] = 70.0f;
  act[2 * G + 6] = 90.0f;
  memset(fill_mask, 0, sizeof(fill_mask));
  fill_mask[0] = 0xf;
  uint32_t cuts[] = {5, G + 1, n};
  ck_assert_uint_eq(fill_run(0, 4, n, act, cuts, 3, &dropped), 4);
  ck_assert_uint_eq(dropped, 1);
  /* Shorter than a group: nothing is quantized, nothing filled yet. */
  uint32_t short_cut[] = {G - 1};
  memset(fill_mask, 0, sizeof(fill_mask));
  ck_assert_uint_eq(fill_run(0, 4, G - 1, act, short_cut, 1, &dropped), 1);
}
END_TEST

/* Bytes of one block with no sinks, from a store's stats. */
static size_t block_slot(kvs__store *s, kvs__space *sp)
{
  (void)s;
  kvs__qlayout ql;
  return (kvs__qlayout_of(kvs__space_qparams(sp), &ql) + 63) / 64 * 64;
}

START_TEST(eviction_and_nospc)
{
  /* A pool of 8 one-block chunks. */
  kvs__space_key key = mkkey(KVS_POLICY_NONE, 0);
  kvs__store *probe = mkstore(1u << 20, 0);
  kvs__space *sp;
  ck_assert_int_eq(kvs__space_ref(probe, &key, NULL, &sp), 0);
  size_t bs = block_slot(probe, sp);
  kvs__space_unref(sp);
  kvs__store_close(probe);

  kvs__store *s = mkstore(8 * bs, bs);
  ck_assert_uint_eq(stats(s).pool_bytes, 8 * bs);
  ck_assert_int_eq(kvs__space_ref(s, &key, NULL, &sp), 0);
  uint32_t n = 2 * G; /* 4 blocks per seq */
  uint16_t *k = randkv(NL, n), *v = randkv(NL, n);
  uint32_t *t1 = toks(n, 1), *t2 = toks(n, 1000), *t3 = toks(n, 5000);
  char err[KVS_STORE_ERRMSG];
  uint32_t cached;
  kvs__seq *a, *b, *c, *d;
  ck_assert_int_eq(kvs__seq_new(sp, &a), 0);
  ck_assert_int_eq(kvs__seq_put(a, 0, t1, n, 0, NL, k, v, NULL, 0, NULL, err), 0);
  kvs__seq_free(a); /* t1's blocks now cached, unreferenced */
  ck_assert_int_eq(kvs__seq_new(sp, &b), 0);
  ck_assert_int_eq(kvs__space_lookup(sp, t1, n, b, &cached), 0); /* bind pins them */
  ck_assert_uint_eq(cached, n);
  ck_assert_int_eq(kvs__seq_new(sp, &c), 0);
  ck_assert_int_eq(kvs__seq_put(c, 0, t2, n, 0, NL, k, v, NULL, 0, NULL, err), 0);
  ck_assert_uint_eq(stats(s).blocks_pinned, 8);
  /* Full of pinned blocks: -ENOSPC, d unchanged. */
  ck_assert_int_eq(kvs__seq_new(sp, &d), 0);
  ck_assert_int_eq(kvs__seq_put(d, 0, t3, n, 0, NL, k, v, NULL, 0, NULL, err), -ENOSPC);
  ck_assert_uint_eq(kvs__seq_len(d), 0);
  ck_assert_uint_eq(stats(s).put_nospc, 1);
  ck_assert_uint_eq(stats(s).blocks, 8);
  /* The bound seq still reads (its blocks are pinned). */
  check_seq(b, sp, k, v, n, n, NULL);
  /* Release c: its blocks become evictable and the retry succeeds. */
  kvs__seq_free(c);
  ck_assert_int_eq(kvs__seq_put(d, 0, t3, n, 0, NL, k, v, NULL, 0, NULL, err), 0);
  kvs__store_stats st = stats(s);
  ck_assert_uint_eq(st.evictions, 4);
  ck_assert_uint_eq(st.blocks, 8);
  /* Evicted prefix is never reported; pinned ones still are. */
  ck_assert_int_eq(kvs__space_lookup(sp, t2, n, NULL, &cached), 0);
  ck_assert_uint_eq(cached, 0);
  ck_assert_int_eq(kvs__space_lookup(sp, t1, n, NULL, &cached), 0);
  ck_assert_uint_eq(cached, n);
  check_seq(b, sp, k, v, n, n, NULL);
  check_seq(d, sp, k, v, n, n, NULL);
  /* Partial eviction: free d, then a put of one new group (two blocks)
   * evicts only the two oldest unreferenced blocks (d's layer 0). */
  kvs__seq_free(d);
  kvs__seq *e;
  ck_assert_int_eq(kvs__seq_new(sp, &e), 0);
  uint16_t *k1 = randkv(NL, G), *v1 = randkv(NL, G);
  ck_assert_int_eq(kvs__seq_put(e, 0, t2, G, 0, NL, k1, v1, NULL, 0, NULL, err), 0);
  ck_assert_uint_eq(stats(s).evictions, 6);
  ck_assert_int_eq(kvs__space_lookup(sp, t3, n, NULL, &cached), 0);
  ck_assert_uint_eq(cached, 0); /* group 0 gone, so nothing counts */
  kvs__seq_free(e);
  kvs__seq_free(b);
  kvs__space_unref(sp);
  free(k1);
  free(v1);
  free(k);
  free(v);
  free(t1);
  free(t2);
  free(t3);
  kvs__store_close(s);
}
END_TEST

START_TEST(validation)
{
  kvs__store *s = NULL;
  kvs__store_opts vo = {.pool_bytes = 1u << 20, .max_pending = 4096}; /* the pending check below */
  ck_assert_int_eq(kvs__store_init(&s, &vo), 0);
  kvs__space_key key = mkkey(KVS_POLICY_NONE, 0);
  kvs__space *sp;
  kvs__seq *q;
  kvs__space_key bad = key;
  bad.dtype = 7;
  ck_assert_int_eq(kvs__space_ref(s, &bad, NULL, &sp), -EINVAL);
  bad = key;
  bad.k_bits = 5;
  ck_assert_int_eq(kvs__space_ref(s, &bad, NULL, &sp), -EINVAL);
  bad = key;
  bad.n_layers = 0;
  ck_assert_int_eq(kvs__space_ref(s, &bad, NULL, &sp), -EINVAL);
  ck_assert_int_eq(kvs__space_ref(s, &key, NULL, &sp), 0);
  ck_assert_int_eq(kvs__seq_new(sp, &q), 0);
  uint32_t n = G + 2;
  uint16_t *k = randkv(NL, n), *v = randkv(NL, n);
  uint32_t *t = toks(n, 3);
  char err[KVS_STORE_ERRMSG];
  ck_assert_int_eq(kvs__seq_put(q, 0, t, n, 1, 3, k, v, NULL, 0, NULL, err), -EINVAL);
  ck_assert_int_eq(kvs__seq_put(q, 0, t, n, 2, 1, k, v, NULL, 0, NULL, err), -EINVAL);
  ck_assert_int_eq(kvs__seq_put(q, 1, t, n, 0, NL, k, v, NULL, 0, NULL, err), -EINVAL);
  ck_assert_int_gt(strlen(err), 0);
  ck_assert_int_eq(kvs__seq_put(q, 0, NULL, n, 0, NL, k, v, NULL, 0, NULL, err), -EINVAL);
  ck_assert_int_eq(kvs__seq_put(q, 0, t, n, 0, NL, NULL, v, NULL, 0, NULL, err), -EINVAL);
  ck_assert_int_eq(kvs__seq_put(q, 0, t, KVS_STORE_MAX_TOKENS + 1, 0, NL, k, v, NULL, 0, NULL,
                                err),
                   -EINVAL);
  uint16_t keep = k[C * 3 + 1];
  k[C * 3 + 1] = 0x7c00; /* +Inf */
  ck_assert_int_eq(kvs__seq_put(q, 0, t, n, 0, NL, k, v, NULL, 0, NULL, err), KVS_ENAN);
  k[C * 3 + 1] = keep;
  keep = v[C * 5];
  v[C * 5] = 0x7e01; /* NaN */
  ck_assert_int_eq(kvs__seq_put(q, 0, t, n, 0, NL, k, v, NULL, 0, NULL, err), KVS_ENAN);
  v[C * 5] = keep;
  ck_assert_uint_eq(kvs__seq_len(q), 0);
  ck_assert_uint_eq(stats(s).blocks, 0);
  ck_assert_int_eq(kvs__seq_put(q, 0, t, n, 0, 1, k, v, NULL, 0, NULL, err), 0);
  /* Layer 1 must start at its own length (0), not layer 0's. */
  ck_assert_int_eq(kvs__seq_put(q, n, t, 1, 1, 2, k, v, NULL, 0, NULL, err), -EINVAL);
  ck_assert_int_eq(kvs__seq_put(q, n, t, 1, 0, 2, k, v, NULL, 0, NULL, err), -EINVAL);
  /* get beyond a layer's length, bad ranges. */
  uint16_t *ok = malloc((size_t)NL * n * C * 2), *ov = malloc((size_t)NL * n * C * 2);
  ck_assert_int_eq(kvs__seq_get(q, 0, n, 0, 2, ok, ov, err), -EINVAL);
  ck_assert_int_eq(kvs__seq_get(q, 0, n + 1, 0, 1, ok, ov, err), -EINVAL);
  ck_assert_int_eq(kvs__seq_get(q, UINT32_MAX, 2, 0, 1, ok, ov, err), -EINVAL);
  ck_assert_int_eq(kvs__seq_get(q, 0, n, 1, 0, ok, ov, err), -EINVAL);
  ck_assert_int_eq(kvs__seq_get(q, 0, n, 0, 3, ok, ov, err), -EINVAL);
  ck_assert_int_eq(kvs__seq_get(q, 0, n, 0, 1, NULL, ov, err), -EINVAL);
  ck_assert_int_eq(kvs__seq_get(q, 0, n, 0, 1, ok, ov, err), 0);
  uint32_t cached;
  ck_assert_int_eq(kvs__space_lookup(sp, NULL, 4, NULL, &cached), -EINVAL);
  ck_assert_int_eq(kvs__space_lookup(sp, t, 4, q, &cached), -EINVAL); /* bind not empty */
  kvs__seq_free(q);
  kvs__space_unref(sp);

  /* Too many pending 16-bit tokens: KVSINK waiting for a summary. */
  kvs__space_key kk = mkkey(KVS_POLICY_KVSINK, 0);
  kvs__profile prof;
  memset(&prof, 0, sizeof(prof));
  prof.n_channels = 1;
  prof.tau = 1.0f;
  prof.max_sinks = 4;
  ck_assert_int_eq(kvs__space_ref(s, &kk, &prof, &sp), 0);
  ck_assert_int_eq(kvs__seq_new(sp, &q), 0);
  uint32_t big = 4096 + 1;
  uint16_t *bk = randkv(1, big), *bv = randkv(1, big);
  uint32_t *bt = toks(big, 0);
  ck_assert_int_eq(kvs__seq_put(q, 0, bt, big, 0, 1, bk, bv, NULL, 0, NULL, err), -E2BIG);
  ck_assert_int_eq(kvs__seq_put(q, 0, bt, big - 1, 0, 1, bk, bv, NULL, 0, NULL, err), 0);
  ck_assert_uint_eq(stats(s).blocks, 1); /* the NONE space's cached block */
  /* The summary may not leave a gap. */
  float a1[2] = {0, 0};
  ck_assert_int_eq(kvs__seq_put(q, 1, bt + 1, 1, 0, 0, NULL, NULL, a1, 1, NULL, err), -EINVAL);
  ck_assert_int_eq(kvs__seq_put(q, 0, bt, 2, 0, 0, NULL, NULL, a1, 1, NULL, err), 0);
  kvs__seq_free(q);
  kvs__space_unref(sp);
  free(bk);
  free(bv);
  free(bt);
  free(ok);
  free(ov);
  free(k);
  free(v);
  free(t);
  kvs__store_close(s);

  /* The limit comes from the options (max_pending_tokens in the config). */
  kvs__store *s2 = NULL;
  kvs__store_opts o2 = {.pool_bytes = 4u << 20, .max_pending = 40};
  ck_assert_int_eq(kvs__store_init(&s2, &o2), 0);
  ck_assert_int_eq(kvs__space_ref(s2, &kk, &prof, &sp), 0);
  ck_assert_int_eq(kvs__seq_new(sp, &q), 0);
  uint16_t *sk = randkv(1, 41), *sv = randkv(1, 41);
  uint32_t *st = toks(41, 0);
  ck_assert_int_eq(kvs__seq_put(q, 0, st, 41, 0, 1, sk, sv, NULL, 0, NULL, err), -E2BIG);
  ck_assert_int_eq(kvs__seq_put(q, 0, st, 40, 0, 1, sk, sv, NULL, 0, NULL, err), 0);
  kvs__seq_free(q);
  kvs__space_unref(sp);
  free(sk);
  free(sv);
  free(st);
  kvs__store_close(s2);
}
END_TEST


/* Decode: one token per put, layer by layer, across group boundaries. */
START_TEST(decode_layer_by_layer)
{
  kvs__store *s = mkstore(1u << 20, 0);
  kvs__space_key key = mkkey(KVS_POLICY_NONE, 0), key32 = key;
  key32.v_group = 32; /* the resolved default: the same space */
  kvs__space *sp, *sp2;
  kvs__seq *q;
  ck_assert_int_eq(kvs__space_ref(s, &key, NULL, &sp), 0);
  ck_assert_int_eq(kvs__space_ref(s, &key32, NULL, &sp2), 0);
  ck_assert_ptr_eq(sp, sp2);
  kvs__space_unref(sp2);
  ck_assert_int_eq(kvs__seq_new(sp, &q), 0);
  uint32_t n = 2 * G + 7;
  uint16_t *k = randkv(NL, n), *v = randkv(NL, n);
  uint32_t *t = toks(n, 77);
  char err[KVS_STORE_ERRMSG];
  kvs__put_info info;
  for (uint32_t p = 0; p < n; p++)
    for (uint32_t l = 0; l < NL; l++) {
      size_t o = ((size_t)l * n + p) * C;
      ck_assert_int_eq(kvs__seq_put(q, p, t + p, 1, l, l + 1, k + o, v + o, NULL, 0, &info, err),
                       0);
      ck_assert_uint_eq(info.quantized, (p + 1) % G == 0 ? 1 : 0);
      ck_assert_uint_eq(info.seq_len, l == NL - 1 ? p + 1 : p);
    }
  check_seq(q, sp, k, v, n, 2 * G, NULL);
  ck_assert_uint_eq(stats(s).blocks, 2 * NL);
  kvs__seq_free(q);
  kvs__space_unref(sp);
  free(k);
  free(v);
  free(t);
  kvs__store_close(s);
}
END_TEST


/* A quantizer failure after slots were reserved (bf16 range too wide for
 * the fp16 scales) leaves the seq and the pool as they were. */
START_TEST(quantize_error_rolls_back)
{
  kvs__store *s = mkstore(1u << 20, 0);
  kvs__space_key key = mkkey(KVS_POLICY_PFN, 2);
  key.dtype = KVS_DTYPE_BF16;
  key.outliers = 0; /* else the huge value would be kept as an outlier */
  kvs__space *sp;
  kvs__seq *q;
  ck_assert_int_eq(kvs__space_ref(s, &key, NULL, &sp), 0);
  ck_assert_int_eq(kvs__seq_new(sp, &q), 0);
  uint32_t n = G + 1;
  size_t m = (size_t)NL * n * C;
  uint16_t *k = malloc(m * 2), *v = malloc(m * 2);
  for (size_t i = 0; i < m; i++) {
    k[i] = kvs__f32_to_bf16(frand());
    v[i] = kvs__f32_to_bf16(frand());
  }
  k[((size_t)NL * n - 1) * C - C * 4] = kvs__f32_to_bf16(1e30f); /* layer 1, row 12 */
  uint32_t *t = toks(n, 4);
  char err[KVS_STORE_ERRMSG];
  ck_assert_int_eq(kvs__seq_put(q, 0, t, n, 0, NL, k, v, NULL, 0, NULL, err), -ERANGE);
  ck_assert_uint_eq(kvs__seq_len(q), 0);
  kvs__store_stats st = stats(s);
  ck_assert_uint_eq(st.blocks, 0);
  ck_assert_uint_eq(st.pool_used_bytes, 0);
  ck_assert_uint_eq(st.puts, 0);
  /* The seq still takes a valid put. */
  k[((size_t)NL * n - 1) * C - C * 4] = kvs__f32_to_bf16(1.0f);
  ck_assert_int_eq(kvs__seq_put(q, 0, t, n, 0, NL, k, v, NULL, 0, NULL, err), 0);
  ck_assert_uint_eq(stats(s).blocks, NL);
  kvs__seq_free(q);
  kvs__space_unref(sp);
  free(k);
  free(v);
  free(t);
  kvs__store_close(s);
}
END_TEST

static void count_cb(const kvs__space_key *key, uint64_t blocks, uint64_t pinned, uint64_t seqs,
                     void *arg)
{
  (void)key;
  uint64_t *c = arg;
  c[0]++;
  c[1] += blocks;
  c[2] += pinned;
  c[3] += seqs;
}

START_TEST(foreach_close)
{
  kvs__store *s = mkstore(1u << 20, 0);
  kvs__space_key key = mkkey(KVS_POLICY_NONE, 0);
  kvs__space *sp;
  kvs__seq *q;
  ck_assert_int_eq(kvs__space_ref(s, &key, NULL, &sp), 0);
  ck_assert_int_eq(kvs__seq_new(sp, &q), 0);
  uint16_t *k = randkv(NL, G), *v = randkv(NL, G);
  uint32_t *t = toks(G, 0);
  ck_assert_int_eq(kvs__seq_put(q, 0, t, G, 0, NL, k, v, NULL, 0, NULL, NULL), 0);
  uint64_t c[4] = {0};
  kvs__store_foreach_space(s, count_cb, c);
  ck_assert_uint_eq(c[0], 1);
  ck_assert_uint_eq(c[1], NL);
  ck_assert_uint_eq(c[2], NL);
  ck_assert_uint_eq(c[3], 1);
  free(k);
  free(v);
  free(t);
  kvs__store_close(s); /* frees the live seq and space too */
}
END_TEST

int main(void)
{
  Suite *s = suite_create("store");
  TCase *tc = tcase_create("store");
  tcase_set_timeout(tc, 20);
  tcase_add_test(tc, aligned_and_residual);
  tcase_add_test(tc, share_lookup_bind);
  tcase_add_test(tc, pfn_rows);
  tcase_add_test(tc, kvsink_waits_for_act);
  tcase_add_test(tc, kvsink_fill);
  tcase_add_test(tc, eviction_and_nospc);
  tcase_add_test(tc, validation);
  tcase_add_test(tc, foreach_close);
  tcase_add_test(tc, decode_layer_by_layer);
  tcase_add_test(tc, quantize_error_rolls_back);
  suite_add_tcase(s, tc);
  SRunner *r = srunner_create(s);
  srunner_run_all(r, CK_NORMAL);
  int nf = srunner_ntests_failed(r);
  srunner_free(r);
  return nf ? EXIT_FAILURE : EXIT_SUCCESS;
}
