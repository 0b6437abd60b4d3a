#!/bin/sh
# SPDX-License-Identifier: MIT
# Every source file carries an SPDX license identifier (scripts/spdx.sh
# adds it). Generated files and data are not sources.
set -u
top=${top_srcdir:-$(dirname "$0")/..}
cd "$top" || exit 1
# the checkout itself (a tarball unpacked inside a checkout is not one)
if [ "$(git rev-parse --show-toplevel 2>/dev/null)" = "$(pwd -P)" ]; then
  files=$(git ls-files -- '*.c' '*.h' '*.cu' '*.cuh' '*.sh' '*.py' '*.inc' 'Makefile.am' 'configure.ac')
else # a release tarball: the same patterns, found on disk
  files=$(find . -type f \( -name '*.c' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' -o -name '*.sh' \
    -o -name '*.py' -o -name '*.inc' -o -name Makefile.am -o -name configure.ac \) \
    -not -path './build*' -not -path './build-aux/*' -not -path './m4/*' -not -name 'default_conf.c' \
    -not -path './autom4te.cache/*' -not -path './_build/*' -not -path './_inst/*' | sed 's|^\./||')
fi
bad=0 n=0
for f in $files; do
  n=$((n + 1))
  head -n 3 "$f" | grep -q 'SPDX-License-Identifier: MIT' || { echo "no SPDX line: $f"; bad=$((bad + 1)); }
done
[ "$n" -gt 100 ] || { echo "FAIL: only $n source files found"; exit 1; }
[ "$bad" -eq 0 ] || { echo "FAIL: $bad of $n files lack an SPDX identifier (run scripts/spdx.sh)"; exit 1; }
echo "ok: $n files carry SPDX-License-Identifier: MIT"
