#!/usr/bin/env bash
# Errors from the peer reaching a sender (issue 12 item 3). tests/semantics/peererr.py: for a peer
# that closes with unread data, one that closes with SO_LINGER 0 and one killed with bytes unread,
# four sends in a row with each of send, sendmsg, writev, sendfile (by reference on this backend)
# and splice (ECONNRESET, then EPIPE, SIGPIPE, SO_ERROR); a send larger than every buffer, blocked
# with bytes queued when the peer resets, returns its partial count and the next call gets
# ECONNRESET (the error is not spent on the partial return); a sender blocked in send or
# sendfile wakes with the error. The lines must be identical on kernel sockets and under snstack
# with the agent's loopback path and with `--loopback off` (the agent's kernel sockets).
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
require_snstack
PROBE="$REPO/tests/semantics/peererr.py"

log "kernel run"
timeout 120 "$PY" "$PROBE" >"$WORKDIR/kernel.txt" 2>"$WORKDIR/kernel.err" ||
    fail "probe failed on kernel sockets: $(tail -3 "$WORKDIR/kernel.err")"
[[ $(grep -c . "$WORKDIR/kernel.txt") -ge 17 ]] || fail "the probe printed too little: $(cat "$WORKDIR/kernel.txt")"

for mode in on off; do
    start_agent --loopback "$mode"
    ops0=$(agent_stat h2n_ops)
    log "offloaded run, --loopback $mode"
    preload timeout 120 "$PY" "$PROBE" >"$WORKDIR/snstack-$mode.txt" 2>"$WORKDIR/snstack-$mode.err" ||
        fail "probe failed under snstack (--loopback $mode): $(tail -3 "$WORKDIR/snstack-$mode.err")"
    ops=$(agent_stat h2n_ops)
    [[ $ops -gt $((ops0 + 50)) ]] || fail "h2n_ops grew by $((ops - ops0)): the probe did not go through the agent"
    if ! diff -u "$WORKDIR/kernel.txt" "$WORKDIR/snstack-$mode.txt" >"$WORKDIR/diff-$mode.txt"; then
        cat "$WORKDIR/diff-$mode.txt"
        fail "a sender sees the peer's errors differently from the kernel with --loopback $mode (diff above)"
    fi
    log "--loopback $mode: $(grep -c . "$WORKDIR/snstack-$mode.txt") lines identical"
    stop_agent
done
echo "PASS: $TEST_NAME"
