# SPDX-License-Identifier: MIT
# The one way shell tests start a kvsinkd (sourced). Everything lives in a
# private temporary directory $T: the socket $SOCK, the log $LOG, the
# configuration $CONF and an empty profiles directory $PROFILES, so an
# installed /etc/kvsink cannot change what a test sees.
#   daemon_conf 'key = value' ...   write $CONF (profiles_dir is always set)
#   start_daemon [kvsinkd options]  start, wait until a ping is answered
#   stop_daemon                     SIGTERM; fails the test unless status 0
# KVSINKD_DEVICE (default host) picks the pool: tests/gpu/daemon.sh sets cuda:0.
set -u
: "${top_srcdir:=.}"
: "${top_builddir:=.}"
KVSINKD=$top_builddir/daemon/kvsinkd
KVSINKCTL=$top_builddir/tools/kvsinkctl
ITEST=$top_builddir/tests/integration/kvs-itest
RAW=$top_builddir/tests/integration/rawclient
[ -x "$KVSINKD" ] || { echo "FAIL: $KVSINKD not built"; exit 99; }
T=$(mktemp -d "${TMPDIR:-/tmp}/kvsink-test.XXXXXX") || exit 99
SOCK=$T/kvsinkd.sock
LOG=$T/log
CONF=$T/kvsinkd.conf
PROFILES=$T/profiles
mkdir "$PROFILES" || exit 99
DPID=

cleanup() {
  if [ -n "$DPID" ] && kill -0 "$DPID" 2>/dev/null; then kill -KILL "$DPID" 2>/dev/null; fi
  rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

fail() {
  echo "FAIL: $*"
  [ -f "$LOG" ] && tail -n 40 "$LOG" | sed 's/^/  log: /'
  exit 1
}

# daemon_conf LINE...: the private configuration, profiles_dir first.
daemon_conf() {
  printf 'profiles_dir = %s\n' "$PROFILES" > "$CONF"
  for line in "$@"; do printf '%s\n' "$line" >> "$CONF"; done
}
daemon_conf

# ping_daemon: 0 when the daemon answers a ping on $SOCK.
ping_daemon() {
  [ -S "$SOCK" ] || return 1
  if [ -x "$RAW" ]; then
    timeout 10 "$RAW" "$SOCK" send '{"op":"ping","id":1}' recv 2>/dev/null | grep -q '"id"=>1}'
  else
    timeout 10 "$KVSINKCTL" --socket "$SOCK" ping >/dev/null 2>&1
  fi
}

# start_daemon ARGS...: later options override the defaults here. No
# timeout(1) wrapper: $DPID is kvsinkd itself (signals, /proc/$DPID).
start_daemon() {
  "$KVSINKD" --foreground --config "$CONF" --socket "$SOCK" --pool-size 64M \
    --device "${KVSINKD_DEVICE:-host}" --log-level debug "$@" > "$LOG" 2>&1 &
  DPID=$!
  i=0
  until ping_daemon; do
    i=$((i + 1))
    kill -0 "$DPID" 2>/dev/null || { DPID=; fail "kvsinkd exited at start"; }
    [ $i -gt 300 ] && fail "kvsinkd did not answer a ping on $SOCK"
    sleep 0.1
  done
}

# running PID: the process exists and is not a zombie waiting for wait.
running() { [ -r "/proc/$1/stat" ] && [ "$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

# stop_daemon: SIGTERM, require exit status 0; one that does not stop
# within 60 s is killed, which fails the test. (A watchdog subshell would
# leave its sleep behind: poll instead.)
stop_daemon() {
  [ -n "$DPID" ] || return 0
  kill -TERM "$DPID"
  i=0
  while running "$DPID"; do
    i=$((i + 1))
    [ $i -gt 600 ] && { kill -KILL "$DPID"; echo "kvsinkd did not stop in 60 s"; break; }
    sleep 0.1
  done
  rc=0
  wait "$DPID" || rc=$?
  DPID=
  [ $rc -eq 0 ] || fail "kvsinkd exited with status $rc after SIGTERM"
}

# wait_log PATTERN [TENTHS]: until the log has a line matching PATTERN.
wait_log() {
  i=0
  until grep -q "$1" "$LOG"; do
    i=$((i + 1)); [ $i -gt "${2:-300}" ] && fail "no log line matching '$1'"; sleep 0.1
  done
}

raw() { timeout 30 "$RAW" "$SOCK" "$@"; }
ctl() { timeout 30 "$KVSINKCTL" --socket "$SOCK" "$@"; }

# stat_field NAME: one field of kvsinkctl stats --json (fails when absent).
stat_field() {
  ctl stats --json |
    /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}

# rss_kb PID: resident set of a process in KiB (from /proc).
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

HELLO='{"op":"hello","id":1,"version":1,"model":{"id":"m","layers":2,"kv_heads":2,"head_dim":8,"dtype":"fp16"},"seg_size":65536}'
