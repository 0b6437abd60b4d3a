#!/bin/sh
# SPDX-License-Identifier: MIT
# The Redis tier between two daemons of one cluster (one key file): a
# client of the second finds and reads, bit-exact at 16 bits, a prefix a
# client of the first stored; a daemon with another cluster key finds
# nothing; values damaged in Redis, or another cluster's values under
# this cluster's keys, are refused, counted, and not used.
. "${top_srcdir:-.}/tests/integration/remote-lib.sh"
start_redis
make_key "$T/cluster.key"
make_key "$T/other.key"
start_kvsinkd a "$T/cluster.key"
start_kvsinkd b "$T/cluster.key"
start_kvsinkd c "$T/other.key"
for d in a b c; do wait_for "$d connected" stat_is $d remote_connected 1; done

# 256 tokens = 8 groups x 4 layers = 32 blocks, 16 bits: raw K/V.
client a store 5 256 16 || fail "store on a"
wait_for "32 blocks in redis" dbsize_is 32
[ "$(dstat a remote_bytes_out)" -gt 0 ] || fail "a wrote no bytes"
client b fetch 5 256 16 256 256 || fail "b did not read a's prefix bit-exact"
[ "$(dstat b remote_hits)" = 32 ] || fail "b: remote_hits $(dstat b remote_hits), expected 32"
[ "$(dstat b remote_latency_count)" -ge 1 ] || fail "b: no latency sample"
# Now local to b: no second round.
client b fetch 5 256 16 256 256 || fail "b lost the imported prefix"
[ "$(dstat b remote_latency_count)" = 1 ] || fail "b asked redis for a prefix it holds"
# Imports are not written back.
wait_for "redis unchanged" dbsize_is 32
[ "$(dstat b remote_bytes_out)" = 0 ] || fail "b wrote imported blocks back"

# A longer prompt: b serves the cached part and asks only for the rest.
client b fetch 5 300 16 256 256 || fail "b: longer prompt"

# 4 bits (another space) also travels.
client a store 6 128 4 || fail "store 4-bit on a"
wait_for "48 blocks in redis" dbsize_is 48
client b fetch 6 128 4 128 128 || fail "b did not find a's 4-bit prefix"

# Another cluster key: other chain hashes, nothing found.
client c fetch 5 256 16 0 0 || fail "c (other cluster key) found a's prefix"
[ "$(dstat c remote_hits)" = 0 ] || fail "c imported blocks of another cluster"
[ "$(dstat c remote_misses)" -ge 4 ] || fail "c: misses not counted"

# Damaged values: one byte changed in every value (checksum) and one
# value replaced by garbage: refused, counted, not used.
rcli flushall >/dev/null
client a store 7 128 16 || fail "store seed 7 on a"
wait_for "16 blocks in redis" dbsize_is 16
keys=$(rcli --scan --pattern 'kvsink:2:*') || fail "redis-cli --scan"
[ "$(echo "$keys" | wc -l)" = 16 ] || fail "expected 16 keys named kvsink:2:*"
first=
for k in $keys; do
  [ -n "$first" ] || first=$k
  rcli setrange "$k" 100 X >/dev/null
done
rcli set "$first" "not a block" >/dev/null
client b fetch 7 128 16 0 0 || fail "b used damaged values"
[ "$(dstat b remote_rejected)" -ge 1 ] || fail "b: damaged values not counted"
# The daemons keep serving: a still has its own copy.
client a fetch 7 128 16 128 128 || fail "a lost its local prefix"
client b fetch 5 256 16 256 256 || fail "b cannot serve after refusing values"

# Another cluster's values under this cluster's keys: a block of one
# group per key, with a valid checksum but other token ids: refused.
rcli flushall >/dev/null
client a store 9 32 16 || fail "store seed 9 on a"
wait_for "4 blocks of a" dbsize_is 4
rcli --scan --pattern 'kvsink:2:*' > "$T/a.keys" || fail "redis-cli --scan"
client c store 10 32 16 || fail "store seed 10 on c"
wait_for "4 blocks of c" dbsize_is 8
r0=$(dstat b remote_rejected)
for l in 0 1 2 3; do
  ak=$(grep ":$l\$" "$T/a.keys") || fail "no key of a for layer $l"
  ck=$(rcli --scan --pattern "kvsink:2:*:$l" | grep -v -x -F "$ak") || fail "no key of c for layer $l"
  [ "$(rcli copy "$ck" "$ak" replace)" = 1 ] || fail "COPY $ck $ak"
done
client b fetch 9 32 16 0 0 || fail "b used another cluster's values"
[ "$(dstat b remote_rejected)" -gt "$r0" ] || fail "another cluster's values not counted as refused"

stop_kvsinkd a
stop_kvsinkd b
stop_kvsinkd c
echo "remote-share ok"
