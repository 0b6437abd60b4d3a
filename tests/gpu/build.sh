#!/bin/sh
# Build a GPU-ready tree for tests/gpu/devseg.sh on a machine with the
# build dependencies (libuv, msgpack-c, libsodium dev packages, nvcc), to
# be carried to a GPU machine that has CUDA but not those libraries:
#   tests/gpu/build.sh [BUILDDIR]       (default build-gpu)
# Static libkvsink (--disable-shared); the shared libraries kvsinkd and the
# test program need beyond libc and the CUDA driver go to BUILDDIR/libs
# (run there with LD_LIBRARY_PATH=BUILDDIR/libs, as devseg.sh does).
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
b=${1:-$top/build-gpu}
command -v nvcc >/dev/null 2>&1 || PATH=/usr/local/cuda/bin:$PATH
[ -x "$top/configure" ] || (cd "$top" && autoreconf -fi)
mkdir -p "$b"
cd "$b"
[ -f Makefile ] || "$top/configure" --enable-werror --disable-shared --enable-static --with-cuda=yes
grep -q '^#define HAVE_CUDA 1' config.h || { echo "build.sh: configure found no CUDA" >&2; exit 1; }
make -j2 daemon/kvsinkd tests/gpu/devseg_test tools/kvsinkctl
mkdir -p libs
# everything but the C library, the toolchain's runtime and the driver
for bin in daemon/kvsinkd tests/gpu/devseg_test tools/kvsinkctl; do
  ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3}'
done | sort -u | while read -r so; do
  case $(basename "$so") in
    libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|ld-linux*|libstdc++.so*|libgcc_s.so*|libcuda.so*) ;;
    *) cp -L "$so" libs/ ;;
  esac
done
echo "build.sh: $b ready; libs: $(ls libs | tr '\n' ' ')"
