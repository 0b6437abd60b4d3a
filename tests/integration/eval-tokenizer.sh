#!/bin/sh
# SPDX-License-Identifier: MIT
# The C BPE encoder (kvsink-eval encode) against eval/bpe.py on a few KB of
# varied text: letters, digits, punctuation runs, whitespace runs, UTF-8.
# Uses the shipped tokenizer (committed, so its absence is a failure).
set -eu
top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
top_builddir=${top_builddir:-$top_srcdir}
PY=/usr/bin/python3
EVAL=$top_builddir/eval/kvsink-eval
[ -x "$PY" ] && "$PY" -c 'import numpy' 2>/dev/null || { echo "SKIP: $PY with numpy needed"; exit 77; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

# the shipped tokenizer is committed: absent is a failure
model=$top_srcdir/models/kvsink-tiny
[ -f "$model/tokenizer.json" ] || { echo "FAIL: committed $model/tokenizer.json missing"; exit 1; }

# Varied text, deterministic: prose, code, numbers, odd whitespace, UTF-8.
{
  head -c 2500 "$top_srcdir/HACKING.md"
  printf '\n\n\n   indented line\n\t\ttabs\t\n \n  \r\nCRLF line\r\n'
  printf 'numbers: 0 12 345 6789 3.14159 -42 1e10 0x1F 2026-11-24T12:00:00Z\n'
  printf 'punct: !!! ??? ... --- ==> <= >= != && || :: ;; (){}[] "quoted" '"'"'single'"'"'\n'
  printf 'utf8: caf\303\251 na\303\257ve \342\202\254 \360\237\230\200 \346\227\245\346\234\254\350\252\236 \316\261\316\262\316\263\n'
  printf 'mixed: abc123def  x  y   z    w\va\fb end  '
  sed -n '1,60p' "$top_srcdir/eval/model.c"
  printf 'trailing spaces   '
} > "$tmp/text.txt"

# each encoder to a file first: a pipeline would hide its exit status
ids() { tr -s ' ,[]\n' '\n' < "$1" | sed '/^$/d'; }
"$EVAL" encode --model "$model" --text "$tmp/text.txt" > "$tmp/c.out"
"$PY" "$top_srcdir/eval/bpe.py" encode --tokenizer "$model/tokenizer.json" "$tmp/text.txt" > "$tmp/py.out"
ids "$tmp/c.out" > "$tmp/c.ids"
ids "$tmp/py.out" > "$tmp/py.ids"
n=$(wc -l < "$tmp/c.ids")
[ "$n" -gt 500 ] || { echo "FAIL: only $n ids from $(wc -c < "$tmp/text.txt") bytes"; exit 1; }
if ! cmp -s "$tmp/c.ids" "$tmp/py.ids"; then
  echo "FAIL: C and Python encodings differ ($n vs $(wc -l < "$tmp/py.ids") ids); first difference:"
  diff "$tmp/c.ids" "$tmp/py.ids" | head -5
  exit 1
fi
echo "ok: $n ids identical ($(basename "$model"))"

# Document splitting and BOS placement as the training saw them (bpe.py --docs)
slice=$top_srcdir/eval/testdata/test-slice.txt
[ -f "$slice" ] || { echo "FAIL: committed $slice missing"; exit 1; }
head -c 30000 "$slice" > "$tmp/docs.txt"
printf '\n\036\n\n\n \n\036\nlast document\n\n' >> "$tmp/docs.txt"
"$EVAL" encode --docs --model "$model" --text "$tmp/docs.txt" > "$tmp/c.out"
"$PY" "$top_srcdir/eval/bpe.py" encode --docs --tokenizer "$model/tokenizer.json" "$tmp/docs.txt" > "$tmp/py.out"
ids "$tmp/c.out" > "$tmp/c.ids"
ids "$tmp/py.out" > "$tmp/py.ids"
n=$(wc -l < "$tmp/c.ids")
[ "$n" -gt 1000 ] || { echo "FAIL: only $n ids from 30 KB of documents"; exit 1; }
cmp -s "$tmp/c.ids" "$tmp/py.ids" || { echo "FAIL: document splitting differs from bpe.py --docs"; exit 1; }
echo "ok: $(wc -l < "$tmp/c.ids") ids with BOS per document identical"
