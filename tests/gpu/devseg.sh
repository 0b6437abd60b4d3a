#!/bin/sh
# SPDX-License-Identifier: MIT
# Device segments through kvsinkd on a GPU (not part of make check):
#   tests/gpu/build.sh            (on the build machine: build-gpu/ + libs/,
#                                  and the slim copy .gpu/ to carry)
#   tests/gpu/devseg.sh [DIR]     (on the GPU machine; a few minutes; DIR:
#                                  .gpu (default when present) or build-gpu,
#                                  anything with daemon/kvsinkd,
#                                  tools/kvsinkctl, tests/gpu/devseg_test, libs/)
# 1. put/get from a device segment, bit-exact at 16 bits and identical to
#    the host-segment path at 16/8/4/2 bits; two clients at once;
# 2. lifetime: a client killed while it holds a device segment leaves
#    nothing behind; kvsinkd killed and restarted between two puts of a
#    client gives it a clear error, and kvs_reconnect re-imports;
# 3. latency of a 1-token put+get (and its parts: put, the G-th puts, get,
#    ping) as libkvsink waits by default (device requests spin, HACKING.md
#    Decision 48), with the client's spin off, then with busy-polling on
#    both sides (SPIN us, default 1000), the client's stage off, four
#    clients at once (stage on and off); 1-process bandwidth against a
#    daemon that sleeps between requests (busy_poll_us = 0; the default,
#    auto, spins with a GPU pool: Decision 50); put/get bandwidth for 1,
#    2, 4 client processes at 16/8/4/2 bits
#    next to cudaMemcpy D2D, device and host segments side by side; after
#    each 1-process row, kvsinkd's profile of those sessions
#    (KVSINK_PROFILE=1: us per put and get in the store's phases, the
#    kernels included, and in the daemon around them; the first put and get
#    of a session not counted, as in the row).
# DEVSEG_AB="put get" (default): which A/B sections run at the end (the
# put's switches, the get's; "pipe": the put's overlap, Decision 50; "feed":
# the feed (KVSINK_PUT_FEED=1) against launches per chunk, Decision 51;
# "copy16": 16/16 blocks by copy or not, Decision 56);
# DEVSEG_AB_BITS: the widths of the A/B rows (default "16 4");
# DEVSEG_ITERS: put/get pairs per bench process. The processes of a bench
# row start their loops together; a row whose processes ran at once for
# under half their loops fails (Decision 57).
# DEVSEG_KEEP=1: keep the logs in $OUT/devseg/ even when every check passes.
# MPS=1: the whole run under the CUDA Multi-Process Service (started here,
# quit at the end): without it the clients' contexts and kvsinkd's
# time-slice the GPU (kvsinkd(8) GPU SHARING, HACKING.md Decision 46).
# Exit status: non-zero when a check fails (the figures are printed).
# On a failure it explains: which values differ (bits, K/V, layer, token,
# channel), both daemons' stats and the tail of their logs; with $OUT set
# (the device tool's folder) the logs and dumps are kept in $OUT/devseg/.
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
if [ $# -ge 1 ]; then dir=$1
elif [ -x "$top/.gpu/daemon/kvsinkd" ]; then dir=$top/.gpu
else dir=$top/build-gpu; fi
b=$(cd "$dir" && pwd) || { echo "usage: devseg.sh [DIR] (no $dir)"; exit 1; }
export LD_LIBRARY_PATH="$b/libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
T="$b/tests/gpu/devseg_test"
D="$b/daemon/kvsinkd"
C="$b/tools/kvsinkctl"
for f in "$T" "$D" "$C"; do [ -x "$f" ] || { echo "missing $f: run tests/gpu/build.sh"; exit 1; }; done
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
stats() { # SOCK LABEL: the daemon's stats (a client's view of the data socket)
  echo "--- stats of the $2 daemon:"
  "$C" --socket "$1" stats 2>&1 | sed 's/^/    /'
}
logtail() { # LOG LABEL
  [ -s "$1" ] || return 0
  echo "--- last lines of the $2 daemon's log ($1):"
  tail -n "${LOGLINES:-40}" "$1" | sed 's/^/    /'
}
start() {
  rm -f "$sock"
  KVSINK_PROFILE=1 "$D" --foreground --config "$tmp/kvsinkd.conf" --socket "$sock" \
    --device "${GPU:-cuda:0}" --log-level info >> "$tmp/kvsinkd.log" 2>&1 &
  dpid=$!
  for i in $(seq 100); do [ -S "$sock" ] && return 0; sleep 0.1; done
  echo "kvsinkd did not come up"; cat "$tmp/kvsinkd.log"; exit 1
}
stop() { [ -n "$dpid" ] && kill -TERM "$dpid" 2>/dev/null && wait "$dpid"; dpid=; }
keep() {
  [ -n "${OUT:-}" ] && [ -d "$OUT" ] || return 0
  mkdir -p "$OUT/devseg" && cp -r "$tmp"/. "$OUT/devseg/" 2>/dev/null
  rm -f "$OUT/devseg/in" "$OUT/devseg/"*.sock "$OUT/devseg/"*.bin # the dumps: 16 MiB each
}
mps=
if [ "${MPS:-0}" = 1 ]; then
  command -v nvidia-cuda-mps-control >/dev/null 2>&1 || PATH=$PATH:/usr/local/cuda/bin
  export CUDA_MPS_PIPE_DIRECTORY="$tmp/mps" CUDA_MPS_LOG_DIRECTORY="$tmp/mps-log"
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  nvidia-cuda-mps-control -d || { echo "MPS=1: nvidia-cuda-mps-control -d failed"; exit 1; }
  mps=1
  echo "MPS: on (pipes in $CUDA_MPS_PIPE_DIRECTORY)"
fi
trap 'stop; [ -n "$mps" ] && echo quit | nvidia-cuda-mps-control; [ $rc = 0 ] && [ -z "${DEVSEG_KEEP:-}" ] || keep; rm -rf "$tmp"' EXIT
nvidia-smi --query-gpu=name,uuid,driver_version --format=csv,noheader 2>/dev/null | sed 's/^/GPU: /'

start
grep -q "device segments on" "$tmp/kvsinkd.log" && pass "kvsinkd serves device segments" ||
  { failed "kvsinkd serves no device segments"; cat "$tmp/kvsinkd.log"; }

# 1. correctness
timeout 120 "$T" "$sock" check > "$tmp/check.log" 2>&1 || { rc=1; crc=1; }
cat "$tmp/check.log"
[ "${crc:-0}" = 0 ] || { stats "$sock" GPU; logtail "$tmp/kvsinkd.log" GPU; }

# 1b. the same bytes as a host pool (the C reference) through a host segment
hsock="$tmp/host.sock"
"$D" --foreground --config "$tmp/kvsinkd.conf" --socket "$hsock" --device host \
  --log-level info > "$tmp/kvsinkd-host.log" 2>&1 &
hpid=$!
for i in $(seq 100); do [ -S "$hsock" ] && break; sleep 0.1; done
if timeout 120 "$T" "$sock" dump "$tmp/gpu-dev.bin" 1 && timeout 120 "$T" "$sock" dump "$tmp/gpu-host.bin" 0 &&
   timeout 300 "$T" "$hsock" dump "$tmp/host.bin" 0; then
  bad=0
  if cmp -s "$tmp/gpu-dev.bin" "$tmp/host.bin"; then
    pass "16/8/4/2 bits: GPU pool via device segment == host pool (C reference) via host segment"
  else
    failed "GPU pool via device segment differs from the host pool"; bad=1
    echo "  gpu-dev.bin vs host.bin (layout: per bits 16/8/4/2, K then V, each [layer 4][token 256][head 8][128] fp16):"
    cmp -l "$tmp/gpu-dev.bin" "$tmp/host.bin" | head -5 | sed 's/^/    cmp -l: /'
    "$T" - cmp "$tmp/gpu-dev.bin" "$tmp/host.bin"
  fi
  if cmp -s "$tmp/gpu-host.bin" "$tmp/host.bin"; then
    pass "16/8/4/2 bits: GPU pool via host segment == host pool"
  else
    failed "GPU pool via host segment differs from the host pool"; bad=1
    cmp -l "$tmp/gpu-host.bin" "$tmp/host.bin" | head -5 | sed 's/^/    cmp -l: /'
    "$T" - cmp "$tmp/gpu-host.bin" "$tmp/host.bin"
  fi
  cmp -s "$tmp/gpu-dev.bin" "$tmp/gpu-host.bin" ||
    { echo "  (the GPU daemon's device- and host-segment dumps differ too:)"; "$T" - cmp "$tmp/gpu-dev.bin" "$tmp/gpu-host.bin"; }
  if [ $bad = 1 ]; then
    stats "$sock" GPU; stats "$hsock" host
    logtail "$tmp/kvsinkd.log" GPU; logtail "$tmp/kvsinkd-host.log" host
  fi
else
  failed "dump runs"
  logtail "$tmp/kvsinkd.log" GPU; logtail "$tmp/kvsinkd-host.log" host
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
  stats "$sock" GPU; logtail "$tmp/kvsinkd.log" GPU
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
wait "$tpid" || { rc=1; rrc=1; }
cat "$tmp/restart.log"
[ "${rrc:-0}" = 0 ] || logtail "$tmp/kvsinkd.log" GPU

# 3. figures
timeout 120 "$T" "$sock" latency || failed "latency"
timeout 120 "$T" "$sock" latency 0 || failed "latency without spinning"
# 3b. the same with busy-polling on both sides (kvsinkd.conf busy_poll_us,
# kvs_set_busy_poll): a second GPU daemon for it, stopped after
ssock="$tmp/spin.sock"
{ cat "$tmp/kvsinkd.conf"; echo "busy_poll_us = ${SPIN:-1000}"; } > "$tmp/kvsinkd-spin.conf"
"$D" --foreground --config "$tmp/kvsinkd-spin.conf" --socket "$ssock" --device "${GPU:-cuda:0}" \
  --log-level info > "$tmp/kvsinkd-spin.log" 2>&1 &
spid=$!
for i in $(seq 100); do [ -S "$ssock" ] && break; sleep 0.1; done
timeout 120 "$T" "$ssock" latency "${SPIN:-1000}" || failed "latency with busy-poll"
# A/B: decode steps through kvsinkd's device path instead of the client's
# stage (KVSINK_DEVICE_STAGE=0, HACKING.md Decision 50)
KVSINK_DEVICE_STAGE=0 timeout 120 "$T" "$ssock" latency "${SPIN:-1000}" | grep -v "^host" |
  sed 's/^/[stage off] /' || failed "latency with busy-poll, stage off"
# four clients at once (four engines' decode steps), stage on and off:
# with the stage kvsinkd never waits for a GPU copy of a decode step, so
# one client's copies do not hold up the others' requests
for st in 1 0; do
  lp=
  for i in 1 2 3 4; do
    KVSINK_DEVICE_STAGE=$st timeout 120 "$T" "$ssock" latency "${SPIN:-1000}" > "$tmp/lat4-$st-$i.txt" 2>&1 &
    lp="$lp $!"
  done
  for p in $lp; do wait "$p" || failed "latency, 4 clients, stage $st"; done
  grep -h "put+get (" "$tmp"/lat4-$st-*.txt | sed "s/^/[4 clients, stage $st] /"
done
kill -TERM "$spid"; wait "$spid"
# 1-process bandwidth against a daemon that sleeps between requests
# (busy_poll_us = 0; the rows below use the default, auto: kvsinkd spins
# 1 ms after a request when it serves a GPU pool, HACKING.md Decision 50)
{ cat "$tmp/kvsinkd.conf"; echo "busy_poll_us = 0"; } > "$tmp/kvsinkd-sleep.conf"
rm -f "$ssock"
"$D" --foreground --config "$tmp/kvsinkd-sleep.conf" --socket "$ssock" --device "${GPU:-cuda:0}" \
  --log-level info > "$tmp/kvsinkd-sleep.log" 2>&1 &
spid=$!
for i in $(seq 100); do [ -S "$ssock" ] && break; sleep 0.1; done
for bits in 16 8 4 2; do
  timeout 200 "$T" "$ssock" bench 1 "$bits" | sed 's/^/[daemon sleeps] /' ||
    failed "bench 1 proc $bits bits, busy_poll_us = 0"
done
kill -TERM "$spid"; wait "$spid"
profiles() { grep -c "profile: session" "$tmp/kvsinkd.log"; }
for p in 1 2 4; do
  for bits in 16 8 4 2; do
    n0=$(profiles)
    timeout 200 "$T" "$sock" bench "$p" "$bits" || failed "bench $p procs $bits bits"
    [ "$p" = 1 ] || continue
    # the two sessions (device, host segment) log their profile as they close
    for i in $(seq 50); do [ "$(profiles)" -ge $((n0 + 2)) ] && break; sleep 0.1; done
    grep "profile: session" "$tmp/kvsinkd.log" | tail -n +$((n0 + 1)) | sed 's/^.*profile: /    profile: /'
  done
done
# the same rows without the start barrier (each process starts its loop
# once set up, as before it): CUDA's start-up in a fresh process takes
# longer than a loop, so they mostly take turns and the summed rates
# count each process's own speed, not the daemon's aggregate
for p in 2 4; do
  DEVSEG_NO_BARRIER=1 timeout 200 "$T" "$sock" bench "$p" 4 | sed 's/^/[no start barrier] /' ||
    failed "bench $p procs 4 bits, no start barrier"
done
stats "$sock" GPU
stop
# A/B on this GPU: the 1-process rows again on a fresh daemon (an empty
# pool: no evictions) for each setting of KVSINK_DEV_INPLACE (0: device
# puts staged, the kernel checking the copy) and KVSINK_PUT_QUEUE (0: one
# launch at the end) (HACKING.md Decision 36), to show what the in-place
# put and the queued launches each give
# (DEVSEG_AB="put get" by default: which of the two A/B sections run)
case " ${DEVSEG_AB:-put get} " in *" put "*) put_ab="11 01 10 00" ;; *) put_ab= ;; esac
case " ${DEVSEG_AB:-put get} " in *" get "*) get_ab="new ctx-sync no-spin" ;; *) get_ab= ;; esac
case " ${DEVSEG_AB:-put get} " in *" pipe "*) pipe_ab="built pipe=0 streams=1 chunk=512 chunk=1024" ;; *) pipe_ab= ;; esac
# DEVSEG_AB=feed: the feed (KVSINK_PUT_FEED=1) against launches per chunk
# (as built), twice in turn (Decision 51)
case " ${DEVSEG_AB:-put get} " in *" feed "*) pipe_ab="$pipe_ab built feed=1 built feed=1" ;; esac
# DEVSEG_AB=copy16: 16/16 blocks by the copy kernel (as built) against the
# quantize kernel (KVSINK_COPY16=0), twice in turn (Decision 56)
case " ${DEVSEG_AB:-put get} " in *" copy16 "*) pipe_ab="$pipe_ab built copy16=0 built copy16=0" ;; esac
# DEVSEG_PIPE_AB="built chunk=64 ...": these settings instead
pipe_ab=${DEVSEG_PIPE_AB:-$pipe_ab}
# the 1-process rows at 16 and 4 bits on the running daemon, labelled
ab_rows() { # LABEL [VAR=VALUE...] (the client's environment)
  label=$1; shift
  for bits in ${DEVSEG_AB_BITS:-16 4}; do
    if env "$@" timeout 200 "$T" "$sock" bench 1 "$bits" > "$tmp/ab.out"; then
      grep "^device" "$tmp/ab.out" | sed "s/^/  $label: /"
    else
      cat "$tmp/ab.out"; failed "A/B $label $bits bits"
    fi
  done
}
for ab in $put_ab; do
  set -- ${ab%?} ${ab#?}
  export KVSINK_DEV_INPLACE=$1 KVSINK_PUT_QUEUE=$2
  start
  echo "A/B: KVSINK_DEV_INPLACE=$1 KVSINK_PUT_QUEUE=$2 (fresh daemon):"
  ab_rows "$1$2"
  stop
done
unset KVSINK_DEV_INPLACE KVSINK_PUT_QUEUE
# a bulk device put's overlap (HACKING.md Decision 50; DEVSEG_AB=pipe):
# as built; KVSINK_PUT_PIPE=0 (all groups claimed before any launch);
# KVSINK_QUEUE_STREAMS=1 (every chunk on one stream); KVSINK_PUT_CHUNK
# 512 and 1024 (two launches, one); KVSINK_PUT_FEED=1 (the feed: one
# kernel fed as groups are claimed, Decision 51)
for ab in $pipe_ab; do
  case $ab in
    pipe=0) export KVSINK_PUT_PIPE=0 ;;
    streams=1) export KVSINK_QUEUE_STREAMS=1 ;;
    chunk=*) export KVSINK_PUT_CHUNK=${ab#chunk=} ;;
    feed=1) export KVSINK_PUT_FEED=1 ;;
    copy16=0) export KVSINK_COPY16=0 ;;
  esac
  start
  unset KVSINK_PUT_PIPE KVSINK_QUEUE_STREAMS KVSINK_PUT_CHUNK KVSINK_PUT_FEED KVSINK_COPY16
  echo "A/B: put $ab (fresh daemon):"
  ab_rows "$ab"
  stop
