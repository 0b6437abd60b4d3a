#!/bin/sh
# SIGHUP reloads the config file: a valid one changes the defaults of new
# sessions, an invalid one is refused and the old settings stay.
. "${top_srcdir:-.}/tests/integration/daemon-lib.sh"

printf 'k_bits = 2\npolicy = pfn\n' >"$T/conf"
start_daemon --config "$T/conf"
raw send "$HELLO" recv | grep -q '"k_bits"=>2' || fail "k_bits 2 at start"

printf 'k_bits = 4\npolicy = pfn\n' >"$T/conf"
kill -HUP "$DPID"
i=0
until grep -q 'configuration reloaded' "$T/log"; do
  i=$((i + 1)); [ $i -gt 100 ] && fail "no reload log line"; sleep 0.1
done
out=$(raw send "$HELLO" recv) || fail "after reload: $out"
echo "$out" | grep -q '"k_bits"=>4' || fail "reload not applied: $out"

printf 'k_bits = 8\nnonsense = 1\n' >"$T/conf"
kill -HUP "$DPID"
i=0
until grep -q 'reload failed' "$T/log"; do
  i=$((i + 1)); [ $i -gt 100 ] && fail "no reload-failed log line"; sleep 0.1
done
grep -q "conf:2: unknown key 'nonsense'" "$T/log" || fail "error must name the line"
out=$(raw send "$HELLO" recv) || fail "after a bad reload: $out"
echo "$out" | grep -q '"k_bits"=>4' || fail "old settings not kept: $out"

# The reload op does the same and reports the error to the caller.
out=$(raw send '{"op":"reload","id":5}' recv) || fail "reload op: $out"
echo "$out" | grep -q '"id"=>5, "err"=>\[-22,' || fail "reload op must fail on a bad file: $out"
printf 'k_bits = 3\n' >"$T/conf"
out=$(raw send '{"op":"reload","id":6}' recv send "$HELLO" recv) || fail "reload op: $out"
echo "$out" | grep -q '"id"=>6}' || fail "reload op: $out"
echo "$out" | grep -q '"k_bits"=>3' || fail "reload op not applied: $out"
stop_daemon
echo ok
