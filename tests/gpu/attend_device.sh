#!/bin/sh
# SPDX-License-Identifier: MIT
# Attend on a GPU pool (issue 12): block tables of device chunks and
# kvs_attend_device, through kvsinkd on a GPU (not part of make check):
#   tests/gpu/build.sh                  (build machine: .gpu/ to carry)
#   tests/gpu/attend_device.sh [DIR]    (GPU machine; DIR: .gpu by default,
#                                        or anything with daemon/kvsinkd,
#                                        tests/gpu/attend_device_test, libs/)
# 1. check: K/V with planted sinks and outliers at 2 and 4 bits put into a
#    GPU-pool kvsinkd and a host-pool kvsinkd; kvs_attend_device over the
#    GPU pool's table == kvs_attend_lse over the host pool's (the C
#    reference), out and lse, within tests/gpu/attn_test.cu's bound;
# 2. isolation: another salt's session gets ENOENT for the first one's seq
#    and disjoint chunks; after release, a pool refilled by the other space
#    reuses the chunk at a new generation while the first client's stale
#    import still reads its own old bytes (never the new space's);
# 3. a write through an imported chunk fails (read-only import);
# 4. the shared namespace gets EACCES (a second kvsinkd whose
#    shared_namespace_uids names this uid);
# 5. table_chunks at its default: a session that refills the pool and
#    takes tables runs into EDQUOT; a new session works.
# Prints PASS/FAIL lines; exit status non-zero when a check fails. Each
# step has its own timeout (all of them under the device tool's 10 minutes;
# expect about two minutes in all). With
# $OUT set, the daemons' logs land in $OUT/attend_device/ on a failure.
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
if [ $# -ge 1 ]; then dir=$1
elif [ -x "$top/.gpu/daemon/kvsinkd" ]; then dir=$top/.gpu
else dir=$top/build-gpu; fi
b=$(cd "$dir" && pwd) || { echo "usage: attend_device.sh [DIR] (no $dir)"; exit 1; }
export LD_LIBRARY_PATH="$b/libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
T="$b/tests/gpu/attend_device_test"
D="$b/daemon/kvsinkd"
for f in "$T" "$D"; do [ -x "$f" ] || { echo "FAIL: missing $f: run tests/gpu/build.sh"; exit 1; }; done
tmp=$(mktemp -d /tmp/kvs-attdev.XXXXXX)
rc=0
pids=
failed() { echo "FAIL: $*"; rc=1; }
# start NAME DEVICE POOL [CONF LINES...]: a private kvsinkd on $tmp/NAME.sock
start() {
  name=$1 dev=$2 pool=$3
  shift 3
  { echo "pool_size = $pool"; echo "max_segment_size = 1G"; for l in "$@"; do echo "$l"; done; } > "$tmp/$name.conf"
  "$D" --foreground --config "$tmp/$name.conf" --socket "$tmp/$name.sock" --device "$dev" \
    --log-level info > "$tmp/$name.log" 2>&1 &
  eval "pid_$name=$!"
  pids="$pids $!"
  for i in $(seq 200); do
    [ -S "$tmp/$name.sock" ] && return 0
    kill -0 "$(eval echo \$pid_$name)" 2>/dev/null || break
    sleep 0.1
  done
  echo "FAIL: kvsinkd $name did not come up"; cat "$tmp/$name.log"; exit 1
}
stopall() {
  for p in $pids; do kill -TERM "$p" 2>/dev/null && { wait "$p" || failed "kvsinkd $p exited with $?"; }; done
  pids=
}
keep() {
  [ -n "${OUT:-}" ] && [ -d "$OUT" ] || return 0
  mkdir -p "$OUT/attend_device" && cp "$tmp"/*.log "$tmp"/*.conf "$OUT/attend_device/" 2>/dev/null
}
trap 'stopall; [ $rc = 0 ] || keep; rm -rf "$tmp"' EXIT
nvidia-smi --query-gpu=name,uuid,driver_version --format=csv,noheader 2>/dev/null | sed 's/^/GPU: /'
GPU=${GPU:-cuda:0}

# table_chunks: B's tables in the isolation check name every chunk of the
# pool, some twice (the chunks it was passed before they were reused)
start gpu "$GPU" "${POOL:-512M}" "table_chunks = 100000"
start host host 1G
grep -iE "pool|chunk" "$tmp/gpu.log" | head -5 | sed 's/^/  gpu kvsinkd: /'

run() { # LABEL SECONDS CMD...: its PASS/FAIL lines; a non-zero exit without a FAIL line fails too
  label=$1 secs=$2; shift 2
  timeout "$secs" "$@" > "$tmp/$label.out" 2>&1
  r=$?
  cat "$tmp/$label.out"
  [ $r = 0 ] || { grep -q '^FAIL' "$tmp/$label.out" || echo "FAIL: $label exited with $r"; rc=1; }
}
run check 150 "$T" check "$tmp/gpu.sock" "$tmp/host.sock"
run isolation 150 "$T" isolation "$tmp/gpu.sock"
run rowrite 60 "$T" rowrite "$tmp/gpu.sock"
kill -0 "$pid_gpu" 2>/dev/null && echo "PASS: the GPU kvsinkd is alive after the clients" ||
  failed "the GPU kvsinkd died"
stopall

start shared "$GPU" 256M "shared_namespace_uids = $(id -u)"
run shared 60 "$T" shared "$tmp/shared.sock"
stopall

# the default table_chunks (the pool's chunk count) on a GPU pool
start quota "$GPU" 256M
run quota 120 "$T" quota "$tmp/quota.sock"
stopall

if [ $rc != 0 ]; then
  for l in gpu host shared quota; do
    [ -s "$tmp/$l.log" ] && { echo "--- last lines of the $l kvsinkd's log:"; tail -n 30 "$tmp/$l.log" | sed 's/^/    /'; }
  done
fi
[ $rc = 0 ] && echo "attend_device.sh: all checks passed" || echo "attend_device.sh: FAILED"
exit $rc
