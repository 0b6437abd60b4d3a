/* SPDX-License-Identifier: MIT */
/* Request and reply decoders. The payload is first walked without
 * allocating (scan.c), then unpacked by msgpack-c; every field is checked
 * for type and range before anything is copied or allocated. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "proto/proto.h"
#include "proto/internal.h"
#include "proto/blocktable.h"

__attribute__((format(printf, 3, 4)))
static int fail(char *errmsg, int code, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(errmsg, KVS_MAX_ERRMSG, fmt, ap);
  va_end(ap);
  return code;
}

static int parse_top(const char *buf, size_t len, msgpack_unpacked *u, char *errmsg)
{
  const uint8_t *p = (const uint8_t *)buf;
  size_t pos = 0, off = 0;

  if (!buf || len == 0)
    return fail(errmsg, -EBADMSG, "empty payload");
  if (len > KVS_MAX_FRAME)
    return fail(errmsg, -E2BIG, "payload of %zu bytes over the %u byte limit",
                len, KVS_MAX_FRAME);
  if (!((p[0] >= 0x80 && p[0] <= 0x8f) || p[0] == 0xde || p[0] == 0xdf))
    return fail(errmsg, -EBADMSG, "top level is not a map");
  if (kvs__mp_skip(p, len, &pos, 0) < 0)
    return fail(errmsg, -EBADMSG, "malformed msgpack");
  if (pos != len)
    return fail(errmsg, -EBADMSG, "%zu trailing bytes after the map", len - pos);
  msgpack_unpacked_init(u);
  int r = msgpack_unpack_next(u, buf, len, &off);
  if (r == MSGPACK_UNPACK_NOMEM_ERROR) {
    msgpack_unpacked_destroy(u);
    return fail(errmsg, -ENOMEM, "out of memory unpacking");
  }
  if (r != MSGPACK_UNPACK_SUCCESS || off != len || u->data.type != MSGPACK_OBJECT_MAP) {
    msgpack_unpacked_destroy(u);
    return fail(errmsg, -EBADMSG, "malformed msgpack");
  }
  return 0;
}

/* Sort the map's values into slots by key name. Unknown keys are ignored
 * (forward compatibility); non-string and duplicate keys are errors. All
 * keys are looked at even after an error so the caller can still read id. */
static int collect(const msgpack_object_map *m, const char *const *names, int nn,
                   const msgpack_object **slots, const char *where, char *errmsg)
{
  int err = 0;
  for (int i = 0; i < nn; i++)
    slots[i] = NULL;
  for (uint32_t k = 0; k < m->size; k++) {
    const msgpack_object *key = &m->ptr[k].key;
    if (key->type != MSGPACK_OBJECT_STR) {
      if (!err)
        err = fail(errmsg, -EBADMSG, "%skey %u is not a string", where, k);
      continue;
    }
    for (int i = 0; i < nn; i++) {
      if (strlen(names[i]) != key->via.str.size ||
          memcmp(names[i], key->via.str.ptr, key->via.str.size) != 0)
        continue;
      if (slots[i] && !err)
        err = fail(errmsg, -EBADMSG, "duplicate key %s%s", where, names[i]);
      slots[i] = &m->ptr[k].val;
      break;
    }
  }
  return err;
}

static int missing(const char *where, const char *name, char *errmsg)
{
  return fail(errmsg, -EPROTO, "missing field %s%s", where, name);
}

static int get_uint(const msgpack_object *o, const char *name, uint64_t max,
                    uint64_t *out, char *errmsg)
{
  if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
    return fail(errmsg, -EINVAL, "%s must not be negative", name);
  if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
    return fail(errmsg, -EBADMSG, "%s must be an unsigned integer", name);
  if (o->via.u64 > max)
    return fail(errmsg, -EINVAL, "%s = %llu over its limit %llu", name,
                (unsigned long long)o->via.u64, (unsigned long long)max);
  *out = o->via.u64;
  return 0;
}

static int get_u32(const msgpack_object *o, const char *name, uint32_t *out, char *errmsg)
{
  uint64_t v = 0;
  int r = get_uint(o, name, UINT32_MAX, &v, errmsg);
  if (r == 0)
    *out = (uint32_t)v;
  return r;
}

static int get_i32(const msgpack_object *o, const char *name, int32_t *out, char *errmsg)
{
  if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
    if (o->via.u64 > INT32_MAX)
      return fail(errmsg, -EINVAL, "%s out of range", name);
    *out = (int32_t)o->via.u64;
    return 0;
  }
  if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
    if (o->via.i64 < INT32_MIN)
      return fail(errmsg, -EINVAL, "%s out of range", name);
    *out = (int32_t)o->via.i64;
    return 0;
  }
  return fail(errmsg, -EBADMSG, "%s must be an integer", name);
}

static int get_float(const msgpack_object *o, const char *name, float *out, char *errmsg)
{
  double d;
  if (o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64)
    d = o->via.f64;
  else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
    d = (double)o->via.u64;
  else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
    d = (double)o->via.i64;
  else
    return fail(errmsg, -EBADMSG, "%s must be a number", name);
  if (!isfinite(d) || fabs(d) > 1e30)
    return fail(errmsg, -EINVAL, "%s must be a finite number", name);
  *out = (float)d;
  return 0;
}

static int get_bool(const msgpack_object *o, const char *name, int *out, char *errmsg)
{
  if (o->type != MSGPACK_OBJECT_BOOLEAN)
    return fail(errmsg, -EBADMSG, "%s must be a boolean", name);
  *out = o->via.boolean ? 1 : 0;
  return 0;
}

static int get_str(const msgpack_object *o, const char *name, const char **s,
                   uint32_t *n, char *errmsg)
{
  if (o->type != MSGPACK_OBJECT_STR)
    return fail(errmsg, -EBADMSG, "%s must be a string", name);
  *s = o->via.str.ptr;
  *n = o->via.str.size;
  return 0;
}

