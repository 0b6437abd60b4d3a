#!/bin/sh
# SPDX-License-Identifier: MIT
# Seeds for fuzz_ops (tests/fuzz/fuzz_ops.c) from the decode corpus:
#   tests/fuzz/gen-ops-corpus.sh   (gen-corpus.sh runs it too)
# each decode payload framed after a flags byte (a hello first, data and
# admin sessions, each policy), and whole sessions: every request payload
# in one input, in name order. Files are named by their SHA-1.
set -eu
top_srcdir=$(cd "$(dirname "$0")/../.." && pwd)
in=$top_srcdir/tests/fuzz/corpus/decode
out=$top_srcdir/tests/fuzz/corpus/ops
mkdir -p "$out"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kvs-ops-corpus.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# frame FILE: 4-byte big-endian length, then the payload
frame() {
  n=$(wc -c < "$1")
  printf "\\$(printf %03o $((n >> 24 & 255)))\\$(printf %03o $((n >> 16 & 255)))"
  printf "\\$(printf %03o $((n >> 8 & 255)))\\$(printf %03o $((n & 255)))"
  cat "$1"
}
emit() { # emit FILE: store it under its SHA-1
  h=$(sha1sum "$1" | cut -d' ' -f1)
  cp "$1" "$out/$h"
}
i=0
for f in "$in"/*; do
  i=$((i + 1))
  flags=$(( (i % 4) * 2 + 1 + (i % 3 == 0 ? 8 : 0) )) # hello; policy by turn; some admin
  { printf "\\$(printf %03o $flags)"; frame "$f"; } > "$tmp/one"
  emit "$tmp/one"
done
for flags in 0 1 5 7 9 17; do # no hello (the input's own), pfn, kvsink, admin, shared
  { printf "\\$(printf %03o $flags)"; for f in "$in"/*; do frame "$f"; done; } > "$tmp/all"
  emit "$tmp/all"
done
echo "$(ls "$out" | wc -l) seeds in $out"
