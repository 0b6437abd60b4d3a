#!/bin/sh
# SPDX-License-Identifier: MIT
# The rooms' include rules (HACKING.md, "Rooms"): each folder includes only
# itself and the folders below it, and everyone may include the public
# <kvsink.h>. Fails, naming file and line, on any include that crosses them.
set -u
top=${top_srcdir:-$(dirname "$0")/..}
cd "$top" || exit 1

allowed() { # room -> rooms it may include (besides itself)
  case $1 in
    include) echo "" ;;
    proto)   echo "" ;;
    kernels) echo "" ;;
    store)   echo "kernels" ;;
    daemon)  echo "proto store kernels" ;;
    client)  echo "proto kernels" ;;
    tools)   echo "client" ;;
    eval)    echo "" ;;
    python)  echo "" ;;
    *)       echo "-" ;;
  esac
}

bad=0 n=0
for room in include proto kernels store daemon client tools eval; do
  [ -d "$room" ] || continue
  ok=$(allowed "$room")
  files=$(find "$room" -type f \( -name '*.c' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \))
  for f in $files; do
    n=$((n + 1))
    # quoted includes name a room: "room/file.h"
    grep -n '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$f" | while IFS= read -r line; do
      inc=$(printf '%s\n' "$line" | sed 's/.*"\(.*\)".*/\1/')
      case $inc in
        */*) target=${inc%%/*} ;;
        *) echo "$f:${line%%:*}: \"$inc\" names no room (write \"room/file.h\")"; echo x >&3; continue ;;
      esac
      [ "$target" = "$room" ] && continue
      for a in $ok; do [ "$target" = "$a" ] && continue 2; done
      echo "$f:${line%%:*}: $room may not include $inc"
      echo x >&3
    done
  done
done 3>"${TMPDIR:-/tmp}/kvs-layers.$$"
bad=$(wc -l < "${TMPDIR:-/tmp}/kvs-layers.$$")
rm -f "${TMPDIR:-/tmp}/kvs-layers.$$"

# The build must not make every header visible everywhere either: only
# the top (for "room/file.h") and include/ are on the include path.
if grep -n -- '-I$(top_srcdir)/\(client\|proto\|kernels\|store\|daemon\)' Makefile.am */Makefile.inc */*.inc 2>/dev/null; then
  echo "an include path above exposes one room's headers to every file"; bad=$((bad + 1))
fi
if [ "$bad" -ne 0 ]; then
  echo "FAIL: $bad include(s) cross the rooms' rules"
  exit 1
fi
echo "ok: $n files in their rooms"
