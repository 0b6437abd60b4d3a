#!/bin/sh
# SPDX-License-Identifier: MIT
# The kvsink Python package with Hugging Face transformers, on the GPU
# machine (CI has no transformers):
#   tests/gpu/transformers.sh BUILDDIR [OUTDIR]
# BUILDDIR: daemon/kvsinkd, tools/kvsink-calibrate and the shared libkvsink
# (libs/libkvsink.so.0 or client/.libs/libkvsink.so.0; built with CUDA for
# device segments); .so files the machine lacks in BUILDDIR/libs. One step
# on the build host makes such a BUILDDIR, .gpu/ (under the 64 MiB carry):
#   sh tests/gpu/build.sh
# then on the GPU machine (carry .gpu):
#   GPU=cuda:0 sh tests/gpu/transformers.sh .gpu "$OUT/t"
# (GPU=host: a host-pool daemon, CUDA tensors then staged.) Python:
# $KVSINK_PYTHON (default python3) with torch and transformers; pytest is
# not needed. The pool is $POOL (default 8G: the bigger model's prompts).
# 1. tests/python/transformers_checks.py against a private kvsinkd (device
#    $GPU, default auto): CUDA tensors through the device segment (GPU=cuda*:
#    required), 16-bit generate() equals transformers' own cache, a bound
#    prefix continues the same, the 2-bit kvsink policy gets its summary, a
#    second process reuses the tiny model's prefix (TTFT printed), and the
#    TTFT with and without a reused prefix on a random-weight 24-layer LLaMA
#    (two processes; fails if reuse does not lower it);
# 2. the package's client tests when pytest is there.
# KVSINK_CHECKS=check_a,check_b runs only those checks of step 1.
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
LD_LIBRARY_PATH= "$PY" -c 'import torch, transformers, numpy' || { echo "FAIL: $PY lacks torch/transformers/numpy"; exit 1; }
LD_LIBRARY_PATH= "$PY" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__, "cuda", torch.cuda.is_available())'

top_srcdir=$top top_builddir=$b
. "$top/tests/lib/daemon.sh"
# Python gets only libkvsink and what it needs from BUILDDIR/libs on its
# library path: the other carried copies (liblzma, libsystemd, libcudart,
# ...) are for kvsinkd and must not replace the Python stack's own
PYLIBS=$T/pylibs
mkdir -p "$PYLIBS"
cp -L "$KVSINK_LIBRARY" "$PYLIBS/libkvsink.so.0"
ldd "$KVSINK_LIBRARY" | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | while read -r so; do
  case $so in "$b"/*) cp -L "$so" "$PYLIBS/" ;; esac
done
KVSINK_LIBRARY=$PYLIBS/libkvsink.so.0
cp "$top/models/kvsink-tiny/kvsink.profile" "$PROFILES/"
daemon_conf
KVSINKD_DEVICE=${GPU:-auto} start_daemon --pool-size "${POOL:-8G}"
# a daemon with a pool on this GPU must give the Python client a device
# segment (a libkvsink built without CUDA would not ask)
case ${GPU:-auto} in cuda*|all) export KVSINK_EXPECT_DEVICE_SEGMENT=1 ;; esac
grep -i 'device\|pool' "$LOG" | head -n 5
status=0
KVSINK_SOCKET=$SOCK LD_LIBRARY_PATH=$PYLIBS KVSINK_LIBRARY=$KVSINK_LIBRARY \
  "$PY" "$top/tests/python/transformers_checks.py" 2>&1 | tee "$out/checks.log"
grep -q '^FAIL' "$out/checks.log" && status=1
grep -q '^PASS' "$out/checks.log" || status=1
if LD_LIBRARY_PATH= "$PY" -c 'import pytest' 2>/dev/null; then
  KVSINK_SOCKET=$SOCK LD_LIBRARY_PATH=$PYLIBS KVSINK_LIBRARY=$KVSINK_LIBRARY \
    PYTHONPATH="$top/python" "$PY" -m pytest -q -p no:cacheprovider -rs \
    "$top/tests/python/test_client.py" > "$out/pytest.log" 2>&1 || { status=1; tail -n 30 "$out/pytest.log"; }
  tail -n 3 "$out/pytest.log"
else
  echo "SKIP: client tests (no pytest for $PY)"
fi
stop_daemon || status=1
if [ $status -eq 0 ]; then echo "transformers.sh: all passed"; else echo "transformers.sh: FAILED (logs in $out)"; fi
exit $status