done
# the same for a bulk get's parts (HACKING.md Decision 48): "new" as
# built; "ctx-sync" a context synchronize before the reply
# (KVSINK_GET_SYNC=1); "no-spin" the client sleeping through its device
# requests (KVSINK_BUSY_POLL_US=0 in the client)
for ab in $get_ab; do
  case $ab in
    ctx-sync) export KVSINK_GET_SYNC=1 ;;
  esac
  start
  unset KVSINK_GET_SYNC
  echo "A/B: get $ab (fresh daemon):"
  if [ $ab = no-spin ]; then ab_rows "$ab" KVSINK_BUSY_POLL_US=0; else ab_rows "$ab"; fi
  stop
done
# the store's own host time per bulk put/get on this machine's CPU (no
# GPU work: a backend whose kernels do nothing), pool filling and full
if [ -x "$b/tests/store/bench_put" ]; then
  echo "host work of the store per put/get of 1,024 tokens x 32 layers (tests/store/bench_put):"
  for bits in 16 2; do
    "$b/tests/store/bench_put" 20 "$bits" 8192 null cold | sed 's/^/  filling: /'
    "$b/tests/store/bench_put" 50 "$bits" 8192 null | sed 's/^/  full:    /'
  done
fi
grep -iE "error|warn" "$tmp/kvsinkd.log" | grep -v "hello reply" | head -20
[ $rc = 0 ] || logtail "$tmp/kvsinkd.log" GPU
[ $rc = 0 ] && echo "devseg.sh: all checks passed" || echo "devseg.sh: FAILED"
exit $rc
