/* SPDX-License-Identifier: MIT */
/* safetensors reader; see safetensors.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "eval/json.h"
#include "eval/safetensors.h"
#include "eval/util.h"

#define ST_MAX_HEADER (64u << 20)

static int parse_tensor(kvs__st *st, const kvs__json *j, size_t data_off, kvs__st_tensor *t,
                        char *errmsg)
{
  const kvs__json *dt = kvs__json_get(j, "dtype");
  const kvs__json *sh = kvs__json_get(j, "shape");
  const kvs__json *of = kvs__json_get(j, "data_offsets");
  size_t esize;
  if (!dt || dt->type != KVS_J_STR || !sh || sh->type != KVS_J_ARR || !of ||
      of->type != KVS_J_ARR || of->n != 2 || sh->n > KVS_ST_MAX_DIMS)
    goto bad;
  if (!strcmp(dt->str, "F16")) { t->dtype = KVS_ST_F16; esize = 2; }
  else if (!strcmp(dt->str, "BF16")) { t->dtype = KVS_ST_BF16; esize = 2; }
  else if (!strcmp(dt->str, "F32")) { t->dtype = KVS_ST_F32; esize = 4; }
  else {
    snprintf(errmsg, 256, "safetensors: %s: unsupported dtype %s", j->key, dt->str);
    return -EINVAL;
  }
  t->ndim = (uint32_t)sh->n;
  t->count = 1;
  for (size_t i = 0; i < sh->n; i++) {
    const kvs__json *d = sh->items[i];
    if (d->type != KVS_J_NUM || d->num < 0 || d->num > (double)(1ull << 40) || d->num != (uint64_t)d->num)
      goto bad;
    t->shape[i] = (uint64_t)d->num;
    if (t->shape[i] && t->count > (1ull << 40) / t->shape[i])
      goto bad;
    t->count *= t->shape[i];
  }
  uint64_t b, e;
  for (int i = 0; i < 2; i++)
    if (of->items[i]->type != KVS_J_NUM || of->items[i]->num < 0 ||
        of->items[i]->num != (uint64_t)of->items[i]->num)
      goto bad;
  b = (uint64_t)of->items[0]->num;
  e = (uint64_t)of->items[1]->num;
  if (b > e || e > st->map_len - data_off || e - b != t->count * esize) {
    snprintf(errmsg, 256, "safetensors: %s: data offsets do not match shape or file size", j->key);
    return -EINVAL;
  }
  t->data = (const char *)st->map + data_off + b;
  t->name = strdup(j->key);
  return t->name ? 0 : -ENOMEM;
bad:
  snprintf(errmsg, 256, "safetensors: %s: malformed entry", j->key);
  return -EINVAL;
}

int kvs__st_open(kvs__st *st, const char *path, char *errmsg)
{
  struct stat sb;
  kvs__json *root = NULL;
  int r, fd = open(path, O_RDONLY | O_CLOEXEC);
  memset(st, 0, sizeof *st);
  if (fd < 0 || fstat(fd, &sb) < 0) {
    r = -errno;
    snprintf(errmsg, 256, "%s: %s", path, strerror(errno));
    if (fd >= 0)
      close(fd);
    return r;
  }
  if (sb.st_size < 8) {
    close(fd);
    snprintf(errmsg, 256, "%s: too short for safetensors", path);
    return -EINVAL;
  }
  st->map_len = (size_t)sb.st_size;
  st->map = mmap(NULL, st->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (st->map == MAP_FAILED) {
    st->map = NULL;
    snprintf(errmsg, 256, "%s: mmap: %s", path, strerror(errno));
    return -errno;
  }
  const unsigned char *p = st->map;
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--)
    hlen = (hlen << 8) | p[i];
  if (hlen > ST_MAX_HEADER || hlen > st->map_len - 8) {
    snprintf(errmsg, 256, "%s: header length %llu out of range", path, (unsigned long long)hlen);
    r = -EINVAL;
    goto fail;
  }
  st->header_hash = 1469598103934665603ULL;
  for (uint64_t i = 0; i < hlen; i++)
    st->header_hash = (st->header_hash ^ p[8 + i]) * 1099511628211ULL;
  if ((r = kvs__json_parse((const char *)p + 8, hlen, &root, errmsg)) < 0)
    goto fail;
  if (root->type != KVS_J_OBJ) {
    snprintf(errmsg, 256, "%s: header is not an object", path);
    r = -EINVAL;
    goto fail;
  }
  st->t = calloc(root->n ? root->n : 1, sizeof *st->t);
  if (!st->t) {
    r = -ENOMEM;
    goto fail;
  }
  for (size_t i = 0; i < root->n; i++) {
    if (!strcmp(root->items[i]->key, "__metadata__"))
      continue;
    if ((r = parse_tensor(st, root->items[i], 8 + hlen, &st->t[st->n], errmsg)) < 0)
      goto fail;
    st->n++;
  }
  kvs__json_free(root);
  return 0;
fail:
  kvs__json_free(root);
  kvs__st_close(st);
  return r;
}

void kvs__st_close(kvs__st *st)
{
  for (size_t i = 0; i < st->n; i++)
    free(st->t[i].name);
  free(st->t);
  if (st->map)
    munmap(st->map, st->map_len);
  memset(st, 0, sizeof *st);
}

const kvs__st_tensor *kvs__st_find(const kvs__st *st, const char *name)
{
  for (size_t i = 0; i < st->n; i++)
    if (!strcmp(st->t[i].name, name))
      return &st->t[i];
  return NULL;
}

#define ST_MAX_SHARDS 256u

static int add_shard(kvs__stset *s, const char *dir, const char *file, char *errmsg)
{
  char path[4096];
  if (!file[0] || strchr(file, '/') || !strcmp(file, ".") || !strcmp(file, "..")) {
    snprintf(errmsg, 256, "model.safetensors.index.json: shard name %.100s is not a plain file name", file);
    return -EINVAL;
  }
  if (s->n >= ST_MAX_SHARDS) {
    snprintf(errmsg, 256, "model.safetensors.index.json: more than %u shards", ST_MAX_SHARDS);
    return -EINVAL;
  }
  snprintf(path, sizeof path, "%s/%s", dir, file);
  if (!(s->names[s->n] = strdup(file)))
    return -ENOMEM;
  int r = kvs__st_open(&s->f[s->n], path, errmsg);
  if (r < 0) {
    free(s->names[s->n]);
    s->names[s->n] = NULL;
    return r;
  }
  s->n++;
  return 0;
}

int kvs__stset_open(kvs__stset *s, const char *dir, char *errmsg)
{
  char path[4096], *text = NULL;
  size_t len;
  kvs__json *root = NULL;
  int r;
  memset(s, 0, sizeof *s);
  s->f = calloc(ST_MAX_SHARDS, sizeof *s->f);
  s->names = calloc(ST_MAX_SHARDS, sizeof *s->names);
  if (!s->f || !s->names) {
    free(s->f);
    free(s->names);
    return -ENOMEM;
  }
  snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
  if (access(path, F_OK) != 0) {
    if ((r = add_shard(s, dir, "model.safetensors", errmsg)) < 0)
      goto fail;
    /* unchanged for one file, so existing model ids and profiles stay valid */
    s->id_hash = s->f[0].header_hash ^ (s->f[0].header_hash >> 32) ^ s->f[0].map_len;
    return 0;
  }
  if ((r = kvs__read_file(path, 64u << 20, &text, &len)) < 0) {
    snprintf(errmsg, 256, "%.200s: %s", path, strerror(-r));
    goto fail;
  }
  if ((r = kvs__json_parse(text, len, &root, errmsg)) < 0)
    goto fail;
  const kvs__json *wm = kvs__json_get(root, "weight_map");
  r = -EINVAL;
  if (!wm || wm->type != KVS_J_OBJ || wm->n == 0) {
    snprintf(errmsg, 256, "model.safetensors.index.json: no weight_map");
    goto fail;
  }
  /* shards in order of first mention; every mapped tensor must be in its file */
  for (size_t i = 0; i < wm->n; i++) {
    const kvs__json *v = wm->items[i];
    size_t k;
    if (v->type != KVS_J_STR) {
      snprintf(errmsg, 256, "model.safetensors.index.json: %.100s: file is not a string", v->key);
      goto fail;
    }
    for (k = 0; k < s->n; k++)
      if (!strcmp(s->names[k], v->str))
        break;
    if (k == s->n && (r = add_shard(s, dir, v->str, errmsg)) < 0)
      goto fail;
    r = -EINVAL;
    if (!kvs__st_find(&s->f[k], v->key)) {
      snprintf(errmsg, 256, "%.100s: tensor %.100s of the index is missing", v->str, v->key);
      goto fail;
    }
  }
  s->id_hash = 1469598103934665603ULL;
  for (size_t k = 0; k < s->n; k++)
    s->id_hash = (s->id_hash ^ s->f[k].header_hash ^ s->f[k].map_len) * 1099511628211ULL;
  r = 0;
  kvs__json_free(root);
  free(text);
  return 0;
fail:
  kvs__json_free(root);
  free(text);
  kvs__stset_close(s);
  return r;
}

void kvs__stset_close(kvs__stset *s)
{
  for (size_t i = 0; i < s->n; i++) {
    kvs__st_close(&s->f[i]);
    free(s->names[i]);
  }
  free(s->f);
  free(s->names);
  memset(s, 0, sizeof *s);
}

const kvs__st_tensor *kvs__stset_find(const kvs__stset *s, const char *name)
{
  for (size_t i = 0; i < s->n; i++) {
    const kvs__st_tensor *t = kvs__st_find(&s->f[i], name);
    if (t)
      return t;
  }
  return NULL;
}
