#!/bin/sh
# SPDX-License-Identifier: MIT
# The fast area (proto/fast.h, HACKING.md Decision 52): busy-polling
# clients pass puts, gets and pings through their segment instead of the
# socket. Data are bit-exact through it whether kvsinkd's loop polls the
# areas (busy_poll_us) or sleeps (clients ring over the socket); scribbles
# on the area get errors or close that session only; KVSINK_FAST=0 keeps
# a client on the socket.
. "${top_srcdir:-.}/tests/lib/daemon.sh"
export KVSINK_BUSY_POLL_US=500
# the requests each closed session took in its fast area, summed
fast_taken() {
  sed -n 's/.*closed (\([0-9]*\) requests in the fast area).*/\1/p' "$LOG" | awk '{ s += $1 } END { print s + 0 }'
}
run_pair() {
  marker=$T/prefix-$1.bin
  timeout 120 "$ITEST" "$SOCK" store "$1" 4 "$marker" || fail "storing client ($2)"
  timeout 120 "$ITEST" "$SOCK" share "$1" 4 "$marker" 31 > "$T/share.log" 2>&1 ||
    { cat "$T/share.log"; fail "sharing client ($2)"; }
}

# 1. kvsinkd polls the areas
daemon_conf 'busy_poll_us = 2000'
start_daemon
run_pair 5 "polled"
timeout 120 "$ITEST" "$SOCK" fasthostile || fail "scribbles on the fast area"
grep -q "malformed request in the fast area" "$LOG" || fail "no log line for the malformed request"
timeout 120 "$ITEST" "$SOCK" share 5 4 "$T/prefix-5.bin" 31 > "$T/share.log" 2>&1 ||
  { cat "$T/share.log"; fail "a client after the scribbles"; }
stop_daemon
n=$(fast_taken)
[ "$n" -ge 6 ] || fail "only $n requests went through the fast areas with kvsinkd polling"

# 2. kvsinkd sleeps between requests: clients ring
daemon_conf 'busy_poll_us = 0'
start_daemon
run_pair 6 "rung"
stop_daemon
n=$(fast_taken)
[ "$n" -ge 6 ] || fail "only $n requests went through the fast areas with kvsinkd sleeping"

# 3. KVSINK_FAST=0: the socket only
daemon_conf 'busy_poll_us = 2000'
start_daemon
export KVSINK_FAST=0
run_pair 7 "socket only"
unset KVSINK_FAST
stop_daemon
n=$(fast_taken)
[ "$n" -eq 0 ] || fail "$n requests went through the fast area with KVSINK_FAST=0"
echo "client-fast ok"
