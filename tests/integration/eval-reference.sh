#!/bin/sh
# SPDX-License-Identifier: MIT
# The C forward pass (kvsink-eval logits) against the PyTorch reference
# (eval/reference.py) on a random test model: max |diff| / max |logit|
# must stay below 1e-3, for a whole-sequence chunk and for small chunks
# (chunked attention must not change the result). Also on the shipped
# model (models/kvsink-tiny, committed).
set -eu
top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
top_builddir=${top_builddir:-$top_srcdir}
PY=/usr/bin/python3
EVAL=$top_builddir/eval/kvsink-eval
[ -x "$PY" ] && "$PY" -c 'import torch, numpy' 2>/dev/null || { echo "SKIP: $PY with torch needed"; exit 77; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
"$PY" "$top_srcdir/eval/make-test-model.py" "$tmp/model" >/dev/null

# 150 token ids, BOS first and again mid-way (a second document)
toks=$(awk 'BEGIN { s = 7; printf "0"; for (i = 1; i < 150; i++) { s = (s * 1103515245 + 12345) % 2147483648;
  printf ",%d", (i == 77) ? 0 : 2 + int(s / 65536) % 500 } }')
for chunk in 64 5 1; do
  "$EVAL" logits --model "$tmp/model" --tokens "$toks" --chunk $chunk -o "$tmp/c.bin"
  "$PY" "$top_srcdir/eval/reference.py" --model "$tmp/model" --tokens "$toks" --compare "$tmp/c.bin" --tol 1e-3 ||
    { echo "FAIL: test model, chunk $chunk"; exit 1; }
done

# the shipped model is committed: absent is a failure
real=$top_srcdir/models/kvsink-tiny
[ -f "$real/model.safetensors" ] || { echo "FAIL: committed $real/model.safetensors missing"; exit 1; }
toks=$(echo "$toks" | cut -d, -f1-64)
"$EVAL" logits --model "$real" --tokens "$toks" --chunk 32 -o "$tmp/r.bin"
"$PY" "$top_srcdir/eval/reference.py" --model "$real" --tokens "$toks" --compare "$tmp/r.bin" --tol 1e-3 ||
  { echo "FAIL: shipped model"; exit 1; }
echo ok
