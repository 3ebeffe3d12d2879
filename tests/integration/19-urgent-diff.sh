#!/usr/bin/env bash
# Urgent data (TCP MSG_OOB, issue 12 item 2). tests/semantics/urgent.py sends ordinary and urgent
# bytes over loopback pairs and prints what the receiver can observe: POLLPRI, select's exception
# set, EPOLLPRI, SIOCATMARK, reads stopping at the mark and skipping the urgent byte (or not, with
# SO_OOBINLINE), recv(MSG_OOB) and its errors (EINVAL, EAGAIN), recvmsg's MSG_OOB/MSG_TRUNC, a
# second urgent byte superseding the first, a multi-byte MSG_OOB send, the mark behind 200 KB,
# SIGURG to the F_SETOWN owner (and none without one), F_GETOWN(_EX), F_SETOWN's ESRCH/EINVAL.
# The lines must be identical on kernel sockets and under snstack with the agent's loopback path
# and with `--loopback off` (the agent's kernel sockets: urgent data out of band there).
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
require_snstack
PROBE="$REPO/tests/semantics/urgent.py"

log "kernel run"
timeout 120 "$PY" "$PROBE" >"$WORKDIR/kernel.txt" 2>"$WORKDIR/kernel.err" ||
    fail "probe failed on kernel sockets: $(tail -3 "$WORKDIR/kernel.err")"
[[ $(grep -c . "$WORKDIR/kernel.txt") -ge 60 ]] || fail "the probe printed too little: $(cat "$WORKDIR/kernel.txt")"
grep -q "^oob: b'!'" "$WORKDIR/kernel.txt" || fail "the kernel run did not see urgent data: $(head "$WORKDIR/kernel.txt")"

for mode in on off; do
    start_agent --loopback "$mode"
    ops0=$(agent_stat h2n_ops)
    loops0=$(agent_stat loop_connections)
    log "offloaded run, --loopback $mode"
    preload timeout 120 "$PY" "$PROBE" >"$WORKDIR/snstack-$mode.txt" 2>"$WORKDIR/snstack-$mode.err" ||
        fail "probe failed under snstack (--loopback $mode): $(tail -3 "$WORKDIR/snstack-$mode.err")"
    ops=$(agent_stat h2n_ops)
    loops=$(agent_stat loop_connections)
    [[ $ops -gt $((ops0 + 50)) ]] || fail "h2n_ops grew by $((ops - ops0)): the probe did not go through the agent"
    if [[ $mode == on ]]; then
        [[ $loops -ge $((loops0 + 9)) ]] || fail "only $((loops - loops0)) loop connections: the loopback path was not taken"
    else
        [[ $loops == "$loops0" ]] || fail "loop connections with --loopback off"
    fi
    if ! diff -u "$WORKDIR/kernel.txt" "$WORKDIR/snstack-$mode.txt" >"$WORKDIR/diff-$mode.txt"; then
        cat "$WORKDIR/diff-$mode.txt"
        fail "urgent data differs from the kernel's with --loopback $mode (diff above)"
    fi
    log "--loopback $mode: $(grep -c . "$WORKDIR/snstack-$mode.txt") lines identical"
    stop_agent
done
echo "PASS: $TEST_NAME"
