#!/bin/sh
# SPDX-License-Identifier: MIT
# Tenants: blocks one uid stored are invisible to another uid. Needs root
# (to run a client as a second uid: nobody, or a throwaway user); skipped
# (77) otherwise. Today's checks: the other uid's lookup finds 0 tokens,
# with and without bind, and cannot get them; the owner finds them all
# (so the probe is shown to see data where there is some). With the admin
# plane: the other uid's evict is refused on the data socket (EACCES) and
# leaves the blocks in place, it cannot open the admin socket, and its
# list and stats show its own namespace only.
. "${top_srcdir:-.}/tests/lib/daemon.sh"
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root to run a client as a second uid"; exit 77; }
command -v setpriv >/dev/null 2>&1 || { echo "SKIP: setpriv (util-linux) missing"; exit 77; }
other=nobody
if ! id -u "$other" >/dev/null 2>&1; then
  other=kvsink-itest
  id -u "$other" >/dev/null 2>&1 || useradd -r -M -s /usr/sbin/nologin "$other" ||
    { echo "SKIP: no second user and useradd failed"; exit 77; }
fi
ouid=$(id -u "$other")
ogid=$(id -g "$other")
[ "$ouid" != 0 ] || fail "$other is uid 0"
# the other uid must reach the socket and the test binaries
chmod 755 "$T"
for d in "$top_builddir" "$top_builddir/tests" "$top_builddir/tests/integration" "$top_builddir/tools"; do
  setpriv --reuid "$ouid" --regid "$ogid" --clear-groups test -x "$d" ||
    { echo "SKIP: $other cannot reach $d"; exit 77; }
done
mkdir "$T/other" && chown "$ouid:$ogid" "$T/other" || fail "cannot make a directory for $other"
daemon_conf 'socket_mode = 0666'
start_daemon
as_other() { setpriv --reuid "$ouid" --regid "$ogid" --clear-groups "$@"; }

timeout 60 "$ITEST" "$SOCK" store 7 4 "$T/marker" || fail "owner store"
# the owner finds all 4 blocks and reads them back: the probe sees data
timeout 60 "$ITEST" "$SOCK" probe 7 4 all || fail "owner does not find its own blocks"
# the other uid: nothing found, nothing bound, nothing read
as_other timeout 60 "$ITEST" "$SOCK" probe 7 4 none || fail "uid $ouid ($other) reached uid 0's blocks"
# and the other way round: what the other uid stores, root does not see
as_other timeout 60 "$ITEST" "$SOCK" store 8 4 "$T/other/marker" || fail "uid $ouid store"
as_other timeout 60 "$ITEST" "$SOCK" probe 8 4 all || fail "uid $ouid does not find its own blocks"
timeout 60 "$ITEST" "$SOCK" probe 8 4 none || fail "uid 0 reached uid $ouid's blocks"
grep -q "uid:$ouid" "$LOG" || fail "no session of uid $ouid in the log"

# the admin plane: each uid holds 16 blocks (4 groups x 4 layers)
# json FILE EXPR: EXPR over the parsed file d
json() { /usr/bin/python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"; }
ctl stats --json > "$T/root-stats.json" || fail "root stats"
[ "$(json "$T/root-stats.json" 'd["blocks_used"]')" = 32 ] || fail "root sees $(json "$T/root-stats.json" 'd["blocks_used"]') blocks, expected 32"
oc() { as_other timeout 30 "$KVSINKCTL" --socket "$SOCK" "$@"; }
rc=0; oc evict > "$T/evict.out" 2>&1 || rc=$?
[ $rc = 1 ] || { cat "$T/evict.out"; fail "uid $ouid evict exited $rc, expected 1 (refused)"; }
grep -qi "permission denied" "$T/evict.out" || { cat "$T/evict.out"; fail "uid $ouid evict: no permission denied"; }
ctl stats --json > "$T/after.json" || fail "root stats after the refused evict"
[ "$(json "$T/after.json" 'd["blocks_used"]')" = 32 ] || fail "blocks gone after uid $ouid's refused evict"
[ "$(json "$T/after.json" 'd["evictions"]')" = 0 ] || fail "evictions after a refused evict"
timeout 60 "$ITEST" "$SOCK" probe 7 4 all || fail "root's blocks not all there after uid $ouid's evict"
# the admin socket is the daemon user's (0600): the other uid cannot open it
rc=0; as_other timeout 30 "$KVSINKCTL" --admin-socket "${SOCK%.sock}.admin.sock" stats > "$T/adm.out" 2>&1 || rc=$?
[ $rc = 3 ] || { cat "$T/adm.out"; fail "uid $ouid on the admin socket exited $rc, expected 3 (unreachable)"; }
# list and stats: its own namespace only
oc list --json > "$T/olist.json" || fail "uid $ouid list"
[ "$(json "$T/olist.json" 'sorted(set(s["ns"] for s in d))')" = "['uid:$ouid']" ] ||
  { cat "$T/olist.json"; fail "uid $ouid's list shows other namespaces"; }
[ "$(json "$T/olist.json" 'sum(s["blocks"] for s in d)')" = 16 ] || { cat "$T/olist.json"; fail "uid $ouid's list blocks"; }
oc stats --json > "$T/ostats.json" || fail "uid $ouid stats"
[ "$(json "$T/ostats.json" 'd["blocks_used"]')" = 16 ] || { cat "$T/ostats.json"; fail "uid $ouid's stats count other blocks"; }
[ "$(json "$T/ostats.json" 'd["spaces"]')" = 1 ] || { cat "$T/ostats.json"; fail "uid $ouid's stats count other spaces"; }
[ "$(json "$T/ostats.json" 'd["lookup_tokens"]')" = 0 ] || { cat "$T/ostats.json"; fail "uid $ouid sees the daemon's lookup counters"; }
# root (admin) still sees both namespaces
ctl list --json > "$T/rlist.json" || fail "root list"
[ "$(json "$T/rlist.json" 'sorted(set(s["ns"] for s in d))')" = "['uid:0', 'uid:$ouid']" ] ||
  { cat "$T/rlist.json"; fail "root's list"; }
stop_daemon
echo "isolation ok (uid 0 and uid $ouid, $other)"
