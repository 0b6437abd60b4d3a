/* SPDX-License-Identifier: MIT */
/* The request layer against a real store: every op's validation and its
 * success path, the admin checks and the namespace view. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/ops.h"
#include "daemon/table.h"

#define NL 2u
#define H 2u
#define D 16u
#define C (H * D)

static kvs__store *store;
static kvs__config cfg;
static kvs__profiles profiles;
static kvs__ops_env env;
static int reloads;

static void fake_server_stats(void *arg, kvs__stats *st)
{
  (void)arg;
  st->uptime_s = 7;
  st->sessions = 3;
  strcpy(st->backend, "host");
}

static int fake_reload(void *arg, char *errmsg)
{
  (void)arg;
  errmsg[0] = 0;
  reloads++;
  return 0;
}

/* the live sessions list_op walks for fallbacks */
static kvs__sess_state *live[4];
static void fake_foreach(void *arg, kvs__sess_cb cb, void *cb_arg)
{
  (void)arg;
  for (size_t i = 0; i < 4; i++)
    if (live[i]) cb(live[i], cb_arg);
}

static void setup(void)
{
  kvs__config_defaults(&cfg);
  kvs__store_opts o = {.pool_bytes = 16u << 20, .max_pending = cfg.max_pending_tokens};
  ck_assert_int_eq(kvs__store_init(&store, &o), 0);
  memset(&profiles, 0, sizeof profiles);
  env = (kvs__ops_env){.store = store, .cfg = &cfg, .profiles = &profiles,
                       .server_stats = fake_server_stats, .reload = fake_reload,
                       .foreach_session = fake_foreach};
  memset(live, 0, sizeof live);
  reloads = 0;
}

static void teardown(void)
{
  kvs__store_close(store);
}

static kvs__req mkreq(kvs__op op)
{
  static uint64_t next_id = 1;
  kvs__req rq;
  memset(&rq, 0, sizeof rq);
  rq.op = op;
  rq.id = next_id++;
  return rq;
}

/* Run rq, return the reply's error (0 on success), keep the reply in *out. */
static int run(kvs__sess_state *st, const kvs__req *rq, kvs__rep *out)
{
  kvs__rep rep;
  int act = kvs__ops_run(&env, st, rq, &rep);
  ck_assert_uint_eq(rep.id, rq->id);
  ck_assert_int_eq(rep.op, rq->op);
  if (rep.err < 0) {
    ck_assert_msg(rep.errmsg[0], "error %d without a message", rep.err);
    ck_assert_int_eq(act, KVS_OPS_REPLY);
  }
  int err = rep.err;
  if (out) *out = rep;
  else kvs__ops_rep_free(&rep);
  return err;
}

static kvs__req mkhello(void)
{
  kvs__req rq = mkreq(KVS_OP_HELLO);
  rq.hello.version = KVS_PROTO_VERSION;
  strcpy(rq.hello.model_id, "test-model");
  rq.hello.n_layers = NL;
  rq.hello.n_kv_heads = H;
  rq.hello.head_dim = D;
  rq.hello.dtype = KVS_DTYPE_F16;
  rq.hello.seg_size = 1u << 20;
  rq.hello.k_bits = 16;
  rq.hello.v_bits = 16;
  rq.hello.policy = KVS_POLICY_NONE;
  rq.hello.pfn = -1;
  rq.hello.outliers = -1;
  return rq;
}

static void hello(kvs__sess_state *st)
{
  kvs__req rq = mkhello();
  ck_assert_int_eq(run(st, &rq, NULL), 0);
}

static void sess(kvs__sess_state *st, uid_t uid, int admin)
{
  static uint64_t id = 100;
  kvs__sess_init(st, &cfg, ++id, uid, 1234, admin);
}

/* A put of n tokens (ids start..start+n-1) into all layers, K/V at 0 and
 * half the segment. */
