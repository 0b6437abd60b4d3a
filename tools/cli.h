/* SPDX-License-Identifier: MIT */
/* What kvsink-demo, kvsink-bench and kvsink-calibrate share on the
 * command line: GNU-style --version, usage errors that name the culprit,
 * number and size arguments, and one set of exit codes. */
#ifndef KVS_TOOLS_CLI_H
#define KVS_TOOLS_CLI_H

#include <stddef.h>

/* exit codes, documented in each program's man page (EXIT STATUS) */
enum {
  KVS__EXIT_OK = 0,
  KVS__EXIT_FAIL = 1,    /* a step failed (the message says which) */
  KVS__EXIT_USAGE = 2,   /* bad command line: nothing was done */
  KVS__EXIT_CONNECT = 3, /* the daemon could not be reached (demo, bench) */
};

/* "PROG (kvsink) X.Y.Z" and the library's version when it differs. */
void kvs__cli_version(const char *prog);

/* "PROG: <message>" and "Try 'PROG --help' ..." on stderr; returns
 * KVS__EXIT_USAGE. fmt may be NULL when getopt already said what was wrong. */
int kvs__cli_usage_error(const char *prog, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* An integer in [lo, hi], the whole string; 0 or -1. */
int kvs__cli_long(const char *s, long lo, long hi, long *out);

/* Bytes with an optional K, M, G suffix (powers of 1024); 0 or -1. */
int kvs__cli_size(const char *s, size_t *out);

/* For --help: "B", "KiB", "MiB" or "GiB" with one decimal. */
const char *kvs__cli_bytes(size_t n, char *buf, size_t len);

#endif
