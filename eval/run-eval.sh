#!/bin/sh
# SPDX-License-Identifier: MIT
# The perplexity table (eval/EVAL.md): starts a kvsinkd, runs kvsink-eval
# on held-out text: fp16 locally and through the daemon (16-bit raw), then
# at 2, 3, 4 bits with no protection, PFN-1, PFN-4, KVSink, KVSink + 1 %
# outliers. Prints a markdown table; the JSON rows are kept in $OUT_DIR.
#
# KVSink keeps pfn + max_sinks rows per sequence (HACKING.md Decision 39:
# predicted sinks, then the first positions), so the table has PFN-N at
# that N (pfn:N below) to compare at equal cost.
#
# Environment: MODEL (models/kvsink-tiny), TEXT (eval/data/test.txt, else
# eval/testdata/test-slice.txt), CONTEXTS (8), CTX (1024), PIECE (256:
# documents cut into pieces of at most 256 tokens, each opened by BOS, so
# a context packs at least 4 document starts; 0 = whole documents, the
# old behaviour; eval/EVAL.md "Text and contexts"), JOBS (1: rows
# run in parallel against the one daemon), OUT_DIR (a temporary folder),
# BITS ("2 3 4"), KVSINKD / KVSINK_EVAL (built binaries), MAX_SINKS (the
# profile's max_sinks unless set: the daemon and kvsink-eval get a copy
# with this one), POLICIES (rows per bit width, policy:outliers, pfn:N =
# PFN at KVSink's N = 1 + max_sinks; default
# "none:0 pfn:1:0 pfn:4:0 pfn:N:0 kvsink:0 kvsink:0.01").
set -eu
top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}
top_builddir=${top_builddir:-$top_srcdir}
MODEL=${MODEL:-$top_srcdir/models/kvsink-tiny}
if [ -z "${TEXT:-}" ]; then
  TEXT=$top_srcdir/eval/data/test.txt
  [ -f "$TEXT" ] || TEXT=$top_srcdir/eval/testdata/test-slice.txt
fi
CONTEXTS=${CONTEXTS:-8}
CTX=${CTX:-1024}
PIECE=${PIECE:-256}
JOBS=${JOBS:-1}
BITS=${BITS:-2 3 4}
KVSINKD=${KVSINKD:-$top_builddir/daemon/kvsinkd}
EVAL=${KVSINK_EVAL:-$top_builddir/eval/kvsink-eval}
OUT_DIR=${OUT_DIR:-$(mktemp -d)}
mkdir -p "$OUT_DIR"

for f in "$KVSINKD" "$EVAL"; do [ -x "$f" ] || { echo "run-eval: $f not built" >&2; exit 1; }; done
[ -f "$MODEL/model.safetensors" ] || { echo "run-eval: no model in $MODEL" >&2; exit 1; }
[ -f "$TEXT" ] || { echo "run-eval: no text $TEXT" >&2; exit 1; }

run_dir=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null
  rm -rf "$run_dir"
}
trap cleanup EXIT INT TERM

mkdir "$run_dir/profiles"
prof=$run_dir/profiles/kvsink.profile
profarg=
N=1
if [ -f "$MODEL/kvsink.profile" ]; then
  if [ -n "${MAX_SINKS:-}" ]; then
    sed "s/^max_sinks *=.*/max_sinks = $MAX_SINKS/" "$MODEL/kvsink.profile" > "$prof"
  else
    cp "$MODEL/kvsink.profile" "$prof"
  fi
  profarg="--profile $prof"
  # the daemon's pfn (1, its default) + max_sinks: the rows KVSink keeps
  N=$((1 + $(sed -n 's/^max_sinks *= *\([0-9]*\).*/\1/p' "$prof")))
else
  echo "run-eval: warning: $MODEL/kvsink.profile missing: KVSink rows fall back to PFN" >&2
fi
POLICIES=${POLICIES:-none:0 pfn:1:0 pfn:4:0 pfn:N:0 kvsink:0 kvsink:0.01}
cat > "$run_dir/kvsinkd.conf" <<CONF
pool_size = 1G
profiles_dir = $run_dir/profiles
log_level = warning
CONF
sock=$run_dir/kvsinkd.sock
"$KVSINKD" --foreground --config "$run_dir/kvsinkd.conf" --socket "$sock" 2> "$OUT_DIR/kvsinkd.log" &
pid=$!
i=0
while [ ! -S "$sock" ]; do
  i=$((i + 1))
  if [ $i -ge 200 ] || ! kill -0 "$pid" 2>/dev/null; then
    echo "run-eval: kvsinkd did not start" >&2
    cat "$OUT_DIR/kvsinkd.log" >&2
    exit 1
  fi
  sleep 0.1
