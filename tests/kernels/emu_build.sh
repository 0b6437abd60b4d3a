# SPDX-License-Identifier: MIT
# Sourced by the CUDA-kernel emulations (attn_emu.sh, quant_emu.sh):
#   emu_build NAME C_REFS...   builds tests/kernels/NAME.cpp with the host
# C++ compiler (C++20 for std::barrier) and CUDA's headers for the
# fp16/bf16 conversions, linked with kernels/C_REF.c for each C_REF, into
# $tmp/NAME. Skips (77) without those headers or compilers.
set -eu
top=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
cuinc=${CUDA_INCLUDE:-/usr/local/cuda/include}
[ -f "$cuinc/cuda_fp16.h" ] || { echo "skip: no $cuinc/cuda_fp16.h"; exit 77; }
CXX=${CXX:-g++}
CC=${CC:-gcc}
command -v "$CXX" >/dev/null 2>&1 || { echo "skip: no C++ compiler $CXX"; exit 77; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kvs-emu.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
inc="-I$top -I$top/include"
printf '#include <barrier>\nint main() { std::barrier<> b(1); b.arrive_and_wait(); }\n' >"$tmp/probe.cpp"
$CXX -std=c++20 "$tmp/probe.cpp" -o "$tmp/probe" -pthread 2>/dev/null || { echo "skip: $CXX has no C++20 <barrier>"; exit 77; }

emu_build() {
  name=$1
  shift
  objs=
  for f in "$@"; do
    $CC -std=c11 -D_GNU_SOURCE -O2 $inc -c "$top/kernels/$f.c" -o "$tmp/$f.o"
    objs="$objs $tmp/$f.o"
  done
  # nvcc's pragmas mean nothing to g++; gcc cannot see that some arrays
  # are set before use across the kernels' block changes
  $CXX -std=c++20 -O1 -Wall -Wno-unused-function -Wno-unknown-pragmas -Wno-maybe-uninitialized $inc \
    -isystem "$cuinc" "$top/tests/kernels/$name.cpp" $objs -o "$tmp/$name" -pthread -lm
}
