#!/bin/sh
# SPDX-License-Identifier: MIT
# Redis failing never stops the daemons: down at start, killed and
# restarted mid-run, frozen (slower than remote_timeout_ms), flushed.
# They serve locally meanwhile, count the faults, and reconnect.
. "${top_srcdir:-.}/tests/integration/remote-lib.sh"
make_key "$T/cluster.key"

# Down at start: a serves locally, writes are dropped and counted.
start_kvsinkd a "$T/cluster.key"
[ "$(dstat a remote_connected)" = 0 ] || fail "a connected to no redis"
client a store 1 128 16 || fail "store with redis down"
client a fetch 1 128 16 128 128 || fail "local fetch with redis down"
[ "$(dstat a remote_dropped)" -ge 16 ] || fail "writes while down not counted"
[ "$(dstat a remote_errors)" -ge 1 ] || fail "failed connects not counted"

# Redis comes up: a reconnects (backoff) and writes again.
start_redis
wait_for "a reconnected" stat_is a remote_connected 1
start_kvsinkd b "$T/cluster.key"
wait_for "b connected" stat_is b remote_connected 1
client a store 2 128 16 || fail "store after reconnect"
wait_for "16 blocks in redis" dbsize_is 16
client b fetch 2 128 16 128 128 || fail "b did not find a's prefix"

# Killed mid-run: both keep serving, locally.
stop_redis
wait_for "a saw redis go" stat_is a remote_connected 0
client a store 3 128 16 || fail "store with redis killed"
client b fetch 3 128 16 0 0 || fail "b lookup with redis killed"
client b fetch 2 128 16 128 128 || fail "b lost its imported prefix"

# Restarted (empty): the tier comes back on both.
start_redis
wait_for "a reconnected" stat_is a remote_connected 1
wait_for "b reconnected" stat_is b remote_connected 1
client a store 4 128 16 || fail "store after restart"
wait_for "16 blocks in redis" dbsize_is 16
client b fetch 4 128 16 128 128 || fail "tier did not come back"

# Frozen: a lookup is answered with what is local after remote_timeout_ms
# (the reply comes late and is dropped; the client is gone by then), and
# a connection that answers nothing for 2 s is given up and made again.
client a store 5 128 16 || fail "store seed 5"
wait_for "32 blocks in redis" dbsize_is 32
kill -STOP "$RPID"
t0=$(dstat b remote_timeouts)
e0=$(dstat b remote_errors)
client b fetch 5 128 16 0 0 || fail "b lookup with redis frozen"
client b fetch 4 128 16 128 128 || fail "b local fetch with redis frozen"
[ "$(dstat b remote_timeouts)" -gt "$t0" ] || fail "timeout not counted"
wait_for "b gave up the silent connection" stat_ge b remote_errors $((e0 + 1))
kill -CONT "$RPID"
wait_for "b reads through redis again" client b fetch 5 128 16 128 128

# A client that goes away while its lookup waits on a frozen redis (a
# daemon with a long remote_timeout_ms): the daemon drops the parked
# request, and the late reply, and serves on.
start_kvsinkd s "$T/cluster.key" "remote_timeout_ms = 10000"
wait_for "s connected" stat_is s remote_connected 1
kill -STOP "$RPID"
"$RCLIENT" "$T/s.sock" fetch 5 128 16 0 128 > /dev/null 2>&1 &
cpid=$!
# (kvsinkctl's own session counts too)
wait_for "the client's session" stat_is s sessions 2
sleep 0.5
kill -KILL "$cpid"; wait "$cpid" 2>/dev/null
wait_for "s saw the client go" stat_is s sessions 1
kill -CONT "$RPID"
wait_for "s reads through redis after a client left mid-lookup" client s fetch 5 128 16 128 128

# Flushed: misses, nothing imported, local copies still serve.
client a store 6 128 16 || fail "store seed 6"
wait_for "48 blocks in redis" dbsize_is 48
rcli flushall >/dev/null
m0=$(dstat b remote_misses)
client b fetch 6 128 16 0 0 || fail "b found a flushed prefix"
[ "$(dstat b remote_misses)" -gt "$m0" ] || fail "misses after flush not counted"
client a fetch 6 128 16 128 128 || fail "a lost its prefix after a flush"
client b fetch 4 128 16 128 128 || fail "b lost its prefix after a flush"

stop_kvsinkd a
stop_kvsinkd b
stop_kvsinkd s
echo "remote-faults ok"
