/* SPDX-License-Identifier: MIT */
#include "store/memfd.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

static int chunk_fd(size_t chunk)
{
  int fd = memfd_create("kvsink-chunk", MFD_CLOEXEC);
  if (fd < 0)
    return -errno;
  if (ftruncate(fd, (off_t)chunk) < 0) {
    int e = errno;
    close(fd);
    return -e;
  }
  return fd;
}

/* n chunk fds plus room for sessions and segments. */
static void raise_nofile(size_t n)
{
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
    return;
  rlim_t want = (rlim_t)n + 1024;
  if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

int kvs__memfd_pool_map(size_t n, size_t chunk, void **base, void *units, size_t stride,
                        size_t fd_off)
{
  raise_nofile(n);
  unsigned char *b = mmap(NULL, n * chunk, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (b == MAP_FAILED)
    return -errno;
  unsigned char *u = units;
  size_t i;
  int rc = 0;
  for (i = 0; i < n; i++) {
    int fd = chunk_fd(chunk);
    if (fd < 0) {
      rc = fd;
      break;
    }
    if (mmap(b + i * chunk, chunk, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) ==
        MAP_FAILED) {
      rc = -errno;
      close(fd);
      break;
    }
    memcpy(u + i * stride + fd_off, &fd, sizeof fd);
  }
  if (rc < 0) {
    while (i-- > 0) {
      int fd;
      memcpy(&fd, u + i * stride + fd_off, sizeof fd);
      close(fd);
      fd = -1;
      memcpy(u + i * stride + fd_off, &fd, sizeof fd);
    }
    munmap(b, n * chunk);
    return rc;
  }
  *base = b;
  return 0;
}

int kvs__memfd_chunk_replace(void *addr, size_t chunk, int *fd)
{
  int nfd = chunk_fd(chunk);
  if (nfd < 0)
    return nfd;
  if (mmap(addr, chunk, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, nfd, 0) == MAP_FAILED) {
    int e = errno;
    close(nfd);
    return -e;
  }
  /* The old file lives on in clients' mappings: free its pages. */
  fallocate(*fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)chunk);
  close(*fd);
  *fd = nfd;
  return 0;
}
