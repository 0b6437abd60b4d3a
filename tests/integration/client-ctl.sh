#!/bin/sh
# SPDX-License-Identifier: MIT
# kvsinkctl against a live daemon: every command, JSON parses, exit codes.
. "${top_srcdir:-.}/tests/lib/daemon.sh"
start_daemon
json() { /usr/bin/python3 -c 'import json,sys; json.load(sys.stdin)'; }
[ "$(ctl ping)" = ok ] || fail "ping"
timeout 60 "$ITEST" "$SOCK" store 5 2 "$T/m.bin" || fail "store"
ctl stats | grep -q "^compression" || fail "stats text"
ctl stats --json | json || fail "stats --json"
# per pool (each GPU's, here the host's): the pool that took the puts
ctl stats | grep -Eq '^pool host: [0-9]+ / [0-9]+ bytes used .*puts / gets [1-9][0-9]* / ' ||
  fail "stats: no host pool line with its puts: $(ctl stats | grep '^pool ')"
ctl stats --json | /usr/bin/python3 -c '
import json, sys
d = json.load(sys.stdin)
p = d["pools"]
assert len(p) == 1 and p[0]["device"] == "host" and p[0]["uuid"] == "", p
assert p[0]["puts"] == d["puts"] > 0 and p[0]["pool_bytes"] == d["pool_bytes"], (p, d)' ||
  fail "stats --json: pools"
[ "$(stat_field puts)" -gt 0 ] || fail "puts not counted"
ctl list >/dev/null || fail "list"
ctl list --json | json || fail "list --json"
ctl profiles >/dev/null || fail "profiles"
ctl profiles --json | json || fail "profiles --json"
ctl evict | grep -q "^evicted [0-9]" || fail "evict"
[ "$(stat_field blocks_used)" = 0 ] || fail "blocks left after evict with no client"
ctl profiles calibrate --help | grep -q "usage: kvsink-calibrate" || fail "profiles calibrate"
ctl bogus 2>/dev/null; [ $? -eq 2 ] || fail "usage exit code"
"$KVSINKCTL" --socket "$T/nonexistent.sock" ping 2>/dev/null
[ $? -eq 3 ] || fail "connect failure exit code"
stop_daemon
"$KVSINKCTL" --socket "$SOCK" ping 2>/dev/null; [ $? -eq 3 ] || fail "ping after stop"
echo "client-ctl ok"
