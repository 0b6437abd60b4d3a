# SPDX-License-Identifier: MIT
# Sourced by the remote-*.sh tests: a private redis-server on a unix
# socket, and several kvsinkd sharing it, each started through
# tests/lib/daemon.sh (private configuration and profiles) under a name:
# its socket, log and configuration are $T/NAME.{sock,log,conf}.
#   start_redis / stop_redis         cache-only redis-server on $RSOCK
#   start_kvsinkd NAME KEYFILE [conf lines]   remote, cluster_key_file and
#                                    remote_timeout_ms = 5000 set
#   stop_kvsinkd NAME                SIGTERM, exit status 0 required
#   dstat NAME FIELD                 one field of that daemon's stats
#   client NAME ARGS...              tests/integration/remote-client
command -v redis-server >/dev/null 2>&1 || { echo "SKIP: redis-server not installed"; exit 77; }
command -v redis-cli >/dev/null 2>&1 || { echo "SKIP: redis-cli not installed"; exit 77; }
. "${top_srcdir:-.}/tests/lib/daemon.sh"
RCLIENT=$top_builddir/tests/integration/remote-client
[ -x "$RCLIENT" ] || { echo "FAIL: $RCLIENT not built"; exit 99; }
RSOCK=$T/redis.sock
RPID=
DAEMONS=

remote_cleanup() {
  for d in $DAEMONS; do
    p=$(cat "$T/$d.pid" 2>/dev/null) && kill -KILL "$p" 2>/dev/null
  done
  if [ -n "$RPID" ]; then kill -CONT "$RPID" 2>/dev/null; kill -KILL "$RPID" 2>/dev/null; fi
  cleanup
}
trap remote_cleanup EXIT

fail() {
  echo "FAIL: $*"
  for d in $DAEMONS; do
    [ -f "$T/$d.log" ] && tail -n 15 "$T/$d.log" | sed "s/^/  $d: /"
  done
  exit 1
}

# wait_for WHAT CMD...: poll CMD every 0.1 s, 60 s at most.
wait_for() {
  what=$1; shift
  i=0
  until "$@" >/dev/null 2>&1; do
    i=$((i + 1))
    [ $i -gt 600 ] && fail "waiting for $what"
    sleep 0.1
  done
}

rcli() { timeout 30 redis-cli -s "$RSOCK" "$@"; }

start_redis() {
  redis-server --port 0 --unixsocket "$RSOCK" --unixsocketperm 600 --save '' \
    --appendonly no --dir "$T" --maxmemory 64mb --maxmemory-policy allkeys-lru \
    > "$T/redis.log" 2>&1 &
  RPID=$!
  wait_for "redis-server" rcli ping
}

stop_redis() {
  kill -KILL "$RPID" 2>/dev/null
  wait "$RPID" 2>/dev/null
  RPID=
  rm -f "$RSOCK"
}

# make_key FILE: a 32-byte cluster secret.
make_key() { head -c 32 /dev/urandom > "$1" && chmod 600 "$1"; }

use() { SOCK=$T/$1.sock; LOG=$T/$1.log; CONF=$T/$1.conf; DPID=$(cat "$T/$1.pid" 2>/dev/null); }

start_kvsinkd() {
  name=$1 key=$2; shift 2
  use "$name"
  # a generous wait: a loaded machine must not turn hits into timeouts
  # (timeouts are tested with a frozen server instead)
  daemon_conf "remote = unix:$RSOCK" "cluster_key_file = $key" "remote_timeout_ms = 5000" "$@"
  start_daemon --log-level "${REMOTE_LOG_LEVEL:-info}"
  echo "$DPID" > "$T/$name.pid"
  DAEMONS="$DAEMONS $name"
}

stop_kvsinkd() {
  use "$1"
  stop_daemon
  rm -f "$T/$1.pid"
}

dstat() {
  timeout 30 "$KVSINKCTL" --socket "$T/$1.sock" stats --json > "$T/stats.json" || return 1
  /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' \
    "$T/stats.json" "$2"
}
stat_is() { [ "$(dstat "$1" "$2")" = "$3" ]; }
stat_ge() { [ "$(dstat "$1" "$2")" -ge "$3" ]; }
dbsize_is() { [ "$(rcli dbsize)" = "$1" ]; }

client() { n=$1; shift; timeout 120 "$RCLIENT" "$T/$n.sock" "$@"; }
