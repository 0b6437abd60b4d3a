/* SPDX-License-Identifier: MIT */
/* kvsinkd logging: syslog-style levels; "<N>" prefixes under systemd,
 * "kvsinkd: level: msg" in the foreground. */
#ifndef KVS_DAEMON_LOG_H
#define KVS_DAEMON_LOG_H

enum { KVS_LOG_ERR = 3, KVS_LOG_WARNING = 4, KVS_LOG_NOTICE = 5, KVS_LOG_INFO = 6, KVS_LOG_DEBUG = 7 };

/* Reads JOURNAL_STREAM / NOTIFY_SOCKET once to pick the format. */
void kvs__log_init(void);
void kvs__log_set_level(int level);
int kvs__log_level(void);
/* Parses "debug".."err"; returns the level or -EINVAL. */
int kvs__log_level_parse(const char *s);
const char *kvs__log_level_name(int level);
void kvs__log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define kvs__err(...) kvs__log(KVS_LOG_ERR, __VA_ARGS__)
#define kvs__warn(...) kvs__log(KVS_LOG_WARNING, __VA_ARGS__)
#define kvs__notice(...) kvs__log(KVS_LOG_NOTICE, __VA_ARGS__)
#define kvs__info(...) kvs__log(KVS_LOG_INFO, __VA_ARGS__)
#define kvs__debug(...) kvs__log(KVS_LOG_DEBUG, __VA_ARGS__)

#endif
