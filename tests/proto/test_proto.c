/* SPDX-License-Identifier: MIT */
/* proto/: framing, op names, request/reply round trips, every decoder
 * error path (hand-built msgpack), kvs_strerror. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "proto/blocktable.h"
#include "proto/proto.h"

/* ---- helpers ---- */

static msgpack_sbuffer sb;
static msgpack_packer pk;

static void mp_begin(uint32_t n)
{
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, n);
}

static void ks(const char *s)
{
  msgpack_pack_str_with_body(&pk, s, strlen(s));
}

static void kv_s(const char *k, const char *v) { ks(k); ks(v); }
static void kv_u(const char *k, uint64_t v) { ks(k); msgpack_pack_uint64(&pk, v); }
static void kv_i(const char *k, int64_t v) { ks(k); msgpack_pack_int64(&pk, v); }

static void kv_layers(int64_t b, int64_t e)
{
  ks("layers");
  msgpack_pack_array(&pk, 2);
  msgpack_pack_int64(&pk, b);
  msgpack_pack_int64(&pk, e);
}

static void kv_tokens(uint32_t n)
{
  ks("tokens");
  msgpack_pack_array(&pk, n);
  for (uint32_t i = 0; i < n; i++)
    msgpack_pack_uint32(&pk, i);
}

/* Decode the built request; returns the code, leaves message and id. */
static char msg[KVS_MAX_ERRMSG];
static kvs__req rq;

static int req_end(void)
{
  int r = kvs__decode_req(sb.data, sb.size, &rq, msg);
  if (r < 0)
    ck_assert_msg(msg[0] != '\0', "error %d without a message", r);
  msgpack_sbuffer_destroy(&sb);
  return r;
}

static void model(const char *id, uint64_t layers, uint64_t heads, uint64_t dim,
                  const char *dtype)
{
  ks("model");
  msgpack_pack_map(&pk, 5);
  kv_s("id", id);
  kv_u("layers", layers);
  kv_u("kv_heads", heads);
  kv_u("head_dim", dim);
  kv_s("dtype", dtype);
}

/* hello with one model value changed */
static int hello_with(const char *id, uint64_t layers, uint64_t heads, uint64_t dim,
                      const char *dtype)
{
  mp_begin(5);
  kv_s("op", "hello");
  kv_u("id", 5);
  kv_u("version", KVS_PROTO_VERSION);
  model(id, layers, heads, dim, dtype);
  kv_u("seg_size", 0);
  return req_end();
}

static void roundtrip_req(const kvs__req *in, kvs__req *out)
{
  char *buf;
  size_t len;
  ck_assert_int_eq(kvs__encode_req(in, &buf, &len), 0);
  ck_assert_uint_ge(len, 4);
  ck_assert_uint_eq(kvs__frame_get_len((uint8_t *)buf), len - 4);
  int r = kvs__decode_req(buf + 4, len - 4, out, msg);
  ck_assert_msg(r == 0, "decode %s: %d %s", kvs__op_name(in->op), r, msg);
  ck_assert_int_eq(out->op, in->op);
  ck_assert_uint_eq(out->id, in->id);
  free(buf);
}

static void roundtrip_rep(const kvs__rep *in, kvs__rep *out)
{
  char *buf;
  size_t len;
  ck_assert_int_eq(kvs__encode_rep(in, &buf, &len), 0);
  ck_assert_uint_eq(kvs__frame_get_len((uint8_t *)buf), len - 4);
  int r = kvs__decode_rep(buf + 4, len - 4, out, msg);
  ck_assert_msg(r == 0, "decode reply: %d %s", r, msg);
  ck_assert_uint_eq(out->id, in->id);
  free(buf);
}

/* ---- framing and names ---- */

START_TEST(frame_header)
{
  uint8_t h[4];
  kvs__frame_put_len(h, 0x01020304u);
  ck_assert_int_eq(h[0], 1);
  ck_assert_int_eq(h[1], 2);
  ck_assert_int_eq(h[2], 3);
  ck_assert_int_eq(h[3], 4);
  ck_assert_uint_eq(kvs__frame_get_len(h), 0x01020304u);
  kvs__frame_put_len(h, 0xffffffffu);
  ck_assert_uint_eq(kvs__frame_get_len(h), 0xffffffffu);
  kvs__frame_put_len(h, 0);
  ck_assert_uint_eq(kvs__frame_get_len(h), 0);

  /* the encoder's header is the big-endian payload length */
  kvs__req q = { .op = KVS_OP_PING, .id = 1 };
  char *buf;
  size_t len;
  ck_assert_int_eq(kvs__encode_req(&q, &buf, &len), 0);
  ck_assert_int_eq(buf[0], 0);
  ck_assert_int_eq(buf[1], 0);
  ck_assert_uint_eq(((uint8_t)buf[2] << 8 | (uint8_t)buf[3]), len - 4);
  free(buf);

  /* the exact bytes of the example in kvsink-protocol(7) */
  static const char ping[] = "\x00\x00\x00\x0d\x82\xa2op\xa4ping\xa2id\x01";
  static const char pong[] = "\x00\x00\x00\x05\x81\xa2id\x01";
  q.id = 1;
  ck_assert_int_eq(kvs__encode_req(&q, &buf, &len), 0);
  ck_assert_uint_eq(len, sizeof(ping) - 1);
  ck_assert_mem_eq(buf, ping, len);
  free(buf);
  kvs__rep p = { .op = KVS_OP_PING, .id = 1 };
  ck_assert_int_eq(kvs__encode_rep(&p, &buf, &len), 0);
  ck_assert_uint_eq(len, sizeof(pong) - 1);
  ck_assert_mem_eq(buf, pong, len);
  free(buf);
}
END_TEST

START_TEST(op_names)
{
  static const char *names[] = { "hello", "put", "lookup", "get", "release", "stats",
                                 "bye", "list", "evict", "reload", "profiles", "ping",
                                 "metrics", "table", "bell" };
  for (int op = KVS_OP_HELLO; op < KVS_OP__COUNT; op++) {
    ck_assert_str_eq(kvs__op_name((kvs__op)op), names[op - 1]);
    ck_assert_int_eq(kvs__op_from_name(names[op - 1], strlen(names[op - 1])), op);
  }
  ck_assert_int_eq(kvs__op_from_name("pin", 3), KVS_OP_INVALID);
  ck_assert_int_eq(kvs__op_from_name("ping", 3), KVS_OP_INVALID);
  ck_assert_int_eq(kvs__op_from_name("pings", 5), KVS_OP_INVALID);
  ck_assert_int_eq(kvs__op_from_name(NULL, 0), KVS_OP_INVALID);
  ck_assert_str_eq(kvs__op_name(KVS_OP_INVALID), "invalid");
  ck_assert_str_eq(kvs__op_name(KVS_OP__COUNT), "invalid");
}
END_TEST

/* ---- request round trips ---- */

