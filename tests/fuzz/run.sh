#!/bin/sh
# SPDX-License-Identifier: MIT
# A bounded libFuzzer run of every target (about 80 s in all; each target
# FUZZ_SECONDS, default 20: decode, config, profile, ops) from the committed seed corpora, under
# ASan+UBSan. Builds the targets with `make fuzz`. Skipped (77) only when
# clang-14 or its libFuzzer runtime is missing. New inputs go to a
# temporary directory, never into the tree. A crash fails the test and
# prints the input that caused it.
set -u
: "${top_srcdir:=.}"
: "${top_builddir:=.}"
secs=${FUZZ_SECONDS:-20}
command -v clang-14 >/dev/null 2>&1 || { echo "SKIP: clang-14 not installed"; exit 77; }
echo 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { (void)d; (void)n; return 0; }' > "${TMPDIR:-/tmp}/kvs-fuzz-probe.$$.c"
if ! clang-14 -fsanitize=fuzzer,address,undefined -o "${TMPDIR:-/tmp}/kvs-fuzz-probe.$$" \
     "${TMPDIR:-/tmp}/kvs-fuzz-probe.$$.c" >/dev/null 2>&1; then
  rm -f "${TMPDIR:-/tmp}/kvs-fuzz-probe.$$"*
  echo "SKIP: clang-14 has no libFuzzer runtime (libclang-rt-14-dev / libclang-common-14-dev)"
  exit 77
fi
rm -f "${TMPDIR:-/tmp}/kvs-fuzz-probe.$$"*
${MAKE:-make} -s -C "$top_builddir" fuzz >"$top_builddir/tests/fuzz-build.log" 2>&1 ||
  { cat "$top_builddir/tests/fuzz-build.log"; echo "FAIL: make fuzz"; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/kvs-fuzz.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' INT TERM HUP
rc=0
for t in decode config profile ops; do
  corpus=$top_srcdir/tests/fuzz/corpus/$t
  n=$(ls "$corpus" 2>/dev/null | wc -l)
  [ "$n" -gt 0 ] || { echo "FAIL: no seeds in $corpus"; rc=1; continue; }
  mkdir "$tmp/$t"
  # the first directory takes what the run finds; the seeds stay read-only
  (cd "$tmp" && timeout --foreground $((secs + 120)) "$top_builddir/fuzz_$t" \
     -max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
     -artifact_prefix="$tmp/crash-$t-" "$tmp/$t" "$corpus" > "$tmp/$t.log" 2>&1)
  r=$?
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$tmp/$t.log" | tail -n 1 | tr -s '\t ' ' ')
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$tmp/$t.log")
  if [ $r -ne 0 ] || [ -z "$done_line" ]; then
    echo "FAIL: fuzz_$t (exit $r)"
    tail -n 40 "$tmp/$t.log"
    for c in "$tmp"/crash-$t-*; do [ -f "$c" ] && { echo "input $c:"; od -c "$c" | head -20; }; done
    rc=1
    continue
  fi
  echo "fuzz_$t: $n seeds, $execs executions in ${secs} s, $done_line"
  grep -Eq '^#[0-9]+[[:space:]]+DONE +cov: [1-9]' "$tmp/$t.log" || { echo "FAIL: fuzz_$t covered nothing"; rc=1; }
done
exit $rc
