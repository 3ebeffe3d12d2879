#!/usr/bin/env bash
# A process that corrupts its own shared region must lose its channel, and nobody else may notice.
# For each MODE: a rate-limited preloaded curl downloads from a preloaded http.server (two other
# processes) while the preloaded snstack-corrupt MODE PORT connects to a kernel listener and
# corrupts its region. Pass: snstack-corrupt exits 0 (the library survives a dead channel), the agent
# is alive, its log has an ERROR line naming the corrupter's pid, channels_dropped grew by exactly
# one, and the background download completes with the right sha256.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
require_snstack
require_cmd curl sha256sum ss
[[ -x $CORRUPT_BIN ]] || skip "$CORRUPT_BIN not built yet (crate examples)"

SIZE=$((12 * 1024 * 1024))
mkdir -p "$WORKDIR/srv"
head -c "$SIZE" /dev/urandom >"$WORKDIR/srv/blob"

# Kernel sink (not preloaded): accepts, reads and discards.
# error_line_names PID: the agent log has an ERROR line containing PID as a word.
error_line_names() {
    local errs
    errs=$(agent_log_plain | grep ERROR || true)
    grep -qw -- "$1" <<<"$errs"
}

sink_port=$(free_port)
spawn "$WORKDIR/sink.log" "$PY" -c '
import socket, sys, threading
def drain(c):
    with c:
        while c.recv(65536):
            pass
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(64)
while True:
    c, _ = s.accept()
    threading.Thread(target=drain, args=(c,), daemon=True).start()
' "$sink_port"
sink=$SPAWNED_PID
wait_port "$sink_port" "$sink"

start_agent
port=$(free_port)
spawn_preload "$WORKDIR/http.log" "$PY" -m http.server "$port" --bind 127.0.0.1 --directory "$WORKDIR/srv"
srv=$SPAWNED_PID
wait_port "$port" "$srv"

for mode in cmd-tail tx-tail bad-op bad-slot; do
    log "mode $mode"
    dropped0=$(agent_stat channels_dropped)
    rm -f "$WORKDIR/out"
    spawn_preload "$WORKDIR/curl-$mode.log" curl -sS --fail --limit-rate 4M --max-time 60 \
        -o "$WORKDIR/out" "http://127.0.0.1:$port/blob"
    dl=$SPAWNED_PID
    for ((i = 0; i < 100; i++)); do
        size=$(stat -c %s "$WORKDIR/out" 2>/dev/null || echo 0)
        ((size > 0)) && break
        pid_alive "$dl" || break
        sleep 0.1
    done
    pid_alive "$dl" || fail "[$mode] background download ended before the corrupter ran: $(cat "$WORKDIR/curl-$mode.log")"

    spawn_preload "$WORKDIR/corrupt-$mode.log" "$CORRUPT_BIN" "$mode" "$sink_port"
    bad=$SPAWNED_PID
    wait_exit "$bad" 30 || fail "[$mode] snstack-corrupt (pid $bad) still running after 30 s"
    [[ $WAIT_RC == 0 ]] ||
        fail "[$mode] snstack-corrupt exited $WAIT_RC (expected 0): $(tail -5 "$WORKDIR/corrupt-$mode.log")"

    agent_alive || fail "[$mode] agent died"
    for ((i = 0; i < 50; i++)); do
        error_line_names "$bad" && break
        sleep 0.1
    done
    error_line_names "$bad" ||
        fail "[$mode] no ERROR line naming pid $bad in the agent log"
    d=$(wait_stat channels_dropped -ge $((dropped0 + 1)) 5) ||
        fail "[$mode] channels_dropped stayed at $d"
    sleep 0.2
    d=$(agent_stat channels_dropped)
    [[ $d == $((dropped0 + 1)) ]] || fail "[$mode] channels_dropped grew by $((d - dropped0)), expected 1"

    wait_exit "$dl" 60 || fail "[$mode] background download still running after 60 s"
    [[ $WAIT_RC == 0 ]] || fail "[$mode] background download failed ($WAIT_RC): $(cat "$WORKDIR/curl-$mode.log")"
    assert_same_file "$WORKDIR/srv/blob" "$WORKDIR/out" "[$mode] background download"
    pid_alive "$srv" || fail "[$mode] http.server died"
    log "[$mode] ok: pid $bad dropped, download intact"
done

agent_log_plain | grep ERROR || true
stop_pid "$srv"
stop_agent
echo "PASS: $TEST_NAME"
