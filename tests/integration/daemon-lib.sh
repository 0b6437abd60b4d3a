# Shared by the daemon-*.sh tests: a private kvsinkd on a socket in a
# temporary directory, killed on exit.
: "${top_builddir:=.}"
KVSINKD=$top_builddir/daemon/kvsinkd
RAW=$top_builddir/tests/integration/rawclient
T=$(mktemp -d "${TMPDIR:-/tmp}/kvsd-test.XXXXXX") || exit 99
SOCK=$T/kvsinkd.sock
DPID=
cleanup() {
  if [ -n "$DPID" ] && kill -0 "$DPID" 2>/dev/null; then kill -9 "$DPID" 2>/dev/null; fi
  rm -rf "$T"
}
trap cleanup EXIT INT TERM

fail() { echo "FAIL: $*"; [ -f "$T/log" ] && sed 's/^/  log: /' "$T/log"; exit 1; }

# start_daemon ARGS...: start kvsinkd and wait for its socket.
start_daemon() {
  "$KVSINKD" --foreground --socket "$SOCK" --pool-size 16M --device host --log-level debug \
    "$@" 2>"$T/log" &
  DPID=$!
  i=0
  # bind comes before listen: wait until a ping is answered
  until [ -S "$SOCK" ] && timeout 5 "$RAW" "$SOCK" send '{"op":"ping","id":1}' recv >/dev/null 2>&1; do
    i=$((i + 1))
    [ $i -gt 100 ] && fail "kvsinkd did not create $SOCK"
    kill -0 "$DPID" 2>/dev/null || fail "kvsinkd exited at start"
    sleep 0.1
  done
}

# stop_daemon: SIGTERM and require exit status 0.
stop_daemon() {
  kill -TERM "$DPID"
  # a daemon that does not stop is killed, and that fails the test
  (sleep 20; kill -9 "$DPID" 2>/dev/null) &
  killer=$!
  wait "$DPID"
  rc=$?
  kill "$killer" 2>/dev/null
  DPID=
  [ $rc -eq 0 ] || fail "kvsinkd exited with $rc after SIGTERM"
}

raw() { timeout 20 "$RAW" "$SOCK" "$@"; }

HELLO='{"op":"hello","id":1,"version":1,"model":{"id":"m","layers":2,"kv_heads":2,"head_dim":8,"dtype":"fp16"},"seg_size":65536}'
TOK4='[1,2,3,4]'