START_TEST(rt_hello)
{
  kvs__req q, d;
  memset(&q, 0, sizeof(q));
  q.op = KVS_OP_HELLO;
  q.id = UINT64_MAX;
  q.hello.version = KVS_PROTO_VERSION;
  strcpy(q.hello.model_id, "llama-17m");
  q.hello.n_layers = 8;
  q.hello.n_kv_heads = 6;
  q.hello.head_dim = 64;
  q.hello.dtype = KVS_DTYPE_BF16;
  q.hello.seg_size = 5ull << 32;
  q.hello.k_bits = 2;
  q.hello.v_bits = 16;
  q.hello.policy = KVS_POLICY_KVSINK;
  q.hello.pfn = 4;
  q.hello.outliers = 0.005f;
  q.hello.client_pid = 12345;
  roundtrip_req(&q, &d);
  ck_assert_mem_eq(&d.hello, &q.hello, sizeof(q.hello));
  kvs__req_free(&d);

  /* defaults travel as "use the daemon's" */
  q.hello.k_bits = 0;
  q.hello.v_bits = -3;
  q.hello.policy = KVS_POLICY_DEFAULT;
  q.hello.pfn = -1;
  q.hello.outliers = -1.0f;
  q.hello.dtype = KVS_DTYPE_F16;
  roundtrip_req(&q, &d);
  ck_assert_int_eq(d.hello.k_bits, 0);
  ck_assert_int_eq(d.hello.v_bits, 0);
  ck_assert_int_eq(d.hello.policy, KVS_POLICY_DEFAULT);
  ck_assert_int_eq(d.hello.pfn, -1);
  ck_assert(d.hello.outliers < 0);
  ck_assert_int_eq(d.hello.dtype, KVS_DTYPE_F16);
  kvs__req_free(&d);
}
END_TEST

/* salt: bin (or str) of at most KVS_MAX_SALT bytes, absent = none */
static int hello_salt(int as_bin, const char *salt, size_t n)
{
  mp_begin(6);
  kv_s("op", "hello");
  kv_u("id", 5);
  kv_u("version", KVS_PROTO_VERSION);
  model("m", 2, 2, 8, "fp16");
  kv_u("seg_size", 0);
  ks("salt");
  if (as_bin) {
    msgpack_pack_bin(&pk, n);
    msgpack_pack_bin_body(&pk, salt, n);
  } else {
    msgpack_pack_str(&pk, n);
    msgpack_pack_str_body(&pk, salt, n);
  }
  return req_end();
}

START_TEST(hello_salt_limits)
{
  kvs__req q, d;
  memset(&q, 0, sizeof(q));
  q.op = KVS_OP_HELLO;
  q.id = 9;
  q.hello.version = KVS_PROTO_VERSION;
  strcpy(q.hello.model_id, "m");
  q.hello.n_layers = q.hello.n_kv_heads = q.hello.head_dim = 2;
  q.hello.dtype = KVS_DTYPE_F16;
  for (uint32_t i = 0; i < KVS_MAX_SALT; i++) q.hello.salt[i] = (uint8_t)(i * 37 + 1);
  q.hello.salt[3] = 0; /* bytes, not a string: NUL is fine */
  q.hello.salt_len = KVS_MAX_SALT;
  roundtrip_req(&q, &d);
  ck_assert_uint_eq(d.hello.salt_len, KVS_MAX_SALT);
  ck_assert_mem_eq(d.hello.salt, q.hello.salt, KVS_MAX_SALT);
  kvs__req_free(&d);
  q.hello.salt_len = 0; /* none: no key on the wire, none decoded */
  roundtrip_req(&q, &d);
  ck_assert_uint_eq(d.hello.salt_len, 0);
  kvs__req_free(&d);
  q.hello.salt_len = KVS_MAX_SALT + 1;
  char *buf;
  size_t len;
  ck_assert_int_eq(kvs__encode_req(&q, &buf, &len), -E2BIG);

  char big[KVS_MAX_SALT + 1];
  memset(big, 'x', sizeof big);
  ck_assert_int_eq(hello_salt(1, big, KVS_MAX_SALT), 0);
  ck_assert_int_eq(hello_salt(0, "tenant-a", 8), 0);
  ck_assert_uint_eq(rq.hello.salt_len, 8);
  ck_assert_mem_eq(rq.hello.salt, "tenant-a", 8);
  ck_assert_int_eq(hello_salt(1, big, KVS_MAX_SALT + 1), -E2BIG);
  ck_assert_int_eq(hello_salt(0, big, KVS_MAX_SALT + 1), -E2BIG);
  /* not bytes */
  mp_begin(6);
  kv_s("op", "hello");
  kv_u("id", 5);
  kv_u("version", KVS_PROTO_VERSION);
  model("m", 2, 2, 8, "fp16");
  kv_u("seg_size", 0);
  kv_u("salt", 7);
  ck_assert_int_eq(req_end(), -EBADMSG);
}
END_TEST

START_TEST(rt_put)
{
  uint32_t toks[KVS_MAX_TOKENS_PER_PUT];
  for (uint32_t i = 0; i < KVS_MAX_TOKENS_PER_PUT; i++)
    toks[i] = i * 2654435761u;
  kvs__req q = { .op = KVS_OP_PUT, .id = 9, .seq = 1ull << 40, .start = 64,
                 .n_tokens = KVS_MAX_TOKENS_PER_PUT, .tokens = toks,
                 .layer_begin = 2, .layer_end = 5, .k_off = 0, .v_off = 1ull << 33,
                 .has_act = 1, .act_off = 77, .act_channels = KVS_MAX_ACT_CHANNELS };
  kvs__req d;
  roundtrip_req(&q, &d);
  ck_assert_uint_eq(d.seq, q.seq);
  ck_assert_uint_eq(d.start, 64);
  ck_assert_uint_eq(d.n_tokens, KVS_MAX_TOKENS_PER_PUT);
  ck_assert_mem_eq(d.tokens, toks, sizeof(toks));
  /* on the wire: one bin of 4n bytes, little-endian (version 2) */
  {
    char *out;
    size_t len;
    ck_assert_int_eq(kvs__encode_req(&q, &out, &len), 0);
    const uint8_t want[] = { 0xa6, 't', 'o', 'k', 'e', 'n', 's', 0xc5, 0x80, 0x00,
                             0, 0, 0, 0, 0xb1, 0x79, 0x37, 0x9e };
    ck_assert_ptr_nonnull(memmem(out, len, want, sizeof want));
    free(out);
  }
  ck_assert_uint_eq(d.layer_begin, 2);
  ck_assert_uint_eq(d.layer_end, 5);
  ck_assert_uint_eq(d.k_off, 0);
  ck_assert_uint_eq(d.v_off, 1ull << 33);
  ck_assert_int_eq(d.has_act, 1);
  ck_assert_uint_eq(d.act_off, 77);
  ck_assert_uint_eq(d.act_channels, KVS_MAX_ACT_CHANNELS);
  kvs__req_free(&d);
  ck_assert_ptr_null(d.tokens);

  /* summary-only put (lb == le), no summary */
  q.layer_begin = q.layer_end = 3;
  q.has_act = 0;
  q.n_tokens = 1;
  roundtrip_req(&q, &d);
  ck_assert_uint_eq(d.layer_begin, 3);
  ck_assert_uint_eq(d.layer_end, 3);
  ck_assert_int_eq(d.has_act, 0);
  ck_assert_uint_eq(d.act_channels, 0);
  ck_assert_uint_eq(d.tokens[0], toks[0]);
  kvs__req_free(&d);
}
END_TEST

