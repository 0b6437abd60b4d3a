#!/bin/sh
# SPDX-License-Identifier: MIT
# Bad input through the API comes back as errors; the session stays usable.
. "${top_srcdir:-.}/tests/lib/daemon.sh"
start_daemon
timeout 60 "$ITEST" "$SOCK" errors || fail "errors client"
"$KVSINKCTL" --socket "$SOCK" ping >/dev/null || fail "daemon gone"
stop_daemon
