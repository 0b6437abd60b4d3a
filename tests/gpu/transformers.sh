#!/bin/sh
# SPDX-License-Identifier: MIT
# The kvsink Python package with Hugging Face transformers, on the GPU
# machine (CI has no transformers):
#   tests/gpu/transformers.sh BUILDDIR [OUTDIR]
# BUILDDIR: a build with the shared libkvsink (client/.libs/libkvsink.so.0)
# and daemon/kvsinkd; libuv/msgpack/systemd .so files the machine lacks go
# in BUILDDIR/libs. Python: $KVSINK_PYTHON (default python3) with torch and
# transformers; pytest is not needed. E.g. prepared on the build host:
#   mkdir build-py && cd build-py && ../configure --with-cuda=no --enable-systemd=no &&
#   make -j2 && mkdir libs && cp -L /lib/x86_64-linux-gnu/libuv.so.1 \
#     /lib/x86_64-linux-gnu/libmsgpackc.so.2 client/.libs/libkvsink.so.0 libs/
# (libs/ holds real files, in case symbolic links do not travel)
# then on the GPU machine: GPU=host sh tests/gpu/transformers.sh build-py
# 1. tests/python/transformers_checks.py against a private kvsinkd (device
#    $GPU, default auto): 16-bit generate() equals transformers' own cache,
#    a bound prefix continues the same, the 2-bit kvsink policy gets its
#    summary, and a second process reuses the first one's prefix with a
#    lower time to first token (printed with the prefix length);
# 2. the package's client tests when pytest is there (CUDA tensors staged).
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
b=$(cd "${1:?usage: transformers.sh BUILDDIR [OUTDIR]}" && pwd)
out=${2:-$b/gpu-transformers}
mkdir -p "$out"
export top_srcdir="$top" top_builddir="$b"
# libtool's wrappers (tools/kvsink-calibrate) name the library by the path
# it was built at: give them the carried copy
LD_LIBRARY_PATH="$b/client/.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
[ -d "$b/libs" ] && LD_LIBRARY_PATH="$b/libs:$LD_LIBRARY_PATH"
export LD_LIBRARY_PATH
KVSINK_LIBRARY=$b/client/.libs/libkvsink.so.0
[ -f "$b/libs/libkvsink.so.0" ] && KVSINK_LIBRARY=$b/libs/libkvsink.so.0
export KVSINK_LIBRARY PYTHONDONTWRITEBYTECODE=1
PY=${KVSINK_PYTHON:-python3}
[ -e "$KVSINK_LIBRARY" ] || { echo "FAIL: $KVSINK_LIBRARY missing (configure with shared libraries)"; exit 1; }
"$PY" -c 'import torch, transformers, numpy' || { echo "FAIL: $PY lacks torch/transformers/numpy"; exit 1; }
"$PY" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__, "cuda", torch.cuda.is_available())'

top_srcdir=$top top_builddir=$b
. "$top/tests/lib/daemon.sh"
cp "$top/models/kvsink-tiny/kvsink.profile" "$PROFILES/"
daemon_conf
KVSINKD_DEVICE=${GPU:-auto} start_daemon
rc=0
KVSINK_SOCKET=$SOCK "$PY" "$top/tests/python/transformers_checks.py" 2>&1 | tee "$out/checks.log"
grep -q '^FAIL' "$out/checks.log" && rc=1
grep -q '^PASS' "$out/checks.log" || rc=1
if "$PY" -c 'import pytest' 2>/dev/null; then
  KVSINK_SOCKET=$SOCK PYTHONPATH="$top/python" "$PY" -m pytest -q -p no:cacheprovider -rs \
    "$top/tests/python/test_client.py" > "$out/pytest.log" 2>&1 || { rc=1; tail -n 30 "$out/pytest.log"; }
  tail -n 3 "$out/pytest.log"
else
  echo "SKIP: client tests (no pytest for $PY)"
fi
stop_daemon || rc=1
exit $rc
