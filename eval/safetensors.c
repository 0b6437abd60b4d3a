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
