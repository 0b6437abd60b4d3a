/* SPDX-License-Identifier: MIT */
/* All systemd integration: readiness/status notifications, socket
 * activation, watchdog. Works with libsystemd or with the plain
 * NOTIFY_SOCKET / LISTEN_FDS protocol when built without it. */
#ifndef KVS_DAEMON_SYSTEMD_H
#define KVS_DAEMON_SYSTEMD_H

#include <stdint.h>

/* Send one notification ("READY=1", "STATUS=..."). No-op without
 * NOTIFY_SOCKET. Returns >0 sent, 0 not under systemd, <0 error. */
int kvs__sd_notify(const char *state);
int kvs__sd_notifyf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Number of sockets passed by socket activation (first fd is 3), 0 when
 * none; unsets the variables. */
int kvs__sd_listen_fds(void);
/* Watchdog interval in microseconds, 0 when disabled. */
uint64_t kvs__sd_watchdog_usec(void);

#define KVS_SD_LISTEN_FDS_START 3

#endif