static kvs__req mkput(uint64_t seq, uint32_t start, uint32_t n, uint32_t *tokens)
{
  kvs__req rq = mkreq(KVS_OP_PUT);
  rq.seq = seq;
  rq.start = start;
  rq.n_tokens = n;
  for (uint32_t i = 0; i < n; i++) tokens[i] = start + i;
  rq.tokens = n ? tokens : NULL;
  rq.layer_begin = 0;
  rq.layer_end = NL;
  rq.k_off = 0;
  rq.v_off = 512u << 10;
  return rq;
}

START_TEST(data_ops_need_hello)
{
  kvs__sess_state st;
  sess(&st, 1000, 0);
  kvs__op ops[] = {KVS_OP_PUT, KVS_OP_GET, KVS_OP_LOOKUP, KVS_OP_RELEASE};
  for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
    kvs__req rq = mkreq(ops[i]);
    kvs__rep rep;
    ck_assert_int_eq(run(&st, &rq, &rep), -EPROTO);
    ck_assert_ptr_nonnull(strstr(rep.errmsg, "before hello"));
  }
  /* control ops do not need hello */
  kvs__req rq = mkreq(KVS_OP_PING);
  ck_assert_int_eq(run(&st, &rq, NULL), 0);
  rq = mkreq(KVS_OP_STATS);
  ck_assert_int_eq(run(&st, &rq, NULL), 0);
  rq = mkreq(KVS_OP_LIST);
  ck_assert_int_eq(run(&st, &rq, NULL), 0);
  kvs__sess_free(&st);
}
END_TEST

START_TEST(hello_validation)
{
  kvs__sess_state st;
  sess(&st, 1000, 0);
  kvs__req rq = mkhello();
  rq.hello.version = KVS_PROTO_VERSION + 1;
  ck_assert_int_eq(run(&st, &rq, NULL), KVS_EVERSION);
  rq.hello.version = KVS_PROTO_VERSION_MIN - 1;
  ck_assert_int_eq(run(&st, &rq, NULL), KVS_EVERSION);
  rq = mkhello();
  rq.hello.n_layers = 0;
  ck_assert_int_eq(run(&st, &rq, NULL), KVS_EMODEL);
  rq = mkhello();
  rq.hello.head_dim = KVS_MAX_HEAD_DIM + 1;
  ck_assert_int_eq(run(&st, &rq, NULL), KVS_EMODEL);
  rq = mkhello();
  rq.hello.model_id[0] = 0;
  ck_assert_int_eq(run(&st, &rq, NULL), KVS_EMODEL);
  rq = mkhello();
  rq.hello.n_layers = 0;
  strcpy(rq.hello.model_id, "bad\x1b[2J\xff");
  kvs__rep rep;
  ck_assert_int_eq(run(&st, &rq, &rep), KVS_EMODEL);
  for (const char *c = rep.errmsg; *c; c++) /* the client's bytes, made printable */
    ck_assert(*c >= 0x20 && *c <= 0x7e);
  ck_assert_ptr_nonnull(strstr(rep.errmsg, "bad?[2J?"));
  rq = mkhello();
  rq.hello.dtype = 7;
  ck_assert_int_eq(run(&st, &rq, NULL), KVS_EMODEL);
  rq = mkhello();
  rq.hello.k_bits = 5;
  ck_assert_int_eq(run(&st, &rq, NULL), -EINVAL);
  rq = mkhello();
  rq.hello.policy = 9;
  ck_assert_int_eq(run(&st, &rq, NULL), -EINVAL);
  rq = mkhello();
  rq.hello.pfn = (int32_t)cfg.group_size + 1;
  ck_assert_int_eq(run(&st, &rq, NULL), -EINVAL);
  rq = mkhello();
  rq.hello.outliers = 0.5f;
  ck_assert_int_eq(run(&st, &rq, NULL), -EINVAL);
  /* nothing was created by the refused hellos */
  ck_assert_ptr_null(st.space);
  ck_assert_int_eq(st.seg.fd, -1);
  ck_assert_int_eq(st.hello_done, 0);
  kvs__sess_free(&st);
}
END_TEST

