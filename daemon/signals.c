/* SIGTERM/SIGINT: graceful stop, a second one exits at once with 1.
 * SIGHUP: reload the config. */
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include "daemon/log.h"
#include "daemon/server.h"
#include "daemon/systemd.h"

static void on_term(uv_signal_t *h, int signum)
{
  kvs__server *s = h->data;
  if (s->stopping) {
    kvs__notice("second %s: exiting now", signum == SIGINT ? "SIGINT" : "SIGTERM");
    _exit(1);
  }
  kvs__notice("%s: finishing requests in flight and stopping",
              signum == SIGINT ? "SIGINT" : "SIGTERM");
  kvs__server_stop(s);
}

static void on_hup(uv_signal_t *h, int signum)
{
  (void)signum;
  kvs__server *s = h->data;
  char msg[KVS_CONF_ERRMSG];
  kvs__server_reload(s, msg);
}

void kvs__server_signals_init(kvs__server *s)
{
  signal(SIGPIPE, SIG_IGN);
  uv_signal_init(s->loop, &s->sig_term);
  uv_signal_init(s->loop, &s->sig_int);
  uv_signal_init(s->loop, &s->sig_hup);
  s->sig_term.data = s->sig_int.data = s->sig_hup.data = s;
  uv_signal_start(&s->sig_term, on_term, SIGTERM);
  uv_signal_start(&s->sig_int, on_term, SIGINT);
  uv_signal_start(&s->sig_hup, on_hup, SIGHUP);
}
