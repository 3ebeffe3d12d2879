#!/usr/bin/env bash
# A preloaded python http.server sends a 10 MB file to a preloaded curl. Pass: sha256 matches and
# the agent's n2h_bytes and h2n_bytes each grew by >= 10 MB (server TX crossed host->NIC, client RX
# crossed NIC->host).
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
require_snstack
require_cmd curl sha256sum ss

SIZE=$((10 * 1024 * 1024))
mkdir -p "$WORKDIR/srv"
head -c "$SIZE" /dev/urandom >"$WORKDIR/srv/blob"

start_agent
port=$(free_port)
spawn_preload "$WORKDIR/http.log" "$PY" -m http.server "$port" --bind 127.0.0.1 --directory "$WORKDIR/srv"
srv=$SPAWNED_PID
wait_port "$port" "$srv"
lib_loaded "$srv" || fail "libsnstack.so is not mapped into the server (pid $srv)"

n2h0=$(agent_stat n2h_bytes)
h2n0=$(agent_stat h2n_bytes)

log "downloading $SIZE bytes through two offloaded sockets"
preload curl -sS --fail --max-time 60 -o "$WORKDIR/out" "http://127.0.0.1:$port/blob" \
    2>"$WORKDIR/curl.err" </dev/null || fail "curl failed: $(cat "$WORKDIR/curl.err")"
assert_same_file "$WORKDIR/srv/blob" "$WORKDIR/out" "download"
pid_alive "$srv" || fail "http.server died"

n2h=$(wait_stat n2h_bytes -ge $((n2h0 + SIZE)) 5) ||
    fail "n2h_bytes grew by $((n2h - n2h0)), expected >= $SIZE (client RX not offloaded?)"
h2n=$(wait_stat h2n_bytes -ge $((h2n0 + SIZE)) 5) ||
    fail "h2n_bytes grew by $((h2n - h2n0)), expected >= $SIZE (server TX not offloaded?)"
log "n2h_bytes +$((n2h - n2h0)), h2n_bytes +$((h2n - h2n0))"

stop_pid "$srv"
stop_agent
echo "PASS: $TEST_NAME"
