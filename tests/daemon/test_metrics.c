/* SPDX-License-Identifier: MIT */
/* daemon/metrics.c: bucket placement, counters kept by kvs__ops_run, and
 * the exposition against a real store (label escaping, per-space rows). */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/metrics.h"
#include "daemon/ops.h"

START_TEST(buckets)
{
  kvs__metrics m;
  memset(&m, 0, sizeof m);
  kvs__metrics_request(&m, KVS_OP_PUT, 0, 10000);       /* on the first bound: le 1e-05 */
  kvs__metrics_request(&m, KVS_OP_PUT, 0, 10001);       /* just over: le 2.5e-05 */
  kvs__metrics_request(&m, KVS_OP_GET, -5, 3000000);    /* 3 ms: le 0.005 */
  kvs__metrics_request(&m, KVS_OP_LOOKUP, 0, 99000000000ull); /* 99 s: +Inf */
  kvs__metrics_request(&m, KVS_OP_PING, 0, 5);          /* counted, not timed */
  ck_assert_uint_eq(m.latency[KVS_METRICS_PUT].count[0], 1);
  ck_assert_uint_eq(m.latency[KVS_METRICS_PUT].count[1], 1);
  ck_assert_uint_eq(m.latency[KVS_METRICS_PUT].sum_ns, 20001);
  ck_assert_uint_eq(m.latency[KVS_METRICS_GET].count[8], 1);
  ck_assert_uint_eq(m.latency[KVS_METRICS_LOOKUP].count[KVS_METRICS_BUCKETS], 1);
  ck_assert_uint_eq(m.requests[KVS_OP_PUT], 2);
  ck_assert_uint_eq(m.errors[KVS_OP_GET], 1);
  ck_assert_uint_eq(m.errors[KVS_OP_PUT], 0);
  ck_assert_uint_eq(m.requests[KVS_OP_PING], 1);
  for (size_t b = 1; b < KVS_METRICS_BUCKETS; b++)
    ck_assert(kvs__metrics_bucket_ns[b] > kvs__metrics_bucket_ns[b - 1]);
}
END_TEST