/* Check an array of uint32 (at most maxn, else -E2BIG) before copying it
 * into dst (fixed room) or a fresh allocation (*heap). */
static int get_u32_array(const msgpack_object *o, const char *name, uint32_t maxn,
                         uint32_t *dst, uint32_t **heap, uint32_t *n, char *errmsg)
{
  if (o->type != MSGPACK_OBJECT_ARRAY)
    return fail(errmsg, -EBADMSG, "%s must be an array", name);
  const msgpack_object_array *a = &o->via.array;
  if (a->size > maxn)
    return fail(errmsg, -E2BIG, "%s has %u entries, limit %u", name, a->size, maxn);
  for (uint32_t i = 0; i < a->size; i++) {
    uint32_t v;
    int r = get_u32(&a->ptr[i], name, &v, errmsg);
    if (r < 0)
      return r;
  }
  if (heap && a->size) {
    dst = malloc(a->size * sizeof(*dst));
    if (!dst)
      return fail(errmsg, -ENOMEM, "out of memory for %s", name);
    *heap = dst;
  }
  for (uint32_t i = 0; i < a->size; i++)
    dst[i] = (uint32_t)a->ptr[i].via.u64;
  *n = a->size;
  return 0;
}

/* Token ids: a bin of 4n bytes, uint32 little-endian (version 2: one copy
 * instead of n msgpack objects, 16 us less for 1,024 ids), or an array of
 * uint (version 1). A copy on the heap in *heap. */
static int get_tokens(const msgpack_object *o, uint32_t maxn, uint32_t **heap, uint32_t *n,
                      char *errmsg)
{
  if (o->type != MSGPACK_OBJECT_BIN)
    return get_u32_array(o, "tokens", maxn, NULL, heap, n, errmsg);
  const uint32_t size = o->via.bin.size;
  if (size % 4)
    return fail(errmsg, -EBADMSG, "tokens: a bin of %u bytes, not whole uint32s", size);
  if (size / 4 > maxn)
    return fail(errmsg, -E2BIG, "tokens has %u entries, limit %u", size / 4, maxn);
  *n = size / 4;
  if (!size)
    return 0;
  uint32_t *dst = malloc(size);
  if (!dst)
    return fail(errmsg, -ENOMEM, "out of memory for tokens");
  const uint8_t *p = (const uint8_t *)o->via.bin.ptr;
  for (uint32_t i = 0; i < *n; i++, p += 4)
    dst[i] = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
  *heap = dst;
  return 0;
}

static int get_layers(const msgpack_object *o, uint32_t *b, uint32_t *e, char *errmsg)
{
  uint64_t lb = 0, le = 0;
  if (o->type != MSGPACK_OBJECT_ARRAY)
    return fail(errmsg, -EBADMSG, "layers must be an array [begin, end]");
  if (o->via.array.size != 2)
    return fail(errmsg, -EINVAL, "layers must be [begin, end], got %u entries",
                o->via.array.size);
  int r = get_uint(&o->via.array.ptr[0], "layers[0]", KVS_MAX_LAYERS, &lb, errmsg);
  if (r == 0)
    r = get_uint(&o->via.array.ptr[1], "layers[1]", KVS_MAX_LAYERS, &le, errmsg);
  if (r < 0)
    return r == -EBADMSG ? r : -EINVAL;
  if (lb > le)
    return fail(errmsg, -EINVAL, "layers [%llu, %llu): begin after end",
                (unsigned long long)lb, (unsigned long long)le);
  *b = (uint32_t)lb;
  *e = (uint32_t)le;
  return 0;
}

/* ---- requests ---- */

enum {
  RK_OP, RK_ID, RK_VERSION, RK_MODEL, RK_SEG_SIZE, RK_K_BITS, RK_V_BITS,
  RK_POLICY, RK_PFN, RK_OUTLIERS, RK_PID, RK_SEQ, RK_START, RK_TOKENS,
  RK_LAYERS, RK_K_OFF, RK_V_OFF, RK_ACT_OFF, RK_ACT_CHANNELS, RK_BIND, RK_N,
  RK_GPU, RK_DEV_SEG_SIZE, RK_DEV, RK_SALT, RK_FAST,
  RK__COUNT
};
static const char *const req_keys[RK__COUNT] = {
  "op", "id", "version", "model", "seg_size", "k_bits", "v_bits",
  "policy", "pfn", "outliers", "pid", "seq", "start", "tokens",
  "layers", "k_off", "v_off", "act_off", "act_channels", "bind", "n",
  "gpu", "dev_seg_size", "dev", "salt", "fast",
};

enum { MK_ID, MK_LAYERS, MK_KV_HEADS, MK_HEAD_DIM, MK_DTYPE, MK__COUNT };
static const char *const model_keys[MK__COUNT] = {
  "id", "layers", "kv_heads", "head_dim", "dtype",
};

static int dim(const msgpack_object *o, const char *name, uint32_t max,
               uint32_t *out, char *errmsg)
{
  uint64_t v = 0;
  int r = get_uint(o, name, max, &v, errmsg);
  if (r < 0)
    return r;
  if (v == 0)
    return fail(errmsg, -EINVAL, "%s must not be 0", name);
  *out = (uint32_t)v;
  return 0;
}

