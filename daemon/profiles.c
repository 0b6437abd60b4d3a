/* SPDX-License-Identifier: MIT */
/* Sink profiles: every *.profile in profiles_dir, keyed by model id. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/log.h"
#include "daemon/profiles.h"

static int has_suffix(const char *s, const char *suf)
{
  size_t n = strlen(s), m = strlen(suf);
  return n > m && strcmp(s + n - m, suf) == 0;
}

int kvs__profiles_load(kvs__profiles *p, const char *dir)
{
  p->v = NULL;
  p->n = 0;
  DIR *d = opendir(dir);
  if (!d) {
    kvs__info("profiles: %s: %s; no sink profiles loaded", dir, strerror(errno));
    return 0;
  }
  size_t cap = 0;
  struct dirent *e;
  int rc = 0;
  while ((e = readdir(d))) {
    if (!has_suffix(e->d_name, ".profile")) continue;
    char path[4096], msg[256] = "";
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    kvs__profile pr;
    memset(&pr, 0, sizeof pr);
    if (kvs__profile_load(path, &pr, msg) < 0) {
      kvs__warn("profiles: skipping %s: %s", path, msg);
      continue;
    }
    if (kvs__profiles_find(p, pr.model_id)) {
      kvs__warn("profiles: skipping %s: model '%s' already has a profile", path, pr.model_id);
      continue;
    }
    if (p->n == cap) {
      size_t nc = cap ? cap * 2 : 8;
      kvs__profile *nv = realloc(p->v, nc * sizeof *nv);
      if (!nv) {
        rc = -ENOMEM;
        break;
      }
      p->v = nv;
      cap = nc;
    }
    p->v[p->n++] = pr;
    kvs__info("profiles: model '%s' from %s (layer %u, %u channels, tau %g)", pr.model_id, path,
              pr.layer, pr.n_channels, pr.tau);
  }
  closedir(d);
  return rc;
}

void kvs__profiles_free(kvs__profiles *p)
{
  free(p->v);
  p->v = NULL;
  p->n = 0;
}

const kvs__profile *kvs__profiles_find(const kvs__profiles *p, const char *model_id)
{
  for (size_t i = 0; i < p->n; i++)
    if (strcmp(p->v[i].model_id, model_id) == 0) return &p->v[i];
  return NULL;
}
