/* SPDX-License-Identifier: MIT */
/* kvsinkd's side of the fast area (daemon/fast.c): a request is taken
 * once per new seq, copied out before the client can change it, refused
 * when its length is 0 or over the limit; a reply that does not fit
 * sends the client to the socket; the polling word. And the hello codec
 * carries the request and the offset. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/fast.h"
#include "proto/proto.h"

static uint8_t *area_new(void)
{
  uint8_t *a = aligned_alloc(64, KVS_FAST_BYTES);
  ck_assert_ptr_nonnull(a);
  memset(a, 0, KVS_FAST_BYTES);
  return a;
}

static void publish(uint8_t *a, const char *body, uint32_t len, uint32_t seq)
{
  if (body) memcpy(a + KVS_FAST_REQ, body, len);
  kvs__fast_store(a, KVS_FAST_REQ_LEN, len);
  kvs__fast_store(a, KVS_FAST_REQ_SEQ, seq);
}

START_TEST(take_once_and_copied)
{
  uint8_t *a = area_new(), buf[KVS_FAST_REQ_MAX];
  publish(a, "old", 3, 7); /* before the session's area is set up: not a request */
  kvs__fast f;
  kvs__fast_init(&f, a);
  uint32_t len = 0;
  ck_assert_int_eq(kvs__fast_take(&f, buf, &len), 0);
  publish(a, "hello", 5, 8);
  ck_assert_int_eq(kvs__fast_take(&f, buf, &len), 1);
  ck_assert_uint_eq(len, 5);
  memset(a + KVS_FAST_REQ, 'x', 5); /* the client scribbles after the take */
  ck_assert(memcmp(buf, "hello", 5) == 0);
  ck_assert_int_eq(kvs__fast_take(&f, buf, &len), 0); /* same seq: nothing new */
  ck_assert_uint_eq(f.n, 1);
  /* the reply: bytes, length, then the seq of the request */
  ck_assert_int_eq(kvs__fast_reply(&f, "ok!", 3), 0);
  ck_assert_uint_eq(kvs__fast_load(a, KVS_FAST_REP_LEN), 3);
  ck_assert_uint_eq(kvs__fast_load(a, KVS_FAST_REP_SEQ), 8);
  ck_assert(memcmp(a + KVS_FAST_REP, "ok!", 3) == 0);
  free(a);
}
END_TEST

START_TEST(bad_lengths_and_big_replies)
{
  uint8_t *a = area_new(), buf[KVS_FAST_REQ_MAX];
  kvs__fast f;
  kvs__fast_init(&f, a);
  uint32_t len = 0;
  publish(a, NULL, 0, 1);
  ck_assert_int_eq(kvs__fast_take(&f, buf, &len), -EMSGSIZE);
  publish(a, NULL, KVS_FAST_REQ_MAX + 1, 2);
  ck_assert_int_eq(kvs__fast_take(&f, buf, &len), -EMSGSIZE);
  publish(a, NULL, UINT32_MAX, 3);
  ck_assert_int_eq(kvs__fast_take(&f, buf, &len), -EMSGSIZE);
  publish(a, NULL, KVS_FAST_REQ_MAX, 4); /* the largest is taken */
  ck_assert_int_eq(kvs__fast_take(&f, buf, &len), 1);
  ck_assert_uint_eq(len, KVS_FAST_REQ_MAX);
  /* a reply over the limit: the area sends the client to the socket */
  char *big = calloc(1, KVS_FAST_REP_MAX + 1);
  ck_assert_int_eq(kvs__fast_reply(&f, big, KVS_FAST_REP_MAX + 1), -EMSGSIZE);
  ck_assert_uint_eq(kvs__fast_load(a, KVS_FAST_REP_LEN), KVS_FAST_ON_SOCKET);
  ck_assert_uint_eq(kvs__fast_load(a, KVS_FAST_REP_SEQ), 4);
  ck_assert_int_eq(kvs__fast_reply(&f, big, KVS_FAST_REP_MAX), 0);
  ck_assert_uint_eq(kvs__fast_load(a, KVS_FAST_REP_LEN), KVS_FAST_REP_MAX);
  free(big);
  /* polling */
  kvs__fast_polling(&f, 1);
  ck_assert_uint_eq(kvs__fast_load(a, KVS_FAST_POLLING), 1);
  kvs__fast_polling(&f, 0);
  ck_assert_uint_eq(kvs__fast_load(a, KVS_FAST_POLLING), 0);
  /* no area: nothing taken, nothing written */
  kvs__fast none;
  kvs__fast_init(&none, NULL);
  ck_assert_int_eq(kvs__fast_take(&none, buf, &len), 0);
  ck_assert_int_eq(kvs__fast_reply(&none, "x", 1), -EMSGSIZE);
  kvs__fast_polling(&none, 1);
  free(a);
}
END_TEST

START_TEST(hello_carries_fast)
{
  kvs__req rq, back;
  memset(&rq, 0, sizeof rq);
  rq.op = KVS_OP_HELLO;
  rq.id = 1;
  rq.hello.version = KVS_PROTO_VERSION;
  strcpy(rq.hello.model_id, "m");
  rq.hello.n_layers = rq.hello.n_kv_heads = 1;
  rq.hello.head_dim = 64;
  rq.hello.dtype = KVS_DTYPE_F16;
  rq.hello.fast = 1;
  char *out, msg[KVS_MAX_ERRMSG];
  size_t olen;
  ck_assert_int_eq(kvs__encode_req(&rq, &out, &olen), 0);
  ck_assert_int_eq(kvs__decode_req(out + 4, olen - 4, &back, msg), 0);
  ck_assert_int_eq(back.hello.fast, 1);
  kvs__req_free(&back);
  free(out);
  kvs__rep rep, rback;
  memset(&rep, 0, sizeof rep);
  rep.op = KVS_OP_HELLO;
  rep.id = 1;
  rep.group = 32;
  rep.seg_size = 1u << 20;
  rep.fast_off = (1u << 20) - KVS_FAST_BYTES;
  ck_assert_int_eq(kvs__encode_rep(&rep, &out, &olen), 0);
  ck_assert_int_eq(kvs__decode_rep(out + 4, olen - 4, &rback, msg), 0);
  ck_assert_uint_eq(rback.fast_off, (1u << 20) - KVS_FAST_BYTES);
  kvs__rep_free(&rback);
  free(out);
  /* the bell: op and id only */
  memset(&rq, 0, sizeof rq);
  rq.op = KVS_OP_BELL;
  ck_assert_int_eq(kvs__encode_req(&rq, &out, &olen), 0);
  ck_assert_int_eq(kvs__decode_req(out + 4, olen - 4, &back, msg), 0);
  ck_assert_int_eq(back.op, KVS_OP_BELL);
  kvs__req_free(&back);
  free(out);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("fast");
  TCase *tc = tcase_create("fast");
  tcase_add_test(tc, take_once_and_copied);
  tcase_add_test(tc, bad_lengths_and_big_replies);
  tcase_add_test(tc, hello_carries_fast);
  suite_add_tcase(s, tc);
  SRunner *r = srunner_create(s);
  srunner_run_all(r, CK_NORMAL);
  int failed = srunner_ntests_failed(r);
  srunner_free(r);
  return failed ? 1 : 0;
}
