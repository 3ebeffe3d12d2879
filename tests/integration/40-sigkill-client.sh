#!/usr/bin/env bash
# A preloaded curl is SIGKILLed in the middle of a rate-limited 200 MB download from a preloaded
# http.server. Pass: the agent survives, a new preloaded download succeeds, `sockets` and `processes`
# return to their values from before the client started, and no channel was dropped (a killed
# process is not a misbehaving one).
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
require_snstack
require_cmd curl sha256sum ss

mkdir -p "$WORKDIR/srv"
truncate -s 200M "$WORKDIR/srv/big"
head -c 65536 /dev/urandom >"$WORKDIR/srv/small"

start_agent
port=$(free_port)
spawn_preload "$WORKDIR/http.log" "$PY" -m http.server "$port" --bind 127.0.0.1 --directory "$WORKDIR/srv"
srv=$SPAWNED_PID
wait_port "$port" "$srv"

sockets0=$(agent_stat sockets)
procs0=$(agent_stat processes)
dropped0=$(agent_stat channels_dropped)
log "before the client: sockets=$sockets0 processes=$procs0"

spawn_preload "$WORKDIR/curl-big.log" curl -sS --limit-rate 2M --max-time 200 -o "$WORKDIR/partial" \
    "http://127.0.0.1:$port/big"
cpid=$SPAWNED_PID
for ((i = 0; i < 100; i++)); do
    size=$(stat -c %s "$WORKDIR/partial" 2>/dev/null || echo 0)
    ((size >= 1024 * 1024)) && break
    pid_alive "$cpid" || fail "curl exited early: $(cat "$WORKDIR/curl-big.log")"
    sleep 0.1
done
((size >= 1024 * 1024)) || fail "curl received only $size bytes in 10 s"
during=$(agent_stat sockets)
((during >= sockets0 + 2)) ||
    fail "sockets=$during during the transfer, expected >= $((sockets0 + 2)) (client and accepted socket offloaded)"
pid_alive "$cpid" || fail "curl finished before it could be killed"

log "SIGKILL curl (pid $cpid) after $size bytes, sockets=$during"
kill -KILL "$cpid"
wait "$cpid" 2>/dev/null || true

sleep 0.5
agent_alive || fail "agent died after the client was killed"
preload curl -sS --fail --max-time 20 -o "$WORKDIR/small.out" "http://127.0.0.1:$port/small" \
    2>"$WORKDIR/curl.err" </dev/null || fail "follow-up curl failed: $(cat "$WORKDIR/curl.err")"
assert_same_file "$WORKDIR/srv/small" "$WORKDIR/small.out" "follow-up download"

s=$(wait_stat sockets -eq "$sockets0" 10) ||
    fail "sockets=$s 10 s after the kill, expected $sockets0 (leaked sockets of the killed process)"
p=$(wait_stat processes -eq "$procs0" 5) || fail "processes=$p, expected $procs0"
d=$(agent_stat channels_dropped)
[[ $d == "$dropped0" ]] || fail "channels_dropped went $dropped0 -> $d: a killed client is not misbehaviour"
pid_alive "$srv" || fail "http.server died"
agent_alive || fail "agent died"
log "sockets back to $s, processes $p"

stop_pid "$srv"
stop_agent
echo "PASS: $TEST_NAME"
