#!/usr/bin/env bash
# pitfalls.md 6 (fork deadlocks): fork 40 times while 4 other threads are inside socket calls and
# epoll waits on offloaded sockets; every child uses an inherited connection and a new one within
# a deadline. Same output on kernel sockets and under snstack.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
require_snstack
APP="$REPO/tests/apps/fork_threads.py"
timeout 200 "$PY" -W ignore "$APP" >"$WORKDIR/kernel.txt" 2>"$WORKDIR/kernel.err" ||
    fail "kernel run failed: $(tail -3 "$WORKDIR/kernel.err")"
start_agent
preload SNSTACK_LOG=info timeout 200 "$PY" -W ignore "$APP" >"$WORKDIR/snstack.txt" 2>"$WORKDIR/snstack.err" ||
    fail "snstack run failed: $(tail -5 "$WORKDIR/snstack.err")"
diff -u "$WORKDIR/kernel.txt" "$WORKDIR/snstack.txt" || fail "fork under threads differs from the kernel (diff above)"
grep -q "forks 40 ok 40" "$WORKDIR/snstack.txt" || fail "not every child succeeded: $(cat "$WORKDIR/snstack.txt")"
kids=$(grep -c "fork: child attached" "$WORKDIR/snstack.err" || true)
[[ $kids -eq 40 ]] || fail "expected 40 children attached with their inherited sockets, saw $kids"
log "40 forks under 4 busy threads: every child attached with its inherited sockets and finished"
sockets=$(wait_stat sockets -eq 0 10) || fail "agent still holds $sockets sockets"
stop_agent
echo "PASS: $TEST_NAME"
