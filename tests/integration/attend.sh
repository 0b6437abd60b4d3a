#!/bin/sh
# SPDX-License-Identifier: MIT
# Attend (issue 12): block tables and kvs_attend against a real kvsinkd.
# kvs_attend over the mapped blocks equals get-then-attend in double at
# 2, 3 and 4 bits; the chunk fds are read-only; a table's blocks survive
# a full pool and are evicted after release.
. "${top_srcdir:-.}/tests/lib/daemon.sh"
AT=$top_builddir/tests/integration/attend-itest
[ -x "$AT" ] || fail "$AT not built"
start_daemon --device host # block tables: host pools only
for b in 2 3 4; do
  timeout 120 "$AT" "$SOCK" check "$b" || fail "attend at $b bits"
done
timeout 60 "$AT" "$SOCK" readonly || fail "read-only chunks"
stop_daemon
# a small pool, so that a few seqs fill it
start_daemon --device host --pool-size 4M
timeout 120 "$AT" "$SOCK" pressure || fail "pinned blocks under pool pressure"
stop_daemon
# table_chunks bounds the chunk fds one session is passed
daemon_conf 'table_chunks = 2'
start_daemon --device host
timeout 120 "$AT" "$SOCK" quota || fail "table_chunks"
stop_daemon
echo "attend ok"
