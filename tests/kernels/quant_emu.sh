#!/bin/sh
# SPDX-License-Identifier: MIT
# The CUDA quantize kernels emulated on the CPU against the C reference
# (tests/kernels/quant_emu.cpp): builds it with the host C++ compiler
# (C++20 for std::barrier) and CUDA's headers for the fp16/bf16
# conversions, no GPU needed. Skips (77) without those headers.
# QUANT_EMU_CASES=N runs the first N cases of each dtype (default: all).
set -eu
top=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
cuinc=${CUDA_INCLUDE:-/usr/local/cuda/include}
[ -f "$cuinc/cuda_fp16.h" ] || { echo "skip: no $cuinc/cuda_fp16.h"; exit 77; }
CXX=${CXX:-g++}
CC=${CC:-gcc}
command -v "$CXX" >/dev/null 2>&1 || { echo "skip: no C++ compiler $CXX"; exit 77; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kvs-quant-emu.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
inc="-I$top -I$top/include"
printf '#include <barrier>\nint main() { std::barrier<> b(1); b.arrive_and_wait(); }\n' >"$tmp/probe.cpp"
$CXX -std=c++20 "$tmp/probe.cpp" -o "$tmp/probe" -pthread 2>/dev/null || { echo "skip: $CXX has no C++20 <barrier>"; exit 77; }
for f in half quant sink; do
  $CC -std=c11 -D_GNU_SOURCE -O2 $inc -c "$top/kernels/$f.c" -o "$tmp/$f.o"
done
# (nvcc's pragmas mean nothing to g++)
$CXX -std=c++20 -O1 -Wall -Wno-unused-function -Wno-unknown-pragmas -Wno-maybe-uninitialized $inc -isystem "$cuinc" \
  "$top/tests/kernels/quant_emu.cpp" "$tmp/half.o" "$tmp/quant.o" "$tmp/sink.o" -o "$tmp/quant_emu" -pthread -lm
"$tmp/quant_emu" ${QUANT_EMU_CASES:-}
