#!/usr/bin/env bash
# tests/apps/threaded_client.py: 64 threads, each with its own plain blocking socket (no Python
# timeout, so recv/send really block in the library), 200 verified request/response round trips of
# random sizes. Run preloaded against (a) a preloaded socketserver.ThreadingTCPServer echo and
# (b) the same server on kernel sockets. Pass: both runs complete every round trip.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
# shellcheck source=tests/apps/common.sh
source "$REPO/tests/apps/common.sh"
require_snstack
require_cmd ss timeout
THREADS=64
N=200
APP=$APPS/threaded_client.py

start_agent

run_client() { # WHAT PORT
    local what=$1 port=$2 rc=0 line
    log "[$what] $THREADS threads x $N round trips"
    preload timeout -k 5 120 "$PY" "$APP" client "$port" "$THREADS" "$N" \
        >"$WORKDIR/client-$what.log" 2>&1 </dev/null || rc=$?
    cat "$WORKDIR/client-$what.log"
    [[ $rc == 0 ]] || fail "[$what] client failed (status $rc): $(tail -3 "$WORKDIR/client-$what.log")"
    line=$(grep '^ok ' "$WORKDIR/client-$what.log") || fail "[$what] client printed no result"
    [[ $line == "ok threads=$THREADS roundtrips=$((THREADS * N)) "* ]] || fail "[$what] unexpected result: $line"
    CLIENT_BYTES=${line##*bytes=}
}

# (a) preloaded server
port=$(free_port)
spawn_preload "$WORKDIR/server-snstack.log" "$PY" "$APP" server "$port"
srv=$SPAWNED_PID
wait_port "$port" "$srv"
lib_loaded "$srv" || fail "libsnstack.so is not mapped into the server (pid $srv)"
h2n0=$(agent_stat h2n_bytes)
n2h0=$(agent_stat n2h_bytes)
run_client snstack-server "$port"
counters_grew "$h2n0" "$n2h0" $((2 * CLIENT_BYTES)) || fail "agent byte counters grew by less than 2 x $CLIENT_BYTES"
pid_alive "$srv" || fail "preloaded server died: $(tail -5 "$WORKDIR/server-snstack.log")"
stop_pid "$srv"

# (b) kernel server, preloaded client
port=$(free_port)
spawn "$WORKDIR/server-kernel.log" "$PY" "$APP" server "$port"
ksrv=$SPAWNED_PID
wait_port "$port" "$ksrv"
h2n0=$(agent_stat h2n_bytes)
n2h0=$(agent_stat n2h_bytes)
run_client kernel-server "$port"
counters_grew "$h2n0" "$n2h0" "$CLIENT_BYTES" || fail "client traffic did not go through the agent"
pid_alive "$ksrv" || fail "kernel server died"
stop_pid "$ksrv"
stop_agent
echo "PASS: $TEST_NAME"