START_TEST(rt_lookup_get_release)
{
  uint32_t toks[3] = { 1, 2, 0xffffffffu };
  kvs__req q = { .op = KVS_OP_LOOKUP, .id = 3, .seq = 11, .tokens = toks,
                 .n_tokens = 3, .bind = 1 };
  kvs__req d;
  roundtrip_req(&q, &d);
  ck_assert_uint_eq(d.seq, 11);
  ck_assert_int_eq(d.bind, 1);
  ck_assert_uint_eq(d.n_tokens, 3);
  ck_assert_uint_eq(d.tokens[2], 0xffffffffu);
  kvs__req_free(&d);

  kvs__req g = { .op = KVS_OP_GET, .id = 4, .seq = 11, .start = 10, .n_tokens = 20,
                 .layer_begin = 0, .layer_end = KVS_MAX_LAYERS, .k_off = 8, .v_off = 16 };
  roundtrip_req(&g, &d);
  ck_assert_uint_eq(d.seq, 11);
  ck_assert_uint_eq(d.start, 10);
  ck_assert_uint_eq(d.n_tokens, 20);
  ck_assert_uint_eq(d.layer_end, KVS_MAX_LAYERS);
  ck_assert_uint_eq(d.k_off, 8);
  ck_assert_uint_eq(d.v_off, 16);
  ck_assert_ptr_null(d.tokens);
  kvs__req_free(&d);

  kvs__req r = { .op = KVS_OP_RELEASE, .id = 5, .seq = UINT64_MAX };
  roundtrip_req(&r, &d);
  ck_assert_uint_eq(d.seq, UINT64_MAX);
  kvs__req_free(&d);
}
END_TEST

START_TEST(rt_bare_ops)
{
  static const kvs__op ops[] = { KVS_OP_STATS, KVS_OP_BYE, KVS_OP_LIST, KVS_OP_EVICT,
                                 KVS_OP_RELOAD, KVS_OP_PROFILES, KVS_OP_PING };
  for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
    kvs__req q = { .op = ops[i], .id = 100 + i }, d;
    roundtrip_req(&q, &d);
    kvs__req_free(&d);
  }
  kvs__req bad = { .op = KVS_OP_INVALID };
  char *buf;
  size_t len;
  ck_assert_int_eq(kvs__encode_req(&bad, &buf, &len), -EINVAL);
  uint32_t t = 1;
  kvs__req big = { .op = KVS_OP_PUT, .tokens = &t, .n_tokens = KVS_MAX_TOKENS_PER_PUT + 1 };
  ck_assert_int_eq(kvs__encode_req(&big, &buf, &len), -E2BIG);
}
END_TEST

/* ---- reply round trips ---- */

START_TEST(rt_rep_hello)
{
  kvs__rep p, d;
  memset(&p, 0, sizeof(p));
  p.op = KVS_OP_HELLO;
  p.id = 1;
  p.session = 42;
  p.seg_size = 64u << 20;
  p.group = 32;
  p.k_bits = 2;
  p.v_bits = 3;
  p.policy = KVS_POLICY_PFN;
  p.pfn = 1;
  p.outliers = 0.01f;
  p.has_profile = 1;
  p.policy_fallback = 1;
  p.v_group = 32;
  p.sink_layer = 2;
  p.n_sink_channels = KVS_MAX_ACT_CHANNELS;
  for (uint32_t i = 0; i < KVS_MAX_ACT_CHANNELS; i++)
    p.sink_channels[i] = i * 7;
  roundtrip_rep(&p, &d);
  ck_assert_int_eq(d.err, 0);
  ck_assert_uint_eq(d.session, 42);
  ck_assert_uint_eq(d.seg_size, 64u << 20);
  ck_assert_uint_eq(d.group, 32);
  ck_assert_int_eq(d.k_bits, 2);
  ck_assert_int_eq(d.v_bits, 3);
  ck_assert_int_eq(d.policy, KVS_POLICY_PFN);
  ck_assert_int_eq(d.pfn, 1);
  ck_assert(d.outliers == 0.01f);
  ck_assert_int_eq(d.has_profile, 1);
  ck_assert_int_eq(d.policy_fallback, 1);
  ck_assert_uint_eq(d.v_group, 32);
  ck_assert_uint_eq(d.sink_layer, 2);
  ck_assert_uint_eq(d.n_sink_channels, KVS_MAX_ACT_CHANNELS);
  ck_assert_mem_eq(d.sink_channels, p.sink_channels, sizeof(p.sink_channels));
  kvs__rep_free(&d);

  p.n_sink_channels = KVS_MAX_ACT_CHANNELS + 1;
  char *buf;
  size_t len;
  ck_assert_int_eq(kvs__encode_rep(&p, &buf, &len), -E2BIG);
}
END_TEST

START_TEST(rt_rep_results)
{
  kvs__rep p = { .op = KVS_OP_PUT, .id = 2, .quantized = 64, .sinks = 3, .seq_len = 70 }, d;
  roundtrip_rep(&p, &d);
  ck_assert_uint_eq(d.quantized, 64);
  ck_assert_uint_eq(d.sinks, 3);
  ck_assert_uint_eq(d.seq_len, 70);
  kvs__rep_free(&d);

  kvs__rep l = { .op = KVS_OP_LOOKUP, .id = 3, .cached = 96, .seq_len = 96 };
  roundtrip_rep(&l, &d);
  ck_assert_uint_eq(d.cached, 96);
  ck_assert_uint_eq(d.seq_len, 96);
  kvs__rep_free(&d);

  kvs__rep e = { .op = KVS_OP_EVICT, .id = 4, .evicted = 1ull << 35 };
  roundtrip_rep(&e, &d);
  ck_assert_uint_eq(d.evicted, 1ull << 35);
  kvs__rep_free(&d);

  static const kvs__op bare[] = { KVS_OP_GET, KVS_OP_RELEASE, KVS_OP_BYE,
                                  KVS_OP_RELOAD, KVS_OP_PING };
  for (size_t i = 0; i < sizeof(bare) / sizeof(bare[0]); i++) {
    kvs__rep b = { .op = bare[i], .id = 50 + i };
    roundtrip_rep(&b, &d);
    ck_assert_int_eq(d.err, 0);
    kvs__rep_free(&d);
  }
}
END_TEST

