#!/bin/sh
# SPDX-License-Identifier: MIT
# Attend across uids: a second uid cannot get a table of the first one's
# seq, and the pool chunks each uid maps (by inode) have nothing in common
# while both cache blocks. Needs root (a client runs as a second uid);
# skipped (77) otherwise, as tests/integration/isolation.sh.
. "${top_srcdir:-.}/tests/lib/daemon.sh"
AT=$top_builddir/tests/integration/attend-itest
[ -x "$AT" ] || fail "$AT not built"
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root to run a client as a second uid"; exit 77; }
command -v setpriv >/dev/null 2>&1 || { echo "SKIP: setpriv (util-linux) missing"; exit 77; }
other=nobody
id -u "$other" >/dev/null 2>&1 || { echo "SKIP: no user nobody"; exit 77; }
ouid=$(id -u "$other")
ogid=$(id -g "$other")
[ "$ouid" != 0 ] || fail "$other is uid 0"
chmod 755 "$T"
for d in "$top_builddir" "$top_builddir/tests" "$top_builddir/tests/integration"; do
  setpriv --reuid "$ouid" --regid "$ogid" --clear-groups test -x "$d" ||
    { echo "SKIP: $other cannot reach $d"; exit 77; }
done
mkdir "$T/other" && chown "$ouid:$ogid" "$T/other" || fail "cannot make a directory for $other"
daemon_conf 'socket_mode = 0666'
start_daemon --device host # block tables: host pools only
timeout 60 "$AT" "$SOCK" inodes "$T/root.ino" || fail "owner table"
setpriv --reuid "$ouid" --regid "$ogid" --clear-groups \
  timeout 60 "$AT" "$SOCK" inodes "$T/other/other.ino" || fail "uid $ouid table"
"$AT" "$SOCK" disjoint "$T/root.ino" "$T/other/other.ino" || fail "chunks shared across uids"
stop_daemon
echo "attend isolation ok (uid 0 and uid $ouid)"
