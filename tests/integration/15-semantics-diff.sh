#!/usr/bin/env bash
# Differential semantics: tests/semantics/sem.py probes errnos, readiness bits (poll/select/epoll
# LT/ET/ONESHOT/RDHUP), MSG_PEEK/WAITALL/DONTWAIT, shutdown, SO_ERROR, timeouts, IPv6, dup,
# SIGPIPE and a 4 MiB transfer. Its output on kernel sockets and under libsnstack.so must be
# identical line for line, and the preloaded run must really have gone through the agent.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
require_snstack
SEM="$REPO/tests/semantics/sem.py"

log "kernel run"
timeout 120 "$PY" "$SEM" >"$WORKDIR/kernel.txt" 2>"$WORKDIR/kernel.err" ||
    fail "probe failed on kernel sockets: $(tail -3 "$WORKDIR/kernel.err")"
start_agent
ops0=$(agent_stat h2n_ops)
log "offloaded run"
preload timeout 120 "$PY" "$SEM" >"$WORKDIR/snstack.txt" 2>"$WORKDIR/snstack.err" ||
    fail "probe failed under snstack: $(tail -3 "$WORKDIR/snstack.err")"
if ! diff -u "$WORKDIR/kernel.txt" "$WORKDIR/snstack.txt" >"$WORKDIR/diff.txt"; then
    cat "$WORKDIR/diff.txt"
    fail "socket semantics differ from the kernel's (diff above)"
fi
ops=$(agent_stat h2n_ops)
[[ $ops -gt $((ops0 + 100)) ]] || fail "h2n_ops grew by $((ops - ops0)): the probe did not go through the agent"
grep -q EXCEPTION "$WORKDIR/kernel.txt" && fail "the probe itself raised on kernel sockets"
log "$(grep -c . "$WORKDIR/kernel.txt") lines identical; h2n_ops +$((ops - ops0))"
stop_agent
echo "PASS: $TEST_NAME"
