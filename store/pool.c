/* SPDX-License-Identifier: MIT */
#include "store/pool.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "store/devchunks.h"
#include "store/memfd.h"

#define NONE UINT32_MAX
#define DEAD (-2)          /* unit.cls of a chunk that lost its memory (never used) */

/* A unit is `span` contiguous chunks serving `nslots` slots of one class.
 * Its state lives on the first chunk; the others point to it. */
typedef struct unit {
  int32_t cls;            /* -1: chunk free, DEAD: lost */
  uint32_t head;          /* first chunk of the unit this chunk belongs to */
  uint32_t nfree;         /* head only */
  uint32_t prev, next;    /* head only: class list of units with free slots */
  uint32_t *stack;        /* head only: free slot indices */
  int fd;                 /* exportable pools: this chunk's memfd */
  uint32_t gen;           /* exportable pools: bumped when the memfd is replaced */
  int exported;           /* its fd went to a client since the last replacement */
} unit;

typedef struct sclass {
  size_t slot;            /* rounded slot bytes */
  uint32_t span;          /* chunks per unit */
  uint32_t nslots;        /* slots per unit */
  uint32_t avail;         /* first unit with a free slot, or NONE */
  uint32_t refs;          /* holders (spaces); 0 = id free for another size */
  uint64_t owner;         /* chunks of this class hold only this owner's slots */
} sclass;

struct kvs__pool {
  kvs__backend *be;
  unsigned char *base;
  size_t chunk, nchunks, free_chunks, used;
  unit *u;
  sclass cls[KVS_POOL_MAX_CLASSES];
  int ncls;
  size_t hint;            /* where the next free-chunk search starts */
  uint64_t frees;         /* slots freed so far (kvs__pool_frees) */
  int exportable;         /* KVS_POOL_EXPORT_*: chunks are memfds or VMM allocations */
  kvs__devchunks *dev;    /* KVS_POOL_EXPORT_DEVICE: the chunks' allocations */
  size_t dead;            /* chunks lost to a failed replacement */
};

static size_t round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

int kvs__pool_init(kvs__pool **out, kvs__backend *be, size_t pool_bytes, size_t chunk_bytes)
{
  if (!out || !be || !be->pool_alloc)
    return -EINVAL;
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  if (!chunk_bytes) {
    /* Default 2 MiB, but small pools still get 64 chunks so that several
     * slot classes can coexist; whole pages on the host so that chunks
     * can be exported. */
    chunk_bytes = 2u << 20;
    size_t a = be == &kvs__backend_host && pool_bytes / 64 >= page ? page : KVS_POOL_ALIGN;
    if (chunk_bytes > pool_bytes / 64)
      chunk_bytes = pool_bytes / 64 / a * a;
    if (chunk_bytes == 0)
      chunk_bytes = KVS_POOL_ALIGN;
  }
  chunk_bytes = round_up(chunk_bytes, KVS_POOL_ALIGN);
  /* Host pools of whole-page chunks are exportable (Attend). */
  int exportable = be == &kvs__backend_host && chunk_bytes % page == 0;
  size_t n = pool_bytes / chunk_bytes;
  if (n == 0 || n >= NONE)
    return -EINVAL;
  kvs__pool *p = calloc(1, sizeof(*p));
  if (!p)
    return -ENOMEM;
  p->u = calloc(n, sizeof(*p->u));
  if (p->u && be->chunk_gpu > 0) {
    /* GPU: one exportable VMM allocation per chunk when the driver can
     * (chunks a multiple of its granularity); else one allocation as
     * before, and tables answer -ENOTSUP. */
    void *b = NULL;
    if (kvs__devchunks_map(be->chunk_gpu - 1, n, chunk_bytes, &b, &p->dev) == 0) {
      p->exportable = KVS_POOL_EXPORT_DEVICE;
      p->base = b;
    }
  }
  if (!p->u) {
    free(p);
    return -ENOMEM;
  }
  for (size_t i = 0; i < n; i++)
    p->u[i].fd = -1;
  void *base = p->base;
  int rc = 0;
  if (p->dev) {
    /* mapped above */
  } else if (exportable) {
    /* Chunk i is memfd i mapped at base + i * chunk, so one chunk can be
     * handed to a client without the rest. */
    p->exportable = KVS_POOL_EXPORT_HOST;
    rc = kvs__memfd_pool_map(n, chunk_bytes, &base, p->u, sizeof(*p->u),
                             offsetof(unit, fd));
  } else {
    rc = be->pool_alloc(be, n * chunk_bytes, &base);
  }
  if (rc < 0 || !base) {
    free(p->u);
    free(p);
    return rc < 0 ? rc : -ENOMEM;
  }
  for (size_t i = 0; i < n; i++)
    p->u[i].gen = 1;
  p->be = be;
  p->base = base;
  p->chunk = chunk_bytes;
  p->nchunks = n;
  p->free_chunks = n;
  for (size_t i = 0; i < n; i++) {
    p->u[i].cls = -1;
    p->u[i].head = (uint32_t)i;
  }
  *out = p;
  return 0;
}

