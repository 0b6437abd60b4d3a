/* SPDX-License-Identifier: MIT */
/* The store's device path (kvs__seq_put_dev / kvs__seq_get_dev, the qitem
 * dev flag) on the CPU: a backend that says dev_io but keeps "device"
 * memory in host memory must give exactly what the host path gives, for
 * bulk puts, appends across group boundaries, residual rows, predicted
 * sinks, NaN checks and gets. There is no separate NaN scan of device
 * input: the quantize call checks what it reads (here the C reference),
 * the host the rows it copies. The CUDA backend runs the same store code
 * (tests/gpu/devseg.sh). */
#include <errno.h>
#include <math.h>

#include "store/store_int.h"
#include "tests/store/util.h"

static uint32_t dev_items; /* blocks quantized from "device" input */
static uint32_t s_calls, s_max, w_calls, queued; /* quantize_start / _wait */
static int q_status;                             /* of the queued items */
static kvs__store *s_watch;  /* a store whose group records the first start counts */
static size_t s_groups;      /* its group records at the first quantize_start */

static int fake_quantize_n(kvs__backend *b, const kvs__qparams *p, const kvs__qitem *it,
                           uint32_t n)
{
  int st = queued ? q_status : 0; /* waits for the queued ones too */
  queued = 0;
  q_status = 0;
  for (uint32_t i = 0; i < n; i++) {
    dev_items += it[i].dev != 0;
    int rc = b->quantize(b, p, it[i].k, it[i].v, it[i].sink_mask, it[i].block, it[i].rows);
    if (rc < 0) return rc;
  }
  return st;
}

/* "Queued": done at once, the status kept for the wait. */
static int fake_quantize_start(kvs__backend *b, const kvs__qparams *p, const kvs__qitem *it,
                               uint32_t n)
{
  ck_assert_uint_le(n, KVS_BATCH_DEV_MAX);
  if (s_calls++ == 0 && s_watch)
    s_groups = kvs__index_count(s_watch->ix);
  if (n > s_max) s_max = n;
  queued = 1;
  for (uint32_t i = 0; i < n; i++) {
    ck_assert(it[i].dev);
    dev_items++;
    int rc = b->quantize(b, p, it[i].k, it[i].v, it[i].sink_mask, it[i].block, it[i].rows);
    if (rc < 0 && q_status == 0) q_status = rc;
  }
  return 0;
}

static int fake_quantize_wait(kvs__backend *b)
{
  (void)b;
  w_calls++;
  int st = q_status;
  queued = 0;
  q_status = 0;
  return st;
}

static kvs__backend fakedev;

static void setup(void)
{
  fakedev = kvs__backend_host;
  fakedev.name = "fakedev";
  fakedev.dev_io = 1;
  fakedev.quantize_n = fake_quantize_n;
  fakedev.quantize_start = fake_quantize_start;
  fakedev.quantize_wait = fake_quantize_wait;
}

static kvs__store *mk(kvs__backend *b)
{
  kvs__store *s = NULL;
  kvs__store_opts o = {.pool_bytes = 8u << 20, .backend = b};
  ck_assert_int_eq(kvs__store_init(&s, &o), 0);
  return s;
}

static kvs__profile prof(void)
{
  kvs__profile p;
  memset(&p, 0, sizeof p);
  strcpy(p.model_id, "test-model");
  p.layer = 0;
  p.n_channels = 2;
  p.channels[0] = 0;
  p.channels[1] = 1;
  p.tau = 5.0f;
  p.max_sinks = 3;
  p.pfn = 1;
  p.outliers = -1.0f;
  return p;
}