static int decode_model(const msgpack_object *o, kvs__hello *h, char *errmsg)
{
  const msgpack_object *s[MK__COUNT];
  const char *str = NULL;
  uint32_t n = 0;
  int r;

  if (o->type != MSGPACK_OBJECT_MAP)
    return fail(errmsg, -EBADMSG, "model must be a map");
  if ((r = collect(&o->via.map, model_keys, MK__COUNT, s, "model.", errmsg)) < 0)
    return r;
  for (int i = 0; i < MK__COUNT; i++)
    if (!s[i])
      return missing("model.", model_keys[i], errmsg);
  if ((r = get_str(s[MK_ID], "model.id", &str, &n, errmsg)) < 0)
    return r;
  if (n > KVS_MAX_MODEL_ID)
    return fail(errmsg, -E2BIG, "model.id of %u bytes, limit %u", n, KVS_MAX_MODEL_ID);
  if (n == 0 || memchr(str, '\0', n))
    return fail(errmsg, -EINVAL, "model.id must be a non-empty string without NUL");
  memcpy(h->model_id, str, n);
  h->model_id[n] = '\0';
  if ((r = dim(s[MK_LAYERS], "model.layers", KVS_MAX_LAYERS, &h->n_layers, errmsg)) < 0 ||
      (r = dim(s[MK_KV_HEADS], "model.kv_heads", KVS_MAX_KV_HEADS, &h->n_kv_heads, errmsg)) < 0 ||
      (r = dim(s[MK_HEAD_DIM], "model.head_dim", KVS_MAX_HEAD_DIM, &h->head_dim, errmsg)) < 0)
    return r == -EBADMSG ? r : -EINVAL;
  if ((r = get_str(s[MK_DTYPE], "model.dtype", &str, &n, errmsg)) < 0)
    return r;
  if (n == 4 && memcmp(str, "fp16", 4) == 0)
    h->dtype = KVS_DTYPE_F16;
  else if (n == 4 && memcmp(str, "bf16", 4) == 0)
    h->dtype = KVS_DTYPE_BF16;
  else
    return fail(errmsg, -EINVAL, "model.dtype must be \"fp16\" or \"bf16\"");
  return 0;
}

static int bits(const msgpack_object *o, const char *name, int32_t *out, char *errmsg)
{
  int32_t v = 0;
  int r = get_i32(o, name, &v, errmsg);
  if (r < 0)
    return r;
  if (v <= 0)
    v = 0; /* daemon default */
  else if (v != 2 && v != 3 && v != 4 && v != 8 && v != 16)
    return fail(errmsg, -EINVAL, "%s = %d: must be 2, 3, 4, 8 or 16", name, (int)v);
  *out = v;
  return 0;
}

static int policy(const msgpack_object *o, int32_t *out, char *errmsg)
{
  const char *s = NULL;
  uint32_t n = 0;
  int r = get_str(o, "policy", &s, &n, errmsg);
  if (r < 0)
    return r;
  int p = kvs__policy_from_name(s, n);
  if (p < 0)
    return fail(errmsg, -EINVAL, "policy must be default, none, pfn or kvsink");
  *out = p;
  return 0;
}

static int decode_hello(const msgpack_object **s, kvs__hello *h, char *errmsg)
{
  uint64_t v = 0;
  int r;

  if (!s[RK_VERSION]) return missing("", "version", errmsg);
  /* any version decodes: the daemon answers a foreign one with KVS_EVERSION.
   * The rest of a foreign hello may be laid out differently, so it is not
   * looked at: the peer gets the clear version error, not a field error. */
  if ((r = get_u32(s[RK_VERSION], "version", &h->version, errmsg)) < 0)
    return r;
  if (h->version < KVS_PROTO_VERSION_MIN || h->version > KVS_PROTO_VERSION)
    return 0;
  if (!s[RK_MODEL]) return missing("", "model", errmsg);
  if (!s[RK_SEG_SIZE]) return missing("", "seg_size", errmsg);
  if ((r = decode_model(s[RK_MODEL], h, errmsg)) < 0)
    return r;
  if ((r = get_uint(s[RK_SEG_SIZE], "seg_size", UINT64_MAX, &v, errmsg)) < 0)
    return r;
  h->seg_size = v;
  if (s[RK_K_BITS] && (r = bits(s[RK_K_BITS], "k_bits", &h->k_bits, errmsg)) < 0)
    return r;
  if (s[RK_V_BITS] && (r = bits(s[RK_V_BITS], "v_bits", &h->v_bits, errmsg)) < 0)
    return r;
  if (s[RK_POLICY] && (r = policy(s[RK_POLICY], &h->policy, errmsg)) < 0)
    return r;
  if (s[RK_PFN]) {
    if ((r = get_i32(s[RK_PFN], "pfn", &h->pfn, errmsg)) < 0)
      return r;
    if (h->pfn < 0)
      h->pfn = -1;
  }
  if (s[RK_OUTLIERS]) {
    if ((r = get_float(s[RK_OUTLIERS], "outliers", &h->outliers, errmsg)) < 0)
      return r;
    if (h->outliers < 0)
      h->outliers = -1.0f;
    else if (h->outliers > 1.0f)
      return fail(errmsg, -EINVAL, "outliers is a fraction, at most 1");
  }
  if (s[RK_PID] && (r = get_u32(s[RK_PID], "pid", &h->client_pid, errmsg)) < 0)
    return r;
  if (s[RK_GPU]) {
    if (s[RK_GPU]->type != MSGPACK_OBJECT_BIN || s[RK_GPU]->via.bin.size != 16)
      return fail(errmsg, -EBADMSG, "gpu must be a 16-byte bin (the device UUID)");
    memcpy(h->gpu_uuid, s[RK_GPU]->via.bin.ptr, 16);
    h->has_gpu = 1;
    if (s[RK_DEV_SEG_SIZE] &&
        (r = get_uint(s[RK_DEV_SEG_SIZE], "dev_seg_size", UINT64_MAX, &h->dev_seg_size, errmsg)) < 0)
      return r;
  }
  if (s[RK_FAST] && (r = get_bool(s[RK_FAST], "fast", &h->fast, errmsg)) < 0)
    return r;
  if (s[RK_SALT]) {
    /* bytes; a str is taken as its bytes (cache_salt strings) */
    const msgpack_object *o = s[RK_SALT];
    if (o->type != MSGPACK_OBJECT_BIN && o->type != MSGPACK_OBJECT_STR)
      return fail(errmsg, -EBADMSG, "salt must be bytes (bin or str)");
    uint32_t n = o->type == MSGPACK_OBJECT_BIN ? o->via.bin.size : o->via.str.size;
    if (n > KVS_MAX_SALT)
      return fail(errmsg, -E2BIG, "salt of %u bytes, limit %u", n, KVS_MAX_SALT);
    memcpy(h->salt, o->type == MSGPACK_OBJECT_BIN ? o->via.bin.ptr : o->via.str.ptr, n);
    h->salt_len = n;
  }
  return 0;
}