void kvs__pool_close(kvs__pool *p)
{
  if (!p)
    return;
  for (size_t i = 0; i < p->nchunks; i++)
    free(p->u[i].stack);
  if (p->dev) {
    kvs__devchunks_unmap(p->dev);
  } else if (p->exportable) {
    for (size_t i = 0; i < p->nchunks; i++)
      if (p->u[i].fd >= 0)
        close(p->u[i].fd);
    munmap(p->base, p->nchunks * p->chunk);
  } else if (p->be->pool_free) {
    p->be->pool_free(p->be, p->base);
  }
  free(p->u);
  free(p);
}

int kvs__pool_class(kvs__pool *p, size_t slot_bytes)
{
  return kvs__pool_class_owned(p, slot_bytes, 0);
}

int kvs__pool_class_owned(kvs__pool *p, size_t slot_bytes, uint64_t owner)
{
  if (!p || slot_bytes == 0)
    return -EINVAL;
  size_t s = round_up(slot_bytes, KVS_POOL_ALIGN);
  int spare = -1;
  for (int i = 0; i < p->ncls; i++) {
    if (p->cls[i].refs && p->cls[i].slot == s && p->cls[i].owner == owner) {
      p->cls[i].refs++;
      return i;
    }
    if (!p->cls[i].refs && spare < 0)
      spare = i;
  }
  size_t span = (s + p->chunk - 1) / p->chunk;
  if (span > p->nchunks)
    return -E2BIG;
  if (spare < 0) {
    if (p->ncls == (int)KVS_POOL_MAX_CLASSES)
      return -ENOSPC;
    spare = p->ncls++;
  }
  sclass *c = &p->cls[spare];
  c->slot = s;
  c->span = (uint32_t)span;
  c->nslots = (uint32_t)(span * p->chunk / s);
  c->avail = NONE;
  c->refs = 1;
  c->owner = owner;
  return spare;
}

void kvs__pool_class_put(kvs__pool *p, int cls)
{
  /* The last holder's slots are all free by now, so the class owns no
   * chunk and its id can serve another size. */
  if (p && cls >= 0 && cls < p->ncls && p->cls[cls].refs)
    p->cls[cls].refs--;
}

static void list_unlink(kvs__pool *p, sclass *c, uint32_t h)
{
  unit *x = &p->u[h];
  if (x->prev != NONE)
    p->u[x->prev].next = x->next;
  else
    c->avail = x->next;
  if (x->next != NONE)
    p->u[x->next].prev = x->prev;
  x->prev = x->next = NONE;
}

static void list_push(kvs__pool *p, sclass *c, uint32_t h)
{
  unit *x = &p->u[h];
  x->prev = NONE;
  x->next = c->avail;
  if (c->avail != NONE)
    p->u[c->avail].prev = h;
  c->avail = h;
}

/* First run of `span` free chunks, scanning from the hint. */
static uint32_t find_run(kvs__pool *p, uint32_t span)
{
  if (p->free_chunks < span)
    return NONE;
  for (size_t pass = 0; pass < 2; pass++) {
    size_t from = pass ? 0 : p->hint, to = pass ? p->hint : p->nchunks;
    size_t run = 0;
    for (size_t i = from; i < to; i++) {
      run = p->u[i].cls == -1 ? run + 1 : 0;
      if (run == span)
        return (uint32_t)(i + 1 - span);
    }
  }
  return NONE;
}

static int unit_new(kvs__pool *p, int cls)
{
  sclass *c = &p->cls[cls];
  uint32_t h = find_run(p, c->span);
  if (h == NONE)
    return -ENOSPC;
  /* A chunk whose fd a client holds gets a fresh memfd (host: the old
   * file keeps only zeros for that client) or a fresh VMM allocation
   * (GPU: the old one keeps only what it held then, the same space's
   * blocks, for as long as that client maps it) before it serves anyone. */
  for (uint32_t i = 0; i < c->span; i++) {
    unit *x = &p->u[h + i];
    if (!p->exportable || !x->exported)
      continue;
    int rc;
    if (p->dev) {
      rc = kvs__devchunks_replace(p->dev, h + i);
      if (rc < 0) {
        /* its address has no memory now: out of the pool for good */
        x->cls = DEAD;
        p->free_chunks--;
        p->dead++;
        return rc;
      }
    } else {
      rc = kvs__memfd_chunk_replace(p->base + (size_t)(h + i) * p->chunk, p->chunk, &x->fd);
      if (rc < 0)
        return rc;
    }
    x->gen++;
    x->exported = 0;
  }
  uint32_t *st = malloc(sizeof(*st) * c->nslots);
  if (!st)
    return -ENOMEM;
  /* Slot 0 on top so a unit fills from its start. */
  for (uint32_t i = 0; i < c->nslots; i++)
    st[i] = c->nslots - 1 - i;
  for (uint32_t i = 0; i < c->span; i++) {
    p->u[h + i].cls = cls;
    p->u[h + i].head = h;
  }
  p->u[h].stack = st;
  p->u[h].nfree = c->nslots;
  p->free_chunks -= c->span;
  p->hint = (h + c->span) % p->nchunks;
  list_push(p, c, h);
  return 0;
}