/* table replies: host chunks (memfds) and GPU chunks (which GPU) */
START_TEST(rt_rep_table)
{
  kvs__rep h = { .op = KVS_OP_TABLE, .id = 7, .table_bytes = 4096, .table_fds = 3,
                 .table_more = 1 }, d;
  roundtrip_rep(&h, &d);
  ck_assert_uint_eq(d.table_bytes, 4096);
  ck_assert_uint_eq(d.table_fds, 3);
  ck_assert_int_eq(d.table_more, 1);
  ck_assert_int_eq(d.table_device, 0);
  kvs__rep_free(&d);
  kvs__rep g = { .op = KVS_OP_TABLE, .id = 8, .table_bytes = 512, .table_fds = 64,
                 .table_device = 1 };
  for (int i = 0; i < 16; i++)
    g.table_gpu[i] = (uint8_t)(0xa0 + i);
  roundtrip_rep(&g, &d);
  ck_assert_int_eq(d.table_device, 1);
  ck_assert_mem_eq(d.table_gpu, g.table_gpu, 16);
  ck_assert_uint_eq(d.table_fds, 64);
  ck_assert_int_eq(d.table_more, 0);
  kvs__rep_free(&d);
  /* errors: an unknown kind, a gpu that is not 16 bytes, device without gpu */
  kvs__rep rp;
  mp_begin(2);
  kv_u("id", 1);
  kv_s("chunks", "tape");
  ck_assert_int_eq(kvs__decode_rep(sb.data, sb.size, &rp, msg), -EINVAL);
  msgpack_sbuffer_destroy(&sb);
  mp_begin(3);
  kv_u("id", 1);
  kv_s("chunks", "device");
  ks("gpu");
  msgpack_pack_bin_with_body(&pk, "0123456789", 10);
  ck_assert_int_eq(kvs__decode_rep(sb.data, sb.size, &rp, msg), -EBADMSG);
  msgpack_sbuffer_destroy(&sb);
  mp_begin(2);
  kv_u("id", 1);
  kv_s("chunks", "device");
  ck_assert_int_eq(kvs__decode_rep(sb.data, sb.size, &rp, msg), -EPROTO);
  msgpack_sbuffer_destroy(&sb);
  /* too many fds for one reply */
  mp_begin(2);
  kv_u("id", 1);
  kv_u("fds", KVS_TABLE_MAX_FDS + 1);
  ck_assert_int_eq(kvs__decode_rep(sb.data, sb.size, &rp, msg), -E2BIG);
  msgpack_sbuffer_destroy(&sb);
}
END_TEST

START_TEST(rt_rep_stats)
{
  kvs__rep p, d;
  memset(&p, 0, sizeof(p));
  p.op = KVS_OP_STATS;
  p.id = 6;
  uint64_t *f = &p.stats.pool_bytes;
  /* the u64 counters are contiguous from pool_bytes to uptime_s */
  size_t n = (size_t)(&p.stats.uptime_s - f) + 1;
  for (size_t i = 0; i < n; i++)
    f[i] = (i + 1) * 1000003ull;
  p.stats.spaces = 3;
  strcpy(p.stats.backend, "cuda");
  roundtrip_rep(&p, &d);
  ck_assert_mem_eq(&d.stats, &p.stats, sizeof(p.stats));
  kvs__rep_free(&d);
}
END_TEST

START_TEST(rt_rep_items)
{
  kvs_space_info sp[2];
  memset(sp, 0, sizeof(sp));
  strcpy(sp[0].ns, "uid:1000");
  strcpy(sp[0].model_id, "llama \xc3\xa9"); /* UTF-8 goes through as is */
  sp[0].n_layers = 32;
  sp[0].n_kv_heads = 8;
  sp[0].head_dim = 128;
  sp[0].k_bits = 2;
  sp[0].v_bits = 3;
  sp[0].pfn = 1;
  sp[0].policy = KVS_POLICY_KVSINK;
  sp[0].has_profile = 1;
  sp[0].blocks = 1ull << 33;
  sp[0].pinned = 5;
  sp[0].seqs = 2;
  sp[0].fallback_sessions = 3;
  strcpy(sp[1].ns, "shared");
  strcpy(sp[1].model_id, "x");
  sp[1].policy = KVS_POLICY_NONE;
  kvs__rep p = { .op = KVS_OP_LIST, .id = 7, .spaces = sp, .n_spaces = 2 }, d;
  roundtrip_rep(&p, &d);
  ck_assert_uint_eq(d.n_spaces, 2);
  ck_assert_mem_eq(d.spaces, sp, sizeof(sp));
  kvs__rep_free(&d);
  ck_assert_ptr_null(d.spaces);

  p.n_spaces = 0;
  p.spaces = NULL;
  roundtrip_rep(&p, &d);
  ck_assert_uint_eq(d.n_spaces, 0);
  ck_assert_ptr_null(d.spaces);
  kvs__rep_free(&d);

  kvs_profile_info pr[1];
  memset(pr, 0, sizeof(pr));
  strcpy(pr[0].model_id, "m");
  pr[0].layer = 2;
  pr[0].n_channels = KVS_MAX_ACT_CHANNELS;
  for (uint32_t i = 0; i < KVS_MAX_ACT_CHANNELS; i++)
    pr[0].channels[i] = i * 3;
  pr[0].tau = 12.25f;
  pr[0].max_sinks = 4;
  pr[0].pfn = 1;
  kvs__rep q = { .op = KVS_OP_PROFILES, .id = 8, .profiles = pr, .n_profiles = 1 };
  roundtrip_rep(&q, &d);
  ck_assert_uint_eq(d.n_profiles, 1);
  ck_assert_mem_eq(d.profiles, pr, sizeof(pr));
  kvs__rep_free(&d);

  /* over the limits: refused by the encoder */
  char *buf;
  size_t len;
  p.n_spaces = KVS_MAX_LIST_ITEMS + 1;
  p.spaces = sp;
  ck_assert_int_eq(kvs__encode_rep(&p, &buf, &len), -EINVAL);
  p.n_spaces = 1;
  p.spaces = NULL;
  ck_assert_int_eq(kvs__encode_rep(&p, &buf, &len), -EINVAL);
  pr[0].n_channels = KVS_MAX_ACT_CHANNELS + 1;
  ck_assert_int_eq(kvs__encode_rep(&q, &buf, &len), -E2BIG);
}
END_TEST

