/* SPDX-License-Identifier: MIT */
/* memfd segments: the daemon creates them so a client cannot resize or
 * swap the memory under it (the seals), and passes the fd in hello. */
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "daemon/segment.h"

int kvs__segment_create(kvs__segment *s, uint64_t size, const char *name)
{
  s->fd = -1;
  s->base = NULL;
  s->size = s->data = 0;
  if (size == 0 || size > (uint64_t)SIZE_MAX || size > (uint64_t)INT64_MAX) return -EINVAL;
  int fd = memfd_create(name, MFD_ALLOW_SEALING | MFD_CLOEXEC);
  if (fd < 0) return -errno;
  int e;
  if (ftruncate(fd, (off_t)size) < 0) goto fail;
  if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) goto fail;
  void *p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) goto fail;
  s->fd = fd;
  s->base = p;
  s->size = s->data = size;
  return 0;
fail:
  e = errno;
  close(fd);
  return -e;
}

void kvs__segment_close(kvs__segment *s)
{
  if (s->base) munmap(s->base, (size_t)s->size);
  if (s->fd >= 0) close(s->fd);
  s->base = NULL;
  s->fd = -1;
  s->size = 0;
}

int kvs__segment_range_ok(const kvs__segment *s, uint64_t off, uint64_t len, uint64_t align)
{
  if (!s->base) return 0;
  if (align > 1 && off % align) return 0;
  if (off > s->data) return 0;
  return len <= s->data - off;
}

int kvs__mul_u64(uint64_t *out, uint64_t a, uint64_t b, uint64_t c, uint64_t d)
{
  uint64_t r;
  if (__builtin_mul_overflow(a, b, &r) || __builtin_mul_overflow(r, c, &r) ||
      __builtin_mul_overflow(r, d, &r))
    return -1;
  *out = r;
  return 0;
}