done

common="--model $MODEL --text $TEXT --ctx $CTX --contexts $CONTEXTS --piece $PIECE --json $profarg"
# fp16 rows first: they measure the attention sinks the others are scored on
"$EVAL" ppl $common --no-daemon --sinks-out "$OUT_DIR/sinks.txt" > "$OUT_DIR/00-local-16.json"
"$EVAL" ppl $common --socket "$sock" --bits 16 --policy none > "$OUT_DIR/01-daemon-16.json"

rows=
for b in $BITS; do
  seen=
  for p in $POLICIES; do
    p=$(echo "$p" | sed "s/^pfn:N:/pfn:$N:/")
    case " $seen " in *" $p "*) continue ;; esac # pfn:N may be pfn:1 or pfn:4
    seen="$seen $p"
    rows="$rows $b:$p"
  done
done
n=1
running=
failed=0
for r in $rows; do
  n=$((n + 1))
  bits=${r%%:*}
  rest=${r#*:}
  outl=${rest##*:}
  pol=${rest%:*}
  name=$(printf '%02d-%s-%s-%s' $n "$bits" "$(echo "$pol" | tr : _)" "$outl")
  "$EVAL" ppl $common --socket "$sock" --bits "$bits" --policy "$pol" --outliers "$outl" \
    --sinks "$OUT_DIR/sinks.txt" > "$OUT_DIR/$name.json" &
  running="$running $!"
  # at most JOBS rows at once: wait for the oldest
  set -- $running
  if [ $# -ge "$JOBS" ]; then
    wait "$1" || failed=$((failed + 1))
    shift
    running="$*"
  fi
done
for j in $running; do wait "$j" || failed=$((failed + 1)); done
[ $failed -eq 0 ] || { echo "run-eval: $failed rows failed" >&2; cat "$OUT_DIR/kvsinkd.log" >&2; exit 1; }

kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
pid=
[ $rc -eq 0 ] || echo "run-eval: warning: kvsinkd exited with $rc" >&2

field() { sed -n "s/.*\"$1\":\([^,}]*\).*/\1/p" "$2" | tr -d '"'; }
base=$(field ppl "$OUT_DIR/00-local-16.json")
echo "model: $MODEL ($("$EVAL" info --model "$MODEL" | sed -n 's/^model_id //p'))"
echo "text: $TEXT, $(field contexts "$OUT_DIR/00-local-16.json") contexts of $CTX tokens (pieces of at most $PIECE tokens, 0 = whole documents), $(field tokens "$OUT_DIR/00-local-16.json") predicted tokens, $(field bos_tokens "$OUT_DIR/00-local-16.json") BOS"
echo "KVSink keeps N = pfn + max_sinks = $N rows per sequence (profile $(sed -n 's/^max_sinks *= *//p' "$prof" 2>/dev/null) max_sinks, pfn 1)"
echo "measured sinks: $(field sinks_measured "$OUT_DIR/00-local-16.json") ($(field sinks_measured_bos "$OUT_DIR/00-local-16.json") at BOS); attention on them per layer: $(sed -n 's/.*"sink_attention":\[\([^]]*\)\].*/\1/p' "$OUT_DIR/00-local-16.json")"
echo
echo "| K/V bits | policy | outliers | ppl | vs fp16 | avg bits/elem | compression | predicted sinks | precision | recall |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for f in "$OUT_DIR"/[0-9]*.json; do
  mode=$(field mode "$f")
  pol=$(field policy "$f")
  [ "$mode" = local ] && pol="fp16 (no daemon)"
  [ "$mode" = daemon ] && [ "$(field bits "$f")" = 16 ] && pol="fp16 (through kvsinkd)"
  p=$(field ppl "$f")
  printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$(field bits "$f")" "$pol" \
    "$(field outliers "$f")" "$p" "$(awk -v a="$p" -v b="$base" 'BEGIN { printf "%+.2f%%", (a / b - 1) * 100 }')" \
    "$(field avg_bits "$f")" "$(field compression "$f")x" "$(field sinks_predicted "$f")" \
    "$(field precision "$f")" "$(field recall "$f")"
done
echo
echo "rows: $OUT_DIR"