static int span(uint32_t start, uint32_t n, char *errmsg)
{
  if ((uint64_t)start + n > UINT32_MAX)
    return fail(errmsg, -EINVAL, "start + count past the largest position");
  return 0;
}

static int decode_op(const msgpack_object **s, kvs__req *req, char *errmsg)
{
  int r;

  switch (req->op) {
  case KVS_OP_HELLO:
    return decode_hello(s, &req->hello, errmsg);
  case KVS_OP_PUT: {
    static const int need[] = { RK_SEQ, RK_START, RK_TOKENS, RK_LAYERS, RK_K_OFF, RK_V_OFF };
    for (size_t i = 0; i < sizeof(need) / sizeof(need[0]); i++)
      if (!s[need[i]])
        return missing("", req_keys[need[i]], errmsg);
    if ((r = get_uint(s[RK_SEQ], "seq", UINT64_MAX, &req->seq, errmsg)) < 0 ||
        (r = get_u32(s[RK_START], "start", &req->start, errmsg)) < 0 ||
        (r = get_layers(s[RK_LAYERS], &req->layer_begin, &req->layer_end, errmsg)) < 0 ||
        (r = get_uint(s[RK_K_OFF], "k_off", UINT64_MAX, &req->k_off, errmsg)) < 0 ||
        (r = get_uint(s[RK_V_OFF], "v_off", UINT64_MAX, &req->v_off, errmsg)) < 0)
      return r;
    if (s[RK_ACT_CHANNELS]) {
      uint64_t c = 0;
      if ((r = get_uint(s[RK_ACT_CHANNELS], "act_channels", UINT32_MAX, &c, errmsg)) < 0)
        return r;
      if (c > KVS_MAX_ACT_CHANNELS)
        return fail(errmsg, -E2BIG, "act_channels = %llu, limit %u",
                    (unsigned long long)c, KVS_MAX_ACT_CHANNELS);
      req->act_channels = (uint32_t)c;
      req->has_act = c > 0;
    }
    if (req->has_act) {
      if (!s[RK_ACT_OFF])
        return fail(errmsg, -EPROTO, "missing field act_off (act_channels > 0)");
      if ((r = get_uint(s[RK_ACT_OFF], "act_off", UINT64_MAX, &req->act_off, errmsg)) < 0)
        return r;
    }
    if (s[RK_DEV] && (r = get_bool(s[RK_DEV], "dev", &req->dev, errmsg)) < 0)
      return r;
    if ((r = get_tokens(s[RK_TOKENS], KVS_MAX_TOKENS_PER_PUT, &req->tokens, &req->n_tokens,
                        errmsg)) < 0)
      return r;
    return span(req->start, req->n_tokens, errmsg);
  }
  case KVS_OP_LOOKUP:
    if (!s[RK_TOKENS])
      return missing("", "tokens", errmsg);
    if (s[RK_BIND] && (r = get_bool(s[RK_BIND], "bind", &req->bind, errmsg)) < 0)
      return r;
    if (s[RK_SEQ]) {
      if ((r = get_uint(s[RK_SEQ], "seq", UINT64_MAX, &req->seq, errmsg)) < 0)
        return r;
    } else if (req->bind) {
      return fail(errmsg, -EPROTO, "missing field seq (bind is set)");
    }
    return get_tokens(s[RK_TOKENS], KVS_MAX_TOKENS_PER_PUT, &req->tokens, &req->n_tokens, errmsg);
  case KVS_OP_GET: {
    static const int need[] = { RK_SEQ, RK_START, RK_N, RK_LAYERS, RK_K_OFF, RK_V_OFF };
    for (size_t i = 0; i < sizeof(need) / sizeof(need[0]); i++)
      if (!s[need[i]])
        return missing("", req_keys[need[i]], errmsg);
    if ((r = get_uint(s[RK_SEQ], "seq", UINT64_MAX, &req->seq, errmsg)) < 0 ||
        (r = get_u32(s[RK_START], "start", &req->start, errmsg)) < 0 ||
        (r = get_u32(s[RK_N], "n", &req->n_tokens, errmsg)) < 0 ||
        (r = get_layers(s[RK_LAYERS], &req->layer_begin, &req->layer_end, errmsg)) < 0 ||
        (r = get_uint(s[RK_K_OFF], "k_off", UINT64_MAX, &req->k_off, errmsg)) < 0 ||
        (r = get_uint(s[RK_V_OFF], "v_off", UINT64_MAX, &req->v_off, errmsg)) < 0)
      return r;
    if (s[RK_DEV] && (r = get_bool(s[RK_DEV], "dev", &req->dev, errmsg)) < 0)
      return r;
    return span(req->start, req->n_tokens, errmsg);
  }
  case KVS_OP_TABLE: {
    static const int need[] = { RK_SEQ, RK_LAYERS, RK_K_OFF, RK_N };
    for (size_t i = 0; i < sizeof(need) / sizeof(need[0]); i++)
      if (!s[need[i]])
        return missing("", req_keys[need[i]], errmsg);
    if ((r = get_uint(s[RK_SEQ], "seq", UINT64_MAX, &req->seq, errmsg)) < 0 ||
        (r = get_layers(s[RK_LAYERS], &req->layer_begin, &req->layer_end, errmsg)) < 0 ||
        (r = get_uint(s[RK_K_OFF], "k_off", UINT64_MAX, &req->k_off, errmsg)) < 0)
      return r;
    return get_u32(s[RK_N], "n", &req->n_tokens, errmsg);
  }
  case KVS_OP_RELEASE:
    if (!s[RK_SEQ])
      return missing("", "seq", errmsg);
    return get_uint(s[RK_SEQ], "seq", UINT64_MAX, &req->seq, errmsg);
  default: /* stats, bye, list, evict, reload, profiles, ping: op and id only */
    return 0;
  }
}

