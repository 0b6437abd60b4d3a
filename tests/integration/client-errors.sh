#!/bin/sh
# Bad input through the API comes back as errors; the session stays usable.
. "${top_srcdir:-.}/tests/integration/client-common.sh"
start_daemon
timeout 60 "$ITEST" "$sock" errors || fail "errors client"
"$KVSINKCTL" --socket "$sock" ping >/dev/null || fail "daemon gone"
stop_daemon || exit 1
