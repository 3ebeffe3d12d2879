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