START_TEST(hello_success_and_twice)
{
  kvs__sess_state st;
  sess(&st, 1000, 0);
  kvs__req rq = mkhello();
  rq.hello.policy = KVS_POLICY_KVSINK; /* no profile loaded: falls back */
  rq.hello.k_bits = 0;                  /* default */
  rq.hello.seg_size = 1000;             /* rounded up to a page */
  kvs__rep rep;
  int act = kvs__ops_run(&env, &st, &rq, &rep);
  ck_assert_int_eq(act, KVS_OPS_REPLY_FD);
  ck_assert_int_eq(rep.err, 0);
  ck_assert_int_ge(st.seg.fd, 0);
  ck_assert_uint_eq(rep.seg_size % (uint64_t)sysconf(_SC_PAGESIZE), 0);
  ck_assert_uint_ge(rep.seg_size, 1000);
  ck_assert_int_eq(rep.k_bits, (int32_t)cfg.k_bits);
  ck_assert_int_eq(rep.v_bits, 16);
  ck_assert_int_eq(rep.policy, KVS_POLICY_PFN);
  ck_assert_int_eq(rep.has_profile, 0);
  ck_assert_int_eq(rep.policy_fallback, 1);
  ck_assert_uint_gt(rep.v_group, 0);
  ck_assert_int_eq(rep.pfn, (int32_t)cfg.pfn);
  ck_assert_uint_eq(rep.group, cfg.group_size);
  /* list shows the space with one session that fell back */
  live[0] = &st;
  rq = mkreq(KVS_OP_LIST);
  ck_assert_int_eq(run(&st, &rq, &rep), 0);
  ck_assert_uint_eq(rep.n_spaces, 1);
  ck_assert_int_eq(rep.spaces[0].policy, KVS_POLICY_PFN);
  ck_assert_uint_eq(rep.spaces[0].fallback_sessions, 1);
  kvs__ops_rep_free(&rep);
  live[0] = NULL;
  ck_assert_int_eq(run(&st, &rq, &rep), 0);
  ck_assert_uint_eq(rep.spaces[0].fallback_sessions, 0);
  kvs__ops_rep_free(&rep);
  rq = mkhello();
  ck_assert_int_eq(run(&st, &rq, NULL), -EPROTO);
  /* the undo path used when the reply cannot be sent */
  kvs__ops_hello_undo(&st);
  ck_assert_int_eq(st.seg.fd, -1);
  ck_assert_ptr_null(st.space);
  rq = mkhello();
  ck_assert_int_eq(run(&st, &rq, NULL), 0);
  kvs__sess_free(&st);
}
END_TEST

START_TEST(put_validation)
{
  kvs__sess_state st;
  sess(&st, 1000, 0);
  hello(&st);
  uint32_t tok[64];
  kvs__req rq = mkput(1, 0, 8, tok);
  rq.layer_end = NL + 1;
  ck_assert_int_eq(run(&st, &rq, NULL), -EINVAL);
  rq = mkput(1, 0, 8, tok);
  rq.layer_begin = 2;
  rq.layer_end = 1;
  ck_assert_int_eq(run(&st, &rq, NULL), -EINVAL);
  rq = mkput(1, 0, 8, tok);
  rq.k_off = st.seg.size - 16; /* runs past the end */
  ck_assert_int_eq(run(&st, &rq, NULL), KVS_ESEGMENT);
  rq = mkput(1, 0, 8, tok);
  rq.v_off = UINT64_MAX - 1; /* wraps */
  ck_assert_int_eq(run(&st, &rq, NULL), KVS_ESEGMENT);
  rq = mkput(1, 0, 8, tok);
  rq.k_off = 1; /* misaligned */
  ck_assert_int_eq(run(&st, &rq, NULL), KVS_ESEGMENT);
  rq = mkput(1, 0, 8, tok);
  rq.has_act = 1;
  rq.act_channels = KVS_MAX_ACT_CHANNELS + 1;
  ck_assert_int_eq(run(&st, &rq, NULL), -E2BIG);
  rq = mkput(1, 0, 8, tok);
  rq.has_act = 1;
  rq.act_channels = 4;
  rq.act_off = st.seg.size; /* empty space at the end */
  ck_assert_int_eq(run(&st, &rq, NULL), KVS_ESEGMENT);
  rq = mkput(1, 0, 8, tok);
  rq.tokens = NULL;
  ck_assert_int_eq(run(&st, &rq, NULL), -EPROTO);
  /* a refused put leaves no sequence behind */
  ck_assert_uint_eq(st.n_seqs, 0);
  /* a put that the store refuses (not at the seq's length) */
  rq = mkput(1, 5, 8, tok);
  ck_assert_int_lt(run(&st, &rq, NULL), 0);
  ck_assert_uint_eq(st.n_seqs, 0);
  kvs__sess_free(&st);
}
END_TEST

