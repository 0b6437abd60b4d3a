# Sourced by the remote-*.sh tests: a private redis-server on a unix
# socket and any number of kvsinkd sharing it, all in a temporary
# directory, stopped at exit; a daemon that exits uncleanly fails the test.
set -u
top_builddir=${top_builddir:-.}
KVSINKD=$top_builddir/daemon/kvsinkd
KVSINKCTL=$top_builddir/tools/kvsinkctl
RCLIENT=$top_builddir/tests/integration/remote-client
command -v redis-server >/dev/null 2>&1 || { echo "redis-server not installed"; exit 77; }
command -v redis-cli >/dev/null 2>&1 || { echo "redis-cli not installed"; exit 77; }
[ -x "$KVSINKD" ] || { echo "kvsinkd not built"; exit 1; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kvsink-remote.XXXXXX") || exit 1
rsock=$tmp/redis.sock
rpid=
daemons=
cleanup() {
  for d in $daemons; do
    p=$(cat "$tmp/$d.pid" 2>/dev/null) && kill -KILL "$p" 2>/dev/null
  done
  [ -n "$rpid" ] && kill -CONT "$rpid" 2>/dev/null && kill -KILL "$rpid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

fail() {
  echo "FAIL: $*"
  for d in $daemons; do echo "--- $d.log"; tail -15 "$tmp/$d.log"; done
  exit 1
}

# wait_for WHAT CMD...: poll CMD (0.1 s steps, 60 s at most) until it succeeds.
wait_for() {
  what=$1; shift
  i=0
  until "$@" >/dev/null 2>&1; do
    i=$((i + 1))
    [ $i -gt 600 ] && fail "waiting for $what"
    sleep 0.1
  done
}

rcli() { redis-cli -s "$rsock" "$@"; }

# start_redis: a cache-only redis-server (no persistence) on $rsock.
start_redis() {
  redis-server --port 0 --unixsocket "$rsock" --unixsocketperm 600 --save '' \
    --appendonly no --dir "$tmp" --maxmemory 64mb --maxmemory-policy allkeys-lru \
    > "$tmp/redis.log" 2>&1 &
  rpid=$!
  wait_for "redis-server" rcli ping
}

stop_redis() {
  kill -KILL "$rpid" 2>/dev/null
  wait "$rpid" 2>/dev/null
  rpid=
  rm -f "$rsock"
}

# make_key FILE: a 32-byte cluster secret.
make_key() { head -c 32 /dev/urandom > "$1" && chmod 600 "$1"; }

# start_kvsinkd NAME KEYFILE [config lines...]: daemon NAME on $tmp/NAME.sock
start_kvsinkd() {
  name=$1 key=$2; shift 2
  {
    echo "remote = unix:$rsock"
    echo "cluster_key_file = $key"
    echo "pool_size = 64M"
    for l in "$@"; do echo "$l"; done
  } > "$tmp/$name.conf"
  timeout --foreground 300 "$KVSINKD" --foreground --config "$tmp/$name.conf" \
    --socket "$tmp/$name.sock" --device host --log-level info > "$tmp/$name.log" 2>&1 &
  echo $! > "$tmp/$name.pid"
  daemons="$daemons $name"
  i=0
  while ! "$KVSINKCTL" --socket "$tmp/$name.sock" ping >/dev/null 2>&1; do
    i=$((i + 1))
    if [ $i -gt 300 ] || ! kill -0 "$(cat "$tmp/$name.pid")" 2>/dev/null; then
      fail "kvsinkd $name did not come up"
    fi
    sleep 0.1
  done
}

# stop_kvsinkd NAME: SIGTERM, and the exit must be clean.
stop_kvsinkd() {
  p=$(cat "$tmp/$1.pid")
  kill -TERM "$p"
  wait "$p"; rc=$?
  rm -f "$tmp/$1.pid"
  [ $rc -eq 0 ] || fail "kvsinkd $1 exited with status $rc"
}

# stat NAME FIELD: one field of kvsinkctl stats --json of daemon NAME
stat() {
  "$KVSINKCTL" --socket "$tmp/$1.sock" stats --json |
    /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$2"
}
stat_is() { [ "$(stat "$1" "$2")" = "$3" ]; }
stat_ge() { [ "$(stat "$1" "$2")" -ge "$3" ]; }
dbsize_is() { [ "$(rcli dbsize)" = "$1" ]; }

# client NAME ARGS...: remote-client against daemon NAME
client() { n=$1; shift; timeout 120 "$RCLIENT" "$tmp/$n.sock" "$@"; }
