#!/bin/sh
# SPDX-License-Identifier: MIT
# A client putting in a loop is SIGKILLed mid-stream, several times; the
# cache then holds only whole, correct blocks, nothing stays pinned, and
# the daemon keeps serving.
. "${top_srcdir:-.}/tests/lib/daemon.sh"
start_daemon
total=0
for round in 1 2 3 4 5; do
  # no timeout(1) wrapper: the SIGKILL must hit the client itself
  "$ITEST" "$SOCK" putloop $((30 + round)) > "$T/loop.log" 2>&1 &
  lp=$!
  # the round must have data to find: wait for the first acknowledged put
  i=0
  until grep -q '^acked' "$T/loop.log"; do
    i=$((i + 1))
    kill -0 "$lp" 2>/dev/null || { cat "$T/loop.log"; fail "putloop ended before its first put"; }
    [ $i -gt 600 ] && fail "putloop stored nothing in 60 s"
    sleep 0.1
  done
  # then a pseudo-random moment, 0 .. 0.5 s: early ones land mid-pass
  sleep "0.$(printf %03d $(( ($$ * round * 7919) % 500 )))"
  kill -KILL "$lp" 2>/dev/null
  wait "$lp" 2>/dev/null
  grep -q FAIL "$T/loop.log" && { cat "$T/loop.log"; fail "putloop failed before the kill"; }
  grep -q "kvs-itest:" "$T/loop.log" && { cat "$T/loop.log"; fail "putloop error"; }
  # K acknowledged groups must be there; one more whose frame was sent whole
  # may be too (96 groups: a full pass)
  k=$(grep '^acked' "$T/loop.log" | tail -n 1 | cut -d' ' -f2)
  hi=$((k + 1)); [ $hi -gt 96 ] && hi=96
  timeout 60 "$ITEST" "$SOCK" verify $((30 + round)) --expect "$k:$hi" || fail "verify after kill $round"
  total=$((total + k))
  ctl ping >/dev/null || fail "ping after kill $round"
done
"$KVSINKCTL" --socket "$SOCK" stats >/dev/null || fail "stats"
# the daemon notices the dead peers asynchronously: poll briefly
i=0
while [ "$(stat_field blocks_pinned)" != 0 ]; do
  i=$((i + 1)); [ $i -lt 300 ] || fail "pinned blocks leaked"; sleep 0.1
done
stop_daemon
echo "client-kill ok ($total acknowledged groups checked over 5 kills)"
