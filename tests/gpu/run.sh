#!/bin/sh
# SPDX-License-Identifier: MIT
# GPU test and benchmark (needs an NVIDIA GPU; not part of `make check`).
#   tests/gpu/run.sh [OUTDIR]
# Builds the CUDA kernels and the C reference with nvcc/gcc directly,
# compares them (tests/gpu/gpu_test.cu check), then benchmarks quantize /
# dequantize against a D2D copy, and, when PyTorch is present, a PyTorch
# fp8 cast and KIVI's Triton quantizer (tests/gpu/bench_ref.py; KIVI's
# source must be in .third_party/kivi/new_pack.py, never committed).
# Each variant of the outlier path (KVS_FQ_VARIANTS, default "0 1 2 3") is
# checked and timed; a table of quantize GB/s per variant comes last.
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
# each variant of the quantizer's outlier path (KVS_FQ_VARIANT, read by
# kernels/quant.cu): checked byte for byte, then timed; a table at the end
variants=${KVS_FQ_VARIANTS:-0 1 2 3}
for v in $variants; do
  echo "== KVS_FQ_VARIANT=$v"
  vrc=0
  KVS_FQ_VARIANT=$v "$out/gpu_test" check >"$out/check.v$v.txt" 2>&1 || vrc=$?
  grep -v '^check: ' "$out/check.v$v.txt" | head -20
  grep '^check: ' "$out/check.v$v.txt" || true
  # 77 from gpu_test: no GPU visible; say so rather than pass
  [ $vrc -eq 77 ] && { echo "SKIP: no GPU visible to gpu_test"; exit 77; }
  [ $vrc -eq 0 ] || rc=$vrc
  KVS_FQ_VARIANT=$v "$out/gpu_test" bench >"$out/bench.v$v.txt" 2>&1 || rc=$?
  cat "$out/bench.v$v.txt"
done
if python3 -c 'import torch, triton' 2>/dev/null; then
  python3 "$top/tests/gpu/bench_ref.py" "$top/.third_party/kivi" || rc=$?
else
  echo "bench_ref: PyTorch/Triton absent, fp8 and KIVI baselines skipped"
fi
# quantize: GB/s and % of the D2D copy per case and variant
echo "== quantize by variant (GB/s, % of D2D copy); then each variant's check against quant.c"
awk '
  FNR == 1 { v = FILENAME; sub(/.*bench\.v/, "", v); sub(/\.txt$/, "", v); nv++; vs[nv] = v }
  /D2D copy/ { key = $1 " D2D-copy"; if (!(key in seen)) { seen[key] = 1; nk++; keys[nk] = key }
    q[key, v] = $(NF - 1) " GB/s" }
  /outliers=/ {
    key = $1 " " $2 " " $3; if (!(key in seen)) { seen[key] = 1; nk++; keys[nk] = key }
    for (i = 1; i <= NF; i++) if ($i == "quantize") { p = $(i + 5); gsub(/[(]/, "", p); q[key, v] = $(i + 3) " " p }
  }
  END {
    printf "%-30s", "case"; for (j = 1; j <= nv; j++) printf "  %-18s", "v" vs[j]; printf "\n"
    for (k = 1; k <= nk; k++) {
      printf "%-30s", keys[k]
      for (j = 1; j <= nv; j++) printf "  %-18s", ((keys[k], vs[j]) in q) ? q[keys[k], vs[j]] : "-"
      printf "\n"
    }
  }' $(for v in $variants; do echo "$out/bench.v$v.txt"; done)
for v in $variants; do
  printf 'v%s %s\n' "$v" "$(grep -h '^check: .*failures)$' "$out/check.v$v.txt" || echo 'check: no result')"
done
exit $rc
