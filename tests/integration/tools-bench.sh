#!/bin/sh
# SPDX-License-Identifier: MIT
# kvsink-demo and kvsink-bench against a private kvsinkd with a small
# pool: the demo's table (every policy and bit width, compression below 1,
# the sink tokens kept), a second process finding the first one's prefix;
# the bench fitted to the pool loses no row and finds the shared prefix,
# unfitted it keeps the failed rows with their error; JSON parses; the
# command-line conventions (--version, --help, usage errors, exit codes).
. "${top_srcdir:-.}/tests/lib/daemon.sh"
sock=$SOCK tmp=$T
# the demo's profile: the kvsink rows keep tokens 0 and 37 in 16 bits
# (pfn 1 + max_sinks 1: 0 by pfn, 37 predicted, nothing left to fill,
# HACKING.md Decision 39)
printf 'model = kvsink-demo\nlayer = 1\nchannels = 3, 17\ntau = 50\nmax_sinks = 1\npfn = 1\n' \
  > "$PROFILES/kvsink-demo.profile"
have_profile=1
DEMO=$top_builddir/tools/kvsink-demo
BENCH=$top_builddir/tools/kvsink-bench
[ -x "$DEMO" ] && [ -x "$BENCH" ] || fail "tools not built"
json() { /usr/bin/python3 -c 'import json,sys; json.load(sys.stdin)'; }

# command line, no daemon needed
for p in "$DEMO" "$BENCH"; do
  n=$(basename "$p")
  "$p" --version | grep -q "^$n (kvsink) [0-9]" || fail "$n --version"
  "$p" --help | grep -q "$n(1)" || fail "$n --help names no man page"
  "$p" --bogus-flag > /dev/null 2> "$tmp/err"; rc=$?
  [ $rc -eq 2 ] || fail "$n: unknown flag gave status $rc, not 2"
  grep -q -- "--bogus-flag" "$tmp/err" || fail "$n: error does not name the flag"
  "$p" stray > /dev/null 2> "$tmp/err"; rc=$?
  [ $rc -eq 2 ] && grep -q "stray" "$tmp/err" || fail "$n: stray argument"
  "$p" --socket "$tmp/none.sock" > /dev/null 2>&1; rc=$?
  [ $rc -eq 3 ] || fail "$n: no daemon gave status $rc, not 3"
done
"$BENCH" --mode nonsense 2> "$tmp/err"; [ $? -eq 2 ] && grep -q nonsense "$tmp/err" || fail "bench --mode"

start_daemon --pool-size 64M

# the demo: 12 rows, compression in (0, 1) and growing with the bits
timeout 120 "$DEMO" --socket "$sock" > "$tmp/demo.out" 2> "$tmp/demo.err" ||
  { cat "$tmp/demo.out" "$tmp/demo.err"; fail "kvsink-demo"; }
grep -q "^Attention sinks are" "$tmp/demo.out" || fail "demo: no line on sinks"
/usr/bin/python3 - "$tmp/demo.out" "$have_profile" <<'PY' || { cat "$tmp/demo.out"; fail "demo table"; }
import re, sys
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r'^(none|pfn|kvsink) +(\d) .* (\d+) +([0-9.]+) \( *[0-9.]+x\)$', line.rstrip())
    if m:
        rows[(m.group(1), int(m.group(2)))] = (int(m.group(3)), float(m.group(4)))
assert len(rows) == 12, rows
for pol in ("none", "pfn", "kvsink"):
    r = [rows[(pol, b)][1] for b in (2, 3, 4, 8)]
    assert all(0 < x < 1 for x in r) and r == sorted(r), (pol, r)
assert all(rows[("none", b)][0] == 0 for b in (2, 3, 4, 8))
assert all(rows[("pfn", b)][0] == 1 for b in (2, 3, 4, 8))
if sys.argv[2] == "1":  # tokens 0 and 37 kept, and they cost bytes
    assert all(rows[("kvsink", b)][0] == 2 for b in (2, 3, 4, 8)), rows
    assert rows[("kvsink", 2)][1] > rows[("pfn", 2)][1]
PY
grep -q "^process [0-9]* (first): lookup found 0 of 256" "$tmp/demo.out" || fail "demo: prefix there before it was stored"
grep -q "^process [0-9]* (second): lookup found 256 of 256 tokens (hit rate 100 %).*identical" "$tmp/demo.out" ||
  { cat "$tmp/demo.out"; fail "demo: the second process did not find the prefix"; }

# the bench fitted to the pool: every row measured, sharing hits
B="--socket $sock --clients 2 --layers 8 --tokens 1024 --reps 1 --iters 200"
timeout 300 "$BENCH" $B --pool-size 64M --json > "$tmp/fit.json" 2> "$tmp/fit.err" ||
  { cat "$tmp/fit.json" "$tmp/fit.err"; fail "bench fitted to the pool failed a row"; }
json < "$tmp/fit.json" || fail "bench --json does not parse"
/usr/bin/python3 - "$tmp/fit.json" <<'PY' || { cat "$tmp/fit.json"; fail "bench fitted"; }
import json, sys
j = json.load(open(sys.argv[1]))
rows = {(r["clients"], r["bits"]): r for r in j["bandwidth"]}
assert sorted(rows) == [(c, b) for c in (1, 2) for b in (2, 4, 8, 16)], sorted(rows)
assert all("error" not in r and r["put_gbs"] > 0 and r["get_gbs"] > 0 for r in rows.values())
assert 0 < j["shape"]["tokens"] < j["shape"]["tokens_asked"] == 1024, j["shape"]
s = j["sharing"]
assert "error" not in s and s["readers"] == 2 and s["hit_rate"] > 0, s
assert s["lookup_get_ms"] > 0 and s["own_put_ms"] > 0
assert j["latency"]["ping_us"]["median"] > 0
PY
grep -q "fitted to" "$tmp/fit.err" || fail "bench did not say it fitted the workload"

# unfitted, one 16-bit put (2 x 32 MiB) overflows the pool by itself: those
# rows fail (whatever the timing), stay, and carry their error
B="$B --tokens 2048"
timeout 300 "$BENCH" $B --mode bandwidth --json > "$tmp/raw.json" 2> "$tmp/raw.err"; rc=$?
[ $rc -eq 1 ] || { cat "$tmp/raw.json" "$tmp/raw.err"; fail "bench over the pool: status $rc, not 1"; }
grep -q "pool capacity unknown" "$tmp/raw.err" || fail "bench did not say it cannot fit"
/usr/bin/python3 - "$tmp/raw.json" <<'PY' || { cat "$tmp/raw.json"; fail "bench failed rows"; }
import json, sys
rows = json.load(open(sys.argv[1]))["bandwidth"]
assert len(rows) == 8, rows
bad = [r for r in rows if "error" in r]
# 2 x 8-bit may or may not overflow too, depending on how the puts overlap
assert {(1, 16), (2, 16)} <= {(r["clients"], r["bits"]) for r in bad}, rows
assert all("pool" in r["error"] for r in bad), rows
PY
# text output keeps the failed row too
timeout 300 "$BENCH" $B --mode bandwidth > "$tmp/raw.txt" 2>&1
[ "$(grep -c "16-bit  FAILED: put: " "$tmp/raw.txt")" -eq 2 ] || { cat "$tmp/raw.txt"; fail "text output lost a row"; }
[ "$(grep -c '^  [12] clients\{0,1\} *[0-9]*-bit ' "$tmp/raw.txt")" -eq 8 ] || fail "text output: not 8 rows"

stop_daemon || exit 1
echo "tools-bench ok"
