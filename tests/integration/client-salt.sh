#!/bin/sh
# SPDX-License-Identifier: MIT
# Cache salt (hello "salt", kvs_options.salt): clients of one shared
# namespace share blocks only when their salts are equal. The probe of a
# different salt (or none) finds 0 tokens and cannot get them; the same
# salt finds and reads back every token.
. "${top_srcdir:-.}/tests/lib/daemon.sh"
daemon_conf "shared_namespace_uids = $(id -u)"
start_daemon
KVS_ITEST_SALT=tenant-a timeout 60 "$ITEST" "$SOCK" store 7 4 "$T/marker" || fail "salted store"
KVS_ITEST_SALT=tenant-b timeout 60 "$ITEST" "$SOCK" probe 7 4 none || fail "another salt reached tenant-a's blocks"
timeout 60 "$ITEST" "$SOCK" probe 7 4 none || fail "an unsalted client reached tenant-a's blocks"
KVS_ITEST_SALT=tenant-a timeout 60 "$ITEST" "$SOCK" probe 7 4 all || fail "the same salt does not share"
# without salts the shared namespace shares as before
timeout 60 "$ITEST" "$SOCK" store 8 4 "$T/marker2" || fail "unsalted store"
timeout 60 "$ITEST" "$SOCK" probe 8 4 all || fail "unsalted clients do not share"
KVS_ITEST_SALT=tenant-a timeout 60 "$ITEST" "$SOCK" probe 8 4 none || fail "a salted client reached unsalted blocks"
grep -q "(shared), model 'itest'.*salted" "$LOG" || fail "no salted hello in the shared namespace logged"
# two spaces holding blocks (tenant-a's and the unsalted one; tenant-b
# stored nothing) in the one namespace, 4 blocks x 4 layers each
ctl list --json > "$T/list.json" || fail "kvsinkctl list"
n=$(/usr/bin/python3 -c 'import json,sys; print(sum(1 for s in json.load(open(sys.argv[1])) if s["ns"] == "shared" and s["blocks"] == 16))' "$T/list.json") ||
  { cat "$T/list.json"; fail "list output"; }
[ "$n" = 2 ] || { cat "$T/list.json"; fail "$n shared spaces of 16 blocks, expected 2"; }
stop_daemon
echo "client-salt ok"
