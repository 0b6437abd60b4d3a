/* SPDX-License-Identifier: MIT */
/* Command-line helpers shared by the tools (cli.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kvsink.h>
#include "tools/cli.h"

void kvs__cli_version(const char *prog)
{
  printf("%s (kvsink) %s\n", prog, KVS_VERSION_STRING);
  /* the library is a separate package: say when it is another release */
  if (strcmp(kvs_version(), KVS_VERSION_STRING) != 0)
    printf("libkvsink %s\n", kvs_version());
}

int kvs__cli_usage_error(const char *prog, const char *fmt, ...)
{
  if (fmt) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", prog);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
  }
  fprintf(stderr, "Try '%s --help' for more information.\n", prog);
  return KVS__EXIT_USAGE;
}

int kvs__cli_long(const char *s, long lo, long hi, long *out)
{
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (!*s || *end || errno || v < lo || v > hi)
    return -1;
  *out = v;
  return 0;
}

int kvs__cli_size(const char *s, size_t *out)
{
  char *end;
  errno = 0;
  if (!*s || *s == '-')
    return -1;
  unsigned long long v = strtoull(s, &end, 10);
  unsigned shift = 0;
  switch (*end) {
  case 'k': case 'K': shift = 10; end++; break;
  case 'm': case 'M': shift = 20; end++; break;
  case 'g': case 'G': shift = 30; end++; break;
  default: break;
  }
  if (end == s || *end || errno || v > (SIZE_MAX >> shift))
    return -1;
  *out = (size_t)(v << shift);
  return 0;
}

const char *kvs__cli_bytes(size_t n, char *buf, size_t len)
{
  static const char *const unit[] = {"B", "KiB", "MiB", "GiB"};
  double v = (double)n;
  int u = 0;
  while (v >= 1024.0 && u < 3) {
    v /= 1024.0;
    u++;
  }
  if (u == 0)
    snprintf(buf, len, "%zu B", n);
  else
    snprintf(buf, len, "%.1f %s", v, unit[u]);
  return buf;
}
