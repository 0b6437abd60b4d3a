#!/bin/sh
# kvsink-eval through a real kvsinkd, deterministic, no timing:
#  - 16-bit through the daemon gives exactly the --no-daemon numbers
#    (per-token NLL files identical),
#  - 8 bits stays within 1 % of fp16 perplexity, 2 bits does change it,
#  - KVSink end to end on the test model, whose BOS rows carry a planted
#    massive activation: kvsink-eval dump + kvsink-calibrate give a
#    profile, the daemon flags exactly the BOS tokens, as the local replica
#    of the prediction does,
#  - with the shipped model (models/kvsink-tiny + its profile), on the
#    committed test slice: the measured attention sinks are exactly the
#    BOS tokens and the predicted ones match them (precision = recall =
#    1), and at 2 bits KVSink beats PFN-1 by more than 1 %, more than the
#    noise (eval/EVAL.md, "Why KVSink did not beat PFN-4").
set -eu
top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
top_builddir=${top_builddir:-$top_srcdir}
. "$top_srcdir/tests/lib/daemon.sh"
PY=/usr/bin/python3
EVAL=$top_builddir/eval/kvsink-eval
CALIBRATE=$top_builddir/tools/kvsink-calibrate
real=$top_srcdir/models/kvsink-tiny
slice=$top_srcdir/eval/testdata/test-slice.txt
[ -x "$PY" ] && "$PY" -c 'import numpy' 2>/dev/null || { echo "SKIP: $PY with numpy needed"; exit 77; }
# built by make check and committed: absent is a failure, never a skip
for f in "$EVAL" "$CALIBRATE"; do [ -x "$f" ] || fail "$f not built"; done
for f in "$real/model.safetensors" "$real/kvsink.profile" "$slice"; do
  [ -f "$f" ] || fail "committed file $f missing"
done
tmp=$T

"$PY" "$top_srcdir/eval/make-test-model.py" "$tmp/model" >/dev/null
# documents: the paragraphs of HACKING.md, separated by a 0x1E line
awk 'BEGIN { RS = ""; sep = sprintf("%c", 30) } { if (NR > 1) print sep; print }' \
  "$top_srcdir/HACKING.md" > "$tmp/text.txt"

tid=$("$EVAL" info --model "$tmp/model" | sed -n 's/^model_id //p')
"$EVAL" dump --model "$tmp/model" --text "$tmp/text.txt" --ctx 128 --contexts 4 -o "$tmp/test.dump"
"$CALIBRATE" --model "$tid" -o "$tmp/model/kvsink.profile" "$tmp/test.dump" ||
  fail "kvsink-calibrate found no sinks in the test model"
cp "$tmp/model/kvsink.profile" "$PROFILES/test.profile"
cp "$real/kvsink.profile" "$PROFILES/kvsink-tiny.profile"
# device auto: tests/gpu/daemon.sh runs this on the GPU pool
start_daemon --pool-size 256M --log-level warning --device "${KVSINKD_DEVICE:-auto}"
sock=$SOCK

field() { sed -n "s/.*\"$1\":\([^,}]*\).*/\1/p" "$2"; }
run() { # name args...
  name=$1
  shift
  timeout 300 "$EVAL" ppl --model "$M" --text "$TXT" --ctx "$CTX" --contexts "$N" --json "$@" > "$tmp/$name.json" ||
    fail "kvsink-eval $*"
  echo "$name: $(cat "$tmp/$name.json")"
}

M=$tmp/model TXT=$tmp/text.txt CTX=128 N=4
run local --no-daemon --nll-out "$tmp/local.nll"
run d16 --socket "$sock" --bits 16 --policy none --nll-out "$tmp/d16.nll"
cmp "$tmp/local.nll" "$tmp/d16.nll" || { echo "FAIL: 16-bit through the daemon differs from --no-daemon"; exit 1; }
run d8 --socket "$sock" --bits 8 --policy pfn:1
run d2 --socket "$sock" --bits 2 --policy none --nll-out "$tmp/d2.nll"
p16=$(field ppl "$tmp/d16.json")
p8=$(field ppl "$tmp/d8.json")
p2=$(field ppl "$tmp/d2.json")
awk -v a="$p8" -v b="$p16" 'BEGIN { d = a / b - 1; exit !(d < 0.01 && d > -0.01) }' ||
  { echo "FAIL: 8-bit ppl $p8 not within 1% of fp16 $p16"; exit 1; }
