/* SPDX-License-Identifier: MIT */
/* Records come from 2 MiB slabs and go back to a stack of free ones per
 * size (in cache lines), never to malloc: a bulk put makes a thousand
 * records, and one page fault per 16 of them, or malloc trimming and
 * refaulting its heap when a full pool evicts as many, cost more than
 * the rest of the put's host work (tests/store/bench_put); and a stale
 * LRU entry may still read a block record that was freed (block.c). The
 * slabs stay until the store closes. A stack of pointers, not a list
 * linked through the records: popping a list waits for each record's
 * link to come from memory before the next pop (a third of a bulk put's
 * record time), a stack's next entries are known ahead. A helper
 * thread keeps the next slab mapped and faulted in (kvs__slabs). */
#include "store/rec.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define REC_SLAB ((size_t)2 << 20)
#define CUT_AHEAD 32u /* and ahead of a cut from a slab (lines from memory) */

/* A fresh slab, 2 MiB-aligned so that it can be one huge page (where
 * the kernel gives them on madvise), faulted in here rather than line by
 * line inside a put: in 4 KiB pages, a slab's 512 faults were a third
 * of a put's host time while the pool filled (bench_put cold). */
void *kvs__map_huge(size_t bytes)
{
  const size_t huge = (size_t)2 << 20;
  bytes = (bytes + huge - 1) & ~(huge - 1);
  unsigned char *m = mmap(NULL, bytes + huge, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED)
    return NULL;
  unsigned char *p = (unsigned char *)(((uintptr_t)m + huge - 1) & ~(uintptr_t)(huge - 1));
  if (p > m)
    munmap(m, (size_t)(p - m));
  if (p + bytes < m + bytes + huge)
    munmap(p + bytes, (size_t)(m + bytes + huge - (p + bytes)));
  madvise(p, bytes, MADV_HUGEPAGE); /* a hint: 4 KiB pages work too */
  return p;
}

void kvs__unmap_huge(void *p, size_t bytes)
{
  const size_t huge = (size_t)2 << 20;
  munmap(p, (bytes + huge - 1) & ~(huge - 1));
}

/* A slab mapped and faulted in (a write to every 4 KiB page), not on
 * the list yet. */
static unsigned char *slab_map(void)
{
  unsigned char *p = kvs__map_huge(REC_SLAB);
  if (!p)
    return NULL;
  for (size_t o = 0; o < REC_SLAB; o += 4096)
    p[o] = 0;
  return p;
}

void kvs__slabs_init(kvs__slabs *s)
{
  memset(s, 0, sizeof *s);
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->cv, NULL);
  const char *ab = getenv("KVSINK_SLAB_SPARE");
  s->off = ab && !strcmp(ab, "0");
}

/* The helper keeps one spare ready, mapped outside the lock (the loop
 * never waits for a mapping), and sleeps while there is one. */
static void *slab_helper(void *arg)
{
  kvs__slabs *s = arg;
  pthread_mutex_lock(&s->mu);
  while (!s->stop) {
    if (s->spare) {
      pthread_cond_wait(&s->cv, &s->mu);
      continue;
    }
    pthread_mutex_unlock(&s->mu);
    unsigned char *p = slab_map();
    pthread_mutex_lock(&s->mu);
    if (!p) { /* out of memory: again when the loop next needs a slab */
      pthread_cond_wait(&s->cv, &s->mu);
      continue;
    }
    s->spare = p;
    pthread_cond_broadcast(&s->cv);
  }
  pthread_mutex_unlock(&s->mu);
  return NULL;
}

/* With s->mu held. The helper takes no signals (the daemon's loop
 * handles them). */
