#!/usr/bin/env bash
# Loopback acceleration (docs/loopback.md). tests/semantics/loop.py (end of stream, half-close,
# RST on close with unread data and with SO_LINGER 0, SO_ERROR after RST, EPIPE/SIGPIPE,
# addresses incl. IPv6 and v4-mapped, non-blocking connect readiness, flow control on large
# transfers, accept order, options) prints the same lines on kernel sockets and under snstack
# with the agent's loopback path (`loop_connections` grows, so the connections really were agent
# pairs), and again with `--loopback off` (`loop_connections` stays 0: the old path through the
# agent's kernel sockets, whose TX space after a full write appears later, so the one
# `nb-fill-blocked` line is left out of that comparison).
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
require_snstack
PROBE="$REPO/tests/semantics/loop.py"

log "kernel run"
timeout 120 "$PY" "$PROBE" >"$WORKDIR/kernel.txt" 2>"$WORKDIR/kernel.err" ||
    fail "probe failed on kernel sockets: $(tail -3 "$WORKDIR/kernel.err")"
grep -q EXCEPTION "$WORKDIR/kernel.txt" && fail "the probe itself raised on kernel sockets: $(grep EXCEPTION "$WORKDIR/kernel.txt")"

for mode in on off; do
    start_agent --loopback "$mode"
    [[ $(agent_stat loopback) == "$([[ $mode == on ]] && echo 1 || echo 0)" ]] || fail "stats say loopback $(agent_stat loopback) with --loopback $mode"
    grep -q "loopback acceleration $mode" "$AGENT_LOG" || fail "no 'loopback acceleration $mode' line in the agent log"
    conns0=$(agent_stat loop_connections)
    ops0=$(agent_stat h2n_ops)
    log "offloaded run, --loopback $mode"
    preload timeout 120 "$PY" "$PROBE" >"$WORKDIR/snstack-$mode.txt" 2>"$WORKDIR/snstack-$mode.err" ||
        fail "probe failed under snstack (--loopback $mode): $(tail -3 "$WORKDIR/snstack-$mode.err")"
    conns=$(agent_stat loop_connections)
    ops=$(agent_stat h2n_ops)
    [[ $ops -gt $((ops0 + 100)) ]] || fail "h2n_ops grew by $((ops - ops0)): the probe did not go through the agent"
    if [[ $mode == on ]]; then
        [[ $conns -ge $((conns0 + 20)) ]] || fail "loop_connections grew by $((conns - conns0)) with --loopback on"
        cp "$WORKDIR/kernel.txt" "$WORKDIR/expect-$mode.txt"
    else
        [[ $conns == 0 ]] || fail "loop_connections is $conns with --loopback off"
        grep -v '^nb-fill-blocked ' "$WORKDIR/kernel.txt" >"$WORKDIR/expect-$mode.txt"
        grep -v '^nb-fill-blocked ' "$WORKDIR/snstack-$mode.txt" >"$WORKDIR/got-$mode.txt"
        mv "$WORKDIR/got-$mode.txt" "$WORKDIR/snstack-$mode.txt"
    fi
    if ! diff -u "$WORKDIR/expect-$mode.txt" "$WORKDIR/snstack-$mode.txt" >"$WORKDIR/diff-$mode.txt"; then
        cat "$WORKDIR/diff-$mode.txt"
        fail "loopback semantics differ from the kernel's with --loopback $mode (diff above)"
    fi
    log "--loopback $mode: $(grep -c . "$WORKDIR/snstack-$mode.txt") lines identical; loop_connections +$((conns - conns0)), h2n_ops +$((ops - ops0))"
    stop_agent
done
echo "PASS: $TEST_NAME"