/* The same puts on a host store and on a dev_io store; gets compared. */
static void same(uint32_t kb, uint32_t vb, int sinks)
{
  kvs__space_key key = tkey(kb, vb);
  kvs__profile p = prof();
  if (sinks) {
    key.policy = KVS_POLICY_KVSINK;
    key.pfn = 1;
  }
  kvs__store *sh = mk(NULL), *sd = mk(&fakedev);
  kvs__space *ph, *pd;
  ck_assert_int_eq(kvs__space_ref(sh, &key, sinks ? &p : NULL, &ph), 0);
  ck_assert_int_eq(kvs__space_ref(sd, &key, sinks ? &p : NULL, &pd), 0);
  kvs__seq *qh, *qd;
  ck_assert_int_eq(kvs__seq_new(ph, &qh), 0);
  ck_assert_int_eq(kvs__seq_new(pd, &qd), 0);
  /* bulk, then appends that start mid-group and cross group boundaries */
  static const uint32_t sizes[] = {3 * G, 5, 1, G + 7, 2 * G - 13, 1, 40};
  uint32_t pos = 0, total = 0;
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) total += sizes[i];
  uint32_t *tok = ttoks(total, 100);
  uint16_t *k = trandkv(NL, total, 11), *v = trandkv(NL, total, 12);
  float *act = calloc((size_t)total * 2, sizeof *act);
  uint32_t seed = 5;
  for (uint32_t t = 0; t < total; t++)
    for (uint32_t c = 0; c < 2; c++)
      act[t * 2 + c] = (trand(&seed) % 97 == 0) ? 9.0f + (float)(t % 5) : (float)(t % 3);
  char err[KVS_STORE_ERRMSG];
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    uint32_t n = sizes[i];
    /* [NL][n][C] slices of this put */
    uint16_t *pk = malloc((size_t)NL * n * C * 2), *pv = malloc((size_t)NL * n * C * 2);
    for (uint32_t l = 0; l < NL; l++) {
      memcpy(pk + (size_t)l * n * C, k + ((size_t)l * total + pos) * C, (size_t)n * C * 2);
      memcpy(pv + (size_t)l * n * C, v + ((size_t)l * total + pos) * C, (size_t)n * C * 2);
    }
    kvs__put_info ih, id;
    const float *a = sinks ? act + (size_t)pos * 2 : NULL;
    ck_assert_int_eq(kvs__seq_put(qh, pos, tok + pos, n, 0, NL, pk, pv, a, sinks ? 2 : 0, &ih, err), 0);
    ck_assert_int_eq(kvs__seq_put_dev(qd, pos, tok + pos, n, 0, NL, pk, pv, a, sinks ? 2 : 0, &id, err), 0);
    ck_assert_uint_eq(ih.quantized, id.quantized);
    ck_assert_uint_eq(ih.sinks, id.sinks);
    ck_assert_uint_eq(ih.seq_len, id.seq_len);
    free(pk);
    free(pv);
    pos += n;
  }
  /* whole range and a few windows, through both get paths */
  static const uint32_t win[][2] = {{0, 0}, {0, 1}, {5, 30}, {G - 1, G + 2}, {17, 60}};
  for (size_t w = 0; w < sizeof win / sizeof win[0]; w++) {
    uint32_t s0 = win[w][0], n = win[w][1] ? win[w][1] : total;
    size_t bytes = (size_t)NL * n * C * 2;
    uint16_t *a1 = malloc(bytes), *b1 = malloc(bytes), *a2 = malloc(bytes), *b2 = malloc(bytes);
    ck_assert_int_eq(kvs__seq_get(qh, s0, n, 0, NL, a1, b1, err), 0);
    ck_assert_int_eq(kvs__seq_get_dev(qd, s0, n, 0, NL, a2, b2, err), 0);
    ck_assert_mem_eq(a1, a2, bytes);
    ck_assert_mem_eq(b1, b2, bytes);
    ck_assert_int_eq(kvs__seq_get(qd, s0, n, 0, NL, a2, b2, err), 0);
    ck_assert_mem_eq(a1, a2, bytes);
    free(a1);
    free(b1);
    free(a2);
    free(b2);
  }
  kvs__store_stats h = tstats(sh), d = tstats(sd);
  ck_assert_uint_eq(h.blocks, d.blocks);
  ck_assert_uint_eq(h.sinks_found, d.sinks_found);
  ck_assert_uint_eq(h.sinks_dropped, d.sinks_dropped);
  ck_assert_uint_eq(h.stored_bytes, d.stored_bytes);
  kvs__seq_free(qh);
  kvs__seq_free(qd);
  kvs__space_unref(ph);
  kvs__space_unref(pd);
  kvs__store_close(sh);
  kvs__store_close(sd);
  free(tok);
  free(k);
  free(v);
  free(act);
}

START_TEST(same_as_host)
{
  static const uint32_t bits[][2] = {{16, 16}, {8, 8}, {4, 2}, {2, 2}, {3, 4}};
  dev_items = 0;
  for (size_t i = 0; i < sizeof bits / sizeof bits[0]; i++) {
    same(bits[i][0], bits[i][1], 0);
    same(bits[i][0], bits[i][1], 1);
  }
  ck_assert_uint_gt(dev_items, 0); /* quantized from the "device" input */
}
END_TEST

/* NaN anywhere in device K/V fails the put and changes nothing. */
START_TEST(nan_refused)
{
  kvs__space_key key = tkey(4, 4);
  kvs__store *sd = mk(&fakedev);
  kvs__space *sp;
  kvs__seq *q;
  char err[KVS_STORE_ERRMSG];
  ck_assert_int_eq(kvs__space_ref(sd, &key, NULL, &sp), 0);
  ck_assert_int_eq(kvs__seq_new(sp, &q), 0);
  uint32_t *tok = ttoks(2 * G, 1);
  uint16_t *k = trandkv(NL, 2 * G, 1), *v = trandkv(NL, 2 * G, 2);
  v[(size_t)NL * 2 * G * C - 1] = 0x7e00; /* a NaN in the last row */
  ck_assert_int_eq(kvs__seq_put_dev(q, 0, tok, 2 * G, 0, NL, k, v, NULL, 0, NULL, err), KVS_ENAN);
  ck_assert_uint_eq(kvs__seq_len(q), 0);
  ck_assert_uint_eq(tstats(sd).blocks, 0);
  ck_assert_uint_eq(tstats(sd).pool_used_bytes, 0); /* the fresh slots went back */
  /* in a row that stays 16-bit (the residual, host-checked after its copy) */
  k[(size_t)(2 * G - 3) * C + 5] = 0xfc00; /* layer 0, last row of a 2G-2 put */
  ck_assert_int_eq(kvs__seq_put_dev(q, 0, tok, 2 * G - 2, 0, NL, k, v, NULL, 0, NULL, err),
                   KVS_ENAN);
  ck_assert_uint_eq(kvs__seq_len(q), 0);
  ck_assert_uint_eq(tstats(sd).blocks, 0);
  ck_assert_uint_eq(tstats(sd).residual_bytes, 0);
  kvs__seq_free(q);
  kvs__space_unref(sp);
  kvs__store_close(sd);
  free(tok);
  free(k);
  free(v);
}
END_TEST

