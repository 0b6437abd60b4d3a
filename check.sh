#!/bin/sh
# SPDX-License-Identifier: MIT
# The test command (README.md): install, then `make distcheck` with -Werror
# (the release tarball is built, configured, built and tested by make check
# from a read-only source tree, installed and uninstalled), then the test
# suite again under AddressSanitizer + UndefinedBehaviorSanitizer.
set -eu
cd "$(dirname "$0")"
[ "$(id -u)" = 0 ] && sh scripts/install-test-deps.sh
autoreconf -fi
jobs=$(nproc 2>/dev/null || echo 2)

mkdir -p build-ci && cd build-ci
../configure --enable-werror
make -j"$jobs" distcheck || {
  for f in kvsink-*/_build/sub/test-suite.log; do [ -f "$f" ] && tail -n 200 "$f"; done
  exit 1
}
cd ..

mkdir -p build-ci-asan && cd build-ci-asan
../configure --enable-werror --with-cuda=no \
  CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1
make -j"$jobs"
make -j"$jobs" check || { cat test-suite.log 2>/dev/null | tail -n 200; exit 1; }
cd ..

# the Debian packages build from a clean copy and hold what they should
sh tests/packaging/debian.sh
echo "CI: all green"
