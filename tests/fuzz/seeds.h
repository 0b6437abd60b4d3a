/* SPDX-License-Identifier: MIT */
/* Valid encoded frames of every request and reply, for the mutation test
 * and as a libFuzzer seed corpus. */
#ifndef KVS_FUZZ_SEEDS_H
#define KVS_FUZZ_SEEDS_H
#include <stddef.h>

typedef struct kvs__seed {
  char *frame;   /* header + payload, malloc'd */
  size_t len;
  int is_rep;    /* 1: decode with kvs__decode_rep */
} kvs__seed;

/* Fill up to max seeds; returns how many (or a negative code). */
int kvs__fuzz_seeds(kvs__seed *out, int max);
void kvs__fuzz_seeds_free(kvs__seed *s, int n);
#endif