/* Rows of blocks already cached are not read (Decision 17), so a NaN
 * there goes unnoticed, as on the host path: the put takes the cached
 * blocks. (The device scan that used to read all of it is gone.) */
START_TEST(cached_rows_not_read)
{
  kvs__space_key key = tkey(4, 4);
  kvs__store *sd = mk(&fakedev);
  kvs__space *sp;
  kvs__seq *q1, *q2;
  char err[KVS_STORE_ERRMSG];
  ck_assert_int_eq(kvs__space_ref(sd, &key, NULL, &sp), 0);
  ck_assert_int_eq(kvs__seq_new(sp, &q1), 0);
  ck_assert_int_eq(kvs__seq_new(sp, &q2), 0);
  uint32_t *tok = ttoks(2 * G, 1);
  uint16_t *k = trandkv(NL, 2 * G, 1), *v = trandkv(NL, 2 * G, 2);
  ck_assert_int_eq(kvs__seq_put_dev(q1, 0, tok, G, 0, NL, k, v, NULL, 0, NULL, err), 0);
  uint64_t blocks = tstats(sd).blocks;
  ck_assert_uint_eq(blocks, NL);
  /* the same first group (cached) with a NaN in it, then a new group */
  uint16_t *k2 = trandkv(NL, 2 * G, 3), *v2 = trandkv(NL, 2 * G, 4);
  k2[3] = 0x7e00;
  dev_items = 0;
  ck_assert_int_eq(kvs__seq_put_dev(q2, 0, tok, 2 * G, 0, NL, k2, v2, NULL, 0, NULL, err), 0);
  ck_assert_uint_eq(dev_items, NL);                 /* only the new group's blocks */
  ck_assert_uint_eq(tstats(sd).blocks, blocks + NL);
  /* and a NaN in the new group is found */
  kvs__seq *q3;
  ck_assert_int_eq(kvs__seq_new(sp, &q3), 0);
  uint32_t *tok3 = ttoks(2 * G, 1);
  tok3[G + 1] = 999999; /* group 1 differs from q2's */
  k2[3] = k[3];
  k2[(size_t)(G + 2) * C] = 0x7c00;
  ck_assert_int_eq(kvs__seq_put_dev(q3, 0, tok3, 2 * G, 0, NL, k2, v2, NULL, 0, NULL, err),
                   KVS_ENAN);
  ck_assert_uint_eq(tstats(sd).blocks, blocks + NL);
  kvs__seq_free(q1);
  kvs__seq_free(q2);
  kvs__seq_free(q3);
  kvs__space_unref(sp);
  kvs__store_close(sd);
  free(tok);
  free(tok3);
  free(k);
  free(v);
  free(k2);
  free(v2);
}
END_TEST

/* Batches: a bulk device put queues its blocks in chunks of 256 while it
 * reserves the next ones (quantize_start) and waits once (one synchronize
 * on a GPU); a bulk get is one backend call; never more than
 * KVS_BATCH_DEV_MAX blocks nor more than KVS_BATCH_MAX host-resident ones
 * in a call. */
static uint32_t q_calls, q_max, dq_calls, dq_max;

static int count_quantize_n(kvs__backend *b, const kvs__qparams *p, const kvs__qitem *it,
                            uint32_t n)
{
  uint32_t host = 0;
  for (uint32_t i = 0; i < n; i++) host += !it[i].dev;
  ck_assert_uint_le(n, KVS_BATCH_DEV_MAX);
  ck_assert_uint_le(host, KVS_BATCH_MAX);
  q_calls++;
  if (n > q_max) q_max = n;
  for (uint32_t i = 0; i < n; i++) {
    int rc = b->quantize(b, p, it[i].k, it[i].v, it[i].sink_mask, it[i].block, it[i].rows);
    if (rc < 0) return rc;
  }
  return 0;
}

static int count_dequantize_n(kvs__backend *b, const kvs__qparams *p, const kvs__dqitem *it,
                              uint32_t n)
{
  uint32_t host = 0;
  for (uint32_t i = 0; i < n; i++) host += !it[i].dev;
  ck_assert_uint_le(n, KVS_BATCH_DEV_MAX);
  ck_assert_uint_le(host, KVS_BATCH_MAX);
  dq_calls++;
  if (n > dq_max) dq_max = n;
  for (uint32_t i = 0; i < n; i++) {
    int rc = b->dequantize(b, p, it[i].block, it[i].rows, it[i].r0, it[i].r1, it[i].k_out,
                           it[i].v_out);
    if (rc < 0) return rc;
  }
  return 0;
}

