#!/bin/sh
# SPDX-License-Identifier: MIT
# A small pool: many sequences force evictions; found prefixes read back
# right; a put into a pool full of pinned blocks gets -ENOSPC and works
# after a release on another connection.
. "${top_srcdir:-.}/tests/lib/daemon.sh"
start_daemon --pool-size 4M
timeout 120 "$ITEST" "$SOCK" evict 200 > "$T/evict.log" 2>&1
rc=$?
cat "$T/evict.log"
[ $rc -eq 0 ] || fail "evict client"
grep -q "^refused: ..*(" "$T/evict.log" || fail "no -ENOSPC text"
ev=$(stat_field evictions) || fail "stats"
[ "$ev" -gt 0 ] || fail "no evictions counted"
[ "$(stat_field put_nospc)" -gt 0 ] || fail "refused put not counted"
stop_daemon
echo "client-evict ok ($ev evictions)"
