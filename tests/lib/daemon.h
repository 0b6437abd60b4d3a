/* SPDX-License-Identifier: MIT */
/* The one way C tests start a kvsinkd: a private temporary directory with
 * the socket, the log, a private configuration and an empty profiles
 * directory, so an installed /etc/kvsink cannot change what tests see.
 * The shell twin is tests/lib/daemon.sh. */
#ifndef KVSTEST_DAEMON_H
#define KVSTEST_DAEMON_H
#include <stddef.h>
#include <sys/types.h>

typedef struct kvstest_daemon {
  pid_t pid;
  char dir[256];      /* private temporary directory */
  char sock[300];     /* dir/kvsinkd.sock */
  char conf[300];     /* dir/kvsinkd.conf */
  char profiles[300]; /* dir/profiles, empty */
  char log[300];      /* dir/log: the daemon's stderr and stdout */
} kvstest_daemon;

/* Start build/daemon/kvsinkd ($top_builddir, else the build tree this was
 * compiled in). conf: extra "key = value" lines (NULL-terminated, may be
 * NULL); args: extra command-line options (NULL-terminated, may be NULL).
 * Waits until the socket accepts connections. 0, or -1 with a message on
 * stderr (the log is printed). */
int kvstest_daemon_start(kvstest_daemon *d, const char *const *conf, const char *const *args);
/* SIGTERM and wait (SIGKILL after timeout_s). Returns the exit status, or
 * -1 when it had to be killed or died of a signal. Removes the directory. */
int kvstest_daemon_stop(kvstest_daemon *d, int timeout_s);
/* Resident set of the daemon in KiB from /proc (-1 when unreadable). */
long kvstest_daemon_rss_kb(const kvstest_daemon *d);
/* Print the last lines of the daemon's log to stderr. */
void kvstest_daemon_dump_log(const kvstest_daemon *d);
#endif
