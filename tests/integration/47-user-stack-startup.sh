#!/usr/bin/env bash
# The user-space stack's start-up failures (issue 4): a missing interface, no permission for
# AF_PACKET (as nobody), an address already on a kernel interface of the namespace, and bad or
# missing flags each end the agent with a non-zero status and one clear error line, never a panic
# or a hang; the first three again on --backend xdp (no XDP program left behind). Needs root
# (namespaces), else SKIP.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
# shellcheck source=tests/userstack.sh
source "$REPO/tests/userstack.sh"
require_snstack
userstack_probe
userstack_up

# expect_fail NAME PATTERN CMD...: CMD, run in the agent's namespace, exits non-zero within 20 s,
# printing one line that matches PATTERN on stderr, and no panic.
expect_fail() {
    local name=$1 pat=$2 rc=0 lines
    shift 2
    timeout 20 ip netns exec "$NS_A" "$@" >"$WORKDIR/$name.out" 2>"$WORKDIR/$name.err" </dev/null || rc=$?
    [[ $rc != 0 ]] || fail "$name: the agent started (status 0); expected a start-up error"
    [[ $rc != 124 ]] || fail "$name: the agent hung instead of failing"
    grep -qi panick "$WORKDIR/$name.err" && fail "$name: the agent panicked: $(cat "$WORKDIR/$name.err")"
    lines=$(grep -c . "$WORKDIR/$name.err" || true)
    [[ $lines == 1 ]] || fail "$name: expected one error line, got $lines: $(cat "$WORKDIR/$name.err")"
    grep -Eqi -- "$pat" "$WORKDIR/$name.err" || fail "$name: error line does not say why ($pat): $(cat "$WORKDIR/$name.err")"
    log "$name: status $rc: $(cat "$WORKDIR/$name.err")"
}

sock=$WORKDIR/agent.sock

expect_fail missing-iface "nosuch0|interface" \
    "$AGENT_BIN" --socket "$sock" --backend afpacket --iface nosuch0 --ip "$AGENT_IP/24"
expect_fail no-permission "permission|not permitted|CAP_NET_RAW" \
    runuser -u nobody -- "$AGENT_BIN" --socket "$WORKDIR/nobody.sock" --backend afpacket \
    --iface "$VETH_A" --ip "$AGENT_IP/24"
ip -n "$NS_A" addr add "$AGENT_IP/24" dev "$VETH_A"
expect_fail address-in-use "$AGENT_IP|in use|already" \
    "$AGENT_BIN" --socket "$sock" --backend afpacket --iface "$VETH_A" --ip "$AGENT_IP/24"
ip -n "$NS_A" addr del "$AGENT_IP/24" dev "$VETH_A"
expect_fail missing-ip "--ip" \
    "$AGENT_BIN" --socket "$sock" --backend afpacket --iface "$VETH_A"
expect_fail bad-gateway "gateway" \
    "$AGENT_BIN" --socket "$sock" --backend afpacket --iface "$VETH_A" --ip "$AGENT_IP/24" \
    --gateway 192.0.2.1
# The same failures on --backend xdp (or, in a build without AF_XDP, the one line saying so).
noxdp="without AF_XDP support"
expect_fail xdp-missing-iface "nosuch0|interface|$noxdp" \
    "$AGENT_BIN" --socket "$sock" --backend xdp --iface nosuch0 --ip "$AGENT_IP/24"
expect_fail xdp-no-permission "permission|not permitted|CAP_NET_ADMIN|$noxdp" \
    runuser -u nobody -- "$AGENT_BIN" --socket "$WORKDIR/nobody.sock" --backend xdp \
    --iface "$VETH_A" --ip "$AGENT_IP/24"
ip -n "$NS_A" addr add "$AGENT_IP/24" dev "$VETH_A"
expect_fail xdp-address-in-use "$AGENT_IP|in use|already|$noxdp" \
    "$AGENT_BIN" --socket "$sock" --backend xdp --iface "$VETH_A" --ip "$AGENT_IP/24"
ip -n "$NS_A" addr del "$AGENT_IP/24" dev "$VETH_A"
ip -n "$NS_A" link show "$VETH_A" | grep -q ' xdp' && fail "an XDP program stayed on $VETH_A after a failed start"
echo "PASS: $TEST_NAME"
