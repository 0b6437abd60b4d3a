/* SPDX-License-Identifier: MIT */
/* Evaluation text: documents separated by "\n\x1e\n" (a line holding only
 * the ASCII record separator, eval/make-corpus.sh), split exactly as
 * eval/bpe.py read_docs does (leading/trailing newlines dropped, blank
 * documents skipped), tokenized with BOS at each document start and
 * packed into contexts that each begin at a document start. */
#ifndef KVS_EVAL_CORPUS_H
#define KVS_EVAL_CORPUS_H

#include <stddef.h>
#include <stdint.h>

#include "eval/tokenizer.h"

typedef struct kvs__corpus {
  uint32_t *ids;        /* the whole token stream */
  size_t n_ids;
  uint32_t n_docs;
  size_t *ctx_start;    /* contexts: ids[ctx_start[i] .. + ctx_len[i]) */
  uint32_t *ctx_len;
  uint32_t n_ctx;
} kvs__corpus;

/* Tokenize text and cut at most max_ctx contexts of ctx tokens (0 = as many
 * as fit). Each context starts at a BOS: the next one starts at the first
 * document start at or after the end of the previous one. When the text
 * is shorter than ctx, the one context is the whole stream. */
int kvs__corpus_build(kvs__corpus *c, const kvs__tokenizer *t, const unsigned char *text,
                      size_t len, uint32_t bos, uint32_t ctx, uint32_t max_ctx);
/* The same with each document cut into consecutive pieces of at most
 * `piece` tokens, each opened by BOS (BOS + up to piece - 1 document
 * tokens; the last piece of a document may be shorter), as the training
 * windows cut documents (eval/train.py pack, pieces of 128..1024 there,
 * of random length): contexts then hold a document start every `piece`
 * tokens or sooner. piece 0 = whole documents (kvs__corpus_build);
 * piece 1 is -EINVAL. */
int kvs__corpus_build_pieces(kvs__corpus *c, const kvs__tokenizer *t, const unsigned char *text,
                             size_t len, uint32_t bos, uint32_t ctx, uint32_t max_ctx,
                             uint32_t piece);
void kvs__corpus_free(kvs__corpus *c);

#endif
