#!/bin/sh
# The C BPE encoder (kvsink-eval encode) against eval/bpe.py on a few KB of
# varied text: letters, digits, punctuation runs, whitespace runs, UTF-8.
# Uses the shipped tokenizer when present, else the test model's.
set -eu
top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
top_builddir=${top_builddir:-$top_srcdir}
PY=/usr/bin/python3
EVAL=$top_builddir/eval/kvsink-eval
[ -f "$top_srcdir/eval/bpe.py" ] || { echo "SKIP: eval/bpe.py not there yet"; exit 77; }
[ -x "$PY" ] && "$PY" -c 'import numpy' 2>/dev/null || { echo "SKIP: $PY with numpy needed"; exit 77; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

if [ -f "$top_srcdir/models/kvsink-tiny/tokenizer.json" ]; then
  model=$top_srcdir/models/kvsink-tiny
else
  model=$tmp/model
  "$PY" "$top_srcdir/eval/make-test-model.py" "$model" >/dev/null
fi

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

"$EVAL" encode --model "$model" --text "$tmp/text.txt" | tr -s ' ,[]\n' '\n' | sed '/^$/d' > "$tmp/c.ids"
"$PY" "$top_srcdir/eval/bpe.py" encode --tokenizer "$model/tokenizer.json" "$tmp/text.txt" |
  tr -s ' ,[]\n' '\n' | sed '/^$/d' > "$tmp/py.ids"
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
if [ -f "$slice" ]; then
  head -c 30000 "$slice" > "$tmp/docs.txt"
  printf '\n\036\n\n\n \n\036\nlast document\n\n' >> "$tmp/docs.txt"
  "$EVAL" encode --docs --model "$model" --text "$tmp/docs.txt" | tr -s ' ,[]\n' '\n' | sed '/^$/d' > "$tmp/c.ids"
  "$PY" "$top_srcdir/eval/bpe.py" encode --docs --tokenizer "$model/tokenizer.json" "$tmp/docs.txt" |
    tr -s ' ,[]\n' '\n' | sed '/^$/d' > "$tmp/py.ids"
  cmp -s "$tmp/c.ids" "$tmp/py.ids" || { echo "FAIL: document splitting differs from bpe.py --docs"; exit 1; }
  echo "ok: $(wc -l < "$tmp/c.ids") ids with BOS per document identical"
fi
