#!/bin/sh
# SPDX-License-Identifier: MIT
# The main job in one command: install what is missing (as root), build,
# start kvsinkd with its embedded default configuration on a private
# socket, run the demo client against it, show the daemon's stats, stop.
set -eu
cd "$(dirname "$0")"
if [ "$(id -u)" = 0 ] && ! pkg-config --exists libuv msgpack libsodium check 2>/dev/null; then
  sh scripts/install-deps.sh
fi
if [ ! -x build/daemon/kvsinkd ] || [ ! -x build/tools/kvsink-demo ]; then
  autoreconf -fi
  mkdir -p build && (cd build && ../configure && make -j"$(nproc 2>/dev/null || echo 2)")
fi
dir=$(mktemp -d); sock=$dir/kvsinkd.sock
# The embedded default configuration, plus a sink profile for the demo
# model so that the KVSINK rows use predicted sinks (kvsinkd.conf(5)).
mkdir "$dir/profiles"
printf 'model = kvsink-demo\nlayer = 1\nchannels = 3, 17\ntau = 50\nmax_sinks = 1\npfn = 1\n' \
  > "$dir/profiles/kvsink-demo.profile"
printf 'profiles_dir = %s\n' "$dir/profiles" > "$dir/kvsinkd.conf"
build/daemon/kvsinkd --foreground --config "$dir/kvsinkd.conf" --socket "$sock" --pool-size 256M &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT INT TERM
i=0; while [ ! -S "$sock" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
build/tools/kvsink-demo --socket "$sock"
build/tools/kvsinkctl --admin-socket "$dir/kvsinkd.admin.sock" profiles
build/tools/kvsinkctl --admin-socket "$dir/kvsinkd.admin.sock" stats