START_TEST(one_batch)
{
  kvs__backend cb = fakedev;
  cb.quantize_n = count_quantize_n;
  cb.dequantize_n = count_dequantize_n;
  kvs__space_key key = tkey(4, 4);
  kvs__store *sd = mk(&cb), *sh = mk(NULL);
  kvs__space *sp, *hp;
  kvs__seq *q, *hq;
  char err[KVS_STORE_ERRMSG];
  ck_assert_int_eq(kvs__space_ref(sd, &key, NULL, &sp), 0);
  ck_assert_int_eq(kvs__space_ref(sh, &key, NULL, &hp), 0);
  ck_assert_int_eq(kvs__seq_new(sp, &q), 0);
  ck_assert_int_eq(kvs__seq_new(hp, &hq), 0);
  const uint32_t n = 200 * G; /* 400 blocks over NL = 2 layers */
  uint32_t *tok = ttoks(n + 5, 1);
  uint16_t *k = trandkv(NL, n, 1), *v = trandkv(NL, n, 2);
  /* bulk device put: two chunks queued (256 + 144), one wait; the first
   * chunk goes once its 128 groups are claimed, before the other 72 are
   * hashed and probed (Decision 50) */
  q_calls = q_max = s_calls = s_max = w_calls = 0;
  s_watch = sd;
  s_groups = 0;
  ck_assert_int_eq(kvs__seq_put_dev(q, 0, tok, n, 0, NL, k, v, NULL, 0, NULL, err), 0);
  s_watch = NULL;
  ck_assert_uint_eq(s_groups, 256 / NL);
  ck_assert_uint_eq(q_calls, 0);
  ck_assert_uint_eq(s_calls, 2);
  ck_assert_uint_eq(s_max, 256);
  ck_assert_uint_eq(w_calls, 1);
  ck_assert_int_eq(kvs__seq_put(hq, 0, tok, n, 0, NL, k, v, NULL, 0, NULL, err), 0);
  /* bulk device get: one call, the same bytes as the host store's */
  size_t bytes = (size_t)NL * n * C * 2;
  uint16_t *a1 = malloc(bytes), *b1 = malloc(bytes), *a2 = malloc(bytes), *b2 = malloc(bytes);
  dq_calls = dq_max = 0;
  ck_assert_int_eq(kvs__seq_get_dev(q, 0, n, 0, NL, a1, b1, err), 0);
  ck_assert_uint_eq(dq_calls, 1);
  ck_assert_uint_eq(dq_max, 2 * 200);
  ck_assert_int_eq(kvs__seq_get(hq, 0, n, 0, NL, a2, b2, err), 0);
  ck_assert_mem_eq(a1, a2, bytes);
  ck_assert_mem_eq(b1, b2, bytes);
  /* host-resident tiles (a host put on the same store): batches of at most
   * KVS_BATCH_MAX, checked in count_quantize_n */
  kvs__seq *q2;
  ck_assert_int_eq(kvs__seq_new(sp, &q2), 0);
  uint32_t *tok2 = ttoks(n, 50000);
  q_calls = 0;
  ck_assert_int_eq(kvs__seq_put(q2, 0, tok2, n, 0, NL, k, v, NULL, 0, NULL, err), 0);
  ck_assert_uint_eq(q_calls, (2 * 200 + KVS_BATCH_MAX - 1) / KVS_BATCH_MAX);
  kvs__seq_free(q2);
  free(tok2);
  free(a1);
  free(b1);
  free(a2);
  free(b2);
  kvs__seq_free(q);
  kvs__seq_free(hq);
  kvs__space_unref(sp);
  kvs__space_unref(hp);
  kvs__store_close(sd);
  kvs__store_close(sh);
  /* the backend's A/B knobs (Decision 50): queue_late claims all 200
   * groups before the first launch (two of 256 + 144 after), queue_chunk
   * 128 queues after 64 groups, four launches (128 x 3 + 16) */
  for (int late = 1; late >= 0; late--) {
    kvs__backend vb = fakedev;
    vb.queue_late = late;
    vb.queue_chunk = late ? 0 : 128;
    kvs__store *s2 = mk(&vb);
    kvs__space *p3;
    kvs__seq *q3;
    ck_assert_int_eq(kvs__space_ref(s2, &key, NULL, &p3), 0);
    ck_assert_int_eq(kvs__seq_new(p3, &q3), 0);
    s_calls = s_max = 0;
    s_watch = s2;
    s_groups = 0;
    ck_assert_int_eq(kvs__seq_put_dev(q3, 0, tok, n, 0, NL, k, v, NULL, 0, NULL, err), 0);
    s_watch = NULL;
    ck_assert_uint_eq(s_groups, late ? 200 : 128 / NL);
    ck_assert_uint_eq(s_calls, late ? 2 : 4);
    ck_assert_uint_eq(s_max, late ? 256 : 128);
    kvs__seq_free(q3);
    kvs__space_unref(p3);
    kvs__store_close(s2);
  }
  free(tok);
  free(k);
  free(v);
}
END_TEST

