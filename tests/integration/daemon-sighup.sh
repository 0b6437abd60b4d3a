#!/bin/sh
# SIGHUP reloads the config file: a valid one changes the defaults of new
# sessions, an invalid one is refused and the old settings stay.
. "${top_srcdir:-.}/tests/lib/daemon.sh"

daemon_conf 'k_bits = 2' 'policy = pfn'
start_daemon
raw send "$HELLO" recv | grep -q '"k_bits"=>2' || fail "k_bits 2 at start"

daemon_conf 'k_bits = 4' 'policy = pfn'
kill -HUP "$DPID"
i=0
until grep -q 'configuration reloaded' "$LOG"; do
  i=$((i + 1)); [ $i -gt 100 ] && fail "no reload log line"; sleep 0.1
done
out=$(raw send "$HELLO" recv) || fail "after reload: $out"
echo "$out" | grep -q '"k_bits"=>4' || fail "reload not applied: $out"

daemon_conf 'k_bits = 8' 'nonsense = 1'
kill -HUP "$DPID"
i=0
until grep -q 'reload failed' "$LOG"; do
  i=$((i + 1)); [ $i -gt 100 ] && fail "no reload-failed log line"; sleep 0.1
done
# line 1 of $CONF is profiles_dir
grep -q "kvsinkd.conf:3: unknown key 'nonsense'" "$LOG" || fail "error must name the line"
out=$(raw send "$HELLO" recv) || fail "after a bad reload: $out"
echo "$out" | grep -q '"k_bits"=>4' || fail "old settings not kept: $out"

# The reload op does the same and reports the error to the caller.
out=$(raw send '{"op":"reload","id":5}' recv) || fail "reload op: $out"
echo "$out" | grep -q '"id"=>5, "err"=>\[-22,' || fail "reload op must fail on a bad file: $out"
daemon_conf 'k_bits = 3'
out=$(raw send '{"op":"reload","id":6}' recv send "$HELLO" recv) || fail "reload op: $out"
echo "$out" | grep -q '"id"=>6}' || fail "reload op: $out"
echo "$out" | grep -q '"k_bits"=>3' || fail "reload op not applied: $out"
stop_daemon

# Profiles: a kvsink session without a profile falls back to PFN and says
# profile=false; after a profile appears and SIGHUP, the same hello gets it.
daemon_conf 'policy = kvsink'
start_daemon
KH='{"op":"hello","id":1,"version":1,"model":{"id":"tiny","layers":2,"kv_heads":2,"head_dim":8,"dtype":"fp16"},"seg_size":65536,"policy":"kvsink"}'
out=$(raw send "$KH" recv) || fail "hello: $out"
echo "$out" | grep -q '"policy"=>"pfn".*"profile"=>false' || fail "no profile must mean pfn: $out"
printf 'model = tiny\nlayer = 1\nchannels = 3,5\ntau = 10\nmax_sinks = 4\npfn = 1\noutliers = 0.0078125\n' \
  >"$PROFILES/tiny.profile"
printf 'garbage\n' >"$PROFILES/broken.profile"
kill -HUP "$DPID"
i=0
until [ "$(grep -c 'configuration reloaded' "$LOG")" -ge 1 ]; do
  i=$((i + 1)); [ $i -gt 100 ] && fail "no reload"; sleep 0.1
done
grep -q 'skipping .*broken.profile' "$LOG" || fail "a broken profile must be logged"
out=$(raw send "$KH" recv send '{"op":"profiles","id":2}' recv) || fail "hello: $out"
echo "$out"
echo "$out" | grep -q '"policy"=>"kvsink".*"profile"=>true, "sink_layer"=>1, "sink_channels"=>\[3, 5\]' ||
  fail "profile not used after reload: $out"
# the profile's outlier fraction is the model's default
echo "$out" | grep -q '"outliers"=>0.00781' || fail "profile outliers not applied: $out"
echo "$out" | grep -q '"id"=>2, "items"=>\[{"model"=>"tiny", "layer"=>1, "channels"=>\[3, 5\]' ||
  fail "profiles op: $out"
stop_daemon
echo ok
