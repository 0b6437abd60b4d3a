/* SPDX-License-Identifier: MIT */
/* Helpers shared by the store tests: a small model, random K/V, token ids,
 * and counts read through the public store API. */
#ifndef KVS_TESTS_STORE_UTIL_H
#define KVS_TESTS_STORE_UTIL_H

#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/half.h"
#include "store/store.h"

#define NL 2u
#define H 2u
#define D 16u
#define C (H * D)
#define G 16u

static inline kvs__space_key tkey(uint32_t k_bits, uint32_t v_bits)
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
  k.k_bits = k_bits;
  k.v_bits = v_bits;
  k.policy = KVS_POLICY_NONE;
  return k;
}

static inline uint32_t trand(uint32_t *s)
{
  *s = *s * 1664525u + 1013904223u;
  return *s >> 8;
}

/* [nl][n][C] random finite fp16. */
static inline uint16_t *trandkv(uint32_t nl, uint32_t n, uint32_t seed)
{
  size_t m = (size_t)nl * n * C;
  uint16_t *x = malloc(m ? m * 2 : 2);
  for (size_t i = 0; i < m; i++)
    x[i] = kvs__f32_to_f16((float)(trand(&seed) % 4000) / 1000.0f - 2.0f);
  return x;
}

static inline uint32_t *ttoks(uint32_t n, uint32_t base)
{
  uint32_t *t = malloc(sizeof(*t) * (n ? n : 1));
  for (uint32_t i = 0; i < n; i++)
    t[i] = base + i * 7u;
  return t;
}

static inline kvs__store_stats tstats(const kvs__store *s)
{
  kvs__store_stats st;
  kvs__store_stats_get(s, &st);
  return st;
}

/* Put tokens [0, n) of a new seq on sp, for all layers, then free the seq
 * (its blocks stay cached, unreferenced). Returns the put's result. */
static inline int tput_free(kvs__space *sp, const uint32_t *t, uint32_t n, const uint16_t *k,
                            const uint16_t *v)
{
  kvs__seq *q;
  char err[KVS_STORE_ERRMSG];
  ck_assert_int_eq(kvs__seq_new(sp, &q), 0);
  int rc = kvs__seq_put(q, 0, t, n, 0, NL, k, v, NULL, 0, NULL, err);
  kvs__seq_free(q);
  return rc;
}

/* Tokens [0, n) of layers [0, nl) of q read back bit-exact as k, v
 * ([nl][n][C]). */
static inline void tget_exact(kvs__seq *q, uint32_t n, uint32_t nl, const uint16_t *k,
                              const uint16_t *v)
{
  const size_t bytes = (size_t)nl * n * C * 2;
  uint16_t *gk = malloc(bytes), *gv = malloc(bytes);
  char err[KVS_STORE_ERRMSG];
  ck_assert_int_eq(kvs__seq_get(q, 0, n, 0, nl, gk, gv, err), 0);
  ck_assert_int_eq(memcmp(gk, k, bytes), 0);
  ck_assert_int_eq(memcmp(gv, v, bytes), 0);
  free(gk);
  free(gv);
}

/* Leading tokens of t cached in sp. */
static inline uint32_t tcached(kvs__space *sp, const uint32_t *t, uint32_t n)
{
  uint32_t c = 0;
  ck_assert_int_eq(kvs__space_lookup(sp, t, n, NULL, &c), 0);
  return c;
}

#endif
