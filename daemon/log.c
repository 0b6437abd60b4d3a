/* SPDX-License-Identifier: MIT */
/* Logging to stderr; journald reads the "<N>" prefix as the priority. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/log.h"

static int log_level = KVS_LOG_NOTICE;
static int log_prefix;

static const char *const names[] = {
    [KVS_LOG_ERR] = "err",     [KVS_LOG_WARNING] = "warning", [KVS_LOG_NOTICE] = "notice",
    [KVS_LOG_INFO] = "info",   [KVS_LOG_DEBUG] = "debug",
};

void kvs__log_init(void)
{
  const char *js = getenv("JOURNAL_STREAM"), *ns = getenv("NOTIFY_SOCKET");
  log_prefix = (js && *js) || (ns && *ns);
}

void kvs__log_set_level(int level) { log_level = level; }
int kvs__log_level(void) { return log_level; }

int kvs__log_level_parse(const char *s)
{
  for (int l = KVS_LOG_ERR; l <= KVS_LOG_DEBUG; l++)
    if (strcmp(s, names[l]) == 0) return l;
  return -EINVAL;
}

const char *kvs__log_level_name(int level)
{
  if (level < KVS_LOG_ERR || level > KVS_LOG_DEBUG) return "?";
  return names[level];
}

void kvs__log(int level, const char *fmt, ...)
{
  if (level > log_level) return;
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  /* One fprintf per line so concurrent writers do not interleave mid-line. */
  if (log_prefix)
    fprintf(stderr, "<%d>%s\n", level, msg);
  else
    fprintf(stderr, "kvsinkd: %s: %s\n", kvs__log_level_name(level), msg);
}
