#!/bin/sh
# SPDX-License-Identifier: MIT
# metrics_listen: kvsinkd answers GET /metrics in the Prometheus text
# format (promtool check metrics), the counters, per-space gauges and
# latency histograms move with real traffic, and what is not a GET of
# /metrics is refused (404, 405, 400, 431); a stalled request is closed.
. "${top_srcdir:-.}/tests/lib/daemon.sh"
command -v promtool >/dev/null || { echo "SKIP: promtool (Debian package prometheus) not installed"; exit 77; }
daemon_conf 'metrics_listen = 127.0.0.1:0'
start_daemon
wait_log 'metrics on http://127.0.0.1:'
URL=$(sed -n 's/.*metrics on \(http:[^ ]*\).*/\1/p' "$LOG" | head -n 1)
[ -n "$URL" ] || fail "no metrics address in the log"
HOSTPORT=${URL#http://}; HOSTPORT=${HOSTPORT%/metrics}

# http METHOD PATH OUT [RAW]: one exchange over a plain socket; writes the
# status code to OUT.code and the body to OUT. RAW replaces the request.
http() {
  timeout 30 /usr/bin/python3 - "$HOSTPORT" "$1" "$2" "$3" "${4:-}" <<'PY'
import socket, sys
hp, method, path, out, raw = sys.argv[1:6]
host, port = hp.rsplit(':', 1)
s = socket.create_connection((host, int(port)), timeout=20)
req = raw.encode().decode('unicode_escape').encode('latin-1') if raw else \
      ('%s %s HTTP/1.0\r\nHost: %s\r\n\r\n' % (method, path, hp)).encode()
s.sendall(req)
data = b''
while True:
    b = s.recv(65536)
    if not b: break
    data += b
head, _, body = data.partition(b'\r\n\r\n')
code = head.split(b' ')[1].decode()
open(out, 'wb').write(body)
open(out + '.code', 'w').write(code + '\n')
PY
}

# value FILE SAMPLE: the value of one sample (the whole name with labels)
value() {
  awk -v s="$2" 'substr($0, 1, length(s) + 1) == s " " { print $2; f = 1 } END { exit !f }' "$1"
}

scrape() {
  http GET /metrics "$1" || fail "scrape failed"
  [ "$(cat "$1.code")" = 200 ] || fail "GET /metrics answered $(cat "$1.code")"
  promtool check metrics < "$1" > "$1.promtool" 2>&1 || { cat "$1.promtool"; fail "promtool check metrics"; }
}

scrape "$T/m0"
[ "$(value "$T/m0" 'kvsink_requests_total{op="put"}')" = 0 ] || fail "puts before any traffic"
[ "$(value "$T/m0" 'kvsink_lookup_hit_tokens_total')" = 0 ] || fail "hits before any traffic"
value "$T/m0" 'kvsink_pool_bytes{device="host"}' > "$T/pool" || fail "no pool_bytes for host"
[ "$(cat "$T/pool")" -gt 0 ] || fail "pool_bytes 0"

# traffic: one client stores 6 groups, another finds and reads them
marker=$T/prefix.bin
timeout 120 "$ITEST" "$SOCK" store 11 6 "$marker" || fail "storing client"
timeout 120 "$ITEST" "$SOCK" share 11 6 "$marker" 21 > "$T/share.log" 2>&1 || { cat "$T/share.log"; fail "sharing client"; }

scrape "$T/m1"
puts=$(value "$T/m1" 'kvsink_requests_total{op="put"}') || fail "no put counter"
gets=$(value "$T/m1" 'kvsink_requests_total{op="get"}') || fail "no get counter"
lookups=$(value "$T/m1" 'kvsink_requests_total{op="lookup"}') || fail "no lookup counter"
hellos=$(value "$T/m1" 'kvsink_requests_total{op="hello"}') || fail "no hello counter"
[ "$puts" -gt 0 ] && [ "$gets" -gt 0 ] && [ "$lookups" -gt 0 ] || fail "puts $puts gets $gets lookups $lookups: expected all > 0"
[ "$hellos" -ge 2 ] || fail "hellos $hellos: expected >= 2"
for op in put get lookup; do
  n=$(value "$T/m1" "kvsink_request_duration_seconds_count{op=\"$op\"}") || fail "no $op histogram"
  inf=$(value "$T/m1" "kvsink_request_duration_seconds_bucket{op=\"$op\",le=\"+Inf\"}") || fail "no $op +Inf bucket"
  r=$(value "$T/m1" "kvsink_requests_total{op=\"$op\"}")
  [ "$n" = "$r" ] && [ "$inf" = "$r" ] || fail "$op: histogram count $n / +Inf $inf, requests $r"
done
hit=$(value "$T/m1" kvsink_lookup_hit_tokens_total)
[ "$hit" -gt 0 ] || fail "no lookup hit tokens after a shared prefix"
stored=$(value "$T/m1" kvsink_stored_bytes)
raw=$(value "$T/m1" kvsink_stored_raw_bytes)
[ "$stored" -gt 0 ] && [ "$raw" -gt "$stored" ] || fail "stored $stored raw $raw: expected compression"
ratio=$(value "$T/m1" kvsink_compression_ratio)
awk -v r="$ratio" 'BEGIN { exit !(r > 1) }' || fail "compression ratio $ratio"
ns="uid:$(id -u)"
blocks=$(awk -v ns="$ns" 'index($0, "kvsink_space_blocks{namespace=\"" ns "\",") == 1 { s += $2 } END { print s + 0 }' "$T/m1")
[ "$blocks" -gt 0 ] || fail "no blocks for namespace $ns"
[ "$(stat_field blocks_used)" = "$(value "$T/m1" 'kvsink_pool_blocks{device="host"}')" ] || fail "pool blocks differ from stats"
[ "$(value "$T/m1" kvsink_sessions_opened_total)" -ge 2 ] || fail "sessions_opened_total"
# stats (issue 15): the pool's free bytes and the residual budget, not a
# block "total" equal to the blocks held; the same numbers as the metrics
ctl stats --json > "$T/stats.json" || fail "kvsinkctl stats --json"
field() { /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$T/stats.json" "$1"; }
free=$(field pool_free_bytes) || fail "no pool_free_bytes in stats"
pool=$(field pool_bytes)
[ "$free" -gt 0 ] && [ "$free" -lt "$pool" ] || fail "pool_free_bytes $free of $pool: expected some chunks in use"
[ "$free" = "$(value "$T/m1" 'kvsink_pool_free_bytes{device="host"}')" ] || fail "pool_free_bytes differs from the metric"
[ "$(field residual_limit_bytes)" = "$pool" ] || fail "residual_limit_bytes $(field residual_limit_bytes): expected the pool size $pool (its default)"
field residual_bytes > /dev/null || fail "no residual_bytes in stats"
field blocks_total > /dev/null 2>&1 && fail "stats still has blocks_total"
ctl stats > "$T/stats.txt" || fail "kvsinkctl stats"
grep -q "^pool free  *$free bytes" "$T/stats.txt" || { cat "$T/stats.txt"; fail "kvsinkctl stats does not print the free bytes"; }
grep -q "^blocks  *$(field blocks_used) held, 0 pinned$" "$T/stats.txt" || { cat "$T/stats.txt"; fail "kvsinkctl stats blocks line"; }

# the same exposition through the admin plane (kvsinkctl metrics), for
# node-exporter's textfile collector (admin only: test_metrics)
timeout 30 "$KVSINKCTL" --admin-socket "$T/kvsinkd.admin.sock" metrics > "$T/ctl.prom" || fail "kvsinkctl metrics"
promtool check metrics < "$T/ctl.prom" > "$T/ctl.promtool" 2>&1 || { cat "$T/ctl.promtool"; fail "promtool on kvsinkctl metrics"; }
[ "$(value "$T/ctl.prom" 'kvsink_requests_total{op="put"}')" = "$puts" ] || fail "kvsinkctl metrics: put count differs from the scrape"
[ "$(value "$T/ctl.prom" 'kvsink_requests_total{op="metrics"}')" = 0 ] || fail "the metrics op counted before its reply"

# what is not GET /metrics
http GET / "$T/r404" && [ "$(cat "$T/r404.code")" = 404 ] || fail "GET / not 404"
http POST /metrics "$T/r405" && [ "$(cat "$T/r405.code")" = 405 ] || fail "POST not 405"
http GET /metrics "$T/r400" 'nonsense\r\n\r\n' && [ "$(cat "$T/r400.code")" = 400 ] || fail "bad request line not 400"
big=$(awk 'BEGIN { while (i++ < 5000) printf "a" }')
http GET /metrics "$T/r431" "GET /metrics HTTP/1.0\\r\\nX: $big\\r\\n\\r\\n" && [ "$(cat "$T/r431.code")" = 431 ] || fail "oversized request not 431"
# a request that never ends is dropped at the deadline (10 s), unanswered
timeout 60 /usr/bin/python3 - "$HOSTPORT" <<'PY' || fail "a stalled request was not closed"
import socket, sys
host, port = sys.argv[1].rsplit(':', 1)
s = socket.create_connection((host, int(port)), timeout=50)
s.sendall(b'GET /metr')
sys.exit(0 if s.recv(1024) == b'' else 1)
PY
# the daemon still answers after all that
scrape "$T/m2"
stop_daemon
echo "daemon-metrics ok: $puts puts, $gets gets, $lookups lookups, $hit hit tokens, ratio $ratio"