int kvs__decode_req(const char *buf, size_t len, kvs__req *req, char *errmsg)
{
  char tmp[KVS_MAX_ERRMSG];
  const msgpack_object *s[RK__COUNT];
  msgpack_unpacked u;
  int r;

  if (!errmsg)
    errmsg = tmp;
  errmsg[0] = '\0';
  memset(req, 0, sizeof(*req));
  req->hello.pfn = -1;
  req->hello.outliers = -1.0f;
  if ((r = parse_top(buf, len, &u, errmsg)) < 0)
    return r;

  int cerr = collect(&u.data.via.map, req_keys, RK__COUNT, s, "", errmsg);
  /* id first, so that even a rejected request gets an answer it can match */
  if (s[RK_ID]) {
    char idmsg[KVS_MAX_ERRMSG];
    uint64_t id = 0;
    r = get_uint(s[RK_ID], "id", UINT64_MAX, &id, idmsg);
    if (r == 0)
      req->id = id;
    else if (cerr == 0)
      cerr = fail(errmsg, r, "%s", idmsg);
  } else if (cerr == 0) {
    cerr = missing("", "id", errmsg);
  }
  if ((r = cerr) < 0)
    goto out;
  if (!s[RK_OP]) {
    r = missing("", "op", errmsg);
    goto out;
  }
  if (s[RK_OP]->type != MSGPACK_OBJECT_STR) {
    r = fail(errmsg, -EBADMSG, "op must be a string");
    goto out;
  }
  req->op = kvs__op_from_name(s[RK_OP]->via.str.ptr, s[RK_OP]->via.str.size);
  if (req->op == KVS_OP_INVALID) {
    /* the name is the peer's bytes: printable ASCII as is, the rest as
     * \xHH, so replies and logs never carry control bytes or bad UTF-8 */
    char name[32 * 4 + 1];
    uint32_t n = s[RK_OP]->via.str.size, o = 0;
    const unsigned char *p = (const unsigned char *)s[RK_OP]->via.str.ptr;
    for (uint32_t i = 0; i < n && i < 32; i++) {
      if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '"' && p[i] != '\\')
        name[o++] = (char)p[i];
      else
        o += (uint32_t)snprintf(name + o, sizeof(name) - o, "\\x%02x", p[i]);
    }
    name[o] = '\0';
    r = fail(errmsg, -EPROTO, "unknown op \"%s\"%s", name, n > 32 ? "..." : "");
    goto out;
  }
  r = decode_op(s, req, errmsg);
out:
  msgpack_unpacked_destroy(&u);
  if (r < 0)
    kvs__req_free(req);
  return r;
}

void kvs__req_free(kvs__req *req)
{
  if (!req)
    return;
  free(req->tokens);
  req->tokens = NULL;
  req->n_tokens = 0;
}

/* ---- replies ---- */

enum {
  PK_ID, PK_ERR, PK_SESSION, PK_SEG_SIZE, PK_GROUP, PK_K_BITS, PK_V_BITS,
  PK_POLICY, PK_PFN, PK_OUTLIERS, PK_PROFILE, PK_SINK_LAYER, PK_SINK_CHANNELS,
  PK_QUANTIZED, PK_SINKS, PK_SEQ_LEN, PK_CACHED, PK_STATS, PK_SPACES, PK_PROFILES,
  PK_EVICTED, PK_FALLBACK, PK_V_GROUP, PK_SEG_KIND, PK_DEV_SEG_SIZE, PK_TEXT,
  PK_TABLE_BYTES, PK_FDS, PK_MORE, PK_POOLS, PK_CHUNKS, PK_GPU, PK_FAST_OFF, PK__COUNT
};
static const char *const rep_keys[PK__COUNT] = {
  "id", "err", "session", "seg_size", "group", "k_bits", "v_bits",
  "policy", "pfn", "outliers", "profile", "sink_layer", "sink_channels",
  "quantized", "sinks", "seq_len", "cached", "stats", "spaces", "profiles",
  "evicted", "fallback", "v_group", "seg_kind", "dev_seg_size", "text",
  "table_bytes", "fds", "more", "pools", "chunks", "gpu", "fast_off",
};

enum {
#define X(f) SK_##f,
  KVS__STATS_U64(X)
#undef X
  SK_spaces, SK_backend, SK__COUNT
};
static const char *const stats_keys[SK__COUNT] = {
#define X(f) #f,
  KVS__STATS_U64(X)
#undef X
  "spaces", "backend",
};


