#!/bin/sh
# SPDX-License-Identifier: MIT
# kvsinkd --check-config: "ok" and 0, or the error with its line and 1.
. "${top_srcdir:-.}/tests/lib/daemon.sh"

out=$("$KVSINKD" --check-config "$top_srcdir/daemon/default.conf") || fail "default.conf: $out"
[ "$out" = ok ] || fail "default.conf: $out"

printf '# c\nsocket = /tmp/x\n\ngroup_size = 8\npfn = 9\n' >"$T/bad1"
out=$("$KVSINKD" --check-config "$T/bad1") && fail "pfn > group_size accepted"
echo "$out" | grep -q "bad1:5: pfn (9) is larger than group_size (8)" || fail "bad1: $out"

printf 'pool_size = 1G\nlog_level = loud\n' >"$T/bad2"
out=$("$KVSINKD" --check-config "$T/bad2") && fail "bad log_level accepted"
echo "$out" | grep -q "bad2:2: log_level:" || fail "bad2: $out"

printf 'color = blue\n' >"$T/bad3"
out=$("$KVSINKD" --check-config "$T/bad3") && fail "unknown key accepted"
echo "$out" | grep -q "bad3:1: unknown key 'color'" || fail "bad3: $out"

out=$("$KVSINKD" --check-config "$T/missing") && fail "missing file accepted"
echo "$out" | grep -q "No such file" || fail "missing: $out"

# A bad command-line value is an error too (exit 2, usage error).
"$KVSINKD" --pool-size lots --check-config "$T/bad3" >/dev/null 2>&1
[ $? -eq 2 ] || fail "--pool-size lots must be a usage error"
echo ok
