#!/usr/bin/env bash
# tests/apps/aio_echo.py: a preloaded asyncio echo server (epoll selector) and a preloaded asyncio
# client in another process: 200 concurrent connections x 50 echoes of random sizes (1 B..64 KiB),
# every echo verified byte-exact, each connection half-closed and drained at the end.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
# shellcheck source=tests/apps/common.sh
source "$REPO/tests/apps/common.sh"
require_snstack
require_cmd ss timeout
CONNS=200
N=50

start_agent
port=$(free_port)
spawn_preload "$WORKDIR/server.log" "$PY" "$APPS/aio_echo.py" server "$port"
srv=$SPAWNED_PID
wait_port "$port" "$srv"
lib_loaded "$srv" || fail "libsnstack.so is not mapped into the asyncio server (pid $srv)"
h2n0=$(agent_stat h2n_bytes)
n2h0=$(agent_stat n2h_bytes)

log "asyncio client: $CONNS connections x $N echoes"
rc=0
preload timeout -k 5 180 "$PY" "$APPS/aio_echo.py" client "$port" "$CONNS" "$N" \
    >"$WORKDIR/client.log" 2>&1 </dev/null || rc=$?
cat "$WORKDIR/client.log"
[[ $rc == 0 ]] || fail "client failed (status $rc): $(tail -5 "$WORKDIR/client.log")"
line=$(grep '^ok ' "$WORKDIR/client.log") || fail "client printed no result line"
[[ $line == "ok conns=$CONNS echoes=$((CONNS * N)) "* ]] || fail "unexpected client result: $line"
bytes=${line##*bytes=}
pid_alive "$srv" || fail "asyncio server died: $(tail -5 "$WORKDIR/server.log")"
grep -E 'Traceback|Error' "$WORKDIR/server.log" && fail "server logged errors: $(tail -5 "$WORKDIR/server.log")"
# Client TX + server TX cross host->NIC; both RX cross NIC->host.
counters_grew "$h2n0" "$n2h0" $((2 * bytes)) || fail "agent byte counters grew by less than 2 x $bytes"
sk=$(wait_stat sockets -le 1 10) || fail "agent still holds $sk sockets after the client exited (listener only expected)"
stop_pid "$srv"
stop_agent
echo "PASS: $TEST_NAME"
