#!/bin/sh
# SPDX-License-Identifier: MIT
# kvsink-eval on a standard Hugging Face checkpoint (issue 13 item 4): the
# shipped model re-saved by eval/to-hf.py as a tokenizers-library byte-level
# BPE (GPT-2 regex pre-tokenizer, byte symbols in code point order, merges
# as lists) with its weights in two fp32 shards + index and a separate LM
# head must give the same token ids (through the id permutation), the same
# per-token NLL and the same logits as the original; bf16 shards must
# stay close. The text is normalized (ASCII, no apostrophes, whitespace
# runs of one byte) so that both pre-tokenizers cut it the same way.
set -eu
top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
top_builddir=${top_builddir:-$top_srcdir}
PY=/usr/bin/python3
EVAL=$top_builddir/eval/kvsink-eval
orig=$top_srcdir/models/kvsink-tiny
[ -f "$orig/model.safetensors" ] || { echo "SKIP: models/kvsink-tiny not there"; exit 77; }
[ -x "$PY" ] && "$PY" -c 'import numpy' 2>/dev/null || { echo "SKIP: $PY with numpy needed"; exit 77; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

"$PY" "$top_srcdir/eval/to-hf.py" "$orig" "$tmp/hf" --shards 2 --dtype F32 --untied
[ -f "$tmp/hf/model-00002-of-00002.safetensors" ] && [ ! -f "$tmp/hf/model.safetensors" ] ||
  { echo "FAIL: to-hf.py did not write two shards"; exit 1; }

"$PY" - "$top_srcdir/eval/testdata/test-slice.txt" "$tmp/text.txt" <<'PYEOF'
import re, sys
docs = open(sys.argv[1], "rb").read().split(b"\n\x1e\n")[:6]
out = []
for d in docs:
    d = bytes(c for c in d if 32 <= c < 127 or c in (9, 10)).replace(b"'", b"")
    d = re.sub(rb"[ \t]*\n\s*", b"\n", d)
    d = re.sub(rb"[ \t]+", b" ", d)
    out.append(d.strip())
open(sys.argv[2], "wb").write(b"\n\x1e\n".join(out) + b"\n")
PYEOF

# the same token stream, through the permutation
"$EVAL" encode --docs --model "$orig" --text "$tmp/text.txt" | tr ' ' '\n' > "$tmp/orig.ids"
"$EVAL" encode --docs --model "$tmp/hf" --text "$tmp/text.txt" | tr ' ' '\n' > "$tmp/hf.ids"
awk 'NR == FNR { p[NR - 1] = $1; next } { print p[$1] }' "$tmp/hf/perm.txt" "$tmp/orig.ids" > "$tmp/mapped.ids"
n=$(wc -l < "$tmp/hf.ids")
[ "$n" -gt 1000 ] || { echo "FAIL: only $n ids"; exit 1; }
cmp -s "$tmp/mapped.ids" "$tmp/hf.ids" || { echo "FAIL: token ids differ"; diff "$tmp/mapped.ids" "$tmp/hf.ids" | head -5; exit 1; }
echo "ok: $n ids identical through the permutation"

# the same NLL, token by token
for m in orig hf; do
  dir=$orig; [ $m = hf ] && dir=$tmp/hf
  "$EVAL" ppl --no-daemon --model "$dir" --text "$tmp/text.txt" --ctx 256 --contexts 2 \
    --nll-out "$tmp/$m.nll" --json > "$tmp/$m.json"
done
# (the softmax sums the vocabulary in another order: equal to rounding)
"$PY" - "$tmp" <<'PYEOF'
import sys, numpy as np
t = sys.argv[1]
a, b = np.fromfile(t + "/orig.nll"), np.fromfile(t + "/hf.nll")  # doubles
assert a.shape == b.shape and a.size > 400, (a.shape, b.shape)
d = np.abs(a - b).max()
assert d < 1e-5, "per-token NLL differs by %g" % d
print("ok: per-token NLL equal to %.1e over %d tokens (ppl %.6f vs %.6f)"
      % (d, a.size, np.exp(a.mean()), np.exp(b.mean())))
PYEOF

# the same logits, columns permuted
toks=$(head -64 "$tmp/orig.ids" | paste -sd,)
htoks=$(head -64 "$tmp/hf.ids" | paste -sd,)
"$EVAL" logits --model "$orig" --tokens "$toks" -o "$tmp/orig.bin"
"$EVAL" logits --model "$tmp/hf" --tokens "$htoks" -o "$tmp/hf.bin"
"$PY" - "$tmp" <<'PYEOF'
import sys, numpy as np
t = sys.argv[1]
perm = np.loadtxt(t + "/hf/perm.txt", dtype=np.int64)
a = np.fromfile(t + "/orig.bin", dtype=np.float32).reshape(64, -1)
b = np.fromfile(t + "/hf.bin", dtype=np.float32).reshape(64, -1)
assert np.array_equal(b[:, perm], a), "logits differ: max %g" % np.abs(b[:, perm] - a).max()
print("ok: logits identical (%d x %d)" % a.shape)
PYEOF

# bf16 shards: read as bf16 (a wrong decoding would be far off)
"$PY" "$top_srcdir/eval/to-hf.py" "$orig" "$tmp/bf" --shards 3 --dtype BF16
"$EVAL" logits --model "$tmp/bf" --tokens "$htoks" -o "$tmp/bf.bin"
"$PY" - "$tmp" <<'PYEOF'
import sys, numpy as np
t = sys.argv[1]
a = np.fromfile(t + "/hf.bin", dtype=np.float32).reshape(64, -1)
b = np.fromfile(t + "/bf.bin", dtype=np.float32).reshape(64, -1)
rel = np.abs(a - b).max() / np.abs(a).max()
same = (a.argmax(1) == b.argmax(1)).mean()
assert rel < 0.05 and same > 0.9, "bf16 logits off: rel %g, argmax agreement %g" % (rel, same)
print("ok: bf16 logits within %.4f of max |logit|, argmax agrees on %.0f%%" % (rel, 100 * same))
PYEOF

# an index that names a tensor its shard lacks, or a path, is refused
"$PY" - "$tmp/hf/model.safetensors.index.json" "$tmp/bad1.json" "$tmp/bad2.json" <<'PYEOF'
import json, sys
ix = json.load(open(sys.argv[1]))
wm = ix["weight_map"]
a = dict(ix, weight_map=dict(wm, **{"model.norm.weight": "model-00001-of-00002.safetensors"
                                    if wm["model.norm.weight"].startswith("model-00002") else
                                    "model-00002-of-00002.safetensors"}))
json.dump(a, open(sys.argv[2], "w"))
json.dump(dict(ix, weight_map=dict(wm, **{"model.norm.weight": "../x.safetensors"})), open(sys.argv[3], "w"))
PYEOF
for bad in bad1 bad2; do
  cp "$tmp/$bad.json" "$tmp/hf/model.safetensors.index.json"
  if "$EVAL" info --model "$tmp/hf" > "$tmp/out" 2>&1; then echo "FAIL: $bad index accepted"; exit 1; fi
  grep -q "missing\|plain file name" "$tmp/out" || { echo "FAIL: $bad: $(cat "$tmp/out")"; exit 1; }
done
echo "ok: broken indexes refused"
