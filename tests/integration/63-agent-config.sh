#!/usr/bin/env bash
# The agent's configuration file (issue 12 item 4): `--config PATH` settings take effect
# (socket, loopback, max-sockets seen in the region size, metrics endpoint), a flag on the command line
# wins over the file, and a malformed file stops the agent with exit status 1 and one line naming
# the file and the line (bad value, unknown key, TOML syntax, a file that does not exist). Every
# flag being settable is the unit test config::tests::template_covers_every_flag.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
require_snstack
require_cmd curl

conf=$WORKDIR/agent.conf
sock=$WORKDIR/cfg/agent.sock
mport=$(free_port)
cat >"$conf" <<CONF
# test configuration
socket = "$sock"
loopback = "off"   # a comment after a value
max-sockets = 16
metrics = "127.0.0.1:$mport"
CONF

# cfg_agent LOG ARGS...: start the agent with ARGS, wait until it answers on $sock.
cfg_agent() {
    local out=$1 i
    shift
    "$AGENT_BIN" "$@" >"$out" 2>&1 </dev/null &
    AGENT_PID=$! AGENT_SOCK=$sock AGENT_LOG=$out
    for ((i = 0; i < 100; i++)); do
        [[ -S $sock ]] && agent_stats >/dev/null 2>&1 && return 0
        pid_alive "$AGENT_PID" || fail "agent exited: $(cat "$out")"
        sleep 0.1
    done
    fail "agent did not answer on $sock: $(cat "$out")"
}

# region_size: the region bytes of the last process attached (the agent logs them); they grow
# with max-sockets.
region_size() { agent_log_plain | grep 'process attached' | tail -1 | grep -o 'region=[0-9]*' | cut -d= -f2; }

cfg_agent "$WORKDIR/a1.log" --config "$conf"
[[ $(agent_stat loopback) == 0 ]] || fail "loopback = \"off\" not applied"
grep -q "configuration file read.*$conf" <(agent_log_plain) || fail "the log does not name the file read"
code=$(curl -s -o "$WORKDIR/m1" -w '%{http_code}' "http://127.0.0.1:$mport/metrics") || true
if [[ $code != 200 ]] || ! grep -q '^snstack_loopback 0$' "$WORKDIR/m1"; then
    fail "metrics from the file not served (HTTP $code)"
fi
# Connections to a local kernel listener go through the backend when loopback is off.
port=$(free_port)
spawn "$WORKDIR/http.log" "$PY" -m http.server "$port" --bind 127.0.0.1 --directory "$WORKDIR"
srv=$SPAWNED_PID
wait_port "$port" "$srv"
SNSTACK_AGENT=$sock preload curl -sS --fail -o /dev/null "http://127.0.0.1:$port/agent.conf" || fail "curl failed"
[[ $(agent_stat loop_connections) == 0 ]] || fail "loop_connections grew with loopback off"
r16=$(region_size)
[[ -n $r16 ]] || fail "no 'process attached' line with region= in the agent log"
stop_agent
log "file settings applied: socket, loopback off, metrics, max-sockets (region $r16 bytes)"

# Flags on the command line win over the file.
cfg_agent "$WORKDIR/a2.log" --config "$conf" --loopback on --max-sockets 64
[[ $(agent_stat loopback) == 1 ]] || fail "--loopback on did not win over the file's loopback = \"off\""
SNSTACK_AGENT=$sock preload curl -sS --fail -o /dev/null "http://127.0.0.1:$port/agent.conf" || fail "curl failed"
r64=$(region_size)
((r64 > r16)) || fail "--max-sockets 64 did not win over the file's 16 (region $r64 vs $r16 bytes)"
stop_agent
log "command line wins: --loopback on, --max-sockets 64 (region $r64 bytes) over the file"

# Malformed files: exit 1, one error line naming FILE:LINE.
bad_case() {
    local name=$1 want=$2 rc=0
    shift 2
    printf '%s\n' "$@" >"$WORKDIR/$name.conf"
    timeout 10 "$AGENT_BIN" --config "$WORKDIR/$name.conf" >"$WORKDIR/$name.out" 2>&1 </dev/null || rc=$?
    [[ $rc == 1 ]] || fail "$name: exit status $rc, expected 1: $(cat "$WORKDIR/$name.out")"
    grep -qF -- "$want" "$WORKDIR/$name.out" || fail "$name: expected '$want' in: $(cat "$WORKDIR/$name.out")"
    [[ ! -S $sock ]] || fail "$name: the agent created its socket despite the bad file"
    log "$name: $(head -1 "$WORKDIR/$name.out")"
}
rm -f "$sock"
bad_case bad-value "$WORKDIR/bad-value.conf:3: 'spin-us'" "# x" "socket = \"$sock\"" 'spin-us = "fast"'
bad_case unknown-key "$WORKDIR/unknown-key.conf:2: unknown key 'spin_us'" "socket = \"$sock\"" "spin_us = 5"
bad_case syntax "$WORKDIR/syntax.conf:4:" "socket = \"$sock\"" "" "# comment" "rx-ring 65536"
bad_case range "$WORKDIR/range.conf:1: 'tx-ring'" "tx-ring = 1000" "socket = \"$sock\""
rc=0
timeout 10 "$AGENT_BIN" --config "$WORKDIR/missing.conf" --socket "$sock" >"$WORKDIR/missing.out" 2>&1 </dev/null || rc=$?
if [[ $rc != 1 ]] || ! grep -qF "$WORKDIR/missing.conf" "$WORKDIR/missing.out"; then
    fail "a missing --config file: exit $rc, $(cat "$WORKDIR/missing.out")"
fi
stop_pid "$srv"
echo "PASS: $TEST_NAME"
