/* SPDX-License-Identifier: MIT */
/* Byte-level BPE encoder over a Hugging Face tokenizer.json: vocabulary
 * ids in any order, merges as "a b" strings or ["a", "b"] lists in rank
 * order, added (special) tokens. Two pre-tokenizers:
 * - KVSINK (pre_tokenizer absent or "kvsink_bytes"): the test model's
 *   byte rules (eval/TOKENIZER.md; letters, one digit, punctuation runs,
 *   whitespace runs, a lone space glued to the next chunk), as bpe.py;
 * - GPT2 (ByteLevel, use_regex): GPT-2's regex on code points; added
 *   tokens are cut out of the text first, as the tokenizers library does.
 * BPE never merges across chunks. */
#ifndef KVS_EVAL_TOKENIZER_H
#define KVS_EVAL_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

/* the test model's layout (eval/TOKENIZER.md) */
#define KVS_TOK_BOS 0u
#define KVS_TOK_EOS 1u
#define KVS_TOK_BYTE0 2u
#define KVS_TOK_MERGE0 258u

enum { KVS_PRETOK_KVSINK, KVS_PRETOK_GPT2 };

typedef struct kvs__tokenizer kvs__tokenizer;

/* Load an HF tokenizer.json; checks that it is a byte-level BPE as above.
 * Returns 0 or a negative code with a message in errmsg (256 bytes). */
int kvs__tok_load(kvs__tokenizer **out, const char *path, char *errmsg);
void kvs__tok_free(kvs__tokenizer *t);
/* 1 + the largest id (vocabulary and added tokens). */
uint32_t kvs__tok_vocab_size(const kvs__tokenizer *t);
int kvs__tok_pretok_kind(const kvs__tokenizer *t);
/* Id of the added token with this content, UINT32_MAX if none. */
uint32_t kvs__tok_special(const kvs__tokenizer *t, const char *content);

/* Append the ids of text[0..len) to *ids (grown with realloc; *n and *cap
 * updated). No BOS is added. Returns 0 or -ENOMEM. */
int kvs__tok_encode(const kvs__tokenizer *t, const unsigned char *text, size_t len,
                    uint32_t **ids, size_t *n, size_t *cap);

/* The bytes of token id (NULL for special tokens or out of range). */
const unsigned char *kvs__tok_bytes(const kvs__tokenizer *t, uint32_t id, size_t *len);

/* Split text into pre-tokenizer chunks: calls cb for each [begin, end). */
void kvs__tok_pretokenize(const unsigned char *text, size_t len,
                          void (*cb)(void *ctx, size_t begin, size_t end), void *ctx);
void kvs__tok_pretokenize_gpt2(const unsigned char *text, size_t len,
                               void (*cb)(void *ctx, size_t begin, size_t end), void *ctx);

#endif
