/* SPDX-License-Identifier: MIT */
/* libFuzzer target for the kvsinkd.conf parser (daemon/config.c): any text
 * gives 0 or -EINVAL with a "name:LINE: reason" message, never a crash; a
 * configuration it accepts passes the cross-key checks. Seeds:
 * tests/fuzz/corpus/config (real configuration files). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  static kvs__config base;
  static int have_base;
  char err[KVS_CONF_ERRMSG];
  if (!have_base) { /* the embedded defaults, as kvsinkd starts from them */
    kvs__config_defaults(&base);
    have_base = 1;
  }
  /* the loader refuses NUL bytes before parsing: the parser sees C text */
  char *text = malloc(size + 1);
  if (!text)
    return 0;
  memcpy(text, data, size);
  text[size] = 0;
  kvs__config c = base;
  err[0] = 0;
  int r = kvs__config_parse(&c, text, "fuzz.conf", err);
  if (r != 0 && r != -EINVAL)
    abort();
  if (r < 0 && strncmp(err, "fuzz.conf:", 10) != 0)
    abort(); /* every error names the file and line */
  if (r == 0 && kvs__config_check(&c, err) != 0)
    abort(); /* parse ends with the cross-key checks */
  free(text);
  return 0;
}
