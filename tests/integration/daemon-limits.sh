#!/bin/sh
# SPDX-License-Identifier: MIT
# Per-session limits: a data session without hello and a partial frame are
# closed after their timeouts, one uid's sessions are capped, and a client
# that never reads its replies cannot make the daemon queue them without
# bound (its reads pause; the daemon's RSS stays flat).
. "${top_srcdir:-.}/tests/lib/daemon.sh"
ADM=$T/kvsinkd.admin.sock

daemon_conf 'hello_timeout = 1' 'frame_timeout = 1' 'max_sessions_per_uid = 2'
start_daemon --pool-size 16M

# no hello: closed within a few seconds (the check runs every second)
out=$(timeout 20 "$RAW" "$SOCK" eof) || fail "a session without hello must be closed: $out"
echo "$out" | grep -qx closed || fail "no hello: $out"
grep -q "no hello in 1 s, closing" "$LOG" || fail "the hello timeout must be logged"
# the admin socket needs no hello, so it has no such deadline
out=$(timeout 20 "$RAW" "$ADM" wait 2500 send '{"op":"ping","id":4}' recv) ||
  fail "admin connection closed for want of hello: $out"
# hello done, then 3 bytes of a frame header and nothing more
out=$(raw send "$HELLO" recv raw 000000 eof) || fail "partial frame: $out"
echo "$out" | tail -1 | grep -qx closed || fail "a partial frame must time out: $out"
grep -q "a partial frame waited 1 s, closing" "$LOG" || fail "the frame timeout must be logged"

# two sessions of this uid are open: the third is refused with -EUSERS
# (the holders keep their slots until the daemon stops: a fixed hold could
# expire on a loaded machine; only hellos after this point are counted)
before=$(grep -c 'hello from' "$LOG")
timeout 60 "$RAW" "$SOCK" send "$HELLO" recv eof >/dev/null &
a=$!
timeout 60 "$RAW" "$SOCK" send "$HELLO" recv eof >/dev/null &
b=$!
i=0
until [ "$(grep -c 'hello from' "$LOG")" -ge $((before + 2)) ]; do
  i=$((i + 1)); [ $i -gt 300 ] && fail "the two sessions did not start"; sleep 0.1
done
out=$(raw recv 2>&1)
echo "$out" | grep -q '"id"=>0, "err"=>\[-87, "too many sessions of uid [0-9]* (max_sessions_per_uid = 2)' ||
  fail "third session of one uid: $out"
# the admin socket is not counted
out=$(timeout 20 "$RAW" "$ADM" send '{"op":"ping","id":5}' recv) || fail "admin while capped: $out"
stop_daemon
wait $a || fail "first holder"
wait $b || fail "second holder"

# A client floods stats requests (15 bytes in, ~700 bytes out) and never
# reads. With max_reply_queue = 64K the daemon stops reading it, so the
# client's sends block well before 200 chunks of 1000 requests; without
# the cap the daemon would queue ~140 MB of replies.
daemon_conf 'max_reply_queue = 64K'
start_daemon --pool-size 16M
rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$DPID/status"; }
r0=$(rss)
python3 - "$SOCK" >"$T/flood" <<'PY' &
import socket, struct, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
body = b"\x82\xa2op\xa5stats\xa2id\x01"
chunk = (struct.pack(">I", len(body)) + body) * 1000
s.settimeout(3.0)
sent = 0
try:
    while sent < 200:
        s.sendall(chunk)
        sent += 1
except socket.timeout:
    pass
print(sent, flush=True)
time.sleep(3)  # hold the connection (and the daemon's queue) for the RSS reading
PY
fp=$!
i=0
until [ -s "$T/flood" ]; do
  i=$((i + 1)); [ $i -gt 300 ] && fail "the flood did not finish"; sleep 0.1
done
r1=$(rss)
sent=$(cat "$T/flood")
echo "flood: $sent chunks sent before blocking; VmRSS $r0 kB -> $r1 kB"
# the daemon still serves others meanwhile
out=$(raw send '{"op":"ping","id":6}' recv) || fail "ping during the flood: $out"
[ "$sent" -lt 200 ] || fail "the daemon read every request of a client that does not read"
[ "$r1" -le $((r0 + 16384)) ] || fail "RSS grew from $r0 kB to $r1 kB"
grep -q "reads paused" "$LOG" || fail "the pause must be logged (debug)"
wait $fp
stop_daemon

# the 16-bit residual budget comes from the configuration (default: the
# pool size)
daemon_conf
start_daemon --pool-size 16M
[ "$(stat_field residual_limit_bytes)" = 16777216 ] || fail "residual budget default: $(stat_field residual_limit_bytes)"
stop_daemon
daemon_conf 'residual_bytes = 3M'
start_daemon --pool-size 16M
[ "$(stat_field residual_limit_bytes)" = 3145728 ] || fail "residual_bytes not applied: $(stat_field residual_limit_bytes)"
stop_daemon
echo ok
