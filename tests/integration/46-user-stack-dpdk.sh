#!/usr/bin/env bash
# As 45-user-stack-afpacket, with the agent's stack on a DPDK port (--backend dpdk): DPDK's
# net_af_packet virtual device on the veth end, EAL without hugepages or PCI. Same checks: ping/ARP,
# curl, wrk -c100 -d10s with zero errors, 100 MB intact, 1,000 connections, outgoing curl and
# redis-benchmark, 100 MB over a lossy link. Skips without root, without the system DPDK, or when
# the agent was built without `--features dpdk` (ci/test.sh builds it when DPDK is installed).
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
# shellcheck source=tests/userstack.sh
source "$REPO/tests/userstack.sh"
require_snstack
[[ -x $NGINX_BIN ]] || fail "nginx not installed (run: ci/install-deps.sh)"
pkg-config --exists libdpdk 2>/dev/null || skip "DPDK not installed (apt-get install libdpdk-dev pkg-config)"
probe=$("$AGENT_BIN" --socket "$WORKDIR/probe.sock" --backend dpdk --iface snsnoiface0 --ip 10.0.0.2/24 2>&1 || true)
if grep -q "built without DPDK support" <<<"$probe"; then
    skip "$AGENT_BIN was built without DPDK (cargo build --release -p nic-agent --features dpdk)"
fi
userstack_probe
userstack_up
# net_af_packet (DPDK's af_packet PMD) has no vnet header. Partial checksums from the peer are
# fine (the engine accepts a pseudo-header-only checksum from a device without checksum state),
# but the PMD reads GSO super-frames truncated to its 2 KiB frames, and a real NIC never receives
# one from a wire: the peer's segmentation offloads (TSO/GSO) go off, the rest stay at their
# defaults. OFFLOADS_OFF=1 turns every offload off.
if [[ ${OFFLOADS_OFF:-0} == 1 ]]; then
    userstack_offloads_off
else
    ip netns exec "$NS_B" ethtool -K "$VETH_B" tso off gso off >/dev/null 2>&1 || true
fi
# The engine builds frames in the device's own TX memory: at least 90% of the 100 MB download's
# data segments must be written there (tcp_tx_data_direct).
USERSTACK_DIRECT_TX=1 userstack_suite dpdk --iface "$VETH_A"
echo "PASS: $TEST_NAME"
