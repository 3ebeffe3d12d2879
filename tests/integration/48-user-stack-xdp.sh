#!/usr/bin/env bash
# As 45-user-stack-afpacket, with the agent's stack on an AF_XDP socket (--backend xdp): libxdp's
# default XDP program on the agent's veth end redirects queue 0 into the socket (native XDP on a
# veth, copy mode; veth offloads off). Same checks: ping/ARP, curl, wrk -c100 -d10s with zero errors, 100 MB intact,
# 1,000 connections, outgoing curl and redis-benchmark, 100 MB over a lossy link. Skips without
# root, when the agent was built without AF_XDP (no libxdp-dev/libbpf-dev at build time), or when
# the kernel refuses XDP on the veth. SNSTACK_XDP_MODE=generic runs it in generic (SKB) mode.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
# shellcheck source=tests/userstack.sh
source "$REPO/tests/userstack.sh"
require_snstack
[[ -x $NGINX_BIN ]] || fail "nginx not installed (run: ci/install-deps.sh)"
probe=$("$AGENT_BIN" --socket "$WORKDIR/probe.sock" --backend xdp --iface snsnoiface0 --ip 10.0.0.2/24 2>&1 || true)
if grep -q "built without AF_XDP support" <<<"$probe"; then
    skip "$AGENT_BIN was built without AF_XDP (apt-get install libxdp-dev libbpf-dev, then rebuild)"
fi
userstack_probe
userstack_up
# No offload state crosses AF_XDP (no vnet header): the peer must send complete checksums and
# MTU-sized frames.
[[ ${OFFLOADS_OFF:-0} == 1 ]] && userstack_offloads_off
# Can this kernel attach XDP to the veth and bind an AF_XDP socket? The probe agent runs for 2 s
# (SIGTERM then detaches its program) or exits at once with one error line.
probe=$(ip netns exec "$NS_A" timeout 2 "$AGENT_BIN" --socket "$WORKDIR/probe2.sock" \
    --backend xdp --iface "$VETH_A" --ip "$AGENT_IP/24" 2>&1 || true)
if grep -qE "refuses AF_XDP|needs CAP_NET_ADMIN" <<<"$probe"; then
    skip "the kernel refuses AF_XDP here: $(grep -E 'error' <<<"$probe" | head -1)"
fi
grep -q "AF_XDP socket on queue 0" <<<"$probe" || fail "AF_XDP probe: $probe"
log "probe: $(grep -o 'AF_XDP socket on queue 0: [^"]*' <<<"$probe" | head -1)"
# The engine builds frames in the device's own TX memory: at least 90% of the 100 MB download's
# data segments must be written there (tcp_tx_data_direct).
USERSTACK_DIRECT_TX=1 userstack_suite xdp --iface "$VETH_A"
echo "PASS: $TEST_NAME"
