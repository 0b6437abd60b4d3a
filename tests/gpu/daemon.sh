#!/bin/sh
# SPDX-License-Identifier: MIT
# kvsinkd with its pool in GPU memory, end to end (GPU machines only; CI
# has no GPU). Needs a CUDA build of the tree:
#   tests/gpu/daemon.sh BUILDDIR [OUTDIR]
# 1. the client integration tests against kvsinkd --device cuda:0;
# 2. eval-short.sh (device auto, so the GPU pool);
# 3. the same perplexity run through a GPU daemon and a host daemon: the
#    CUDA kernels match the C reference byte for byte, so the per-token
#    NLLs must be identical;
# 4. kvsink-bench on both pools, for the figures.
# Exit status: non-zero when any check fails.
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
b=$(cd "${1:?usage: daemon.sh BUILDDIR [OUTDIR]}" && pwd)
out=${2:-$b/gpu-daemon}
mkdir -p "$out"
export top_srcdir="$top" top_builddir="$b"
GPU=${GPU:-cuda:0}  # GPU=host runs the script logic on a machine without one
rc=0
pass() { echo "PASS: $*"; }
failed() { echo "FAIL: $*"; rc=1; }

for t in client-ctl client-errors client-share client-kill client-evict; do
  if KVSINKD_DEVICE=$GPU sh "$top/tests/integration/$t.sh" > "$out/$t.log" 2>&1; then
    pass "$t ($GPU)"
  else
    failed "$t ($GPU)"; tail -n 30 "$out/$t.log"
  fi
done
sh "$top/tests/integration/eval-short.sh" > "$out/eval-short.log" 2>&1
case $? in
  0) pass "eval-short (device auto)" ;;
  77) echo "SKIP: eval-short: $(tail -n 1 "$out/eval-short.log")" ;;
  *) failed "eval-short"; tail -n 30 "$out/eval-short.log" ;;
esac
if [ -x "$b/tests/store/test_cuda" ]; then
  "$b/tests/store/test_cuda" > "$out/test_cuda.log" 2>&1 && pass "test_cuda (with a GPU)" ||
    { failed "test_cuda"; tail -n 20 "$out/test_cuda.log"; }
fi

tmp=$(mktemp -d)
pids=
# private configuration and profiles (the shipped model's), so an installed
# /etc/kvsink cannot change what is compared (tests/lib/daemon.sh does the
# same for the integration tests)
mkdir "$tmp/profiles"
cp "$top/models/kvsink-tiny/kvsink.profile" "$tmp/profiles/" || { failed "no committed profile"; exit 1; }
printf 'profiles_dir = %s\n' "$tmp/profiles" > "$tmp/kvsinkd.conf"
start() { # start NAME DEVICE
  "$b/daemon/kvsinkd" --foreground --config "$tmp/kvsinkd.conf" --socket "$tmp/$1.sock" --pool-size 4G --device "$2" \
    --log-level info 2> "$out/kvsinkd-$1.log" &
  pids="$pids $!"
  i=0
  until "$b/tools/kvsinkctl" --socket "$tmp/$1.sock" ping >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -gt 300 ] && { failed "kvsinkd $2 did not start"; cat "$out/kvsinkd-$1.log"; return 1; }
    sleep 0.1
  done
}
trap 'kill $pids 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT
start gpu "$GPU" && start host host || exit 1
"$b/tools/kvsinkctl" --socket "$tmp/gpu.sock" stats --json > "$out/stats-gpu.json"
grep -q '"backend": *"cuda"' "$out/stats-gpu.json" && pass "GPU daemon reports backend cuda" ||
  { failed "GPU daemon backend"; cat "$out/stats-gpu.json"; }

M=$top/models/kvsink-tiny
T=$top/eval/testdata/test-slice.txt
for cfg in "2 kvsink 0.01" "2 pfn:4 0" "3 none 0" "4 kvsink 0"; do
  set -- $cfg
  for d in gpu host; do
    "$b/eval/kvsink-eval" ppl --model "$M" --text "$T" --socket "$tmp/$d.sock" --ctx 1024 \
      --contexts 2 --bits "$1" --policy "$2" --outliers "$3" --json \
      --nll-out "$out/nll-$1-$2-$d.txt" > "$out/ppl-$1-$2-$d.json" 2>> "$out/eval.log" ||
      failed "kvsink-eval $cfg on $d"
  done
  if cmp -s "$out/nll-$1-$2-gpu.txt" "$out/nll-$1-$2-host.txt"; then
    pass "bits $1 $2 outliers $3: GPU and host daemons give identical NLLs ($(grep -o '"ppl":[0-9.]*' "$out/ppl-$1-$2-gpu.json"))"
  else
    failed "bits $1 $2: GPU and host NLLs differ"
  fi
done

for d in gpu host; do
  echo "== kvsink-bench, $d pool" >> "$out/bench.txt"
  "$b/tools/kvsink-bench" --socket "$tmp/$d.sock" --clients 4 >> "$out/bench.txt" 2>&1 ||
    failed "bench $d"
done
cat "$out/bench.txt"
exit $rc