/* The feed (Decision 51): a bulk device put opens the backend's kernel
 * before it claims anything (quantize_open, with the put's block count)
 * and hands the blocks over a group at a time (32 blocks); a backend
 * that does not open gets chunks of 256 as before; whatever open
 * returns, the put waits once; a put too small for a feed does not open
 * one. */
static uint32_t o_calls, o_n, o_starts; /* open calls, its n, starts before it */
static int o_ret;

static int fake_quantize_open(kvs__backend *b, const kvs__qparams *p, uint32_t n)
{
  (void)b;
  (void)p;
  o_calls++;
  o_n = n;
  o_starts = s_calls;
  return o_ret;
}

START_TEST(feed)
{
  kvs__backend fb = fakedev;
  fb.quantize_open = fake_quantize_open;
  kvs__space_key key = tkey(4, 4);
  const uint32_t n = 200 * G; /* 400 blocks over NL = 2 layers */
  uint32_t *tok = ttoks(n, 1);
  uint16_t *k = trandkv(NL, n, 1), *v = trandkv(NL, n, 2);
  char err[KVS_STORE_ERRMSG];
  /* the host store's bytes, for the gets below */
  kvs__store *sh = mk(NULL);
  kvs__space *hp;
  kvs__seq *hq;
  ck_assert_int_eq(kvs__space_ref(sh, &key, NULL, &hp), 0);
  ck_assert_int_eq(kvs__seq_new(hp, &hq), 0);
  ck_assert_int_eq(kvs__seq_put(hq, 0, tok, n, 0, NL, k, v, NULL, 0, NULL, err), 0);
  size_t bytes = (size_t)NL * n * C * 2;
  uint16_t *a1 = malloc(bytes), *b1 = malloc(bytes), *a2 = malloc(bytes), *b2 = malloc(bytes);
  ck_assert_int_eq(kvs__seq_get(hq, 0, n, 0, NL, a2, b2, err), 0);
  const int rets[] = {1, 0, -EIO};
  for (unsigned r = 0; r < 3; r++) {
    o_ret = rets[r];
    kvs__store *sd = mk(&fb);
    kvs__space *sp;
    kvs__seq *q;
    ck_assert_int_eq(kvs__space_ref(sd, &key, NULL, &sp), 0);
    ck_assert_int_eq(kvs__seq_new(sp, &q), 0);
    o_calls = o_n = s_calls = s_max = w_calls = 0;
    o_starts = 99;
    s_watch = sd;
    s_groups = 0;
    int rc = kvs__seq_put_dev(q, 0, tok, n, 0, NL, k, v, NULL, 0, NULL, err);
    s_watch = NULL;
    ck_assert_uint_eq(o_calls, 1);
    ck_assert_uint_eq(o_n, 2 * 200);
    ck_assert_uint_eq(o_starts, 0);
    ck_assert_uint_eq(w_calls, 1);
    if (o_ret < 0) {
      /* refused, and nothing of it is visible */
      ck_assert_int_eq(rc, -EIO);
      ck_assert_uint_eq(s_calls, 0);
      ck_assert_uint_eq(kvs__seq_len(q), 0);
      o_ret = 1;
      ck_assert_int_eq(kvs__seq_put_dev(q, 0, tok, n, 0, NL, k, v, NULL, 0, NULL, err), 0);
    } else {
      ck_assert_int_eq(rc, 0);
      /* open: the first 32 blocks go after 16 groups, 12 x 32 + 16 in all */
      ck_assert_uint_eq(s_groups, o_ret ? 32 / NL : 256 / NL);
      ck_assert_uint_eq(s_calls, o_ret ? 13 : 2);
      ck_assert_uint_eq(s_max, o_ret ? 32 : 256);
    }
    memset(a1, 0, bytes);
    memset(b1, 0, bytes);
    ck_assert_int_eq(kvs__seq_get_dev(q, 0, n, 0, NL, a1, b1, err), 0);
    ck_assert_mem_eq(a1, a2, bytes);
    ck_assert_mem_eq(b1, b2, bytes);
    /* a put of 20 blocks: no feed */
    kvs__seq *q2;
    ck_assert_int_eq(kvs__seq_new(sp, &q2), 0);
    uint32_t *tok2 = ttoks(10 * G, 70000);
    o_calls = 0;
    ck_assert_int_eq(kvs__seq_put_dev(q2, 0, tok2, 10 * G, 0, NL, k, v, NULL, 0, NULL, err), 0);
    ck_assert_uint_eq(o_calls, 0);
    free(tok2);
    kvs__seq_free(q2);
    kvs__seq_free(q);
    kvs__space_unref(sp);
    kvs__store_close(sd);
  }
  free(a1);
  free(b1);
  free(a2);
  free(b2);
  kvs__seq_free(hq);
  kvs__space_unref(hp);
  kvs__store_close(sh);
  free(tok);
  free(k);
  free(v);
}
END_TEST