int kvs__pool_alloc(kvs__pool *p, int cls, void **slot)
{
  if (!p || cls < 0 || cls >= p->ncls || !p->cls[cls].refs || !slot)
    return -EINVAL;
  sclass *c = &p->cls[cls];
  if (c->avail == NONE) {
    int rc = unit_new(p, cls);
    if (rc < 0)
      return rc;
  }
  uint32_t h = c->avail;
  unit *x = &p->u[h];
  uint32_t idx = x->stack[--x->nfree];
  if (x->nfree == 0)
    list_unlink(p, c, h);
  p->used += c->slot;
  *slot = p->base + (size_t)h * p->chunk + (size_t)idx * c->slot;
  return 0;
}

void kvs__pool_free(kvs__pool *p, void *slot)
{
  if (!p || !slot)
    return;
  p->frees++;
  size_t off = (size_t)((unsigned char *)slot - p->base);
  uint32_t h = p->u[off / p->chunk].head;
  unit *x = &p->u[h];
  sclass *c = &p->cls[x->cls];
  uint32_t idx = (uint32_t)((off - (size_t)h * p->chunk) / c->slot);
  if (x->nfree == 0)
    list_push(p, c, h);
  x->stack[x->nfree++] = idx;
  p->used -= c->slot;
  if (x->nfree == c->nslots) {
    /* All slots free: the chunks go back for any class to use. */
    list_unlink(p, c, h);
    free(x->stack);
    x->stack = NULL;
    for (uint32_t i = 0; i < c->span; i++) {
      p->u[h + i].cls = -1;
      p->u[h + i].head = h + i;
    }
    p->free_chunks += c->span;
  }
}

uint32_t kvs__pool_class_slots(const kvs__pool *p, int cls) { return p->cls[cls].nslots; }
uint64_t kvs__pool_frees(const kvs__pool *p) { return p->frees; }

size_t kvs__pool_bytes(const kvs__pool *p) { return p->chunk * (p->nchunks - p->dead); }
size_t kvs__pool_used_bytes(const kvs__pool *p) { return p->used; }
size_t kvs__pool_free_bytes(const kvs__pool *p) { return p->chunk * p->free_chunks; }

int kvs__pool_locate(const kvs__pool *p, const void *slot, kvs__pool_loc *loc)
{
  if (!p || !p->exportable)
    return -ENOTSUP;
  const unsigned char *b = slot;
  if (b < p->base || b >= p->base + p->nchunks * p->chunk)
    return -EINVAL;
  size_t off = (size_t)(b - p->base);
  uint32_t h = p->u[off / p->chunk].head;
  const unit *x = &p->u[h];
  if (x->cls < 0)
    return -EINVAL;
  loc->unit = h;
  loc->gen = x->gen;
  loc->span = p->cls[x->cls].span;
  loc->off = off - (size_t)h * p->chunk;
  return 0;
}

int kvs__pool_chunk_export(kvs__pool *p, uint32_t chunk, uint32_t *gen)
{
  if (!p || !p->exportable || chunk >= p->nchunks || p->u[chunk].cls == DEAD)
    return -EINVAL;
  if (p->dev) {
    int fd = kvs__devchunks_export(p->dev, chunk);
    if (fd < 0)
      return fd;
    p->u[chunk].exported = 1;
    if (gen)
      *gen = p->u[chunk].gen;
    return fd;
  }
  if (p->u[chunk].fd < 0)
    return -EINVAL;
  /* Read-only by construction: a fd opened O_RDONLY cannot be mapped
   * shared and writable, nor mprotect'ed to it. */
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", p->u[chunk].fd);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  p->u[chunk].exported = 1;
  if (gen)
    *gen = p->u[chunk].gen;
  return fd;
}

uint32_t kvs__pool_nchunks(const kvs__pool *p) { return (uint32_t)p->nchunks; }
size_t kvs__pool_chunk_bytes(const kvs__pool *p) { return p->chunk; }
int kvs__pool_exportable(const kvs__pool *p) { return p->exportable; }
int kvs__pool_gpu(const kvs__pool *p) { return p->dev ? kvs__devchunks_ordinal(p->dev) : -1; }
uint32_t kvs__pool_chunk_gen(const kvs__pool *p, uint32_t chunk)
{
  return chunk < p->nchunks ? p->u[chunk].gen : 0;
}
