#!/bin/sh
# Device segments through kvsinkd on a GPU (not part of make check):
#   tests/gpu/build.sh            (on the build machine: build-gpu/ + libs/)
#   tests/gpu/devseg.sh BUILDDIR  (on the GPU machine; a few minutes)
# 1. put/get from a device segment, bit-exact at 16 bits and identical to
#    the host-segment path at 16/8/4/2 bits; two clients at once;
# 2. lifetime: a client killed while it holds a device segment leaves
#    nothing behind; kvsinkd killed and restarted between two puts of a
#    client gives it a clear error, and kvs_reconnect re-imports;
# 3. latency of a 1-token put+get and put/get bandwidth for 1, 2, 4
#    client processes at 16/8/4/2 bits next to cudaMemcpy D2D, device and
#    host segments side by side.
# Exit status: non-zero when a check fails (the figures are printed).
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
b=$(cd "${1:?usage: devseg.sh BUILDDIR}" && pwd)
export LD_LIBRARY_PATH="$b/libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
T="$b/tests/gpu/devseg_test"
D="$b/daemon/kvsinkd"
for f in "$T" "$D"; do [ -x "$f" ] || { echo "missing $f: run tests/gpu/build.sh"; exit 1; }; done
tmp=$(mktemp -d /tmp/kvs-devseg.XXXXXX)
sock="$tmp/kvsinkd.sock"
cat > "$tmp/kvsinkd.conf" <<CONF
pool_size = ${POOL:-8G}
max_segment_size = 1G
max_sessions = 64
CONF
rc=0
dpid=
trap '' PIPE # a test client that died must not take the script with it
pass() { echo "PASS: $*"; }
failed() { echo "FAIL: $*"; rc=1; }
start() {
  rm -f "$sock"
  "$D" --foreground --config "$tmp/kvsinkd.conf" --socket "$sock" --device "${GPU:-cuda:0}" \
    --log-level info >> "$tmp/kvsinkd.log" 2>&1 &
  dpid=$!
  for i in $(seq 100); do [ -S "$sock" ] && return 0; sleep 0.1; done
  echo "kvsinkd did not come up"; cat "$tmp/kvsinkd.log"; exit 1
}
stop() { [ -n "$dpid" ] && kill -TERM "$dpid" 2>/dev/null && wait "$dpid"; dpid=; }
trap 'stop; rm -rf "$tmp"' EXIT
nvidia-smi --query-gpu=name,uuid,driver_version --format=csv,noheader 2>/dev/null | sed 's/^/GPU: /'

start
grep -q "device segments on" "$tmp/kvsinkd.log" && pass "kvsinkd serves device segments" ||
  { failed "kvsinkd serves no device segments"; cat "$tmp/kvsinkd.log"; }

# 1. correctness
timeout 120 "$T" "$sock" check > "$tmp/check.log" 2>&1 || rc=1
cat "$tmp/check.log"

# 1b. the same bytes as a host pool (the C reference) through a host segment
hsock="$tmp/host.sock"
"$D" --foreground --config "$tmp/kvsinkd.conf" --socket "$hsock" --device host \
  --log-level info > "$tmp/kvsinkd-host.log" 2>&1 &
hpid=$!
for i in $(seq 100); do [ -S "$hsock" ] && break; sleep 0.1; done
if timeout 120 "$T" "$sock" dump "$tmp/gpu-dev.bin" 1 && timeout 120 "$T" "$sock" dump "$tmp/gpu-host.bin" 0 &&
   timeout 300 "$T" "$hsock" dump "$tmp/host.bin" 0; then
  cmp -s "$tmp/gpu-dev.bin" "$tmp/host.bin" &&
    pass "16/8/4/2 bits: GPU pool via device segment == host pool (C reference) via host segment" ||
    failed "GPU pool via device segment differs from the host pool"
  cmp -s "$tmp/gpu-host.bin" "$tmp/host.bin" &&
    pass "16/8/4/2 bits: GPU pool via host segment == host pool" ||
    failed "GPU pool via host segment differs from the host pool"
else
  failed "dump runs"
fi
kill -TERM "$hpid"; wait "$hpid"

# 2a. a client killed with its device segment mapped
mkfifo "$tmp/in"
"$T" "$sock" restart < "$tmp/in" > "$tmp/killed.log" 2>&1 &
kpid=$!
exec 3> "$tmp/in"
for i in $(seq 200); do grep -q READY "$tmp/killed.log" 2>/dev/null && break; sleep 0.1; done
grep -q READY "$tmp/killed.log" || { failed "client did not get ready"; cat "$tmp/killed.log"; }
kill -KILL "$kpid" 2>/dev/null; wait "$kpid" 2>/dev/null
exec 3>&-
sleep 0.5
if timeout 60 "$T" "$sock" check > "$tmp/after-kill.log" 2>&1; then
  pass "a killed client left nothing behind: the next clients pass"
else
  failed "after a killed client"; cat "$tmp/after-kill.log"
fi
kill -0 "$dpid" 2>/dev/null && pass "kvsinkd alive after the client died" || failed "kvsinkd died"

# 2b. kvsinkd killed and restarted between two puts
rm -f "$tmp/in"; mkfifo "$tmp/in"
timeout 120 "$T" "$sock" restart < "$tmp/in" > "$tmp/restart.log" 2>&1 &
tpid=$!
exec 3> "$tmp/in"
for i in $(seq 200); do grep -q READY "$tmp/restart.log" && break; sleep 0.1; done
kill -KILL "$dpid"; wait "$dpid" 2>/dev/null; dpid=
start
echo go >&3
exec 3>&-
wait "$tpid" || rc=1
cat "$tmp/restart.log"

# 3. figures
timeout 120 "$T" "$sock" latency || failed "latency"
for p in 1 2 4; do
  for bits in 16 8 4 2; do
    timeout 200 "$T" "$sock" bench "$p" "$bits" || failed "bench $p procs $bits bits"
  done
done
"$b/tools/kvsinkctl" --socket "$sock" stats 2>/dev/null | head -30
stop
grep -iE "error|warn" "$tmp/kvsinkd.log" | grep -v "hello reply" | head -20
[ $rc = 0 ] && echo "devseg.sh: all checks passed" || echo "devseg.sh: FAILED"
exit $rc
