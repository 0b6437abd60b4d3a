#!/bin/sh
# SPDX-License-Identifier: MIT
# Busy-polling on both sides (kvsinkd.conf busy_poll_us, libkvsink's
# KVSINK_BUSY_POLL_US): clients store and read back bit-exact data as
# without it, the daemon's spin ends once requests stop (its CPU time stays
# flat while idle), it stops cleanly, and out-of-range values are refused.
. "${top_srcdir:-.}/tests/lib/daemon.sh"
daemon_conf 'busy_poll_us = 10001'
"$KVSINKD" --check-config "$CONF" > "$T/bad" 2>&1 && fail "busy_poll_us = 10001 accepted"
grep -q "busy_poll_us" "$T/bad" || { cat "$T/bad"; fail "the error does not name busy_poll_us"; }
daemon_conf 'busy_poll_us = 2000'
start_daemon
export KVSINK_BUSY_POLL_US=500
marker=$T/prefix.bin
timeout 120 "$ITEST" "$SOCK" store 5 4 "$marker" || fail "storing client"
timeout 120 "$ITEST" "$SOCK" share 5 4 "$marker" 31 > "$T/share.log" 2>&1 || { cat "$T/share.log"; fail "sharing client"; }
# idle: the spin stopped 2 ms after the last request (ticks of utime + stime)
ticks() { awk '{ print $14 + $15 }' "/proc/$DPID/stat"; }
sleep 0.2
t0=$(ticks)
sleep 1
t1=$(ticks)
[ $((t1 - t0)) -lt 30 ] || fail "kvsinkd used $((t1 - t0)) ticks in 1 s with no client: the spin did not stop"
stop_daemon
echo "client-busypoll ok"