/* Hand-made list replies the decoder must refuse. */
#define B(s) s, sizeof(s) - 1
START_TEST(dec_rep_items_errors)
{
  static const struct { const char *b; size_t n; int err; } bad[] = {
    /* {"id":1,"spaces":7} */
    { B("\x82\xa2id\x01\xa6spaces\x07"), -EBADMSG },
    /* {"id":1,"spaces":[7]} */
    { B("\x82\xa2id\x01\xa6spaces\x91\x07"), -EBADMSG },
    /* {"id":1,"spaces":[{}]}: ns missing */
    { B("\x82\xa2id\x01\xa6spaces\x91\x80"), -EPROTO },
    /* {"id":1,"spaces":[{"ns":"a\0","model":"m"}]}: NUL in a string */
    { B("\x82\xa2id\x01\xa6spaces\x91\x82\xa2ns\xa2" "a\0" "\xa5model\xa1m"), -EINVAL },
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    kvs__rep d;
    int r = kvs__decode_rep(bad[i].b, bad[i].n, &d, msg);
    ck_assert_msg(r == bad[i].err, "case %zu: got %d (%s), want %d", i, r, msg, bad[i].err);
    ck_assert_ptr_null(d.spaces);
  }
  /* a space count over the limit */
  size_t n = 32 + KVS_MAX_LIST_ITEMS + 1;
  char *b = malloc(n);
  size_t o = 0;
  static const char head[] = "\x82\xa2id\x01\xa6spaces\xdd"; /* array32 follows */
  memcpy(b, head, sizeof(head) - 1);
  o = sizeof(head) - 1;
  uint32_t cnt = KVS_MAX_LIST_ITEMS + 1;
  b[o++] = (char)(cnt >> 24);
  b[o++] = (char)(cnt >> 16);
  b[o++] = (char)(cnt >> 8);
  b[o++] = (char)cnt;
  memset(b + o, 0x80, cnt); /* empty maps */
  o += cnt;
  kvs__rep d;
  ck_assert_int_eq(kvs__decode_rep(b, o, &d, msg), -E2BIG);
  free(b);
}
END_TEST

START_TEST(rt_rep_error)
{
  kvs__rep p = { .op = KVS_OP_PUT, .id = 8, .err = -ENOSPC, .quantized = 5 }, d;
  strcpy(p.errmsg, "pool full: 12 blocks needed");
  roundtrip_rep(&p, &d);
  ck_assert_int_eq(d.err, -ENOSPC);
  ck_assert_str_eq(d.errmsg, "pool full: 12 blocks needed");
  ck_assert_uint_eq(d.quantized, 0); /* an error reply carries no result */
  kvs__rep_free(&d);

  /* an empty message is filled from kvs_strerror */
  kvs__rep v = { .op = KVS_OP_HELLO, .id = 9, .err = KVS_EVERSION };
  roundtrip_rep(&v, &d);
  ck_assert_int_eq(d.err, KVS_EVERSION);
  ck_assert_str_eq(d.errmsg, kvs_strerror(KVS_EVERSION));
  kvs__rep_free(&d);
}
END_TEST

/* ---- request decoder errors ---- */

START_TEST(dec_framing_errors)
{
  ck_assert_int_eq(kvs__decode_req("", 0, &rq, msg), -EBADMSG);
  ck_assert_int_eq(kvs__decode_req("\x92\x01\x02", 3, &rq, msg), -EBADMSG); /* array */
  ck_assert_int_eq(kvs__decode_req("\xc1", 1, &rq, msg), -EBADMSG);
  ck_assert_int_eq(kvs__decode_req("\x81\xa2op", 4, &rq, msg), -EBADMSG); /* truncated */
  /* a map header that claims 2^32-1 entries: refused without allocating */
  ck_assert_int_eq(kvs__decode_req("\xdf\xff\xff\xff\xff\xa2op", 8, &rq, msg), -EBADMSG);
  ck_assert_int_eq(kvs__decode_req("\x81\xa2op\xdd\xff\xff\xff\xff", 9, &rq, msg), -EBADMSG);

  /* over the frame limit */
  char *big = calloc(1, KVS_MAX_FRAME + 1);
  big[0] = (char)0x80;
  ck_assert_int_eq(kvs__decode_req(big, KVS_MAX_FRAME + 1, &rq, msg), -E2BIG);
  free(big);

  /* nesting deeper than the walker allows */
  char deep[64];
  memset(deep, 0x91, sizeof(deep));
  deep[0] = (char)0x81;
  deep[1] = (char)0xa1;
  deep[2] = 'x';
  deep[63] = 0;
  ck_assert_int_eq(kvs__decode_req(deep, sizeof(deep), &rq, msg), -EBADMSG);

  /* trailing bytes after a valid map */
  mp_begin(2);
  kv_s("op", "ping");
  kv_u("id", 77);
  msgpack_pack_nil(&pk);
  ck_assert_int_eq(req_end(), -EBADMSG);
  ck_assert_ptr_nonnull(strstr(msg, "trailing"));
}
END_TEST

START_TEST(dec_keys_and_op)
{
  /* non-string key; id is still reported */
  mp_begin(3);
  kv_s("op", "ping");
  kv_u("id", 31);
  msgpack_pack_int(&pk, 5);
  msgpack_pack_int(&pk, 6);
  ck_assert_int_eq(req_end(), -EBADMSG);
  ck_assert_uint_eq(rq.id, 31);

  /* duplicate key */
  mp_begin(3);
  kv_s("op", "ping");
  kv_u("id", 1);
  kv_u("id", 2);
  ck_assert_int_eq(req_end(), -EBADMSG);

  /* unknown op, id echoed */
  mp_begin(2);
  kv_u("id", 12);
  kv_s("op", "frobnicate");
  ck_assert_int_eq(req_end(), -EPROTO);
  ck_assert_uint_eq(rq.id, 12);
  ck_assert_ptr_nonnull(strstr(msg, "frobnicate"));

  /* an unknown op's bytes come back as printable ASCII only */
  mp_begin(2);
  kv_u("id", 13);
  kv_s("op", "\x1b[2J\xff\"x\\");
  ck_assert_int_eq(req_end(), -EPROTO);
  for (const char *c = msg; *c; c++)
    ck_assert_msg(*c >= 0x20 && *c < 0x7f, "byte 0x%02x in \"%s\"", (unsigned char)*c, msg);
  ck_assert_ptr_nonnull(strstr(msg, "\\x1b[2J\\xff\\x22x\\x5c"));

  /* op of the wrong type */
  mp_begin(2);
  kv_u("id", 12);
  kv_u("op", 1);
  ck_assert_int_eq(req_end(), -EBADMSG);

  /* missing op, missing id */
  mp_begin(1);
  kv_u("id", 13);
  ck_assert_int_eq(req_end(), -EPROTO);
  ck_assert_ptr_nonnull(strstr(msg, "op"));
  mp_begin(1);
  kv_s("op", "ping");
  ck_assert_int_eq(req_end(), -EPROTO);
  ck_assert_ptr_nonnull(strstr(msg, "id"));

  /* negative id, string id */
  mp_begin(2);
  kv_s("op", "ping");
  kv_i("id", -1);
  ck_assert_int_eq(req_end(), -EINVAL);
  mp_begin(2);
  kv_s("op", "ping");
  kv_s("id", "1");
  ck_assert_int_eq(req_end(), -EBADMSG);

  /* unknown extra keys are ignored */
  mp_begin(4);
  kv_s("op", "ping");
  kv_u("id", 14);
  kv_s("future", "x");
  ks("nested");
  msgpack_pack_map(&pk, 1);
  kv_u("a", 1);
  ck_assert_int_eq(req_end(), 0);
  ck_assert_int_eq(rq.op, KVS_OP_PING);
  ck_assert_uint_eq(rq.id, 14);
}
END_TEST

