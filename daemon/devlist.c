/* SPDX-License-Identifier: MIT */
/* `device` lists and the segment choice (daemon/devlist.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/devlist.h"

int kvs__devlist_parse(const char *v, kvs__devlist *d, char *errmsg)
{
  kvs__devlist out = {.mode = KVS_DEVMODE_LIST};
  if (strcmp(v, "auto") == 0) out.mode = KVS_DEVMODE_AUTO;
  else if (strcmp(v, "host") == 0) out.mode = KVS_DEVMODE_HOST;
  else if (strcmp(v, "all") == 0) out.mode = KVS_DEVMODE_ALL;
  else {
    const char *p = v;
    for (;;) {
      while (*p == ' ' || *p == '\t') p++;
      if (strncmp(p, "cuda:", 5) != 0 || p[5] < '0' || p[5] > '9') goto bad;
      char *end;
      unsigned long o = strtoul(p + 5, &end, 10);
      if (o > 1023) goto bad;
      for (uint32_t i = 0; i < out.n; i++)
        if (out.dev[i] == (int)o) {
          snprintf(errmsg, 256, "device: cuda:%lu listed twice", o);
          return -EINVAL;
        }
      if (out.n == KVS_MAX_DEVICES) {
        snprintf(errmsg, 256, "device: more than %u GPUs listed", KVS_MAX_DEVICES);
        return -EINVAL;
      }
      out.dev[out.n++] = (int)o;
      p = end;
      while (*p == ' ' || *p == '\t') p++;
      if (*p == '\0') break;
      if (*p++ != ',') goto bad;
    }
  }
  *d = out;
  return 0;
bad:
  snprintf(errmsg, 256, "device: expected auto, host, all or cuda:N[,cuda:M...], got '%s'", v);
  return -EINVAL;
}

void kvs__devlist_format(const kvs__devlist *d, char *buf, size_t n)
{
  if (n == 0) return;
  buf[0] = '\0';
  switch (d->mode) {
  case KVS_DEVMODE_AUTO: snprintf(buf, n, "auto"); return;
  case KVS_DEVMODE_HOST: snprintf(buf, n, "host"); return;
  case KVS_DEVMODE_ALL: snprintf(buf, n, "all"); return;
  case KVS_DEVMODE_LIST: break;
  }
  size_t used = 0;
  for (uint32_t i = 0; i < d->n && used < n; i++) {
    int w = snprintf(buf + used, n - used, "%scuda:%d", i ? "," : "", d->dev[i]);
    if (w < 0) break;
    used += (size_t)w;
  }
}

int kvs__devseg_choose(const uint8_t *client_uuid, const uint8_t (*served)[16], size_t n)
{
  if (!client_uuid || !served) return -1;
  for (size_t i = 0; i < n; i++)
    if (memcmp(client_uuid, served[i], 16) == 0) return (int)i;
  return -1;
}