START_TEST(put_get_roundtrip)
{
  kvs__sess_state st;
  sess(&st, 1000, 0);
  hello(&st);
  uint32_t n = 40, tok[64];
  uint16_t *k = (uint16_t *)st.seg.base, *v = (uint16_t *)(st.seg.base + (512u << 10));
  for (uint32_t i = 0; i < NL * n * C; i++) {
    k[i] = (uint16_t)(0x3c00 + (i % 512));
    v[i] = (uint16_t)(0xbc00 + (i % 300));
  }
  kvs__req rq = mkput(9, 0, n, tok);
  kvs__rep rep;
  ck_assert_int_eq(run(&st, &rq, &rep), 0);
  ck_assert_uint_eq(rep.seq_len, n);
  ck_assert_uint_eq(st.n_seqs, 1);
  /* read back into another area of the segment: 16-bit settings are exact */
  rq = mkreq(KVS_OP_GET);
  rq.seq = 9;
  rq.start = 0;
  rq.n_tokens = n;
  rq.layer_end = NL;
  rq.k_off = 256u << 10;
  rq.v_off = 768u << 10;
  ck_assert_int_eq(run(&st, &rq, &rep), 0);
  ck_assert_uint_eq(rep.seq_len, n);
  ck_assert_int_eq(memcmp(st.seg.base + (256u << 10), k, NL * n * C * 2), 0);
  ck_assert_int_eq(memcmp(st.seg.base + (768u << 10), v, NL * n * C * 2), 0);
  /* get validation */
  rq.seq = 10;
  ck_assert_int_eq(run(&st, &rq, NULL), -ENOENT);
  rq.seq = 9;
  rq.k_off = st.seg.size;
  ck_assert_int_eq(run(&st, &rq, NULL), KVS_ESEGMENT);
  rq.k_off = 0;
  rq.layer_end = NL + 5;
  ck_assert_int_eq(run(&st, &rq, NULL), -EINVAL);
  rq.layer_end = NL;
  rq.n_tokens = n + 1; /* past the seq's length */
  ck_assert_int_lt(run(&st, &rq, NULL), 0);
  /* lookup sees the whole groups */
  rq = mkreq(KVS_OP_LOOKUP);
  rq.n_tokens = n;
  rq.tokens = tok;
  ck_assert_int_eq(run(&st, &rq, &rep), 0);
  ck_assert_uint_eq(rep.cached, n / cfg.group_size * cfg.group_size);
  /* release */
  rq = mkreq(KVS_OP_RELEASE);
  rq.seq = 9;
  ck_assert_int_eq(run(&st, &rq, NULL), 0);
  ck_assert_uint_eq(st.n_seqs, 0);
  ck_assert_int_eq(run(&st, &rq, NULL), -ENOENT);
  kvs__sess_free(&st);
}
END_TEST

