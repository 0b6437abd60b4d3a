/* SPDX-License-Identifier: MIT */
/* Pool memory made of one memfd per chunk (exportable host pools). */
#ifndef KVS_STORE_MEMFD_H
#define KVS_STORE_MEMFD_H

#include <stddef.h>

/* Reserve n * chunk bytes and map memfd i at *base + i * chunk, read-write
 * and shared; the fd of chunk i is stored as an int at byte fd_off of
 * element i of units (stride bytes apart). Raises the soft fd limit when
 * n fds would not fit under it. 0 or -errno (nothing is left behind). */
int kvs__memfd_pool_map(size_t n, size_t chunk, void **base, void *units, size_t stride,
                        size_t fd_off);
/* Map a fresh memfd over [addr, addr + chunk) and retire *fd (its pages
 * are freed, so whoever still maps it reads zeros); *fd becomes the new
 * one. On error nothing changed. */
int kvs__memfd_chunk_replace(void *addr, size_t chunk, int *fd);

#endif