/* A class's LRU ring is made once, with room for the most records the
 * pool holds of it (Decision 51): filling the pool and then evicting
 * never grows (copies) it. */
START_TEST(lru_ring_made_once)
{
  kvs__store *s = mk(NULL); /* 8 MiB */
  kvs__space_key key = tkey(4, 4);
  kvs__space *sp;
  ck_assert_int_eq(kvs__space_ref(s, &key, NULL, &sp), 0);
  const uint64_t most = 2u * (kvs__pool_bytes(s->pool) / sp->qbytes) + 64u;
  kvs__lru *r = &s->cls_lru[sp->blk_cls];
  ck_assert_uint_ge(r->floor, most);
  const uint32_t n = 8 * G; /* 16 blocks a put */
  uint16_t *k = trandkv(NL, n, 3), *v = trandkv(NL, n, 4);
  uint32_t *t = ttoks(n, 1);
  ck_assert_int_eq(tput_free(sp, t, n, k, v), 0);
  const kvs__lru_ent *e0 = r->e;
  const uint32_t cap0 = r->cap;
  ck_assert_uint_ge(cap0, most);
  for (uint32_t i = 1; tstats(s).evictions < most; i++) {
    for (uint32_t j = 0; j < n; j++) t[j] = i * n + j + 1;
    ck_assert_int_eq(tput_free(sp, t, n, k, v), 0);
  }
  ck_assert_ptr_eq(r->e, e0);
  ck_assert_uint_eq(r->cap, cap0);
  free(t);
  free(k);
  free(v);
  kvs__space_unref(sp);
  kvs__store_close(s);
}
END_TEST

/* kvs__seq_get_dev returns with everything it wrote complete, so kvsinkd
 * replies to a bulk device get without a context synchronize (Decision
 * 48): a copy up (a residual row) may still be running when copy()
 * returns (CUDA, from pageable memory); a dequantize call waits for the
 * copies before it, and sync() for all of them. */
static int pending, sync_calls;

static int pend_copy(kvs__backend *b, void *dst, const void *src, size_t n, int to_pool)
{
  (void)b;
  memcpy(dst, src, n);
  if (to_pool) pending = 1;
  return 0;
}

static int pend_dequantize_n(kvs__backend *b, const kvs__qparams *p, const kvs__dqitem *it,
                             uint32_t n)
{
  pending = 0;
  for (uint32_t i = 0; i < n; i++) {
    int rc = b->dequantize(b, p, it[i].block, it[i].rows, it[i].r0, it[i].r1, it[i].k_out,
                           it[i].v_out);
    if (rc < 0) return rc;
  }
  return 0;
}

static int pend_sync(kvs__backend *b)
{
  (void)b;
  sync_calls++;
  pending = 0;
  return 0;
}

START_TEST(get_dev_waits_for_its_copies)
{
  kvs__backend cb = fakedev;
  cb.copy = pend_copy;
  cb.dequantize_n = pend_dequantize_n;
  cb.sync = pend_sync;
  kvs__space_key key = tkey(4, 4);
  kvs__store *sd = mk(&cb);
  kvs__space *sp;
  kvs__seq *q;
  char err[KVS_STORE_ERRMSG];
  ck_assert_int_eq(kvs__space_ref(sd, &key, NULL, &sp), 0);
  ck_assert_int_eq(kvs__seq_new(sp, &q), 0);
  const uint32_t n = 2 * G + 5; /* two blocks and five residual rows a layer */
  uint32_t *tok = ttoks(n, 1);
  uint16_t *k = trandkv(NL, n, 1), *v = trandkv(NL, n, 2);
  ck_assert_int_eq(kvs__seq_put_dev(q, 0, tok, n, 0, NL, k, v, NULL, 0, NULL, err), 0);
  size_t bytes = (size_t)NL * n * C * 2;
  uint16_t *ko = malloc(bytes), *vo = malloc(bytes);
  /* { start, tokens, syncs expected }: blocks and rows (the launch comes
   * after the copies and waits for them), blocks only, rows only (nothing
   * but the sync waits), a row then a block of the next layer */
  static const uint32_t cases[][3] = {{0, 2 * G + 5, 0}, {0, 2 * G, 0}, {2 * G, 5, 1},
                                      {2 * G + 1, 4, 1}, {G - 1, G + 3, 0}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    sync_calls = 0;
    pending = 0;
    ck_assert_int_eq(kvs__seq_get_dev(q, cases[i][0], cases[i][1], 0, NL, ko, vo, err), 0);
    ck_assert_int_eq(pending, 0);
    ck_assert_int_eq(sync_calls, (int)cases[i][2]);
  }
  /* the residual rows came back as put */
  ck_assert_int_eq(kvs__seq_get_dev(q, 0, n, 0, NL, ko, vo, err), 0);
  for (uint32_t l = 0; l < NL; l++)
    ck_assert_mem_eq(ko + ((size_t)l * n + 2 * G) * C, k + ((size_t)l * n + 2 * G) * C,
                     (size_t)5 * C * 2);
  kvs__seq_free(q);
  kvs__space_unref(sp);
  kvs__store_close(sd);
  free(tok);
  free(k);
  free(v);
  free(ko);
  free(vo);
}
END_TEST