! cmp -s "$tmp/local.nll" "$tmp/d2.nll" || { echo "FAIL: 2 bits gave the fp16 numbers: nothing was quantized"; exit 1; }
b8=$(field avg_bits "$tmp/d8.json")
awk -v b="$b8" 'BEGIN { exit !(b > 8 && b < 16) }' || { echo "FAIL: 8-bit avg bits $b8"; exit 1; }
echo "ok: fp16 $p16 = local, 8-bit $p8, 2-bit $p2"

run sinks --socket "$sock" --bits 2 --policy kvsink
pred=$(field sinks_predicted "$tmp/sinks.json")
dmn=$(field sinks_daemon "$tmp/sinks.json")
bos=$(field bos_tokens "$tmp/sinks.json")
[ "$pred" = "$bos" ] && [ "$dmn" = "$bos" ] ||
  { echo "FAIL: $bos BOS tokens, predicted $pred, daemon flagged $dmn"; exit 1; }
b2=$(field avg_bits "$tmp/d2.json")
bs=$(field avg_bits "$tmp/sinks.json")
awk -v a="$bs" -v b="$b2" 'BEGIN { exit !(a > b) }' || { echo "FAIL: sink rows cost nothing ($bs vs $b2)"; exit 1; }
echo "ok: KVSink flagged the $bos BOS tokens"

# the daemon keys profiles by model id: name it as kvsink-eval does
id=$("$EVAL" info --model "$real" | sed -n 's/^model_id //p')
grep -q "^model *= *$id\$" "$PROFILES/kvsink-tiny.profile" ||
  { echo "FAIL: models/kvsink-tiny/kvsink.profile is not for model id $id (recalibrate)"; exit 1; }
M=$real TXT=$slice CTX=1024 N=2
run real16 --no-daemon --sinks-out "$tmp/real-sinks.txt"
ms=$(field sinks_measured "$tmp/real16.json")
mb=$(field sinks_measured_bos "$tmp/real16.json")
rb=$(field bos_tokens "$tmp/real16.json")
[ "$ms" = "$rb" ] && [ "$mb" = "$rb" ] ||
  { echo "FAIL: measured sinks $ms ($mb at BOS), $rb BOS tokens"; exit 1; }
run pfn1 --socket "$sock" --bits 2 --policy pfn:1
run sink --socket "$sock" --bits 2 --policy kvsink --sinks "$tmp/real-sinks.txt"
[ "$(field precision "$tmp/sink.json")" = 1.0000 ] && [ "$(field recall "$tmp/sink.json")" = 1.0000 ] ||
  { echo "FAIL: predicted sinks do not match the measured ones"; exit 1; }
a=$(field ppl "$tmp/sink.json")
b=$(field ppl "$tmp/pfn1.json")
# the slice's contexts hold 6 document starts. Protecting 6 random
# tokens instead (position 0 and 4 others, --protect, 6 draws) gave
# 11.16..11.33 (PFN-1 11.22: noise about +-0.6 %); KVSink gave 11.04
# (-1.6 %) when written. Require more than 1 %.
awk -v a="$a" -v b="$b" 'BEGIN { exit !(a < 0.99 * b) }' ||
  { echo "FAIL: KVSink $a not 1 % below PFN-1 $b at 2 bits"; exit 1; }
echo "ok: shipped model at 2 bits: KVSink $a < 0.99 x PFN-1 $b; measured sinks = BOS = predicted"

stop_daemon
echo ok