static void helper_start(kvs__slabs *s)
{
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  if (pthread_create(&s->th, NULL, slab_helper, s) == 0) {
    s->started = 1;
    pthread_setname_np(s->th, "kvs-slabs");
  } else {
    s->off = 1; /* every slab inline, as without the helper */
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* The spare if there is one (and the helper asked for the next), else a
 * slab mapped here; on the list. */
static unsigned char *slab_new(kvs__slabs *s)
{
  unsigned char *p = NULL;
  if (!s->off) {
    pthread_mutex_lock(&s->mu);
    p = s->spare;
    s->spare = NULL;
    if (!s->started)
      helper_start(s);
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
  }
  if (p)
    s->spares_taken++;
  else if (!(p = slab_map()))
    return NULL;
  s->made++;
  *(void **)p = s->list; /* the slab list lives in the slabs' first bytes */
  s->list = p;
  return p;
}

int kvs__slabs_spare_ready(kvs__slabs *s, unsigned ms)
{
  struct timespec dl;
  clock_gettime(CLOCK_REALTIME, &dl);
  dl.tv_sec += ms / 1000u;
  dl.tv_nsec += (long)(ms % 1000u) * 1000000L;
  if (dl.tv_nsec >= 1000000000L) {
    dl.tv_sec++;
    dl.tv_nsec -= 1000000000L;
  }
  pthread_mutex_lock(&s->mu);
  while (!s->spare && s->started && !s->stop)
    if (pthread_cond_timedwait(&s->cv, &s->mu, &dl) == ETIMEDOUT)
      break;
  const int ready = s->spare != NULL;
  pthread_mutex_unlock(&s->mu);
  return ready;
}

void kvs__slabs_close(kvs__slabs *s)
{
  pthread_mutex_lock(&s->mu);
  s->stop = 1;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
  if (s->started)
    pthread_join(s->th, NULL);
  s->started = 0;
  if (s->spare)
    munmap(s->spare, REC_SLAB);
  s->spare = NULL;
  while (s->list) {
    void *p = s->list;
    s->list = *(void **)p;
    munmap(p, REC_SLAB);
  }
  pthread_mutex_destroy(&s->mu);
  pthread_cond_destroy(&s->cv);
}

/* Bytes of a free stack of cap entries (whole pages). */
static size_t stack_bytes(size_t cap)
{
  return (cap * sizeof(void *) + 4095u) & ~(size_t)4095u;
}

/* A free stack of twice the entries (or 1,024). Mapped, and grown with
 * mremap, which moves the pages instead of copying them: a realloc that
 * copied a stack of 64 Ki entries into freshly faulted memory stalled a
 * bulk put for ~370 us on the H200 host (HACKING.md Decision 55). */
static int stack_grow(kvs__recs *r, uint32_t lines)
{
  const size_t cap = r->cap[lines] ? 2 * r->cap[lines] : 1024;
  void *s = r->free[lines]
                ? mremap(r->free[lines], stack_bytes(r->cap[lines]), stack_bytes(cap), MREMAP_MAYMOVE)
                : mmap(NULL, stack_bytes(cap), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (s == MAP_FAILED)
    return -ENOMEM;
  r->free[lines] = s;
  r->cap[lines] = cap;
  return 0;
}

void *kvs__rec_cut(kvs__recs *r, kvs__slabs *slabs, uint32_t lines)
{
  const size_t rs = (size_t)lines * 64u;
  /* the stack grows first, so that every record made has a place there
   * (kvs__rec_put cannot fail) */
  if (r->made[lines] == r->cap[lines] && stack_grow(r, lines) < 0)
    return NULL;
  if (!r->next[lines] || r->next[lines] + rs > r->end[lines]) {
    unsigned char *p = slab_new(slabs);
    if (!p)
      return NULL;
    r->next[lines] = p + 64;
    r->end[lines] = p + REC_SLAB;
  }
  void *b = r->next[lines];
  r->next[lines] += rs;
  r->made[lines]++;
  /* a fresh slab's lines come from memory, not the caches: asked for
   * far enough ahead that they arrive in parallel */
  for (size_t o = 0; r->next[lines] + CUT_AHEAD * rs <= r->end[lines] && o < rs; o += 64)
    __builtin_prefetch(r->next[lines] + CUT_AHEAD * rs + o, 1);
  return b;
}

void kvs__recs_reset(kvs__recs *r)
{
  for (uint32_t i = 0; i < KVS_REC_LINES; i++)
    if (r->free[i])
      munmap(r->free[i], stack_bytes(r->cap[i]));
  *r = (kvs__recs){0};
}