START_TEST(render_real_store)
{
  kvs__config cfg;
  kvs__config_defaults(&cfg);
  kvs__store *store;
  kvs__store_opts o = {.pool_bytes = 16u << 20, .max_pending = cfg.max_pending_tokens};
  ck_assert_int_eq(kvs__store_init(&store, &o), 0);
  kvs__profiles profiles;
  memset(&profiles, 0, sizeof profiles);
  kvs__metrics m;
  memset(&m, 0, sizeof m);
  kvs__ops_env env = {.store = store, .cfg = &cfg, .profiles = &profiles, .metrics = &m};
  kvs__sess_state st;
  kvs__sess_init(&st, &cfg, 1, 1234, 1, 0);
  kvs__req rq;
  memset(&rq, 0, sizeof rq);
  rq.op = KVS_OP_HELLO;
  rq.id = 1;
  rq.hello.version = KVS_PROTO_VERSION;
  strcpy(rq.hello.model_id, "m\"o\\d\xff");
  rq.hello.n_layers = 2;
  rq.hello.n_kv_heads = 2;
  rq.hello.head_dim = 16;
  rq.hello.dtype = KVS_DTYPE_F16;
  rq.hello.seg_size = 1u << 20;
  rq.hello.pfn = -1;
  rq.hello.outliers = -1;
  kvs__rep rep;
  ck_assert_int_eq(kvs__ops_run(&env, &st, &rq, &rep), KVS_OPS_REPLY_FD);
  kvs__ops_rep_free(&rep);
  rq.op = KVS_OP_GET; /* no such seq: an error */
  rq.id = 2;
  kvs__ops_run(&env, &st, &rq, &rep);
  ck_assert_int_lt(rep.err, 0);
  kvs__ops_rep_free(&rep);
  ck_assert_uint_eq(m.requests[KVS_OP_HELLO], 1);
  ck_assert_uint_eq(m.errors[KVS_OP_GET], 1);
  ck_assert_uint_eq(m.latency[KVS_METRICS_GET].count[0] + m.latency[KVS_METRICS_GET].count[1] +
                        m.latency[KVS_METRICS_GET].count[2] + m.latency[KVS_METRICS_GET].count[3] +
                        m.latency[KVS_METRICS_GET].count[4] + m.latency[KVS_METRICS_GET].count[5] +
                        m.latency[KVS_METRICS_GET].count[6] + m.latency[KVS_METRICS_GET].count[7] +
                        m.latency[KVS_METRICS_GET].count[8] + m.latency[KVS_METRICS_GET].count[9] +
                        m.latency[KVS_METRICS_GET].count[10],
                    1); /* one get, well under 0.1 s */

  kvs__text t = {0};
  ck_assert_int_eq(kvs__ops_metrics_text(&env, &t), 0);
  ck_assert_ptr_nonnull(t.p);
  ck_assert_uint_eq(strlen(t.p), t.len);
  ck_assert_ptr_nonnull(strstr(t.p, "kvsink_requests_total{op=\"hello\"} 1\n"));
  ck_assert_ptr_nonnull(strstr(t.p, "kvsink_request_errors_total{op=\"get\"} 1\n"));
  ck_assert_ptr_nonnull(strstr(t.p, "kvsink_request_duration_seconds_count{op=\"get\"} 1\n"));
  ck_assert_ptr_nonnull(strstr(t.p, "kvsink_request_duration_seconds_bucket{op=\"get\",le=\"+Inf\"} 1\n"));
  /* the space of the session, its model id escaped and made ASCII */
  ck_assert_ptr_nonnull(
      strstr(t.p, "kvsink_spaces{namespace=\"uid:1234\",model=\"m\\\"o\\\\d?\"} 1\n"));
  ck_assert_ptr_nonnull(strstr(t.p, "kvsink_pool_bytes{device=\"host\"} "));
  for (size_t i = 0; i < t.len; i++) ck_assert((unsigned char)t.p[i] < 0x80);
  kvs__text_free(&t);

  /* the metrics op: the same text, admin only */
  rq.op = KVS_OP_METRICS;
  rq.id = 3;
  kvs__ops_run(&env, &st, &rq, &rep);
  ck_assert_int_eq(rep.err, -EACCES);
  ck_assert_ptr_null(rep.text);
  kvs__ops_rep_free(&rep);
  kvs__sess_state adm;
  kvs__sess_init(&adm, &cfg, 2, 0, 1, 1);
  rq.id = 4;
  ck_assert_int_eq(kvs__ops_run(&env, &adm, &rq, &rep), KVS_OPS_REPLY);
  ck_assert_int_eq(rep.err, 0);
  ck_assert_ptr_nonnull(rep.text);
  ck_assert_uint_eq(strlen(rep.text), rep.text_len);
  ck_assert_ptr_nonnull(strstr(rep.text, "kvsink_request_errors_total{op=\"metrics\"} 1\n"));
  ck_assert_ptr_nonnull(strstr(rep.text, "kvsink_spaces{namespace=\"uid:1234\""));
  /* through the wire format and back */
  char *buf;
  size_t len;
  ck_assert_int_eq(kvs__encode_rep(&rep, &buf, &len), 0);
  kvs__rep back;
  char msg[KVS_MAX_ERRMSG];
  ck_assert_int_eq(kvs__decode_rep(buf + 4, len - 4, &back, msg), 0);
  ck_assert_uint_eq(back.text_len, rep.text_len);
  ck_assert_str_eq(back.text, rep.text);
  kvs__rep_free(&back);
  free(buf);
  kvs__ops_rep_free(&rep);
  kvs__sess_free(&adm);
  kvs__sess_free(&st);
  kvs__store_close(store);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("metrics");
  TCase *tc = tcase_create("metrics");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, buckets);
  tcase_add_test(tc, render_real_store);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int nf = srunner_ntests_failed(sr);
  srunner_free(sr);
  return nf ? 1 : 0;
}
