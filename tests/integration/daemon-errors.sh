#!/bin/sh
# SPDX-License-Identifier: MIT
# Errors that must name the right cause: an unknown op's bytes are never
# echoed raw, max_sessions answers -EUSERS, a socket in a missing directory
# is reported as a missing directory.
. "${top_srcdir:-.}/tests/lib/daemon.sh"

daemon_conf 'max_sessions = 2'
start_daemon --pool-size 16M
# {"id":9,"op":"\e[2J\xff\0A"}: control bytes, invalid UTF-8 and a NUL
out=$(raw raw 0000001082a2696409a26f70a71b5b324aff0041 recv) || fail "unknown op: $out"
echo "$out" | grep -q '"id"=>9, "err"=>\[-71,' || fail "unknown op must be -EPROTO: $out"
echo "$out" | grep -qF 'unknown op "\x1b[2J\xff\x00A"' ||
  fail "unknown op must be quoted in hex: $out"
printf '%s' "$out" | LC_ALL=C grep -q "$(printf '\033')" && fail "raw escape byte echoed"
grep -q "$(printf '\033')" "$LOG" && fail "raw escape byte logged"

# max_sessions = 2: the third connection gets -EUSERS with id 0. The two
# holders keep their slots until the daemon stops (a fixed hold could
# expire on a loaded machine), and the wait counts only connections made
# after this point (earlier sessions are in the log too).
before=$(grep -c 'connected, pid' "$LOG")
timeout 60 "$RAW" "$SOCK" send '{"op":"ping","id":1}' recv eof >"$T/h1" 2>&1 &
p1=$!
timeout 60 "$RAW" "$SOCK" send '{"op":"ping","id":1}' recv eof >"$T/h2" 2>&1 &
p2=$!
i=0
until [ "$(grep -c 'connected, pid' "$LOG")" -ge $((before + 2)) ]; do
  i=$((i + 1)); [ $i -gt 300 ] && fail "the two sessions did not connect"; sleep 0.1
done
out=$(raw recv 2>&1)
echo "$out" | grep -q '"id"=>0, "err"=>\[-87, "too many sessions' || fail "third session: $out"
stop_daemon
wait $p1 || fail "first holder: $(cat "$T/h1")"
wait $p2 || fail "second holder: $(cat "$T/h2")"

# a socket whose directory does not exist
"$KVSINKD" --foreground --socket "$T/no/such/dir/k.sock" --pool-size 16M --device host \
  2>"$LOG" && fail "kvsinkd started without its socket directory"
grep -q "directory $T/no/such/dir does not exist" "$LOG" || fail "missing directory not named"
grep -qi "permission denied" "$LOG" && fail "a missing directory is not a permission problem"
echo ok
