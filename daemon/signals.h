/* SPDX-License-Identifier: MIT */
/* SIGTERM/SIGINT: stop (a second one exits at once with 1); SIGHUP:
 * reload. The callbacks keep this file free of the server. */
#ifndef KVS_DAEMON_SIGNALS_H
#define KVS_DAEMON_SIGNALS_H

#include <uv.h>

typedef struct kvs__signals {
  uv_signal_t term, intr, hup;
  void (*on_stop)(void *arg);
  void (*on_reload)(void *arg);
  void *arg;
  int stopping;
  int closed;
} kvs__signals;

void kvs__signals_init(kvs__signals *sg, uv_loop_t *loop, void (*on_stop)(void *),
                       void (*on_reload)(void *), void *arg);
/* Close the handles so the loop can end. */
void kvs__signals_close(kvs__signals *sg);

#endif
