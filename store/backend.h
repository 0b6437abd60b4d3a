/* SPDX-License-Identifier: MIT */
/* Store backends the daemon can open. The host backend is in store.h;
 * the CUDA one lives in daemon/backend_cuda.c (built only with CUDA). */
#ifndef KVS_DAEMON_BACKEND_H
#define KVS_DAEMON_BACKEND_H

#include "store/store.h"

#ifdef HAVE_CUDA
/* Open GPU `device` (cuda:N); NULL with a reason in errmsg (256 bytes)
 * when no usable GPU is there. */
kvs__backend *kvs__backend_cuda_open(int device, char *errmsg);
void kvs__backend_cuda_close(kvs__backend *b);
#endif

#endif
