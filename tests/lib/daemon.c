/* SPDX-License-Identifier: MIT */
/* kvstest_daemon: see daemon.h. */
#include "tests/lib/daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef KVSTEST_BUILDDIR
#define KVSTEST_BUILDDIR "."
#endif

static void sleep_ms(long ms)
{
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
}

static int can_connect(const char *path)
{
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  size_t n = strlen(path);
  if (n >= sizeof a.sun_path)
    return 0;
  memcpy(a.sun_path, path, n + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return 0;
  int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
  close(fd);
  return ok;
}

static void rm_dir(kvstest_daemon *d)
{
  char cmd[600];
  if (!d->dir[0])
    return;
  /* the directory holds only what this helper and the daemon wrote */
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", d->dir);
  if (system(cmd) != 0)
    fprintf(stderr, "kvstest: could not remove %s\n", d->dir);
  d->dir[0] = 0;
}

void kvstest_daemon_dump_log(const kvstest_daemon *d)
{
  char cmd[400];
  snprintf(cmd, sizeof cmd, "tail -n 40 '%s' >&2", d->log);
  if (system(cmd) != 0)
    fprintf(stderr, "kvstest: no log at %s\n", d->log);
}

int kvstest_daemon_start(kvstest_daemon *d, const char *const *conf, const char *const *args)
{
  memset(d, 0, sizeof *d);
  const char *tmp = getenv("TMPDIR");
  snprintf(d->dir, sizeof d->dir, "%s/kvstest.XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(d->dir)) {
    fprintf(stderr, "kvstest: mkdtemp: %s\n", strerror(errno));
    d->dir[0] = 0;
    return -1;
  }
  snprintf(d->sock, sizeof d->sock, "%s/kvsinkd.sock", d->dir);
  snprintf(d->conf, sizeof d->conf, "%s/kvsinkd.conf", d->dir);
  snprintf(d->profiles, sizeof d->profiles, "%s/profiles", d->dir);
  snprintf(d->log, sizeof d->log, "%s/log", d->dir);
  FILE *f = fopen(d->conf, "w");
  if (!f || mkdir(d->profiles, 0700) < 0) {
    fprintf(stderr, "kvstest: %s: %s\n", d->dir, strerror(errno));
    if (f)
      fclose(f);
    rm_dir(d);
    return -1;
  }
  fprintf(f, "profiles_dir = %s\n", d->profiles);
  for (const char *const *l = conf; l && *l; l++)
    fprintf(f, "%s\n", *l);
  if (fclose(f) != 0) {
    rm_dir(d);
    return -1;
  }

  const char *top = getenv("top_builddir");
  char bin[600];
  snprintf(bin, sizeof bin, "%s/daemon/kvsinkd", top && *top ? top : KVSTEST_BUILDDIR);
  const char *argv[64];
  int n = 0;
  /* later options override these defaults, as in daemon.sh */
  const char *fixed[] = {bin, "--foreground", "--config", d->conf, "--socket", d->sock,
                         "--pool-size", "64M", "--device", "host", "--log-level", "info"};
  for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++)
    argv[n++] = fixed[i];
  for (const char *const *a = args; a && *a && n < 63; a++)
    argv[n++] = *a;
  argv[n] = NULL;

  int logfd = open(d->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (logfd < 0) {
    rm_dir(d);
    return -1;
  }
  pid_t pid = fork();
  if (pid < 0) {
    close(logfd);
    rm_dir(d);
    return -1;
  }
  if (pid == 0) {
    dup2(logfd, 1);
    dup2(logfd, 2);
    execv(bin, (char *const *)argv);
    fprintf(stderr, "kvstest: exec %s: %s\n", bin, strerror(errno));
    _exit(127);
  }
  close(logfd);
  d->pid = pid;
  /* bind comes before listen: wait until a connect succeeds (60 s) */
  for (int i = 0; !can_connect(d->sock); i++) {
    int st;
    if (waitpid(pid, &st, WNOHANG) == pid) {
      fprintf(stderr, "kvstest: kvsinkd exited at start\n");
      kvstest_daemon_dump_log(d);
      d->pid = 0;
      rm_dir(d);
      return -1;
    }
    if (i > 600) {
      fprintf(stderr, "kvstest: kvsinkd did not listen on %s\n", d->sock);
      kvstest_daemon_dump_log(d);
      kvstest_daemon_stop(d, 5);
      return -1;
    }
    sleep_ms(100);
  }
  return 0;
}

int kvstest_daemon_stop(kvstest_daemon *d, int timeout_s)
{
  int rc = -1, st;
  if (d->pid > 0) {
    kill(d->pid, SIGTERM);
    pid_t w = 0;
    for (int i = 0; i < timeout_s * 10 && (w = waitpid(d->pid, &st, WNOHANG)) == 0; i++)
      sleep_ms(100);
    if (w == d->pid) {
      rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    } else {
      fprintf(stderr, "kvstest: kvsinkd did not stop in %d s: killed\n", timeout_s);
      kill(d->pid, SIGKILL);
      waitpid(d->pid, &st, 0);
    }
    if (rc != 0)
      kvstest_daemon_dump_log(d);
    d->pid = 0;
  }
  rm_dir(d);
  return rc;
}

long kvstest_daemon_rss_kb(const kvstest_daemon *d)
{
  char path[64], line[256];
  long kb = -1;
  snprintf(path, sizeof path, "/proc/%d/status", (int)d->pid);
  FILE *f = fopen(path, "r");
  if (!f)
    return -1;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmRSS: %ld", &kb) == 1)
      break;
  fclose(f);
  return kb;
}
