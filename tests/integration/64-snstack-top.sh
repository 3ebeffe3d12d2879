#!/usr/bin/env bash
# `snstack top` and `snstack stats --json` (issue 12 item 6). A preloaded server and a preloaded
# client named "topload" (which first fails one connect, then fetches in a loop) run while
# `snstack top` runs in a real terminal (tmux, 160x40). Pass: the screen shows the agent's pid
# and CPU, a "topload" row with its socket count, non-zero connections/s, RX bytes/s and
# operations/s and 1 error, the server's row with non-zero connections/s; the screen changes
# every second; `q` quits with status 0. A process whose channel the agent drops (snstack-corrupt)
# appears as DROPPED. `snstack stats --json` carries the same per-process counters, and its
# totals equal the `key value` report once the load has stopped.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
require_snstack
require_cmd tmux
[[ -x $CLI_BIN ]] || fail "$CLI_BIN not built (run: cargo build --release --workspace)"

start_agent
mkdir -p "$WORKDIR/srv"
head -c 200000 /dev/urandom >"$WORKDIR/srv/blob"
port=$(free_port)
spawn_preload "$WORKDIR/http.log" "$PY" -m http.server "$port" --bind 127.0.0.1 --directory "$WORKDIR/srv"
srv=$SPAWNED_PID
wait_port "$port" "$srv"
closed=$(free_port)

# The client: comm "topload"; one refused connect (an error), then a fetch every 50 ms until
# $WORKDIR/stop exists.
spawn_preload "$WORKDIR/load.log" "$PY" -c '
import ctypes, os, socket, sys, time
ctypes.CDLL(None).prctl(15, b"topload", 0, 0, 0)
port, closed, stop = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
try:
    socket.create_connection(("127.0.0.1", closed), timeout=5)
    sys.exit("connect to a closed port succeeded")
except ConnectionRefusedError:
    pass
keep = socket.socket()  # one socket held open for the whole run
n = 0
while not os.path.exists(stop):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /blob HTTP/1.0\r\n\r\n")
        while s.recv(65536):
            pass
    n += 1
    time.sleep(0.05)
print("fetches", n)
' "$port" "$closed" "$WORKDIR/stop"
load=$SPAWNED_PID
sleep 1
pid_alive "$load" || fail "load client exited early: $(cat "$WORKDIR/load.log")"

# --- top in a real terminal ---------------------------------------------------------------------
tm=(tmux -S "$WORKDIR/tmux.sock")
"${tm[@]}" -f /dev/null new-session -d -s top -x 160 -y 40 \
    "$CLI_BIN top --socket $AGENT_SOCK; echo \$? >$WORKDIR/top.rc"
register_pid "$("${tm[@]}" display -p -t top '#{pid}')"
sleep 3.5
"${tm[@]}" capture-pane -p -t top >"$WORKDIR/screen1"
sleep 1.5
"${tm[@]}" capture-pane -p -t top >"$WORKDIR/screen2"
log "screen:"
awk 'NF { print "  | " $0 }' "$WORKDIR/screen2"

grep -q "^snstack top - agent pid $AGENT_PID up [0-9:]* - cpu [0-9.]*% " "$WORKDIR/screen2" ||
    fail "no header with the agent's pid and CPU: $(head -2 "$WORKDIR/screen2")"
cmp -s "$WORKDIR/screen1" "$WORKDIR/screen2" && fail "the screen did not change in 1.5 s"
grep -qE '^ +PID COMMAND +SOCK +CONN/s +RX B/s +TX B/s +OPS/s +ERRORS +STATE' "$WORKDIR/screen2" ||
    fail "no column header"
# Columns: PID COMMAND SOCK CONN/s RX B/s TX B/s OPS/s ERRORS STATE
row=$(awk -v p="$load" '$1 == p' "$WORKDIR/screen2")
[[ -n $row ]] || fail "no row for the load client (pid $load)"
read -r pid comm sockn conns rx tx ops errs state <<<"$row"
[[ $comm == topload ]] || fail "COMMAND of pid $load is '$comm', not topload"
[[ $sockn =~ ^[0-9]+$ && $sockn -ge 1 ]] || fail "SOCK '$sockn' (the client holds one socket open)"
nonzero() { [[ $1 =~ ^[0-9.]+[kMGT]?$ && ! $1 =~ ^0(\.0)?$ ]]; }
for c in conns:"$conns" rx:"$rx" tx:"$tx" ops:"$ops"; do
    nonzero "${c#*:}" || fail "topload's ${c%%:*} is '${c#*:}', expected a non-zero rate: $row"
