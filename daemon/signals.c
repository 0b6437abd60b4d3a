/* SPDX-License-Identifier: MIT */
/* SIGTERM/SIGINT: graceful stop, a second one exits at once with 1.
 * SIGHUP: reload the config. */
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include "daemon/log.h"
#include "daemon/signals.h"

static void on_term(uv_signal_t *h, int signum)
{
  kvs__signals *sg = h->data;
  const char *name = signum == SIGINT ? "SIGINT" : "SIGTERM";
  if (sg->stopping) {
    kvs__notice("second %s: exiting now", name);
    _exit(1);
  }
  sg->stopping = 1;
  kvs__notice("%s: finishing requests in flight and stopping", name);
  sg->on_stop(sg->arg);
}

static void on_hup(uv_signal_t *h, int signum)
{
  (void)signum;
  kvs__signals *sg = h->data;
  sg->on_reload(sg->arg);
}

void kvs__signals_init(kvs__signals *sg, uv_loop_t *loop, void (*on_stop)(void *),
                       void (*on_reload)(void *), void *arg)
{
  signal(SIGPIPE, SIG_IGN);
  sg->on_stop = on_stop;
  sg->on_reload = on_reload;
  sg->arg = arg;
  uv_signal_init(loop, &sg->term);
  uv_signal_init(loop, &sg->intr);
  uv_signal_init(loop, &sg->hup);
  sg->term.data = sg->intr.data = sg->hup.data = sg;
  uv_signal_start(&sg->term, on_term, SIGTERM);
  uv_signal_start(&sg->intr, on_term, SIGINT);
  uv_signal_start(&sg->hup, on_hup, SIGHUP);
}

void kvs__signals_close(kvs__signals *sg)
{
  if (sg->closed) return;
  sg->closed = 1;
  uv_close((uv_handle_t *)&sg->term, NULL);
  uv_close((uv_handle_t *)&sg->intr, NULL);
  uv_close((uv_handle_t *)&sg->hup, NULL);
}
