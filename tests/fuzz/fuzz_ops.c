/* SPDX-License-Identifier: MIT */
/* libFuzzer target for the daemon's request layer (daemon/ops.c): each
 * input is one session against a fresh real store, with a real memfd
 * segment. Input: one flags byte, then frames as on the wire (4-byte
 * big-endian length + payload), each decoded by kvs__decode_req and, when
 * it decodes, run by kvs__ops_run; what the decoder refuses is answered
 * with kvs__ops_error as the session does.
 *   flags bit 0: a valid hello first (model "m" 2x2x8, 64 KiB segment)
 *         bits 1-2: its policy (default, none, pfn, kvsink)
 *         bit 3: an admin session; bit 4: in the shared namespace
 * After the hello the segment holds finite fp16/float data with one NaN,
 * so puts reach the store. Checked on every reply: an error code with a
 * printable message, a reply that encodes; at the end, with the session
 * freed: no sequence and no pinned block left in the store. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/log.h"
#include "daemon/ops.h"
#include "proto/proto.h"

#define SEG 65536u

static kvs__config cfg;
static kvs__profile prof[2];
static kvs__profiles profiles = {prof, 2};
static kvs__metrics metrics;
static kvs__sess_state *live;
static uint16_t pattern[SEG / 2]; /* what a hello's segment holds (fill_segment) */

static void fake_stats(void *arg, kvs__stats *st)
{
  (void)arg;
  st->sessions = 1;
  strcpy(st->backend, "host");
}

static int fake_reload(void *arg, char *errmsg)
{
  (void)arg;
  errmsg[0] = 0;
  return 0;
}

static void one_session(void *arg, kvs__sess_cb cb, void *cb_arg)
{
  (void)arg;
  if (live) cb(live, cb_arg);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc;
  (void)argv;
  kvs__config_defaults(&cfg);
  kvs__log_set_level(KVS_LOG_ERR); /* a line per hello would be most of the time */
  cfg.max_segment_size = 1u << 20; /* a hello may ask for any size: keep each run small */
  for (uint32_t i = 0; i < SEG / 2; i++) pattern[i] = (uint16_t)(0x3c00u | ((i * 0x9e37u) & 0x3ffu));
  pattern[SEG / 2 - 8] = 0x7e00;
  cfg.shared_uids[0] = 77;
  cfg.n_shared_uids = 1;
  const char *ids[2] = {"m", "tiny"};
  for (int i = 0; i < 2; i++) {
    memset(&prof[i], 0, sizeof prof[i]);
    strcpy(prof[i].model_id, ids[i]);
    prof[i].layer = 1;
    prof[i].n_channels = 2;
    prof[i].channels[0] = 0;
    prof[i].channels[1] = 1;
    prof[i].tau = 1.5f;
    prof[i].max_sinks = 4;
    prof[i].pfn = 1;
    prof[i].outliers = -1.f;
  }
  return 0;
}

static void check_reply(const kvs__rep *rep, int act)
{
  if (act != KVS_OPS_REPLY && act != KVS_OPS_REPLY_FD && act != KVS_OPS_CLOSE) abort();
  if (rep->err > 0) abort();
  if (rep->err < 0 && !rep->errmsg[0] && rep->op != KVS_OP_RELOAD) abort();
  for (const char *p = rep->errmsg; *p; p++)
    if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e) abort();
  char *out;
  size_t len;
  if (kvs__encode_rep(rep, &out, &len) != 0) abort();
  free(out);
}

/* The first SEG bytes (the rest stays zero): finite fp16 (1..2), finite
 * also read as float32, and one NaN near the end. Made once, copied. */
static void fill_segment(kvs__segment *seg)
{
  memcpy(seg->base, pattern, seg->size < SEG ? seg->size : SEG);
}

static int run(const kvs__ops_env *env, kvs__sess_state *st, const kvs__req *rq)
{
  kvs__rep rep;
  int act = kvs__ops_run(env, st, rq, &rep);
  check_reply(&rep, act);
  if (act == KVS_OPS_REPLY_FD) {
    if (rep.err || st->seg.fd < 0 || st->seg.size == 0) abort();
    fill_segment(&st->seg);
  }
  kvs__ops_rep_free(&rep);
  return act;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size < 1) return 0;
  uint8_t flags = data[0];
  data++;
  size--;

  kvs__store *store;
  kvs__store_opts o = {.pool_bytes = 1u << 20, .chunk_bytes = 64u << 10, .max_pending = 256};
  memset(o.hash_key, 0x5a, sizeof o.hash_key); /* fixed: runs repeat */
  if (kvs__store_init(&store, &o) < 0) abort();
  kvs__ops_env env = {.store = store, .cfg = &cfg, .profiles = &profiles,
                      .server_stats = fake_stats, .reload = fake_reload,
                      .foreach_session = one_session, .metrics = &metrics};
  kvs__sess_state st;
  kvs__sess_init(&st, &cfg, 1, (flags & 16) ? 77 : 1000, 4242, (flags & 8) != 0);
  live = &st;

  if (flags & 1) {
    kvs__req h;
    memset(&h, 0, sizeof h);
    h.op = KVS_OP_HELLO;
    h.id = 1;
    h.hello.version = KVS_PROTO_VERSION;
    strcpy(h.hello.model_id, "m");
    h.hello.n_layers = 2;
    h.hello.n_kv_heads = 2;
    h.hello.head_dim = 8;
    h.hello.dtype = KVS_DTYPE_F16;
    h.hello.seg_size = SEG;
    static const int32_t pol[4] = {KVS_POLICY_DEFAULT, KVS_POLICY_NONE, KVS_POLICY_PFN,
                                   KVS_POLICY_KVSINK};
    h.hello.policy = pol[(flags >> 1) & 3];
    h.hello.pfn = -1;
    h.hello.outliers = -1;
    if (run(&env, &st, &h) != KVS_OPS_REPLY_FD) abort();
  }

  /* the frames, as the session cuts them */
  while (size >= 4) {
    uint32_t len = kvs__frame_get_len(data);
    data += 4;
    size -= 4;
    if (len > size || len > KVS_MAX_FRAME) break; /* a partial frame: the session waits */
    kvs__req rq;
    memset(&rq, 0, sizeof rq);
    char msg[KVS_MAX_ERRMSG] = "";
    int r = kvs__decode_req((const char *)data, len, &rq, msg);
    data += len;
    size -= len;
    if (r < 0) { /* as daemon/session.c: answer; a malformed frame ends the session */
      kvs__rep rep;
      kvs__ops_error(&rep, r == -EBADMSG ? KVS_OP_INVALID : rq.op, rq.id, r, "%s",
                     msg[0] ? msg : kvs_strerror(r));
      check_reply(&rep, KVS_OPS_REPLY);
      kvs__ops_rep_free(&rep);
      kvs__req_free(&rq);
      if (r == -EBADMSG) break;
      continue;
    }
    int act = run(&env, &st, &rq);
    kvs__req_free(&rq);
    if (act == KVS_OPS_CLOSE) break;
  }

  live = NULL;
  kvs__sess_free(&st);
  kvs__store_stats ss;
  kvs__store_stats_get(store, &ss);
  if (ss.seqs != 0 || ss.blocks_pinned != 0) abort(); /* the session's references went */
  if (ss.pool_used_bytes > ss.pool_bytes) abort();
  kvs__store_close(store);
  return 0;
}