START_TEST(lookup_bind_and_seq_cap)
{
  kvs__sess_state st;
  sess(&st, 1000, 0);
  hello(&st);
  uint32_t tok[64];
  kvs__req rq = mkreq(KVS_OP_LOOKUP);
  rq.n_tokens = 4;
  rq.tokens = NULL;
  ck_assert_int_eq(run(&st, &rq, NULL), -EPROTO);
  for (uint32_t i = 0; i < KVS_MAX_SEQS_PER_CLIENT; i++) {
    rq = mkreq(KVS_OP_LOOKUP);
    rq.bind = 1;
    rq.seq = 1000 + i;
    ck_assert_int_eq(run(&st, &rq, NULL), 0);
  }
  ck_assert_uint_eq(st.n_seqs, KVS_MAX_SEQS_PER_CLIENT);
  rq = mkreq(KVS_OP_LOOKUP);
  rq.bind = 1;
  rq.seq = 5;
  kvs__rep rep;
  ck_assert_int_eq(run(&st, &rq, &rep), -EMFILE);
  ck_assert_ptr_nonnull(strstr(rep.errmsg, "too many open sequences"));
  rq = mkput(6, 0, 4, tok);
  ck_assert_int_eq(run(&st, &rq, NULL), -EMFILE);
  /* bind onto a non-empty seq */
  rq = mkput(1000, 0, 4, tok);
  ck_assert_int_eq(run(&st, &rq, NULL), 0);
  rq = mkreq(KVS_OP_LOOKUP);
  rq.bind = 1;
  rq.seq = 1000;
  ck_assert_int_eq(run(&st, &rq, NULL), -EEXIST);
  kvs__sess_free(&st);
}
END_TEST

START_TEST(admin_ops_refused_for_data_clients)
{
  kvs__sess_state st, adm;
  sess(&st, 1000, 0);
  sess(&adm, 1000, 1);
  kvs__op ops[] = {KVS_OP_EVICT, KVS_OP_RELOAD, KVS_OP_PROFILES};
  for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
    kvs__req rq = mkreq(ops[i]);
    ck_assert_int_eq(run(&st, &rq, NULL), -EACCES);
    ck_assert_int_eq(run(&adm, &rq, NULL), 0); /* and without hello */
  }
  ck_assert_int_eq(reloads, 1);
  kvs__sess_free(&st);
  kvs__sess_free(&adm);
}
END_TEST

START_TEST(list_and_stats_by_namespace)
{
  kvs__sess_state a, b, adm;
  sess(&a, 1000, 0);
  sess(&b, 1001, 0);
  sess(&adm, 0, 1);
  hello(&a);
  hello(&b);
  uint32_t tok[64];
  kvs__req rq = mkput(1, 0, 40, tok);
  ck_assert_int_eq(run(&a, &rq, NULL), 0);
  kvs__rep rep;
  rq = mkreq(KVS_OP_LIST);
  ck_assert_int_eq(run(&a, &rq, &rep), 0);
  ck_assert_uint_eq(rep.n_spaces, 1);
  ck_assert_str_eq(rep.spaces[0].ns, "uid:1000");
  ck_assert_str_eq(rep.spaces[0].model_id, "test-model");
  ck_assert_uint_eq(rep.spaces[0].n_layers, NL);
  ck_assert_uint_eq(rep.spaces[0].k_bits, 16);
  ck_assert_int_eq(rep.spaces[0].policy, KVS_POLICY_NONE);
  ck_assert_uint_eq(rep.spaces[0].seqs, 1);
  ck_assert_uint_eq(rep.spaces[0].blocks, NL * (40 / cfg.group_size)); /* per layer */
  kvs__ops_rep_free(&rep);
  ck_assert_int_eq(run(&adm, &rq, &rep), 0);
  ck_assert_uint_eq(rep.n_spaces, 2);
  ck_assert_str_ne(rep.spaces[0].ns, rep.spaces[1].ns);
  kvs__ops_rep_free(&rep);

  rq = mkreq(KVS_OP_STATS);
  ck_assert_int_eq(run(&a, &rq, &rep), 0);
  ck_assert_uint_eq(rep.stats.spaces, 1);
  ck_assert_uint_eq(rep.stats.seqs, 1);
  ck_assert_uint_eq(rep.stats.sessions, 0); /* other users' sessions are not shown */
  ck_assert_uint_eq(rep.stats.pool_bytes, 0);
  ck_assert_uint_eq(rep.stats.uptime_s, 7);
  ck_assert_str_eq(rep.stats.backend, "host");
  ck_assert_uint_eq(rep.n_pools, 0); /* pools are the admin's view */
  ck_assert_int_eq(run(&b, &rq, &rep), 0);
  ck_assert_uint_eq(rep.stats.spaces, 1);
  ck_assert_uint_eq(rep.stats.seqs, 0);
  ck_assert_int_eq(run(&adm, &rq, &rep), 0);
  ck_assert_uint_eq(rep.stats.spaces, 2);
  ck_assert_uint_eq(rep.stats.sessions, 3);
  ck_assert_uint_gt(rep.stats.pool_bytes, 0);
  ck_assert_uint_eq(rep.stats.puts, 1);
  ck_assert_uint_eq(rep.n_pools, 1); /* the host pool */
  ck_assert_str_eq(rep.pools[0].device, "host");
  ck_assert_str_eq(rep.pools[0].uuid, "");
  ck_assert_uint_eq(rep.pools[0].stats.puts, 1);
  ck_assert_uint_eq(rep.pools[0].stats.pool_bytes, rep.stats.pool_bytes);
  kvs__ops_rep_free(&rep);
  kvs__sess_free(&a);
  kvs__sess_free(&b);
  kvs__sess_free(&adm);
}
END_TEST

