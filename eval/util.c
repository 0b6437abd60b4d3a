/* SPDX-License-Identifier: MIT */
/* Small helpers shared by the eval tools. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "eval/util.h"

int kvs__read_file(const char *path, size_t max, char **buf, size_t *len)
{
  FILE *f = fopen(path, "rb");
  size_t cap = 1 << 16, n = 0;
  char *b;
  if (!f)
    return -errno;
  b = malloc(cap + 1);
  if (!b) {
    fclose(f);
    return -ENOMEM;
  }
  for (;;) {
    size_t got = fread(b + n, 1, cap - n, f);
    n += got;
    if (n > max) {
      free(b);
      fclose(f);
      return -EFBIG;
    }
    if (n < cap) {
      if (ferror(f)) {
        free(b);
        fclose(f);
        return -EIO;
      }
      break;
    }
    char *nb = realloc(b, cap * 2 + 1);
    if (!nb) {
      free(b);
      fclose(f);
      return -ENOMEM;
    }
    b = nb;
    cap *= 2;
  }
  fclose(f);
  b[n] = 0;
  *buf = b;
  *len = n;
  return 0;
}
