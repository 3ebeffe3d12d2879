#!/usr/bin/env bash
# pitfalls.md 4, differential (tests/apps/sigint.c): a SIGALRM (setitimer, 250 ms) while the
# main thread blocks on an offloaded socket in recv, read, accept, epoll_wait, poll, select, recv
# with SO_RCVTIMEO, send on a full connection, and recv while the handler itself sends on a socket.
# Without SA_RESTART every call fails with EINTR; with SA_RESTART Linux restarts recv/read/accept/
# send (they complete when a watchdog thread provides data at 1.5 s) but not epoll_wait/poll/select
# or a recv with SO_RCVTIMEO. A sweep then sends 42 signals to a blocked recv at arrival times
# 90..110 ms and 190..210 ms (1 ms steps): each must interrupt it, including a signal that lands
# while the library is between two internal sleeps; then 400 signals with the library's liveness
# wake-up at 1 ms. Python always retries (PEP 475), hence C.
# shellcheck source=tests/lib.sh
source "$(dirname "$0")/../lib.sh"
# shellcheck source=tests/apps/common.sh
source "$REPO/tests/apps/common.sh"
require_snstack
build_c "$APPS/sigint.c" "$WORKDIR/sigint"
start_agent
bad=()
diff_run sigint-norestart 60 "$WORKDIR/sigint" norestart || bad+=("handler without SA_RESTART")
diff_run sigint-restart 60 "$WORKDIR/sigint" restart || bad+=("handler with SA_RESTART")
# The same calls while the library busy-polls (SNSTACK_SPIN_US: 1 s, longer than the signal's
# 250 ms): a handler that runs while the call spins in user space interrupts it too.
SNSTACK_SPIN_US=1000000 diff_run sigint-spin 60 "$WORKDIR/sigint" norestart || bad+=("handler while the call spins")
diff_run sigint-sweep 120 "$WORKDIR/sigint" sweep || bad+=("signal arrival-time sweep")
# The library's blocked calls wake every SNSTACK_LIVENESS_MS to check the agent; at 1 ms, 400
# signals land around those wake-ups: each must still interrupt recv (signals.rs); rounds whose
# signal fired before recv was entered are repeated (tests/apps/sigint.c storm).
export SNSTACK_LIVENESS_MS=1
diff_run sigint-storm 300 "$WORKDIR/sigint" storm || bad+=("signal storm around liveness wake-ups")
unset SNSTACK_LIVENESS_MS
((${#bad[@]} == 0)) || fail "signal interruption differs from the kernel's: ${bad[*]} (diffs above)"
stop_agent
echo "PASS: $TEST_NAME"
