#!/bin/sh
# SPDX-License-Identifier: MIT
# Regenerate the seed corpora in tests/fuzz/corpus/ (committed):
#   tests/fuzz/gen-corpus.sh BUILDDIR
# decode:  frame payloads of a real session with kvsinkd (rawclient with
#          KVS_RAW_CAPTURE: requests and the daemon's replies), plus the
#          encoder's output for every request and reply (mutate_decode);
# config:  daemon/default.conf and the configurations the tests write;
# profile: the shipped model's profile and the profiles the tests write;
# ops:     the decode seeds framed for fuzz_ops (gen-ops-corpus.sh).
# Files are named by their SHA-1, as libFuzzer names what it adds.
set -eu
top_srcdir=$(cd "$(dirname "$0")/../.." && pwd)
top_builddir=$(cd "${1:?usage: gen-corpus.sh BUILDDIR}" && pwd)
export top_srcdir top_builddir
. "$top_srcdir/tests/lib/daemon.sh"
out=$top_srcdir/tests/fuzz/corpus
cap=$T/capture
mkdir -p "$cap" "$out/decode" "$out/config" "$out/profile"

# a profile for model "tiny" makes the kvsink hello take the profile path
printf 'model = tiny\nlayer = 1\nchannels = 3,5\ntau = 10\nmax_sinks = 4\npfn = 1\noutliers = 0.0078125\n' \
  > "$PROFILES/tiny.profile"
start_daemon
KH='{"op":"hello","id":1,"version":1,"model":{"id":"tiny","layers":2,"kv_heads":2,"head_dim":8,"dtype":"fp16"},"seg_size":65536,"policy":"kvsink","k_bits":2,"v_bits":4,"pfn":1,"outliers":0.01}'
export KVS_RAW_CAPTURE=$cap
raw send "$HELLO" recv \
  send '{"op":"put","id":2,"seq":7,"start":0,"tokens":[1,2,3,4],"layers":[0,2],"k_off":0,"v_off":256}' recv \
  send '{"op":"lookup","id":3,"tokens":[1,2,3,4]}' recv \
  send '{"op":"lookup","id":4,"seq":8,"tokens":[1,2,3,4],"bind":true}' recv \
  send '{"op":"get","id":5,"seq":7,"start":0,"n":4,"layers":[0,2],"k_off":1024,"v_off":2048}' recv \
  send '{"op":"release","id":6,"seq":7}' recv \
  send '{"op":"get","id":7,"seq":7,"start":0,"n":1,"layers":[0,1],"k_off":0,"v_off":0}' recv \
  send '{"op":"put","id":8,"seq":1,"start":0,"tokens":[1],"layers":[0,2],"k_off":65535,"v_off":0}' recv \
  send '{"op":"stats","id":9}' recv send '{"op":"list","id":10}' recv \
  send '{"op":"profiles","id":11}' recv send '{"op":"ping","id":12}' recv \
  send '{"op":"bye","id":13}' recv eof >/dev/null
raw send "$KH" recv \
  send '{"op":"put","id":2,"seq":1,"start":0,"tokens":[5,6],"layers":[0,2],"k_off":0,"v_off":128,"act_off":512,"act_channels":2}' recv \
  send '{"op":"nope","id":3}' recv send '{"op":"evict","id":4}' recv \
  send '{"op":"reload","id":5}' recv send '{"op":"release","id":6,"seq":"x"}' recv eof >/dev/null
raw send '{"op":"hello","id":2,"version":99,"model":{"id":"m","layers":2,"kv_heads":2,"head_dim":8,"dtype":"fp16"},"seg_size":0}' recv >/dev/null
unset KVS_RAW_CAPTURE
stop_daemon
"$top_builddir/tests/fuzz/mutate_decode" --corpus "$cap"

# named by content: reruns replace, never duplicate
add() { # DIR FILE...
  d=$1; shift
  for f in "$@"; do cp "$f" "$d/$(sha1sum < "$f" | cut -c1-40)"; done
}
add "$out/decode" "$cap"/*
printf 'max_sessions = 1\nsocket_mode = 0600\n' > "$T/c1"
printf 'k_bits = 2\npolicy = pfn\n' > "$T/c2"
printf 'policy = kvsink\nprofiles_dir = /var/lib/kvsink/profiles\nshared_namespace_uids = 0,33\n' > "$T/c3"
printf '# c\nsocket = /tmp/x\n\ngroup_size = 8\npfn = 9\n' > "$T/c4"
printf 'pool_size = 1G\nlog_level = loud\ndevice = cuda:0\nsocket_group = kvsink\n' > "$T/c5"
add "$out/config" "$top_srcdir/daemon/default.conf" "$CONF" "$T"/c[1-5]
printf 'garbage\n' > "$T/p1"
add "$out/profile" "$top_srcdir/models/kvsink-tiny/kvsink.profile" "$PROFILES/tiny.profile" "$T/p1"
sh "$top_srcdir/tests/fuzz/gen-ops-corpus.sh" # the ops seeds frame the decode ones
for d in decode config profile; do echo "$d: $(ls "$out/$d" | wc -l) seeds"; done
