#!/bin/sh
# SPDX-License-Identifier: MIT
# A real Prometheus server scrapes kvsinkd's metrics_listen: the target is
# healthy and a query returns the daemon's pool size and the puts a client
# made. Skipped (77) without the prometheus binary (Debian package
# prometheus).
. "${top_srcdir:-.}/tests/lib/daemon.sh"
command -v prometheus >/dev/null || { echo "SKIP: prometheus not installed"; exit 77; }
daemon_conf 'metrics_listen = 127.0.0.1:0'
start_daemon
wait_log 'metrics on http://127.0.0.1:'
HOSTPORT=$(sed -n 's|.*metrics on http://\([^/]*\)/metrics.*|\1|p' "$LOG" | head -n 1)
[ -n "$HOSTPORT" ] || fail "no metrics address in the log"
timeout 120 "$ITEST" "$SOCK" store 3 4 "$T/marker" || fail "storing client"

# a free port for Prometheus' own web API
WEB=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])') || fail "no free port"
cat > "$T/prom.yml" <<EOF2
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: kvsink
    static_configs:
      - targets: ['$HOSTPORT']
EOF2
prometheus --config.file="$T/prom.yml" --storage.tsdb.path="$T/tsdb" \
  --web.listen-address="127.0.0.1:$WEB" > "$T/prom.log" 2>&1 &
PROM_PID=$!
stop_prom() { [ -z "$PROM_PID" ] || { kill "$PROM_PID" 2>/dev/null; wait "$PROM_PID" 2>/dev/null; PROM_PID=; }; }
trap 'stop_prom; cleanup' EXIT # a failed check must not leave it running

# query EXPR: the first result's value, or nothing (not yet scraped)
query() {
  timeout 30 /usr/bin/python3 - "$WEB" "$1" <<'PY'
import json, sys, urllib.parse, urllib.request
try:
    u = 'http://127.0.0.1:%s/api/v1/query?query=%s' % (sys.argv[1], urllib.parse.quote(sys.argv[2]))
    r = json.load(urllib.request.urlopen(u, timeout=20))["data"]["result"]
    print(r[0]["value"][1] if r else "")
except Exception:
    print("")
PY
}
i=0
until [ "$(query 'up{job="kvsink"}')" = 1 ] && [ -n "$(query 'kvsink_requests_total{op="put"}')" ]; do
  i=$((i + 1))
  kill -0 "$PROM_PID" 2>/dev/null || { cat "$T/prom.log"; fail "prometheus exited"; }
  [ $i -gt 600 ] && { stop_prom; tail -n 20 "$T/prom.log"; fail "prometheus never scraped kvsinkd (up != 1)"; }
  sleep 0.2
done
pool=$(query 'kvsink_pool_bytes{device="host"}')
puts=$(query 'kvsink_requests_total{op="put"}')
stop_prom
[ "$pool" = 67108864 ] || fail "kvsink_pool_bytes via Prometheus: '$pool', expected 67108864"
[ "$puts" -ge 2 ] 2>/dev/null || fail "kvsink_requests_total{op=put} via Prometheus: '$puts', expected >= 2"
stop_daemon
echo "daemon-prometheus ok: up, pool $pool bytes, $puts puts"
