/* SPDX-License-Identifier: MIT */
/* A small strict JSON reader (RFC 8259) for config.json, tokenizer.json and
 * safetensors headers. Builds a tree; strings are decoded to UTF-8 (NUL
 * bytes inside strings are rejected, so strings are C strings). */
#ifndef KVS_EVAL_JSON_H
#define KVS_EVAL_JSON_H

#include <stddef.h>

typedef enum kvs__jtype {
  KVS_J_NULL, KVS_J_FALSE, KVS_J_TRUE, KVS_J_NUM, KVS_J_STR, KVS_J_ARR, KVS_J_OBJ
} kvs__jtype;

typedef struct kvs__json kvs__json;
struct kvs__json {
  kvs__jtype type;
  double num;
  char *str;           /* KVS_J_STR; also the key of an object member */
  char *key;           /* member name when the parent is an object */
  size_t n;            /* children of an array / object */
  kvs__json **items;
};

/* Parse len bytes; the whole input must be one value (whitespace around
 * allowed). Returns 0 or -EINVAL with a message in errmsg (256 bytes). */
int kvs__json_parse(const char *text, size_t len, kvs__json **out, char *errmsg);
void kvs__json_free(kvs__json *j);

/* Member of an object by name (first match), NULL when absent or j is not
 * an object. */
const kvs__json *kvs__json_get(const kvs__json *j, const char *key);
/* Integer-valued number member in [lo, hi]: 0 or -EINVAL. */
int kvs__json_get_int(const kvs__json *j, const char *key, long lo, long hi, long *out);
int kvs__json_get_num(const kvs__json *j, const char *key, double *out);

#endif
