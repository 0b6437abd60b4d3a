# Sourced by the client-*.sh integration tests: start a private kvsinkd
# in a temporary directory, stop it at exit, fail on an unclean exit.
# timeout --foreground: without it timeout also signals its process group, so
# kvsinkd would see SIGTERM twice and take the second as "exit at once".
# KVSINKD_DEVICE (default host) picks the pool: tests/gpu/daemon.sh sets cuda:0.
set -u
top_builddir=${top_builddir:-.}
KVSINKD=$top_builddir/daemon/kvsinkd
KVSINKCTL=$top_builddir/tools/kvsinkctl
ITEST=$top_builddir/tests/integration/kvs-itest
[ -x "$KVSINKD" ] || { echo "kvsinkd not built"; exit 77; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kvsink-test.XXXXXX") || exit 1
sock=$tmp/kvsinkd.sock
dpid=
stop_daemon() {
  [ -n "$dpid" ] || return 0
  kill -TERM "$dpid" 2>/dev/null
  wait "$dpid"; drc=$?
  dpid=
  if [ "$drc" -ne 0 ]; then
    echo "kvsinkd exited with status $drc"; cat "$tmp/kvsinkd.log"
    return 1
  fi
  return 0
}
cleanup() {
  [ -n "$dpid" ] && kill -KILL "$dpid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

# start_daemon [extra kvsinkd options]
start_daemon() {
  : > "$tmp/kvsinkd.conf"
  timeout --foreground 300 "$KVSINKD" --foreground --config "$tmp/kvsinkd.conf" --socket "$sock" \
    --device "${KVSINKD_DEVICE:-host}" --log-level info "$@" > "$tmp/kvsinkd.log" 2>&1 &
  dpid=$!
  i=0
  while ! "$KVSINKCTL" --socket "$sock" ping >/dev/null 2>&1; do
    i=$((i + 1))
    if [ $i -gt 200 ] || ! kill -0 "$dpid" 2>/dev/null; then
      echo "kvsinkd did not come up"; cat "$tmp/kvsinkd.log"; exit 1
    fi
    sleep 0.1
  done
}

fail() { echo "FAIL: $*"; [ -f "$tmp/kvsinkd.log" ] && tail -20 "$tmp/kvsinkd.log"; exit 1; }

# stat_field NAME: one field of kvsinkctl stats --json
stat_field() {
  "$KVSINKCTL" --socket "$sock" stats --json |
    /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}
