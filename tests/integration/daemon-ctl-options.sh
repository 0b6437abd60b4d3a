#!/bin/sh
# SPDX-License-Identifier: MIT
# kvsinkctl's command line: --help, --version, options in any order, the
# unknown command or option named, exit codes, and --json that is valid
# UTF-8 JSON even for a model id that is not.
. "${top_srcdir:-.}/tests/lib/daemon.sh"
CTL=$top_builddir/tools/kvsinkctl
ctl() { timeout 30 "$CTL" "$@"; }

ctl --help | grep -q 'kvsinkctl(1)' || fail "--help must name the man page"
ctl --help | grep -q 'admin-socket' || fail "--help must list the options"
ctl --version | grep -Eq '^kvsinkctl [0-9]+\.[0-9]+' || fail "--version"
ctl frobnicate 2>"$T/err"; [ $? -eq 2 ] || fail "unknown command must exit 2"
grep -q "unknown command 'frobnicate'" "$T/err" || fail "unknown command not named: $(cat "$T/err")"
ctl --frob ping 2>"$T/err"; [ $? -eq 2 ] || fail "unknown option must exit 2"
grep -q "unknown option '--frob'" "$T/err" || fail "unknown option not named: $(cat "$T/err")"
ctl ping --admin-socket 2>"$T/err"; [ $? -eq 2 ] || fail "missing value must exit 2"
grep -q "needs a value" "$T/err" || fail "missing value not said: $(cat "$T/err")"
ctl ping --json 2>/dev/null; [ $? -eq 2 ] || fail "--json with ping must exit 2"
ctl --admin-socket "$T/none.sock" ping 2>/dev/null; [ $? -eq 3 ] || fail "no daemon must exit 3"

start_daemon
ADM=$T/kvsinkd.admin.sock
# options before and after the command
[ "$(ctl --admin-socket "$ADM" ping)" = ok ] || fail "option first"
[ "$(ctl ping --admin-socket "$ADM")" = ok ] || fail "option last"
ctl --json stats --admin-socket "$ADM" | python3 -c 'import json,sys; json.load(sys.stdin)' ||
  fail "--json before the command"

# a model id with a control byte and bytes that are not UTF-8
BAD=$(printf 'm\001\377\376x')
# (the session stays open while we list: a space without blocks goes with it)
raw send '{"op":"hello","id":1,"version":1,"model":{"id":"'"$BAD"'","layers":2,"kv_heads":2,"head_dim":8,"dtype":"fp16"},"seg_size":65536}' \
  recv wait 5000 >"$T/hello" &
hp=$!
i=0
until grep -q 'hello from' "$LOG"; do
  i=$((i + 1)); [ $i -gt 100 ] && fail "hello with an odd model id: $(cat "$T/hello")"; sleep 0.1
done
ctl --admin-socket "$ADM" list --json >"$T/list.json" || fail "list --json"
python3 - "$T/list.json" <<'PY' || fail "list --json is not valid UTF-8 JSON: $(od -c "$T/list.json" | head)"
import json, sys
raw = open(sys.argv[1], "rb").read()
raw.decode("utf-8")  # strict: raises on invalid UTF-8
spaces = json.loads(raw)
ids = [s["model"] for s in spaces]
assert "m\u0001\ufffd\ufffdx" in ids, ids
# default policy kvsink, no profile: the open session fell back to pfn
s = spaces[ids.index("m\u0001\ufffd\ufffdx")]
assert s["policy"] == "pfn" and s["fallback_sessions"] == 1, s
PY
# the text form never prints the control byte
ctl --admin-socket "$ADM" list >"$T/list.txt"
LC_ALL=C grep -q "$(printf '\001')" "$T/list.txt" && fail "control byte printed"
grep -q 'policy=pfn .*kvsink fell back to pfn: no profile; 1 sessions' "$T/list.txt" ||
  fail "list must show the fallback: $(cat "$T/list.txt")"
wait $hp
LC_ALL=C grep -q "$(printf '\001')" "$LOG" && fail "control byte logged"
stop_daemon
echo ok
