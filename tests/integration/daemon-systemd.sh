#!/bin/sh
# SPDX-License-Identifier: MIT
# Under systemd: socket activation (systemd-socket-activate -l SOCK) and
# the notify protocol (READY=1, STATUS=, RELOADING=1, STOPPING=1).
. "${top_srcdir:-.}/tests/lib/daemon.sh"
SSA=$(command -v systemd-socket-activate) || { echo "no systemd-socket-activate"; exit 77; }
PY=$(command -v python3) || { echo "no python3"; exit 77; }

NS=$T/notify.sock
"$PY" "$top_srcdir/tests/integration/notify-recv.py" "$NS" "$T/notes" &
RPID=$!
trap 'kill $RPID 2>/dev/null; cleanup' EXIT INT TERM
i=0
until grep -q listening "$T/notes" 2>/dev/null; do
  i=$((i + 1)); [ $i -gt 100 ] && fail "notify receiver did not start"; sleep 0.1
done

wait_note() {
  i=0
  until grep -q "$1" "$T/notes"; do
    i=$((i + 1)); [ $i -gt 150 ] && fail "no $1 notification: $(cat "$T/notes")"; sleep 0.1
  done
}

# The socket is created by systemd-socket-activate; kvsinkd must use the fd
# (its own --socket points elsewhere and must not be created).
"$SSA" -l "$SOCK" -E NOTIFY_SOCKET="$NS" -E WATCHDOG_USEC=400000 "$KVSINKD" --foreground --config "$CONF" --socket "$T/unused.sock" \
  --pool-size 16M --device host --log-level info 2>"$LOG" &
DPID=$!
i=0
while [ ! -S "$SOCK" ]; do
  i=$((i + 1)); [ $i -gt 100 ] && fail "systemd-socket-activate did not listen"; sleep 0.1
done
out=$(raw send "$HELLO" recv send '{"op":"ping","id":2}' recv) || fail "activated daemon: $out"
echo "$out" | grep -q 'fd memfd' || fail "no segment from the activated daemon: $out"
echo "$out" | grep -q '"id"=>2}' || fail "ping: $out"
wait_note READY=1
wait_note 'STATUS=serving'
wait_note WATCHDOG=1
[ -e "$T/unused.sock" ] && fail "kvsinkd bound its own socket despite socket activation"
grep -q 'socket passed by systemd' "$LOG" || fail "no socket-activation log line"
# under NOTIFY_SOCKET the log carries syslog priorities
grep -q '^<5>' "$LOG" || fail "log lines lack <N> prefixes under systemd"

kill -HUP "$DPID"
wait_note RELOADING=1
i=0
while [ "$(grep -c READY=1 "$T/notes")" -lt 2 ]; do
  i=$((i + 1)); [ $i -gt 100 ] && fail "no READY=1 after the reload"; sleep 0.1
done
stop_daemon
wait_note STOPPING=1
echo "notifications:"; cat "$T/notes"
echo ok