/* Two pools as a daemon with two GPUs has them (a second host store
 * stands in for the second GPU's: the choice and the stats are the same
 * code): a client naming GPU 1 by UUID is served by its pool, one naming
 * none by the first; admin stats sum them and list each. */
START_TEST(stats_per_pool)
{
  kvs__store *store2;
  kvs__store_opts o = {.pool_bytes = 8u << 20, .max_pending = cfg.max_pending_tokens};
  ck_assert_int_eq(kvs__store_init(&store2, &o), 0);
  kvs__devset ds;
  memset(&ds, 0, sizeof ds);
  ds.n = 2;
  ds.ordinal[0] = 0;
  ds.ordinal[1] = 1;
  ds.store[0] = store;
  ds.store[1] = store2;
  for (int i = 0; i < 16; i++) {
    ds.uuid[0][i] = (uint8_t)i;
    ds.uuid[1][i] = (uint8_t)(0xa0 + i);
  }
  env.devs = &ds;
  kvs__sess_state g1, g0, adm;
  sess(&g1, 1000, 0);
  sess(&g0, 1000, 0);
  sess(&adm, 0, 1);
  kvs__req rq = mkhello();
  rq.hello.has_gpu = 1;
  memcpy(rq.hello.gpu_uuid, ds.uuid[1], 16);
  ck_assert_int_eq(run(&g1, &rq, NULL), 0);
  ck_assert_ptr_eq(g1.store, store2);
  hello(&g0);
  ck_assert_ptr_eq(g0.store, store);
  uint32_t tok[64];
  rq = mkput(1, 0, 40, tok);
  ck_assert_int_eq(run(&g1, &rq, NULL), 0);
  rq = mkput(2, 0, 40, tok);
  ck_assert_int_eq(run(&g1, &rq, NULL), 0);
  rq = mkput(3, 0, 8, tok);
  ck_assert_int_eq(run(&g0, &rq, NULL), 0);
  kvs__rep rep;
  rq = mkreq(KVS_OP_STATS);
  ck_assert_int_eq(run(&adm, &rq, &rep), 0);
  ck_assert_uint_eq(rep.stats.puts, 3);
  ck_assert_uint_eq(rep.stats.pool_bytes, rep.pools[0].stats.pool_bytes +
                                              rep.pools[1].stats.pool_bytes);
  ck_assert_uint_eq(rep.n_pools, 2); /* the host store is GPU 0's here */
  ck_assert_str_eq(rep.pools[0].device, "cuda:0");
  ck_assert_str_eq(rep.pools[1].device, "cuda:1");
  ck_assert_str_eq(rep.pools[0].uuid, "GPU-00010203-0405-0607-0809-0a0b0c0d0e0f");
  ck_assert_str_eq(rep.pools[1].uuid, "GPU-a0a1a2a3-a4a5-a6a7-a8a9-aaabacadaeaf");
  ck_assert_uint_eq(rep.pools[0].stats.puts, 1);
  ck_assert_uint_eq(rep.pools[1].stats.puts, 2);
  ck_assert_uint_eq(rep.pools[1].stats.seqs, 2);
  ck_assert_uint_eq(rep.pools[1].stats.blocks_used, NL * (40 / cfg.group_size)); /* shared */
  /* on the wire and back */
  char *buf;
  size_t len;
  ck_assert_int_eq(kvs__encode_rep(&rep, &buf, &len), 0);
  kvs__rep back;
  memset(&back, 0, sizeof back);
  char em[KVS_MAX_ERRMSG];
  ck_assert_int_eq(kvs__decode_rep(buf + 4, len - 4, &back, em), 0);
  ck_assert_uint_eq(back.n_pools, 2);
  ck_assert_mem_eq(back.pools, rep.pools, 2 * sizeof *rep.pools);
  kvs__rep_free(&back);
  free(buf);
  kvs__ops_rep_free(&rep);
  kvs__sess_free(&g1);
  kvs__sess_free(&g0);
  kvs__sess_free(&adm);
  env.devs = NULL;
  kvs__store_close(store2);
}
END_TEST

