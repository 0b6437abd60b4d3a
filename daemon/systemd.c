/* SPDX-License-Identifier: MIT */
/* The only file that knows about systemd. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <fcntl.h>

#include "daemon/systemd.h"

#ifdef HAVE_SYSTEMD
#include <systemd/sd-daemon.h>

int kvs__sd_notify(const char *state) { return sd_notify(0, state); }

int kvs__sd_listen_fds(void) { return sd_listen_fds(1); }

uint64_t kvs__sd_watchdog_usec(void)
{
  uint64_t usec = 0;
  return sd_watchdog_enabled(0, &usec) > 0 ? usec : 0;
}

#else

int kvs__sd_notify(const char *state)
{
  const char *path = getenv("NOTIFY_SOCKET");
  if (!path || !*path) return 0;
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  size_t n = strlen(path);
  if ((path[0] != '/' && path[0] != '@') || n >= sizeof sa.sun_path) return -EINVAL;
  memcpy(sa.sun_path, path, n);
  if (path[0] == '@') sa.sun_path[0] = 0; /* abstract namespace */
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  ssize_t r = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa,
                     (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n));
  int e = errno;
  close(fd);
  return r < 0 ? -e : 1;
}

static int env_ulong(const char *name, unsigned long long *out)
{
  const char *v = getenv(name);
  if (!v || !*v) return -ENOENT;
  char *end;
  errno = 0;
  unsigned long long x = strtoull(v, &end, 10);
  if (errno || *end) return -EINVAL;
  *out = x;
  return 0;
}

int kvs__sd_listen_fds(void)
{
  unsigned long long pid, n;
  int r = 0;
  if (env_ulong("LISTEN_PID", &pid) == 0 && pid == (unsigned long long)getpid() &&
      env_ulong("LISTEN_FDS", &n) == 0 && n > 0 && n < 1024) {
    for (int fd = KVS_SD_LISTEN_FDS_START; fd < KVS_SD_LISTEN_FDS_START + (int)n; fd++)
      fcntl(fd, F_SETFD, FD_CLOEXEC);
    r = (int)n;
  }
  unsetenv("LISTEN_PID");
  unsetenv("LISTEN_FDS");
  unsetenv("LISTEN_FDNAMES");
  return r;
}

uint64_t kvs__sd_watchdog_usec(void)
{
  unsigned long long usec, pid;
  if (env_ulong("WATCHDOG_USEC", &usec) < 0 || usec == 0) return 0;
  if (env_ulong("WATCHDOG_PID", &pid) == 0 && pid != (unsigned long long)getpid()) return 0;
  return usec;
}

#endif

int kvs__sd_notifyf(const char *fmt, ...)
{
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return kvs__sd_notify(buf);
}
