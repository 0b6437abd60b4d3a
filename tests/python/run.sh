#!/bin/sh
# SPDX-License-Identifier: MIT
# The Python package's pytest tests against a private kvsinkd (started as
# the client integration tests start theirs). Skips (77) without
# /usr/bin/python3 (or $KVSINK_PYTHON) + pytest + numpy; the torch and
# transformers tests skip inside pytest. Extra arguments go to pytest.
top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
top_builddir=${top_builddir:-$top_srcdir}
PY=${KVSINK_PYTHON:-/usr/bin/python3}
[ -x "$PY" ] && "$PY" -c 'import pytest, numpy' 2>/dev/null ||
  { echo "SKIP: $PY with pytest and numpy needed (python3-pytest python3-numpy)"; exit 77; }
. "$top_srcdir/tests/lib/daemon.sh"
# the shipped model's sink profile, for the transformers tests
cp "$top_srcdir/models/kvsink-tiny/kvsink.profile" "$PROFILES/"
daemon_conf
start_daemon
# An ASan build's libkvsink needs the sanitizer runtimes loaded first:
# preload them into Python (leak checking off: the interpreter's own
# allocations are not ours to judge).
lib=$top_builddir/client/.libs/libkvsink.so.0
san=$(ldd "$lib" 2>/dev/null | awk '/lib(asan|ubsan)\.so/ { printf "%s ", $3 }')
if [ -n "$san" ]; then
  export LD_PRELOAD="$san" ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
fi
KVSINK_SOCKET=$SOCK KVSINK_LIBRARY=$lib \
  PYTHONPATH=$top_srcdir/python${PYTHONPATH:+:$PYTHONPATH} PYTHONDONTWRITEBYTECODE=1 \
  "$PY" -m pytest -q -p no:cacheprovider "$top_srcdir/tests/python" "$@" || fail "pytest"
stop_daemon || exit 1
echo ok
