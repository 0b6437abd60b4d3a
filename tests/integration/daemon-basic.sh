#!/bin/sh
# SPDX-License-Identifier: MIT
# kvsinkd serves hello/put/lookup/get/release/stats/bye, rejects bad
# requests with error replies, and one bad client does not hurt another.
. "${top_srcdir:-.}/tests/lib/daemon.sh"
start_daemon

out=$(raw send "$HELLO" recv \
  send '{"op":"put","id":2,"seq":7,"start":0,"tokens":[1,2,3,4],"layers":[0,2],"k_off":0,"v_off":256}' recv \
  send '{"op":"lookup","id":3,"tokens":[1,2,3,4]}' recv \
  send '{"op":"get","id":4,"seq":7,"start":0,"n":4,"layers":[0,2],"k_off":1024,"v_off":2048}' recv \
  send '{"op":"release","id":5,"seq":7}' recv \
  send '{"op":"get","id":6,"seq":7,"start":0,"n":1,"layers":[0,1],"k_off":0,"v_off":0}' recv \
  send '{"op":"stats","id":7}' recv \
  send '{"op":"bye","id":8}' recv eof) || fail "session: $out"
echo "$out"
echo "$out" | grep -q '"session"=>[0-9]' || fail "no hello reply"
echo "$out" | grep -q 'fd memfd size=65536 seals=7' || fail "no sealed memfd with the hello reply"
echo "$out" | grep -q '"id"=>2, "quantized"=>0, "sinks"=>[0-9]*, "seq_len"=>4' || fail "put"
echo "$out" | grep -q '"id"=>3, "cached"=>0' || fail "lookup"
echo "$out" | grep -q '"id"=>6, "err"=>\[-2,' || fail "get after release must be ENOENT"
echo "$out" | grep -q '"sessions"=>1' || fail "stats sessions"
echo "$out" | grep -q 'closed' || fail "bye must close"

# Offsets outside the segment, misaligned, overflowing: KVS_ESEGMENT (-4003).
out=$(raw send "$HELLO" recv \
  send '{"op":"put","id":2,"seq":1,"start":0,"tokens":[1],"layers":[0,2],"k_off":65535,"v_off":0}' recv \
  send '{"op":"put","id":3,"seq":1,"start":0,"tokens":[1],"layers":[0,2],"k_off":1,"v_off":0}' recv \
  send '{"op":"put","id":4,"seq":1,"start":0,"tokens":[1],"layers":[0,2],"k_off":18446744073709551615,"v_off":0}' recv \
  send '{"op":"get","id":5,"seq":9,"start":0,"n":1,"layers":[0,1],"k_off":0,"v_off":0}' recv \
  send '{"op":"put","id":6,"seq":1,"start":0,"tokens":[1],"layers":[0,3],"k_off":0,"v_off":0}' recv \
  send '{"op":"ping","id":7}' recv) || fail "bad offsets: $out"
echo "$out"
for id in 2 3 4; do
  echo "$out" | grep -q "\"id\"=>$id, \"err\"=>\[-4003," || fail "put $id must fail with KVS_ESEGMENT"
done
echo "$out" | grep -q '"id"=>5, "err"=>\[-2,' || fail "get of an unknown seq"
echo "$out" | grep -q '"id"=>6, "err"=>\[-22,' || fail "layer range past the model"
echo "$out" | grep -q '"id"=>7}' || fail "session must go on after errors"

# put before hello; wrong version; bad model.
out=$(raw send '{"op":"put","id":1,"seq":1,"start":0,"tokens":[1],"layers":[0,1],"k_off":0,"v_off":0}' recv \
  send '{"op":"hello","id":2,"version":99,"model":{"id":"m","layers":2,"kv_heads":2,"head_dim":8,"dtype":"fp16"},"seg_size":0}' recv \
  send '{"op":"hello","id":3,"version":1,"model":{"id":"m","layers":2,"kv_heads":2,"head_dim":8,"dtype":"fp16"},"seg_size":0,"k_bits":5}' recv) || fail "order: $out"
