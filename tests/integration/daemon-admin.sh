#!/bin/sh
# SPDX-License-Identifier: MIT
# The admin plane: the admin socket (mode 0600, no hello needed, every op,
# kvsinkctl's default) and the data socket's view for a client that is not
# an admin: its own namespace in list and stats, -EACCES for the rest.
. "${top_srcdir:-.}/tests/lib/daemon.sh"
CTL=$top_builddir/tools/kvsinkctl
ADM=$T/kvsinkd.admin.sock

chmod 755 "$T" # other users reach the data socket
daemon_conf 'socket_mode = 0666'
start_daemon --pool-size 16M
[ -S "$ADM" ] || fail "no admin socket next to the data socket"
[ "$(stat -c %a "$ADM")" = 600 ] || fail "admin socket mode $(stat -c %a "$ADM"), want 600"
[ "$(stat -c %a "$SOCK")" = 666 ] || fail "data socket mode $(stat -c %a "$SOCK")"

# a space of uid 0 with one quantized block (32 tokens = one group)
TOK32=$(seq -s, 1 32)
PUT='{"op":"put","id":2,"seq":7,"start":0,"tokens":['$TOK32'],"layers":[0,2],"k_off":0,"v_off":4096}'
raw send "$HELLO" recv send "$PUT" recv >/dev/null || fail "root put"

# kvsinkctl through the admin socket: by path and through the environment
[ "$(timeout 30 "$CTL" --admin-socket "$ADM" ping)" = ok ] || fail "ping on the admin socket"
timeout 30 "$CTL" --admin-socket "$ADM" list | grep -q '^ns=uid:0 model=m ' || fail "admin list"
KVSINK_ADMIN_SOCKET=$ADM timeout 30 "$CTL" stats --json |
  python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["spaces"] >= 1 and d["blocks_used"] >= 2' ||
  fail "admin stats through \$KVSINK_ADMIN_SOCKET"
timeout 30 "$CTL" --admin-socket "$ADM" profiles >/dev/null || fail "admin profiles"
timeout 30 "$CTL" reload --admin-socket "$ADM" | grep -q '^reloaded' || fail "admin reload (options after the command)"
# admin ops need no hello: a raw evict on the admin socket
out=$(timeout 20 "$RAW" "$ADM" send '{"op":"evict","id":3}' recv) || fail "raw evict: $out"
echo "$out" | grep -q '"id"=>3, "evicted"=>[0-9]' || fail "evict on the admin socket: $out"
raw send "$HELLO" recv send "$PUT" recv >/dev/null || fail "root put again"

# A client that is neither root nor in admin_group, on the data socket.
if [ "$(id -u)" != 0 ] || ! command -v setpriv >/dev/null; then
  echo "not root or no setpriv: the non-admin half is skipped"
  stop_daemon
  exit 0
fi
NOBODY=65534
as_nobody() { setpriv --reuid=$NOBODY --regid=$NOBODY --clear-groups "$@"; }
as_nobody timeout 20 "$RAW" "$SOCK" send "$HELLO" recv send "$PUT" recv >/dev/null || fail "nobody's put"
for op in evict reload profiles; do
  out=$(as_nobody timeout 20 "$RAW" "$SOCK" send '{"op":"'$op'","id":4}' recv) || fail "$op: $out"
  echo "$out" | grep -q '"err"=>\[-13, ".*admin' || fail "$op from a data client must be -EACCES: $out"
done
as_nobody timeout 30 "$CTL" --socket "$SOCK" evict 2>"$T/err"
[ $? -eq 1 ] || fail "kvsinkctl evict refused must exit 1"
grep -qi "permission denied" "$T/err" || fail "kvsinkctl must say why: $(cat "$T/err")"
list=$(as_nobody timeout 30 "$CTL" --socket "$SOCK" list) || fail "nobody's list"
echo "$list" | grep -q "^ns=uid:$NOBODY " || fail "nobody must see its space: $list"
echo "$list" | grep -q "^ns=uid:0 " && fail "nobody must not see root's space: $list"
as_nobody timeout 30 "$CTL" --socket "$SOCK" stats --json |
  python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["spaces"] == 1 and d["pool_bytes"] == 0 and d["pools"] == [], d' ||
  fail "nobody's stats must cover its namespace only"
# the admin socket is closed to it
as_nobody timeout 30 "$CTL" --admin-socket "$ADM" ping 2>/dev/null
[ $? -eq 3 ] || fail "the admin socket must refuse other users"
# root on the data socket is an admin and sees both
timeout 30 "$CTL" --socket "$SOCK" list | grep -c '^ns=' | grep -qx 2 || fail "root sees every space"

# admin_group: a member is an admin on the data socket
daemon_conf 'socket_mode = 0666' 'admin_group = nogroup'
kill -HUP "$DPID"
i=0
until grep -q 'configuration reloaded' "$LOG"; do
  i=$((i + 1)); [ $i -gt 100 ] && fail "no reload"; sleep 0.1
done
out=$(setpriv --reuid=$NOBODY --regid=$NOBODY --init-groups timeout 20 "$RAW" "$SOCK" \
  send '{"op":"evict","id":5}' recv 2>&1) || true
if getent group nogroup >/dev/null && [ "$(id -g nobody 2>/dev/null)" = "$(getent group nogroup | cut -d: -f3)" ]; then
  echo "$out" | grep -q '"id"=>5, "evicted"=>' || fail "admin_group member refused: $out"
fi
stop_daemon
[ -e "$ADM" ] && fail "admin socket left behind after stop"
echo ok
