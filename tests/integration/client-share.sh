#!/bin/sh
# SPDX-License-Identifier: MIT
# Four clients at once: one stores a prefix, three find it with lookup
# and read bitwise the same data; each also stores and checks its own.
. "${top_srcdir:-.}/tests/lib/daemon.sh"
start_daemon
marker=$T/prefix.bin
pids=
for i in 1 2 3; do
  timeout 120 "$ITEST" "$SOCK" share 11 6 "$marker" $((20 + i)) > "$T/share$i.log" 2>&1 &
  pids="$pids $!"
done
timeout 120 "$ITEST" "$SOCK" store 11 6 "$marker" || fail "storing client"
rc=0
for p in $pids; do wait "$p" || rc=1; done
[ $rc -eq 0 ] || { cat "$T"/share*.log; fail "a sharing client"; }
[ "$(stat_field blocks_pinned)" = 0 ] || fail "blocks still pinned with no client"
stop_daemon
echo "client-share ok"