START_TEST(shared_namespace_and_bye)
{
  cfg.shared_uids[0] = 1002;
  cfg.n_shared_uids = 1;
  kvs__sess_state st;
  sess(&st, 1002, 0);
  ck_assert_str_eq(st.ns, "shared");
  kvs__req rq = mkreq(KVS_OP_BYE);
  kvs__rep rep;
  ck_assert_int_eq(kvs__ops_run(&env, &st, &rq, &rep), KVS_OPS_CLOSE);
  kvs__sess_free(&st);
}
END_TEST

START_TEST(error_text_is_printable)
{
  kvs__rep rep;
  kvs__ops_error(&rep, KVS_OP_INVALID, 3, -EPROTO, "unknown op '%s'", "a\x01\x1b[2J\xff\xfe");
  ck_assert_int_eq(rep.err, -EPROTO);
  ck_assert_uint_eq(rep.id, 3);
  for (const char *p = rep.errmsg; *p; p++)
    ck_assert(*p >= 0x20 && *p <= 0x7e);
  ck_assert_ptr_nonnull(strstr(rep.errmsg, "unknown op 'a?"));
}
END_TEST

START_TEST(profiles_typed)
{
  kvs__profile p[2];
  memset(p, 0, sizeof p);
  strcpy(p[0].model_id, "m0");
  p[0].layer = 1;
  p[0].n_channels = 2;
  p[0].channels[0] = 5;
  p[0].channels[1] = 9;
  p[0].tau = 3.5f;
  p[0].max_sinks = 4;
  p[0].pfn = 1;
  strcpy(p[1].model_id, "test-model");
  p[1].n_channels = 1;
  p[1].outliers = -1.f;
  profiles.v = p;
  profiles.n = 2;
  kvs__sess_state adm;
  sess(&adm, 0, 1);
  kvs__req rq = mkreq(KVS_OP_PROFILES);
  kvs__rep rep;
  ck_assert_int_eq(run(&adm, &rq, &rep), 0);
  ck_assert_uint_eq(rep.n_profiles, 2);
  ck_assert_str_eq(rep.profiles[0].model_id, "m0");
  ck_assert_uint_eq(rep.profiles[0].n_channels, 2);
  ck_assert_uint_eq(rep.profiles[0].channels[1], 9);
  ck_assert_float_eq(rep.profiles[0].tau, 3.5f);
  kvs__ops_rep_free(&rep);
  /* with a profile for the model, kvsink stays kvsink */
  rq = mkhello();
  rq.hello.policy = KVS_POLICY_KVSINK;
  ck_assert_int_eq(run(&adm, &rq, &rep), 0);
  ck_assert_int_eq(rep.policy, KVS_POLICY_KVSINK);
  ck_assert_int_eq(rep.has_profile, 1);
  ck_assert_int_eq(rep.policy_fallback, 0);
  kvs__sess_free(&adm);
  profiles.v = NULL;
  profiles.n = 0;
}
END_TEST

/* table (Attend): every client offset and length checked; a unit's
 * read-only fds go out once; the layout says what the seq holds. */
