#!/bin/sh
# SPDX-License-Identifier: MIT
# Lint every man page: mandoc's linter at warning level, and groff's own
# warnings. Either complaining fails the test.
set -u
src=${top_srcdir:-.}
command -v mandoc >/dev/null 2>&1 || { echo "mandoc missing"; exit 77; }
rc=0; n=0
for f in "$src"/man/*.[1-8]; do
  [ -f "$f" ] || continue
  n=$((n + 1))
  # any output, or a status above 1 (notes only), is a complaint
  out=$(mandoc -T lint -W warning "$f" 2>&1)
  mrc=$?
  if [ -n "$out" ] || [ $mrc -gt 1 ]; then echo "$f: mandoc status $mrc"; echo "$out"; rc=1; fi
  if command -v groff >/dev/null 2>&1; then
    out=$(groff -ww -z -man "$f" 2>&1)
    if [ -n "$out" ]; then echo "$f: $out"; rc=1; fi
  fi
done
[ "$n" -gt 0 ] || { echo "no man pages found"; exit 1; }
[ $rc -eq 0 ] && echo "$n man pages clean"
exit $rc