/* The host backend reads no device memory. */
START_TEST(host_backend_refuses)
{
  kvs__space_key key = tkey(4, 4);
  kvs__store *s = mk(NULL);
  kvs__space *sp;
  kvs__seq *q;
  char err[KVS_STORE_ERRMSG];
  ck_assert_int_eq(kvs__space_ref(s, &key, NULL, &sp), 0);
  ck_assert_int_eq(kvs__seq_new(sp, &q), 0);
  uint32_t *tok = ttoks(G, 1);
  uint16_t *k = trandkv(NL, G, 1), *v = trandkv(NL, G, 2);
  ck_assert_int_eq(kvs__seq_put_dev(q, 0, tok, G, 0, NL, k, v, NULL, 0, NULL, err), -EOPNOTSUPP);
  ck_assert_int_eq(kvs__seq_put(q, 0, tok, G, 0, NL, k, v, NULL, 0, NULL, err), 0);
  ck_assert_int_eq(kvs__seq_get_dev(q, 0, G, 0, NL, k, v, err), -EOPNOTSUPP);
  kvs__seq_free(q);
  kvs__space_unref(sp);
  kvs__store_close(s);
  free(tok);
  free(k);
  free(v);
}
END_TEST

/* Decode residuals in the backend's page-locked memory (store/resbuf.c):
 * a 1-token put that completes a group hands the residual to quantize_n
 * as dev items (no copy into host tiles), buffers come from one chunk and
 * are recycled, a residual left by a bulk put moves there at the next
 * decode step, and the blocks are the host store's. */
static uint32_t ha_calls, hf_calls, pin_items;
static char *ha_lo, *ha_hi;

static int fake_host_alloc(kvs__backend *b, size_t bytes, void **p)
{
  (void)b;
  *p = aligned_alloc(4096, (bytes + 4095) & ~(size_t)4095);
  if (!*p) return -ENOMEM;
  ha_calls++;
  if (!ha_lo || (char *)*p < ha_lo) ha_lo = *p;
  if ((char *)*p + bytes > ha_hi) ha_hi = (char *)*p + bytes;
  return 0;
}

static void fake_host_free(kvs__backend *b, void *p, size_t bytes)
{
  (void)b;
  ck_assert_uint_ge(bytes, (size_t)2 << 20); /* a whole chunk */
  hf_calls++;
  free(p);
}

static int pin_quantize_n(kvs__backend *b, const kvs__qparams *p, const kvs__qitem *it, uint32_t n)
{
  for (uint32_t i = 0; i < n; i++)
    if (it[i].dev && (const char *)it[i].k >= ha_lo && (const char *)it[i].k < ha_hi) pin_items++;
  return fake_quantize_n(b, p, it, n);
}

/* tokens [from, to) one at a time into both seqs; k, v: [NL][stride][C] */
static void decode(kvs__seq *q, kvs__seq *hq, const uint32_t *tok, const uint16_t *k,
                   const uint16_t *v, uint32_t stride, uint32_t from, uint32_t to)
{
  char err[KVS_STORE_ERRMSG];
  uint16_t *k1 = malloc((size_t)NL * C * 2), *v1 = malloc((size_t)NL * C * 2);
  for (uint32_t t = from; t < to; t++) {
    for (uint32_t l = 0; l < NL; l++) { /* [layer][1][C] of token t */
      memcpy(k1 + (size_t)l * C, k + ((size_t)l * stride + t) * C, (size_t)C * 2);
      memcpy(v1 + (size_t)l * C, v + ((size_t)l * stride + t) * C, (size_t)C * 2);
    }
    ck_assert_int_eq(kvs__seq_put(q, t, tok + t, 1, 0, NL, k1, v1, NULL, 0, NULL, err), 0);
    ck_assert_int_eq(kvs__seq_put(hq, t, tok + t, 1, 0, NL, k1, v1, NULL, 0, NULL, err), 0);
  }
  free(k1);
  free(v1);
}

static void same_rows(kvs__seq *q, kvs__seq *hq, uint32_t n)
{
  char err[KVS_STORE_ERRMSG];
  size_t bytes = (size_t)NL * n * C * 2;
  uint16_t *a1 = malloc(bytes), *b1 = malloc(bytes), *a2 = malloc(bytes), *b2 = malloc(bytes);
  ck_assert_int_eq(kvs__seq_get(q, 0, n, 0, NL, a1, b1, err), 0);
  ck_assert_int_eq(kvs__seq_get(hq, 0, n, 0, NL, a2, b2, err), 0);
  ck_assert_mem_eq(a1, a2, bytes);
  ck_assert_mem_eq(b1, b2, bytes);
  free(a1);
  free(b1);
  free(a2);
  free(b2);
}

