#!/usr/bin/env bash
# The agent's Prometheus endpoint (`--metrics ADDR:PORT`, issue 12 item 6), scraped while a
# preloaded client downloads. Pass: GET /metrics is 200 with the exposition content type, every
# sample line parses and belongs to a family with a TYPE line, counters agree with `snstack-agent
# stats`, the client has per-process samples with its pid and command, the agent's CPU seconds
# match /proc; HEAD has headers only; other paths are 404, other methods 405, an oversized or
# malformed request 400; a client that connects and sends nothing, or trickles bytes, does not
# stop the next scrape for long (bounded timeouts); without --metrics nothing listens; SIGTERM still exits 0.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
require_snstack
require_cmd curl

mport=$(free_port)
start_agent --metrics "127.0.0.1:$mport"
url=http://127.0.0.1:$mport/metrics

mkdir -p "$WORKDIR/srv"
head -c $((4 * 1024 * 1024)) /dev/urandom >"$WORKDIR/srv/blob"
port=$(free_port)
spawn "$WORKDIR/http.log" "$PY" -m http.server "$port" --bind 127.0.0.1 --directory "$WORKDIR/srv"
srv=$SPAWNED_PID
wait_port "$port" "$srv"
# A preloaded client that downloads, then stays attached until told to go.
spawn_preload "$WORKDIR/client.log" "$PY" -c '
import os, sys, time, urllib.request
data = urllib.request.urlopen(sys.argv[1]).read()
assert len(data) == 4 * 1024 * 1024
open(sys.argv[2] + ".done", "w").close()
while not os.path.exists(sys.argv[2]):
    time.sleep(0.05)
' "http://127.0.0.1:$port/blob" "$WORKDIR/stop"
client=$SPAWNED_PID
for ((i = 0; i < 200; i++)); do
    [[ -e $WORKDIR/stop.done ]] && break
    pid_alive "$client" || fail "client died: $(cat "$WORKDIR/client.log")"
    sleep 0.1
done
[[ -e $WORKDIR/stop.done ]] || fail "client did not finish its download"

curl -sS -D "$WORKDIR/h" -o "$WORKDIR/m" "$url" || fail "scrape failed"
agent_stats >"$WORKDIR/stats.txt"
head -1 "$WORKDIR/h" | grep -q '^HTTP/1.1 200' || fail "status: $(head -1 "$WORKDIR/h")"
grep -qi '^content-type: text/plain; version=0.0.4' "$WORKDIR/h" || fail "content type: $(cat "$WORKDIR/h")"
ticks=$(cpu_ticks "$AGENT_PID")
"$PY" - "$WORKDIR/m" "$WORKDIR/stats.txt" "$client" "$ticks" "$CLK_TCK" <<'PYEOF' || fail "metrics check failed"
import re, sys
text = open(sys.argv[1]).read()
stats = dict(l.split() for l in open(sys.argv[2]))
client, ticks, hz = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
label = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:\\.|[^"\\])*"'
sample = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>%s(?:,%s)*)\})? (?P<value>-?[0-9.e+]+)$' % (label, label))
types, values = {}, {}
for line in text.splitlines():
    if line.startswith("# TYPE "):
        _, _, name, kind = line.split(" ")
        assert kind in ("counter", "gauge"), line
        assert name not in types, "TYPE twice: " + name
        types[name] = kind
        continue
    if line.startswith("# HELP "):
        continue
    m = sample.match(line)
    assert m, "bad sample line: " + repr(line)
    name = m.group("name")
    assert name in types, "sample without TYPE: " + line
    if types[name] == "counter":
        assert name.endswith("_total"), "counter not named _total: " + line
    values[(name, m.group("labels") or "")] = float(m.group("value"))
# Agent-wide counters equal the text report's (nothing moves: the client is idle).
for k in ("h2n_bytes", "n2h_bytes", "h2n_ops", "n2h_ops", "active_opens", "attaches"):
    assert values[("snstack_%s_total" % k, "")] == int(stats[k]), k
assert values[("snstack_processes", "")] == int(stats["processes"]) == 1
rx = [v for (n, l), v in values.items()
      if n == "snstack_process_n2h_bytes_total" and 'pid="%d"' % client in l and 'comm="python3"' in l]
assert rx and rx[0] >= 4 * 1024 * 1024, rx
cpu = sum(v for (n, l), v in values.items() if n == "snstack_agent_cpu_seconds_total")
assert abs(cpu - ticks / hz) <= 0.03 + 0.1 * ticks / hz, (cpu, ticks / hz)
print("metrics ok:", len(values), "samples; client rx", rx[0], "; agent cpu", cpu, "s")
PYEOF

# HTTP corners.
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
[[ $(code "http://127.0.0.1:$mport/") == 404 ]] || fail "/ is not 404"
[[ $(code "http://127.0.0.1:$mport/metricsx") == 404 ]] || fail "/metricsx is not 404"
[[ $(code -X POST "$url") == 405 ]] || fail "POST is not 405"
[[ $(code "$url?x=1") == 200 ]] || fail "a query string is not ignored"
curl -sS -I "$url" >"$WORKDIR/head" || fail "HEAD failed"
if ! grep -q '^HTTP/1.1 200' "$WORKDIR/head" || ! grep -qi '^content-length: [1-9]' "$WORKDIR/head"; then
    fail "HEAD: $(cat "$WORKDIR/head")"
fi
[[ $(code -H "X-Big: $(head -c 9000 /dev/zero | tr '\0' a)" "$url") == 400 ]] || fail "an oversized request is not 400"
raw=$("$PY" -c '
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"garbage\r\n\r\n")
print(s.recv(100).split(b"\r\n")[0].decode())
' "$mport")
[[ $raw == "HTTP/1.1 400 Bad Request" ]] || fail "a malformed request line got '$raw'"
# A silent client holds the (one-at-a-time) endpoint for at most its read timeout.
spawn "$WORKDIR/silent.log" "$PY" -c '
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
time.sleep(30)
' "$mport"
sleep 0.3
t0=$SECONDS
[[ $(code --max-time 10 "$url") == 200 ]] || fail "a scrape behind a silent client failed"
((SECONDS - t0 <= 4)) || fail "a silent client held the endpoint for $((SECONDS - t0)) s"
stop_pid "$SPAWNED_PID"
# One that trickles a byte a second holds it for at most the 5 s request deadline.
spawn "$WORKDIR/trickle.log" "$PY" -c '
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
for _ in range(30):
    s.sendall(b"G")
    time.sleep(1)
' "$mport"
sleep 0.3
t0=$SECONDS
[[ $(code --max-time 15 "$url") == 200 ]] || fail "a scrape behind a trickling client failed"
((SECONDS - t0 <= 7)) || fail "a trickling client held the endpoint for $((SECONDS - t0)) s"
stop_pid "$SPAWNED_PID"
log "HTTP: 404, 405, 400 (oversized, malformed), HEAD, query string, silent and trickling clients bounded"

touch "$WORKDIR/stop"
wait_exit "$client" 10 || fail "client did not exit"
stop_agent

# Without --metrics: nothing listens on the port.
start_agent
[[ -z $(ss -Htln "sport = :$mport") ]] || fail "something listens on $mport without --metrics"
stop_agent
echo "PASS: $TEST_NAME"