echo "$out"
echo "$out" | grep -q '"id"=>1, "err"=>\[-71,' || fail "put before hello must be EPROTO"
echo "$out" | grep -q '"id"=>2, "err"=>\[-4001, "protocol version 99' || fail "version mismatch"
echo "$out" | grep -q '"id"=>3, "err"=>\[-22,' || fail "bad k_bits"

# Unknown op: error reply, the session goes on. A wrong type is a
# malformed message: error reply (the id is known), then the daemon hangs up.
out=$(raw send '{"op":"nope","id":1}' recv send '{"op":"ping","id":2}' recv \
  send '{"op":"release","id":3,"seq":"x"}' recv eof) || fail "types: $out"
echo "$out"
echo "$out" | grep -q '"id"=>1, "err"=>\[-71,' || fail "unknown op must be EPROTO"
echo "$out" | grep -q '"id"=>2}' || fail "session must go on after an unknown op"
echo "$out" | grep -q '"id"=>3, "err"=>\[-74,' || fail "wrong type must be EBADMSG"
echo "$out" | grep -q 'closed' || fail "wrong type must close the connection"

# A client that holds a session open while others misbehave.
timeout 20 "$RAW" "$SOCK" send "$HELLO" recv wait 1500 send '{"op":"ping","id":9}' recv >"$T/keep" 2>&1 &
KEEP=$!
# Garbage payload (not msgpack): closed. Oversized length: closed.
out=$(raw raw 00000003c1c1c1 eof) || fail "garbage: $out"
out=$(raw raw 7fffffff00 eof) || fail "oversized: $out"
out=$(raw raw ffffffff eof) || fail "oversized: $out"
# Truncated frame then hang up: nothing to reply to.
raw raw 0000001081 >/dev/null 2>&1
wait $KEEP || fail "the other client failed: $(cat "$T/keep")"
grep -q '"id"=>9}' "$T/keep" || fail "the other client was not served"
out=$(raw send '{"op":"ping","id":1}' recv) || fail "daemon no longer serves"
kill -0 "$DPID" || fail "daemon died"
[ "$(stat -c %a "$SOCK")" = 660 ] || fail "socket mode $(stat -c %a "$SOCK"), want 660"
stop_daemon

# max_sessions: a connection over the limit gets -EUSERS and is closed.
daemon_conf 'max_sessions = 1' 'socket_mode = 0600'
start_daemon
[ "$(stat -c %a "$SOCK")" = 600 ] || fail "socket_mode not applied"
# start_daemon's ping session must be gone before the slot is taken: every
# session the log shows connected must also show closed (not only session 1)
i=0
until [ "$(grep -c ': connected' "$LOG")" -gt 0 ] &&
      [ "$(grep -c ': connected' "$LOG")" -le "$(grep -c ': closed' "$LOG")" ]; do
  i=$((i + 1)); [ $i -gt 100 ] && fail "ping session not closed"; sleep 0.1
done
# The holder writes a file of its own: $T/keep still holds the first
# part's client output ("fd memfd" included), and the background job's
# redirection truncates it only when that job gets to run, so polling
# $T/keep could start the second client before the holder had connected.
# The second client then took the slot (an ordinary session waiting for a
# hello, killed by timeout with nothing printed) and the holder was refused.
# The holder keeps the slot until the daemon stops (it waits for the
# daemon's close), not for a fixed time: a second client that starts late
# on a loaded machine must still find the slot taken.
rm -f "$T/holder"
timeout 60 "$RAW" "$SOCK" send "$HELLO" recv eof >"$T/holder" 2>&1 &
KEEP=$!
i=0
until grep -q 'fd memfd' "$T/holder" 2>/dev/null; do
  i=$((i + 1)); [ $i -gt 100 ] && fail "first client not served"; sleep 0.1
done
rc=0; out=$(raw recv eof 2>&1) || rc=$?
[ $rc -eq 0 ] || fail "second session (status $rc): $out"
echo "$out" | grep -q '"err"=>\[-87, "too many sessions' || fail "max_sessions: $out"
grep -q 'closed' "$T/holder" && fail "the holder lost its session early: $(cat "$T/holder")"
stop_daemon
rc=0; wait $KEEP || rc=$?
[ $rc -eq 0 ] || fail "the holder (status $rc): $(cat "$T/holder")"
echo ok
