/* SPDX-License-Identifier: MIT */
/* Device lists in kvsinkd.conf, the host/device segment choice, and the
 * hello/put/get fields of device segments on the wire. No GPU needed. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kvsink.h>
#include "daemon/config.h"
#include "daemon/devlist.h"
#include "proto/proto.h"

static char err[256];

START_TEST(parse_modes)
{
  kvs__devlist d;
  ck_assert_int_eq(kvs__devlist_parse("auto", &d, err), 0);
  ck_assert_int_eq(d.mode, KVS_DEVMODE_AUTO);
  ck_assert_int_eq(kvs__devlist_parse("host", &d, err), 0);
  ck_assert_int_eq(d.mode, KVS_DEVMODE_HOST);
  ck_assert_int_eq(kvs__devlist_parse("all", &d, err), 0);
  ck_assert_int_eq(d.mode, KVS_DEVMODE_ALL);
  ck_assert_int_eq(kvs__devlist_parse("cuda:3", &d, err), 0);
  ck_assert_int_eq(d.mode, KVS_DEVMODE_LIST);
  ck_assert_uint_eq(d.n, 1);
  ck_assert_int_eq(d.dev[0], 3);
  ck_assert_int_eq(kvs__devlist_parse("cuda:0, cuda:1 ,cuda:7", &d, err), 0);
  ck_assert_uint_eq(d.n, 3);
  ck_assert_int_eq(d.dev[0], 0);
  ck_assert_int_eq(d.dev[1], 1);
  ck_assert_int_eq(d.dev[2], 7);
  char buf[64];
  kvs__devlist_format(&d, buf, sizeof buf);
  ck_assert_str_eq(buf, "cuda:0,cuda:1,cuda:7");
}
END_TEST

START_TEST(parse_errors)
{
  static const char *bad[] = { "", "cuda", "cuda:", "cuda:x", "cuda:1,", ",cuda:1",
                               "cuda:1,,cuda:2", "cuda:1 cuda:2", "cuda:1024", "gpu:0",
                               "cuda:-1", "all,cuda:0", "cuda:0,all" };
  kvs__devlist d = {.mode = KVS_DEVMODE_HOST};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    ck_assert_msg(kvs__devlist_parse(bad[i], &d, err) == -EINVAL, "'%s' accepted", bad[i]);
    ck_assert_int_eq(d.mode, KVS_DEVMODE_HOST); /* untouched on error */
  }
  ck_assert_int_eq(kvs__devlist_parse("cuda:1,cuda:1", &d, err), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "twice"));
  char many[512] = "";
  for (int i = 0; i <= (int)KVS_MAX_DEVICES; i++)
    snprintf(many + strlen(many), sizeof many - strlen(many), "%scuda:%d", i ? "," : "", i);
  ck_assert_int_eq(kvs__devlist_parse(many, &d, err), -EINVAL);
}
END_TEST

START_TEST(config_device_key)
{
  kvs__config c;
  kvs__config_defaults(&c);
  ck_assert_int_eq(c.devices.mode, KVS_DEVMODE_AUTO);
  ck_assert_int_eq(kvs__config_parse(&c, "device = cuda:2,cuda:0\n", "t", err), 0);
  ck_assert_int_eq(c.devices.mode, KVS_DEVMODE_LIST);
  ck_assert_uint_eq(c.devices.n, 2);
  ck_assert_int_eq(c.device, 2); /* the first listed */
  ck_assert_int_eq(kvs__config_parse(&c, "device = all\n", "t", err), 0);
  ck_assert_int_eq(c.devices.mode, KVS_DEVMODE_ALL);
  ck_assert_int_eq(c.device, KVS_DEVICE_AUTO);
  ck_assert_int_eq(kvs__config_parse(&c, "device = host\n", "t", err), 0);
  ck_assert_int_eq(c.device, KVS_DEVICE_HOST);
  ck_assert_int_eq(kvs__config_set(&c, "device", "cuda:5", err), 0);
  ck_assert_int_eq(c.device, 5);
  ck_assert_int_eq(kvs__config_parse(&c, "device = cuda:0,\n", "t", err), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "t:1"));
}
END_TEST

START_TEST(choice)
{
  uint8_t served[2][16], other[16];
  memset(served[0], 0xa0, 16);
  memset(served[1], 0xb1, 16);
  memset(other, 0xc2, 16);
  ck_assert_int_eq(kvs__devseg_choose(served[1], (const uint8_t (*)[16])served, 2), 1);
  ck_assert_int_eq(kvs__devseg_choose(served[0], (const uint8_t (*)[16])served, 2), 0);
  /* another GPU, no GPU named, a daemon serving none: host segment */
  ck_assert_int_eq(kvs__devseg_choose(other, (const uint8_t (*)[16])served, 2), -1);
  ck_assert_int_eq(kvs__devseg_choose(NULL, (const uint8_t (*)[16])served, 2), -1);
  ck_assert_int_eq(kvs__devseg_choose(served[0], (const uint8_t (*)[16])served, 0), -1);
  ck_assert_int_eq(kvs__devseg_choose(served[0], NULL, 0), -1);
  /* one differing byte is another GPU */
  uint8_t near[16];
  memcpy(near, served[0], 16);
  near[15] ^= 1;
  ck_assert_int_eq(kvs__devseg_choose(near, (const uint8_t (*)[16])served, 2), -1);
}
END_TEST

