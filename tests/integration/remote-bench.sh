#!/bin/sh
# SPDX-License-Identifier: MIT
# Benchmark (prints figures, not a test): a 4096-token prefix of the test
# model's shape (models/kvsink-tiny: 8 layers, 2 KV heads, head dim 64)
#   1. brought from Redis into a second daemon's pool by one lookup
#      (MGET of its blocks, verification, import), at 2, 4 and 16 bits;
#   2. fetched as fp16 from the same Redis with one plain GET of the same
#      bytes (what a tier that stores raw K/V would move);
#   3. recomputed: kvsink-eval's prefill of the model on this machine.
#      The model's positions stop at 1024, so the 4096 tokens are run as
#      four 1024-token prefills (a lower bound of a 4096-token prefill).
# Run from the build directory:
#   top_srcdir=.. top_builddir=. sh ../tests/integration/remote-bench.sh
# Uses one redis-server on a private socket; REPEATS (3) prefixes each.
. "${top_srcdir:-.}/tests/integration/remote-lib.sh"
N=4096
REPEATS=${REPEATS:-3}
export RC_LAYERS=8 RC_HEADS=2 RC_DIM=64
MODEL=$top_srcdir/models/kvsink-tiny
EVAL=$top_builddir/eval/kvsink-eval
start_redis
rcli config set maxmemory 1gb >/dev/null
make_key "$T/cluster.key"
start_kvsinkd a "$T/cluster.key"
start_kvsinkd b "$T/cluster.key" "remote_timeout_ms = 10000"
wait_for "a connected" stat_is a remote_connected 1
wait_for "b connected" stat_is b remote_connected 1

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
echo "prefix: $N tokens, $RC_LAYERS layers x $RC_HEADS KV heads x $RC_DIM, fp16 K+V = $((N * RC_LAYERS * RC_HEADS * RC_DIM * 4)) bytes"
seed=100
for bits in 2 4 16; do
  : > "$T/lookup.txt"; : > "$T/get.txt"
  b0=$(dstat b remote_bytes_in)
  r=0
  while [ $r -lt "$REPEATS" ]; do
    seed=$((seed + 1)); r=$((r + 1))
    keys=$(( $(rcli dbsize) + N / 32 * RC_LAYERS ))
    client a store $seed $N $bits > /dev/null || fail "store"
    wait_for "blocks in redis" dbsize_is $keys
    client b fetch $seed $N $bits $N $N > "$T/out.txt" || fail "fetch"
    awk '{ print $4 }' "$T/out.txt" >> "$T/lookup.txt"
    awk '{ print $6 }' "$T/out.txt" >> "$T/get.txt"
  done
  bytes=$(( ($(dstat b remote_bytes_in) - b0) / REPEATS ))
  printf 'redis -> pool, %2s bits: lookup %6s us (%s bytes moved), then get to fp16 %6s us\n' \
    "$bits" "$(median < "$T/lookup.txt")" "$bytes" "$(median < "$T/get.txt")"
done
fp16=$((N * RC_LAYERS * RC_HEADS * RC_DIM * 4))
"$RCLIENT" "$RSOCK" rawset raw:fp16 $fp16 || fail "rawset"
printf 'redis fp16 GET          : %s\n' "$("$RCLIENT" "$RSOCK" rawget raw:fp16 9)"
if [ -x "$EVAL" ] && [ -f "$MODEL/model.safetensors" ]; then
  ids=$(awk 'BEGIN { for (i = 0; i < 1024; i++) printf "%s%d", i ? "," : "", (i * 7 + 3) % 8000 + 2 }')
  t0=$(date +%s%N)
  for piece in 1 2 3 4; do
    "$EVAL" logits --model "$MODEL" --tokens "$ids" -o "$T/logits.bin" || fail "kvsink-eval logits"
  done
  t1=$(date +%s%N)
  printf 'recompute (prefill)     : %s us for 4 x 1024 tokens\n' $(( (t1 - t0) / 1000 ))
else
  echo "recompute: kvsink-eval or the model missing, not measured"
fi
printf 'b: remote_hits %s, latency sum %s us over %s MGETs\n' "$(dstat b remote_hits)" \
  "$(dstat b remote_latency_us_sum)" "$(dstat b remote_latency_count)"
stop_kvsinkd a
stop_kvsinkd b