done
[[ $errs == 1 ]] || fail "topload's ERRORS is '$errs', expected 1 (the refused connect): $row"
[[ $state == ok ]] || fail "topload's STATE is '$state'"
srow=$(awk -v p="$srv" '$1 == p' "$WORKDIR/screen2")
[[ -n $srow ]] || fail "no row for the server (pid $srv)"
nonzero "$(awk '{print $4}' <<<"$srow")" || fail "the server's CONN/s is not positive: $srow"
log "top rows ok: $row"

"${tm[@]}" send-keys -t top q
for ((i = 0; i < 30; i++)); do
    [[ -s $WORKDIR/top.rc ]] && break
    sleep 0.1
done
[[ $(cat "$WORKDIR/top.rc" 2>/dev/null) == 0 ]] || fail "top did not exit 0 on 'q' within 3 s"
log "q quit top (status 0)"

# --- a dropped channel --------------------------------------------------------------------------
if [[ -x $CORRUPT_BIN ]]; then
    spawn "$WORKDIR/sink.log" "$PY" -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(8)
while True:
    c, _ = s.accept()
    while c.recv(65536):
        pass
    c.close()
' "$closed"
    wait_port "$closed" "$SPAWNED_PID"
    spawn_preload "$WORKDIR/corrupt.log" "$CORRUPT_BIN" bad-op "$closed"
    bad=$SPAWNED_PID
    wait_exit "$bad" 30 || fail "snstack-corrupt still running"
    wait_stat channels_dropped -ge 1 5 >/dev/null || fail "the corrupter's channel was not dropped"
    "$CLI_BIN" top --socket "$AGENT_SOCK" -n 1 >"$WORKDIR/batch"
    grep -qE "^ +$bad .*DROPPED [0-9]+s ago: " "$WORKDIR/batch" ||
        fail "no DROPPED row for pid $bad: $(cat "$WORKDIR/batch")"
    log "dropped channel shown: $(grep DROPPED "$WORKDIR/batch")"
fi

# --- stats --json ---------------------------------------------------------------------------------
touch "$WORKDIR/stop"
wait_exit "$load" 20 || fail "load client did not stop"
[[ $WAIT_RC == 0 ]] || fail "load client failed: $(cat "$WORKDIR/load.log")"
"$CLI_BIN" stats --socket "$AGENT_SOCK" --json >"$WORKDIR/stats.json" || fail "stats --json failed"
agent_stats >"$WORKDIR/stats.txt"
"$PY" - "$WORKDIR/stats.json" "$WORKDIR/stats.txt" "$srv" "$AGENT_PID" <<'PYEOF' || fail "stats --json check failed"
import json, sys
r = json.load(open(sys.argv[1]))
text = dict(l.split() for l in open(sys.argv[2]))
srv, agent = int(sys.argv[3]), int(sys.argv[4])
assert r["agent"]["pid"] == agent, r["agent"]
assert r["agent"]["cpu_user_us"] + r["agent"]["cpu_system_us"] > 0, r["agent"]
for k, v in text.items():
    # Levels can move between the two queries; running totals cannot once the load stopped.
    if k in ("agent_spin_us", "agent_spin_contended", "agent_slow_yields", "agent_realtime",
             "agent_host_polls", "agent_host_polls_empty", "channel_bytes"):
        continue
    assert r["totals"].get(k) == int(v), (k, v, r["totals"].get(k))
procs = {p["pid"]: p for p in r["processes"]}
s = procs[srv]
assert s["comm"] == "python3" and s["passive_opens"] >= 10 and s["h2n_bytes"] >= 10 * 200000, s
assert r["totals"]["connection_errors"] >= 1 and r["totals"]["active_opens"] >= 10, r["totals"]
print("json ok:", {k: s[k] for k in ("pid", "sockets", "passive_opens", "h2n_bytes", "n2h_ops")})
PYEOF
log "stats --json consistent with the text report"
stop_agent
echo "PASS: $TEST_NAME"
