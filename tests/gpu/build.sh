#!/bin/sh
# SPDX-License-Identifier: MIT
# Build a GPU-ready tree for tests/gpu/devseg.sh on a machine with the
# build dependencies (libuv, msgpack-c, libsodium dev packages, nvcc), to
# be carried to a GPU machine that has CUDA but not those libraries:
#   tests/gpu/build.sh [BUILDDIR]       (default build-gpu)
# Static libkvsink (--disable-shared); the shared libraries kvsinkd and the
# test program need beyond libc and the CUDA driver go to BUILDDIR/libs
# (run there with LD_LIBRARY_PATH=BUILDDIR/libs, as devseg.sh does).
# The build dir is too big to carry to the device machine (64 MiB), so it
# also writes a slim copy, $SLIM (default .gpu/ at the top, git-ignored):
#   .gpu/daemon/kvsinkd .gpu/tools/kvsinkctl .gpu/tests/gpu/devseg_test
#   .gpu/tests/store/bench_put .gpu/tests/gpu/attend_device_test .gpu/libs/
# which devseg.sh and attend_device.sh use by default: carry ".gpu", run
# tests/gpu/devseg.sh or tests/gpu/attend_device.sh.
# For tests/gpu/transformers.sh (the Python package) it adds
#   .gpu/tools/kvsink-calibrate (static, from BUILDDIR) and
#   .gpu/libs/libkvsink.so.0, the shared library with CUDA (device segments:
#   client/ calls the driver through kernels/cudrv.c, which needs cuda.h at
#   build time), from a second tree $SHARED (default BUILDDIR-shared) that
#   builds only client/libkvsink.la (no nvcc work):
#   sh tests/gpu/build.sh; then on the GPU: GPU=cuda:0 sh tests/gpu/transformers.sh .gpu OUT
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
b=${1:-$top/build-gpu}
command -v nvcc >/dev/null 2>&1 || PATH=/usr/local/cuda/bin:$PATH
[ -x "$top/configure" ] || (cd "$top" && autoreconf -fi)
mkdir -p "$b"
cd "$b"
[ -f Makefile ] || "$top/configure" --enable-werror --disable-shared --enable-static --with-cuda=yes
grep -q '^#define HAVE_CUDA 1' config.h || { echo "build.sh: configure found no CUDA" >&2; exit 1; }
make -j2 daemon/kvsinkd tests/gpu/devseg_test tests/gpu/attend_device_test tools/kvsinkctl tools/kvsink-calibrate tests/store/bench_put
# the shared libkvsink with CUDA for the Python package (ctypes loads it)
sh_b=${SHARED:-$b-shared}
mkdir -p "$sh_b"
(cd "$sh_b" &&
  { [ -f Makefile ] || "$top/configure" --enable-werror --enable-shared --disable-static \
      --with-cuda=yes > configure.out; } &&
  grep -q '^#define HAVE_CUDA 1' config.h &&
  make -j2 client/libkvsink.la > make.out) ||
  { echo "build.sh: the shared libkvsink with CUDA did not build in $sh_b" >&2; exit 1; }
mkdir -p libs
# everything but the C library, the toolchain's runtime and the driver
for bin in daemon/kvsinkd tests/gpu/devseg_test tests/gpu/attend_device_test tools/kvsinkctl tools/kvsink-calibrate tests/store/bench_put \
    "$sh_b/client/.libs/libkvsink.so.0"; do
  ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3}'
done | sort -u | while read -r so; do
  case $(basename "$so") in
    libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|ld-linux*|libstdc++.so*|libgcc_s.so*|libcuda.so*) ;;
    *) cp -L "$so" libs/ ;;
  esac
done
echo "build.sh: $b ready; libs: $(ls libs | tr '\n' ' ')"
slim=${SLIM:-$top/.gpu}
rm -rf "$slim"
mkdir -p "$slim/daemon" "$slim/tools" "$slim/tests/gpu" "$slim/tests/store" "$slim/libs"
for bin in daemon/kvsinkd tools/kvsinkctl tests/gpu/devseg_test tests/gpu/attend_device_test tools/kvsink-calibrate tests/store/bench_put; do
  # the real program, not a libtool wrapper (static libkvsink: there is none)
  f=$bin; [ -x "$(dirname "$bin")/.libs/$(basename "$bin")" ] && f=$(dirname "$bin")/.libs/$(basename "$bin")
  cp "$f" "$slim/$bin"
  strip --strip-debug "$slim/$bin" 2>/dev/null || true
done
cp libs/* "$slim/libs/" 2>/dev/null || true
# a real file under the soname (links may not travel)
cp -L "$sh_b/client/.libs/libkvsink.so.0" "$slim/libs/libkvsink.so.0"
strip --strip-debug "$slim/libs/libkvsink.so.0" 2>/dev/null || true
echo "build.sh: slim copy $slim ($(du -sh "$slim" | cut -f1)): carry it, then tests/gpu/devseg.sh" \
  "or tests/gpu/transformers.sh $slim"
