#!/usr/bin/env bash
# The payload API's HTTP server (snstack-http: HTTP/1.1 requests framed by the agent) against
# unmodified curl, wrk and ab, on the agent's kernel backend and on its own TCP engine (af_packet
# over a veth pair; skipped where namespaces cannot be made). Checks: tests/payload.sh.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
# shellcheck source=tests/payload.sh
source "$REPO/tests/payload.sh"
# shellcheck source=tests/userstack.sh
source "$REPO/tests/userstack.sh"
require_snstack
[[ -x $HTTP_BIN ]] || fail "$HTTP_BIN not built (run: cargo build --release --workspace)"
root=$WORKDIR/www
mkdir -p "$root/files"
head -c $((3 * 1024 * 1024)) /dev/urandom >"$root/files/f.bin"
echo '<html>index</html>' >"$root/index.html"

log "kernel backend"
start_agent
port=$(free_port)
payload_server "$WORKDIR/http.log" 127.0.0.1 "$port" "$HTTP_BIN" --agent "$AGENT_SOCK" \
    --listen "127.0.0.1:$port" --root "$root"
payload_http_suite 127.0.0.1 "$port" "$root"
stop_pid "$SERVER_PID"
stop_agent

if (($(nproc) >= 2)); then
    # Server and agent on CPUs apart: the agent polls this host's command ring on a timer while
    # it answers a batch, instead of asking for its doorbell (docs/agent-loop.md, Polling busy
    # hosts). Whether a given run polls depends on timing, so it is logged, not asserted (the
    # policy and its channel state are unit-tested); every check of the suite must hold either way.
    log "kernel backend, server on CPU 0 and agent on CPU 1"
    start_agent --spin-us 0
    taskset -a -pc 1 "$AGENT_PID" >/dev/null
    port=$(free_port)
    payload_server "$WORKDIR/http1.log" 127.0.0.1 "$port" "$HTTP_BIN" --agent "$AGENT_SOCK" \
        --listen "127.0.0.1:$port" --root "$root"
    taskset -a -pc 0 "$SERVER_PID" >/dev/null
    sleep 1.2 # the agent reads a process's affinity once a second
    payload_http_suite 127.0.0.1 "$port" "$root"
    log "agent polls: $(agent_stats | grep -E '^agent_host_polls' | tr '\n' ' ')"
    stop_pid "$SERVER_PID"
    stop_agent
fi

log "native engine (af_packet)"
userstack_probe
userstack_up
userstack_agent afpacket --iface "$VETH_A"
CLIENT=(ip netns exec "$NS_B")
payload_server "$WORKDIR/http2.log" "$AGENT_IP" 8080 "$HTTP_BIN" --agent "$AGENT_SOCK" \
    --listen "$AGENT_IP:8080" --root "$root"
payload_http_suite "$AGENT_IP" 8080 "$root"
stop_pid "$SERVER_PID"
stop_agent
echo "PASS: $TEST_NAME"
