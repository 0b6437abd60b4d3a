#!/bin/sh
# SPDX-License-Identifier: MIT
# Adds the SPDX license line to every tracked source file that lacks it
# (first line; after the shebang in scripts). tests/spdx.sh checks it.
set -eu
cd "$(dirname "$0")/.."
git ls-files -- '*.c' '*.h' '*.cu' '*.cuh' '*.sh' '*.py' '*.inc' 'Makefile.am' 'configure.ac' |
while IFS= read -r f; do
  grep -q 'SPDX-License-Identifier:' "$f" && continue
  case $f in
    *.c|*.h|*.cu|*.cuh) line='/* SPDX-License-Identifier: MIT */' ;;
    configure.ac) line='dnl SPDX-License-Identifier: MIT' ;;
    *) line='# SPDX-License-Identifier: MIT' ;;
  esac
  tmp=$f.spdx.$$
  if head -n 1 "$f" | grep -q '^#!'; then
    { head -n 1 "$f"; echo "$line"; tail -n +2 "$f"; } > "$tmp"
  else
    { echo "$line"; cat "$f"; } > "$tmp"
  fi
  chmod --reference="$f" "$tmp" && mv "$tmp" "$f"
done
