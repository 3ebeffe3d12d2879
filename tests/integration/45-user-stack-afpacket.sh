#!/usr/bin/env bash
# The agent's own TCP/IP stack (--backend afpacket) owns an IP on one end of a veth pair in a
# network namespace; a preloaded nginx listens through it. From the other namespace: ping/ARP,
# unmodified curl and wrk -c100 -d10s with zero errors, 100 MB intact, 1,000 concurrent
# connections all accepted and served, outgoing preloaded curl and redis-benchmark to kernel
# servers, and the 100 MB download again over netem (loss 1%, delay 2ms, reorder 1%).
# Needs root (namespaces, AF_PACKET): skips otherwise. Fixture: tests/userstack.sh.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
# shellcheck source=tests/userstack.sh
source "$REPO/tests/userstack.sh"
require_snstack
[[ -x $NGINX_BIN ]] || fail "nginx not installed (run: ci/install-deps.sh)"
userstack_probe
userstack_up
userstack_suite afpacket --iface "$VETH_A"
echo "PASS: $TEST_NAME"
