/* SPDX-License-Identifier: MIT */
/* libFuzzer target for the request and reply decoders. Build with
 * `make fuzz` (clang, -fsanitize=fuzzer,address,undefined); seed it with
 * `tests/fuzz/mutate_decode --corpus DIR`. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proto/proto.h"

static int documented(int r)
{
  return r == 0 || r == -EBADMSG || r == -EPROTO || r == -E2BIG ||
         r == -EINVAL || r == -ENOMEM;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  char msg[KVS_MAX_ERRMSG];
  kvs__req req;
  kvs__rep rep;

  int r = kvs__decode_req((const char *)data, size, &req, msg);
  if (!documented(r) || (r < 0 && msg[0] == '\0'))
    abort();
  if (r == 0) {
    /* what decodes must encode again and decode to the same thing */
    char *out;
    size_t len;
    if (req.op != KVS_OP_HELLO && kvs__encode_req(&req, &out, &len) == 0) {
      kvs__req again;
      if (kvs__decode_req(out + 4, len - 4, &again, msg) != 0 ||
          again.op != req.op || again.id != req.id || again.n_tokens != req.n_tokens ||
          (req.tokens && memcmp(again.tokens, req.tokens, req.n_tokens * 4u)))
        abort();
      kvs__req_free(&again);
      free(out);
    }
    kvs__req_free(&req);
  }

  r = kvs__decode_rep((const char *)data, size, &rep, msg);
  if (!documented(r) || (r < 0 && msg[0] == '\0'))
    abort();
  if (r == 0)
    kvs__rep_free(&rep);
  return 0;
}
