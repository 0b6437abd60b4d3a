#!/bin/sh
# SPDX-License-Identifier: MIT
# SIGTERM: connected clients are closed, exit status 0. A second SIGTERM
# while a session still drains its replies exits at once with status 1.
# A client that never reads cannot hold a single SIGTERM for longer than the
# drain timeout (KVS_DRAIN_MS, 10 s): the daemon closes it and exits 0.
. "${top_srcdir:-.}/tests/lib/daemon.sh"

start_daemon
raw send "$HELLO" recv send '{"op":"ping","id":2}' recv eof >"$T/c1" 2>&1 &
C1=$!
i=0
until grep -q '"id"=>2}' "$T/c1" 2>/dev/null; do
  i=$((i + 1)); [ $i -gt 100 ] && fail "client got no reply: $(cat "$T/c1")"; sleep 0.1
done
stop_daemon
wait $C1 || fail "client: $(cat "$T/c1")"
grep -q closed "$T/c1" || fail "client was not closed: $(cat "$T/c1")"
[ -e "$SOCK" ] && fail "socket left behind"

# A client that never reads keeps replies queued, so the first SIGTERM
# waits; the second one must end the daemon at once with status 1.
# flood_client MS: a fresh daemon and a client that sends many requests and
# reads nothing for MS milliseconds; then the first SIGTERM. Sets FLOOD.
flood_client() {
  start_daemon
  timeout $(($1 / 1000 + 10)) "$RAW" "$SOCK" flood 200000 wait "$1" >/dev/null 2>&1 &
  FLOOD=$!
  i=0
  until grep -q 'session 2: connected' "$LOG"; do
    i=$((i + 1)); [ $i -gt 100 ] && fail "flood client did not connect"; sleep 0.1
  done
  sleep 1
  kill -TERM "$DPID"
}

flood_client 20000
i=0
until grep -q 'SIGTERM: finishing' "$LOG"; do
  i=$((i + 1)); [ $i -gt 100 ] && fail "first SIGTERM not seen"; sleep 0.1
done
kill -0 "$DPID" 2>/dev/null || fail "daemon did not wait for the draining session"
kill -TERM "$DPID"
wait "$DPID"
rc=$?
DPID=
kill $FLOOD 2>/dev/null
[ $rc -eq 1 ] || fail "second SIGTERM: exit status $rc, want 1"
grep -q 'second SIGTERM' "$LOG" || fail "no log line for the second SIGTERM"

flood_client 50000
wait "$DPID"
rc=$?
DPID=
kill $FLOOD 2>/dev/null
[ $rc -eq 0 ] || fail "drain timeout: exit status $rc, want 0"
grep -q 'still open after' "$LOG" || fail "no log line for the drain timeout"
echo ok
