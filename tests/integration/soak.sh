#!/bin/sh
# SPDX-License-Identifier: MIT
# Soak (tests/integration/soak.c): 16 clients of random put / lookup / get /
# release against a private kvsinkd with a 16 MiB pool, victims SIGKILLed
# mid-put and mid-get, every value read back checked, the daemon's RSS
# bounded. KVSINK_SOAK_SECONDS (default 60) makes it longer.
: "${top_builddir:=.}"
export top_builddir
# under ASan (check.sh) the allocator's quarantine would fill for minutes
# and read as growth: cap it so the RSS bound still means something
[ -n "${ASAN_OPTIONS:-}" ] && export ASAN_OPTIONS="$ASAN_OPTIONS:quarantine_size_mb=16"
exec timeout --foreground $((${KVSINK_SOAK_SECONDS:-60} + 240)) \
  "$top_builddir/tests/integration/soak" --seconds "${KVSINK_SOAK_SECONDS:-60}" --workers 16 --pool 16M
