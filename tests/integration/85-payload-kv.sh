#!/usr/bin/env bash
# The payload API's key-value server (snstack-kv: RESP framed by the agent, whole requests in,
# replies written into the channel, no socket) against unmodified redis-cli and redis-benchmark,
# first on the agent's kernel backend (two poll groups: connections spread over both), then on
# its own TCP engine (af_packet, a veth pair between two network namespaces; skipped where
# namespaces cannot be made). Checks: tests/payload.sh.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
# shellcheck source=tests/payload.sh
source "$REPO/tests/payload.sh"
# shellcheck source=tests/userstack.sh
source "$REPO/tests/userstack.sh"
require_snstack
[[ -x $KV_BIN ]] || fail "$KV_BIN not built (run: cargo build --release --workspace)"

log "kernel backend"
start_agent
port=$(free_port)
payload_server "$WORKDIR/kv.log" 127.0.0.1 "$port" "$KV_BIN" --agent "$AGENT_SOCK" --listen "127.0.0.1:$port" \
    --threads 2
payload_kv_suite 127.0.0.1 "$port"
# Two poll groups (two channels of one process): the agent spread the connections over both.
timeout 10 "$AGENT_BIN" stats --socket "$AGENT_SOCK" --json </dev/null >"$WORKDIR/stats.json" ||
    fail "stats --json failed"
opens=$("$PY" -c 'import json,sys
d = json.load(open(sys.argv[1]))
print(" ".join(str(p["passive_opens"]) for p in d["processes"] if p["pid"] == int(sys.argv[2])))' \
    "$WORKDIR/stats.json" "$SERVER_PID")
read -r -a per <<<"$opens"
[[ ${#per[@]} == 2 && ${per[0]} -ge 10 && ${per[1]} -ge 10 ]] ||
    fail "connections per poll group: '$opens' (want two groups with at least 10 each)"
log "two poll groups: $opens connections accepted each"
# The agent dies (SIGKILL: no goodbye) while both groups sleep in their futex waits: the server
# must see it and fail (ECONNRESET), not hang (the wait is sliced; 100 ms here, 20 s allowed).
sleep 0.5
kill -KILL "$AGENT_PID"
wait "$AGENT_PID" 2>/dev/null || true
AGENT_PID=
wait_exit "$SERVER_PID" 20 || fail "snstack-kv still runs 20 s after the agent died"
[[ $WAIT_RC != 0 ]] || fail "snstack-kv exited 0 after the agent died"
grep -q "Connection reset" "$WORKDIR/kv.log" || fail "no ECONNRESET reported: $(tail -3 "$WORKDIR/kv.log")"
log "agent killed: snstack-kv failed with '$(tail -1 "$WORKDIR/kv.log")'"

log "native engine (af_packet)"
userstack_probe
userstack_up
userstack_agent afpacket --iface "$VETH_A"
CLIENT=(ip netns exec "$NS_B")
payload_server "$WORKDIR/kv2.log" "$AGENT_IP" 6379 "$KV_BIN" --agent "$AGENT_SOCK" --listen "$AGENT_IP:6379"
payload_kv_suite "$AGENT_IP" 6379
stop_pid "$SERVER_PID"
stop_agent
echo "PASS: $TEST_NAME"
