/* SPDX-License-Identifier: MIT */
/* Unicode classes of the GPT-2 pre-tokenizer regex: \p{L}, \p{N}, \s
 * (White_Space). The L and N ranges are generated (eval/gen-unicode.py). */
#ifndef KVS_EVAL_UNICODE_H
#define KVS_EVAL_UNICODE_H

#include <stddef.h>
#include <stdint.h>

typedef struct kvs__uni_range { uint32_t lo, hi; } kvs__uni_range;
extern const kvs__uni_range kvs__uni_letters[];
extern const unsigned kvs__uni_letters_n;
extern const kvs__uni_range kvs__uni_numbers[];
extern const unsigned kvs__uni_numbers_n;

enum { KVS_UNI_L, KVS_UNI_N, KVS_UNI_S, KVS_UNI_P };

/* Class of code point cp: letter, number, white space, or other. */
int kvs__uni_class(uint32_t cp);

/* Decode one UTF-8 code point at s[0..n) (n >= 1). An invalid or
 * truncated sequence decodes as its first byte alone, cp = 0xFFFFFFFF
 * (class P), so every byte string has a decoding. Returns its length. */
size_t kvs__utf8_next(const unsigned char *s, size_t n, uint32_t *cp);

#endif