static void rt_req(const kvs__req *in, kvs__req *out)
{
  char *buf;
  size_t len;
  char msg[KVS_MAX_ERRMSG];
  ck_assert_int_eq(kvs__encode_req(in, &buf, &len), 0);
  ck_assert_int_eq(kvs__decode_req(buf + 4, len - 4, out, msg), 0);
  free(buf);
}

static void rt_rep(const kvs__rep *in, kvs__rep *out)
{
  char *buf;
  size_t len;
  char msg[KVS_MAX_ERRMSG];
  ck_assert_int_eq(kvs__encode_rep(in, &buf, &len), 0);
  ck_assert_int_eq(kvs__decode_rep(buf + 4, len - 4, out, msg), 0);
  free(buf);
}

START_TEST(wire_hello)
{
  kvs__req q, d;
  memset(&q, 0, sizeof q);
  q.op = KVS_OP_HELLO;
  q.hello.version = KVS_PROTO_VERSION;
  strcpy(q.hello.model_id, "m");
  q.hello.n_layers = q.hello.n_kv_heads = q.hello.head_dim = 4;
  q.hello.dtype = KVS_DTYPE_F16;
  q.hello.seg_size = 1 << 20;
  q.hello.pfn = -1;
  q.hello.outliers = -1.f;
  rt_req(&q, &d);
  ck_assert_int_eq(d.hello.has_gpu, 0);
  kvs__req_free(&d);
  q.hello.has_gpu = 1;
  for (int i = 0; i < 16; i++) q.hello.gpu_uuid[i] = (uint8_t)(i * 17);
  q.hello.dev_seg_size = 3ull << 30;
  rt_req(&q, &d);
  ck_assert_int_eq(d.hello.has_gpu, 1);
  ck_assert_mem_eq(d.hello.gpu_uuid, q.hello.gpu_uuid, 16);
  ck_assert_uint_eq(d.hello.dev_seg_size, 3ull << 30);
  kvs__req_free(&d);

  kvs__rep r, e;
  memset(&r, 0, sizeof r);
  r.op = KVS_OP_HELLO;
  r.group = 32;
  rt_rep(&r, &e);
  ck_assert_int_eq(e.seg_device, 0);
  kvs__rep_free(&e);
  r.seg_device = 1;
  r.dev_seg_size = 64ull << 20;
  rt_rep(&r, &e);
  ck_assert_int_eq(e.seg_device, 1);
  ck_assert_uint_eq(e.dev_seg_size, 64ull << 20);
  kvs__rep_free(&e);
}
END_TEST

START_TEST(wire_put_get_dev)
{
  uint32_t tok[2] = {5, 6};
  kvs__req q, d;
  memset(&q, 0, sizeof q);
  q.op = KVS_OP_PUT;
  q.tokens = tok;
  q.n_tokens = 2;
  q.layer_end = 1;
  rt_req(&q, &d);
  ck_assert_int_eq(d.dev, 0);
  kvs__req_free(&d);
  q.dev = 1;
  rt_req(&q, &d);
  ck_assert_int_eq(d.dev, 1);
  kvs__req_free(&d);
  memset(&q, 0, sizeof q);
  q.op = KVS_OP_GET;
  q.n_tokens = 2;
  q.layer_end = 1;
  q.dev = 1;
  rt_req(&q, &d);
  ck_assert_int_eq(d.dev, 1);
  kvs__req_free(&d);
}
END_TEST

/* A gpu field that is not a 16-byte bin is refused. */
START_TEST(wire_bad_uuid)
{
  kvs__req q, d;
  memset(&q, 0, sizeof q);
  q.op = KVS_OP_HELLO;
  q.hello.version = KVS_PROTO_VERSION;
  strcpy(q.hello.model_id, "m");
  q.hello.n_layers = q.hello.n_kv_heads = q.hello.head_dim = 4;
  q.hello.dtype = KVS_DTYPE_F16;
  q.hello.has_gpu = 1;
  char *buf;
  size_t len;
  char msg[KVS_MAX_ERRMSG];
  ck_assert_int_eq(kvs__encode_req(&q, &buf, &len), 0);
  /* the bin header 0xc4 0x10: shorten it to 15 bytes and drop one */
  char *p = memmem(buf, len, "\xc4\x10", 2);
  ck_assert_ptr_nonnull(p);
  p[1] = 0x0f;
  memmove(p + 2 + 15, p + 2 + 16, (size_t)(buf + len - (p + 2 + 16)));
  ck_assert_int_eq(kvs__decode_req(buf + 4, len - 5, &d, msg), -EBADMSG);
  ck_assert_ptr_nonnull(strstr(msg, "gpu"));
  free(buf);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("devices");
  TCase *t = tcase_create("core");
  tcase_add_test(t, parse_modes);
  tcase_add_test(t, parse_errors);
  tcase_add_test(t, config_device_key);
  tcase_add_test(t, choice);
  tcase_add_test(t, wire_hello);
  tcase_add_test(t, wire_put_get_dev);
  tcase_add_test(t, wire_bad_uuid);
  suite_add_tcase(s, t);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
