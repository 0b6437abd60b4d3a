#!/bin/sh
# SPDX-License-Identifier: MIT
# GPU test and benchmark of decode attention over compressed blocks
# (kernels/attn.cu; needs an NVIDIA GPU, not part of `make check`).
#   tests/gpu/attn.sh [OUTDIR]      (default: $OUT when set, else build-cuda/attn)
# 1. builds the C reference (gcc) and the CUDA kernels + tests/gpu/attn_test.cu (nvcc);
# 2. attn_test check: the CUDA kernel against kernels/attn.c on random cases
#    with planted sinks and outliers (every width, G 1..64, GQA 1..8, odd and
#    empty residuals, long contexts that take split-K);
# 3. attn_test bench: 2/3/4 bits x contexts 4k..128k x batch 1/8/64;
# 4. when PyTorch is present, fp16 SDPA on the same shapes, then the table
#    with speedups and the bytes-read limits (OUTDIR/attn_table.md).
# ATTN_ONLY=BITS:T:B benches one case (ATTN_PLAIN=1: without the sink row and
# the residual, to see what they cost); ATTN_BUILD_ONLY=DIR only builds
# (the program lands in DIR), e.g. for ncu.
# 5. the CUDA-core kernel alone (KVSINK_ATTN_TC=0) on four of the shapes the
#    tensor-core kernel takes, for comparison (OUTDIR/attn_cuda_cores.txt).
# Writes OUTDIR/attn_check.txt (and attn_check_tc.txt: KVSINK_ATTN_TC=1),
# attn_kvsink.csv, attn_sdpa.csv, attn_table.md.
# Exit status: non-zero when the check finds a mismatch.
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-${OUT:-$top/build-cuda/attn}}
mkdir -p "$out"
bld=$(mktemp -d "${TMPDIR:-/tmp}/kvs-attn.XXXXXX")
trap 'rm -rf "$bld"' EXIT
NVCC=${NVCC:-nvcc}
command -v "$NVCC" >/dev/null 2>&1 || NVCC=/usr/local/cuda/bin/nvcc
ARCH=${NVCC_ARCH:--gencode arch=compute_90,code=sm_90}
inc="-I$top -I$top/include"
for f in half quant attn; do
  gcc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra $inc -c "$top/kernels/$f.c" -o "$bld/ref_$f.o" &
done
pids=
for f in quant attn; do
  $NVCC -O3 $ARCH $inc -Xcompiler -Wall -c "$top/kernels/$f.cu" -o "$bld/$f.cu.o" &
  pids="$pids $!"
done
$NVCC -std=c++17 -O2 $ARCH $inc -c "$top/tests/gpu/attn_test.cu" -o "$bld/attn_test.o" &
pids="$pids $!"
for p in $pids; do wait $p; done
wait
$NVCC $ARCH -o "$bld/attn_test" "$bld/attn_test.o" "$bld/quant.cu.o" "$bld/attn.cu.o" \
  "$bld/ref_half.o" "$bld/ref_quant.o" "$bld/ref_attn.o" -lm
echo "built attn_test"
# ATTN_BUILD_ONLY=DIR: keep the program in DIR and stop (profiling runs)
if [ -n "${ATTN_BUILD_ONLY:-}" ]; then mkdir -p "$ATTN_BUILD_ONLY" && cp "$bld/attn_test" "$ATTN_BUILD_ONLY/"; exit 0; fi

rc=0
"$bld/attn_test" check 2>&1 | tee "$out/attn_check.txt" || true
grep -q "^attn check: ok" "$out/attn_check.txt" || rc=1
# again with the tensor-core kernel wherever it can run (outliers too)
KVSINK_ATTN_TC=1 "$bld/attn_test" check >"$out/attn_check_tc.txt" 2>&1 || true
tail -1 "$out/attn_check_tc.txt"
grep -q "^attn check: ok" "$out/attn_check_tc.txt" || rc=1
"$bld/attn_test" bench "$out/attn_kvsink.csv" || rc=$?
# the CUDA-core kernel on the shapes the tensor cores now take (A/B)
for c in 4:32768:8 2:32768:8 4:32768:64 4:131072:8; do
  KVSINK_ATTN_TC=0 ATTN_ONLY=$c "$bld/attn_test" bench "$out/attn_cc_$c.csv" >>"$out/attn_cuda_cores.txt" 2>&1 || rc=$?
  rm -f "$out/attn_cc_$c.csv"
done
cat "$out/attn_cuda_cores.txt"
if python3 -c 'import torch' 2>/dev/null; then
  python3 "$top/tests/gpu/attn_bench.py" sdpa "$out/attn_sdpa.csv" || rc=$?
  python3 "$top/tests/gpu/attn_bench.py" table "$out/attn_kvsink.csv" "$out/attn_sdpa.csv" "$out/attn_table.md" || rc=$?
else
  echo "attn.sh: PyTorch absent, fp16 SDPA baseline skipped"
fi
echo "results in $out"
exit $rc
