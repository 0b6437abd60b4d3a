/* SPDX-License-Identifier: MIT */
/* libFuzzer target for the sink profile parser (kernels/sink.c,
 * kvs__profile_load): any file gives 0 or a negative code with a message,
 * never a crash; a profile it accepts is written back by kvs__profile_save
 * and loads again to the same values. Seeds: tests/fuzz/corpus/profile. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kernels/sink.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  char path[128], again_path[128], err[256];
  if (!dir[0]) { /* one private directory for the whole run */
    snprintf(dir, sizeof dir, "/tmp/kvs-fuzz-profile.XXXXXX");
    if (!mkdtemp(dir))
      abort();
  }
  /* the parser reads a path: hand it the input through a memfd */
  int fd = memfd_create("profile", MFD_CLOEXEC);
  if (fd < 0 || write(fd, data, size) != (ssize_t)size)
    abort();
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  kvs__profile p, q;
  err[0] = 0;
  int r = kvs__profile_load(path, &p, err);
  close(fd);
  if (r < 0 && err[0] == 0)
    abort(); /* every refusal says why */
  if (r > 0)
    abort();
  if (r == 0) {
    snprintf(again_path, sizeof again_path, "%s/p.profile", dir);
    if (kvs__profile_save(again_path, &p) != 0)
      abort();
    if (kvs__profile_load(again_path, &q, err) != 0) {
      fprintf(stderr, "saved profile does not load again: %s\n", err);
      abort();
    }
    if (strcmp(p.model_id, q.model_id) != 0 || p.layer != q.layer || p.n_channels != q.n_channels ||
        memcmp(p.channels, q.channels, sizeof p.channels[0] * p.n_channels) != 0 ||
        p.max_sinks != q.max_sinks || p.pfn != q.pfn || fabsf(p.tau - q.tau) > 1e-6f * p.tau)
      abort();
  }
  return 0;
}