START_TEST(dec_hello_errors)
{
  ck_assert_int_eq(hello_with("m", 8, 4, 64, "fp16"), 0);
  ck_assert_int_eq(rq.hello.pfn, -1);
  ck_assert(rq.hello.outliers < 0);
  ck_assert_int_eq(hello_with("m", 0, 4, 64, "fp16"), -EINVAL);
  ck_assert_int_eq(hello_with("m", KVS_MAX_LAYERS + 1, 4, 64, "fp16"), -EINVAL);
  ck_assert_int_eq(hello_with("m", 8, 0, 64, "fp16"), -EINVAL);
  ck_assert_int_eq(hello_with("m", 8, KVS_MAX_KV_HEADS + 1, 64, "fp16"), -EINVAL);
  ck_assert_int_eq(hello_with("m", 8, 4, 0, "fp16"), -EINVAL);
  ck_assert_int_eq(hello_with("m", 8, 4, KVS_MAX_HEAD_DIM + 1, "fp16"), -EINVAL);
  ck_assert_int_eq(hello_with("m", KVS_MAX_LAYERS, KVS_MAX_KV_HEADS, KVS_MAX_HEAD_DIM, "bf16"), 0);
  ck_assert_int_eq(hello_with("m", 8, 4, 64, "fp32"), -EINVAL);
  ck_assert_int_eq(hello_with("", 8, 4, 64, "fp16"), -EINVAL);

  char id[KVS_MAX_MODEL_ID + 2];
  memset(id, 'a', sizeof(id) - 1);
  id[sizeof(id) - 1] = '\0';
  ck_assert_int_eq(hello_with(id, 8, 4, 64, "fp16"), -E2BIG);
  id[KVS_MAX_MODEL_ID] = '\0';
  ck_assert_int_eq(hello_with(id, 8, 4, 64, "fp16"), 0);
  ck_assert_uint_eq(strlen(rq.hello.model_id), KVS_MAX_MODEL_ID);

  /* a foreign version decodes: the daemon answers it with KVS_EVERSION */
  mp_begin(5);
  kv_s("op", "hello");
  kv_u("id", 5);
  kv_u("version", 999);
  model("m", 8, 4, 64, "fp16");
  kv_u("seg_size", 0);
  ck_assert_int_eq(req_end(), 0);
  ck_assert_uint_eq(rq.hello.version, 999);
  /* ... even when the rest of it follows some other layout */
  mp_begin(4);
  kv_s("op", "hello");
  kv_u("id", 6);
  kv_u("version", KVS_PROTO_VERSION + 1);
  kv_s("model", "a string in a later version");
  ck_assert_int_eq(req_end(), 0);
  ck_assert_uint_eq(rq.hello.version, KVS_PROTO_VERSION + 1);
  ck_assert_uint_eq(rq.id, 6);

  /* missing required fields, named */
  mp_begin(4);
  kv_s("op", "hello");
  kv_u("id", 5);
  kv_u("version", 1);
  kv_u("seg_size", 0);
  ck_assert_int_eq(req_end(), -EPROTO);
  ck_assert_ptr_nonnull(strstr(msg, "model"));
  mp_begin(4);
  kv_s("op", "hello");
  kv_u("id", 5);
  model("m", 8, 4, 64, "fp16");
  kv_u("seg_size", 0);
  ck_assert_int_eq(req_end(), -EPROTO);
  ck_assert_ptr_nonnull(strstr(msg, "version"));
  mp_begin(5);
  kv_s("op", "hello");
  kv_u("id", 5);
  kv_u("version", 1);
  kv_u("seg_size", 0);
  ks("model");
  msgpack_pack_map(&pk, 1);
  kv_s("id", "m");
  ck_assert_int_eq(req_end(), -EPROTO);
  ck_assert_ptr_nonnull(strstr(msg, "model.layers"));

  /* optional settings: bad bits, policy, outliers, types */
  static const struct { const char *k; int kind; int64_t v; const char *s; int want; } c[] = {
    { "k_bits", 0, 5, NULL, -EINVAL },
    { "v_bits", 0, 32, NULL, -EINVAL },
    { "k_bits", 0, 16, NULL, 0 },
    { "k_bits", 1, 0, "2", -EBADMSG },
    { "policy", 1, 0, "sometimes", -EINVAL },
    { "policy", 0, 2, NULL, -EBADMSG },
    { "pfn", 0, (int64_t)1 << 40, NULL, -EINVAL },
    { "outliers", 0, 2, NULL, -EINVAL },
    { "outliers", 1, 0, "x", -EBADMSG },
    { "pid", 0, -1, NULL, -EINVAL },
    { "seg_size", 0, -5, NULL, -EINVAL },
  };
  for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
    int seg = strcmp(c[i].k, "seg_size") == 0;
    mp_begin(seg ? 5 : 6);
    kv_s("op", "hello");
    kv_u("id", 5);
    kv_u("version", 1);
    model("m", 8, 4, 64, "fp16");
    if (!seg)
      kv_u("seg_size", 0);
    if (c[i].kind)
      kv_s(c[i].k, c[i].s);
    else
      kv_i(c[i].k, c[i].v);
    ck_assert_msg(req_end() == c[i].want, "case %zu (%s): %s", i, c[i].k, msg);
  }

  /* NaN outliers */
  mp_begin(6);
  kv_s("op", "hello");
  kv_u("id", 5);
  kv_u("version", 1);
  model("m", 8, 4, 64, "fp16");
  kv_u("seg_size", 0);
  ks("outliers");
  msgpack_pack_double(&pk, __builtin_nan(""));
  ck_assert_int_eq(req_end(), -EINVAL);

  /* model of the wrong type */
  mp_begin(5);
  kv_s("op", "hello");
  kv_u("id", 5);
  kv_u("version", 1);
  kv_s("model", "llama");
  kv_u("seg_size", 0);
  ck_assert_int_eq(req_end(), -EBADMSG);
}
END_TEST

/* put with one field replaced or dropped */
enum { P_NONE, P_NO_SEQ, P_NO_TOKENS, P_NO_LAYERS, P_NO_KOFF, P_NO_VOFF, P__COUNT };
static int put_with(int drop, uint32_t ntok, int64_t lb, int64_t le, uint64_t start)
{
  mp_begin(2 + 6 - (drop != P_NONE));
  kv_s("op", "put");
  kv_u("id", 21);
  if (drop != P_NO_SEQ) kv_u("seq", 1);
  kv_u("start", start);
  if (drop != P_NO_TOKENS) kv_tokens(ntok);
  if (drop != P_NO_LAYERS) kv_layers(lb, le);
  if (drop != P_NO_KOFF) kv_u("k_off", 0);
  if (drop != P_NO_VOFF) kv_u("v_off", 0);
  return req_end();
}