START_TEST(table_checks)
{
  kvs__sess_state st;
  sess(&st, 1000, 0);
  hello(&st);
  uint32_t tok[40];
  kvs__req put = mkput(1, 0, 40, tok);
  ck_assert_int_eq(run(&st, &put, NULL), 0);
  kvs__req rq = mkreq(KVS_OP_TABLE);
  rq.seq = 9;
  rq.layer_begin = 0;
  rq.layer_end = NL;
  rq.k_off = 0;
  rq.n_tokens = 64u << 10;
  ck_assert_int_eq(run(&st, &rq, NULL), -ENOENT);
  rq.seq = 1;
  rq.layer_end = NL + 1;
  ck_assert_int_eq(run(&st, &rq, NULL), -EINVAL);
  rq.layer_end = NL;
  rq.k_off = 4; /* not 8-aligned */
  ck_assert_int_eq(run(&st, &rq, NULL), KVS_ESEGMENT);
  rq.k_off = st.seg.size - 64; /* runs past the end */
  ck_assert_int_eq(run(&st, &rq, NULL), KVS_ESEGMENT);
  rq.k_off = 0;
  rq.n_tokens = 64; /* room too small */
  ck_assert_int_eq(run(&st, &rq, NULL), -ENOBUFS);
  ck_assert_uint_eq(st.n_tbl_fds, 0);
  rq.n_tokens = 64u << 10;
  kvs__rep rep;
  ck_assert_int_eq(kvs__ops_run(&env, &st, &rq, &rep), KVS_OPS_REPLY_FDS);
  ck_assert_int_eq(rep.err, 0);
  ck_assert_uint_ge(st.n_tbl_fds, 1);
  ck_assert_uint_eq(rep.table_fds, st.n_tbl_fds);
  for (uint32_t i = 0; i < st.n_tbl_fds; i++)
    ck_assert_int_eq(fcntl(st.tbl_fds[i], F_GETFL) & O_ACCMODE, O_RDONLY);
  kvs__tbl_hdr h;
  memcpy(&h, st.seg.base, sizeof h);
  ck_assert_uint_eq(h.magic, KVS_TABLE_MAGIC);
  ck_assert_uint_eq(h.n_layers, NL);
  ck_assert_uint_eq(h.bytes, rep.table_bytes);
  ck_assert_uint_eq(h.channels, C);
  kvs__tbl_layer L;
  memcpy(&L, st.seg.base + sizeof h + h.n_units * sizeof(kvs__tbl_unit), sizeof L);
  ck_assert_uint_eq(L.n_blocks, 1);
  ck_assert_uint_eq(L.n_res, 8);
  kvs__ops_table_drop_fds(&st);
  kvs__ops_rep_free(&rep);
  /* the same units again: no fds, has_fd 0 */
  ck_assert_int_eq(kvs__ops_run(&env, &st, &rq, &rep), KVS_OPS_REPLY);
  ck_assert_int_eq(rep.err, 0);
  ck_assert_uint_eq(st.n_tbl_fds, 0);
  kvs__tbl_unit u;
  memcpy(&u, st.seg.base + sizeof h, sizeof u);
  ck_assert_uint_eq(u.has_fd, 0);
  kvs__ops_rep_free(&rep);
  kvs__sess_free(&st);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("ops");
  TCase *tc = tcase_create("ops");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, data_ops_need_hello);
  tcase_add_test(tc, hello_validation);
  tcase_add_test(tc, hello_success_and_twice);
  tcase_add_test(tc, put_validation);
  tcase_add_test(tc, put_get_roundtrip);
  tcase_add_test(tc, lookup_bind_and_seq_cap);
  tcase_add_test(tc, admin_ops_refused_for_data_clients);
  tcase_add_test(tc, list_and_stats_by_namespace);
  tcase_add_test(tc, shared_namespace_and_bye);
  tcase_add_test(tc, error_text_is_printable);
  tcase_add_test(tc, profiles_typed);
  tcase_add_test(tc, table_checks);
  tcase_add_test(tc, stats_per_pool);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int nf = srunner_ntests_failed(sr);
  srunner_free(sr);
  return nf ? 1 : 0;
}
