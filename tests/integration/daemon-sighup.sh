#!/bin/sh
# SPDX-License-Identifier: MIT
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
echo "$out" | grep -q '"policy"=>"pfn".*"profile"=>false, "fallback"=>true' ||
  fail "no profile must mean pfn, and say it fell back: $out"
grep -q "notice: session .*no sink profile for model 'tiny': policy kvsink falls back to pfn" "$LOG" ||
  fail "the fallback must be logged at notice level"
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
echo "$out" | grep -q '"policy"=>"kvsink".*"profile"=>true, "fallback"=>false, "v_group"=>8, "sink_layer"=>1, "sink_channels"=>\[3, 5\]' ||
  fail "profile not used after reload: $out"
# the profile's outlier fraction is the model's default
echo "$out" | grep -q '"outliers"=>0.00781' || fail "profile outliers not applied: $out"
echo "$out" | grep -q '"id"=>2, "profiles"=>\[{"model"=>"tiny", "layer"=>1, "channels"=>\[3, 5\]' ||
  fail "profiles op: $out"

# Every reload replaces the profile set: 200 of them must not grow the
# daemon (the old sets used to be kept forever). VmRSS after a warm-up
# round, then after 200 more; a small margin for allocator noise. Under
# AddressSanitizer freed memory would sit in its quarantine: turn it off
# (the variable means nothing to a plain build).
stop_daemon
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=0"
export ASAN_OPTIONS
start_daemon
rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$DPID/status"; }
reload_n() {
  before=$(grep -c 'configuration reloaded' "$LOG")
  j=0
  while [ $j -lt "$1" ]; do
    kill -HUP "$DPID"
    j=$((j + 1))
    # one at a time: signals sent back to back would merge into one
    i=0
    until [ "$(grep -c 'configuration reloaded' "$LOG")" -ge $((before + j)) ]; do
      i=$((i + 1)); [ $i -gt 300 ] && fail "reload $j did not happen"; sleep 0.02
    done
  done
}
# big profiles make a leak visible: 64 channels each, 50 files
k=0
while [ $k -lt 50 ]; do
  printf 'model = m%d
layer = 1
channels = %s
tau = 10
max_sinks = 4
pfn = 1
' $k \
    "$(seq -s, 0 63)" >"$PROFILES/m$k.profile"
  k=$((k + 1))
done
reload_n 20
r0=$(rss)
reload_n 200
r1=$(rss)
echo "VmRSS $r0 kB -> $r1 kB after 200 reloads"
# the old code leaked 50 * ~400 bytes * 200 = ~4 MB here
[ "$r1" -le $((r0 + 1024)) ] || fail "RSS grew from $r0 kB to $r1 kB over 200 reloads"
stop_daemon
echo ok
