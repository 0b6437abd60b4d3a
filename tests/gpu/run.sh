#!/bin/sh
# SPDX-License-Identifier: MIT
# GPU test and benchmark (needs an NVIDIA GPU; not part of `make check`).
#   tests/gpu/run.sh [OUTDIR]
# Builds the CUDA kernels and the C reference with nvcc/gcc directly,
# compares them (tests/gpu/gpu_test.cu check), then benchmarks quantize /
# dequantize against a D2D copy, and, when PyTorch is present, a PyTorch
# fp8 cast and KIVI's Triton quantizer (tests/gpu/bench_ref.py; KIVI's
# source must be in .third_party/kivi/new_pack.py, never committed).
# Exit status: non-zero when the comparison finds a mismatch.
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$top/build-cuda/gpu}
mkdir -p "$out"
NVCC=${NVCC:-nvcc}
command -v "$NVCC" >/dev/null 2>&1 || NVCC=/usr/local/cuda/bin/nvcc
ARCH=${NVCC_ARCH:--gencode arch=compute_90,code=sm_90 -gencode arch=compute_80,code=sm_80}
inc="-I$top -I$top/include"
# the C reference (kernels/*.c) is the definition the kernels must match
cobjs=
for f in half quant sink; do
  gcc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra $inc -c "$top/kernels/$f.c" -o "$out/ref_$f.o"
  cobjs="$cobjs $out/ref_$f.o"
done
# the three nvcc runs are independent: run them side by side
pids=
for f in quant; do
  $NVCC -O3 $ARCH $inc -Xcompiler -Wall -c "$top/kernels/$f.cu" -o "$out/$f.cu.o" &
  pids="$pids $!"
done
$NVCC -std=c++17 -O2 $ARCH $inc -c "$top/tests/gpu/gpu_test.cu" -o "$out/gpu_test.o" &
pids="$pids $!"
for p in $pids; do wait $p; done
$NVCC $ARCH -o "$out/gpu_test" "$out/gpu_test.o" "$out/quant.cu.o" $cobjs -lm
echo "built $out/gpu_test"

rc=0
"$out/gpu_test" check || rc=$?
# 77 from gpu_test: no GPU visible; say so rather than pass
[ $rc -eq 77 ] && { echo "SKIP: no GPU visible to gpu_test"; exit 77; }
# quantize / dequantize GB/s per case and % of the D2D copy
"$out/gpu_test" bench || rc=$?
if python3 -c 'import torch, triton' 2>/dev/null; then
  python3 "$top/tests/gpu/bench_ref.py" "$top/.third_party/kivi" || rc=$?
else
  echo "bench_ref: PyTorch/Triton absent, fp8 and KIVI baselines skipped"
fi
exit $rc
