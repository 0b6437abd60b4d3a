/* Byte-level BPE encoder of the kvsink test model (eval/TOKENIZER.md):
 * ids 0/1 = <|bos|>/<|eos|>, 2+b = byte b, 258+r = merge r; bytes are
 * pre-tokenized into chunks (letters, one digit, punctuation runs,
 * whitespace runs, a lone space glued to the next chunk) and BPE never
 * merges across chunks. */
#ifndef KVS_EVAL_TOKENIZER_H
#define KVS_EVAL_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#define KVS_TOK_BOS 0u
#define KVS_TOK_EOS 1u
#define KVS_TOK_BYTE0 2u
#define KVS_TOK_MERGE0 258u

typedef struct kvs__tokenizer kvs__tokenizer;

/* Load an HF tokenizer.json; checks that it follows the layout above.
 * Returns 0 or a negative code with a message in errmsg (256 bytes). */
int kvs__tok_load(kvs__tokenizer **out, const char *path, char *errmsg);
void kvs__tok_free(kvs__tokenizer *t);
uint32_t kvs__tok_vocab_size(const kvs__tokenizer *t);

/* Append the ids of text[0..len) to *ids (grown with realloc; *n and *cap
 * updated). No BOS is added. Returns 0 or -ENOMEM. */
int kvs__tok_encode(const kvs__tokenizer *t, const unsigned char *text, size_t len,
                    uint32_t **ids, size_t *n, size_t *cap);

/* The bytes of token id (NULL for special tokens or out of range). */
const unsigned char *kvs__tok_bytes(const kvs__tokenizer *t, uint32_t id, size_t *len);

/* Split text into pre-tokenizer chunks: calls cb for each [begin, end). */
void kvs__tok_pretokenize(const unsigned char *text, size_t len,
                          void (*cb)(void *ctx, size_t begin, size_t end), void *ctx);

#endif