START_TEST(dec_put_errors)
{
  ck_assert_int_eq(put_with(P_NONE, 4, 0, 8, 0), 0);
  kvs__req_free(&rq);
  static const char *names[P__COUNT] = { "", "seq", "tokens", "layers", "k_off", "v_off" };
  for (int d = P_NO_SEQ; d < P__COUNT; d++) {
    ck_assert_int_eq(put_with(d, 4, 0, 8, 0), -EPROTO);
    ck_assert_uint_eq(rq.id, 21);
    ck_assert_msg(strstr(msg, names[d]) != NULL, "message \"%s\" lacks %s", msg, names[d]);
  }
  ck_assert_int_eq(put_with(P_NONE, KVS_MAX_TOKENS_PER_PUT + 1, 0, 8, 0), -E2BIG);
  ck_assert_int_eq(put_with(P_NONE, KVS_MAX_TOKENS_PER_PUT, 0, 8, 0), 0);
  kvs__req_free(&rq);
  ck_assert_int_eq(put_with(P_NONE, 4, 5, 4, 0), -EINVAL);   /* b > e */
  ck_assert_int_eq(put_with(P_NONE, 4, -1, 4, 0), -EINVAL);  /* negative */
  ck_assert_int_eq(put_with(P_NONE, 4, 0, KVS_MAX_LAYERS + 1, 0), -EINVAL);
  ck_assert_int_eq(put_with(P_NONE, 4, 0, 8, 1ull << 32), -EINVAL);  /* start > u32 */
  ck_assert_int_eq(put_with(P_NONE, 4, 0, 8, UINT32_MAX - 2), -EINVAL); /* start+n wraps */

  /* layers not a pair */
  mp_begin(8);
  kv_s("op", "put");
  kv_u("id", 21);
  kv_u("seq", 1);
  kv_u("start", 0);
  kv_tokens(1);
  ks("layers");
  msgpack_pack_array(&pk, 3);
  msgpack_pack_int(&pk, 0);
  msgpack_pack_int(&pk, 1);
  msgpack_pack_int(&pk, 2);
  kv_u("k_off", 0);
  kv_u("v_off", 0);
  ck_assert_int_eq(req_end(), -EINVAL);

  /* negative token id, token over u32, tokens not an array */
  static const int bad_kind[] = { 0, 1, 2 };
  for (int i = 0; i < 3; i++) {
    mp_begin(8);
    kv_s("op", "put");
    kv_u("id", 21);
    kv_u("seq", 1);
    kv_u("start", 0);
    ks("tokens");
    if (bad_kind[i] == 2) {
      ks("1 2 3");
    } else {
      msgpack_pack_array(&pk, 2);
      msgpack_pack_int(&pk, 1);
      if (bad_kind[i] == 0) msgpack_pack_int(&pk, -1);
      else msgpack_pack_uint64(&pk, 1ull << 32);
    }
    kv_layers(0, 1);
    kv_u("k_off", 0);
    kv_u("v_off", 0);
    ck_assert_int_eq(req_end(), bad_kind[i] == 2 ? -EBADMSG : -EINVAL);
    ck_assert_ptr_null(rq.tokens);
  }

  /* tokens as a bin (version 2): little-endian uint32s; a length that is
   * not whole uint32s, or over the limit, is refused */
  static const uint32_t bin_len[] = { 8, 7, 4 * (KVS_MAX_TOKENS_PER_PUT + 1) };
  for (int i = 0; i < 3; i++) {
    mp_begin(8);
    kv_s("op", "put");
    kv_u("id", 22);
    kv_u("seq", 1);
    kv_u("start", 0);
    ks("tokens");
    static uint8_t raw[4 * (KVS_MAX_TOKENS_PER_PUT + 1)];
    memset(raw, 0, sizeof raw);
    memcpy(raw, "\x01\x02\x03\x04\xff\xff\xff\xff", 8);
    msgpack_pack_bin_with_body(&pk, raw, bin_len[i]);
    kv_layers(0, 1);
    kv_u("k_off", 0);
    kv_u("v_off", 0);
    ck_assert_int_eq(req_end(), i == 0 ? 0 : i == 1 ? -EBADMSG : -E2BIG);
    if (i == 0) {
      ck_assert_uint_eq(rq.n_tokens, 2);
      ck_assert_uint_eq(rq.tokens[0], 0x04030201u);
      ck_assert_uint_eq(rq.tokens[1], 0xffffffffu);
      kvs__req_free(&rq);
    } else {
      ck_assert_ptr_null(rq.tokens);
    }
  }

  /* act_channels over the limit, and without act_off */
  for (int i = 0; i < 2; i++) {
    mp_begin(9);
    kv_s("op", "put");
    kv_u("id", 21);
    kv_u("seq", 1);
    kv_u("start", 0);
    kv_tokens(2);
    kv_layers(0, 1);
    kv_u("k_off", 0);
    kv_u("v_off", 0);
    kv_u("act_channels", i ? 2 : KVS_MAX_ACT_CHANNELS + 1);
    ck_assert_int_eq(req_end(), i ? -EPROTO : -E2BIG);
    if (i)
      ck_assert_ptr_nonnull(strstr(msg, "act_off"));
  }
}
END_TEST

START_TEST(dec_other_op_errors)
{
  /* lookup: tokens required, bind needs seq, bind must be bool */
  mp_begin(2);
  kv_s("op", "lookup");
  kv_u("id", 1);
  ck_assert_int_eq(req_end(), -EPROTO);
  mp_begin(4);
  kv_s("op", "lookup");
  kv_u("id", 1);
  kv_tokens(3);
  ks("bind");
  msgpack_pack_true(&pk);
  ck_assert_int_eq(req_end(), -EPROTO);
  ck_assert_ptr_nonnull(strstr(msg, "seq"));
  mp_begin(5);
  kv_s("op", "lookup");
  kv_u("id", 1);
  kv_tokens(3);
  kv_u("seq", 2);
  kv_u("bind", 1);
  ck_assert_int_eq(req_end(), -EBADMSG);
  mp_begin(3);
  kv_s("op", "lookup");
  kv_u("id", 1);
  kv_tokens(KVS_MAX_TOKENS_PER_PUT + 1);
  ck_assert_int_eq(req_end(), -E2BIG);
  mp_begin(3);
  kv_s("op", "lookup");
  kv_u("id", 1);
  kv_tokens(3);
  ck_assert_int_eq(req_end(), 0);
  ck_assert_int_eq(rq.bind, 0);
  ck_assert_uint_eq(rq.n_tokens, 3);
  kvs__req_free(&rq);

  /* get: each field required, layers checked */
  static const char *gk[] = { "seq", "start", "n", "layers", "k_off", "v_off" };
  for (int drop = 0; drop <= 6; drop++) {
    mp_begin(drop == 6 ? 8 : 7);
    kv_s("op", "get");
    kv_u("id", 2);
    for (int i = 0; i < 6; i++) {
      if (i == drop)
        continue;
      if (i == 3) kv_layers(1, 0);
      else kv_u(gk[i], 1);
    }
    if (drop == 6) {
      /* all there, but the layers pair is reversed */
      ck_assert_int_eq(req_end(), -EINVAL);
    } else if (drop == 3) {
      ck_assert_int_eq(req_end(), -EPROTO);
    } else {
      ck_assert_int_eq(req_end(), -EPROTO);
      ck_assert_ptr_nonnull(strstr(msg, gk[drop]));
    }
  }

  /* release: seq required and unsigned */
  mp_begin(2);
  kv_s("op", "release");
  kv_u("id", 3);
  ck_assert_int_eq(req_end(), -EPROTO);
  mp_begin(3);
  kv_s("op", "release");
  kv_u("id", 3);
  kv_i("seq", -4);
  ck_assert_int_eq(req_end(), -EINVAL);
}
END_TEST

