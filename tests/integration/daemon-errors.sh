#!/bin/sh
# Errors that must name the right cause: an unknown op's bytes are never
# echoed raw, max_sessions answers -EUSERS, a socket in a missing directory
# is reported as a missing directory.
. "${top_srcdir:-.}/tests/lib/daemon.sh"

daemon_conf; printf 'max_sessions = 2\n'  >>"$CONF"
start_daemon --config "$CONF"
# {"id":9,"op":"\e[2J\xff\0A"}: control bytes, invalid UTF-8 and a NUL
out=$(raw raw 0000001082a2696409a26f70a71b5b324aff0041 recv) || fail "unknown op: $out"
echo "$out" | grep -q '"id"=>9, "err"=>\[-71,' || fail "unknown op must be -EPROTO: $out"
echo "$out" | grep -qF 'unknown op "\x1b[2J\xff\x00A"' ||
  fail "unknown op must be quoted in hex: $out"
printf '%s' "$out" | LC_ALL=C grep -q "$(printf '\033')" && fail "raw escape byte echoed"
grep -q "$(printf '\033')" "$LOG" && fail "raw escape byte logged"

# max_sessions = 2: the third connection gets -EUSERS with id 0
timeout 20 "$RAW" "$SOCK" send '{"op":"ping","id":1}' recv wait 3000 >/dev/null &
p1=$!
timeout 20 "$RAW" "$SOCK" send '{"op":"ping","id":1}' recv wait 3000 >/dev/null &
p2=$!
i=0
until [ "$(grep -c 'connected, pid' "$LOG")" -ge 3 ]; do # start_daemon's ping + 2
  i=$((i + 1)); [ $i -gt 100 ] && fail "the two sessions did not connect"; sleep 0.1
done
out=$(raw recv 2>&1)
echo "$out" | grep -q '"id"=>0, "err"=>\[-87, "too many sessions' || fail "third session: $out"
wait $p1 $p2
stop_daemon

# a socket whose directory does not exist
"$KVSINKD" --foreground --socket "$T/no/such/dir/k.sock" --pool-size 16M --device host \
  2>"$LOG" && fail "kvsinkd started without its socket directory"
grep -q "directory $T/no/such/dir does not exist" "$LOG" || fail "missing directory not named"
grep -qi "permission denied" "$LOG" && fail "a missing directory is not a permission problem"
echo ok