static int decode_stats(const msgpack_object *o, kvs__stats *st, char *errmsg)
{
  const msgpack_object *s[SK__COUNT];
  int r;

  if (o->type != MSGPACK_OBJECT_MAP)
    return fail(errmsg, -EBADMSG, "stats must be a map");
  if ((r = collect(&o->via.map, stats_keys, SK__COUNT, s, "stats.", errmsg)) < 0)
    return r;
  /* absent counters read as 0: daemons may add or drop some over time */
#define X(f) \
  if (s[SK_##f] && (r = get_uint(s[SK_##f], "stats." #f, UINT64_MAX, &st->f, errmsg)) < 0) \
    return r;
  KVS__STATS_U64(X)
#undef X
  if (s[SK_spaces] && (r = get_u32(s[SK_spaces], "stats.spaces", &st->spaces, errmsg)) < 0)
    return r;
  if (s[SK_backend]) {
    const char *str = NULL;
    uint32_t n = 0;
    if ((r = get_str(s[SK_backend], "stats.backend", &str, &n, errmsg)) < 0)
      return r;
    if (n >= sizeof(st->backend))
      return fail(errmsg, -E2BIG, "stats.backend longer than %zu bytes",
                  sizeof(st->backend) - 1);
    if (memchr(str, '\0', n))
      return fail(errmsg, -EINVAL, "stats.backend contains NUL");
    memcpy(st->backend, str, n);
    st->backend[n] = '\0';
  }
  return 0;
}

/* A string into fixed room dst[cap]: no NUL inside, must fit. */
static int get_strbuf(const msgpack_object *o, const char *name, char *dst, size_t cap,
                      char *errmsg)
{
  const char *str = NULL;
  uint32_t n = 0;
  int r = get_str(o, name, &str, &n, errmsg);
  if (r < 0)
    return r;
  if (n >= cap)
    return fail(errmsg, -E2BIG, "%s longer than %zu bytes", name, cap - 1);
  if (memchr(str, '\0', n))
    return fail(errmsg, -EINVAL, "%s contains NUL", name);
  memcpy(dst, str, n);
  dst[n] = '\0';
  return 0;
}

/* The array under a list/profiles key: at most KVS_MAX_LIST_ITEMS maps,
 * room for them allocated (zeroed) into *out. */
static int get_maps(const msgpack_object *o, const char *name, size_t elem, void **out,
                    uint32_t *n, char *errmsg)
{
  if (o->type != MSGPACK_OBJECT_ARRAY)
    return fail(errmsg, -EBADMSG, "%s must be an array", name);
  if (o->via.array.size > KVS_MAX_LIST_ITEMS)
    return fail(errmsg, -E2BIG, "%s has %u entries, limit %u", name, o->via.array.size,
                KVS_MAX_LIST_ITEMS);
  for (uint32_t i = 0; i < o->via.array.size; i++)
    if (o->via.array.ptr[i].type != MSGPACK_OBJECT_MAP)
      return fail(errmsg, -EBADMSG, "%s[%u] must be a map", name, i);
  *n = o->via.array.size;
  *out = NULL;
  if (*n && !(*out = calloc(*n, elem)))
    return fail(errmsg, -ENOMEM, "out of memory for %s", name);
  return 0;
}

enum { SP_NS, SP_MODEL, SP_LAYERS, SP_KV_HEADS, SP_HEAD_DIM, SP_K_BITS, SP_V_BITS, SP_POLICY,
       SP_PFN, SP_PROFILE, SP_BLOCKS, SP_PINNED, SP_SEQS, SP_FALLBACK, SP__COUNT };
static const char *const space_keys[SP__COUNT] = {
  "ns", "model", "layers", "kv_heads", "head_dim", "k_bits", "v_bits", "policy",
  "pfn", "profile", "blocks", "pinned", "seqs", "fallback",
};

static int decode_space(const msgpack_object *o, kvs_space_info *sp, char *errmsg)
{
  const msgpack_object *s[SP__COUNT];
  int r;
  if ((r = collect(&o->via.map, space_keys, SP__COUNT, s, "spaces.", errmsg)) < 0)
    return r;
  if (!s[SP_NS] || !s[SP_MODEL])
    return missing("spaces.", s[SP_NS] ? "model" : "ns", errmsg);
  if ((r = get_strbuf(s[SP_NS], "spaces.ns", sp->ns, sizeof sp->ns, errmsg)) < 0 ||
      (r = get_strbuf(s[SP_MODEL], "spaces.model", sp->model_id, sizeof sp->model_id,
                      errmsg)) < 0)
    return r;
#define U32(K, f) \
  if (s[K] && (r = get_u32(s[K], "spaces." #f, &sp->f, errmsg)) < 0) return r;
#define U64(K, f) \
  if (s[K] && (r = get_uint(s[K], "spaces." #f, UINT64_MAX, &sp->f, errmsg)) < 0) return r;
  U32(SP_LAYERS, n_layers) U32(SP_KV_HEADS, n_kv_heads) U32(SP_HEAD_DIM, head_dim)
  U32(SP_K_BITS, k_bits) U32(SP_V_BITS, v_bits) U32(SP_PFN, pfn)
  U32(SP_FALLBACK, fallback_sessions)
  U64(SP_BLOCKS, blocks) U64(SP_PINNED, pinned) U64(SP_SEQS, seqs)
#undef U32
#undef U64
  int32_t pol = KVS_POLICY_DEFAULT;
  if (s[SP_POLICY] && (r = policy(s[SP_POLICY], &pol, errmsg)) < 0)
    return r;
  sp->policy = (kvs_policy)pol;
  if (s[SP_PROFILE] && (r = get_bool(s[SP_PROFILE], "spaces.profile", &sp->has_profile, errmsg)) < 0)
    return r;
  return 0;
}

enum { PF_MODEL, PF_LAYER, PF_CHANNELS, PF_TAU, PF_MAX_SINKS, PF_PFN, PF__COUNT };
static const char *const prof_keys[PF__COUNT] = {
  "model", "layer", "channels", "tau", "max_sinks", "pfn",
};

static int decode_profile(const msgpack_object *o, kvs_profile_info *p, char *errmsg)
{
  const msgpack_object *s[PF__COUNT];
  int r;
  if ((r = collect(&o->via.map, prof_keys, PF__COUNT, s, "profiles.", errmsg)) < 0)
    return r;
  if (!s[PF_MODEL])
    return missing("profiles.", "model", errmsg);
  if ((r = get_strbuf(s[PF_MODEL], "profiles.model", p->model_id, sizeof p->model_id,
                      errmsg)) < 0)
    return r;
  if (s[PF_LAYER] && (r = get_u32(s[PF_LAYER], "profiles.layer", &p->layer, errmsg)) < 0)
    return r;
  if (s[PF_CHANNELS] &&
      (r = get_u32_array(s[PF_CHANNELS], "profiles.channels", KVS_MAX_ACT_CHANNELS,
                         p->channels, NULL, &p->n_channels, errmsg)) < 0)
    return r;
  if (s[PF_TAU] && (r = get_float(s[PF_TAU], "profiles.tau", &p->tau, errmsg)) < 0)
    return r;
  if (s[PF_MAX_SINKS] &&
      (r = get_u32(s[PF_MAX_SINKS], "profiles.max_sinks", &p->max_sinks, errmsg)) < 0)
    return r;
  if (s[PF_PFN] && (r = get_u32(s[PF_PFN], "profiles.pfn", &p->pfn, errmsg)) < 0)
    return r;
  return 0;
}

static int decode_err(const msgpack_object *o, kvs__rep *rep, char *errmsg)
{
  const char *str = NULL;
  uint32_t n = 0;
  int r;

  if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 2)
    return fail(errmsg, -EBADMSG, "err must be [code, message]");
  if ((r = get_i32(&o->via.array.ptr[0], "err[0]", &rep->err, errmsg)) < 0)
    return r;
  if (rep->err >= 0)
    return fail(errmsg, -EBADMSG, "err code must be negative");
  if ((r = get_str(&o->via.array.ptr[1], "err[1]", &str, &n, errmsg)) < 0)
    return r;
  if (n >= KVS_MAX_ERRMSG)
    n = KVS_MAX_ERRMSG - 1;
  memcpy(rep->errmsg, str, n);
  rep->errmsg[n] = '\0';
  return 0;
}

/* One entry of a stats reply's pools. */
enum { PO_DEVICE, PO_UUID, PO_STATS, PO__COUNT };
static const char *const pool_keys[PO__COUNT] = {"device", "uuid", "stats"};

static int decode_pool(const msgpack_object *o, kvs_pool_stats *p, char *errmsg)
{
  const msgpack_object *s[PO__COUNT];
  int r;
  if ((r = collect(&o->via.map, pool_keys, PO__COUNT, s, "pools.", errmsg)) < 0)
    return r;
  if (!s[PO_DEVICE] || !s[PO_STATS])
    return missing("pools.", s[PO_DEVICE] ? "stats" : "device", errmsg);
  if ((r = get_strbuf(s[PO_DEVICE], "pools.device", p->device, sizeof p->device, errmsg)) < 0)
    return r;
  if (s[PO_UUID] && (r = get_strbuf(s[PO_UUID], "pools.uuid", p->uuid, sizeof p->uuid, errmsg)) < 0)
    return r;
  return decode_stats(s[PO_STATS], &p->stats, errmsg);
}

static int decode_rep_fields(const char *buf, size_t len, const msgpack_object **s,
                             kvs__rep *rep, char *errmsg)
{
  int r;
#define U32(K, name, dst) \
  if (s[K] && (r = get_u32(s[K], name, dst, errmsg)) < 0) return r;
#define I32(K, name, dst) \
  if (s[K] && (r = get_i32(s[K], name, dst, errmsg)) < 0) return r;
#define U64(K, name, dst) \
  if (s[K] && (r = get_uint(s[K], name, UINT64_MAX, dst, errmsg)) < 0) return r;

  if (s[PK_ERR] && (r = decode_err(s[PK_ERR], rep, errmsg)) < 0)
    return r;
  U64(PK_SESSION, "session", &rep->session)
  U64(PK_SEG_SIZE, "seg_size", &rep->seg_size)
  U32(PK_GROUP, "group", &rep->group)
  I32(PK_K_BITS, "k_bits", &rep->k_bits)
  I32(PK_V_BITS, "v_bits", &rep->v_bits)
  I32(PK_PFN, "pfn", &rep->pfn)
  U32(PK_SINK_LAYER, "sink_layer", &rep->sink_layer)
  U32(PK_QUANTIZED, "quantized", &rep->quantized)
  U32(PK_SINKS, "sinks", &rep->sinks)
  U32(PK_SEQ_LEN, "seq_len", &rep->seq_len)
  U32(PK_CACHED, "cached", &rep->cached)
  U64(PK_EVICTED, "evicted", &rep->evicted)
  U64(PK_DEV_SEG_SIZE, "dev_seg_size", &rep->dev_seg_size)
  U64(PK_FAST_OFF, "fast_off", &rep->fast_off)
  U32(PK_TABLE_BYTES, "table_bytes", &rep->table_bytes)
  U32(PK_FDS, "fds", &rep->table_fds)
#undef U32
#undef I32
#undef U64
  if (s[PK_POLICY] && (r = policy(s[PK_POLICY], &rep->policy, errmsg)) < 0)
    return r;
  if (s[PK_OUTLIERS] && (r = get_float(s[PK_OUTLIERS], "outliers", &rep->outliers, errmsg)) < 0)
    return r;
  if (s[PK_PROFILE] && (r = get_bool(s[PK_PROFILE], "profile", &rep->has_profile, errmsg)) < 0)
    return r;
  if (s[PK_SINK_CHANNELS] &&
      (r = get_u32_array(s[PK_SINK_CHANNELS], "sink_channels", KVS_MAX_ACT_CHANNELS,
                         rep->sink_channels, NULL, &rep->n_sink_channels, errmsg)) < 0)
    return r;
  if (s[PK_SEG_KIND]) {
    const char *str = NULL;
    uint32_t n = 0;
    if ((r = get_str(s[PK_SEG_KIND], "seg_kind", &str, &n, errmsg)) < 0)
      return r;
    if (n == 6 && memcmp(str, "device", 6) == 0)
      rep->seg_device = 1;
    else if (!(n == 4 && memcmp(str, "host", 4) == 0))
      return fail(errmsg, -EINVAL, "seg_kind must be \"host\" or \"device\"");
  }
  if (s[PK_STATS] && (r = decode_stats(s[PK_STATS], &rep->stats, errmsg)) < 0)
    return r;
  if (s[PK_FALLBACK] &&
      (r = get_bool(s[PK_FALLBACK], "fallback", &rep->policy_fallback, errmsg)) < 0)
    return r;
  if (s[PK_V_GROUP] && (r = get_u32(s[PK_V_GROUP], "v_group", &rep->v_group, errmsg)) < 0)
    return r;
  if (s[PK_MORE] && (r = get_bool(s[PK_MORE], "more", &rep->table_more, errmsg)) < 0)
    return r;
  if (s[PK_CHUNKS]) {
    const char *str = NULL;
    uint32_t n = 0;
    if ((r = get_str(s[PK_CHUNKS], "chunks", &str, &n, errmsg)) < 0)
      return r;
    if (n == 6 && memcmp(str, "device", 6) == 0)
      rep->table_device = 1;
    else if (!(n == 4 && memcmp(str, "host", 4) == 0))
      return fail(errmsg, -EINVAL, "chunks must be \"host\" or \"device\"");
  }
  if (s[PK_GPU]) {
    if (s[PK_GPU]->type != MSGPACK_OBJECT_BIN || s[PK_GPU]->via.bin.size != 16)
      return fail(errmsg, -EBADMSG, "gpu must be a 16-byte bin (the device UUID)");
    memcpy(rep->table_gpu, s[PK_GPU]->via.bin.ptr, 16);
  }
  if (rep->table_device && !s[PK_GPU])
    return fail(errmsg, -EPROTO, "chunks = device without gpu");
  if (rep->table_fds > KVS_TABLE_MAX_FDS)
    return fail(errmsg, -E2BIG, "fds = %u, limit %u", rep->table_fds, KVS_TABLE_MAX_FDS);
  if (s[PK_SPACES]) {
    void *v;
    if ((r = get_maps(s[PK_SPACES], "spaces", sizeof(kvs_space_info), &v, &rep->n_spaces,
                      errmsg)) < 0)
      return r;
    rep->spaces = v;
    for (uint32_t i = 0; i < rep->n_spaces; i++)
      if ((r = decode_space(&s[PK_SPACES]->via.array.ptr[i], &rep->spaces[i], errmsg)) < 0)
        return r;
  }
  if (s[PK_POOLS]) {
    void *v;
    if (s[PK_POOLS]->type == MSGPACK_OBJECT_ARRAY && s[PK_POOLS]->via.array.size > KVS_MAX_POOLS)
      return fail(errmsg, -E2BIG, "pools has %u entries, limit %u", s[PK_POOLS]->via.array.size,
                  KVS_MAX_POOLS);
    if ((r = get_maps(s[PK_POOLS], "pools", sizeof(kvs_pool_stats), &v, &rep->n_pools,
                      errmsg)) < 0)
      return r;
    rep->pools = v;
    for (uint32_t i = 0; i < rep->n_pools; i++)
      if ((r = decode_pool(&s[PK_POOLS]->via.array.ptr[i], &rep->pools[i], errmsg)) < 0)
        return r;
  }
  if (s[PK_PROFILES]) {
    void *v;
    if ((r = get_maps(s[PK_PROFILES], "profiles", sizeof(kvs_profile_info), &v,
                      &rep->n_profiles, errmsg)) < 0)
      return r;
    rep->profiles = v;
    for (uint32_t i = 0; i < rep->n_profiles; i++)
      if ((r = decode_profile(&s[PK_PROFILES]->via.array.ptr[i], &rep->profiles[i],
                              errmsg)) < 0)
        return r;
  }
  if (s[PK_TEXT]) { /* metrics: a copy, NUL-terminated */
    const char *str = NULL;
    uint32_t n = 0;
    if ((r = get_str(s[PK_TEXT], "text", &str, &n, errmsg)) < 0)
      return r;
    rep->text = malloc((size_t)n + 1);
    if (!rep->text)
      return fail(errmsg, -ENOMEM, "out of memory");
    memcpy(rep->text, str, n);
    rep->text[n] = '\0';
    rep->text_len = n;
  }
  (void)buf;
  (void)len;
  return 0;
}

int kvs__decode_rep(const char *buf, size_t len, kvs__rep *rep, char *errmsg)
{
  char tmp[KVS_MAX_ERRMSG];
  const msgpack_object *s[PK__COUNT];
  msgpack_unpacked u;
  int r;

  if (!errmsg)
    errmsg = tmp;
  errmsg[0] = '\0';
  memset(rep, 0, sizeof(*rep));
  if ((r = parse_top(buf, len, &u, errmsg)) < 0)
    return r;
  r = collect(&u.data.via.map, rep_keys, PK__COUNT, s, "", errmsg);
  if (r == 0 && !s[PK_ID])
    r = missing("", "id", errmsg);
  if (r == 0)
    r = get_uint(s[PK_ID], "id", UINT64_MAX, &rep->id, errmsg);
  if (r == 0)
    r = decode_rep_fields(buf, len, s, rep, errmsg);
  msgpack_unpacked_destroy(&u);
  if (r < 0)
    kvs__rep_free(rep);
  return r;
}

void kvs__rep_free(kvs__rep *rep)
{
  if (!rep)
    return;
  free(rep->spaces);
  rep->spaces = NULL;
  rep->n_spaces = 0;
  free(rep->profiles);
  rep->profiles = NULL;
  rep->n_profiles = 0;
  free(rep->pools);
  rep->pools = NULL;
  rep->n_pools = 0;
  free(rep->text);
  rep->text = NULL;
  rep->text_len = 0;
}