/* ---- reply decoder errors ---- */

START_TEST(dec_rep_errors)
{
  kvs__rep rp;
  /* missing id */
  mp_begin(1);
  kv_u("cached", 3);
  ck_assert_int_eq(kvs__decode_rep(sb.data, sb.size, &rp, msg), -EPROTO);
  msgpack_sbuffer_destroy(&sb);
  /* err not a pair, positive code, message not a string */
  for (int i = 0; i < 3; i++) {
    mp_begin(2);
    kv_u("id", 1);
    ks("err");
    msgpack_pack_array(&pk, i == 0 ? 1 : 2);
    msgpack_pack_int(&pk, i == 1 ? 5 : -22);
    if (i == 1) ks("x");
    if (i == 2) msgpack_pack_int(&pk, 3);
    ck_assert_int_eq(kvs__decode_rep(sb.data, sb.size, &rp, msg), -EBADMSG);
    ck_assert(msg[0] != '\0');
    msgpack_sbuffer_destroy(&sb);
  }
  /* too many sink channels; backend too long; unknown keys ignored */
  mp_begin(2);
  kv_u("id", 1);
  ks("sink_channels");
  msgpack_pack_array(&pk, KVS_MAX_ACT_CHANNELS + 1);
  for (uint32_t i = 0; i <= KVS_MAX_ACT_CHANNELS; i++)
    msgpack_pack_int(&pk, 1);
  ck_assert_int_eq(kvs__decode_rep(sb.data, sb.size, &rp, msg), -E2BIG);
  msgpack_sbuffer_destroy(&sb);
  mp_begin(2);
  kv_u("id", 1);
  ks("stats");
  msgpack_pack_map(&pk, 1);
  kv_s("backend", "a-very-long-backend-name");
  ck_assert_int_eq(kvs__decode_rep(sb.data, sb.size, &rp, msg), -E2BIG);
  msgpack_sbuffer_destroy(&sb);
  mp_begin(3);
  kv_u("id", 1);
  kv_u("cached", 32);
  kv_s("hint", "new daemon field");
  ck_assert_int_eq(kvs__decode_rep(sb.data, sb.size, &rp, msg), 0);
  ck_assert_uint_eq(rp.cached, 32);
  kvs__rep_free(&rp);
  msgpack_sbuffer_destroy(&sb);
  /* trailing bytes */
  ck_assert_int_eq(kvs__decode_rep("\x81\xa2id\x01\x00", 6, &rp, msg), -EBADMSG);
}
END_TEST

/* ---- kvs_strerror ---- */

START_TEST(strerror_codes)
{
  static const int codes[] = {
    KVS_OK, KVS_EVERSION, KVS_EMODEL, KVS_ESEGMENT, KVS_ENAN, -EINVAL, -EPROTO,
    -EBADMSG, -E2BIG, -ENOSPC, -ENOENT, -ENOMEM, -EEXIST, -EPERM, -EACCES,
    -ECONNREFUSED, -ECONNRESET, -ENOTCONN, -EPIPE, -ETIMEDOUT, -ERANGE, -EBUSY,
    -ENOTSUP, -EMFILE, -EAGAIN, -EINTR, -EIO, -ENOSYS, -EUSERS,
  };
  size_t n = sizeof(codes) / sizeof(codes[0]);
  for (size_t i = 0; i < n; i++) {
    const char *s = kvs_strerror(codes[i]);
    ck_assert_ptr_nonnull(s);
    ck_assert_uint_gt(strlen(s), 3);
    /* distinct codes have distinct names */
    for (size_t j = 0; j < i; j++)
      ck_assert_str_ne(s, kvs_strerror(codes[j]));
  }
  ck_assert_str_eq(kvs_strerror(-ENOSPC), "cache pool full");
  ck_assert_str_eq(kvs_strerror(-EUSERS), "too many sessions (max_sessions)");
  ck_assert_str_eq(kvs_policy_name(KVS_POLICY_KVSINK), "kvsink");
  ck_assert_str_eq(kvs_policy_name(KVS_POLICY_PFN), "pfn");
  ck_assert_str_eq(kvs_policy_name((kvs_policy)42), "default");
  ck_assert_str_eq(kvs_strerror(KVS_EVERSION), "protocol version not spoken by the peer");
  /* errno values without an entry fall back to strerror */
  ck_assert_str_eq(kvs_strerror(-EXDEV), strerror(EXDEV));
  /* and anything else still gets a string */
  ck_assert_str_eq(kvs_strerror(-5000), "unknown error");
  ck_assert_str_eq(kvs_strerror(17), "unknown error");
  ck_assert_ptr_nonnull(kvs_strerror(INT32_MIN));
}
END_TEST

static Suite *suite(void)
{
  Suite *s = suite_create("proto");
  TCase *t = tcase_create("proto");
  tcase_add_test(t, frame_header);
  tcase_add_test(t, op_names);
  tcase_add_test(t, rt_hello);
  tcase_add_test(t, hello_salt_limits);
  tcase_add_test(t, rt_put);
  tcase_add_test(t, rt_lookup_get_release);
  tcase_add_test(t, rt_bare_ops);
  tcase_add_test(t, rt_rep_hello);
  tcase_add_test(t, rt_rep_results);
  tcase_add_test(t, rt_rep_table);
  tcase_add_test(t, rt_rep_stats);
  tcase_add_test(t, rt_rep_items);
  tcase_add_test(t, dec_rep_items_errors);
  tcase_add_test(t, rt_rep_error);
  tcase_add_test(t, dec_framing_errors);
  tcase_add_test(t, dec_keys_and_op);
  tcase_add_test(t, dec_hello_errors);
  tcase_add_test(t, dec_put_errors);
  tcase_add_test(t, dec_other_op_errors);
  tcase_add_test(t, dec_rep_errors);
  tcase_add_test(t, strerror_codes);
  suite_add_tcase(s, t);
  return s;
}

int main(void)
{
  SRunner *r = srunner_create(suite());
  srunner_run_all(r, CK_NORMAL);
  int failed = srunner_ntests_failed(r);
  srunner_free(r);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