START_TEST(decode_residual_pinned)
{
  kvs__backend pb = fakedev;
  pb.quantize_n = pin_quantize_n;
  pb.host_alloc = fake_host_alloc;
  pb.host_free = fake_host_free;
  ha_calls = hf_calls = pin_items = 0;
  ha_lo = ha_hi = NULL;
  kvs__space_key key = tkey(4, 2);
  kvs__store *sd = mk(&pb), *sh = mk(NULL);
  kvs__space *sp, *hp;
  kvs__seq *q, *hq;
  char err[KVS_STORE_ERRMSG];
  ck_assert_int_eq(kvs__space_ref(sd, &key, NULL, &sp), 0);
  ck_assert_int_eq(kvs__space_ref(sh, &key, NULL, &hp), 0);
  const uint32_t n = 2 * G + 3;
  uint32_t *tok = ttoks(n, 7);
  uint16_t *k = trandkv(NL, n, 11), *v = trandkv(NL, n, 12);
  ck_assert_int_eq(kvs__seq_new(sp, &q), 0);
  ck_assert_int_eq(kvs__seq_new(hp, &hq), 0);
  decode(q, hq, tok, k, v, n, 0, n);
  ck_assert_uint_eq(ha_calls, 1);           /* one chunk for every buffer */
  ck_assert_uint_eq(pin_items, 2 * NL);     /* two groups, each layer's read in place */
  same_rows(q, hq, n);
  kvs__store_stats s1;
  kvs__store_stats_get(sd, &s1);
  ck_assert_uint_eq(s1.residual_bytes, (uint64_t)NL * 2 * 2 * G * C * 2); /* 2G rows, K and V */
  kvs__seq_free(q);
  kvs__store_stats_get(sd, &s1);
  ck_assert_uint_eq(s1.residual_bytes, 0);
  /* the buffers come back: a new seq takes them, no new chunk */
  kvs__seq_free(hq);
  ck_assert_int_eq(kvs__seq_new(sp, &q), 0);
  ck_assert_int_eq(kvs__seq_new(hp, &hq), 0);
  uint32_t *tok2 = ttoks(n, 1000); /* other tokens: the first seq's blocks are still cached */
  decode(q, hq, tok2, k, v, n, 0, G + 1);
  free(tok2);
  ck_assert_uint_eq(ha_calls, 1);
  ck_assert_uint_eq(pin_items, 3 * NL);
  same_rows(q, hq, G + 1);
  kvs__seq_free(q);
  kvs__seq_free(hq);
  /* a bulk put's leftover rows (malloc'd) move to a pinned buffer at the
   * next decode step, rows kept */
  free(k);
  free(v);
  uint16_t *k2 = trandkv(NL, n, 21), *v2 = trandkv(NL, n, 22);
  /* a bulk put of G + 5 tokens: [layer][G + 5][C] */
  uint16_t *kb = malloc((size_t)NL * (G + 5) * C * 2), *vb = malloc((size_t)NL * (G + 5) * C * 2);
  for (uint32_t l = 0; l < NL; l++) {
    memcpy(kb + (size_t)l * (G + 5) * C, k2 + (size_t)l * n * C, (size_t)(G + 5) * C * 2);
    memcpy(vb + (size_t)l * (G + 5) * C, v2 + (size_t)l * n * C, (size_t)(G + 5) * C * 2);
  }
  ck_assert_int_eq(kvs__seq_new(sp, &q), 0);
  ck_assert_int_eq(kvs__seq_new(hp, &hq), 0);
  uint32_t *tok3 = ttoks(n, 5000);
  ck_assert_int_eq(kvs__seq_put(q, 0, tok3, G + 5, 0, NL, kb, vb, NULL, 0, NULL, err), 0);
  ck_assert_int_eq(kvs__seq_put(hq, 0, tok3, G + 5, 0, NL, kb, vb, NULL, 0, NULL, err), 0);
  uint32_t before = pin_items;
  decode(q, hq, tok3, k2, v2, n, G + 5, n);
  free(tok3);
  ck_assert_uint_eq(pin_items, before + NL); /* the second group, read in place */
  same_rows(q, hq, n);
  free(kb);
  free(vb);
  free(k2);
  free(v2);
  free(tok);
  kvs__seq_free(q);
  kvs__seq_free(hq);
  kvs__space_unref(sp);
  kvs__space_unref(hp);
  kvs__store_close(sd);
  kvs__store_close(sh);
  ck_assert_uint_eq(hf_calls, ha_calls); /* every chunk given back at close */
}
END_TEST

int main(void)
{
  Suite *su = suite_create("devput");
  TCase *t = tcase_create("core");
  tcase_add_checked_fixture(t, setup, NULL);
  tcase_set_timeout(t, 60);
  tcase_add_test(t, same_as_host);
  tcase_add_test(t, nan_refused);
  tcase_add_test(t, cached_rows_not_read);
  tcase_add_test(t, host_backend_refuses);
  tcase_add_test(t, one_batch);
  tcase_add_test(t, feed);
  tcase_add_test(t, lru_ring_made_once);
  tcase_add_test(t, get_dev_waits_for_its_copies);
  tcase_add_test(t, decode_residual_pinned);
  suite_add_tcase(su, t);
  SRunner *sr = srunner_create(su);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
