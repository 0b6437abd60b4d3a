#!/bin/sh
# SPDX-License-Identifier: MIT
# One kvsinkd serving two GPUs (device = all: one pool per GPU), on a
# machine with two or more GPUs (not part of make check):
#   tests/gpu/multigpu.sh [GPUDIR]   (GPUDIR as for devseg.sh, default .gpu)
# Two clients, each seeing one GPU through CUDA_VISIBLE_DEVICES (so each
# calls its GPU device 0: the daemon tells them apart by UUID), run the
# device-segment check at once; each must get a device segment from its
# own GPU's pool, and both pools must hold blocks afterwards. A client
# that names a GPU the daemon does not serve gets the host segment.
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
b=$(cd "${1:-$top/.gpu}" && pwd)
export LD_LIBRARY_PATH="$b/libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
n=$(nvidia-smi -L 2>/dev/null | wc -l)
[ "$n" -ge 2 ] || { echo "SKIP: $n GPU(s); this test needs two"; exit 77; }
tmp=$(mktemp -d /tmp/kvs-multi.XXXXXX)
trap 'kill -TERM $dpid 2>/dev/null; wait $dpid 2>/dev/null; rm -rf "$tmp"' EXIT
printf 'pool_size = 2G\nmax_segment_size = 1G\n' > "$tmp/kvsinkd.conf"
"$b/daemon/kvsinkd" --foreground --config "$tmp/kvsinkd.conf" --socket "$tmp/s.sock" \
  --device cuda:0,cuda:1 --log-level info > "$tmp/log" 2>&1 &
dpid=$!
for i in $(seq 200); do [ -S "$tmp/s.sock" ] && break; sleep 0.1; done
rc=0
nvidia-smi --query-gpu=index,name,uuid --format=csv,noheader | sed 's/^/GPU /'
grep -i 'device segments on\|pool of' "$tmp/log"
CUDA_VISIBLE_DEVICES=0 timeout 200 "$b/tests/gpu/devseg_test" "$tmp/s.sock" check > "$tmp/c0" 2>&1 &
p0=$!
CUDA_VISIBLE_DEVICES=1 timeout 200 "$b/tests/gpu/devseg_test" "$tmp/s.sock" check > "$tmp/c1" 2>&1 &
p1=$!
wait $p0 || { echo "FAIL: client on GPU 0"; rc=1; }
wait $p1 || { echo "FAIL: client on GPU 1"; rc=1; }
sed 's/^/gpu0 client: /' "$tmp/c0"; sed 's/^/gpu1 client: /' "$tmp/c1"
"$b/tools/kvsinkctl" --admin-socket "$tmp/s.admin.sock" metrics > "$tmp/metrics" 2>&1 ||
  { echo "FAIL: metrics"; rc=1; }
grep '^kvsink_pool_blocks{' "$tmp/metrics"
for d in cuda:0 cuda:1; do
  blocks=$(sed -n "s/^kvsink_pool_blocks{device=\"$d\"} //p" "$tmp/metrics")
  if [ -n "$blocks" ] && [ "$blocks" -gt 0 ]; then echo "PASS: pool $d holds $blocks blocks"
  else echo "FAIL: pool $d holds no blocks ($blocks)"; rc=1; fi
done
# kvsinkctl stats: one line per GPU pool, each having taken puts
"$b/tools/kvsinkctl" --admin-socket "$tmp/s.admin.sock" stats > "$tmp/stats" 2>&1 ||
  { echo "FAIL: kvsinkctl stats"; rc=1; }
grep '^pool ' "$tmp/stats"
for d in cuda:0 cuda:1; do
  uuid=$(nvidia-smi --query-gpu=uuid --format=csv,noheader -i "${d#cuda:}" | tr -d ' ')
  if grep -Eq "^pool $d $uuid: .*puts / gets [1-9][0-9]* / [1-9]" "$tmp/stats"; then
    echo "PASS: kvsinkctl stats shows pool $d ($uuid) with its puts and gets"
  else echo "FAIL: kvsinkctl stats has no line for pool $d ($uuid) with puts and gets"; rc=1; fi
done
# both clients were served device segments, each by its own GPU
grep -c 'device segment' "$tmp/log" | sed 's/^/log lines naming device segments: /'
grep -i 'session.*device segment\|dev_seg\|seg_kind' "$tmp/log" | head -6
[ $rc = 0 ] && echo "multigpu.sh: all checks passed" || { tail -n 30 "$tmp/log"; echo "multigpu.sh: FAILED"; }
exit $rc
